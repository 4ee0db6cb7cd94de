import itertools

import pytest
import torch

from napari_hydranet.augment import augment


def _noise(b=4, c=1, size=(12, 10, 8), seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, c, *size, generator=g) + 0.5  # no zeros: zero marks moved-in voxels


def test_augment_copies_voxels_so_the_noise_texture_is_unchanged():
    x = _noise()
    out = augment(x, torch.Generator().manual_seed(1))
    assert out.shape == x.shape
    for i in range(len(x)):
        kept = out[i][out[i] != 0]
        # interpolation would make new values (and a smoother, lower-variance image)
        assert torch.isin(kept, x[i]).all()
        assert len(kept) >= (12 - 2) * (10 - 2) * (8 - 2)  # a shift of ≤ 2 loses ≤ 2 slices per axis


def test_augment_is_a_flip_and_a_whole_voxel_shift_of_at_most_max_shift():
    x = _noise(b=6)
    out = augment(x, torch.Generator().manual_seed(2), max_shift=2)
    moved = 0
    for i in range(len(x)):
        found = False
        for flips in itertools.chain.from_iterable(itertools.combinations((1, 2, 3), k) for k in range(4)):
            xf = torch.flip(x[i], flips) if flips else x[i]
            for s in itertools.product(range(-2, 3), repeat=3):
                rolled = torch.roll(xf, s, dims=(1, 2, 3))
                inside = out[i] != 0
                if inside.any() and torch.equal(rolled[inside], out[i][inside]):
                    found = True
                    moved += any(s) or bool(flips)
                    break
            if found:
                break
        assert found, f"image {i} is not a flipped, shifted copy"
    assert moved > 0  # the draws do change the images


def test_augment_moves_all_channels_of_an_image_together_and_follows_its_generator():
    x = _noise(b=3).repeat(1, 2, 1, 1, 1)
    a = augment(x, torch.Generator().manual_seed(3))
    b = augment(x, torch.Generator().manual_seed(3))
    assert torch.equal(a[:, 0], a[:, 1])
    assert torch.equal(a, b)
    assert torch.equal(augment(x, torch.Generator().manual_seed(3), flip=False, max_shift=0), x)


def test_smoothing_blurs_the_chosen_views_and_keeps_their_level():
    """Pretraining views with the texture of scans interpolated after acquisition, which the
    bundled model counted 40-60 % lower."""
    from napari_hydranet.augment import smooth

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(64, 1, 12, 12, 12, generator=gen) + 5.0
    out = smooth(x, torch.Generator().manual_seed(1), p=0.5)
    changed = [not torch.equal(a, b) for a, b in zip(out, x)]
    assert 20 < sum(changed) < 44  # about half the views
    ratios = []
    for a, b, c in zip(out, x, changed):
        if c:  # white noise blurred: less spread, same level
            assert a.std() < b.std() and abs(float(a.mean() - b.mean())) < 0.05
            ratios.append(float(a.std() / b.std()))
    assert min(ratios) < 0.6 < max(ratios)  # widths from barely any to most of a voxel
    assert torch.equal(smooth(x, gen, p=0.0), x)


def test_smoothing_is_refused_without_lesion_masks(tmp_path):
    from napari_hydranet.errors import HydranetError
    from napari_hydranet.train import TrainConfig

    cfg = TrainConfig(scans_dir=str(tmp_path), labels="l.csv", out=str(tmp_path / "m"), augment_smooth=0.5)
    with pytest.raises(HydranetError, match="--augment-smooth needs --density"):
        cfg.validate()
    cfg = TrainConfig(
        scans_dir=str(tmp_path), labels="l.csv", out=str(tmp_path / "m"), augment_smooth=0.5, augment=False
    )
    with pytest.raises(HydranetError, match="leave out --no-augment"):  # it was ignored
        cfg.validate()
