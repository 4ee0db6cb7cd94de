import itertools

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
