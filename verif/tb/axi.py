"""cocotb testbench of the AXI4 vector read path (:class:`nms.rtl.memport.AxiVectorPort` with
its :class:`nms.rtl.axi.AxiBurstReader`) against a cocotbext-axi ``AxiRam``.

:class:`VectorPortBench` wraps the port with flat ``m_axi_*`` names. Random ``{first, count}``
requests over a chunk stored at an unaligned address; every response beat is compared with the
chunk's bytes cut into lane beats (lanes past a vector's end are not compared: they carry the
next bytes, which the datapath masks); random stalls on every AXI channel and on the response
stream; the burst monitor checks length, 4 KiB rule and that reads stay inside the chunk;
credits: R is never refused (``rready`` stays high whenever ``rvalid`` is).
"""

from __future__ import annotations

import random
import warnings

import cocotb
from amaranth import Module
from amaranth.hdl import UnusedElaboratable
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out
from cocotb.triggers import ClockCycles, FallingEdge, ReadOnly, RisingEdge

from nms.rtl.axi import axi4_signature
from nms.rtl.memport import AxiVectorPort
from nms.verif.sim.build import tb_params
from nms.verif.sim.streams import start_clock

warnings.filterwarnings("ignore", category=UnusedElaboratable)
warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"cocotbext\..*")
warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"cocotb_bus\..*")

__all__ = ["VectorPortBench"]


class VectorPortBench(wiring.Component):
    """:class:`AxiVectorPort` with flat ``m_axi_*`` ports, ``req``/``resp`` streams, ``src_addr``
    and ``dim``; parameters as the port's."""

    def __init__(self, **params):
        self.port = AxiVectorPort(**params)
        sig = self.port.mem_signature
        axi = axi4_signature(addr_width=self.port.addr_width, data_width=self.port.data_width)
        super().__init__({
            **{f"m_axi_{n}": mbr for n, mbr in axi.members.items()},
            "req": In(stream.Signature(sig.req_layout)),
            "resp": Out(stream.Signature(sig.resp_layout)),
            "src_addr": In(self.port.addr_width),
            "dim": In(range(self.port.max_dim + 1)),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.port = port = self.port
        for name, member in port.bus.signature.members.items():
            outer, inner = getattr(self, f"m_axi_{name}"), getattr(port.bus, name)
            m.d.comb += (outer.eq(inner) if member.flow == Out else inner.eq(outer))
        wiring.connect(m, wiring.flipped(self.req), port.mem.req)
        wiring.connect(m, port.mem.resp, wiring.flipped(self.resp))
        m.d.comb += [port.src_addr.eq(self.src_addr), port.dim.eq(self.dim)]
        return m


def _pauses(rng, p):
    while True:
        yield rng.random() < p


@cocotb.test()
async def test_vector_reads(dut):
    from cocotbext.axi import AxiBus, AxiRam

    from nms.verif.tb.top import BurstMonitor

    p = tb_params()
    rng = random.Random(p["seed"])
    lanes, ew, dw = p["lanes"], p["elem_width"], p["data_width"]
    eb = -(-ew // 8)
    n, dim, src = p["n"], p["dim"], p["src"]
    await start_clock(dut)
    ram = AxiRam(AxiBus.from_prefix(dut, "m_axi"), dut.clk, dut.rst, size=1 << 18)
    for ch in (ram.read_if.ar_channel, ram.read_if.r_channel):
        ch.set_pause_generator(_pauses(random.Random(rng.random()), p["stall"]))
    mon = BurstMonitor(dut, data_width=dw, max_burst=p["max_burst"])
    nb = dw // 8
    mon.read_range = (src - src % nb, -(-(src + n * dim * eb) // nb) * nb)
    chunk = bytes(rng.randrange(256) for _ in range(n * dim * eb))
    ram.write(src, chunk)
    dut.src_addr.value = src
    dut.dim.value = dim
    dut.req__valid.value = 0
    dut.resp__ready.value = 0
    requests = [(0, n)] + [(f, rng.randint(1, n - f)) for f in (rng.randrange(n) for _ in range(6))]
    expected = []
    for first, count in requests:
        for v in range(first, first + count):
            vec = chunk[v * dim * eb:(v + 1) * dim * eb]
            for b in range(-(-dim // lanes)):
                expected.append([int.from_bytes(vec[(b * lanes + i) * eb:(b * lanes + i + 1) * eb],
                                                "little") & ((1 << ew) - 1)
                                 if b * lanes + i < dim else None for i in range(lanes)])
    got = []
    errors = []
    pending = list(requests)
    first_width = p["index_width"]
    cycles = 0
    while len(got) < len(expected) and cycles < 200_000:
        await FallingEdge(dut.clk)
        if pending:
            f, c = pending[0]
            dut.req__payload.value = f | (c << first_width)
            dut.req__valid.value = 1
        else:
            dut.req__valid.value = 0
        dut.resp__ready.value = int(rng.random() >= p["stall"])
        await ReadOnly()
        if pending and dut.req__ready.value:
            pending.pop(0)
        if dut.m_axi_rvalid.value and not dut.m_axi_rready.value:
            errors.append(f"cycle {cycles}: R refused (credits broken)")
        if dut.resp__valid.value and dut.resp__ready.value:
            word = dut.resp__payload.value.to_unsigned()
            got.append([(word >> (i * ew)) & ((1 << ew) - 1) for i in range(lanes)])
        cycles += 1
    await ClockCycles(dut.clk, 50)
    await RisingEdge(dut.clk)
    for i, (w, g) in enumerate(zip(expected, got)):
        if any(e is not None and e != x for e, x in zip(w, g)):
            errors.append(f"beat {i}: {g} != {w}")
            break
    if len(got) != len(expected):
        errors.append(f"{len(got)} beats, expected {len(expected)}")
    errors += mon.errors
    dut._log.info(f"{len(got)} beats, {mon.reads} read bursts, {cycles} cycles")
    if mon.reads < len(requests):
        errors.append(f"only {mon.reads} bursts for {len(requests)} requests")
    assert not errors, "\n".join(errors[:10])
