"""Sequential dividers: exact ``n // d`` (and ``n % d``), 1 to 4 quotient bits per cycle.

The dividers of the RTL blocks:

* :class:`Radix4Divider`: the affinity unit's two exact floor divisions ``(T << 8) // S``
  (entropy) and ``(w << 16) // S`` (normalised affinities), radix 4 with parallel compares;
* :class:`Divider` (restoring): the grid sampler's proportional quotas ``M * count // N`` and their remainders;
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

__all__ = ["Divider", "Radix4Divider"]


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


class Radix4Divider(wiring.Component):
    """Exact ``n // d``, 2 quotient bits per cycle: the ports (no remainder), precondition
    (``n < d << quotient_width``) and quotients of :class:`Divider` with ``bits_per_cycle=2``, but each cycle compares ``4 r + 2 bits`` with ``d``, ``2d`` and ``3d``
    in parallel (``3d`` registered with the operands) instead of chaining two compare-subtracts
    (one carry chain per cycle, not two: they limited the affinity unit's clock), and an odd quotient's
    top bit is decided when the operands are taken (one compare-subtract from registers), so
    ``cycles = quotient_width // 2``; latency ``cycles + 1``."""

    def __init__(self, *, dividend_width: int, divisor_width: int, quotient_width: int):
        check_int("dividend_width", dividend_width, 1, 128, "1 to 128 bits")
        check_int("divisor_width", divisor_width, 1, 128, "1 to 128 bits")
        check_int("quotient_width", quotient_width, 2, 128, "2 to 128 bits")
        self.divisor_width = divisor_width
        self.quotient_width = quotient_width
        self.cycles = quotient_width // 2
        self.latency = self.cycles + 1
        super().__init__({
            "operands": In(stream.Signature(data.StructLayout({
                "n": unsigned(dividend_width), "d": unsigned(divisor_width)}))),
            "quotient": Out(stream.Signature(unsigned(quotient_width))),
        })

    def elaborate(self, platform):
        m = Module()
        dw, cycles = self.divisor_width, self.cycles
        steps = 2 * cycles                  # quotient bits from the iterations
        odd = self.quotient_width > steps
        n, d = self.operands.payload.n, self.operands.payload.d
        rem = Signal(dw)                    # < d while the precondition holds
        q_top = Signal()                    # the odd top quotient bit
        dvs = [Signal(dw + 2, name=f"dvs{i}") for i in (1, 2, 3)]     # d, 2d, 3d
        nq = Signal(steps)                  # dividend bits still to shift in | quotient bits
        count = Signal(range(cycles + 1))
        busy = Signal()
        done = Signal()
        m.d.comb += [self.operands.ready.eq(~busy & ~done),
                     self.quotient.valid.eq(done),
                     self.quotient.payload.eq(Cat(nq, q_top)[:self.quotient_width])]
        with m.If(self.operands.valid & self.operands.ready):
            m.d.sync += [nq.eq(n), count.eq(cycles), busy.eq(1),
                         dvs[0].eq(d), dvs[1].eq(d << 1), dvs[2].eq(d + (d << 1))]
            top = n >> steps                # < 2d (odd) or < d (even) by the precondition
            if odd:
                take = top >= d
                m.d.sync += [q_top.eq(take), rem.eq(Mux(take, top - d, top))]
            else:
                m.d.sync += rem.eq(top)
        with m.If(busy):
            trial = Cat(nq[steps - 2], nq[steps - 1], rem)    # 4 r + next 2 bits, < 4 d
            diff = [Signal(dw + 3, name=f"diff{i}") for i in (1, 2, 3)]
            for df, dv in zip(diff, dvs):
                m.d.comb += df.eq(trial - dv)                 # top bit set: trial < dv
            digit = Signal(2)
            new_rem = Signal(dw)
            m.d.comb += [digit.eq(0), new_rem.eq(trial)]
            for i, df in enumerate(diff):                     # the largest multiple <= trial
                with m.If(~df[-1]):
                    m.d.comb += [digit.eq(i + 1), new_rem.eq(df)]
            m.d.sync += [rem.eq(new_rem), nq.eq(Cat(digit, nq[:steps - 2])),
                         count.eq(count - 1)]
            with m.If(count == 1):
                m.d.sync += [busy.eq(0), done.eq(1)]
        with m.If(self.quotient.valid & self.quotient.ready):
            m.d.sync += done.eq(0)
        return m
