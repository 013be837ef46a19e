"""Sequential radix-2 restoring divider: exact ``n // d``, one quotient bit per cycle.

Used by the affinity unit for the two exact floor divisions of the DE-SNE model,
``(T << 8) // S`` (entropy) and ``(w << 16) // S`` (normalised affinities). Both quotients have a
known bound, so the divider only produces ``quotient_width`` bits instead of the full dividend
width: that bound is the caller's precondition ``n < d << quotient_width``.
"""

from __future__ import annotations

from amaranth import Cat, Module, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["Divider", "check_int"]


def check_int(name: str, value, lo: int, hi: int | None, what: str) -> int:
    """Validate an integer generator parameter; the message names the parameter and value."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int ({what}), not {value!r}")
    if value < lo or (hi is not None and value > hi):
        raise ValueError(f"{name}={value} is out of range: {what}")
    return value


class Divider(wiring.Component):
    """Exact unsigned floor division ``n // d`` in ``quotient_width`` cycles.

    Restoring division: the divisor starts shifted left by ``quotient_width - 1`` and moves one
    bit right per cycle; each cycle one quotient bit is decided by a single compare-subtract.
    Latency from the accepted operand beat to the valid quotient is ``quotient_width + 1``
    cycles (:attr:`latency`); a new operand beat is accepted once the quotient has been taken.

    Parameters
    ----------
    dividend_width : int
        Width of ``n`` (1..128).
    divisor_width : int
        Width of ``d`` (1..128).
    quotient_width : int
        Bits of the quotient (1..128). **Precondition** (the caller's): ``d > 0`` and
        ``n < d << quotient_width``; then the result is exact. Otherwise the quotient is
        saturated bitwise garbage (no exception in hardware).

    Attributes
    ----------
    operands : In(stream.Signature({n: unsigned(dividend_width), d: unsigned(divisor_width)}))
        One division per beat.
    quotient : Out(stream.Signature(unsigned(quotient_width)))
        ``n // d``, one beat per operand beat, in order.
    latency : int
        ``quotient_width + 1``.
    """

    def __init__(self, *, dividend_width: int, divisor_width: int, quotient_width: int):
        check_int("dividend_width", dividend_width, 1, 128, "1 to 128 bits")
        check_int("divisor_width", divisor_width, 1, 128, "1 to 128 bits")
        check_int("quotient_width", quotient_width, 1, 128, "1 to 128 bits")
        self.dividend_width = dividend_width
        self.divisor_width = divisor_width
        self.quotient_width = quotient_width
        self.latency = quotient_width + 1
        self.operand_layout = data.StructLayout({
            "n": unsigned(dividend_width),
            "d": unsigned(divisor_width),
        })
        super().__init__({
            "operands": In(stream.Signature(self.operand_layout)),
            "quotient": Out(stream.Signature(unsigned(quotient_width))),
        })

    def elaborate(self, platform):
        m = Module()
        qw = self.quotient_width
        # remainder < d << (remaining bits) always holds, so the dividend width bounds it
        rem = Signal(self.dividend_width)
        shifted = Signal(self.divisor_width + qw - 1)  # d << i for the bit i being decided
        quo = Signal(qw)
        count = Signal(range(qw + 1))
        busy = Signal()
        done = Signal()

        m.d.comb += [
            self.operands.ready.eq(~busy & ~done),
            self.quotient.valid.eq(done),
            self.quotient.payload.eq(quo),
        ]
        with m.If(self.operands.valid & self.operands.ready):
            m.d.sync += [
                rem.eq(self.operands.payload.n),
                shifted.eq(self.operands.payload.d << (qw - 1)),
                count.eq(qw),
                busy.eq(1),
            ]
        with m.If(busy):
            take = rem >= shifted
            with m.If(take):
                m.d.sync += rem.eq(rem - shifted)
            m.d.sync += [
                quo.eq(Cat(take, quo[:-1])),
                shifted.eq(shifted >> 1),
                count.eq(count - 1),
            ]
            with m.If(count == 1):
                m.d.sync += [busy.eq(0), done.eq(1)]
        with m.If(self.quotient.valid & self.quotient.ready):
            m.d.sync += done.eq(0)
        return m
