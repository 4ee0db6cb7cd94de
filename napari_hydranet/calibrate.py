"""Data-dependent settings of a network's output layer: where training starts, and the
count-only recalibration (scale and offset) of a trained density model."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from .nets.blocks import pad_to_multiple


def f64(t: torch.Tensor) -> torch.Tensor:
    """``t`` in float64 on the CPU: the fits below are small, and Apple's MPS has no float64."""
    return t.detach().cpu().double()


def ridge_fit(feats: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, float]:
    """Ridge regression of y on features, its penalty chosen by generalised cross-validation
    (on the CPU; the weights are returned there)."""
    f, y = f64(feats), f64(y)
    yc = y - y.mean()
    u, s, vt = torch.linalg.svd(f, full_matrices=False)
    uty = u.T @ yc
    best = None
    for lam in np.logspace(-2, 4, 25) * len(y):
        shrink = s**2 / (s**2 + lam)
        resid = yc - u @ (shrink * uty)
        gcv = float((resid**2).mean() / (1 - shrink.sum() / len(y)) ** 2)
        if best is None or gcv < best[0]:
            best = (gcv, vt.T @ (s / (s**2 + lam) * uty))  # = shrink / s, without 0 / 0
    w = best[1].float()
    return w, float(y.mean())


def roi_like(x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """Where the input is non-zero (the ROI), on the grid of the maps z (coarser without a decoder)."""
    roi = (x > 0).float()
    if roi.shape[-3:] != z.shape[-3:]:
        roi = torch.nn.functional.adaptive_max_pool3d(roi, z.shape[-3:])
    return roi.expand_as(z) > 0


# Augmented copies of each scan beside it in the regressor's probe (``calibrate_output``)
PROBE_VIEWS = 3


def calibrate_output(
    net: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    active: float = 0.02,
    augmented: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> None:
    """Set the output layer from data so that training starts on the labels' scale.

    Regressor: the pooled features are standardised over the training scans and the last
    layer is the ridge regression of the labels on them (a linear probe), so the first
    predictions already spread like the labels instead of being one constant. With
    ``augmented`` (a function returning augmented copies of a batch), ``PROBE_VIEWS``
    augmented copies of each scan join the fit with the scan's label: a probe fitted on plain
    scans alone moved by about one label SD when they were flipped and shifted as in training.
    Density head: w·f is scaled to unit spread inside the ROI and its sign chosen so the
    first counts correlate positively with the labels; b puts the top ``active`` fraction
    of voxels above zero; the fixed scale s makes the mean Σ s·ReLU(w·f + b) equal the mean
    label. A wide active set keeps gradients flowing; a tiny one dies in the first steps.
    Other heads: the bias is shifted by the gap between mean prediction and mean label.
    """
    bias = net.output_bias
    mean_label = float(y.mean())
    with torch.no_grad():
        if hasattr(net, "pool_mean"):
            net.pool_mean.zero_()
            net.pool_scale.fill_(1.0)
            views = [x] + [augmented(x) for _ in range(PROBE_VIEWS if augmented else 0)]
            feats = torch.cat([batched(net.pooled, v) for v in views])
            net.pool_mean.copy_(feats.mean(0))
            net.pool_scale.copy_(feats.std(0).clamp_min(1e-6))
            w, b = ridge_fit((feats - net.pool_mean) / net.pool_scale, y.repeat(len(views)))
            net.fc.weight.copy_(w[None])
            bias.fill_(b)
            return
        if getattr(net, "head", None) != "density":
            bias.add_(mean_label - batched(net, x).mean().item())
            return
        z = density_maps(net, x)
        inside = z[roi_like(x, z)] if (x > 0).any() else z.flatten()
        spread = inside.float().std().item() or 1.0

        def first_counts(sign: float) -> tuple[float, torch.Tensor]:
            # b < 0 keeps zero input (outside the ROI, black images) at zero density
            level = max(
                torch.quantile(sign * spread_sample(inside.float(), 1_000_000) / spread, 1 - active).item(),
                1e-3,
            )
            return level, torch.relu(sign * z / spread - level).sum(dim=(1, 2, 3, 4))

        sign = 1.0
        level, counts = first_counts(sign)
        if len(y) > 2 and y.std() > 0 and counts.std() > 0:
            if torch.corrcoef(torch.stack([counts, y.to(counts)]))[0, 1] < 0:
                sign = -1.0
                level, counts = first_counts(sign)
        net.last.weight.mul_(sign / spread)
        bias.fill_(-level)
        net.count_scale.fill_(max(mean_label, 0.1) / max(counts.mean().item(), 1e-8))


def spread_sample(values: torch.Tensor, n: int) -> torch.Tensor:
    """At most about ``n`` of ``values``, taken evenly from all of them (every scan, not the
    first ones): torch.quantile takes at most 16 million values."""
    return values[:: max(1, -(-values.numel() // n))]


@torch.no_grad()
def batched(fn, x: torch.Tensor, batch: int = 4) -> torch.Tensor:
    """``fn`` over scans x a few at a time (memory of ``batch`` scans, not of all of them)."""
    return torch.cat([fn(x[i : i + batch]) for i in range(0, len(x), batch)])


@torch.no_grad()
def density_maps(net: torch.nn.Module, x: torch.Tensor, batch: int = 4) -> torch.Tensor:
    """w·f of a density model on scans x (before its threshold b and scale s), on x's grid;
    padded as the network pads them, so any input size works that the network takes."""

    def w_f(b: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.conv3d(
            net.features(pad_to_multiple(b, getattr(net, "multiple", 1))[0]), net.last.weight
        )

    z = batched(w_f, x, batch)
    return z[..., : x.shape[-3], : x.shape[-2], : x.shape[-1]]


@torch.no_grad()
def fit_threshold_and_scale(
    z: torch.Tensor, roi: torch.Tensor, y: torch.Tensor, bias: float, fit_threshold: bool = True
) -> tuple[float, float, float]:
    """(MSE, s, b) of the count Σ s·ReLU(z + b) fitted to labels y by least squares in s.

    b ≤ 0 is chosen on a grid of levels of z inside the ROI mask ``roi`` (or is ``bias``,
    capped at 0, when ``fit_threshold`` is False).
    """
    yd = f64(y)

    def fit(b: float) -> tuple[float, float]:
        total = f64(torch.relu(z + b).sum(dim=(1, 2, 3, 4)))
        scale = float((total * yd).sum() / (total * total).sum().clamp_min(1e-12))
        return float(((scale * total - yd) ** 2).mean()), scale

    inside = spread_sample(z[roi].float(), 2_000_000)
    # levels v ≥ 0 that leave log-spaced fractions of the ROI active, from every voxel with
    # w·f > 0 down to 1 in 100,000. (A grid of the ROI's 0.9-0.9999 quantiles put all but one
    # or two of its levels below 0 for the pretrained models, where 0.3 % of voxels are > 0.)
    positive = float((inside > 0).float().mean())
    levels = []
    if positive > 0:
        active = np.logspace(np.log10(positive), np.log10(min(positive, 1e-5)), 48)
        levels = torch.quantile(inside, torch.from_numpy(1 - active).to(inside)).clamp_min(0).tolist()
    # b ≤ 0 keeps zero input (outside the ROI) at exactly 0 (bias-free convolutions give
    # z = 0 there): a positive b would count every voxel outside the ROI a little
    candidates = [b for b in [bias] + [-v for v in levels] if b <= 0] or [0.0]
    if not fit_threshold:
        candidates = [min(bias, 0.0)]
    return min(((*fit(b), b) for b in candidates), key=lambda t: t[0])


@torch.no_grad()
def recalibrate_density(
    net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 4, fit_threshold: bool = True
) -> dict:
    """Refit a density model's count scale s, and its threshold b, to labelled scans.

    The heatmap's shape (w·f) is kept; b and s come from ``fit_threshold_and_scale``.
    Returns the fit's MSE before and after.
    """
    z = density_maps(net, x, batch)
    counts = float(net.count_scale) * torch.relu(z + float(net.last.bias)).sum(dim=(1, 2, 3, 4))
    before = float(((f64(counts) - f64(y)) ** 2).mean())
    mse, scale, b = fit_threshold_and_scale(z, roi_like(x, z), y, float(net.last.bias), fit_threshold)
    net.last.bias.fill_(b)
    net.count_scale.fill_(scale)
    return {"mse_before": before, "mse_after": mse, "bias": b, "scale": scale}


# Below this many labelled scans a density model's threshold is kept and only its scale is
# refitted: on 20 simulated scans refitting both lowered held-out ICC(2,1) against the
# labels' rater from 0.62 to 0.60, scale alone raised it to 0.65-0.67 (docs/benchmarks.md).
# With model 6 and 25 scans, over 200 draws on four cohorts, refitting both was level or lower
# against the expert and the rater (0 to -0.008; benchmarks/recalibration.py).
THRESHOLD_FIT_MIN_SCANS = 50


@torch.no_grad()
def recalibrate(net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 4) -> dict:
    """Refit only the count's level and scale to labelled scans; the heatmap's shape stays.

    Density heads refit their scale, and their threshold too from
    ``THRESHOLD_FIT_MIN_SCANS`` scans (``recalibrate_density``); other heads get the
    least-squares line count → a·count + c folded into their last layer. Returns the
    training MSE before and after.
    """
    if getattr(net, "head", None) == "density":
        return recalibrate_density(net, x, y, batch, fit_threshold=len(x) >= THRESHOLD_FIT_MIN_SCANS)
    net.eval()
    pred = f64(batched(net, x, batch))
    yd = f64(y)
    a, c = (
        np.polyfit(pred.numpy(), yd.numpy(), 1) if float(pred.std()) > 0 else (1.0, float((yd - pred).mean()))
    )
    last = net.fc if hasattr(net, "fc") else net.last
    last.weight.mul_(float(a))
    last.bias.mul_(float(a)).add_(float(c))
    after = pred * float(a) + float(c)
    return {
        "mse_before": float(((pred - yd) ** 2).mean()),
        "mse_after": float(((after - yd) ** 2).mean()),
        "scale": float(a),
        "offset": float(c),
    }
