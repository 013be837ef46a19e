"""``NmsAccelerator``: the accelerator as an SoC device.

* an **AXI4 master** toward DDR (``m_axi_*``): the chunk's vectors are read by INCR bursts
  (:class:`~nms.rtl.memport.AxiVectorPort`), the selected local indices (u32) are written by
  INCR bursts to ``DST_ADDR`` (:class:`~nms.rtl.memport.ResultPacker` +
  :class:`~nms.rtl.axi.AxiBurstWriter`);
* a **CSR slave** (``s_axil_*`` or ``wb_*``) generated from the register-map declaration
  (:class:`~nms.rtl.csr.CsrBlock`);
* a level **interrupt** ``irq`` = ``|(IRQ_STATUS & IRQ_ENABLE)``; ``IRQ_STATUS.done`` /
  ``.error`` are set when a job ends (cleanly / with an error) and cleared by writing 1;
* **error causes** (``STATUS.cause``, codes declared in ``nms.rtl.regmap``): the first refusal
  or failure, sticky until ``CTRL.clear_error`` or the next start while idle; ``STATUS.error``
  is ``cause != 0``;
* **abort**: ``CTRL.abort`` (or an AXI error response) stops issuing reads and writes, lets the
  outstanding bursts complete (AXI cannot cancel one), then resets the datapath and the memory
  engines and returns to idle. Bound: idle at most :data:`ABORT_TAIL_CYCLES` cycles after the
  last outstanding R/B response; the outstanding work is at most the read data FIFO's credits
  (``fifo_depth`` beats) plus one write burst, so with a memory answering within ``L`` cycles
  per burst the abort completes within ``fifo_depth + max_burst + L * bursts + 4`` cycles.
* **counters** in CSRs: every datapath counter plus the job's cycles and AXI bytes;
* the **dataflow** of the datapath: by default the chosen one of ``docs/energy.md`` §6 — each
  job's chunk read from DDR once, through the pooling unit, into the chunk buffer
  (``buffer_dim``), P = ``cand_tile`` candidates per query-memory read; ``buffer_dim=0`` builds
  the streamed datapath (the chunk read again per query tile). The host learns the buffer's
  limits from the generator parameters (:func:`nms.rtl.regmap.capabilities`, also in the
  generator's metadata under ``derived.capabilities``).

The register map is the one declaration, ``nms.rtl.regmap.REGISTERS`` (job, status, interrupt,
AXI and datapath counters alike); :attr:`NmsAccelerator.registers` is that map, and the
generator's metadata, the C header and every transport use it.
"""

from __future__ import annotations

from amaranth import C, Module, Mux, Signal
from amaranth.hdl import ResetInserter
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from nms.rtl import regmap
from nms.rtl.axi import RESP_DECERR, AxiBurstWriter, axi4_signature, check_data_width
from nms.rtl.csr import BUSES, CsrBlock
from nms.rtl.datapath import DesneDatapath, config_layout, refusal_check
from nms.rtl.memport import AxiVectorPort, ResultPacker
from nms.rtl.params import BUFFER_BANKS, BUFFER_DIM, CAND_TILE, CAPACITY, check_int

__all__ = ["NmsAccelerator", "ERROR_CAUSES", "ABORT_TAIL_CYCLES", "BUFFER_DIM", "CAND_TILE",
           "effective_registers"]

#: cycles from the last outstanding R/B response of an aborted job to ``STATUS.busy`` low
ABORT_TAIL_CYCLES = 3

#: ``STATUS.cause`` codes, from the declaration (the model backend reports the same ones)
ERROR_CAUSES = {c.name: c.code for c in regmap.CAUSES}

def effective_registers() -> tuple:
    """The device's register map: the declaration itself (kept for callers of the time when
    the device appended registers of its own)."""
    return regmap.REGISTERS


def _prefixed(signature, prefix):
    return {f"{prefix}{name}": member for name, member in signature.members.items()}


class NmsAccelerator(wiring.Component):
    """The DE-SNE accelerator with its AXI4 master, CSR slave and interrupt.

    Parameters
    ----------
    lanes, tile, elem_width, max_dim, k, capacity, neg_samples, affinity_lanes, pair_units, fetch_depth
        The datapath's (see :class:`~nms.rtl.datapath.DesneDatapath`).
    buffer_dim : int
        The datapath's chunk buffer (``docs/energy.md`` §6): ``0`` streams the chunk from DDR
        once per query tile (no pooling unit, ``OPT.pool`` must be 0); ``1..max_dim`` reads
        each job's N vectors once, through the pooling unit, into a buffer of
        ``capacity · ceil(buffer_dim / lanes)`` words (a job with ``N · ceil(D'/lanes)`` more
        words is refused, ``BAD_CHUNK_BUFFER``). Default :data:`BUFFER_DIM` = 49, the chosen
        dataflow (``nms.sw.dataflow.CHOSEN``: Fashion-MNIST's 28×28 images 4×4-pooled to 7×7).
    cand_tile : int
        P, candidates per query-memory row read of the distance engine, 1..16 (``> 1`` needs
        ``buffer_dim > 0``). Default :data:`CAND_TILE` = 4, the chosen dataflow.
    buffer_banks : int
        Most banks of the chunk buffer, 1..64 (a read touches only its bank). Default
        :data:`BUFFER_BANKS` = 8, the chosen dataflow (C = 1024: 7 banks of 8 KB).
    serial_update : bool
        The embedding's update without multipliers (``DesneDatapath(serial_update=...)``),
        for a small device. Default ``False``.
    serial_pairs : bool
        The embedding's pair units without multipliers (``DesneDatapath(serial_pairs=...)``).
        Default ``False``.
    data_width : int
        AXI4 data width, 32, 64 or 128. Default 64.
    addr_width : int
        AXI4 address width, 13..64. Default 32.
    max_burst : int
        Longest AXI burst in beats (power of two 1..256). Default 256.
    read_fifo : int
        Read data FIFO depth in beats (the read credits), ``>= max_burst``. Default ``2 * max_burst``.
    bus : str
        CSR bus: ``"axi-lite"`` (``s_axil_*``) or ``"wishbone"`` (``wb_*``). Default axi-lite.

    Attributes
    ----------
    m_axi_* : the AXI4 master port; s_axil_* / wb_* : the CSR slave port; irq : Out(1).
    registers : tuple of regmap.Register — the register map (``regmap.REGISTERS``).
    """

    def __init__(self, *, lanes: int = 8, tile: int = 4, elem_width: int = 8, max_dim: int = 1024,
                 k: int = 16, capacity: int = CAPACITY, neg_samples: int = 8, affinity_lanes: int = 4,
                 pair_units: int = 2, fetch_depth: int = 4, buffer_dim: int = BUFFER_DIM,
                 cand_tile: int = CAND_TILE, buffer_banks: int = BUFFER_BANKS,
                 serial_update: bool = False, serial_pairs: bool = False,
                 data_width: int = 64,
                 addr_width: int = 32, max_burst: int = 256, read_fifo: int | None = None,
                 bus: str = "axi-lite"):
        check_data_width(data_width)
        check_int("addr_width", addr_width, 13, 64, "13 to 64 bits")
        if bus not in BUSES:
            raise ValueError(f"bus={bus!r} is not one of {', '.join(BUSES)}")
        if isinstance(buffer_dim, int) and isinstance(max_dim, int) and buffer_dim > max_dim:
            raise ValueError(f"buffer_dim={buffer_dim} exceeds max_dim={max_dim}: give buffer_dim "
                             f"0 (stream the chunk, no pooling unit) or 1..{max_dim} (the "
                             f"default {BUFFER_DIM} is the chosen dataflow's 7x7 pooled images)")
        self.datapath = DesneDatapath(lanes=lanes, tile=tile, elem_width=elem_width,
                                      max_dim=max_dim, k=k, capacity=capacity,
                                      neg_samples=neg_samples, affinity_lanes=affinity_lanes,
                                      pair_units=pair_units, fetch_depth=fetch_depth,
                                      buffer_dim=buffer_dim, cand_tile=cand_tile,
                                      buffer_banks=buffer_banks, serial_update=serial_update,
                                      serial_pairs=serial_pairs)
        dp = self.datapath
        self.vport = AxiVectorPort(lanes=lanes, elem_width=elem_width, max_dim=max_dim,
                                   index_width=dp.index_width, count_width=dp.count_width,
                                   addr_width=addr_width, data_width=data_width,
                                   max_burst=max_burst, fifo_depth=read_fifo)
        self.writer = AxiBurstWriter(addr_width=addr_width, data_width=data_width,
                                     max_burst=max_burst)
        self.packer = ResultPacker(index_layout=dp.index_layout, addr_width=addr_width,
                                   data_width=data_width)
        self.registers = regmap.REGISTERS
        self.csr = CsrBlock(bus=bus, registers=self.registers)
        self.data_width, self.addr_width, self.bus = data_width, addr_width, bus
        self.max_burst = self.writer.max_burst
        self.read_fifo = self.vport.reader.fifo_depth
        self._params = {**dp.parameters, "data_width": data_width, "addr_width": addr_width,
                        "max_burst": max_burst, "read_fifo": self.read_fifo, "bus": bus}
        axi = axi4_signature(addr_width=addr_width, data_width=data_width)
        super().__init__({**_prefixed(axi, "m_axi_"), **self.csr.signature.members,
                          "irq": Out(1)})

    @property
    def parameters(self) -> dict:
        return dict(self._params)

    @property
    def derived(self) -> dict:
        out = dict(self.datapath.derived)
        # the limits a host checks jobs against (nms.rtl.regmap.capabilities: the chunk buffer's
        # depth, pooling), beside the generator parameters
        out["capabilities"] = regmap.capabilities(capacity=self.datapath.capacity,
                                                  lanes=self.datapath.lanes,
                                                  buffer_dim=self.datapath.buffer_dim)
        out.update({"csr_addr_width": self.csr.addr_width,
                    "abort_tail_cycles": ABORT_TAIL_CYCLES,
                    "error_causes": dict(ERROR_CAUSES),
                    "registers": [{"name": r.name, "addr": 4 * i, "access": r.access,
                                   "doc": r.doc, "role": r.role, "timed": r.timed,
                                   "fields": [{"name": n, "lsb": lsb, "width": w}
                                              for n, (lsb, w) in r.offsets().items()]}
                                  for i, r in enumerate(self.registers)]})
        return out

    def elaborate(self, platform):
        m = Module()
        dp, vport, writer, packer, csr = self.datapath, self.vport, self.writer, self.packer, self.csr
        engine_reset = Signal()          # one cycle: ends an aborted job (datapath + AXI engines)
        m.submodules.csr = csr
        m.submodules.datapath = ResetInserter(engine_reset)(dp)
        m.submodules.vport = ResetInserter(engine_reset)(vport)
        m.submodules.writer = ResetInserter(engine_reset)(writer)
        m.submodules.packer = ResetInserter(engine_reset)(packer)

        # ---- ports: CSR slave straight through, AXI: AR/R from the reader, AW/W/B from the writer
        for name, member in csr.signature.members.items():
            if member.flow == In:
                m.d.comb += getattr(csr, name).eq(getattr(self, name))
            else:
                m.d.comb += getattr(self, name).eq(getattr(csr, name))
        for name, member in vport.bus.signature.members.items():
            src = writer.bus if name.startswith(("aw", "w", "b")) else vport.bus  # ar*, r*
            port = getattr(self, f"m_axi_{name}")
            if member.flow == Out:
                m.d.comb += port.eq(getattr(src, name))
            else:
                m.d.comb += getattr(src, name).eq(port)

        f = csr.field

        def rw(reg, fld=None):
            return f(reg, fld).data

        # ---- configuration: every job field of the declaration, from its register field,
        # latched at the start (so register writes while a job runs change only the next job)
        cfg = Signal(config_layout())
        for fld in regmap.JOB_FIELDS:
            m.d.comb += getattr(cfg, fld.key).eq(rw(fld.register, fld.name))
        job = Signal(config_layout())
        addrs = {fld.key: Signal(fld.width, name=f"job_{fld.key}") for fld in regmap.ADDRESS_FIELDS}
        src_addr = Signal(len(rw("SRC_ADDR")))
        m.d.comb += [dp.config.eq(job), vport.src_addr.eq(src_addr),
                     vport.dim.eq(dp.controller.job.dim), packer.dst_addr.eq(addrs["dst_addr"])]
        wiring.connect(m, dp.indices, packer.indices)
        wiring.connect(m, packer.beats, writer.data)
        wiring.connect(m, dp.mem, vport.mem)

        # ---- refusal: the declaration's walk on the latched job (first bad field wins), in the
        # registered steps of the datapath's controller, which repeats it for the job fields
        refusal, check_states = refusal_check(
            m, {**addrs, **{key: getattr(job, key) for key, _ in regmap.job_layout()}},
            dp.refusal_params)   # the capabilities the job ranges refer to

        start = f("CTRL", "start").w_stb & f("CTRL", "start").w_data
        abort_req = f("CTRL", "abort").w_stb & f("CTRL", "abort").w_data
        clear_error = f("CTRL", "clear_error").w_stb & f("CTRL", "clear_error").w_data

        busy, done = Signal(), Signal()
        counted = Signal()   # the counters hold an accepted job's values (0 after a refusal)
        cause = Signal(regmap.CAUSE_BITS)
        irq_done, irq_error = Signal(), Signal()     # one-cycle job-end events
        cycles = Signal(48)
        count = Signal(32)
        wcmd_pending = Signal()
        m.d.comb += writer.cmd.valid.eq(wcmd_pending)
        with m.If(writer.cmd.ready):
            m.d.sync += wcmd_pending.eq(0)
        addr, beats = packer.transfer(m, job.budget)
        m.d.comb += [writer.cmd.payload.addr.eq(addr), writer.cmd.payload.beats.eq(beats)]

        axi_cause = Mux(vport.error, ERROR_CAUSES["AXI_READ_ERROR"], ERROR_CAUSES["AXI_WRITE_ERROR"])
        axi_error = vport.error | writer.error
        aborting = Signal()
        m.d.comb += [vport.abort.eq(aborting), writer.abort.eq(aborting)]

        # a start while busy only records its cause; CTRL.clear_error clears it. Both come before
        # the FSM, so a refusal or an AXI error decided in the same cycle wins
        with m.If(start & busy & (cause == 0)):
            m.d.sync += cause.eq(ERROR_CAUSES["START_WHILE_BUSY"])
        with m.If(clear_error & ~start):
            m.d.sync += cause.eq(0)
        abort_seen = Signal()   # CTRL.abort during the check: the job ends before it starts
        with m.FSM(name="job"):
            with m.State("IDLE"):
                with m.If(start):
                    m.d.sync += [job.eq(cfg), src_addr.eq(rw("SRC_ADDR")),
                                 *[addrs[f_.key].eq(rw(f_.register, f_.name))
                                   for f_ in regmap.ADDRESS_FIELDS],
                                 cause.eq(0), done.eq(0), busy.eq(1), counted.eq(0),
                                 abort_seen.eq(0), cycles.eq(0), count.eq(0)]
                    m.next = check_states[0]
            for state, following in zip(check_states, check_states[1:] + ["DECIDE"]):
                with m.State(state):
                    with m.If(abort_req):
                        m.d.sync += abort_seen.eq(1)
                    m.next = following
            with m.State("DECIDE"):
                with m.If((refusal != 0) | abort_seen | abort_req):
                    m.d.sync += [busy.eq(0), done.eq(1)]
                    m.d.comb += irq_error.eq(1)
                    with m.If(refusal != 0):     # a refusal wins over a start while busy
                        m.d.sync += cause.eq(refusal)
                    with m.Elif((cause == 0) | (cause == ERROR_CAUSES["START_WHILE_BUSY"])):
                        m.d.sync += cause.eq(ERROR_CAUSES["ABORTED"])
                    m.next = "IDLE"
                with m.Else():
                    m.d.sync += [counted.eq(1), wcmd_pending.eq(1)]
                    m.d.comb += [dp.start.eq(1), packer.start.eq(1), vport.clear.eq(1),
                                 writer.clear.eq(1)]
                    m.next = "RUN"
            with m.State("RUN"):
                m.d.sync += cycles.eq(cycles + 1)
                with m.If(axi_error | abort_req):
                    m.d.sync += aborting.eq(1)
                    with m.If(axi_error | (cause == 0) | (cause == ERROR_CAUSES["START_WHILE_BUSY"])):
                        m.d.sync += cause.eq(Mux(axi_error, axi_cause, ERROR_CAUSES["ABORTED"]))
                    m.next = "ABORT"
                with m.Elif(dp.done & ~dp.busy & ~wcmd_pending & writer.idle
                            & (writer.beats_written == beats)):
                    m.d.sync += [busy.eq(0), done.eq(1)]
                    m.d.comb += irq_done.eq(1)
                    m.next = "IDLE"
            with m.State("ABORT"):
                m.d.sync += cycles.eq(cycles + 1)
                with m.If(vport.idle & writer.idle):
                    m.next = "RESET"
            with m.State("RESET"):
                m.d.comb += [engine_reset.eq(1), irq_error.eq(1)]
                m.d.sync += [aborting.eq(0), busy.eq(0), done.eq(1), wcmd_pending.eq(0)]
                m.next = "IDLE"
        with m.If(dp.indices.valid & dp.indices.ready):
            m.d.sync += count.eq(count + 1)

        # ---- status, interrupt, counters --------------------------------------------------------
        status = {"busy": busy, "done": done, "error": cause != 0, "cause": cause}
        axi_read = Signal(48)
        m.d.comb += axi_read.eq(vport.beats_read * (self.data_width // 8))
        sources = {"ID": C(regmap.ID_MAGIC, 32), "RESULT_COUNT": count, "CYCLES": cycles,
                   "BYTES_READ": dp.perf.bytes_read, "BYTES_WRITTEN": count * 4,
                   "AXI_BYTES_READ": axi_read, "AXI_BYTES_WRITTEN": count * 4}
        for counter in regmap.PERF_COUNTERS:
            if counter.register is not None:
                sources[counter.register] = getattr(dp.perf, counter.name)
        for reg in self.registers:
            if reg.access != "r":
                continue
            for fld in reg.fields:
                if reg.name == "STATUS":
                    if fld.name not in status:
                        raise ValueError(f"STATUS.{fld.name} has no source in the device")
                    value = status[fld.name]
                elif reg.role in ("counter", "result"):
                    # every start while idle clears the counters, a refused one too (the
                    # datapath's own counters restart only with an accepted job)
                    value = Mux(counted, self._counter_source(sources, reg.name), 0)
                else:
                    value = self._counter_source(sources, reg.name)
                m.d.comb += f(reg.name, fld.name).r_data.eq(value[:fld.width])
        en_done, en_error = rw("IRQ_ENABLE", "done"), rw("IRQ_ENABLE", "error")
        st_done, st_error = f("IRQ_STATUS", "done"), f("IRQ_STATUS", "error")
        m.d.comb += [st_done.set.eq(irq_done), st_error.set.eq(irq_error),
                     self.irq.eq((st_done.data & en_done) | (st_error.data & en_error))]
        return m

    @staticmethod
    def _counter_source(sources, name):
        if name in sources:
            return sources[name]
        for suffix, lo in (("_LO", 0), ("_HI", 32)):
            if name.endswith(suffix) and name[:-len(suffix)] in sources:
                return sources[name[:-len(suffix)]][lo:lo + 32]
        raise ValueError(f"read-only register {name} has no source in the device")


def host_files(metadata: dict) -> dict:
    """``<top>_regs.h`` (the C constants) and ``<top>_registers.md`` (the register table): the
    declaration's own renderings (:func:`nms.rtl.regmap.host_constants`,
    :func:`nms.rtl.regmap.markdown`), so the files next to the Verilog are the committed ones."""
    top = metadata["top"]
    if [r["name"] for r in metadata["derived"]["registers"]] != [r.name for r in regmap.REGISTERS]:
        raise ValueError(f"{top}: the metadata's register map is not the declaration's")
    return {f"{top}_regs.h": regmap.host_constants("c"),
            f"{top}_registers.md": regmap.markdown()}
