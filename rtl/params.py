"""Validation of integer generator parameters, shared by every RTL component."""

from __future__ import annotations

__all__ = ["check_int", "BUFFER_DIM", "BUFFER_BANKS", "CAND_TILE", "CAPACITY", "bank_geometry"]

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
#: the device's default number of chunk-buffer banks (``NmsAccelerator(buffer_banks=...)``,
#: ``docs/energy.md`` §6.7): the buffer is split by word address into banks of
#: :func:`bank_geometry` words and a read enables only the bank it addresses, so an access
#: touches one 8 KB bank (C = 1024 vectors of 7 words of 8 bytes: 7 banks of 1024 words)
#: instead of the whole 56 KB buffer — the chosen row of the dataflow sweep's third round
BUFFER_BANKS = 8


def bank_geometry(depth: int, banks: int) -> tuple[int, int]:
    """``(bank_words, banks_used)`` of a memory of ``depth`` words split into at most ``banks``
    banks by word address: ``bank_words`` is the smallest power of two >= ``ceil(depth /
    banks)`` (so the bank is the address's high bits, no divider) and ``banks_used =
    ceil(depth / bank_words)``. The one definition the RTL (``ChunkBuffer``) and the energy
    model (``nms.sw.dataflow``) share."""
    check_int("depth", depth, 1, 1 << 22, "1 to 4194304 words")
    check_int("banks", banks, 1, 64, "1 to 64 banks")
    per_bank = -(-depth // banks)
    bank_words = 1 << max(0, (per_bank - 1).bit_length())
    return bank_words, -(-depth // bank_words)


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
