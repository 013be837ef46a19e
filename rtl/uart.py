"""A UART (8N1) wrapped in ``amaranth.lib.stream`` interfaces.

The bit-level receiver and transmitter are ``AsyncSerialRX`` / ``AsyncSerialTX`` from the
amaranth-stdio copy vendored in luna-soc (the pinned dependency that also provides amaranth-soc,
see :mod:`nms.rtl.csr`); this module only adapts their ``rdy``/``ack`` handshake to streams:

* ``rx`` (``Out(stream.Signature(8))``): every received byte whose stop bit was seen. The
  receiver cannot be stalled (bytes arrive at the line rate), so a small FIFO decouples it from
  the consumer; a byte that finds the FIFO full is dropped and raises the sticky ``overflow``
  flag, a byte with a bad stop bit is dropped and raises ``frame_error``.
* ``tx`` (``In(stream.Signature(8))``): bytes to send, accepted when the transmitter is idle.

``divisor`` is an input (initialised to the constructor's value) so a simulation can change the
line rate without a rebuild; a board top leaves it at its initial value. One bit lasts
``divisor`` clock cycles, one byte ``10 * divisor``.
"""

from __future__ import annotations

from amaranth import Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.cdc import FFSynchronizer
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.wiring import In, Out

from luna_soc.gateware.vendor.amaranth_stdio.serial import AsyncSerialRX, AsyncSerialTX

from nms.rtl.params import check_int

__all__ = ["UartStream", "divisor_for", "MIN_DIVISOR"]

#: below this the receiver's half-bit start alignment (``divisor >> 1``) has no margin left
MIN_DIVISOR = 4


def divisor_for(*, clock_hz: float, baud: int) -> int:
    """Clock cycles per bit for ``baud`` at ``clock_hz``; refuses a rate error above 2 %
    (an 8N1 receiver sampling mid-bit tolerates about 4 % across both ends)."""
    if not clock_hz > 0:
        raise ValueError(f"clock_hz={clock_hz!r} must be > 0")
    check_int("baud", baud, 1, 100_000_000, "1 to 100 Mbaud")
    divisor = round(clock_hz / baud)
    if divisor < MIN_DIVISOR:
        raise ValueError(f"baud={baud} at {clock_hz / 1e6:g} MHz gives divisor {divisor} "
                         f"< {MIN_DIVISOR} clock cycles per bit")
    error = abs(clock_hz / divisor - baud) / baud
    if error > 0.02:
        raise ValueError(f"baud={baud} at {clock_hz / 1e6:g} MHz is off by {100 * error:.1f} % "
                         f"with divisor {divisor} (limit 2 %)")
    return divisor


class UartStream(wiring.Component):
    """8N1 UART with stream interfaces.

    Parameters
    ----------
    divisor : int
        Initial clock cycles per bit (``>= MIN_DIVISOR``).
    divisor_bits : int
        Width of the ``divisor`` input (default: enough for ``divisor``, at least 16).
    rx_depth : int
        Receive FIFO depth in bytes (default 16).

    Attributes
    ----------
    rx_pin : In(1)
        Serial input (idle high); synchronised inside.
    tx_pin : Out(1)
        Serial output (idle high).
    rx : Out(stream.Signature(8))
    tx : In(stream.Signature(8))
    divisor : In(divisor_bits)
    overflow, frame_error : Out(1)
        Sticky: a received byte was dropped (FIFO full / bad stop bit).
    """

    def __init__(self, *, divisor: int, divisor_bits: int | None = None, rx_depth: int = 16):
        check_int("divisor", divisor, MIN_DIVISOR, (1 << 24) - 1, f"{MIN_DIVISOR} to 2**24-1")
        bits = max(16, divisor.bit_length()) if divisor_bits is None else divisor_bits
        check_int("divisor_bits", bits, divisor.bit_length(), 24, "enough for divisor, <= 24")
        check_int("rx_depth", rx_depth, 2, 4096, "2 to 4096 bytes")
        self.rx_depth = rx_depth
        self._divisor, self._divisor_bits = divisor, bits
        super().__init__({
            "rx_pin": In(1, init=1), "tx_pin": Out(1, init=1),
            "rx": Out(stream.Signature(8)), "tx": In(stream.Signature(8)),
            "divisor": In(bits, init=divisor),
            "overflow": Out(1), "frame_error": Out(1)})

    def elaborate(self, platform):
        m = Module()
        m.submodules.phy_rx = phy_rx = AsyncSerialRX(divisor=self._divisor,
                                                     divisor_bits=self._divisor_bits)
        m.submodules.phy_tx = phy_tx = AsyncSerialTX(divisor=self._divisor,
                                                     divisor_bits=self._divisor_bits)
        m.submodules.fifo = fifo = SyncFIFOBuffered(width=8, depth=self.rx_depth)
        rx_sync = Signal(init=1)
        m.submodules.rx_sync = FFSynchronizer(self.rx_pin, rx_sync, init=1)
        m.d.comb += [phy_rx.i.eq(rx_sync), phy_rx.divisor.eq(self.divisor),
                     phy_tx.divisor.eq(self.divisor), self.tx_pin.eq(phy_tx.o)]

        # receiver: ack held high, so ``rdy`` is a one-cycle pulse per received frame
        m.d.comb += phy_rx.ack.eq(1)
        good = phy_rx.rdy & ~phy_rx.err.frame
        m.d.comb += [fifo.w_data.eq(phy_rx.data), fifo.w_en.eq(good)]
        with m.If(good & ~fifo.w_rdy):
            m.d.sync += self.overflow.eq(1)
        with m.If(phy_rx.rdy & phy_rx.err.frame):
            m.d.sync += self.frame_error.eq(1)
        m.d.comb += [self.rx.valid.eq(fifo.r_rdy), self.rx.payload.eq(fifo.r_data),
                     fifo.r_en.eq(self.rx.ready)]

        # transmitter: a byte is taken when the transmitter is idle
        m.d.comb += [phy_tx.data.eq(self.tx.payload), self.tx.ready.eq(phy_tx.rdy),
                     phy_tx.ack.eq(self.tx.valid & phy_tx.rdy)]
        return m
