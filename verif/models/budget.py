"""Selection budgets shared by every coreset selector (DE-SNE and the baselines).

Every selector in NMS is *stratified*: it takes ``ratio`` of each class separately, so all of
them must agree, to the image, on how many exemplars a class gets. This module is that single
rule, in exact integer/rational arithmetic so the float reference, the bit-exact model, the RTL
host driver and the baselines cannot drift apart through floating-point rounding.

Budget rule
-----------
For a class with ``n_c`` members the budget is::

    M_c = max(1, floor(r * n_c + 1/2))      with r = Fraction(repr(float(ratio)))

i.e. ``r * n_c`` rounded *half up* (…​.5 goes up), computed exactly on the decimal the user
typed: ``0.1`` means exactly 1/10, not the binary double ``0.1000000000000000055…``. This is
why ``round(0.05 * 30)`` is 2 here (1.5 rounds up) whereas Python's ``round`` (half-to-even on
the binary product) may give 1 or 2 depending on representation error. Every class keeps at
least one exemplar, and since ``0 < r <= 1`` a budget never exceeds the class size.
"""

from __future__ import annotations

import math
import numbers
from fractions import Fraction

import numpy as np

__all__ = ["validate_ratio", "ratio_fraction", "budget", "class_budgets", "largest_remainder"]


def validate_ratio(ratio) -> float:
    """Check a selection ratio and return it as a Python float.

    Parameters
    ----------
    ratio : real number
        Fraction of each class to keep; must satisfy ``0 < ratio <= 1``.

    Returns
    -------
    float

    Raises
    ------
    TypeError
        If ``ratio`` is not a real number (strings, ``None``, complex) or is a bool (``True``
        would silently mean "keep everything").
    ValueError
        If ``ratio`` is NaN, infinite, ``<= 0`` or ``> 1``.
    """
    if isinstance(ratio, (bool, np.bool_)) or not isinstance(ratio, numbers.Real):
        raise TypeError(f"ratio must be a real number in (0, 1], got {ratio!r} "
                        f"of type {type(ratio).__name__}")
    value = float(ratio)
    if math.isnan(value):
        raise ValueError("ratio is NaN; it must be a number in (0, 1], e.g. 0.1 for 10 %")
    if not 0.0 < value <= 1.0:
        raise ValueError(f"ratio {value!r} is outside (0, 1]; give a fraction such as 0.1 for 10 %")
    return value


def ratio_fraction(ratio) -> Fraction:
    """The exact rational a ratio stands for: its shortest decimal form (``0.1`` -> 1/10)."""
    return Fraction(repr(validate_ratio(ratio)))


def budget(n: int, ratio) -> int:
    """Exemplars for one class of ``n`` members: ``max(1, round_half_up(ratio * n))``.

    Parameters
    ----------
    n : int
        Class size, ``>= 1``.
    ratio : float
        Selection ratio in (0, 1].
    """
    if isinstance(n, (bool, np.bool_)) or not isinstance(n, numbers.Integral) or n < 1:
        raise ValueError(f"class size must be an integer >= 1, got {n!r}")
    exact = ratio_fraction(ratio) * int(n)
    return max(1, math.floor(exact + Fraction(1, 2)))


def class_budgets(y, ratio) -> dict[int, int]:
    """Exact per-class budgets for a label vector.

    Parameters
    ----------
    y : array_like of int, shape (N,)
        Class labels (any integers, need not be contiguous).
    ratio : float
        Selection ratio in (0, 1].

    Returns
    -------
    dict[int, int]
        ``{label: M_c}`` with labels in ascending order; ``M_c = max(1, round_half_up(ratio *
        n_c))`` (see the module docstring for the exact rounding).

    Raises
    ------
    ValueError
        Empty or non-1-D ``y``, non-integer labels, or a bad ratio.
    """
    ratio = validate_ratio(ratio)
    arr = np.asarray(y)
    if arr.ndim != 1:
        raise ValueError(f"labels must be a 1-D array, got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError("labels are empty; there is nothing to select from")
    if arr.dtype == np.bool_ or not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"labels must be integers, got dtype {arr.dtype}")
    labels, counts = np.unique(arr, return_counts=True)
    return {int(c): budget(int(n), ratio) for c, n in zip(labels, counts)}


def largest_remainder(total: int, sizes) -> list[int]:
    """Split an integer ``total`` over parts proportionally to ``sizes``, exactly.

    Each part first gets ``floor(total * s_i / S)`` (``S = sum(sizes)``); the units still missing
    go one each to the parts with the largest remainders ``total * s_i mod S``, ties to the lower
    index. All arithmetic is on integers, so the result is platform independent. Because
    ``total <= S`` is required, no part ever receives more than its size.

    Parameters
    ----------
    total : int
        Amount to distribute, ``0 <= total <= sum(sizes)``.
    sizes : sequence of int
        Non-negative part sizes, at least one positive.

    Returns
    -------
    list[int]
        Shares, same length as ``sizes``, summing to ``total``.

    Examples
    --------
    >>> largest_remainder(5, [3, 3, 3])
    [2, 2, 1]
    """
    if isinstance(total, (bool, np.bool_)) or not isinstance(total, numbers.Integral) or total < 0:
        raise ValueError(f"total must be a non-negative integer, got {total!r}")
    parts = list(sizes)
    if not parts:
        raise ValueError("sizes is empty; need at least one part to split over")
    for s in parts:
        if isinstance(s, (bool, np.bool_)) or not isinstance(s, numbers.Integral) or s < 0:
            raise ValueError(f"sizes must be non-negative integers, got {s!r} in {parts!r}")
    total = int(total)
    parts = [int(s) for s in parts]
    whole = sum(parts)
    if whole == 0:
        raise ValueError(f"sizes {parts!r} sum to 0; cannot split {total} proportionally")
    if total > whole:
        raise ValueError(f"total {total} exceeds the sum of sizes {whole}; a part would get "
                         "more than its size")
    shares = [total * s // whole for s in parts]
    missing = total - sum(shares)
    order = sorted(range(len(parts)), key=lambda i: (-(total * parts[i] % whole), i))
    for i in order[:missing]:
        shares[i] += 1
    return shares
