"""The FPGA boards ``nms build`` targets, in one table.

Each entry names the ``amaranth_boards`` platform, the board clock the block runs on, the LED the
board top drives, the bitstream the flow produces and the toolchain options the family needs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from amaranth_boards.icebreaker import ICEBreakerPlatform
from amaranth_boards.ulx3s import ULX3S_85F_Platform

__all__ = ["Board", "BOARDS", "get_board"]


class _ULX3S85FNoProgrammer(ULX3S_85F_Platform):
    """ULX3S 85F platform without ``openFPGALoader`` in the required tools.

    The upstream platform lists the programmer as required even for ``do_program=False``; we only
    build bitstreams, so requiring it would fail on every machine without the programmer.
    """

    @property
    def required_tools(self):
        return [tool for tool in super().required_tools if tool != "openFPGALoader"]


@dataclass(frozen=True)
class Board:
    """One buildable board.

    Attributes
    ----------
    name : str
        Name used on the command line (``--board``).
    platform_class : type
        ``amaranth.build.Platform`` subclass to build with.
    family : str
        FPGA family, selects the log parser's cell names (``"ecp5"`` or ``"ice40"``).
    device : str
        Human-readable device name for reports.
    clock : str
        Name of the board clock resource the ``sync`` domain runs on (the platform default).
    clock_hz : float
        Frequency of that clock; it is the timing target nextpnr is given.
    led : str
        Name of the LED resource (index 0) the board top drives.
    bitstream_suffix : str
        Suffix of the bitstream file the flow writes (``top<suffix>``).
    build_options : dict
        Extra keyword arguments for ``platform.prepare`` (toolchain overrides).
    """

    name: str
    platform_class: type
    family: str
    device: str
    clock: str
    clock_hz: float
    led: str
    bitstream_suffix: str
    build_options: dict = field(default_factory=dict)

    def platform(self):
        """Return a fresh platform instance (platforms hold per-build state)."""
        return self.platform_class()


#: board name -> Board. The clock and LED entries repeat what the platform declares so that the
#: report can state the target without elaborating anything.
BOARDS: dict[str, Board] = {
    "ulx3s-85f": Board(
        name="ulx3s-85f",
        platform_class=_ULX3S85FNoProgrammer,
        family="ecp5",
        device="Lattice ECP5 LFE5U-85F-6BG381",
        clock="clk25",
        clock_hz=25e6,
        led="led",
        bitstream_suffix=".bit",
    ),
    "icebreaker": Board(
        name="icebreaker",
        platform_class=ICEBreakerPlatform,
        family="ice40",
        device="Lattice iCE40 UP5K-SG48",
        clock="clk12",
        clock_hz=12e6,
        led="led",
        bitstream_suffix=".bin",
        # synth_ice40 maps multipliers to SB_MAC16 only when asked; without it every product
        # becomes LUTs and the UP5K fills up several times faster.
        build_options={"synth_opts": "-dsp"},
    ),
}


def get_board(name: str) -> Board:
    """Look a board up by name; raise ``ValueError`` naming the choices if it is unknown."""
    if not isinstance(name, str):
        raise TypeError(f"board must be a string, not {name!r}")
    try:
        return BOARDS[name]
    except KeyError:
        raise ValueError(
            f"unknown board {name!r}; choose one of {', '.join(sorted(BOARDS))}"
        ) from None
