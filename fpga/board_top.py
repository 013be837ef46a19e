"""Board tops that run jobs: the :class:`~nms.rtl.board.BoardCore` (accelerator + on-board memory +
uartbone bridge) on ULX3S-85F and iCEBreaker, with a PLL, the UART pads and three LEDs.

The board configuration (:data:`BOARD_CONFIGS`) fixes the accelerator's generator parameters, the
clock the PLL makes, the memory and the line rate:

==============  =======================  =============  ======================  =========
board           accelerator              clock          memory                  UART
==============  =======================  =============  ======================  =========
ulx3s-85f       streamed datapath,       25 -> 40 MHz   128 KiB block RAM at 0  115200 8N1
                C = 512, 64-bit AXI      (EHXPLLL)      (64 of 208 DP16KD)
icebreaker      smallest useful one      12 -> 24 MHz   128 KiB SPRAM at 0      115200 8N1
                (see the table entry)    (SB_PLL40_PAD) (all 4 SB_SPRAM256KA)
==============  =======================  =============  ======================  =========

Why block RAM and not the ULX3S's 32 MB SDR SDRAM through LiteDRAM: LiteDRAM is a Migen core
(``litedram_gen`` writes Verilog with its own clock/reset generator and a Wishbone/AXI user
port); bringing it in means a second HDL toolchain in the build, a generated black box that the
Verilated board simulation could not run without its Migen sources, and an SDRAM PHY whose
timing nobody can check without the board. The block-RAM window holds what one job needs: the
driver places the data set at 0 and the result words after it (4 KiB aligned), so a data set of
``n`` vectors of ``dim`` bytes fits when ``align4k(n * dim) + 4 * n_selected <= 128 KiB`` — all
of digits (1797 x 64 B = 112 KiB + 7 KiB of results). The serial transport refuses a transfer
outside the window with an error naming the address.

LEDs: ``STATUS.busy`` / ``.done`` / ``.error`` on ULX3S LEDs 0 / 1 / 2; on iCEBreaker the
break-off board's centre LED / the green / the red LED.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from amaranth import ClockDomain, ClockSignal, Elaboratable, Instance, Module, Signal
from amaranth.lib import io
from amaranth.lib.cdc import ResetSynchronizer

from nms.rtl.board import CSR_BASE, BoardCore
from nms.rtl.uart import divisor_for

__all__ = ["BoardConfig", "BOARD_CONFIGS", "get_config", "core_params", "BoardJobTop",
           "CSR_BASE"]

#: the generator defaults with the board's Wishbone CSR bus — except the dataflow: the boards
#: keep the **streamed** datapath (``buffer_dim = 0``, ``cand_tile = 1``; the device default is
#: the chunk buffer of docs/energy.md §6). Why: every recorded board build, timing and area
#: report is of the streamed top and no ECP5 build of the buffered one exists yet, so a board
#: user gets the bitstream that is known to place, route and meet its clock; the 128 KiB window
#: holds only digits, which the default pooling leaves unpooled (the buffer would save DDR
#: reads but pool nothing). Give ``hw={"buffer_dim": 49, "cand_tile": 4}`` to build the chosen
#: dataflow on the board.
#: C = 512, not the device's 1024: at 1024 the top needs 249 of the 85F's 208 DP16KD (window 64,
#: coverage stage 57, embedding 94, grid 22; bench/results/boardtop.md); at 512 it needs 179
_ULX3S_HW = {"lanes": 8, "tile": 4, "elem_width": 8, "max_dim": 1024, "k": 16,
             "capacity": 512, "neg_samples": 8, "affinity_lanes": 4, "pair_units": 2,
             "buffer_dim": 0, "cand_tile": 1, "data_width": 64, "max_burst": 256}
#: what fits the UP5K's 5280 logic cells and 8 DSPs next to the bridge (see nms bench fpga)
_ICEBREAKER_HW = {"lanes": 2, "tile": 1, "elem_width": 8, "max_dim": 64, "k": 4,
                  "capacity": 64, "neg_samples": 2, "affinity_lanes": 1, "pair_units": 1,
                  "fetch_depth": 2, "buffer_dim": 0, "cand_tile": 1, "data_width": 32,
                  "max_burst": 16, "read_fifo": 16,   # no room for a chunk buffer on the UP5K
                  # its 8 DSPs: the embedding's update (18) and pair unit (17) by shift-adds
                  "serial_update": True, "serial_pairs": True}


@dataclass(frozen=True)
class BoardConfig:
    """What one board top is built with (see the module table)."""

    board: str
    hw: dict
    clock_hz: float
    mem_size: int
    mem_backend: str
    baud: int = 115_200
    #: the bridge drops an unfinished frame after this long without a byte (LiteX: 100 ms)
    idle_timeout_s: float = 0.1
    pll: dict = field(default_factory=dict)
    #: ``led`` resource numbers of busy, done, error
    leds: tuple = (0, 1, 2)

    @property
    def divisor(self) -> int:
        return divisor_for(clock_hz=self.clock_hz, baud=self.baud)

    @property
    def idle_timeout(self) -> int:
        return int(self.idle_timeout_s * self.clock_hz)


BOARD_CONFIGS = {
    "ulx3s-85f": BoardConfig(
        board="ulx3s-85f", hw=_ULX3S_HW, clock_hz=40e6, mem_size=128 * 1024,
        mem_backend="bram",
        # 40 MHz: the top routed at 36.7 and then 38.1 MHz (boardtop.md) with paths that are
        # now pipelined (MeanNearest, the top's refusal check); the datapath alone at 45.0.
        # CLKOP = 25 MHz / 5 * 8 = 40 MHz, VCO = 40 * 15 = 600 MHz (400..800)
        pll={"CLKI_DIV": 5, "CLKFB_DIV": 8, "CLKOP_DIV": 15, "in_mhz": 25, "out_mhz": 40}),
    "icebreaker": BoardConfig(
        board="icebreaker", hw=_ICEBREAKER_HW, clock_hz=24e6, mem_size=128 * 1024,
        mem_backend="spram",
        # 12 MHz * (DIVF + 1) / (DIVR + 1) = 768 MHz VCO (533..1066), / 2**DIVQ = 24 MHz
        pll={"DIVR": 0, "DIVF": 63, "DIVQ": 5, "FILTER_RANGE": 1},
        # busy: the break-off board's centre LED; done: green; error: red (main board)
        leds=(2, 1, 0)),
}


def get_config(board: str) -> BoardConfig:
    if board not in BOARD_CONFIGS:
        raise ValueError(f"no job board top for board {board!r}; choose one of "
                         f"{', '.join(sorted(BOARD_CONFIGS))}")
    return BOARD_CONFIGS[board]


def core_params(board: str, **overrides) -> dict:
    """``BoardCore`` keyword arguments of ``board``'s configuration (``overrides`` win)."""
    cfg = get_config(board)
    return {"hw": dict(cfg.hw), "mem_size": cfg.mem_size, "mem_backend": cfg.mem_backend,
            "divisor": cfg.divisor, "idle_timeout": cfg.idle_timeout, **overrides}


class BoardJobTop(Elaboratable):
    """The job-running top of ``board``: PLL -> ``sync``, reset held until the PLL locks,
    :class:`BoardCore` on the UART pads, LEDs 0..2 = busy / done / error.

    Parameters
    ----------
    board : str
        ``"ulx3s-85f"`` or ``"icebreaker"``.
    hw : dict, optional
        Accelerator parameters replacing the configuration's (same keys).
    """

    def __init__(self, board: str, *, hw: dict | None = None):
        self.config = get_config(board)
        params = core_params(board)
        if hw:
            params["hw"] = {**params["hw"], **hw}
        self.core = BoardCore(**params)

    def summary(self) -> dict:
        """What the build report records about this top."""
        cfg = self.config
        return {"kind": "job top (nms.fpga.board_top.BoardJobTop)", "clock_mhz": cfg.clock_hz / 1e6,
                "pll": dict(cfg.pll), "memory": {"backend": cfg.mem_backend,
                                                 "bytes": cfg.mem_size},
                "uart": {"baud": cfg.baud, "divisor": cfg.divisor,
                         "idle_timeout_cycles": cfg.idle_timeout},
                "csr_base": CSR_BASE, "leds": ["busy", "done", "error"]}

    def elaborate(self, platform):
        if platform is None:
            raise TypeError("BoardJobTop needs a platform; simulate nms.rtl.board.BoardCore")
        m = Module()
        cfg = self.config
        m.domains.sync = ClockDomain("sync")
        locked = Signal()
        clk = Signal()                    # the PLL output; the constraint needs a Signal
        if cfg.board == "ulx3s-85f":
            self._ecp5_pll(m, platform, clk, locked)
        else:
            self._ice40_pll(m, platform, clk, locked)
        m.d.comb += ClockSignal("sync").eq(clk)
        m.submodules.reset_sync = ResetSynchronizer(~locked, domain="sync")
        platform.add_clock_constraint(clk, cfg.clock_hz)

        m.submodules.core = core = self.core
        uart = platform.request("uart", 0, dir={"rx": "-", "tx": "-"})
        m.submodules.uart_rx = rx = io.Buffer("i", uart.rx)
        m.submodules.uart_tx = tx = io.Buffer("o", uart.tx)
        m.d.comb += [core.uart_rx.eq(rx.i), tx.o.eq(core.uart_tx)]
        if cfg.board == "icebreaker":
            platform.add_resources(platform.break_off_pmod)
        for i, value in zip(cfg.leds, (core.led_busy, core.led_done, core.led_error)):
            m.submodules[f"led{i}"] = led = io.Buffer("o", platform.request("led", i, dir="-"))
            m.d.comb += led.o.eq(value)
        return m

    def _ecp5_pll(self, m, platform, clk, locked):
        p = self.config.pll
        m.submodules.clk_in = clk_in = io.Buffer("i", platform.request("clk25", 0, dir="-"))
        m.submodules.pll = Instance(
            "EHXPLLL",
            i_CLKI=clk_in.i, o_CLKOP=clk, i_CLKFB=clk,
            o_LOCK=locked, i_RST=0, i_STDBY=0, i_PHASESEL0=0, i_PHASESEL1=0, i_PHASEDIR=1,
            i_PHASESTEP=1, i_PHASELOADREG=1, i_PLLWAKESYNC=0, i_ENCLKOP=0,
            p_PLLRST_ENA="DISABLED", p_INTFB_WAKE="DISABLED", p_STDBY_ENABLE="DISABLED",
            p_DPHASE_SOURCE="DISABLED", p_OUTDIVIDER_MUXA="DIVA", p_CLKOP_ENABLE="ENABLED",
            p_CLKI_DIV=p["CLKI_DIV"], p_CLKFB_DIV=p["CLKFB_DIV"], p_CLKOP_DIV=p["CLKOP_DIV"],
            p_CLKOP_CPHASE=p["CLKOP_DIV"] - 1, p_CLKOP_FPHASE=0, p_FEEDBK_PATH="CLKOP",
            a_FREQUENCY_PIN_CLKI=str(p["in_mhz"]), a_FREQUENCY_PIN_CLKOP=str(p["out_mhz"]),
            a_ICP_CURRENT="12", a_LPF_RESISTOR="8")

    def _ice40_pll(self, m, platform, clk, locked):
        p = self.config.pll
        clk12 = platform.request("clk12", 0, dir="-")
        m.submodules.pll = Instance(
            "SB_PLL40_PAD",
            io_PACKAGEPIN=clk12.io, o_PLLOUTGLOBAL=clk, o_LOCK=locked,
            i_RESETB=1, i_BYPASS=0,
            p_FEEDBACK_PATH="SIMPLE", p_PLLOUT_SELECT="GENCLK",
            p_DIVR=p["DIVR"], p_DIVF=p["DIVF"], p_DIVQ=p["DIVQ"],
            p_FILTER_RANGE=p["FILTER_RANGE"])
