"""argparse value types shared by the ``nms`` sub-commands (one wording for one mistake)."""

from __future__ import annotations

import argparse

from nms.verif.models.budget import validate_ratio

__all__ = ["seed_arg", "ratio_arg", "positive_int_arg"]


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
