import pytest

from napari_hydranet.infer import format_count


@pytest.mark.parametrize(
    ("value", "text"), [(-0.04, "0.0"), (-0.0, "0.0"), (0.0, "0.0"), (6.46, "6.5"), (-1.23, "-1.2")]
)
def test_counts_near_zero_are_shown_without_a_minus_sign(value, text):
    assert format_count(value) == text


def test_the_voxel_size_note_is_left_to_models_that_know_no_voxel_range():
    import numpy as np

    from napari_hydranet.infer import spacing_notes
    from napari_hydranet.io import Scan
    from napari_hydranet.models import Model
    from napari_hydranet.preprocess import PreprocessConfig, prepare

    scan = Scan(np.random.default_rng(0).random((40, 40, 30), dtype=np.float32), np.diag([1.4, 1.4, 1.4, 1]))
    trained = {"training": {"spacing_mm": [1.0, 1.0, 1.0]}}
    older = Model(None, {**trained, "preprocess": {}}, None)
    prepared = prepare(scan, older.preprocess)
    assert (
        "voxel size (1.4, 1.4, 1.4) mm differs from the model's training data"
        in spacing_notes(older, prepared)[0]
    )
    ranged = PreprocessConfig(spacing_range_mm=(0.9, 1.6), spacing_mm=(1.24, 1.24, 1.23))
    newer = Model(None, {**trained, "preprocess": ranged.to_dict()}, None)
    assert spacing_notes(newer, prepare(scan, newer.preprocess)) == []  # inside its range: no doubt to raise


def test_a_model_that_outputs_nan_is_a_clear_error(tmp_path):
    import numpy as np
    import torch

    from napari_hydranet.errors import HydranetError
    from napari_hydranet.infer import predict_scan
    from napari_hydranet.io import Scan
    from napari_hydranet.models import Model, build_net

    net = build_net("gpunet", {"features": [2, 4]})
    with torch.no_grad():
        net.output_bias.fill_(float("nan"))
    model = Model(net, {"preprocess": {"crop_shape": [16, 16, 16]}}, tmp_path / "broken")
    scan = Scan(np.random.default_rng(0).random((20, 20, 20), dtype=np.float32), np.eye(4))
    with pytest.raises(HydranetError, match="broken: the network gave a NaN or infinite output"):
        predict_scan(model, scan, torch.device("cpu"))


def test_a_regressors_count_below_zero_is_kept_and_noted():
    """A regressor's output is a linear layer's: a count of -1.3 lesions went to the table
    without a word."""
    import numpy as np
    import torch

    from napari_hydranet.infer import predict_scan
    from napari_hydranet.io import Scan
    from napari_hydranet.models import Model, build_net

    net = build_net("regressor", {"width": 2})
    with torch.no_grad():
        net.fc.weight.zero_()
        net.fc.bias.fill_(-1.3)
    model = Model(
        net,
        {"preprocess": {"crop_shape": [16, 16, 16]}, "label": {"name": "WMH volume", "unit": "mm3"}},
        None,
    )
    scan = Scan(np.random.default_rng(0).random((20, 20, 20), dtype=np.float32), np.eye(4))
    pred = predict_scan(model, scan, torch.device("cpu"), flips=1)
    assert pred.count == pytest.approx(-1.3)
    assert any(": predicted -1.3 mm3, below 0: the regressor extrapolates" in note for note in pred.notes)
    with torch.no_grad():
        net.fc.bias.fill_(-0.03)  # shown as 0.0: nothing to say
    notes = predict_scan(model, scan, torch.device("cpu"), flips=1).notes
    assert not any("below 0" in note for note in notes)
