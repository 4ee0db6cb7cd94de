import numpy as np
import torch

from napari_hydranet.setsum import BLACK, epoch_batches, epoch_sets, set_sum_loss, with_black


def test_each_image_once_per_epoch():
    rng = np.random.default_rng(0)
    sets = list(epoch_sets(25, 4, 0.1, rng))
    used = [i for s in sets for i in s if i != BLACK]
    assert sorted(used) == list(range(25))
    assert all(len(s) == 4 for s in sets)


def test_black_probability():
    rng = np.random.default_rng(1)
    slots = [i for _ in range(200) for s in epoch_sets(25, 4, 0.3, rng) for i in s]
    frac = np.mean([i == BLACK for i in slots])
    assert 0.25 < frac < 0.4  # p plus the padding of each epoch's last set


def test_plain_regressor_epoch_has_no_black():
    sets = list(epoch_sets(10, 1, 0.0, np.random.default_rng(0)))
    assert len(sets) == 10 and BLACK not in [s[0] for s in sets]


def test_batches_group_sets():
    batches = epoch_batches(24, 4, 0.0, 2, np.random.default_rng(0))
    assert [len(b) for b in batches] == [2, 2, 2]


def test_loss_sums_before_the_loss():
    pred = torch.tensor([1.0, 2.0, 3.0, 4.0])
    labels = torch.tensor([2.0, 1.0, 4.0, 3.0])
    assert set_sum_loss(pred, labels, heads=2) == 0  # sums match: (3 vs 3), (7 vs 7)
    assert set_sum_loss(pred, labels, heads=1) == 1  # per image: every error is 1
    assert set_sum_loss(pred, labels, heads=4, loss="mae") == 0


def test_black_slots_add_exactly_zero():
    values = torch.tensor([5.0, 7.0], requires_grad=True)
    real = torch.tensor([False, True, False, True])
    laid_out = with_black(values, real)
    assert laid_out.tolist() == [0.0, 5.0, 0.0, 7.0]
    # one set of four slots, two of them black: the loss is that of the two real images
    loss = set_sum_loss(laid_out, torch.tensor([0.0, 4.0, 0.0, 6.0]), heads=4)
    loss.backward()
    assert loss.item() == 4.0 and values.grad.tolist() == [4.0, 4.0]
