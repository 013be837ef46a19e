"""AXI4 masters and the CSR block: parameter checks, the CSR register file (Amaranth simulator:
field placement at the declared lsb, RW/R/W1S/W1C actions through Wishbone and AXI4-Lite), the
write master's bursts and BRESP check (Amaranth simulator), and the vector read path against
cocotbext-axi's AxiRam under Verilator for data widths 32, 64 and 128 (a small build each)."""

from __future__ import annotations

import random

import pytest
from amaranth.back import verilog
from amaranth.sim import Simulator

from nms.rtl import regmap
from nms.rtl.axi import AxiBurstReader, AxiBurstWriter
from nms.rtl.csr import CsrBlock
from nms.verif.sim.build import run_cocotb


@pytest.mark.parametrize("cls, kwargs, match", [
    (AxiBurstReader, {"data_width": 16}, "data_width=16"),
    (AxiBurstReader, {"max_burst": 3}, "max_burst=3 is not a power of two"),
    (AxiBurstReader, {"max_burst": 64, "fifo_depth": 32}, "fifo_depth=32"),
    (AxiBurstWriter, {"data_width": 96}, "data_width=96"),
    (CsrBlock, {"bus": "apb"}, "bus='apb'"),
])
def test_bad_parameters_are_named(cls, kwargs, match):
    with pytest.raises(ValueError, match=match):
        cls(**kwargs)


def test_max_burst_capped_by_the_4k_page():
    # 128-bit beats: a 4 KiB page holds 256 beats, 32-bit: 1024 -> max_burst 256 either way
    assert AxiBurstReader(data_width=128, max_burst=256).max_burst == 256
    assert AxiBurstWriter(data_width=32, max_burst=256).max_burst == 256


# ------------------------------------------------------------------------------------------------
# CSR block in the Amaranth simulator


def _csr_bench(bus):
    csr = CsrBlock(bus=bus)
    addr = regmap.ADDR
    log = {"start": 0, "set": 0}

    async def access(ctx, write, a, value=0):
        if bus == "wishbone":
            ctx.set(csr.wb_adr, a >> 2)
            ctx.set(csr.wb_sel, 1)
            ctx.set(csr.wb_dat_w, value)
            ctx.set(csr.wb_we, write)
            ctx.set(csr.wb_cyc, 1)
            ctx.set(csr.wb_stb, 1)
            for _ in range(10):
                await ctx.tick()
                if ctx.get(csr.wb_ack):
                    break
            data = ctx.get(csr.wb_dat_r)
            ctx.set(csr.wb_cyc, 0)
            ctx.set(csr.wb_stb, 0)
            await ctx.tick()
            return data
        if write:
            ctx.set(csr.s_axil_awaddr, a)
            ctx.set(csr.s_axil_wdata, value)
            ctx.set(csr.s_axil_awvalid, 1)
            ctx.set(csr.s_axil_wvalid, 1)
            ctx.set(csr.s_axil_bready, 1)
            while not ctx.get(csr.s_axil_awready):
                await ctx.tick()
            await ctx.tick()
            ctx.set(csr.s_axil_awvalid, 0)
            ctx.set(csr.s_axil_wvalid, 0)
            while not ctx.get(csr.s_axil_bvalid):
                await ctx.tick()
            await ctx.tick()
            ctx.set(csr.s_axil_bready, 0)
            return 0
        ctx.set(csr.s_axil_araddr, a)
        ctx.set(csr.s_axil_arvalid, 1)
        ctx.set(csr.s_axil_rready, 1)
        while not ctx.get(csr.s_axil_arready):
            await ctx.tick()
        await ctx.tick()
        ctx.set(csr.s_axil_arvalid, 0)
        while not ctx.get(csr.s_axil_rvalid):
            await ctx.tick()
        data = ctx.get(csr.s_axil_rdata)
        await ctx.tick()
        ctx.set(csr.s_axil_rready, 0)
        return data

    async def bench(ctx):
        st = regmap.REGMAP["STATUS"]
        # device-driven read-only fields land at their declared lsb
        ctx.set(csr.field("STATUS", "busy").r_data, 1)
        ctx.set(csr.field("STATUS", "cause").r_data, 0x21)
        ctx.set(csr.field("ID").r_data, regmap.ID_MAGIC)
        assert await access(ctx, False, addr["ID"]) == regmap.ID_MAGIC
        word = await access(ctx, False, addr["STATUS"])
        assert st.unpack(word) == {"busy": 1, "done": 0, "error": 0, "cause": 0x21}, hex(word)
        # rw registers store the host's value, the device sees it, reads return it
        await access(ctx, True, addr["SEED"], 0xDEADBEEF)
        assert ctx.get(csr.field("SEED").data) == 0xDEADBEEF
        assert await access(ctx, False, addr["SEED"]) == 0xDEADBEEF
        opt = regmap.REGMAP["OPT"]
        await access(ctx, True, addr["OPT"], opt.pack(learning_rate=300, search=1))
        assert ctx.get(csr.field("OPT", "learning_rate").data) == 300
        assert ctx.get(csr.field("OPT", "search").data) == 1
        # w1s: a one-cycle pulse per 1 written, reads as 0
        assert await access(ctx, False, addr["CTRL"]) == 0
        await access(ctx, True, addr["CTRL"], regmap.REGMAP["CTRL"].pack(start=1))
        assert log["start"] == 1
        return True

    async def watch(ctx):
        start = csr.field("CTRL", "start")
        async for _clk, _rst, stb, data in ctx.tick().sample(start.w_stb, start.w_data):
            if stb and data:
                log["start"] += 1

    sim = Simulator(csr)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.add_process(watch)
    sim.run_until(2e-3)
    assert log["start"] == 1


@pytest.mark.parametrize("bus", ["wishbone", "axi-lite"])
def test_csr_block_fields_and_actions(bus):
    _csr_bench(bus)


def test_csr_w1c_set_and_clear():
    """A w1c register (the top's IRQ_STATUS): the device sets bits, writing 1 clears them."""
    from nms.rtl.top import effective_registers

    regs = effective_registers()
    csr = CsrBlock(bus="wishbone", registers=regs)
    a = {r.name: 4 * i for i, r in enumerate(regs)}["IRQ_STATUS"]

    async def access(ctx, write, value=0):
        ctx.set(csr.wb_adr, a >> 2)
        ctx.set(csr.wb_sel, 1)
        ctx.set(csr.wb_dat_w, value)
        ctx.set(csr.wb_we, write)
        ctx.set(csr.wb_cyc, 1)
        ctx.set(csr.wb_stb, 1)
        for _ in range(10):
            await ctx.tick()
            if ctx.get(csr.wb_ack):
                break
        data = ctx.get(csr.wb_dat_r)
        ctx.set(csr.wb_cyc, 0)
        ctx.set(csr.wb_stb, 0)
        await ctx.tick()
        return data

    async def bench(ctx):
        done, error = csr.field("IRQ_STATUS", "done"), csr.field("IRQ_STATUS", "error")
        ctx.set(error.set, 1)
        await ctx.tick()
        ctx.set(error.set, 0)
        assert await access(ctx, False) == 0b10
        ctx.set(done.set, 1)
        await ctx.tick()
        ctx.set(done.set, 0)
        assert await access(ctx, False) == 0b11
        await access(ctx, True, 0b10)           # clear error only
        assert await access(ctx, False) == 0b01
        await access(ctx, True, 0b01)
        assert await access(ctx, False) == 0

    sim = Simulator(csr)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()


# ------------------------------------------------------------------------------------------------
# write master in the Amaranth simulator: 4 KiB split, burst lengths, strobes, BRESP


def test_burst_writer_splits_at_4k_and_checks_bresp():
    dut = AxiBurstWriter(data_width=64, max_burst=16)
    rng = random.Random(4)
    addr, beats = 0x0FC0, 40        # 8 beats to the page end, then 16 + 16
    seen_aw, seen_w, errors = [], [], []

    async def bench(ctx):
        ctx.set(dut.cmd.payload, {"addr": addr, "beats": beats})
        ctx.set(dut.cmd.valid, 1)
        await ctx.tick()
        ctx.set(dut.cmd.valid, 0)
        sent = 0
        bq = []
        b_count = 0
        for cycle in range(2000):
            if sent < beats:
                ctx.set(dut.data.payload, {"data": sent, "strb": 0xFF})
            ctx.set(dut.data.valid, sent < beats and rng.random() < 0.7)
            ctx.set(dut.bus.awready, rng.random() < 0.5)
            ctx.set(dut.bus.wready, rng.random() < 0.6)
            ctx.set(dut.bus.bvalid, bool(bq) and bq[0] <= cycle)
            ctx.set(dut.bus.bresp, 2 if b_count == 1 else 0)     # the 2nd burst: SLVERR
            if ctx.get(dut.data.valid) and ctx.get(dut.data.ready):
                sent += 1
            if ctx.get(dut.bus.awvalid) and ctx.get(dut.bus.awready):
                seen_aw.append((ctx.get(dut.bus.awaddr), ctx.get(dut.bus.awlen) + 1))
            if ctx.get(dut.bus.wvalid) and ctx.get(dut.bus.wready):
                seen_w.append((ctx.get(dut.bus.wdata), ctx.get(dut.bus.wlast)))
                if ctx.get(dut.bus.wlast):
                    bq.append(cycle + 5)
            if ctx.get(dut.bus.bvalid) and ctx.get(dut.bus.bready):
                bq.pop(0)
                b_count += 1
            if ctx.get(dut.error):
                errors.append(cycle)
            await ctx.tick()
        assert ctx.get(dut.idle)
        assert ctx.get(dut.resp) == 2        # the failing burst's BRESP is held

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    assert seen_aw == [(0x0FC0, 8), (0x1000, 16), (0x1080, 16)]
    assert [d for d, _ in seen_w] == list(range(beats))
    assert [i for i, (_, last) in enumerate(seen_w) if last] == [7, 23, 39]
    assert len(errors) == 1


# ------------------------------------------------------------------------------------------------
# vector read path under Verilator with cocotbext-axi


@pytest.mark.parametrize("data_width, elem_width, dim, src, max_burst", [
    (32, 8, 45, 0x0FF3, 16),
    (64, 8, 64, 0x1FFD, 256),
    (128, 12, 21, 0x2FE1, 8),
])
def test_vector_port_reads_axi_ram(data_width, elem_width, dim, src, max_burst):
    from nms.verif.tb.axi import VectorPortBench

    hw = {"lanes": 8, "elem_width": elem_width, "max_dim": 64, "index_width": 6,
          "count_width": 7, "data_width": data_width, "max_burst": max_burst}
    text = verilog.convert(VectorPortBench(**hw), name="top", emit_src=False)
    params = {**hw, "n": 40, "dim": dim, "src": src, "seed": data_width, "stall": 0.3}
    run_cocotb(f"axi_port_{data_width}_{elem_width}_{max_burst}", text, "nms.verif.tb.axi", params)

