"""Host driver: run a DE-SNE sampling job on the near-memory accelerator through a transport.

The driver speaks only registers and memory (``nms.rtl.regmap`` declares the registers once), so
every backend is a :class:`Transport` with the same five operations — register read/write, memory
read/write, and waiting for the job — and callers never change when a backend is swapped:

* ``model`` — :class:`ModelDevice`, the bit-exact model behind the register interface (no
  simulator). Its counters follow the documented dataflow (``docs/architecture.md``).
* RTL simulation (cocotb + Verilator) and FPGA-over-UART transports implement the same class once the
  top level with its CSR block and AXI master exists (see the README's roadmap).

Data layout in the device's DDR: the data set is stored per class, classes in sorted label order,
members in their original order, one row-major uint8 vector after another; each on-chip chunk is a
contiguous slice of it. Results (selected local indices, u32) are written to a result area.
"""

from __future__ import annotations

import threading
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np

from nms.rtl import fixedpoint as fp
from nms.rtl import regmap
from nms.verif.models import desne

__all__ = ["DeviceError", "DeviceBusyError", "Transport", "ModelDevice", "Driver", "TRANSPORTS"]


class DeviceError(RuntimeError):
    """The device reported an error (``STATUS.error``) or did not finish."""


class DeviceBusyError(DeviceError):
    """A job was started while the device was busy; the running job is left untouched."""


class Transport(ABC):
    """Register + memory access to one accelerator instance."""

    name = "abstract"
    #: device parameters the driver must respect (fixed when the hardware is generated)
    capacity: int
    max_dim: int
    k: int
    neg_samples: int
    tile: int
    #: True if CYCLES_* count real clock cycles (RTL simulation, FPGA)
    has_cycle_counter = False

    @abstractmethod
    def read_reg(self, name: str) -> int: ...

    @abstractmethod
    def write_reg(self, name: str, value: int) -> None: ...

    @abstractmethod
    def write_mem(self, addr: int, data: bytes) -> None: ...

    @abstractmethod
    def read_mem(self, addr: int, size: int) -> bytes: ...

    def wait(self, timeout_s: float = 600.0) -> None:
        """Poll STATUS until the job is no longer busy."""
        t0 = time.monotonic()
        status = regmap.REGMAP["STATUS"]
        while status.unpack(self.read_reg("STATUS"))["busy"]:
            if time.monotonic() - t0 > timeout_s:
                raise DeviceError(f"{self.name}: job still busy after {timeout_s} s")
            time.sleep(0.001)


class ModelDevice(Transport):
    """The bit-exact DE-SNE model behind the accelerator's register interface.

    START runs the job in a worker thread, so the device is really busy meanwhile (like hardware
    that finishes some time after START); ``job_delay_s`` adds latency before completion. A second
    START while busy sets ``STATUS.error`` and is ignored: the running job is not disturbed.
    """

    name = "model"

    def __init__(self, *, capacity: int = 1024, max_dim: int = 1024, k: int = 16,
                 neg_samples: int = 8, tile: int = 4, job_delay_s: float = 0.0):
        for pname, v, lo in (("capacity", capacity, 4), ("max_dim", max_dim, 1), ("k", k, 1),
                             ("neg_samples", neg_samples, 1), ("tile", tile, 1)):
            if isinstance(v, bool) or not isinstance(v, int) or v < lo:
                raise ValueError(f"ModelDevice {pname} must be an integer >= {lo}, not {v!r}")
        self.capacity, self.max_dim, self.k = capacity, max_dim, k
        self.neg_samples, self.tile = neg_samples, tile
        self._regs = {r.name: 0 for r in regmap.REGISTERS}
        self._regs["ID"] = regmap.ID_MAGIC
        self._mem = bytearray()
        self._job: threading.Thread | None = None
        self._lock = threading.Lock()
        self.job_delay_s = float(job_delay_s)

    # -- memory -------------------------------------------------------------------------------
    def write_mem(self, addr: int, data: bytes) -> None:
        end = addr + len(data)
        if end > len(self._mem):
            self._mem.extend(bytes(end - len(self._mem)))
        self._mem[addr:end] = data

    def read_mem(self, addr: int, size: int) -> bytes:
        if addr < 0 or addr + size > len(self._mem):
            raise DeviceError(f"read of {size} bytes at 0x{addr:x} is outside device memory")
        return bytes(self._mem[addr:addr + size])

    # -- registers ------------------------------------------------------------------------------
    def read_reg(self, name: str) -> int:
        reg = regmap.REGMAP[name]
        with self._lock:
            return 0 if reg.access == "w1s" else self._regs[name]

    def write_reg(self, name: str, value: int) -> None:
        reg = regmap.REGMAP[name]
        if reg.access == "r":
            raise DeviceError(f"register {name} is read-only")
        if not 0 <= value < (1 << regmap.DATA_WIDTH):
            raise ValueError(f"register {name}: value {value} does not fit in 32 bits")
        status = regmap.REGMAP["STATUS"]
        with self._lock:
            busy = status.unpack(self._regs["STATUS"])["busy"]
            if name == "CTRL":
                if reg.unpack(value)["start"]:
                    if busy:
                        self._regs["STATUS"] |= status.pack(error=1)
                        return
                    self._regs["STATUS"] = status.pack(busy=1)
                    self._job = threading.Thread(target=self._run_job, daemon=True)
                    self._job.start()
                return
            if busy:  # parameters are held stable while a job runs
                self._regs["STATUS"] |= status.pack(error=1)
                return
            self._regs[name] = value

    def wait(self, timeout_s: float = 600.0) -> None:
        if self._job is not None:
            self._job.join(timeout_s)
        super().wait(timeout_s)

    def _config(self) -> tuple[desne.DesneConfig, int]:
        r = self._regs
        it = regmap.REGMAP["ITER"].unpack(r["ITER"])
        opt = regmap.REGMAP["OPT"].unpack(r["OPT"])
        mom = regmap.REGMAP["MOMENTUM"].unpack(r["MOMENTUM"])
        h_target = r["H_TARGET"]
        # the device works from the entropy target itself; the perplexity field only validates
        cfg = desne.DesneConfig(
            k=self.k, perplexity=float(self.k),
            search=[s for s, c in regmap.SEARCH_CODES.items() if c == opt["search"]][0],
            n_iter=it["n_iter"], exaggeration_iters=it["exaggeration_iters"],
            exaggeration_shift=opt["exaggeration_shift"], learning_rate=opt["learning_rate"],
            momentum_early=mom["early"], momentum_late=mom["late"], momentum_switch=mom["switch"],
            neg_samples=self.neg_samples, capacity=self.capacity,
            allocation=[a for a, c in regmap.ALLOCATION_CODES.items() if c == opt["allocation"]][0])
        return cfg, h_target

    def _run_job(self) -> None:
        status = regmap.REGMAP["STATUS"]
        r = self._regs
        n, dim, budget = r["N"], r["DIM"], r["BUDGET"]
        if self.job_delay_s:
            time.sleep(self.job_delay_s)
        if not (2 <= n <= self.capacity and 1 <= dim <= self.max_dim and 1 <= budget <= n):
            with self._lock:
                self._regs["STATUS"] = status.pack(done=1, error=1)
            return
        cfg, h_target = self._config()
        X = np.frombuffer(self.read_mem(r["SRC_ADDR"], n * dim), dtype=np.uint8).reshape(n, dim)
        nbr, dist = desne.knn(X.astype(np.int64), cfg.k)
        # the device receives the target entropy itself (Q8.16), not the perplexity
        aff = desne.affinities(dist, search=cfg.search, target=h_target)
        Y = desne.embed(nbr, aff["P"], cfg, r["SEED"])
        sel = desne.grid_select(Y, budget, cfg.allocation).astype("<u4")
        self.write_mem(r["DST_ADDR"], sel.tobytes())
        # dataflow counters: the query tiles are loaded once, the chunk is streamed once per tile
        tiles = -(-n // self.tile)
        read = n * dim + tiles * n * dim
        r["RESULT_COUNT"] = budget
        r["CYCLES_LO"] = r["CYCLES_HI"] = 0
        r["BYTES_READ_LO"], r["BYTES_READ_HI"] = read & 0xFFFFFFFF, read >> 32
        with self._lock:
            r["BYTES_WRITTEN"] = 4 * budget
            # a refused second START leaves its error flag visible next to done
            r["STATUS"] = status.pack(done=1, error=status.unpack(r["STATUS"])["error"])


TRANSPORTS = {"model": ModelDevice}


@dataclass
class JobCounters:
    chunks: int = 0
    near_bytes_read: int = 0
    near_bytes_written: int = 0
    cycles: int | None = None
    seconds: float = 0.0

    def as_dict(self) -> dict:
        return dict(self.__dict__)


class Driver:
    """Run DE-SNE sampling jobs on one accelerator through ``transport``.

    Parameters
    ----------
    transport : Transport
        The backend (see ``TRANSPORTS``).
    config : DesneConfig, optional
        Algorithm parameters; ``k``, ``neg_samples`` and ``capacity`` must match the device.
    """

    RESULT_ADDR_ALIGN = 4096

    def __init__(self, transport: Transport, config: desne.DesneConfig | None = None):
        self.t = transport
        cfg = config or desne.DesneConfig(k=transport.k, neg_samples=transport.neg_samples,
                                          capacity=transport.capacity)
        for name in ("k", "neg_samples", "capacity"):
            if getattr(cfg, name) != getattr(transport, name):
                raise ValueError(f"config.{name}={getattr(cfg, name)} does not match the device's "
                                 f"{name}={getattr(transport, name)} (fixed when it was generated)")
        self.config = cfg
        if self.t.read_reg("ID") != regmap.ID_MAGIC:
            raise DeviceError(f"{transport.name}: no NMS accelerator answers (bad ID register)")

    def _program(self, n, dim, budget, src, dst, seed) -> None:
        c = self.config
        R = regmap.REGMAP
        self.t.write_reg("SRC_ADDR", src)
        self.t.write_reg("DST_ADDR", dst)
        self.t.write_reg("N", n)
        self.t.write_reg("DIM", dim)
        self.t.write_reg("BUDGET", budget)
        self.t.write_reg("H_TARGET", fp.entropy_target(c.perplexity))
        self.t.write_reg("ITER", R["ITER"].pack(n_iter=c.n_iter, exaggeration_iters=c.exaggeration_iters))
        self.t.write_reg("OPT", R["OPT"].pack(
            learning_rate=c.learning_rate, exaggeration_shift=c.exaggeration_shift,
            allocation=regmap.ALLOCATION_CODES[c.allocation], search=regmap.SEARCH_CODES[c.search]))
        self.t.write_reg("MOMENTUM", R["MOMENTUM"].pack(early=c.momentum_early, late=c.momentum_late,
                                                        switch=c.momentum_switch))
        self.t.write_reg("SEED", seed & fp.MASK32)

    def start(self) -> None:
        """Start the programmed job; refuses (DeviceBusyError) while a job runs."""
        status = regmap.REGMAP["STATUS"]
        if status.unpack(self.t.read_reg("STATUS"))["busy"]:
            raise DeviceBusyError(f"{self.t.name}: start while busy — wait for the running job first")
        self.t.write_reg("CTRL", regmap.REGMAP["CTRL"].pack(start=1))

    def run_chunk(self, n, dim, budget, src, dst, seed, counters: JobCounters) -> np.ndarray:
        self._program(n, dim, budget, src, dst, seed)
        self.start()
        self.t.wait()
        st = regmap.REGMAP["STATUS"].unpack(self.t.read_reg("STATUS"))
        if st["error"] or not st["done"]:
            raise DeviceError(f"{self.t.name}: job failed (STATUS={st})")
        count = self.t.read_reg("RESULT_COUNT")
        local = np.frombuffer(self.t.read_mem(dst, 4 * count), dtype="<u4").astype(np.int64)
        counters.chunks += 1
        counters.near_bytes_read += self.t.read_reg("BYTES_READ_LO") | (self.t.read_reg("BYTES_READ_HI") << 32)
        counters.near_bytes_written += self.t.read_reg("BYTES_WRITTEN")
        if self.t.has_cycle_counter:
            cyc = self.t.read_reg("CYCLES_LO") | (self.t.read_reg("CYCLES_HI") << 32)
            counters.cycles = (counters.cycles or 0) + cyc
        return local

    def select(self, X, y, ratio, *, seed: int = 0, progress=None) -> dict:
        """DE-SNE selection of a labelled data set; same result as ``nms.verif.models.desne.select``.

        Returns the DeepCore-shaped ``{"indices": ...}`` plus ``"counters"`` (near-memory bytes
        read/written, chunks, cycles where the backend counts them, seconds).
        """
        X, y = desne._check_data(X, y)
        if X.shape[1] > self.t.max_dim:
            raise ValueError(f"vectors have {X.shape[1]} elements; the device takes at most {self.t.max_dim}")
        chunks = desne.plan_chunks(y, ratio, self.config.capacity)
        t0 = time.perf_counter()
        # place the data set in device memory, per class (see module docstring): each chunk is
        # then one contiguous slice starting at vector ``start``
        order = np.concatenate([c.members for c in chunks])
        starts = np.cumsum([0] + [c.members.size for c in chunks])
        dim = X.shape[1]
        self.t.write_mem(0, X[order].astype(np.uint8).tobytes())
        dst = -(-order.size * dim // self.RESULT_ADDR_ALIGN) * self.RESULT_ADDR_ALIGN
        counters = JobCounters()
        picked = []
        jobs = [(c, s) for c, s in zip(chunks, starts) if c.budget > 0]
        for c, start in (progress(jobs) if progress else jobs):
            local = self.run_chunk(c.members.size, dim, c.budget, int(start) * dim, dst,
                                   seed + c.ordinal, counters)
            picked.append(c.members[local])
        counters.seconds = time.perf_counter() - t0
        return {"indices": np.sort(np.concatenate(picked)).astype(np.int64),
                "counters": counters.as_dict(), "backend": self.t.name}
