"""Fixed-point log2 of a row sum by leading-one detection + ``LOG2_LUT`` (combinational)."""

from __future__ import annotations

from amaranth import Module, Signal
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from nms.rtl import fixedpoint as fp
from nms.rtl.params import check_int

__all__ = ["Log2Unit"]


class Log2Unit(wiring.Component):
    """``log2(S / 2**16)`` in Q8.16 for a row sum ``S >= 2**16``, exactly as the model computes it.

    With ``bl`` the bit length of ``S``: ``((bl - 17) << 16) + LOG2_LUT[(S >> (bl - 9)) & 255]``,
    i.e. the leading-one position gives the integer part and the 8 bits below the leading one
    index the mantissa table. The affinity unit's sums always have bit 16 set or a higher one (the
    nearest neighbour's weight is exactly ``2**16``); smaller inputs give 0 + ``LOG2_LUT[0]``.

    Parameters
    ----------
    value_width : int
        Width of ``value`` (17..64).

    Attributes
    ----------
    value : In(value_width)
        The sum S (unsigned Q.16).
    log2 : Out(log2_width)
        log2 of ``value / 2**16``, unsigned Q.16 (combinational).
    log2_width : int
        ``16 + bits_for(value_width - 17)`` (never overflows).
    """

    def __init__(self, *, value_width: int):
        check_int("value_width", value_width, 17, 64, "17 to 64 bits (a sum of Q1.16 weights)")
        self.value_width = value_width
        self.log2_width = fp.H_FRAC_BITS + max(1, (value_width - 17).bit_length())
        super().__init__({"value": In(value_width), "log2": Out(self.log2_width)})

    def elaborate(self, platform):
        m = Module()
        m.submodules.lut = lut = Memory(shape=fp.H_FRAC_BITS, depth=len(fp.LOG2_LUT),
                                        init=fp.LOG2_LUT)
        rd = lut.read_port(domain="comb")
        octave = Signal(self.log2_width - fp.H_FRAC_BITS)
        # leading-one detector: later (higher) bits win, so the top set bit decides
        m.d.comb += rd.addr.eq(0)
        for i in range(16, self.value_width):
            with m.If(self.value[i]):
                m.d.comb += [octave.eq(i - 16), rd.addr.eq(self.value[i - 8:i])]
        m.d.comb += self.log2.eq((octave << fp.H_FRAC_BITS) + rd.data)
        return m
