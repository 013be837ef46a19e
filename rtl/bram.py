"""Deep memories as bit slices one ECP5 block RAM deep each.

A memory deeper than one DP16KD in its widest mode is mapped by Yosys as a cascade in depth: a
multiplexer behind the RAM outputs of every bit, and RAMs spread over the die. Built instead
from bit slices in the DP16KD mode as deep as the memory (16384 x 1 for 16384 words), every
output bit comes straight from one RAM, and the RAM count is ``ceil(width / slice width)``,
often fewer than the cascade's. :class:`SlicedRead` / :class:`SlicedWrite` are one port over
all slices, with the port signatures of ``amaranth.lib.memory``.
"""

from __future__ import annotations

from amaranth import Cat, Module, Shape, Value
from amaranth.lib import wiring
from amaranth.lib.memory import ReadPort, WritePort
from amaranth.utils import ceil_log2

__all__ = ["DP16KD_MODES", "slice_bounds", "SlicedRead", "SlicedWrite"]

#: DP16KD aspect ratios (depth, width): the widest one as deep as a memory needs no cascade
#: multiplexer behind the RAM outputs
DP16KD_MODES = ((512, 36), (1024, 18), (2048, 9), (4096, 4), (8192, 2), (16384, 1))


def slice_bounds(shape, depth: int) -> list[tuple[int, int]]:
    """``(lo, hi)`` bit ranges of the slices of a ``depth``-word memory of ``shape``."""
    width = Shape.cast(shape).width
    slice_w = next((w for d, w in DP16KD_MODES if d >= depth), 1)
    return [(lo, min(lo + slice_w, width)) for lo in range(0, width, slice_w)]


class SlicedWrite(wiring.Component):
    """One write port fanned out to the slices' write ports ``writes``."""

    def __init__(self, shape, depth, writes, slices):
        self._writes, self._slices = writes, slices
        super().__init__(WritePort.Signature(addr_width=ceil_log2(depth), shape=shape))

    def elaborate(self, platform):
        m = Module()
        bits = Value.cast(self.data)
        for (lo, hi), wr in zip(self._slices, self._writes):
            m.d.comb += [wr.addr.eq(self.addr), wr.en.eq(self.en), wr.data.eq(bits[lo:hi])]
        return m


class SlicedRead(wiring.Component):
    """One read port over the slices' read ports ``reads`` (the word is their concatenation)."""

    def __init__(self, shape, depth, reads):
        self._reads = reads
        super().__init__(ReadPort.Signature(addr_width=ceil_log2(depth), shape=shape))

    def elaborate(self, platform):
        m = Module()
        for rd in self._reads:
            m.d.comb += [rd.addr.eq(self.addr), rd.en.eq(self.en)]
        m.d.comb += self.data.eq(Cat(*(rd.data for rd in self._reads)))
        return m
