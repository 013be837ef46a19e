"""Budget rules shared by all selectors: ratio validation, half-up class budgets, exact splits."""

import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nms.verif.models.budget import budget, class_budgets, largest_remainder, validate_ratio


@pytest.mark.parametrize("ratio", [0.01, 0.5, 1, 1.0, np.float32(0.25), np.float64(0.1), Fraction(1, 3)])
def test_validate_ratio_accepts(ratio):
    assert validate_ratio(ratio) == float(ratio)
    assert isinstance(validate_ratio(ratio), float)


@pytest.mark.parametrize("ratio,exc,words", [
    (0, ValueError, "outside (0, 1]"),
    (-0.1, ValueError, "outside (0, 1]"),
    (1.0000001, ValueError, "outside (0, 1]"),
    (float("inf"), ValueError, "outside (0, 1]"),
    (float("nan"), ValueError, "NaN"),
    (True, TypeError, "real number"),
    (np.bool_(True), TypeError, "real number"),
    ("0.1", TypeError, "str"),
    (None, TypeError, "NoneType"),
    (1j, TypeError, "complex"),
])
def test_validate_ratio_rejects(ratio, exc, words):
    with pytest.raises(exc) as info:
        validate_ratio(ratio)
    assert words in str(info.value)


def test_half_up_on_the_decimal_ratio():
    # 0.05 * 30 = 1.5 exactly -> 2 (half up), 0.25 * 6 = 1.5 -> 2, 0.25 * 10 = 2.5 -> 3
    assert budget(30, 0.05) == 2
    assert budget(6, 0.25) == 2
    assert budget(10, 0.25) == 3
    # 0.1 * 25 = 2.5 exactly on the decimal (the double 0.1 is a hair above 1/10)
    assert budget(25, 0.1) == 3
    # Python's round() is half-to-even (round(2.5) == 2); the budget rule is half up
    assert round(0.1 * 25) == 2 and budget(10, 0.15) == 2
    assert budget(1000, 0.001) == 1
    assert budget(7, 1.0) == 7


@pytest.mark.parametrize("n", [0, -3, 2.0, True])
def test_budget_rejects_bad_class_size(n):
    with pytest.raises(ValueError, match="class size"):
        budget(n, 0.1)


def test_at_least_one_per_class():
    assert budget(3, 0.01) == 1
    assert class_budgets([0, 0, 1, 2, 2, 2], 0.01) == {0: 1, 1: 1, 2: 1}


def test_class_budgets_sorted_labels_and_values():
    y = np.array([7] * 183 + [-1] * 174 + [3] * 180)
    got = class_budgets(y, 0.1)
    assert list(got) == [-1, 3, 7]
    assert got == {-1: 17, 3: 18, 7: 18}
    assert all(type(k) is int and type(v) is int for k, v in got.items())


@pytest.mark.parametrize("y,words", [
    ([], "empty"),
    ([[0, 1]], "1-D"),
    ([0.0, 1.0], "integers"),
    ([True, False], "integers"),
])
def test_class_budgets_bad_labels(y, words):
    with pytest.raises(ValueError, match=words):
        class_budgets(np.array(y), 0.1)


@settings(max_examples=200, deadline=None)
@given(n=st.integers(1, 100_000), k=st.integers(1, 1000))
def test_budget_matches_exact_definition(n, k):
    ratio = k / 1000
    want = max(1, math.floor(Fraction(k, 1000) * n + Fraction(1, 2)))
    got = budget(n, ratio)
    assert got == want
    assert 1 <= got <= n


def test_largest_remainder_examples():
    assert largest_remainder(5, [3, 3, 3]) == [2, 2, 1]
    assert largest_remainder(0, [4, 5]) == [0, 0]
    assert largest_remainder(9, [4, 5]) == [4, 5]
    assert largest_remainder(3, [1, 0, 5]) == [1, 0, 2]  # 0.5 vs 2.5: tie -> lower index
    assert largest_remainder(1, [2, 2]) == [1, 0]


@settings(max_examples=300, deadline=None)
@given(sizes=st.lists(st.integers(0, 50), min_size=1, max_size=12).filter(lambda s: sum(s) > 0),
       data=st.data())
def test_largest_remainder_invariants(sizes, data):
    total = data.draw(st.integers(0, sum(sizes)))
    shares = largest_remainder(total, sizes)
    assert sum(shares) == total
    whole = sum(sizes)
    for share, s in zip(shares, sizes):
        assert 0 <= share <= s
        # each share is its quota rounded down or up
        assert total * s // whole <= share <= -(-total * s // whole)


@pytest.mark.parametrize("total,sizes,words", [
    (-1, [1], "non-negative integer"),
    (1.5, [1], "non-negative integer"),
    (1, [], "empty"),
    (1, [1, -2], "non-negative integers"),
    (1, [0, 0], "sum to 0"),
    (5, [2, 2], "exceeds"),
])
def test_largest_remainder_errors(total, sizes, words):
    with pytest.raises(ValueError, match=words):
        largest_remainder(total, sizes)
