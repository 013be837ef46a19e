"""Student-t kernel unit: ``w = 1 / (1 + d2)`` in Q1.16 through the reciprocal table.

Equal to :func:`nms.verif.models.desne.recip1p`: ``u = d2 + 2**16``, ``e = bit_length(u) - 1``
(``>= 16``), ``w = RECIP_LUT[(u >> (e - 8)) & 255] >> (e - 16)``. The table is a ROM built from
``fixedpoint.RECIP_LUT`` (the single source of truth), in soft logic behind a registered
address (or, ``rom="block"``, a block RAM). Four pipeline stages, one value per cycle.
"""

from __future__ import annotations

from amaranth import Module, Mux, Signal, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from nms.rtl import fixedpoint as fp

__all__ = ["Recip1p"]


class Recip1p(wiring.Component):
    """Pipelined ``1 / (1 + d2)`` (Q.16 in, Q1.16 out), latency 4, never stalls.

    Parameters
    ----------
    d2_width : int
        Width of the unsigned squared distance input (Q.16), 1..48. ``bits_for(2 * (2**24 - 1)**2
        >> 16)`` = 33 covers any two embedding points.
    rom : str
        Where the 256 x 17 table lives: ``"logic"`` (default; soft logic read asynchronously
        behind a registered address — on ECP5 the route into a block RAM was the engine's
        critical path) or ``"block"`` (a block RAM read synchronously, the same latency: for
        a small device, where the soft-logic ROM costs about 400 LUTs).

    Attributes
    ----------
    i : In(stream.Signature(unsigned(d2_width), always_ready=True))
        Squared distance ``d2`` (Q.16); ``valid`` marks real inputs.
    o : Out(stream.Signature(unsigned(17), always_ready=True))
        Kernel value ``w`` (Q1.16, ``1 <= w <= 65536`` for ``d2 < 2**32``; ``0`` is possible only
        for larger ``d2``), exactly :attr:`latency` cycles after the input.
    alt, alt_sel : In
        Given ``latency - 1`` cycles after an input: ``o_alt`` (registered with ``o``) is ``alt``
        if ``alt_sel`` else ``w`` — a multiplexed multiplier operand without logic between the
        register and the multiplier.
    o_alt : Out(unsigned(17))
    latency : int
        4: stage 1 adds 2**16 and finds the leading one, stage 2 normalises into the ROM
        address (registered), stage 3 reads the ROM (soft logic) into a register, stage 4
        shifts it.
    """

    latency = 4

    def __init__(self, *, d2_width: int = 33, rom: str = "logic"):
        if isinstance(d2_width, bool) or not isinstance(d2_width, int):
            raise TypeError(f"d2_width must be an int, not {d2_width!r}")
        if not 1 <= d2_width <= 48:
            raise ValueError(f"d2_width={d2_width} is out of range: 1 to 48 bits")
        if rom not in ("logic", "block"):
            raise ValueError(f"rom={rom!r} is not 'logic' or 'block'")
        self.d2_width, self.rom = d2_width, rom
        self.u_width = max(d2_width, 16) + 1
        super().__init__({
            "i": In(stream.Signature(unsigned(d2_width), always_ready=True)),
            "o": Out(stream.Signature(unsigned(fp.W_BITS), always_ready=True)),
            "alt": In(unsigned(fp.W_BITS)), "alt_sel": In(1),
            "o_alt": Out(unsigned(fp.W_BITS)),
        })

    def elaborate(self, platform):
        m = Module()
        uw = self.u_width
        x = self.i.payload
        # stage 1: u = d2 + 2**16 and e - 16 (e = index of its leading one, >= 16): a priority
        # encoder, the later (higher) bit wins because it is assigned last
        u = Signal(uw)
        m.d.comb += u.eq(x + (1 << 16))
        sh = Signal(range(uw - 15))
        m.d.comb += sh.eq(0)
        for b in range(17, uw):
            with m.If(u[b]):
                m.d.comb += sh.eq(b - 16)
        u1, sh1 = Signal(uw), Signal(range(uw - 15))
        m.d.sync += [u1.eq(u), sh1.eq(sh)]
        # stage 2: the 8 mantissa bits below the leading one (u >> (e - 8)), the ROM address,
        # registered. The ROM (256 x 17) is soft logic read asynchronously in stage 3: as a
        # block RAM its address came straight from the normalising shifter, and the route to
        # the RAM (a few per die column) dominated the engine's critical path
        idx = Signal(fp.RECIP_LUT_BITS)
        m.d.sync += idx.eq((u1 >> (sh1 + 8))[:8])
        attrs = {"rom_style": "logic"} if self.rom == "logic" else {}
        m.submodules.lut = lut = Memory(shape=unsigned(fp.W_BITS), depth=len(fp.RECIP_LUT),
                                        init=fp.RECIP_LUT, attrs=attrs)
        rd = lut.read_port(domain="comb" if self.rom == "logic" else "sync")
        m.d.comb += rd.addr.eq(idx)
        # stage 3: the ROM word registered behind the RAM; stage 4: shifted by e - 16
        word = Signal(fp.W_BITS)
        sh_t = [sh1]
        for s in range(2):
            r = Signal(range(uw - 15), name=f"sh{s + 2}")
            m.d.sync += r.eq(sh_t[-1])
            sh_t.append(r)
        if self.rom == "logic":
            m.d.sync += word.eq(rd.data)
        else:           # the block RAM's own output register is the stage-3 word
            m.d.comb += word.eq(rd.data)
        w = word >> sh_t[2]
        m.d.sync += [self.o.payload.eq(w),
                     self.o_alt.eq(Mux(self.alt_sel, self.alt, w))]
        valid = self.i.valid
        for s in range(self.latency):
            v = Signal(name=f"valid{s + 1}")
            m.d.sync += v.eq(valid)
            valid = v
        m.d.comb += self.o.valid.eq(valid)
        return m
