"""Bit-exact model of the pooling unit in front of the kNN (issue 11, ``docs/energy.md`` §6.1).

The pooling unit (``nms.rtl.pool.PoolUnit``) reduces each raw image vector before the kNN:
floor mean over non-overlapping w×w windows of a square ``img_w × img_w`` image, row-major,
8-bit results. In integers: the window's sum (``8 + 2·log2 w`` bits, never saturating) shifted
right by ``2·log2 w``. The kNN, the affinities and the exemplar stage's vector view then use the
pooled vectors; the embedding and the grid are unchanged.

The job field ``OPT.pool`` selects the window (:data:`POOL_WINDOWS`: 0 none, 1 = 2×2,
2 = 4×4) and ``OPT.img_w`` gives the image side; a pooled job needs ``img_w² = DIM`` and a side
that the window divides (:func:`check_image`, the same rule the register declaration refuses).
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from nms.rtl import regmap

__all__ = ["POOL_WINDOWS", "POOL_NAMES", "MIN_POOLED_DIM", "pool_code", "pool_window",
           "check_image", "pooled_dim", "pool_vectors", "reduce_vectors", "default_pool"]

#: ``OPT.pool`` code -> window side w (1 = no pooling)
POOL_WINDOWS = {0: 1, 1: 2, 2: 4}
#: the names the sweep and the host use -> ``OPT.pool`` code (declared with the field)
POOL_NAMES = dict(regmap.FIELDS["OPT.pool"].code_map)
#: the shortest pooled vector the dataflow sweep validated (Fashion-MNIST 28x28 -> 7x7 = 49,
#: ``bench/results/dataflow.md``): the default never pools below it
MIN_POOLED_DIM = 49


def pool_code(pool) -> int:
    """The ``OPT.pool`` code of ``pool`` (a code 0..2 or a name of :data:`POOL_NAMES`)."""
    if isinstance(pool, str):
        if pool not in POOL_NAMES:
            raise ValueError(f"pool must be one of {sorted(POOL_NAMES)}, not {pool!r}")
        return POOL_NAMES[pool]
    if isinstance(pool, bool) or not isinstance(pool, numbers.Integral) or pool not in POOL_WINDOWS:
        raise ValueError(f"pool must be a code in {sorted(POOL_WINDOWS)} (0 none, 1 = 2x2, "
                         f"2 = 4x4) or one of {sorted(POOL_NAMES)}, not {pool!r}")
    return int(pool)


def pool_window(pool) -> int:
    """The window side w of ``pool`` (code or name)."""
    return POOL_WINDOWS[pool_code(pool)]


def check_image(dim: int, pool, img_w: int | None = None) -> int:
    """The image side of a pooled job; raises ``ValueError`` naming the bad value unless
    ``img_w² = dim`` and w divides ``img_w`` (``img_w`` defaults to ``isqrt(dim)``).
    For ``pool`` = none the side is not used and 0 is returned."""
    w = pool_window(pool)
    if w == 1:
        return 0
    if isinstance(dim, bool) or not isinstance(dim, numbers.Integral) or dim < 1:
        raise ValueError(f"dim must be a positive integer, not {dim!r}")
    side = math.isqrt(int(dim)) if img_w is None else img_w
    if isinstance(side, bool) or not isinstance(side, numbers.Integral) or side < 1:
        raise ValueError(f"img_w must be a positive integer, not {img_w!r}")
    if side * side != dim:
        raise ValueError(f"{w}x{w} pooling needs a square image: img_w={side} but dim={dim} "
                         f"(img_w² = {side * side})")
    if side % w:
        raise ValueError(f"{w}x{w} pooling needs an image side divisible by {w}; "
                         f"img_w={side} (dim={dim}) is not")
    return int(side)


def pooled_dim(dim: int, pool, img_w: int | None = None) -> int:
    """D', the vector length the kNN sees."""
    side = check_image(dim, pool, img_w)
    if side == 0:
        return int(dim)
    return (side // pool_window(pool)) ** 2


def pool_vectors(X, pool, img_w: int | None = None) -> np.ndarray:
    """The vectors the kNN sees: ``X`` (n, D) with values 0..255, pooled by floor mean over
    w×w windows (``sum >> 2·log2 w``, the unit's adder and shift), row-major (n, D').
    No pooling returns ``X`` itself."""
    X = np.asarray(X)
    if X.ndim != 2:
        raise ValueError(f"X must be 2-D (n, D), got shape {X.shape}")
    side = check_image(X.shape[1], pool, img_w)
    if side == 0:
        return X
    w = pool_window(pool)
    n = X.shape[0]
    s = X.astype(np.int64).reshape(n, side // w, w, side // w, w).sum(axis=(2, 4))
    return (s >> (2 * int(math.log2(w)))).reshape(n, (side // w) ** 2)


def reduce_vectors(X, reduce) -> np.ndarray:
    """:func:`pool_vectors` by the sweep's name (``"none"``, ``"pool2"``, ``"pool4"``) or code,
    the image side taken from the vector length."""
    return pool_vectors(X, reduce)


def default_pool(dim: int, *, min_dim: int = MIN_POOLED_DIM) -> str:
    """The default pooling of a data set of ``dim``-element images (``docs/energy.md`` §6).

    Rule (from the sweep, which validated 4x4 pooling of 28x28 images down to 7x7 = 49
    elements and nothing shorter): the largest window (4, then 2) that divides the side of a
    square image and leaves at least ``min_dim`` elements; otherwise no pooling. Fashion-MNIST
    (28x28) -> ``"pool4"`` (49); digits (8x8) -> ``"none"`` (2x2 would leave 16, 4x4 only 4);
    a non-square vector -> ``"none"``.
    """
    if isinstance(dim, bool) or not isinstance(dim, numbers.Integral) or dim < 1:
        raise ValueError(f"dim must be a positive integer, not {dim!r}")
    side = math.isqrt(int(dim))
    if side * side != dim:
        return "none"
    for name, w in (("pool4", 4), ("pool2", 2)):
        if side % w == 0 and (side // w) ** 2 >= min_dim:
            return name
    return "none"
