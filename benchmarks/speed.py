"""Speed and memory on this machine: seconds per set-sum training epoch (25 scans, n = 4) and
per predicted scan (8 test-time flips) at 64×52×40 and at the paper's 168×128×84.

    python benchmarks/speed.py [--threads N] [--contiguous]

Networks are placed as the package places them (channels-last 3D on the CPU);
``--contiguous`` measures the default layout instead.

Prints one line per figure; peak memory is the process's maximum resident set size.
"""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np
import torch

from napari_hydranet.device import place
from napari_hydranet.infer import run_network
from napari_hydranet.models import Model
from napari_hydranet.nets import GPUNet, HydraRegressor
from napari_hydranet.setsum import epoch_batches, set_sum_loss


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def epoch_seconds(net, shape, n_scans=25, heads=4) -> float:
    rng = np.random.default_rng(0)
    images = torch.rand(n_scans, 1, *shape)
    labels = torch.rand(n_scans) * 10
    opt = torch.optim.Adam(net.parameters(), 1e-4)
    t = time.perf_counter()
    for sets in epoch_batches(n_scans, heads, 0.1, 1, rng):
        idx = [max(i, 0) for s in sets for i in s]
        loss = set_sum_loss(net(images[idx]), labels[idx], heads)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return time.perf_counter() - t


def predict_seconds(net, shape, flips=8, repeats=2) -> float:
    model = Model(net.eval(), {"architecture": {"name": "x", "args": {}}})
    x = np.random.default_rng(0).random(shape, dtype=np.float32)
    run_network(model, x, torch.device("cpu"), flips)  # warm-up
    t = time.perf_counter()
    for _ in range(repeats):
        run_network(model, x, torch.device("cpu"), flips)
    return (time.perf_counter() - t) / repeats


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--contiguous", action="store_true", help="default memory layout, not channels-last")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    layout = "contiguous" if a.contiguous else "channels-last"
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {layout}")
    cpu = torch.device("cpu")
    for shape in [(64, 52, 40), (168, 128, 84)]:
        for name, cls in [("gpunet 8/16/32", GPUNet), ("regressor", HydraRegressor)]:
            net = cls() if a.contiguous else place(cls(), cpu)
            p = predict_seconds(net, shape, repeats=1 if shape[0] > 100 else 3)
            print(
                f"{name:15s} {shape}: predict {p:6.2f} s/scan (8 flips), peak RSS {peak_mb():6.0f} MB",
                flush=True,
            )
            if shape[0] < 100:
                net = cls() if a.contiguous else place(cls(), cpu)
                e = epoch_seconds(net.train(), shape)
                print(
                    f"{name:15s} {shape}: train {e:6.1f} s/epoch (25 scans, n=4), "
                    f"peak RSS {peak_mb():6.0f} MB",
                    flush=True,
                )


if __name__ == "__main__":
    main()
