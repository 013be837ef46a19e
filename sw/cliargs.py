"""argparse value types shared by the ``nms`` sub-commands (one wording for one mistake)."""

from __future__ import annotations

import argparse

from nms.verif.models.budget import validate_ratio

__all__ = ["seed_arg", "ratio_arg", "positive_int_arg", "pool_arg"]


def positive_int_arg(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be >= 1")
    return value


def seed_arg(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"seed {text!r} is not an integer") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"seed {value} is negative; seeds are integers >= 0")
    return value


def ratio_arg(text: str) -> float:
    try:
        return validate_ratio(float(text))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"ratio {text!r}: {exc}") from None


def pool_arg(text: str) -> str:
    """``--pool``: the pooling in front of the kNN (``OPT.pool``), by the names the declaration
    gives its codes (none, pool2 = 2x2, pool4 = 4x4)."""
    from nms.verif.models.pool import POOL_NAMES

    if text not in POOL_NAMES:
        raise argparse.ArgumentTypeError(f"pool {text!r} is not one of {', '.join(POOL_NAMES)} "
                                         "(none, pool2 = 2x2, pool4 = 4x4 floor-mean pooling)")
    return text
