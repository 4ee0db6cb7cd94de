"""Refitting a trained model's count level and scale (the quick first step of a fine-tune)."""

import pytest
import torch

from napari_hydranet.calibrate import calibrate_output, recalibrate, recalibrate_density
from napari_hydranet.nets import GPUNet


def test_density_recalibration_fits_the_labels_and_keeps_black_images_at_zero():
    torch.manual_seed(0)
    net = GPUNet(features=(4, 8), head="density")
    x = torch.rand(12, 1, 16, 16, 8)
    x[:, :, :2] = 0  # outside the ROI
    with torch.no_grad():
        net.last.bias.fill_(0.0)
        raw = net(x)
    assert raw.min() > 0
    y = 3.0 * raw / raw.mean() + torch.linspace(0, 1, 12)  # another rater's scale and level
    fit = recalibrate(net, x, y)
    assert fit["mse_after"] <= fit["mse_before"]
    assert fit["bias"] == 0.0  # 12 scans: only the scale moves, the threshold stays
    assert float(net.last.bias.detach()) <= 0 and fit["bias"] <= 0
    with torch.no_grad():
        assert float(net(torch.zeros(1, 1, 16, 16, 8))) == 0.0  # set-sum's black slots stay at 0
        assert abs(float(net(x).mean()) - float(y.mean())) < 0.25 * float(y.mean())


def test_density_recalibration_never_counts_every_voxel():
    """Labels that grow with the ROI's size tempt a positive threshold b, which would count
    every voxel a little: black images (set-sum's p slots) would then count ~1000."""
    torch.manual_seed(0)
    net = GPUNet(features=(4, 8), head="density")
    x = torch.rand(12, 1, 16, 16, 8)
    for i in range(12):
        x[i, :, : 2 + i % 6] = 0
    with torch.no_grad():
        net.last.weight.copy_(-net.last.weight.abs())
        net.last.bias.fill_(-0.01)
    recalibrate_density(net, x, (x > 0).sum(dim=(1, 2, 3, 4)).float() / 100, fit_threshold=True)
    with torch.no_grad():
        assert float(net.last.bias) <= 0
        assert float(net(torch.zeros(1, 1, 16, 16, 8))) == 0.0


@pytest.mark.parametrize("decoder", [True, False], ids=["gp-unet", "cam-like"])
def test_density_head_starts_on_the_labels_scale(decoder):
    """calibrate_output: first counts average the mean label, black images count 0."""
    torch.manual_seed(0)
    net = GPUNet(features=(4, 8, 16), head="density", decoder=decoder)
    x = torch.rand(10, 1, 16, 16, 12)
    x[:, :, :4] = 0  # outside the ROI
    y = torch.linspace(1, 10, 10)
    calibrate_output(net, x, y)
    with torch.no_grad():
        counts = net(x)
        assert abs(float(counts.mean()) - 5.5) < 0.2 * 5.5 and float(counts.std()) > 0
        assert float(net(torch.zeros(1, 1, 16, 16, 12))) == 0.0
    fit = recalibrate(net, x, 2 * y)  # and a later refit to another rater's scale
    assert fit["mse_after"] < fit["mse_before"] and fit["scale"] > 0
