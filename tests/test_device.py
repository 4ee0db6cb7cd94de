import pytest
import torch

from napari_hydranet.device import select_device
from napari_hydranet.errors import HydranetError


def test_a_named_device_that_is_not_here_is_refused_by_its_name(monkeypatch):
    assert select_device("cpu") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(HydranetError, match="--device cuda:1: no CUDA GPU is available here"):
        select_device("cuda:1")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(HydranetError, match=r"--device cuda:5: this machine has 1 CUDA GPU \(cuda:0\)"):
        select_device("cuda:5")
