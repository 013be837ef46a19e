"""The transport contract every accelerator backend implements, and the device errors.

Kept apart from :mod:`nms.sw.driver` so that the backends (``transport_rtl``,
``transport_serial``) and the driver that picks among them import one way: backends and driver
both import this module; the driver imports a backend only when it is chosen.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod

from nms.rtl import regmap

__all__ = ["DeviceError", "DeviceBusyError", "JobRefusedError", "Transport"]

_STATUS = regmap.REGMAP["STATUS"]


class DeviceError(RuntimeError):
    """The device reported an error (``STATUS.error``) or did not finish."""


class DeviceBusyError(DeviceError):
    """A job was started while the device was busy; the running job is left untouched."""


class JobRefusedError(DeviceError):
    """The device refused a job: ``cause`` (a :class:`nms.rtl.regmap.Cause`), ``field`` (the
    qualified register field, or ``None``) and ``value`` (what the host programmed there)."""

    def __init__(self, message: str, cause: regmap.Cause, field: str | None, value: int | None):
        super().__init__(message)
        self.cause, self.field, self.value = cause, field, value


class Transport(ABC):
    """Register + memory access to one accelerator instance."""

    name = "abstract"
    #: device parameters the driver must respect (fixed when the hardware is generated)
    capacity: int
    max_dim: int
    k: int
    neg_samples: int
    tile: int
    #: the datapath's lanes L, chunk-buffer vector length (0: streamed, no pooling unit) and
    #: candidates per query-memory read: the buffer's limits follow from them
    #: (:func:`nms.rtl.regmap.capabilities`); a backend sets them from its generator parameters
    lanes: int = 8
    buffer_dim: int = 0
    cand_tile: int = 1
    #: True if the *timed* counters (``regmap.TIMED_REGISTERS``: ``CYCLES_*``, the stage windows
    #: and stalls) count real clock cycles (RTL simulation, FPGA); every other counter reads
    #: the same on every backend (``regmap.CONTRACT_REGISTERS``, ``docs/device.md``)
    has_cycle_counter = False
    #: longest a single job may take on this backend before :meth:`wait` gives up
    job_timeout_s = 60.0

    @property
    def params(self) -> dict[str, int]:
        """The generator parameters the declared job ranges refer to (and the others), with
        the chunk buffer's capabilities (``buffer_depth``, ``pool_max``, ``lanes``) when the
        device has one — what the device's own refusal check uses."""
        return {"capacity": self.capacity, "max_dim": self.max_dim, "k": self.k,
                "neg_samples": self.neg_samples, "tile": self.tile,
                **regmap.capabilities(capacity=self.capacity, lanes=self.lanes,
                                      buffer_dim=self.buffer_dim)}

    @abstractmethod
    def read_reg(self, name: str) -> int: ...

    @abstractmethod
    def write_reg(self, name: str, value: int) -> None: ...

    @abstractmethod
    def write_mem(self, addr: int, data: bytes) -> None: ...

    @abstractmethod
    def read_mem(self, addr: int, size: int) -> bytes: ...

    def wait(self, timeout_s: float | None = None) -> None:
        """Poll STATUS until the job is no longer busy (at most ``timeout_s``, default
        :attr:`job_timeout_s`)."""
        timeout_s = self.job_timeout_s if timeout_s is None else timeout_s
        t0 = time.monotonic()
        pause = 1e-4
        while _STATUS.unpack(self.read_reg("STATUS"))["busy"]:
            if time.monotonic() - t0 > timeout_s:
                raise DeviceError(f"{self.name}: job still busy after {timeout_s:g} s "
                                  f"(STATUS={_STATUS.unpack(self.read_reg('STATUS'))})")
            time.sleep(pause)
            pause = min(2 * pause, 0.01)
