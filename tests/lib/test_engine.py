"""The engine's shared rules: the default threshold, the object score and the checks."""
import numpy as np
import pytest

from dextr_lib.errors import InvalidValueError
from dextr_lib.inference.engine import check_batch_size, mask_and_score, resolve_threshold
from dextr_lib.inference.preprocessing import get_profile


def test_the_threshold_is_the_models_unless_given_and_a_probability():
    pp = get_profile("dextr")
    assert resolve_threshold(None, pp) == pp.threshold == 0.5
    assert resolve_threshold(0.3, pp) == 0.3 and resolve_threshold(1, pp) == 1.0
    for bad in (1.5, -0.1, float("nan")):
        with pytest.raises(InvalidValueError, match=r"threshold must be a probability in \[0, 1\]"):
            resolve_threshold(bad, pp)


def test_the_score_is_the_mean_probability_over_the_mask():
    prob = np.array([[0.2, 0.6], [0.9, 0.5]], np.float32)
    mask, score = mask_and_score(prob, 0.5)
    np.testing.assert_array_equal(mask, [[False, True], [True, True]])  # >=: 0.5 is in
    assert score == pytest.approx((0.6 + 0.9 + 0.5) / 3)
    mask, score = mask_and_score(prob, 0.95)
    assert not mask.any() and score == 0.0  # an empty mask scores 0, not NaN


@pytest.mark.parametrize("bad", [0, -1, 1.5, True])
def test_a_batch_size_is_a_positive_integer(bad):
    with pytest.raises(InvalidValueError, match="batch size must be an integer >= 1"):
        check_batch_size(bad)
