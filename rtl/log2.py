"""Fixed-point log2 of a row sum by leading-one detection + ``LOG2_LUT``, two registered steps."""

from __future__ import annotations

from amaranth import Cat, Module, Signal
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
        log2 of ``value / 2**16``, unsigned Q.16, :attr:`latency` cycles after ``value``
        (registered: the leading one and the 8 bits below it, then the table word, so neither
        step is one long combinational path).
    log2_width : int
        ``16 + bits_for(value_width - 17)`` (never overflows).
    latency : int
        2.
    """

    def __init__(self, *, value_width: int):
        check_int("value_width", value_width, 17, 64, "17 to 64 bits (a sum of Q1.16 weights)")
        self.value_width = value_width
        self.log2_width = fp.H_FRAC_BITS + max(1, (value_width - 17).bit_length())
        self.latency = 2
        super().__init__({"value": In(value_width), "log2": Out(self.log2_width)})

    def elaborate(self, platform):
        m = Module()
        m.submodules.lut = lut = Memory(shape=fp.H_FRAC_BITS, depth=len(fp.LOG2_LUT),
                                        init=fp.LOG2_LUT)
        rd = lut.read_port(domain="comb")
        oct_w = self.log2_width - fp.H_FRAC_BITS
        octave_c, index_c = Signal(oct_w), Signal(fp.LOG2_LUT_BITS)
        # leading-one detector: later (higher) bits win, so the top set bit decides
        for i in range(16, self.value_width):
            with m.If(self.value[i]):
                m.d.comb += [octave_c.eq(i - 16), index_c.eq(self.value[i - 8:i])]
        octave, index = Signal(oct_w), Signal(fp.LOG2_LUT_BITS)
        m.d.sync += [octave.eq(octave_c), index.eq(index_c)]
        m.d.comb += rd.addr.eq(index)
        m.d.sync += self.log2.eq(Cat(rd.data, octave))      # (octave << 16) + LOG2_LUT[index]
        return m
