import pytest

from napari_hydranet.infer import format_count


@pytest.mark.parametrize(
    ("value", "text"), [(-0.04, "0.0"), (-0.0, "0.0"), (0.0, "0.0"), (6.46, "6.5"), (-1.23, "-1.2")]
)
def test_counts_near_zero_are_shown_without_a_minus_sign(value, text):
    assert format_count(value) == text
