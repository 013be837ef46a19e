"""Deep memories as bit slices one ECP5 block RAM deep each.

A memory deeper than one DP16KD in its widest mode is mapped by Yosys as a cascade in depth: a
multiplexer behind the RAM outputs of every bit, and RAMs spread over the die. Built instead
from bit slices in the DP16KD mode as deep as the memory (16384 x 1 for 16384 words), every
output bit comes straight from one RAM, and the RAM count is ``ceil(width / slice width)``,
often fewer than the cascade's. :class:`SlicedRead` / :class:`SlicedWrite` are one port over
all slices, with the port signatures of ``amaranth.lib.memory``.

:func:`block_ram` / :func:`sliced_block_ram` are the memories the grid, embedding and coverage
units build on: ``no_rw_check`` block RAMs with registered read ports (:func:`registered_read`),
so Yosys puts no read-during-write logic (a delayed write and a bypass multiplexer) behind any
RAM output.
"""

from __future__ import annotations

from amaranth import Array, Cat, Module, Shape, Signal, Value, unsigned
from amaranth.lib import wiring
from amaranth.lib.memory import Memory, ReadPort, WritePort
from amaranth.utils import ceil_log2

__all__ = ["DP16KD_MODES", "slice_bounds", "SlicedRead", "SlicedWrite", "registered_read",
           "block_ram", "sliced_block_ram", "bank_depth", "banked_block_ram", "BANKED_LATENCY"]

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


def registered_read(m, memory, name):
    """A synchronous read port of ``memory`` built in ``m`` as an asynchronous read and a data
    register: an interface of ``ReadPort.Signature`` (``addr``, ``en``, ``data``).

    It behaves exactly like ``memory.read_port()`` (the word of the previous cycle's address,
    the old word when that address is written in the same cycle; ``en`` low holds the data),
    but it is the form Yosys' ``memory_dff`` merges into the block RAM's read port, and that
    pass honours the memory's ``no_rw_check`` attribute (:func:`block_ram`): no soft logic
    emulates read-during-write behaviour behind the RAM output. The register is in the
    memory's own module (``m``), so a synthesis that keeps the hierarchy (``nms bench area``)
    merges it too; in a submodule of its own it was left as a register behind an asynchronous
    read, which an iCE40 can only build from flip-flops.
    """
    port = memory.read_port(domain="comb")
    read = ReadPort.Signature(addr_width=ceil_log2(memory.depth), shape=memory.shape).create(
        path=(name,))
    m.d.comb += port.addr.eq(read.addr)
    with m.If(read.en):
        m.d.sync += read.data.eq(port.data)
    return read


def block_ram(m, name, shape, depth, read_ports=1):
    """A memory of ``m`` for block RAM without read-during-write logic, its registered read
    ports (:func:`registered_read`, in ``m``) and its write port: ``(memory, *reads, write)``.

    ``no_rw_check`` is legal only where no word read in the cycle its address is written is
    used (on the FPGA such a read returns an undefined word; in simulation the old one), so
    every caller says why its memories never do that.
    """
    shape = unsigned(shape) if isinstance(shape, int) else shape
    mem = Memory(shape=shape, depth=depth, init=[], attrs={"no_rw_check": 1})
    m.submodules[name] = mem
    reads = []
    for r in range(read_ports):
        suffix = "_read" if read_ports == 1 else f"_read{r}"
        reads.append(registered_read(m, mem, f"{name}{suffix}"))
    return (mem, *reads, mem.write_port())


def sliced_block_ram(m, name, shape, depth, read_ports=1):
    """:func:`block_ram` built from bit slices each exactly one block RAM deep
    (:func:`slice_bounds`): returns ``(*reads, write)``, one read port over all slices per
    ``read_ports`` and one write port (each a submodule of ``m``)."""
    shape = unsigned(shape) if isinstance(shape, int) else shape
    slices = slice_bounds(shape, depth)
    parts = [block_ram(m, f"{name}_b{lo}", unsigned(hi - lo), depth, read_ports)
             for lo, hi in slices]
    m.submodules[f"{name}_write"] = write = SlicedWrite(shape, depth, [p[-1] for p in parts],
                                                        slices)
    reads = []
    for r in range(read_ports):
        suffix = "_read" if read_ports == 1 else f"_read{r}"
        m.submodules[f"{name}{suffix}"] = rd = SlicedRead(shape, depth,
                                                          [p[1 + r] for p in parts])
        reads.append(rd)
    return (*reads, write)


#: read latency of :func:`banked_block_ram`: the word of the address presented at t is on
#: ``data`` at t + 2 (RAM output register, then a fabric register per bank)
BANKED_LATENCY = 2


def bank_depth(shape, depth: int) -> int:
    """The bank depth of :func:`banked_block_ram`: the DP16KD mode needing the fewest RAMs for
    ``depth`` words of ``shape`` (ties: the deeper mode, fewer banks)."""
    width = Shape.cast(shape).width
    best = min(DP16KD_MODES, key=lambda mw: (-(-depth // mw[0]) * -(-width // mw[1]), -mw[0]))
    return min(best[0], depth)


def banked_block_ram(m, name, shape, depth):
    """A deep memory as banks in depth, each bank's word registered in the fabric before the
    bank multiplexer: ``(read, write)``.

    Yosys cascades a memory deeper than its widest DP16KD mode with the multiplexer straight
    behind the RAM outputs (5.8 ns clock-to-output, then the mux, then the logic); slicing it
    in bits (:func:`sliced_block_ram`) can take more RAMs (27 instead of 24 for 16384 x 27).
    Here the multiplexer sits behind a register, so a read takes :data:`BANKED_LATENCY`
    cycles: ``read.addr`` at t, ``read.data`` (combinational from registers) at t + 2. The
    write port is one cycle, as a memory's. Banks are ``no_rw_check`` (:func:`block_ram`).
    """
    shape = unsigned(shape) if isinstance(shape, int) else shape
    bdepth = bank_depth(shape, depth)
    banks = -(-depth // bdepth)
    lo_bits = ceil_log2(bdepth)
    addr_width = ceil_log2(depth)
    read = ReadPort.Signature(addr_width=addr_width, shape=shape).create(path=(f"{name}_read",))
    write = WritePort.Signature(addr_width=addr_width, shape=shape).create(
        path=(f"{name}_write",))
    words = []
    sel = Signal(range(banks), name=f"{name}_sel1")
    sel2 = Signal(range(banks), name=f"{name}_sel2")
    for b in range(banks):
        _, rd, wr = block_ram(m, f"{name}_k{b}", shape, bdepth)
        word = Signal(shape, name=f"{name}_w{b}")
        m.d.comb += [rd.addr.eq(read.addr[:lo_bits]),
                     wr.addr.eq(write.addr[:lo_bits]), wr.data.eq(write.data),
                     wr.en.eq(write.en & (write.addr[lo_bits:] == b) if banks > 1 else write.en)]
        m.d.sync += word.eq(rd.data)
        words.append(word)
    if banks > 1:
        m.d.sync += [sel.eq(read.addr[lo_bits:]), sel2.eq(sel)]
        m.d.comb += read.data.eq(Array(words)[sel2])
    else:
        m.d.comb += read.data.eq(words[0])
    return read, write
