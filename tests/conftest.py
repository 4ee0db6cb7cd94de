import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from synth import make_cohort  # noqa: E402

NIBABEL_DATA = Path(__import__("nibabel").__file__).parent / "tests" / "data"


@pytest.fixture(scope="session")
def cohort(tmp_path_factory) -> Path:
    """40 synthetic scans: the first 25 labelled for training, the other 15 held out."""
    folder = make_cohort(tmp_path_factory.mktemp("cohort"), 40, seed=1)
    lines = (folder / "labels.csv").read_text().splitlines()
    (folder / "train.csv").write_text("\n".join(lines[:26]) + "\n")
    (folder / "test.csv").write_text("\n".join([lines[0], *lines[26:]]) + "\n")
    return folder
