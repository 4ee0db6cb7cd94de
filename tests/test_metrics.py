import numpy as np
import pytest

from napari_hydranet.metrics import (
    agreement,
    agreement_report,
    bland_altman,
    detection_scores,
    froc,
    icc,
    icc21_interval,
    match,
    sensitivity_at,
)

# Shrout & Fleiss (1979), Table 2: 6 targets rated by 4 judges, and their Table 4 results.
SHROUT_FLEISS = np.array(
    [[9, 2, 5, 8], [6, 1, 3, 2], [8, 4, 6, 8], [7, 1, 2, 6], [10, 5, 6, 9], [6, 2, 4, 7]]
)


@pytest.mark.parametrize("kind, expected", [("1,1", 0.17), ("2,1", 0.29), ("3,1", 0.71)])
def test_icc_matches_shrout_fleiss(kind, expected):
    assert icc(SHROUT_FLEISS, kind) == pytest.approx(expected, abs=0.005)


def test_icc21_interval_holds_the_shrout_fleiss_example_and_covers_95_percent():
    """The F-based interval of McGraw & Wong (1996): on Shrout & Fleiss's table it spans
    0.02 to 0.76 (as SPSS and pingouin report); on simulated model-against-reference pairs with
    no systematic bias it holds the true ICC in about 95 % of draws (with a bias it is wider:
    97–100 % in a reviewer's simulation)."""
    low, high = icc21_interval(SHROUT_FLEISS)
    assert low == pytest.approx(0.02, abs=0.005) and high == pytest.approx(0.76, abs=0.005)
    rng, true, hits = np.random.default_rng(0), 4 / 5, 0
    for _ in range(400):
        subject = rng.normal(0, 2, 25)[:, None]
        hits += (lambda lo_hi: lo_hi[0] <= true <= lo_hi[1])(
            icc21_interval(5 + subject + rng.normal(0, 1, (25, 2)))
        )
    assert 0.92 <= hits / 400 <= 0.98


def test_agreement_report_adds_spearman_and_bland_altman():
    ref = np.arange(10.0)
    out = agreement_report(ref**2 + 1, ref)  # monotonic, not linear, and above
    assert out["spearman"] == pytest.approx(1.0) and out["icc21_low"] < out["icc21"] < out["icc21_high"]
    diff = ref**2 + 1 - ref
    assert out["bias"] == pytest.approx(diff.mean())
    assert out["loa_high"] - out["bias"] == pytest.approx(1.96 * diff.std(ddof=1))
    assert np.isnan(agreement_report(np.ones(5), ref[:5])["spearman"])  # a constant has no ranks


def test_undefined_intervals_and_limits_are_nan_and_identical_ratings_give_one():
    counts = np.array([1.0, 2.0, 3.0, 5.0, 8.0])
    assert icc21_interval(np.stack([counts, counts], 1)) == (1.0, 1.0)
    assert np.isnan(icc21_interval(np.zeros((3, 2)))).all()  # no variance: no ICC, no interval
    assert np.isnan(icc21_interval(np.stack([counts, counts + 1], 1))).all()  # no error term, a bias
    bias, half = bland_altman([3.0], [2.0])
    assert bias == 1.0 and np.isnan(half)  # one pair has no spread: no limits, not limits of 0
    assert np.isnan(bland_altman([], [])).all()


def test_agreement_absolute_vs_consistency():
    ref = np.arange(10.0)
    shifted = agreement(ref + 3, ref)
    assert shifted["icc31"] == pytest.approx(1.0) and shifted["icc21"] < 0.9
    assert shifted["mae"] == pytest.approx(3) and shifted["mse"] == pytest.approx(9)


def test_match_one_to_one_within_radius():
    truth = np.array([[0, 0, 0], [10, 10, 10]])
    dets = np.array([[1, 0, 0], [0.5, 0, 0], [20, 20, 20]])
    m = match(dets, truth, radius=3)
    assert (m.tp, m.fp, m.fn) == (1, 2, 1)
    s = detection_scores([m, match(np.zeros((0, 3)), truth)])
    assert s["tpr"] == 0.25 and s["fp_per_scan"] == 1.0 and s["fdr"] == pytest.approx(2 / 3)


def test_froc_rises_as_threshold_falls():
    truth = [np.array([[0, 0, 0], [9, 9, 9]])]
    dets = [(np.array([[0, 0, 1], [5, 5, 5], [9, 9, 8]]), np.array([0.9, 0.5, 0.3]))]
    curve = froc(dets, truth)
    assert list(curve["tpr"]) == [0.5, 0.5, 1.0]
    assert list(curve["fp_per_scan"]) == [0, 1, 1]
    assert sensitivity_at(curve, 0) == 0.5 and sensitivity_at(curve, 1) == 1.0
