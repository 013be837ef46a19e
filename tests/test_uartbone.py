"""The LiteX-uartbone bridge (``nms.rtl.uartbone``) under Verilator with cocotb against an
independent frame encoder (``nms.verif.tb.uartbone``): incrementing and fixed-address writes and
reads, 255-word frames, resynchronisation after an idle line, back-to-back and ignored frames —
once with a steady byte stream and an always-ready transmitter, once with random idle cycles and
back-pressure. Plus the UART stream wrapper in the Amaranth simulator (a looped-back line) and
the parameter checks."""

from __future__ import annotations

import pytest
from amaranth import Module
from amaranth.back import verilog
from amaranth.sim import Simulator

from nms.rtl.uart import MIN_DIVISOR, UartStream, divisor_for
from nms.rtl.uartbone import UartboneBridge
from nms.verif.sim.build import run_cocotb
from nms.verif.tb.uartbone import UartboneDut

IDLE_TIMEOUT = 300


@pytest.mark.parametrize("traffic", [{}, {"idle": 0.3, "backpressure": 0.4, "seed": 7}],
                         ids=["steady", "gaps-and-backpressure"])
def test_uartbone_bridge(traffic):
    text = verilog.convert(UartboneDut(idle_timeout=IDLE_TIMEOUT), name="top", emit_src=False)
    run_cocotb("uartbone", text, "nms.verif.tb.uartbone",
               {"idle_timeout": IDLE_TIMEOUT, **traffic})


def test_uart_stream_loopback():
    """Bytes sent on ``tx`` come back on ``rx`` through the line (tx_pin -> rx_pin), in order,
    with no overflow or framing error, held in the receive FIFO while ``rx.ready`` is low."""
    divisor = 6
    dut = UartStream(divisor=divisor)
    data = [0x00, 0xFF, 0x55, 0xAA, 0x01, 0x80, 0x3C]
    got, when = [], []

    async def bench(ctx):
        for byte in data:          # rx.ready low meanwhile: the receive FIFO holds them
            ctx.set(dut.tx.payload, byte)
            ctx.set(dut.tx.valid, 1)
            await ctx.tick().until(dut.tx.ready)
        ctx.set(dut.tx.valid, 0)
        ctx.set(dut.rx.ready, 1)
        cycle = 0
        while len(got) < len(data) and cycle < 20 * divisor * (len(data) + 2):
            if ctx.get(dut.rx.valid):       # taken at the coming edge (rx.ready is high)
                got.append(ctx.get(dut.rx.payload))
                when.append(cycle)
            await ctx.tick()
            cycle += 1
        assert not ctx.get(dut.overflow) and not ctx.get(dut.frame_error)

    top = Module()
    top.submodules.uart = dut
    top.d.comb += dut.rx_pin.eq(dut.tx_pin)          # the line, looped back
    sim = Simulator(top)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    assert got == data
    # what is still on the line after the FIFO's contents arrives one byte per 10 bit times
    gaps = [b - a for a, b in zip(when, when[1:]) if b - a > 1]
    assert all(g <= 10 * divisor + 1 for g in gaps), gaps


@pytest.mark.parametrize("clock_hz, baud, divisor", [(50e6, 115_200, 434), (24e6, 115_200, 208),
                                                     (50e6, 1_000_000, 50)])
def test_divisor_for(clock_hz, baud, divisor):
    assert divisor_for(clock_hz=clock_hz, baud=baud) == divisor


@pytest.mark.parametrize("kwargs, match", [
    ({"clock_hz": 12e6, "baud": 2_500_000}, "off by 4.0 %"),
    ({"clock_hz": 12e6, "baud": 5_000_000}, f"< {MIN_DIVISOR}"),
    ({"clock_hz": 50e6, "baud": 0}, "baud=0"),
    ({"clock_hz": 0, "baud": 9600}, "clock_hz=0"),
])
def test_divisor_for_refuses(kwargs, match):
    with pytest.raises(ValueError, match=match):
        divisor_for(**kwargs)


def test_parameter_checks():
    with pytest.raises(ValueError, match="idle_timeout=1"):
        UartboneBridge(idle_timeout=1)
    with pytest.raises(ValueError, match="divisor=3"):
        UartStream(divisor=3)
