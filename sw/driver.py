"""Host driver: run a DE-SNE sampling job on the near-memory accelerator through a transport.

The driver speaks only registers and memory (``nms.rtl.regmap`` declares the registers, their
ranges and the error causes once), so every backend is a :class:`Transport` with the same
operations — register read/write, memory read/write, and waiting for the job — and callers never
change when a backend is swapped:

* ``model`` — :class:`ModelDevice`, the bit-exact model behind the register interface (no
  simulator). It refuses, reports, interrupts and latches exactly as the declaration says (the
  RTL job controller walks the same declaration), and computes every counter the declaration
  does not mark *timed* by the same formulas as the RTL (:func:`contract_counters`).
* ``rtl`` — the Verilated device top in the fast simulation (``nms.sw.transport_rtl``);
* ``fpga`` — a job board over a serial line (``nms.sw.transport_serial``).

Data layout in the device's DDR: the data set is stored per class, classes in sorted label order,
members in their original order, one row-major uint8 vector after another; each on-chip chunk is a
contiguous slice of it. Results (selected local indices, u32) are written to a result area.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, field

import numpy as np

from nms.rtl import fixedpoint as fp
from nms.rtl import regmap
from nms.rtl.params import BUFFER_BANKS, BUFFER_DIM, CAND_TILE, CAPACITY
from nms.sw.dataflow import rtl_counters
from nms.sw.transport import DeviceBusyError, DeviceError, JobRefusedError, Transport
from nms.verif.models import desne
from nms.verif.models.pool import POOL_NAMES, check_image, default_pool

__all__ = ["DeviceError", "DeviceBusyError", "JobRefusedError", "Transport", "ModelDevice",
           "Driver", "JobCounters", "TRANSPORTS", "contract_counters", "read_counters"]

_STATUS = regmap.REGMAP["STATUS"]
_CTRL = regmap.REGMAP["CTRL"]
_IRQ = regmap.REGMAP["IRQ_STATUS"]
_MASK32 = (1 << 32) - 1


def contract_counters(job: dict[str, int], src: int, *, k: int, neg_samples: int, tile: int,
                      lanes: int, data_width: int, buffer_dim: int = 0,
                      cand_tile: int = 1) -> dict[str, int]:
    """Every untimed counter register of a job that ends cleanly, by the RTL's dataflow.

    The datapath reads, per query tile ``base = 0, T, 2T ...``, the ``q = min(T, N - base)``
    query vectors at ``base`` and then the whole chunk (padding queries touch no memory); the
    AXI read master turns each of those requests into whole bus beats over its beat-aligned
    byte range; the embedding issues ``kk + S`` pairs (``S`` repulsive) per point and iteration
    (``docs/rtl-datapath.md``, ``docs/device.md``). ``job``: the declared job fields, ``src``:
    ``SRC_ADDR``. Returns register name -> value (``_LO``/``_HI`` words split).
    With ``buffer_dim > 0`` (the chunk-buffer datapath, ``docs/energy.md`` §6) the chunk is read
    once, one request for all N vectors; ``cand_tile`` (P) candidates share a query-memory
    row read. The datapath counters are
    :func:`nms.sw.dataflow.rtl_counters` (the one place their formulas are written).
    """
    n, dim, budget = job["n"], job["dim"], job["budget"]
    beat = data_width // 8

    def axi_bytes(first: int, count: int) -> int:
        start = src + first * dim
        return -(-(start % beat + count * dim) // beat) * beat

    if buffer_dim:
        axi_read = axi_bytes(0, n)
    else:
        axi_read = sum(axi_bytes(base, min(tile, n - base)) + axi_bytes(0, n)
                       for base in range(0, n, tile))
    dp = rtl_counters(n=n, dim=dim, budget=budget, n_iter=job["n_iter"], k=k,
                      neg_samples=neg_samples, tile=tile, lanes=lanes, buffer=bool(buffer_dim),
                      pool=job["pool"], cand_tile=cand_tile)
    values = {"RESULT_COUNT": budget, "BYTES_READ": dp["bytes_read"],
              "BYTES_WRITTEN": 4 * budget, "AXI_BYTES_READ": axi_read,
              "AXI_BYTES_WRITTEN": 4 * budget,
              **{f"PERF_{key.upper()}": v for key, v in dp.items()
                 if key not in ("bytes_read", "bytes_written")}}
    out = {}
    for r in regmap.REGISTERS:
        if r.role not in ("counter", "result") or r.timed:
            continue
        word, shift = r.name, 0
        if word not in values and word[-3:] in ("_LO", "_HI"):
            word, shift = word[:-3], 0 if word.endswith("_LO") else 32
        if word not in values:   # a counter declared without its formula here breaks the contract
            raise AssertionError(f"untimed counter {r.name} has no model formula")
        out[r.name] = (values[word] >> shift) & _MASK32
    return out


def read_counters(t: "Transport") -> dict[str, int]:
    """Every counter of the last job on ``t`` (``_LO``/``_HI`` pairs joined: ``CYCLES``, ...);
    timed counters only where the backend has them (:attr:`Transport.has_cycle_counter`)."""
    out: dict[str, int] = {}
    for r in regmap.REGISTERS:
        if r.role not in ("counter", "result") or (r.timed and not t.has_cycle_counter):
            continue
        if r.name.endswith("_HI"):
            continue
        value = t.read_reg(r.name)
        if r.name.endswith("_LO"):
            value |= t.read_reg(r.name[:-3] + "_HI") << 32
            out[r.name[:-3]] = value
        else:
            out[r.name] = value
    return out


class ModelDevice(Transport):
    """The bit-exact DE-SNE model behind the accelerator's register interface.

    Follows the rules of ``docs/registers.md``: a START while idle latches the job registers,
    clears the status and checks the job with :func:`nms.rtl.regmap.refusal` — a refused job
    ends at once (``done``, ``error``, the field's cause; never ``busy``; the RTL is busy for
    its check's few cycles, so hosts wait for ``busy`` low after every start). An accepted job runs
    in a worker thread, so the device is really busy meanwhile; ``job_delay_s`` adds latency
    before completion. A START while busy is ignored and reports ``START_WHILE_BUSY``; parameter
    writes while busy change only the next job. A job whose reads (writes) fall outside the
    ``mem_size`` bytes of device memory ends with ``AXI_READ_ERROR`` (``AXI_WRITE_ERROR``), as a
    bus error response would end it on the device.

    ``CTRL.abort`` while busy ends the job with ``ABORTED``; the model writes no result then
    (the RTL writes results last, so only an abort in its final output phase leaves some); the
    results and counters of an aborted job are not part of the contract (the RTL's counters
    hold how far it got, the model's are 0). A job's end sets ``IRQ_STATUS.done`` (clean) or
    ``.error`` (refused, failed or aborted), write 1 to clear; :attr:`irq` is the level the
    device's ``irq`` output would have. A clean job's counters are those of :func:`contract_counters` (the same as the RTL's, exactly); the
    *timed* ones (cycles, stalls, stage windows) read 0 here. ``lanes`` and ``data_width`` are
    the device's (datapath lanes, AXI data width): they fix the beat counters.

    ``buffer_dim`` and ``cand_tile`` are ``NmsAccelerator``'s: by default the device top's
    (the chosen dataflow: chunk buffer of ``capacity · ceil(49 / lanes)`` words with the pooling
    unit, P = 4); ``buffer_dim=0`` models the streamed datapath (``cand_tile`` must be 1).
    :meth:`from_hw` models a given build.
    """

    name = "model"

    def __init__(self, *, capacity: int = CAPACITY, max_dim: int = 1024, k: int = 16,
                 neg_samples: int = 8, tile: int = 4, lanes: int = 8, data_width: int = 64,
                 job_delay_s: float = 0.0, mem_size: int = 1 << 32,
                 buffer_dim: int = BUFFER_DIM, cand_tile: int = CAND_TILE,
                 buffer_banks: int = BUFFER_BANKS):
        p = regmap.check_params({"capacity": capacity, "max_dim": max_dim, "k": k,
                                 "neg_samples": neg_samples, "tile": tile}, owner="ModelDevice")
        self.capacity, self.max_dim, self.k = p["capacity"], p["max_dim"], p["k"]
        self.neg_samples, self.tile = p["neg_samples"], p["tile"]
        if isinstance(lanes, bool) or not isinstance(lanes, int) or not 1 <= lanes <= 64 \
                or lanes & (lanes - 1):
            raise ValueError(f"ModelDevice.lanes must be a power of two in [1, 64], not {lanes!r}")
        if data_width not in (32, 64, 128) or isinstance(data_width, bool):
            raise ValueError(f"ModelDevice.data_width must be 32, 64 or 128, not {data_width!r}")
        self.lanes, self.data_width = lanes, data_width
        if isinstance(buffer_dim, bool) or not isinstance(buffer_dim, int) \
                or not 0 <= buffer_dim <= self.max_dim:
            raise ValueError(f"ModelDevice.buffer_dim must be an int in [0, max_dim="
                             f"{self.max_dim}] (0: no chunk buffer, the streamed datapath), not {buffer_dim!r}"
                             + (" (the default, the chosen dataflow's)" if buffer_dim == BUFFER_DIM
                                else ""))
        self.buffer_dim = buffer_dim   # as DesneDatapath(buffer_dim=...): buffer + pooling unit
        if isinstance(cand_tile, bool) or not isinstance(cand_tile, int) \
                or not 1 <= cand_tile <= 16 or (cand_tile > 1 and not buffer_dim):
            raise ValueError(f"ModelDevice.cand_tile must be an int in [1, 16] (> 1 only with "
                             f"buffer_dim > 0), not {cand_tile!r} (buffer_dim={buffer_dim})")
        self.cand_tile = cand_tile
        if isinstance(buffer_banks, bool) or not isinstance(buffer_banks, int) \
                or not 1 <= buffer_banks <= 64:
            raise ValueError(f"ModelDevice.buffer_banks must be an int in [1, 64], not "
                             f"{buffer_banks!r}")
        # no result or counter depends on it; the energy report prices the buffer's banks
        self.buffer_banks = buffer_banks
        if isinstance(mem_size, bool) or not isinstance(mem_size, int) or not 0 < mem_size <= 1 << 32:
            raise ValueError(f"ModelDevice.mem_size must be an int in [1, 2**32], not {mem_size!r}")
        if not job_delay_s >= 0:
            raise ValueError(f"ModelDevice.job_delay_s must be >= 0, not {job_delay_s!r}")
        self.mem_size = mem_size
        self.job_delay_s = float(job_delay_s)
        self.job_timeout_s = 60.0 + self.job_delay_s
        self._regs = {r.name: 0 for r in regmap.REGISTERS}
        self._regs["ID"] = regmap.ID_MAGIC
        self._mem = bytearray()
        self._job: threading.Thread | None = None
        self._abort = threading.Event()
        self._fault: BaseException | None = None
        self._lock = threading.Lock()

    #: ``NmsAccelerator`` parameters the model takes (the others do not change a result or an
    #: untimed counter)
    HW_KEYS = ("capacity", "max_dim", "k", "neg_samples", "tile", "lanes", "data_width",
               "buffer_dim", "cand_tile", "buffer_banks")

    @classmethod
    def from_hw(cls, hw: dict, **kwargs) -> "ModelDevice":
        """The model of the top built with ``NmsAccelerator(**hw)`` (missing keys: the top's
        defaults); ``kwargs``: ``job_delay_s``, ``mem_size``."""
        return cls(**{key: hw[key] for key in cls.HW_KEYS if key in hw}, **kwargs)

    # -- memory -------------------------------------------------------------------------------
    def _in_memory(self, addr: int, size: int) -> bool:
        return 0 <= addr and size >= 0 and addr + size <= self.mem_size

    def write_mem(self, addr: int, data: bytes) -> None:
        if not self._in_memory(addr, len(data)):
            raise DeviceError(f"write of {len(data)} bytes at 0x{addr:x} is outside the "
                              f"{self.mem_size} bytes of device memory")
        end = addr + len(data)
        if end > len(self._mem):
            self._mem.extend(bytes(end - len(self._mem)))
        self._mem[addr:end] = data

    def read_mem(self, addr: int, size: int) -> bytes:
        if not self._in_memory(addr, size):
            raise DeviceError(f"read of {size} bytes at 0x{addr:x} is outside the "
                              f"{self.mem_size} bytes of device memory")
        data = bytes(self._mem[addr:addr + size])
        return data + bytes(size - len(data))   # never written: reads as zero

    # -- registers ------------------------------------------------------------------------------
    @staticmethod
    def _reg(name: str) -> regmap.Register:
        reg = regmap.REGMAP.get(name)
        if reg is None:
            raise DeviceError(f"model: no register {name!r} in the device's map")
        return reg

    def read_reg(self, name: str) -> int:
        reg = self._reg(name)
        with self._lock:
            return 0 if reg.access == "w1s" else self._regs[name]

    @property
    def irq(self) -> bool:
        """The device's level interrupt: ``|(IRQ_STATUS & IRQ_ENABLE)``."""
        with self._lock:
            return bool(self._regs["IRQ_STATUS"] & self._regs["IRQ_ENABLE"])

    def write_reg(self, name: str, value: int) -> None:
        reg = self._reg(name)
        if reg.access == "r":
            raise DeviceError(f"register {name} is read-only")
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < (1 << regmap.DATA_WIDTH):
            raise ValueError(f"register {name}: value {value!r} is not a 32-bit unsigned integer")
        with self._lock:
            if reg.access == "w1c":
                self._regs[name] &= ~value
                return
            if name != "CTRL":
                self._regs[name] = value   # latched at START: a running job never sees it
                return
            ctrl = reg.unpack(value)
            if ctrl["abort"] and self._status()["busy"] and not self._abort.is_set():
                # as the RTL: ABORTED replaces no cause or START_WHILE_BUSY; the job ends
                # without writing results (the worker checks the flag); ignored while idle
                if self._status()["cause"] in (0, regmap.CAUSE["START_WHILE_BUSY"].code):
                    self._set_status(error=1, cause=regmap.CAUSE["ABORTED"].code)
                self._abort.set()
            if ctrl["clear_error"]:
                self._set_status(error=0, cause=0)
            if ctrl["start"]:
                self._start()

    def _status(self) -> dict[str, int]:
        return _STATUS.unpack(self._regs["STATUS"])

    def _set_status(self, **fields) -> None:
        self._regs["STATUS"] = _STATUS.pack(**{**self._status(), **fields})

    def _fail(self, cause: str) -> None:
        """Record an error; the first cause since the last clear is kept (caller holds the lock)."""
        st = self._status()
        self._set_status(error=1, cause=st["cause"] or regmap.CAUSE[cause].code)

    def _end(self, *, error: bool) -> None:
        """The job ends: not busy, done, and its interrupt event (caller holds the lock)."""
        self._set_status(busy=0, done=1)
        self._regs["IRQ_STATUS"] |= _IRQ.pack(**({"error": 1} if error else {"done": 1}))

    def _start(self) -> None:
        if self._status()["busy"]:
            self._fail("START_WHILE_BUSY")   # the running job is not disturbed
            return
        job = regmap.unpack_job(self._regs)
        src, dst = self._regs["SRC_ADDR"], self._regs["DST_ADDR"]
        self._regs["STATUS"] = 0             # each start while idle begins with a clean status
        for r in regmap.REGISTERS:           # and with zeroed counters, as the RTL's perf
            if r.role in ("result", "counter"):
                self._regs[r.name] = 0
        self._fault = None
        self._abort.clear()
        addresses = {f.key: self._regs[f.register] for f in regmap.ADDRESS_FIELDS}
        refused = regmap.refusal({**addresses, **job}, self.params)
        if refused is not None:   # nothing read, nothing written
            self._set_status(error=1, cause=refused.cause.code)
            self._end(error=True)
            return
        self._set_status(busy=1)
        self._job = threading.Thread(target=self._run_job, args=(job, src, dst), daemon=True)
        self._job.start()

    def wait(self, timeout_s: float | None = None) -> None:
        timeout_s = self.job_timeout_s if timeout_s is None else timeout_s
        if self._job is not None:
            self._job.join(timeout_s)
            if self._job.is_alive():
                raise DeviceError(f"{self.name}: job still busy after {timeout_s:g} s "
                                  f"(STATUS={self._status()})")
        super().wait(timeout_s)   # the worker has ended: STATUS is final
        if self._fault is not None:
            raise DeviceError(f"{self.name}: the model failed inside the job: "
                              f"{self._fault!r}") from self._fault

    def _config(self, job: dict) -> desne.DesneConfig:
        search = {c: s for s, c in regmap.SEARCH_CODES.items()}[job["search"]]
        allocation = {c: a for a, c in regmap.ALLOCATION_CODES.items()}[job["allocation"]]
        exemplar = {c: a for a, c in regmap.EXEMPLAR_CODES.items()}[job["exemplar"]]
        cover_start = {c: a for a, c in regmap.COVER_START_CODES.items()}[job["cover_start"]]
        # the device works from the entropy target itself; the perplexity only has to validate
        return desne.DesneConfig(
            k=self.k, perplexity=float(self.k), search=search, n_iter=job["n_iter"],
            exaggeration_iters=job["exaggeration_iters"],
            exaggeration_shift=job["exaggeration_shift"], learning_rate=job["learning_rate"],
            momentum_early=job["momentum_early"], momentum_late=job["momentum_late"],
            momentum_switch=job["momentum_switch"], neg_samples=self.neg_samples,
            capacity=self.capacity, allocation=allocation, exemplar=exemplar,
            cover_start=cover_start,
            pool={c: a for a, c in regmap.FIELDS["OPT.pool"].code_map.items()}[job["pool"]])

    def _run_job(self, job: dict, src: int, dst: int) -> None:
        try:
            self._compute(job, src, dst)
        except BaseException as exc:   # never leave STATUS.busy set: report, and re-raise in wait
            with self._lock:
                self._fault = exc
                self._set_status(error=1)
                self._end(error=True)

    def _compute(self, job: dict, src: int, dst: int) -> None:
        if self.job_delay_s:
            self._abort.wait(self.job_delay_s)
        with self._lock:
            if self._abort.is_set():
                self._end(error=True)
                return
        n, dim, budget = job["n"], job["dim"], job["budget"]
        if not self._in_memory(src, n * dim):
            with self._lock:
                self._fail("AXI_READ_ERROR")
                self._end(error=True)
            return
        X = np.frombuffer(self.read_mem(src, n * dim), dtype=np.uint8).reshape(n, dim)
        res = desne.run_chunk(X.astype(np.int64), budget, self._config(job), job["seed"],
                              target=job["h_target"], img_w=job["img_w"] or None)
        sel = res["selected"].astype("<u4")
        if not self._in_memory(dst, 4 * budget):
            with self._lock:
                self._fail("AXI_WRITE_ERROR")
                self._end(error=True)
            return
        with self._lock:
            if self._abort.is_set():   # the RTL writes the results last: none of them now
                self._end(error=True)
                return
        self.write_mem(dst, sel.tobytes())
        counters = contract_counters(job, src, k=self.k, neg_samples=self.neg_samples,
                                     tile=self.tile, lanes=self.lanes, data_width=self.data_width,
                                     buffer_dim=self.buffer_dim, cand_tile=self.cand_tile)
        with self._lock:
            self._regs.update(counters)
            # a refused second START leaves its error visible next to done; the interrupt
            # says how the job itself ended (cleanly)
            self._end(error=False)


def _rtl_transport(**kwargs):
    """The Verilated top in the fast simulation (``nms.sw.transport_rtl``; imported on use)."""
    from nms.sw.transport_rtl import RtlTransport

    return RtlTransport(**kwargs)


def _fpga_transport(**kwargs):
    """A job board over a serial line, uartbone frames (``nms.sw.transport_serial``; on use)."""
    from nms.sw.transport_serial import SerialTransport

    return SerialTransport(**kwargs)


TRANSPORTS = {"model": ModelDevice, "rtl": _rtl_transport, "fpga": _fpga_transport}


@dataclass
class JobCounters:
    """Counters summed over the jobs of a selection.

    ``registers``: every counter register the backend has (:func:`read_counters`: ``CYCLES``,
    ``BYTES_READ``, ``AXI_BYTES_READ``, ``PERF_*`` ...), summed over the jobs; ``timed``: whether
    the timed ones (cycles, stage windows) are among them. ``cycles``: ``CYCLES`` where the
    backend counts clock cycles, else ``None``.
    """

    chunks: int = 0
    near_bytes_read: int = 0
    near_bytes_written: int = 0
    cycles: int | None = None
    seconds: float = 0.0
    timed: bool = False
    registers: dict = field(default_factory=dict)

    def add(self, values: dict[str, int], *, timed: bool) -> None:
        self.chunks += 1
        self.timed = timed
        for name, v in values.items():
            self.registers[name] = self.registers.get(name, 0) + v
        self.near_bytes_read += values["BYTES_READ"]
        self.near_bytes_written += values["BYTES_WRITTEN"]
        if timed:
            self.cycles = (self.cycles or 0) + values["CYCLES"]

    def as_dict(self) -> dict:
        return {**self.__dict__, "registers": dict(self.registers)}


class Driver:
    """Run DE-SNE sampling jobs on one accelerator through ``transport``.

    Parameters
    ----------
    transport : Transport
        The backend (see ``TRANSPORTS``).
    config : DesneConfig, optional
        Algorithm parameters; ``k``, ``neg_samples`` and ``capacity`` must match the device.
    timeout_s : float, optional
        Longest wait for one job (default: the transport's ``job_timeout_s``).
    """

    RESULT_ADDR_ALIGN = 4096

    def __init__(self, transport: Transport, config: desne.DesneConfig | None = None, *,
                 timeout_s: float | None = None):
        self.t = transport
        cfg = config or desne.DesneConfig(k=transport.k, neg_samples=transport.neg_samples,
                                          capacity=transport.capacity)
        for name in ("k", "neg_samples", "capacity"):
            if getattr(cfg, name) != getattr(transport, name):
                raise ValueError(f"config.{name}={getattr(cfg, name)} does not match the device's "
                                 f"{name}={getattr(transport, name)} (fixed when it was generated)")
        if timeout_s is not None and not timeout_s > 0:
            raise ValueError(f"timeout_s must be > 0, not {timeout_s!r}")
        self.config = cfg
        self.timeout_s = timeout_s
        if self.t.read_reg("ID") != regmap.ID_MAGIC:
            raise DeviceError(f"{transport.name}: no NMS accelerator answers (bad ID register)")

    def job_values(self, n: int, dim: int, budget: int, seed: int,
                   pool: str | None = None) -> dict[str, int]:
        """The job fields (``nms.rtl.regmap`` keys) for one chunk under :attr:`config`
        (``pool``: the job's pooling, default ``config.pool``)."""
        c = self.config if pool is None else self.config.replace(pool=pool)
        return {"n": n, "dim": dim, "budget": budget,
                "h_target": fp.entropy_target(c.perplexity), "n_iter": c.n_iter,
                "exaggeration_iters": c.exaggeration_iters,
                "learning_rate": c.learning_rate, "exaggeration_shift": c.exaggeration_shift,
                "allocation": regmap.ALLOCATION_CODES[c.allocation],
                "search": regmap.SEARCH_CODES[c.search],
                "exemplar": regmap.check_code("OPT.exemplar", c.exemplar, owner="DesneConfig"),
                "cover_start": regmap.COVER_START_CODES[c.cover_start],
                # pooling (a device without the pooling unit refuses pool != 0 at start)
                "pool": regmap.check_code("OPT.pool", c.pool, owner="DesneConfig"),
                "img_w": math.isqrt(dim) if c.pool != "none" else 0,
                "momentum_early": c.momentum_early, "momentum_late": c.momentum_late,
                "momentum_switch": c.momentum_switch, "seed": seed & fp.MASK32}

    def program(self, job: dict[str, int], src: int, dst: int) -> None:
        """Write the job registers (every field of ``job``) and the source / result addresses."""
        self.t.write_reg("SRC_ADDR", src)
        self.t.write_reg("DST_ADDR", dst)
        for name, word in regmap.pack_job(job).items():
            self.t.write_reg(name, word)

    def start(self) -> None:
        """Start the programmed job; refuses (DeviceBusyError) while a job runs."""
        if _STATUS.unpack(self.t.read_reg("STATUS"))["busy"]:
            raise DeviceBusyError(f"{self.t.name}: start while busy — wait for the running job first")
        self.t.write_reg("CTRL", _CTRL.pack(clear_error=1, start=1))

    def check_status(self, job: dict[str, int]) -> dict[str, int]:
        """Read STATUS after a job; raise naming the cause (and the field and value, for a
        refusal) if the device reports an error or did not finish."""
        st = _STATUS.unpack(self.t.read_reg("STATUS"))
        if st["error"]:
            cause = regmap.CAUSE_BY_CODE.get(st["cause"])
            text = regmap.explain(st["cause"], job, self.t.params)
            if cause is not None and cause.field is not None:
                raise JobRefusedError(f"{self.t.name}: job refused: {text}", cause, cause.field,
                                      job.get(regmap.FIELDS[cause.field].key))
            if cause is not None and cause.rule is not None:   # a job rule (image, buffer fit)
                rule = next(r for r in regmap.JOB_RULES if r.name == cause.rule)
                raise JobRefusedError(f"{self.t.name}: job refused: {text}", cause,
                                      rule.qualname, job.get(rule.key))
            raise DeviceError(f"{self.t.name}: job failed: {text}")
        if st["busy"] or not st["done"]:
            raise DeviceError(f"{self.t.name}: job did not finish (STATUS={st})")
        return st

    def run_job(self, job: dict[str, int], src: int, dst: int) -> dict[str, int]:
        """Program, start and wait for one job given as register fields; returns STATUS.

        Raises :class:`JobRefusedError` (naming the field, its value and the allowed range) if
        the device refuses the job, :class:`DeviceError` for any other error.
        """
        self.program(job, src, dst)
        self.start()
        self.t.wait(self.timeout_s)
        return self.check_status({**job, "src_addr": src, "dst_addr": dst})

    def resolve_pool(self, dim: int, pool: str | None = None) -> str:
        """The pooling of the jobs of a data set of ``dim``-element vectors.

        ``pool`` (``"none"``, ``"pool2"``, ``"pool4"``) if given; else :attr:`config`'s pool if
        it chooses one (not ``"none"``); else the data set's default,
        :func:`nms.verif.models.pool.default_pool` (Fashion-MNIST 28x28 -> ``"pool4"``, digits
        -> ``"none"``) when the device has the pooling unit, and ``"none"`` on a device without
        it (the streamed datapath). Raises ``ValueError`` naming the value for an unknown name,
        images the window does not fit, or a pooling the device does not implement."""
        if pool is None:
            pool = self.config.pool
            if pool == "none" and self.t.params.get("pool_max", 0):
                pool = default_pool(dim)
        if pool not in POOL_NAMES:
            raise ValueError(f"pool={pool!r} is not one of {', '.join(POOL_NAMES)}")
        check_image(dim, pool)
        pool_max = self.t.params.get("pool_max", 0)
        if POOL_NAMES[pool] > pool_max:
            raise ValueError(f"pool={pool!r}: the {self.t.name} device has no pooling unit "
                             f"(OPT.pool <= {pool_max}; it is built with buffer_dim="
                             f"{self.t.buffer_dim}); use pool='none'")
        return pool

    def chunk_capacity(self, dim: int, pool: str) -> int:
        """The most points per chunk job: the capacity C, and with the chunk buffer no more
        than it holds (``N · ceil(D'/L) <= buffer_depth``, else the device refuses the job with
        ``BAD_CHUNK_BUFFER``): e.g. unpooled 64-D digits at C = 1024, ``buffer_dim`` = 49, L = 8
        -> 896."""
        limit = regmap.buffer_points(self.t.params, dim, POOL_NAMES[pool])
        cap = self.config.capacity if limit is None else min(self.config.capacity, limit)
        if cap < 2:
            raise ValueError(f"the {self.t.name} device's chunk buffer "
                             f"({self.t.params['buffer_depth']} words) holds fewer than 2 "
                             f"vectors of {dim} elements pooled by {pool}")
        return cap

    def run_chunk(self, n, dim, budget, src, dst, seed, counters: JobCounters,
                  pool: str | None = None) -> np.ndarray:
        self.run_job(self.job_values(n, dim, budget, seed, pool), src, dst)
        count = self.t.read_reg("RESULT_COUNT")
        local = np.frombuffer(self.t.read_mem(dst, 4 * count), dtype="<u4").astype(np.int64)
        counters.add(read_counters(self.t), timed=self.t.has_cycle_counter)
        return local

    def select(self, X, y, ratio, *, seed: int = 0, pool: str | None = None, progress=None,
               on_chunk=None) -> dict:
        """DE-SNE selection of a labelled data set; the same result as
        ``nms.verif.models.desne.select`` with ``config.replace(pool=result["pool"],
        capacity=result["chunk_capacity"])``.

        ``pool``: the jobs' pooling (:meth:`resolve_pool`; default: the data set's default
        where the device can pool). Chunks hold at most :meth:`chunk_capacity` points, so no
        job overflows the chunk buffer. Returns the DeepCore-shaped ``{"indices": ...}`` plus
        ``"counters"`` (near-memory bytes read/written, chunks, cycles where the backend counts
        them, seconds), ``"pool"`` and ``"chunk_capacity"``. ``progress`` wraps the iterable
        of chunk jobs (e.g. a progress bar); ``on_chunk(chunk)`` is called after each chunk
        job, while its registers still hold that job's values.
        """
        X, y = desne._check_data(X, y)
        if X.shape[1] > self.t.max_dim:
            raise ValueError(f"vectors have {X.shape[1]} elements; the device takes at most "
                             f"max_dim={self.t.max_dim} (DIM: {regmap.FIELDS['DIM'].range_text()})")
        dim = X.shape[1]
        pool = self.resolve_pool(dim, pool)
        cap = self.chunk_capacity(dim, pool)
        chunks = desne.plan_chunks(y, ratio, cap)
        t0 = time.perf_counter()
        # place the data set in device memory, per class (see module docstring): each chunk is
        # then one contiguous slice starting at vector ``start``
        order = np.concatenate([c.members for c in chunks])
        starts = np.cumsum([0] + [c.members.size for c in chunks])
        self.t.write_mem(0, X[order].astype(np.uint8).tobytes())
        dst = -(-order.size * dim // self.RESULT_ADDR_ALIGN) * self.RESULT_ADDR_ALIGN
        counters = JobCounters()
        picked = []
        jobs = [(c, s) for c, s in zip(chunks, starts) if c.budget > 0]
        for c, start in (progress(jobs) if progress else jobs):
            local = self.run_chunk(c.members.size, dim, c.budget, int(start) * dim, dst,
                                   seed + c.ordinal, counters, pool)
            picked.append(c.members[local])
            if on_chunk is not None:
                on_chunk(c)
        counters.seconds = time.perf_counter() - t0
        return {"indices": np.sort(np.concatenate(picked)).astype(np.int64),
                "counters": counters.as_dict(), "backend": self.t.name, "pool": pool,
                "chunk_capacity": cap}
