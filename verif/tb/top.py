"""cocotb testbench of :class:`nms.rtl.top.NmsAccelerator`: the accelerator as a device.

The DUT's AXI4 master talks to a cocotbext-axi ``AxiRam`` with random back-pressure on every
channel (AR/AW/W acceptance stalls = latency, R/B gaps); the CSRs are reached through a
cocotbext-axi ``AxiLiteMaster`` at the addresses of the effective register map. A passive
:class:`BurstMonitor` checks every AXI handshake: burst length <= ``max_burst``, no 4 KiB
crossing, INCR, reads only inside the chunk's beat-aligned range, writes (strobed bytes) only
inside the result buffer; it also records the last R/B response for the abort bound.

Tests (select with ``testcase``; parameters from :func:`nms.verif.sim.tb_params`):

* ``test_jobs`` — jobs programmed as the host driver does, irq waited for, results read back
  from the RAM and compared with ``nms.verif.models.desne.run_chunk`` (bit-exact), counters,
  ``RESULT_COUNT``, bytes outside the result buffer untouched, irq W1C and enable, a start while
  busy (``STATUS.cause`` START_WHILE_BUSY, the job unharmed), a refused configuration.
* ``test_faults`` — SLVERR / DECERR injected on reads and on writes: the job ends with the
  matching cause and nothing hangs; a clean job after each is bit-exact.
* ``test_abort`` — ``CTRL.abort`` and a reset at random cycles mid-job; the abort returns to idle
  within ``ABORT_TAIL_CYCLES`` of the last outstanding response; a clean job after each is
  bit-exact.
"""

from __future__ import annotations

import logging
import random
import warnings

import cocotb
import numpy as np
from amaranth.hdl import UnusedElaboratable
from cocotb.triggers import ClockCycles, ReadOnly, RisingEdge

from nms.rtl import regmap
from nms.rtl.datapath import CHECK_CYCLES
from nms.rtl.top import ABORT_TAIL_CYCLES, ERROR_CAUSES, NmsAccelerator
from nms.verif.models import desne
from nms.verif.sim.build import tb_params
from nms.verif.sim.streams import start_clock
from nms.verif.tb.datapath import config_value, job_config

warnings.filterwarnings("ignore", category=UnusedElaboratable)
# cocotbext-axi still calls cocotb 1.x spellings; those warnings are its own, not the design's
warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"cocotbext\..*")
warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"cocotb_bus\..*")

from cocotbext.axi import AxiBus, AxiLiteBus, AxiLiteMaster, AxiRam  # noqa: E402
from cocotbext.axi.constants import AxiResp  # noqa: E402


def job_registers(n, dim, budget, cfg, seed, src, dst) -> dict:
    """Register name -> value of one job (as ``nms.sw.driver.Driver`` programs it)."""
    v = config_value(n, dim, budget, cfg, seed)
    R = regmap.REGMAP
    return {
        "SRC_ADDR": src, "DST_ADDR": dst, "N": n, "DIM": dim, "BUDGET": budget,
        "H_TARGET": v["h_target"],
        "ITER": R["ITER"].pack(n_iter=v["n_iter"], exaggeration_iters=v["exaggeration_iters"]),
        "OPT": R["OPT"].pack(learning_rate=v["learning_rate"],
                             exaggeration_shift=v["exaggeration_shift"],
                             allocation=v["allocation"], search=v["search"],
                             exemplar=v["exemplar"], cover_start=v["cover_start"]),
        "MOMENTUM": R["MOMENTUM"].pack(early=v["momentum_early"], late=v["momentum_late"],
                                       switch=v["momentum_switch"]),
        "SEED": v["seed"],
    }


class BurstMonitor:
    """Passive AXI checker (one coroutine, samples every cycle in ReadOnly)."""

    def __init__(self, dut, *, data_width, max_burst):
        self.dut, self.nbytes, self.max_burst = dut, data_width // 8, max_burst
        self.read_range = (0, 0)       # allowed beat-aligned [lo, hi)
        self.write_range = (0, 0)      # allowed byte range for strobed bytes
        self.errors: list[str] = []
        self.cycle = 0
        self.last_response = 0
        self.reads = self.writes = 0
        self._w_addr: list[tuple[int, int]] = []   # (address, beats) of each write burst
        self._w_beat = 0
        cocotb.start_soon(self._run())

    def _burst_ok(self, kind, addr, length):
        size = length * self.nbytes
        if length > self.max_burst:
            self.errors.append(f"{kind} burst of {length} beats > max_burst {self.max_burst}")
        if (addr & 0xFFF) + size > 0x1000:
            self.errors.append(f"{kind} burst 0x{addr:x}+{size} crosses a 4 KiB boundary")
        if addr % self.nbytes:
            self.errors.append(f"{kind} burst at 0x{addr:x} not aligned to the bus width")

    async def _run(self):
        d = self.dut
        pending_w: list[tuple[int, int]] = []     # (wstrb, wlast) of W beats not yet matched
        while True:
            await RisingEdge(d.clk)
            await ReadOnly()
            self.cycle += 1
            if d.m_axi_arvalid.value and d.m_axi_arready.value:
                addr, length = int(d.m_axi_araddr.value), int(d.m_axi_arlen.value) + 1
                self.reads += 1
                self._burst_ok("read", addr, length)
                if int(d.m_axi_arburst.value) != 1:
                    self.errors.append("read burst not INCR")
                lo, hi = self.read_range
                if addr < lo or addr + length * self.nbytes > hi:
                    self.errors.append(f"read 0x{addr:x}+{length * self.nbytes} outside the "
                                       f"chunk [0x{lo:x}, 0x{hi:x})")
            if d.m_axi_awvalid.value and d.m_axi_awready.value:
                addr, length = int(d.m_axi_awaddr.value), int(d.m_axi_awlen.value) + 1
                self.writes += 1
                self._burst_ok("write", addr, length)
                self._w_addr.append((addr, length))
            if d.m_axi_wvalid.value and d.m_axi_wready.value:
                # AXI4 lets W data run ahead of its AW: beats are matched to bursts in order
                pending_w.append((int(d.m_axi_wstrb.value), int(d.m_axi_wlast.value)))
            while pending_w and self._w_addr:
                addr, length = self._w_addr[0]
                strb, last = pending_w.pop(0)
                base = addr + self._w_beat * self.nbytes
                lo, hi = self.write_range
                for i in range(self.nbytes):
                    if strb >> i & 1 and not lo <= base + i < hi:
                        self.errors.append(f"write of byte 0x{base + i:x} outside the "
                                           f"result buffer [0x{lo:x}, 0x{hi:x})")
                        break
                self._w_beat += 1
                if bool(last) != (self._w_beat == length):
                    self.errors.append(f"WLAST on beat {self._w_beat} of a {length}-beat burst")
                if self._w_beat == length:
                    self._w_addr.pop(0)
                    self._w_beat = 0
            if (d.m_axi_rvalid.value and d.m_axi_rready.value) or \
                    (d.m_axi_bvalid.value and d.m_axi_bready.value):
                self.last_response = self.cycle

    def reset(self):
        self._w_addr, self._w_beat = [], 0


def _pauses(rng: random.Random, p: float):
    while True:
        yield rng.random() < p


class Device:
    """The DUT with its RAM, CSR master and monitor."""

    def __init__(self, dut, p: dict):
        self.dut = dut
        self.hw = p["hw"]
        top = NmsAccelerator(**self.hw)
        self.dp = top.datapath
        self.regs = {r.name: r for r in top.registers}
        self.addr = {r.name: 4 * i for i, r in enumerate(top.registers)}
        self.rng = random.Random(p.get("seed", 1))
        self.ram = AxiRam(AxiBus.from_prefix(dut, "m_axi"), dut.clk, dut.rst, size=1 << 20)
        self.csr = AxiLiteMaster(AxiLiteBus.from_prefix(dut, "s_axil"), dut.clk, dut.rst)
        for lg in ("cocotb.top.m_axi", "cocotb.top.s_axil"):
            logging.getLogger(lg).setLevel(logging.WARNING)
        stall = p.get("stall", 0.3)
        for ch in (self.ram.read_if.ar_channel, self.ram.read_if.r_channel,
                   self.ram.write_if.aw_channel, self.ram.write_if.w_channel,
                   self.ram.write_if.b_channel):
            ch.set_pause_generator(_pauses(random.Random(self.rng.random()), stall))
        self.mon = BurstMonitor(dut, data_width=top.data_width, max_burst=top.max_burst)
        self.fault = {"read": None, "write": None, "range": (0, 0)}
        self._install_faults()

    def _install_faults(self):
        rd, wr = self.ram.read_if, self.ram.write_if
        orig_read, orig_write = rd._read, wr._write
        r_send, b_send = rd.r_channel.send, wr.b_channel.send
        state = {"rdec": False, "wdec": False}

        def hit(address):
            lo, hi = self.fault["range"]
            return lo <= address < hi

        async def read(address, length):
            if self.fault["read"] and hit(address):
                if self.fault["read"] == "slverr":
                    raise OSError("injected SLVERR")
                state["rdec"] = True
            return await orig_read(address, length)

        async def send_r(r):
            if state["rdec"]:
                r.rresp, state["rdec"] = AxiResp.DECERR, False
            await r_send(r)

        async def write(address, data):
            if self.fault["write"] and hit(address):
                if self.fault["write"] == "slverr":
                    raise OSError("injected SLVERR")
                state["wdec"] = True
            await orig_write(address, data)

        async def send_b(b):
            if state["wdec"]:
                b.bresp, state["wdec"] = AxiResp.DECERR, False
            await b_send(b)

        rd._read, wr._write = read, write
        rd.r_channel.send, wr.b_channel.send = send_r, send_b

    async def wr(self, name, value):
        await self.csr.write_dword(self.addr[name], value)

    async def rd(self, name):
        return await self.csr.read_dword(self.addr[name])

    async def status(self):
        return self.regs["STATUS"].unpack(await self.rd("STATUS"))

    async def program(self, X, budget, cfg, seed, src, dst):
        n, dim = X.shape
        self.ram.write(src, X.astype(np.uint8).tobytes())
        for name, value in job_registers(n, dim, budget, cfg, seed, src, dst).items():
            await self.wr(name, value)
        nb = self.mon.nbytes
        self.mon.read_range = (src - src % nb, -(-(src + n * dim) // nb) * nb)
        self.mon.write_range = (dst, dst + 4 * budget)

    async def start(self):
        await self.wr("CTRL", self.regs["CTRL"].pack(start=1))

    async def wait_irq(self, max_cycles):
        for _ in range(max_cycles // 16):
            if self.dut.irq.value:
                return True
            await ClockCycles(self.dut.clk, 16)
        return bool(self.dut.irq.value)

    async def wait_idle(self, max_cycles):
        for _ in range(max_cycles // 32):
            if not (await self.status())["busy"]:
                return True
            await ClockCycles(self.dut.clk, 32)
        return False


def _job_data(job):
    return np.asarray(job["X"], dtype=np.int64)


async def _run_clean_job(dev: Device, job: dict, errs: list, tag: str, *, while_busy=False):
    """One job start to finish; compare with the model; append failures to ``errs``."""
    X = _job_data(job)
    n, dim = X.shape
    budget, seed = job["budget"], job["seed"]
    cfg = job_config(job, dev.hw)
    src, dst = job.get("src", 0x1003), job.get("dst", 0x40000)
    guard = bytes([0xA5]) * 64
    dev.ram.write(dst - 64, guard)
    dev.ram.write(dst, bytes([0x5A]) * (4 * budget))
    dev.ram.write(dst + 4 * budget, guard)
    await dev.program(X, budget, cfg, seed, src, dst)
    await dev.wr("IRQ_STATUS", 0b11)
    await dev.wr("IRQ_ENABLE", dev.regs["IRQ_ENABLE"].pack(done=1, error=1))
    t0 = dev.mon.cycle
    await dev.start()
    if while_busy:
        await ClockCycles(dev.dut.clk, 50)
        if not (await dev.status())["busy"]:
            errs.append(f"{tag}: not busy 50 cycles after start")
        await dev.start()
        # the registers are latched at the start: other values written now (another size,
        # budget, seed and addresses) change only the next job; the monitor still holds this
        # job's read and write ranges, so an access elsewhere is an error too
        for name, value in job_registers(n - 1, dim, max(1, budget - 1), cfg, seed + 1,
                                         src + 64, dst + 0x1000).items():
            await dev.wr(name, value)
    if not await dev.wait_irq(job.get("max_cycles", 400_000)):
        errs.append(f"{tag}: no irq")
        return
    cycles = dev.mon.cycle - t0
    st = await dev.status()
    cause = st["cause"]
    want_cause = ERROR_CAUSES["START_WHILE_BUSY"] if while_busy else 0
    if st["busy"] or not st["done"] or cause != want_cause or st["error"] != (cause != 0):
        errs.append(f"{tag}: STATUS={st} cause={cause}, expected cause {want_cause}")
    want = desne.run_chunk(X, budget, cfg, seed)["selected"].tolist()
    got = np.frombuffer(dev.ram.read(dst, 4 * budget), dtype="<u4").tolist()
    if got != want:
        errs.append(f"{tag}: indices {got} != model {want}")
    if dev.ram.read(dst - 64, 64) != guard or dev.ram.read(dst + 4 * budget, 64) != guard:
        errs.append(f"{tag}: bytes beside the result buffer changed")
    counters = {"RESULT_COUNT": budget, "BYTES_WRITTEN": 4 * budget,
                "BYTES_READ_LO": dev.dp.bytes_read(n, dim)}
    for name, value in counters.items():
        got_v = await dev.rd(name)
        if got_v != value:
            errs.append(f"{tag}: {name} = {got_v}, expected {value}")
    cyc = await dev.rd("CYCLES_LO")
    if not 0 < cyc <= cycles:
        errs.append(f"{tag}: CYCLES_LO = {cyc} outside (0, {cycles}]")
    # irq: level while status & enable; W1C clears it; a disabled source does not raise it
    irq_st = dev.regs["IRQ_STATUS"].unpack(await dev.rd("IRQ_STATUS"))
    if not dev.dut.irq.value or irq_st != {"done": 1, "error": 0}:
        errs.append(f"{tag}: irq={dev.dut.irq.value} IRQ_STATUS={irq_st} after a clean job")
    await dev.wr("IRQ_ENABLE", 0)
    await ClockCycles(dev.dut.clk, 2)
    if dev.dut.irq.value:
        errs.append(f"{tag}: irq high with IRQ_ENABLE = 0")
    await dev.wr("IRQ_ENABLE", dev.regs["IRQ_ENABLE"].pack(done=1, error=1))
    await dev.wr("IRQ_STATUS", dev.regs["IRQ_STATUS"].pack(done=1))
    await ClockCycles(dev.dut.clk, 2)
    if dev.dut.irq.value or await dev.rd("IRQ_STATUS"):
        errs.append(f"{tag}: irq not cleared by writing 1 to IRQ_STATUS.done")
    dev.dut._log.info(f"{tag}: n={n} dim={dim} budget={budget}: {cycles} cycles, "
                      f"{dev.mon.reads} read / {dev.mon.writes} write bursts so far")


def _check_monitor(dev, errs):
    errs += dev.mon.errors
    dev.mon.errors.clear()


async def _setup(dut):
    p = tb_params()
    await start_clock(dut)
    dev = Device(dut, p)
    await ClockCycles(dut.clk, 4)
    if await dev.rd("ID") != regmap.ID_MAGIC:
        raise AssertionError("ID register does not read the magic")
    return dev, p


@cocotb.test()
async def test_jobs(dut):
    dev, p = await _setup(dut)
    errs: list[str] = []
    for i, job in enumerate(p["jobs"]):
        if job.get("refuse"):
            X = _job_data(job)
            cfg = job_config(job, dev.hw)
            await dev.program(X, job["budget"], cfg, job["seed"], 0x1003, 0x40000)
            for name, value in job["refuse"]["registers"].items():
                await dev.wr(name, value)
            await dev.wr("IRQ_STATUS", 0b11)
            await dev.start()
            # the check's registered steps, then the decision (CHECK_CYCLES + 1 edges after
            # the CTRL write's strobe, which comes before its response)
            await ClockCycles(dut.clk, CHECK_CYCLES + 1)
            st = await dev.status()
            cause = st["cause"]
            want = ERROR_CAUSES[job["refuse"]["cause"]]
            irq_st = dev.regs["IRQ_STATUS"].unpack(await dev.rd("IRQ_STATUS"))
            if st != {"busy": 0, "done": 1, "error": 1, "cause": want} or not irq_st["error"]:
                errs.append(f"job {i}: refusal STATUS={st} cause={cause} (want {want}) "
                            f"IRQ_STATUS={irq_st}")
            continue
        await _run_clean_job(dev, job, errs, f"job {i}", while_busy=job.get("while_busy", False))
        _check_monitor(dev, errs)
    assert dev.mon.reads > 0 and dev.mon.writes > 0
    assert not errs, "\n".join(errs[:20])


@cocotb.test()
async def test_faults(dut):
    dev, p = await _setup(dut)
    errs: list[str] = []
    job = p["jobs"][0]
    X = _job_data(job)
    n, dim = X.shape
    cfg = job_config(job, dev.hw)
    src, dst = 0x2001, 0x40000
    for kind, resp in (("read", "slverr"), ("read", "decerr"), ("write", "slverr"),
                       ("write", "decerr")):
        tag = f"{kind} {resp}"
        # the fault sits in the middle of the chunk (reads) or on the result buffer (writes)
        dev.fault = {"read": resp if kind == "read" else None,
                     "write": resp if kind == "write" else None,
                     "range": ((src + n * dim // 2, src + n * dim) if kind == "read"
                               else (dst, dst + 4 * job["budget"]))}
        await dev.program(X, job["budget"], cfg, job["seed"], src, dst)
        await dev.wr("IRQ_STATUS", 0b11)
        await dev.wr("IRQ_ENABLE", 0b11)
        await dev.start()
        ok = await dev.wait_irq(job.get("max_cycles", 400_000))
        dev.fault = {"read": None, "write": None, "range": (0, 0)}
        st = await dev.status()
        cause = st["cause"]
        want = ERROR_CAUSES[f"AXI_{kind.upper()}_ERROR"]
        irq_st = dev.regs["IRQ_STATUS"].unpack(await dev.rd("IRQ_STATUS"))
        if not ok or st != {"busy": 0, "done": 1, "error": 1, "cause": want} \
                or irq_st != {"done": 0, "error": 1}:
            errs.append(f"{tag}: irq={ok} STATUS={st} cause={cause} (want {want}) IRQ={irq_st}")
        dev.mon.reset()
        await _run_clean_job(dev, job, errs, f"clean job after {tag}")
        _check_monitor(dev, errs)
    assert not errs, "\n".join(errs[:20])


@cocotb.test()
async def test_abort(dut):
    dev, p = await _setup(dut)
    errs: list[str] = []
    rng = random.Random(p.get("seed", 1) + 17)
    job = p["jobs"][0]
    X = _job_data(job)
    cfg = job_config(job, dev.hw)
    src, dst = 0x1003, 0x40000
    for how, at in p["aborts"]:
        tag = f"{how} at cycle {at}"
        await dev.program(X, job["budget"], cfg, job["seed"], src, dst)
        await dev.wr("IRQ_STATUS", 0b11)
        await dev.start()
        if at:
            await ClockCycles(dut.clk, at)
        if how == "abort":
            await dev.wr("CTRL", dev.regs["CTRL"].pack(abort=1))
            if not await dev.wait_idle(20_000):
                errs.append(f"{tag}: still busy 20000 cycles after abort")
                continue
            st = await dev.status()
            cause = st["cause"]
            if st != {"busy": 0, "done": 1, "error": 1, "cause": ERROR_CAUSES["ABORTED"]}:
                errs.append(f"{tag}: STATUS={st} cause={cause}")
        else:
            dut.rst.value = 1
            await ClockCycles(dut.clk, 3)
            dut.rst.value = 0
            await ClockCycles(dut.clk, 3)
            dev.mon.reset()
        await _run_clean_job(dev, job, errs, f"clean job after {tag}")
        _check_monitor(dev, errs)
    # the abort bound, measured exactly on one more abort: busy must fall within
    # ABORT_TAIL_CYCLES of the last outstanding R/B response
    # (IRQ_STATUS.error is set in the cycle busy falls, so irq rises with it)
    await dev.program(X, job["budget"], cfg, job["seed"], src, dst)
    await dev.wr("IRQ_STATUS", 0b11)
    await dev.wr("IRQ_ENABLE", dev.regs["IRQ_ENABLE"].pack(error=1))
    await dev.start()
    await ClockCycles(dut.clk, rng.randrange(200, 1500))
    await dev.wr("CTRL", dev.regs["CTRL"].pack(abort=1))
    written = dev.mon.cycle           # the CSR write has taken effect (its B response is back)
    fell = None
    for _ in range(50_000):
        await RisingEdge(dut.clk)
        await ReadOnly()
        if dut.irq.value:
            fell = dev.mon.cycle
            break
    if fell is None:
        errs.append("abort: busy never fell")
    else:
        # the bound: busy falls at most ABORT_TAIL_CYCLES after the later of the abort and the
        # last response of the bursts outstanding at that time (+1: the monitor samples the
        # cycle before the edge)
        tail = fell - max(written, dev.mon.last_response)
        dut._log.info(f"abort: busy fell {fell - written} cycles after the abort write, "
                      f"{fell - dev.mon.last_response} after the last R/B response")
        if tail > ABORT_TAIL_CYCLES + 1:
            errs.append(f"abort: busy fell {tail} cycles after max(abort, last response) "
                        f"(bound {ABORT_TAIL_CYCLES})")
    assert not errs, "\n".join(errs[:20])

