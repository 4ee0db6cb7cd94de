#!/usr/bin/env bash
# Idempotent set-up: Debian libraries napari's Qt needs (when missing), a venv in .venv with
# torch==2.13.0 (the CPU build on disk) and this package with its GUI and test extras.
set -euo pipefail
cd "$(dirname "$0")/.."

DEBS=(xvfb xauth libxcb-icccm4 libxcb-keysyms1 libxcb-cursor0 libxcb-image0 libxcb-render-util0
      libxcb-shape0 libxcb-xinerama0 libxkbcommon-x11-0 libgl1 libegl1 libfontconfig1 libdbus-1-3)
missing=()
for p in "${DEBS[@]}"; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "setup: installing Debian packages: ${missing[*]}"
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
# One stamp per set of extras (HYDRANET_EXTRAS=bench adds the benchmarks' packages to a venv
# already set up without them); a changed pyproject.toml or set-up script installs again.
key="$(cat pyproject.toml scripts/setup.sh | sha1sum | cut -c1-12)"
base=".venv/.hydranet-$key"
stamp="$base${HYDRANET_EXTRAS:+-${HYDRANET_EXTRAS//,/-}}"
if [ ! -f "$stamp" ]; then
    echo "setup: installing Python packages into .venv"
    .venv/bin/python -m pip install -q --upgrade pip
    .venv/bin/python -m pip install -q "torch==2.13.0"
    .venv/bin/python -m pip install -q -e ".[gui,test${HYDRANET_EXTRAS:+,$HYDRANET_EXTRAS}]"
    find .venv -maxdepth 1 -name '.hydranet-*' ! -name ".hydranet-$key*" -delete
    touch "$base" "$stamp"
fi
