"""Sequential restoring divider: exact ``n // d`` (and ``n % d``), 1 to 4 quotient bits per cycle.

The one divider of the RTL blocks:

* the affinity unit's two exact floor divisions ``(T << 8) // S`` (entropy) and ``(w << 16) // S``
  (normalised affinities), radix 4;
* the grid sampler's proportional quotas ``M * count // N`` and their remainders;
* the embedding engine's repulsion gain ``min((N << 32) // Wsum, 2**32 - 1)`` (``saturate``).

Every quotient has a known bound, so the divider only produces ``quotient_width`` bits instead of
the full dividend width: that bound is the caller's precondition ``n < d << quotient_width``
(or ``saturate=True``, which turns a violated bound into the all-ones quotient).
"""

from __future__ import annotations

from amaranth import Cat, Module, Mux, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from nms.rtl.params import check_int

__all__ = ["Divider"]


class Divider(wiring.Component):
    """Exact unsigned floor division ``n // d`` in ``ceil(quotient_width / bits_per_cycle)`` cycles.

    Restoring division, remainder shifted left: the remainder register starts with the dividend
    bits above the ``steps`` low ones (``steps`` = ``bits_per_cycle * cycles``, rounded up so that
    every cycle does the same work; the extra top quotient bits are 0 by the precondition), then
    each compare-subtract shifts in the next dividend bit, MSB first, and shifts out one quotient
    bit; ``bits_per_cycle`` compare-subtracts are chained in one cycle. The remainder stays below
    ``d``, so the datapath is ``divisor_width + 1`` bits wide. Latency from the accepted operand
    beat to the valid quotient is ``cycles + 1`` (:attr:`latency`), or 1 when ``saturate`` applies;
    a new operand beat is accepted once the quotient has been taken.

    Parameters
    ----------
    dividend_width : int
        Width of ``n`` (1..128).
    divisor_width : int
        Width of ``d`` (1..128).
    quotient_width : int
        Bits of the quotient (1..128). **Precondition** (the caller's): ``d > 0`` and
        ``n < d << quotient_width``; then quotient and remainder are exact. Otherwise (without
        ``saturate``) they are garbage (no exception in hardware).
    bits_per_cycle : int
        Quotient bits decided per cycle (1..4): 1 = radix 2, 2 = radix 4 with two chained
        compare-subtracts. Default 1.
    saturate : bool
        If true, an operand beat with ``n >= d << quotient_width`` (``d = 0`` included) gives
        the quotient ``2**quotient_width - 1`` one cycle after it is accepted (the remainder is
        then undefined). Default false.

    Attributes
    ----------
    operands : In(stream.Signature({n: unsigned(dividend_width), d: unsigned(divisor_width)}))
        One division per beat.
    quotient : Out(stream.Signature(unsigned(quotient_width)))
        ``n // d``, one beat per operand beat, in order.
    remainder : Out(unsigned(divisor_width))
        ``n % d``, valid together with ``quotient``.
    cycles : int
        ``ceil(quotient_width / bits_per_cycle)``, iteration cycles per division.
    latency : int
        ``cycles + 1``.
    """

    def __init__(self, *, dividend_width: int, divisor_width: int, quotient_width: int,
                 bits_per_cycle: int = 1, saturate: bool = False):
        check_int("dividend_width", dividend_width, 1, 128, "1 to 128 bits")
        check_int("divisor_width", divisor_width, 1, 128, "1 to 128 bits")
        check_int("quotient_width", quotient_width, 1, 128, "1 to 128 bits")
        check_int("bits_per_cycle", bits_per_cycle, 1, 4, "1 to 4 quotient bits per cycle")
        if not isinstance(saturate, bool):
            raise TypeError(f"saturate must be a bool, not {saturate!r}")
        self.dividend_width = dividend_width
        self.divisor_width = divisor_width
        self.quotient_width = quotient_width
        self.bits_per_cycle = bits_per_cycle
        self.saturate = saturate
        self.cycles = -(-quotient_width // bits_per_cycle)
        self.latency = self.cycles + 1
        self.operand_layout = data.StructLayout({
            "n": unsigned(dividend_width),
            "d": unsigned(divisor_width),
        })
        super().__init__({
            "operands": In(stream.Signature(self.operand_layout)),
            "quotient": Out(stream.Signature(unsigned(quotient_width))),
            "remainder": Out(unsigned(divisor_width)),
        })

    def elaborate(self, platform):
        m = Module()
        b, cycles = self.bits_per_cycle, self.cycles
        steps = b * cycles
        n, d = self.operands.payload.n, self.operands.payload.d
        rem = Signal(self.divisor_width)    # < dvs while the precondition holds
        dvs = Signal(self.divisor_width)
        nq = Signal(steps)                  # dividend bits still to shift in | quotient bits
        count = Signal(range(cycles + 1))
        busy = Signal()
        done = Signal()

        m.d.comb += [
            self.operands.ready.eq(~busy & ~done),
            self.quotient.valid.eq(done),
            self.quotient.payload.eq(nq[:self.quotient_width]),
            self.remainder.eq(rem),
        ]
        over = Signal()                     # the quotient bound is violated: saturate
        if self.saturate:
            m.d.comb += over.eq((n >> self.quotient_width) >= d)
        with m.If(self.operands.valid & self.operands.ready):
            with m.If(over):
                m.d.sync += [nq.eq((1 << steps) - 1), done.eq(1)]
            with m.Else():
                m.d.sync += [
                    rem.eq(n >> steps),
                    dvs.eq(d),
                    nq.eq(n),
                    count.eq(cycles),
                    busy.eq(1),
                ]
        with m.If(busy):
            # b chained compare-subtracts: quotient bit steps - 1 - s of this cycle, MSB first
            r, bits = rem, []
            for s in range(b):
                trial = Cat(nq[steps - 1 - s], r)   # (r << 1) | next dividend bit, < 2 * dvs
                take = Signal(name=f"take{s}")
                m.d.comb += take.eq(trial >= dvs)
                nxt = Signal(self.divisor_width, name=f"rem{s}")
                m.d.comb += nxt.eq(Mux(take, trial - dvs, trial))
                r = nxt
                bits.insert(0, take)
            m.d.sync += [
                rem.eq(r),
                nq.eq(Cat(*bits, nq[:steps - b])),
                count.eq(count - 1),
            ]
            with m.If(count == 1):
                m.d.sync += [busy.eq(0), done.eq(1)]
        with m.If(self.quotient.valid & self.quotient.ready):
            m.d.sync += done.eq(0)
        return m
