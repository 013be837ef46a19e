"""Validation of integer generator parameters, shared by every RTL component."""

from __future__ import annotations

__all__ = ["check_int", "BUFFER_DIM", "CAND_TILE", "CAPACITY"]

#: the device's default chunk-buffer vector length (``NmsAccelerator(buffer_dim=...)``) and
#: candidates per query-memory read (``cand_tile``): the chosen dataflow of ``docs/energy.md``
#: §6 (``nms.sw.dataflow.CHOSEN``: a 28x28 image 4x4-pooled to 7x7 = 49 elements, P = 4; a test
#: holds them equal). Here, in a module without Amaranth, so the host side reads them cheaply.
BUFFER_DIM = 49
CAND_TILE = 4
#: the device's default chunk capacity C (points per chunk job, on-chip state). The model's
#: ``DesneConfig.capacity``, ``nms generate``, the driver and the host's defaults read it from
#: here. The dataflow sweep's second round measured C = 256 and 512 (0.79 / 0.97 full-data
#: epochs of selection energy): both fail the one-default check at some ratio
#: (``bench/results/dataflow.md``: C = 256 loses 2.2 points of validation accuracy at 1 %,
#: C = 512 0.8 at 5 %), so C stays 1024
CAPACITY = 1024


def check_int(name: str, value, lo: int, hi: int | None, what: str) -> int:
    """Return ``value`` if it is an int in ``lo..hi`` (``hi=None``: no upper bound).

    Raises ``TypeError`` for a non-int (``bool`` included) and ``ValueError`` out of range; both
    messages name the parameter and its value, ``what`` describes the allowed range.
    """
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int ({what}), not {value!r}")
    if value < lo or (hi is not None and value > hi):
        raise ValueError(f"{name}={value} is out of range: {what}")
    return value
