"""Student-t kernel unit: ``w = 1 / (1 + d2)`` in Q1.16 through the reciprocal table.

Equal to :func:`nms.verif.models.desne.recip1p`: ``u = d2 + 2**16``, ``e = bit_length(u) - 1``
(``>= 16``), ``w = RECIP_LUT[(u >> (e - 8)) & 255] >> (e - 16)``. The table is a ROM built from
``fixedpoint.RECIP_LUT`` (the single source of truth); a synchronous ROM read is one pipeline
stage, so the unit accepts one value per cycle.
"""

from __future__ import annotations

from amaranth import Module, Signal, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from nms.rtl import fixedpoint as fp

__all__ = ["Recip1p"]


class Recip1p(wiring.Component):
    """Pipelined ``1 / (1 + d2)`` (Q.16 in, Q1.16 out), latency 2, never stalls.

    Parameters
    ----------
    d2_width : int
        Width of the unsigned squared distance input (Q.16), 1..48. ``bits_for(2 * (2**24 - 1)**2
        >> 16)`` = 33 covers any two embedding points.

    Attributes
    ----------
    i : In(stream.Signature(unsigned(d2_width), always_ready=True))
        Squared distance ``d2`` (Q.16); ``valid`` marks real inputs.
    o : Out(stream.Signature(unsigned(17), always_ready=True))
        Kernel value ``w`` (Q1.16, ``1 <= w <= 65536`` for ``d2 < 2**32``; ``0`` is possible only
        for larger ``d2``), exactly :attr:`latency` cycles after the input.
    latency : int
        2: stage 1 normalises and addresses the ROM, stage 2 shifts the ROM word.
    """

    latency = 2

    def __init__(self, *, d2_width: int = 33):
        if isinstance(d2_width, bool) or not isinstance(d2_width, int):
            raise TypeError(f"d2_width must be an int, not {d2_width!r}")
        if not 1 <= d2_width <= 48:
            raise ValueError(f"d2_width={d2_width} is out of range: 1 to 48 bits")
        self.d2_width = d2_width
        self.u_width = max(d2_width, 16) + 1
        super().__init__({
            "i": In(stream.Signature(unsigned(d2_width), always_ready=True)),
            "o": Out(stream.Signature(unsigned(fp.W_BITS), always_ready=True)),
        })

    def elaborate(self, platform):
        m = Module()
        uw = self.u_width
        u = Signal(uw)
        m.d.comb += u.eq(self.i.payload + (1 << 16))
        # e = index of the leading one (>= 16 because u >= 2**16): a priority encoder, the later
        # (higher) bit wins because it is assigned last
        e = Signal(range(uw))
        m.d.comb += e.eq(16)
        for b in range(17, uw):
            with m.If(u[b]):
                m.d.comb += e.eq(b)
        norm = Signal(range(uw))         # e - 8: the shift that leaves 8 mantissa bits
        m.d.comb += norm.eq(e - 8)
        idx = Signal(fp.RECIP_LUT_BITS)
        m.d.comb += idx.eq((u >> norm)[:8])

        m.submodules.lut = lut = Memory(shape=unsigned(fp.W_BITS), depth=len(fp.RECIP_LUT),
                                        init=fp.RECIP_LUT)
        rd = lut.read_port()
        m.d.comb += rd.addr.eq(idx)
        shift = Signal(range(uw))        # e - 16, aligned with the ROM data
        valid1 = Signal()
        m.d.sync += [shift.eq(e - 16), valid1.eq(self.i.valid)]
        m.d.sync += [self.o.payload.eq(rd.data >> shift), self.o.valid.eq(valid1)]
        return m
