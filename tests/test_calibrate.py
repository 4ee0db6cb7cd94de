"""Refitting a trained model's count level and scale (the quick first step of a fine-tune)."""

import pytest
import torch

from napari_hydranet.augment import augment
from napari_hydranet.calibrate import calibrate_output, recalibrate, recalibrate_density
from napari_hydranet.nets import GPUNet, HydraRegressor


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
        assert float(net(torch.zeros(1, 1, 16, 16, 8))) == 0.0  # zero input (outside the ROI) counts 0
        assert abs(float(net(x).mean()) - float(y.mean())) < 0.25 * float(y.mean())


def test_density_recalibration_never_counts_every_voxel():
    """Labels that grow with the ROI's size tempt a positive threshold b, which would count
    every voxel a little: an all-zero image (and the outside of every ROI) would then count ~1000."""
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


class _SparseMap(torch.nn.Module):
    """A density model stub whose w·f is positive on bright voxels only (x > 0.5), as few as
    in the pretrained models (0.3 % of the ROI), and 0 on black images."""

    def __init__(self):
        super().__init__()
        self.last = torch.nn.Conv3d(2, 1, 1)
        self.register_buffer("count_scale", torch.ones(()))
        with torch.no_grad():
            self.last.weight.copy_(torch.tensor([-1.0, 2.0]).view(1, 2, 1, 1, 1))
            self.last.bias.fill_(0.0)

    def features(self, x):
        return torch.cat([x, x**2], dim=1)

    def forward(self, x):
        return self.count_scale * torch.relu(self.last(self.features(x))).sum(dim=(1, 2, 3, 4))


def test_density_recalibration_finds_a_threshold_among_few_positive_voxels():
    """The threshold grid must cover the levels where w·f > 0, however few voxels reach them."""
    g = torch.Generator().manual_seed(0)
    x = 0.05 + 0.4 * torch.rand(60, 1, 24, 24, 16, generator=g)
    bright = torch.rand(x.shape, generator=g) < 0.003 * torch.linspace(0.2, 1.8, 60).view(60, 1, 1, 1, 1)
    x[bright] = 0.5 + 0.5 * torch.rand(int(bright.sum()), generator=g)
    net = _SparseMap()
    with torch.no_grad():
        z = net.last(net.features(x)) - net.last.bias.view(1, -1, 1, 1, 1)
        y = 4.0 * torch.relu(z - 0.3).sum(dim=(1, 2, 3, 4))  # threshold 0.3 inside (0, 1), scale 4
    fit = recalibrate_density(net, x, y, fit_threshold=True)
    assert -0.34 < fit["bias"] < -0.26 and 3.5 < fit["scale"] < 4.5
    assert fit["mse_after"] < 0.01 * float(y.var())
    with torch.no_grad():
        assert float(net(torch.zeros(1, 1, 8, 8, 8))) == 0.0


def test_regressor_probe_fitted_on_augmented_views_is_steadier_under_augmentation():
    torch.manual_seed(0)
    x = torch.zeros(24, 1, 16, 16, 12)
    x[:, :, 2:14, 2:14, 2:10] = 0.3 + 0.1 * torch.rand(24, 1, 1, 1, 1)  # the ROI, tissue levels vary
    y = torch.randint(0, 6, (24,)).float()
    for i, n in enumerate(y.int().tolist()):  # n bright voxels: the lesions
        x[i, 0, torch.randint(3, 13, (n,)), torch.randint(3, 13, (n,)), torch.randint(3, 9, (n,))] = 1.0
    swings = {}
    for views in (False, True):
        torch.manual_seed(1)
        net = HydraRegressor(width=4)
        gen = torch.Generator().manual_seed(2)
        calibrate_output(net, x, y, augmented=(lambda b, g=gen: augment(b, g)) if views else None)
        with torch.no_grad():
            shifted = augment(x, torch.Generator().manual_seed(3))
            swings[views] = float((net(shifted) - net(x)).pow(2).mean().sqrt())
    assert swings[True] < 0.5 * swings[False], swings


def test_quantiles_of_many_scans_are_taken_from_every_scan():
    from napari_hydranet.calibrate import spread_sample

    values = torch.cat([torch.zeros(600), torch.ones(600)])  # two scans' voxels, one after the other
    sample = spread_sample(values, 100)
    assert 90 <= len(sample) <= 100 and sample.mean() == pytest.approx(0.5, abs=0.02)
    assert torch.equal(spread_sample(values, 5000), values)  # few enough: all of them


def test_ridge_fit_of_features_with_a_constant_column_is_finite():
    from napari_hydranet.calibrate import ridge_fit

    feats = torch.zeros(6, 3, dtype=torch.float64)
    feats[:, 0] = torch.arange(6.0)  # the other features never vary: singular values of 0
    w, b = ridge_fit(feats, torch.arange(6.0) * 2)
    assert torch.isfinite(w).all() and w[0] > 0 and b == pytest.approx(5.0)


def test_density_maps_take_any_input_size_the_network_takes():
    """The refit's maps are padded as the network pads its input (30×26×21 is not a multiple
    of 4: unpadded, the decoder's skip connections did not fit)."""
    from napari_hydranet.calibrate import density_maps

    net = GPUNet(features=(4, 8, 16)).eval()
    x = torch.rand(2, 1, 30, 26, 21)
    z = density_maps(net, x)
    assert z.shape == (2, 1, 30, 26, 21)
    with torch.no_grad():
        count, _ = net.forward_both(x)
    expected = net.count_scale * torch.relu(z + net.last.bias.view(1, -1, 1, 1, 1))
    torch.testing.assert_close(expected.sum(dim=(1, 2, 3, 4)), count)


class NoFloat64(torch.Tensor):
    """A tensor as Apple's MPS device holds it: no float64 and no numpy() until it is copied
    to the CPU (which gives a plain tensor)."""

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.Tensor.cpu:
            return args[0].as_subclass(torch.Tensor)
        wants64 = torch.float64 in (*args[1:], *kwargs.values())
        if func in (torch.Tensor.double, torch.Tensor.numpy) or wants64:
            raise TypeError(f"{getattr(func, '__name__', func)}: float64 and numpy() need the CPU")
        return super().__torch_function__(func, types, args, kwargs)


@pytest.mark.parametrize("arch", ["regressor", "gpunet"])
def test_fits_run_where_a_device_has_no_float64(arch):
    """The refits and the regressor's probe fit in float64 on the CPU, not on the network's
    device: MPS (a Mac's default) has no float64."""
    torch.manual_seed(0)
    net = HydraRegressor(width=4) if arch == "regressor" else GPUNet(features=(4, 8), head="density")
    x = torch.rand(12, 1, 16, 16, 8)
    x[:, :, :2] = 0
    y = torch.linspace(0, 6, 12)
    on_device = x.as_subclass(NoFloat64), y.as_subclass(NoFloat64)
    with pytest.raises(TypeError, match="need the CPU"):
        on_device[1].double()  # the emulation holds
    calibrate_output(net, *on_device)
    fit = recalibrate(net, *on_device)
    assert fit["mse_after"] <= fit["mse_before"]
