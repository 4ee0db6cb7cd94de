import pytest
import torch

from napari_hydranet.nets import GPUNet, HydraRegressor


def test_regressor_has_the_papers_parameter_count():
    assert sum(p.numel() for p in HydraRegressor().parameters()) == 196_418


@pytest.mark.parametrize("shape", [(20, 18, 14), (17, 23, 9)])
@pytest.mark.parametrize("decoder", [True, False])
def test_gpunet_any_size_heatmap_at_input_size(shape, decoder):
    net = GPUNet(features=(4, 8, 16), decoder=decoder)
    count, heat = net.forward_both(torch.rand(2, 1, *shape))
    assert count.shape == (2,) and heat.shape == (2, *shape)


def test_density_head_sums_heatmap_and_black_is_zero():
    net = GPUNet(features=(4, 8))
    with torch.no_grad():
        net.last.bias.fill_(-0.01)
        count, heat = net.forward_both(torch.rand(1, 1, 16, 16, 8))
        assert torch.allclose(count, heat.sum((1, 2, 3)))
        assert (heat >= 0).all()
        assert net(torch.zeros(3, 1, 16, 16, 8)).abs().max() == 0


def test_gap_head_count_is_heatmap_mean_plus_bias():
    net = GPUNet(features=(4, 8), head="gap")
    with torch.no_grad():
        count, heat = net.forward_both(torch.rand(1, 1, 16, 16, 8))
    assert torch.allclose(count, heat.mean((1, 2, 3)) + net.last.bias, atol=1e-6)


def test_regressor_any_size():
    assert HydraRegressor(width=4)(torch.rand(3, 1, 11, 13, 7)).shape == (3,)
