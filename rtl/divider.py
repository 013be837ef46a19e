"""Sequential radix-2 restoring divider: exact ``n // d``, one quotient bit per cycle.

Used by the affinity unit for the two exact floor divisions of the DE-SNE model,
``(T << 8) // S`` (entropy) and ``(w << 16) // S`` (normalised affinities). Both quotients have a
known bound, so the divider only produces ``quotient_width`` bits instead of the full dividend
width: that bound is the caller's precondition ``n < d << quotient_width``.
"""

from __future__ import annotations

from amaranth import Cat, Module, Mux, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from nms.rtl.params import check_int

__all__ = ["Divider"]


class Divider(wiring.Component):
    """Exact unsigned floor division ``n // d`` in ``ceil(quotient_width / bits_per_cycle)`` cycles.

    Restoring division: the divisor starts shifted left by ``steps - 1`` (``steps`` =
    ``bits_per_cycle * cycles``, rounded up so that every cycle does the same work; the extra top
    quotient bits are 0 by the precondition) and moves one bit right per compare-subtract;
    ``bits_per_cycle`` compare-subtracts are chained in one cycle. Latency from the accepted
    operand beat to the valid quotient is ``cycles + 1`` (:attr:`latency`); a new operand beat is
    accepted once the quotient has been taken.

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
    bits_per_cycle : int
        Quotient bits decided per cycle (1..4): 1 = radix 2, 2 = radix 4 with two chained
        compare-subtracts. Default 1.

    Attributes
    ----------
    operands : In(stream.Signature({n: unsigned(dividend_width), d: unsigned(divisor_width)}))
        One division per beat.
    quotient : Out(stream.Signature(unsigned(quotient_width)))
        ``n // d``, one beat per operand beat, in order.
    cycles : int
        ``ceil(quotient_width / bits_per_cycle)``, iteration cycles per division.
    latency : int
        ``cycles + 1``.
    """

    def __init__(self, *, dividend_width: int, divisor_width: int, quotient_width: int,
                 bits_per_cycle: int = 1):
        check_int("dividend_width", dividend_width, 1, 128, "1 to 128 bits")
        check_int("divisor_width", divisor_width, 1, 128, "1 to 128 bits")
        check_int("quotient_width", quotient_width, 1, 128, "1 to 128 bits")
        check_int("bits_per_cycle", bits_per_cycle, 1, 4, "1 to 4 quotient bits per cycle")
        self.dividend_width = dividend_width
        self.divisor_width = divisor_width
        self.quotient_width = quotient_width
        self.bits_per_cycle = bits_per_cycle
        self.cycles = -(-quotient_width // bits_per_cycle)
        self.latency = self.cycles + 1
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
        b, cycles = self.bits_per_cycle, self.cycles
        steps = b * cycles
        # remainder < d << (remaining bits) always holds, so the dividend width bounds it
        rem = Signal(self.dividend_width)
        shifted = Signal(self.divisor_width + steps - 1)  # d << i for the next bit i decided
        quo = Signal(steps)
        count = Signal(range(cycles + 1))
        busy = Signal()
        done = Signal()

        m.d.comb += [
            self.operands.ready.eq(~busy & ~done),
            self.quotient.valid.eq(done),
            self.quotient.payload.eq(quo[:self.quotient_width]),
        ]
        with m.If(self.operands.valid & self.operands.ready):
            m.d.sync += [
                rem.eq(self.operands.payload.n),
                shifted.eq(self.operands.payload.d << (steps - 1)),
                count.eq(cycles),
                busy.eq(1),
            ]
        with m.If(busy):
            # b chained compare-subtracts: bit i, then bit i - 1, ... (MSB first)
            r, bits = rem, []
            for s in range(b):
                sh = shifted >> s
                take = Signal(name=f"take{s}")
                m.d.comb += take.eq(r >= sh)
                nxt = Signal(self.dividend_width, name=f"rem{s}")
                m.d.comb += nxt.eq(Mux(take, r - sh, r))
                r = nxt
                bits.insert(0, take)
            m.d.sync += [
                rem.eq(r),
                quo.eq(Cat(*bits, quo[:steps - b])),
                shifted.eq(shifted >> b),
                count.eq(count - 1),
            ]
            with m.If(count == 1):
                m.d.sync += [busy.eq(0), done.eq(1)]
        with m.If(self.quotient.valid & self.quotient.ready):
            m.d.sync += done.eq(0)
        return m
