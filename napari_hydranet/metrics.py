"""Agreement (ICC, MAE, MSE) and detection (TPR, FP per scan, FDR, FROC) metrics."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment

# Values whose typical sizes differ this many times are of another finding or another unit
# (WMH volumes in mm³ against EPVS counts: about 600×; mL against mm³: 1000×)
SCALE_APART = 10.0
FEW_FOR_ICC = 10  # scans below which an ICC's 95 % interval spans most of its range


def bland_altman(pred, label) -> tuple[float, float]:
    """Bias (mean of predicted − label) and the half-width of the 95 % limits of agreement
    (1.96 SD of the differences); NaN where undefined (the bias without pairs, the limits
    with fewer than two)."""
    diff = np.asarray(pred, float) - np.asarray(label, float)
    bias = float(diff.mean()) if len(diff) else float("nan")
    return bias, 1.96 * float(diff.std(ddof=1)) if len(diff) > 1 else float("nan")


def _mean_squares(ratings: np.ndarray):
    y = np.asarray(ratings, dtype=float)
    if y.ndim != 2 or y.shape[0] < 2 or y.shape[1] < 2:
        raise ValueError("ratings must be (targets ≥ 2, raters ≥ 2)")
    n, k = y.shape
    grand = y.mean()
    ss_rows = k * ((y.mean(1) - grand) ** 2).sum()
    ss_cols = n * ((y.mean(0) - grand) ** 2).sum()
    ss_err = ((y - grand) ** 2).sum() - ss_rows - ss_cols
    msr = ss_rows / (n - 1)
    msc = ss_cols / (k - 1)
    mse = ss_err / ((n - 1) * (k - 1))
    msw = (ss_cols + ss_err) / (n * (k - 1))
    return n, k, msr, msc, mse, msw


def _ratio(num: float, den: float) -> float:
    return float(num / den) if den != 0 else float("nan")


def icc(ratings: np.ndarray, kind: str = "2,1") -> float:
    """Intraclass correlation of an (n targets × k raters) table (Shrout & Fleiss 1979).

    kind: "1,1" (one-way), "2,1" (two-way random, absolute agreement) or "3,1" (two-way
    mixed, consistency).
    """
    n, k, msr, msc, mse, msw = _mean_squares(ratings)
    if kind == "1,1":
        return _ratio(msr - msw, msr + (k - 1) * msw)
    if kind == "2,1":
        return _ratio(msr - mse, msr + (k - 1) * mse + k * (msc - mse) / n)
    if kind == "3,1":
        return _ratio(msr - mse, msr + (k - 1) * mse)
    raise ValueError(f"unknown ICC kind {kind!r}")


def agreement(predicted: Sequence[float], reference: Sequence[float]) -> dict[str, float]:
    """ICC(2,1), ICC(3,1), MAE, MSE and n of predictions against reference labels."""
    p = np.asarray(predicted, float)
    r = np.asarray(reference, float)
    if p.shape != r.shape:
        raise ValueError("predicted and reference differ in length")
    out = {"n": int(p.size), "mae": float("nan"), "mse": float("nan")}
    out["icc21"] = out["icc31"] = float("nan")
    if p.size:
        out["mae"] = float(np.abs(p - r).mean())
        out["mse"] = float(((p - r) ** 2).mean())
    if p.size >= 2:
        table = np.stack([p, r], 1)
        out["icc21"] = icc(table, "2,1")
        out["icc31"] = icc(table, "3,1")
    return out


def icc21_interval(ratings: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """The F-based confidence interval of ICC(2,1) (McGraw & Wong 1996, ICC(A,1); as SPSS
    and pingouin give it): 1 to 1 for identical ratings, NaN where the ICC is undefined or
    the error term is 0 with a bias between raters."""
    from scipy.stats import f as f_dist

    n, k, msr, msc, mse, _ = _mean_squares(ratings)
    r = icc(ratings, "2,1")
    if not np.isfinite(r):  # no variance at all (every rating the same)
        return float("nan"), float("nan")
    if not np.ptp(np.asarray(ratings, float), axis=1).any():  # every rater gave every target the same
        return 1.0, 1.0
    if mse <= 0:
        return float("nan"), float("nan")
    a = k * r / (n * (1 - r))
    b = 1 + k * r * (n - 1) / (n * (1 - r))
    v = (a * msc + b * mse) ** 2 / ((a * msc) ** 2 / (k - 1) + (b * mse) ** 2 / ((n - 1) * (k - 1)))
    q = 1 - (1 - level) / 2
    fl, fu = f_dist.ppf(q, n - 1, v), f_dist.ppf(q, v, n - 1)
    lower = n * (msr - fl * mse) / (fl * (k * msc + (k * n - k - n) * mse) + n * msr)
    upper = n * (fu * msr - mse) / (k * msc + (k * n - k - n) * mse + n * fu * msr)
    return float(lower), float(upper)


def agreement_report(predicted: Sequence[float], reference: Sequence[float]) -> dict[str, float]:
    """``agreement`` with what a methods section reports beside it: the 95 % interval of
    ICC(2,1), Spearman's rank correlation, and the Bland-Altman bias (predicted − reference)
    with its 95 % limits of agreement."""
    from scipy.stats import spearmanr

    out = agreement(predicted, reference)
    p, r = np.asarray(predicted, float), np.asarray(reference, float)
    out["icc21_low"] = out["icc21_high"] = out["spearman"] = float("nan")
    if p.size >= 3:
        out["icc21_low"], out["icc21_high"] = icc21_interval(np.stack([p, r], 1))
        if np.ptp(p) > 0 and np.ptp(r) > 0:
            out["spearman"] = float(spearmanr(p, r).statistic)
    bias, half = bland_altman(p, r)
    out.update(bias=bias, loa_low=bias - half, loa_high=bias + half)
    return out


@dataclass
class Matching:
    """Detections matched one-to-one to true lesions within a radius."""

    tp: int
    fp: int
    fn: int


def match(detected: np.ndarray, truth: np.ndarray, radius: float = 3.0) -> Matching:
    """Match detection centres to true centres (both (N, 3) voxel coords).

    A true lesion is found when a detection lies within ``radius`` voxels of it (004 §3);
    each detection and each lesion is used once (optimal assignment). Give world mm
    coordinates and a radius in mm to match in mm.
    """
    d = np.asarray(detected, float).reshape(-1, 3)
    t = np.asarray(truth, float).reshape(-1, 3)
    if len(d) == 0 or len(t) == 0:
        return Matching(0, len(d), len(t))
    dist = np.linalg.norm(d[:, None, :] - t[None, :, :], axis=2)
    cost = np.where(dist <= radius, dist, 1e9)
    rows, cols = linear_sum_assignment(cost)
    tp = int((cost[rows, cols] < 1e9).sum())
    return Matching(tp, len(d) - tp, len(t) - tp)


def detection_scores(matches: Sequence[Matching]) -> dict[str, float]:
    """TPR (sensitivity), average false positives per scan and FDR over scans."""
    tp = sum(m.tp for m in matches)
    fp = sum(m.fp for m in matches)
    fn = sum(m.fn for m in matches)
    return {
        "tpr": _ratio(tp, tp + fn),
        "fp_per_scan": _ratio(fp, len(matches)),
        "fdr": _ratio(fp, tp + fp) if tp + fp else 0.0,
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "scans": len(matches),
    }


def froc(
    detections: Sequence[tuple[np.ndarray, np.ndarray]],
    truths: Sequence[np.ndarray],
    radius: float = 3.0,
    thresholds: Sequence[float] | None = None,
) -> dict[str, np.ndarray]:
    """Free-response ROC: sensitivity against FP per scan as the score threshold falls.

    detections: per scan (centres (N, 3), scores (N,)); truths: per scan centres (M, 3).
    """
    all_scores = np.concatenate([np.asarray(s, float) for _, s in detections] or [np.zeros(0)])
    if thresholds is None:
        thresholds = np.unique(all_scores)[::-1]
    tpr, fpav = [], []
    for t in thresholds:
        ms = [match(c[np.asarray(s) >= t], tr, radius) for (c, s), tr in zip(detections, truths)]
        sc = detection_scores(ms)
        tpr.append(sc["tpr"])
        fpav.append(sc["fp_per_scan"])
    return {"threshold": np.asarray(thresholds), "tpr": np.array(tpr), "fp_per_scan": np.array(fpav)}


def sensitivity_at(curve: dict[str, np.ndarray], max_fp_per_scan: float) -> float:
    """Highest sensitivity on an FROC curve with at most ``max_fp_per_scan``."""
    ok = curve["fp_per_scan"] <= max_fp_per_scan
    return float(curve["tpr"][ok].max()) if ok.any() else 0.0
