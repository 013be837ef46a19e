"""``Driver(backend="rtl")``: the Verilated ``NmsAccelerator`` top as a :class:`Transport`.

Every register access is a real CSR transaction of the simulated AXI4-Lite (or Wishbone) slave,
memory is the C++ AXI4 memory model the top's AXI master reads and writes, and :meth:`wait`
runs the simulation until the level ``irq`` rises (``IRQ_ENABLE`` is set once at start-up,
``IRQ_STATUS`` cleared just before each ``CTRL.start``, so after :meth:`wait` it says how the
job ended, as on the model backend). See :mod:`nms.verif.sim.fastsim`.

The first use of a hardware configuration builds the library (Verilator + C++, minutes on two
cores); later uses find it in the cache.
"""

from __future__ import annotations

import time

from nms.rtl import regmap
from nms.rtl.params import BUFFER_BANKS, BUFFER_DIM, CAND_TILE, CAPACITY
from nms.sw.transport import DeviceError, Transport
from nms.verif.sim.fastsim import FastSim, FastSimError

__all__ = ["RtlTransport", "DEFAULT_HW"]

#: the default simulated build: the generator defaults of ``nms generate --block top`` — the
#: chosen dataflow (chunk buffer ``buffer_dim`` = 49 with the pooling unit, P = ``cand_tile`` = 4),
#: C = 1024, vectors up to 1024 elements (digits and Fashion-MNIST fit), 64-bit AXI
DEFAULT_HW = {"lanes": 8, "tile": 4, "elem_width": 8, "max_dim": 1024, "k": 16,
              "capacity": CAPACITY, "neg_samples": 8, "affinity_lanes": 4, "pair_units": 2,
              "buffer_dim": BUFFER_DIM, "cand_tile": CAND_TILE, "buffer_banks": BUFFER_BANKS,
              "data_width": 64, "max_burst": 256, "bus": "axi-lite"}


class RtlTransport(Transport):
    """The RTL top in the fast simulation, behind the driver's five operations.

    Parameters
    ----------
    capacity, max_dim, k, neg_samples, tile : int
        Generator parameters of the simulated top (defaults: :data:`DEFAULT_HW`).
    hw : dict, optional
        Further ``NmsAccelerator`` parameters (``lanes``, ``buffer_dim``, ``cand_tile``,
        ``data_width``, ``bus`` ...); the chunk buffer's limits the host checks jobs against
        follow from them (:attr:`params`).
    mem_size : int
        Bytes of simulated DDR (default 64 MiB).
    latency : int
        Memory latency in cycles (AR -> first R beat, last W -> B). Default 20.
    clock_hz : float
        Clock used to convert cycles to job time in reports. Default 100 MHz.
    max_cycles : int
        A job that does not raise ``irq`` within this many cycles is reported as hung.
    engine : {"verilator", "cxxrtl"}
        Simulator of the top (see :class:`~nms.verif.sim.fastsim.FastSim`).
    """

    name = "rtl"
    has_cycle_counter = True

    def __init__(self, *, capacity: int | None = None, max_dim: int | None = None,
                 k: int | None = None, neg_samples: int | None = None, tile: int | None = None,
                 hw: dict | None = None, mem_size: int = 1 << 26, latency: int = 20,
                 clock_hz: float = 100e6, max_cycles: int = 2_000_000_000,
                 engine: str = "verilator"):
        cfg = {**DEFAULT_HW, **(hw or {})}
        for name, value in (("capacity", capacity), ("max_dim", max_dim), ("k", k),
                            ("neg_samples", neg_samples), ("tile", tile)):
            if value is not None:
                cfg[name] = value
        if cfg["affinity_lanes"] > cfg["k"]:
            cfg["affinity_lanes"] = cfg["k"]
        self.hw = cfg
        self.capacity, self.max_dim, self.k = cfg["capacity"], cfg["max_dim"], cfg["k"]
        self.neg_samples, self.tile = cfg["neg_samples"], cfg["tile"]
        self.lanes, self.buffer_dim, self.cand_tile = cfg["lanes"], cfg["buffer_dim"], cfg["cand_tile"]
        self.buffer_banks = cfg["buffer_banks"]
        self.clock_hz = float(clock_hz)
        self.max_cycles = int(max_cycles)
        self._regs, self._addr = regmap.REGMAP, regmap.ADDR
        self.sim = FastSim(cfg, mem_size=mem_size, latency=latency, engine=engine)
        self._irq_all = self._regs["IRQ_ENABLE"].pack(done=1, error=1)
        self.sim.csr_write(self._addr["IRQ_ENABLE"], self._irq_all)
        #: simulated cycles and wall seconds spent in wait() (all jobs so far)
        self.sim_cycles = 0
        self.sim_seconds = 0.0

    def _reg(self, name):
        if name not in self._regs:
            raise DeviceError(f"rtl: no register {name!r} in the device's map")
        return self._regs[name]

    def read_reg(self, name: str) -> int:
        self._reg(name)
        return self.sim.csr_read(self._addr[name])

    def write_reg(self, name: str, value: int) -> None:
        reg = self._reg(name)
        if reg.access == "r":
            raise DeviceError(f"register {name} is read-only")
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < (1 << 32):
            raise ValueError(f"register {name}: value {value!r} is not a 32-bit unsigned integer")
        if name == "CTRL" and reg.unpack(value)["start"]:
            # wait() waits for irq: the previous job's interrupt must not satisfy it
            self.sim.csr_write(self._addr["IRQ_STATUS"], self._irq_all)
        self.sim.csr_write(self._addr[name], value)

    def write_mem(self, addr: int, data: bytes) -> None:
        try:
            self.sim.write_mem(addr, data)
        except FastSimError as exc:
            raise DeviceError(f"rtl: {exc}") from None

    def read_mem(self, addr: int, size: int) -> bytes:
        try:
            return self.sim.read_mem(addr, size)
        except FastSimError as exc:
            raise DeviceError(f"rtl: {exc}") from None

    def wait(self, timeout_s: float | None = None) -> None:
        """Run the simulation until ``irq`` (the job ended; ``IRQ_STATUS`` says how)."""
        enabled = self.sim.csr_read(self._addr["IRQ_ENABLE"])
        if enabled != self._irq_all:
            raise DeviceError(f"rtl: wait() runs the simulation until irq and needs IRQ_ENABLE = "
                              f"0x{self._irq_all:x} (done | error), not 0x{enabled:x}")
        t0 = time.perf_counter()
        try:
            cycles = self.sim.run_until_irq(self.max_cycles)
        except FastSimError as exc:
            raise DeviceError(f"rtl: job hung: {exc} (STATUS=0x{self.read_reg('STATUS'):08x})") \
                from None
        self.sim_cycles += cycles
        self.sim_seconds += time.perf_counter() - t0

    def close(self) -> None:
        self.sim.close()
