"""The board core: the accelerator, its on-board memory and the UART host bridge, without pads.

::

    uart_rx ──> UartStream ──> UartboneBridge ──Wishbone──┬──> BoardMemory (wb)  [0, size)
    uart_tx <──            <──                            └──> NmsAccelerator CSR [CSR_BASE, ...)
                                   NmsAccelerator m_axi_* ───> BoardMemory (axi)

Host address map (byte addresses; the uartbone frame carries them divided by 4):

* ``0x0000_0000`` — on-board memory, ``mem_size`` bytes, the same addresses the accelerator's
  AXI master uses (``SRC_ADDR`` / ``DST_ADDR`` are host addresses);
* :data:`CSR_BASE` ``= 0x8000_0000`` — the accelerator's registers, ``4 * index`` as in
  ``nms.rtl.top.effective_registers()``;
* anything else reads 0 and ignores writes (acknowledged, so the bridge never hangs).

The board tops (:mod:`nms.fpga.board_top`) add the PLL, the pads and the LEDs; the simulated
board (:mod:`nms.verif.sim.boardsim`) Verilates this core as it is.
"""

from __future__ import annotations

from amaranth import Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from nms.rtl.boardmem import BoardMemory
from nms.rtl.params import check_int
from nms.rtl.top import NmsAccelerator
from nms.rtl.uart import UartStream
from nms.rtl.uartbone import UartboneBridge

__all__ = ["BoardCore", "CSR_BASE"]

#: byte address of register 0 on the host bus
CSR_BASE = 0x8000_0000


class BoardCore(wiring.Component):
    """Accelerator + memory + UART bridge.

    Parameters
    ----------
    hw : dict
        ``NmsAccelerator`` parameters; ``bus`` is forced to ``"wishbone"`` and ``data_width``
        defaults to 32.
    mem_size : int
        On-board memory bytes (power of two).
    mem_backend : str
        ``"bram"`` or ``"spram"`` (:class:`~nms.rtl.boardmem.BoardMemory`).
    divisor : int
        UART clock cycles per bit (initial value of the ``uart_divisor`` input).
    idle_timeout : int
        Cycles without a byte after which the bridge drops an unfinished frame.

    Attributes
    ----------
    uart_rx : In(1); uart_tx : Out(1)
    uart_divisor : In(16..24)
        Cycles per bit; a board ties it to its initial value, a simulation may change it.
    led_busy, led_done, led_error : Out(1)
        ``STATUS.busy``, ``STATUS.done``, ``STATUS.error``.
    irq : Out(1)
    """

    def __init__(self, *, hw: dict, mem_size: int, mem_backend: str = "bram", divisor: int,
                 idle_timeout: int):
        hw = {"data_width": 32, **hw, "bus": "wishbone"}
        self.hw = hw
        self.accelerator = NmsAccelerator(**hw)
        self.memory = BoardMemory(size=mem_size, data_width=hw["data_width"],
                                  addr_width=self.accelerator.addr_width, backend=mem_backend)
        self.uart = UartStream(divisor=divisor)
        self.bridge = UartboneBridge(idle_timeout=idle_timeout)
        check_int("mem_size", mem_size, 1, 1 << 30, "1 byte to 1 GiB")
        self.mem_size, self.divisor, self.idle_timeout = mem_size, divisor, idle_timeout
        super().__init__({"uart_rx": In(1, init=1), "uart_tx": Out(1, init=1),
                          "uart_divisor": In(len(self.uart.divisor), init=divisor),
                          "led_busy": Out(1), "led_done": Out(1), "led_error": Out(1),
                          "irq": Out(1)})

    def elaborate(self, platform):
        m = Module()
        acc, mem, uart, bridge = self.accelerator, self.memory, self.uart, self.bridge
        m.submodules.accelerator = acc
        m.submodules.memory = mem
        m.submodules.uart = uart
        m.submodules.bridge = bridge
        m.d.comb += [uart.rx_pin.eq(self.uart_rx), self.uart_tx.eq(uart.tx_pin),
                     uart.divisor.eq(self.uart_divisor), self.irq.eq(acc.irq)]
        wiring.connect(m, uart.rx, bridge.rx)
        wiring.connect(m, bridge.tx, uart.tx)

        # accelerator AXI master -> memory AXI slave, member by member (flat m_axi_* names)
        for name, member in mem.axi.signature.members.items():
            port = getattr(acc, f"m_axi_{name}")
            if member.flow == In:     # master drives (In from the slave's view)
                m.d.comb += getattr(mem.axi, name).eq(port)
            else:
                m.d.comb += port.eq(getattr(mem.axi, name))

        # host bus decoder: bit 31 of the byte address (bit 29 of the word address) picks the
        # registers; there, word addresses past the register map go to a null slave
        bus = bridge.bus
        to_csr = bus.adr[29]
        csr_hit = to_csr & ((bus.adr[:29] >> len(acc.wb_adr)) == 0)
        null_ack = Signal()
        m.d.comb += [
            acc.wb_adr.eq(bus.adr[:len(acc.wb_adr)]), acc.wb_dat_w.eq(bus.dat_w),
            acc.wb_sel.eq(1), acc.wb_we.eq(bus.we),
            acc.wb_cyc.eq(bus.cyc & csr_hit), acc.wb_stb.eq(bus.stb & csr_hit),
            mem.wb.adr.eq(bus.adr), mem.wb.dat_w.eq(bus.dat_w), mem.wb.sel.eq(bus.sel),
            mem.wb.we.eq(bus.we), mem.wb.cyc.eq(bus.cyc & ~to_csr),
            mem.wb.stb.eq(bus.stb & ~to_csr)]
        with m.If(to_csr & ~csr_hit & bus.cyc & bus.stb & ~null_ack):
            m.d.sync += null_ack.eq(1)
        with m.Else():
            m.d.sync += null_ack.eq(0)
        m.d.comb += [bus.ack.eq(_response(to_csr, csr_hit, acc.wb_ack, null_ack, mem.wb.ack)),
                     bus.dat_r.eq(_response(to_csr, csr_hit, acc.wb_dat_r, 0, mem.wb.dat_r))]

        # LEDs: the STATUS fields the accelerator drives into its register file
        status = acc.csr.field
        m.d.comb += [self.led_busy.eq(status("STATUS", "busy").r_data),
                     self.led_done.eq(status("STATUS", "done").r_data),
                     self.led_error.eq(status("STATUS", "error").r_data)]
        return m


def _response(to_csr, csr_hit, csr_value, null_value, mem_value):
    """The decoder's response mux: registers, null slave or memory."""
    return Mux(to_csr, Mux(csr_hit, csr_value, null_value), mem_value)
