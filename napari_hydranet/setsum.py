"""Set-sum augmentation (000 §2): sets of n images, predictions summed, one loss per set."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch.nn import functional as F

from .options import LOSSES

BLACK = -1  # index standing for an all-zero image with label 0


def epoch_sets(n_images: int, heads: int, p_black: float, rng: np.random.Generator) -> Iterator[list[int]]:
    """Sets of ``heads`` indices covering every image once, drawn without replacement.

    Each slot is a black image (``BLACK``) with probability ``p_black``; the last set is
    filled up with black images. With ``heads=1, p_black=0`` this is a shuffled epoch.
    """
    order = list(rng.permutation(n_images))
    while order:
        chosen = []
        for _ in range(heads):
            if order and rng.random() >= p_black:
                chosen.append(int(order.pop()))
            else:
                chosen.append(BLACK)
        if any(i != BLACK for i in chosen):
            yield chosen


def epoch_batches(
    n_images: int, heads: int, p_black: float, sets_per_batch: int, rng: np.random.Generator
) -> list[list[list[int]]]:
    """Group an epoch's sets into optimiser steps of ``sets_per_batch`` sets."""
    sets = list(epoch_sets(n_images, heads, p_black, rng))
    return [sets[i : i + sets_per_batch] for i in range(0, len(sets), sets_per_batch)]


def with_black(values: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """The real slots' ``values`` in a set's layout, 0 in the black slots.

    000 §2 builds set-sum on f(B) = 0 for a black image B: a set with black slots is a set
    of fewer real images. Black slots therefore add exactly 0 instead of the network's
    output on an all-zero input (a regressor with biases, started from a linear probe of its
    features, puts an all-zero image many label SDs away and would spend its first epochs
    learning to send it back to 0).
    """
    out = values.new_zeros((len(real), *values.shape[1:]))
    out[real] = values
    return out


def set_sum_loss(
    predictions: torch.Tensor, labels: torch.Tensor, heads: int, loss: str = "mse"
) -> torch.Tensor:
    """Loss of summed predictions against summed labels.

    ``predictions`` and ``labels`` are flat (sets·heads,), laid out set by set, so the n
    heads are one forward pass over all images. Each set's predictions are summed, then
    the loss is taken once per set and averaged over sets (000 §2: the sum comes first).
    """
    pred = predictions.view(-1, heads).sum(1)
    target = labels.view(-1, heads).sum(1)
    if loss == "mse":
        return F.mse_loss(pred, target)
    if loss == "mae":
        return F.l1_loss(pred, target)
    raise ValueError(f"loss must be one of {LOSSES}, not {loss!r}")
