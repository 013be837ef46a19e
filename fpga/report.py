"""Read the Yosys and nextpnr logs of a bitstream build and write ``report.json`` + ``report.md``.

The logs are the ones Amaranth's Lattice flows write: ``top.rpt`` (Yosys) and ``top.tim``
(nextpnr). nextpnr prints "Max frequency for clock" once after placement and once after routing;
the last line per clock is the post-route figure, which is the one reported.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

__all__ = [
    "LogParseError",
    "parse_nextpnr_log",
    "parse_yosys_log",
    "summarise_utilisation",
    "write_report",
    "format_markdown",
]

#: per family: summary resource -> nextpnr cell type counted for it. On iCE40 a logic cell
#: (ICESTORM_LC) holds one LUT4 and one FF, so LUT use is the LC count and FFs come from Yosys.
SUMMARY_CELLS = {
    "ecp5": {"lut": "TRELLIS_COMB", "ff": "TRELLIS_FF", "dsp": "MULT18X18D", "bram": "DP16KD"},
    "ice40": {"lut": "ICESTORM_LC", "dsp": "ICESTORM_DSP", "bram": "ICESTORM_RAM",
              "spram": "ICESTORM_SPRAM"},
}

_UTIL_LINE = re.compile(r"^Info:\s+(\S+):\s+(\d+)/\s*(\d+)\s+(\d+)%\s*$")
_FMAX_LINE = re.compile(
    r"^Info: Max frequency for clock '(?P<clock>[^']+)': (?P<fmax>[0-9.]+) MHz "
    r"\((?P<status>PASS|FAIL) at (?P<target>[0-9.]+) MHz\)"
)
_YOSYS_VERSION = re.compile(r"^\s*Yosys (\d+\.\d+\S*)(?: \(git sha1 ([0-9a-f]+))?", re.MULTILINE)
_YOSYS_CELL = re.compile(r"^\s+(\d+)\s{2,}(\$?[A-Za-z_][\w$]*)\s*$")
_ERROR_LINE = re.compile(r"^(ERROR|Error|error)\b.*$", re.MULTILINE)


class LogParseError(ValueError):
    """A tool log lacks a section the report needs (e.g. the build stopped before routing)."""


def parse_nextpnr_log(text: str) -> dict:
    """Parse a nextpnr log.

    Parameters
    ----------
    text : str
        Contents of the nextpnr ``--log`` file.

    Returns
    -------
    dict
        ``utilisation``: cell type -> ``{"used", "available", "percent"}`` (from the last
        "Device utilisation" block); ``clocks``: clock net -> ``{"fmax_mhz", "target_mhz",
        "pass"}`` from the last "Max frequency" line of each clock (post-route);
        ``finished``: whether nextpnr reported a normal end.

    Raises
    ------
    LogParseError
        If the log has no utilisation block.
    """
    lines = text.splitlines()
    starts = [i for i, line in enumerate(lines) if line.startswith("Info: Device utilisation:")]
    if not starts:
        raise LogParseError("nextpnr log has no 'Device utilisation' block (did packing run?)")
    utilisation = {}
    for line in lines[starts[-1] + 1:]:
        match = _UTIL_LINE.match(line)
        if not match:
            break
        cell, used, available, percent = match.groups()
        utilisation[cell] = {"used": int(used), "available": int(available),
                             "percent": int(percent)}
    clocks = {}
    for line in lines:
        match = _FMAX_LINE.match(line)
        if match:
            clocks[match["clock"]] = {"fmax_mhz": float(match["fmax"]),
                                      "target_mhz": float(match["target"]),
                                      "pass": match["status"] == "PASS"}
    return {"utilisation": utilisation, "clocks": clocks,
            "finished": "Info: Program finished normally." in text}


def parse_yosys_log(text: str) -> dict:
    """Parse a Yosys log: version and the cell counts of the last statistics of the top module.

    Returns
    -------
    dict
        ``version`` (str or None) and ``cells``: cell type -> count (empty if no statistics).
    """
    version = _YOSYS_VERSION.search(text)
    cells: dict[str, int] = {}
    marker = text.rfind("Printing statistics.")
    if marker >= 0:
        # Only the first "=== module ===" block after the marker: the hierarchy summary that
        # follows repeats the same counts.
        section = text[marker:]
        blocks = re.split(r"^=== .* ===$", section, flags=re.MULTILINE)
        if len(blocks) > 1:
            for line in blocks[1].splitlines():
                match = _YOSYS_CELL.match(line)
                if match:
                    cells[match[2]] = cells.get(match[2], 0) + int(match[1])
    if version is None:
        text_version = None
    else:
        text_version = version[1] + (f" (git {version[2]})" if version[2] else "")
    return {"version": text_version, "cells": cells}


def summarise_utilisation(family: str, nextpnr: dict, yosys: dict) -> dict:
    """Condense the per-cell utilisation into LUT / FF / DSP / BRAM figures for ``family``.

    Returns
    -------
    dict
        resource -> ``{"cell", "used", "available", "percent"}`` (``available``/``percent`` are
        None where the tool does not report them, e.g. iCE40 flip-flops counted by Yosys).
    """
    if family not in SUMMARY_CELLS:
        raise ValueError(f"unknown FPGA family {family!r}; known: {', '.join(SUMMARY_CELLS)}")
    summary = {}
    for resource, cell in SUMMARY_CELLS[family].items():
        entry = nextpnr["utilisation"].get(cell)
        if entry is not None:
            summary[resource] = {"cell": cell, **entry}
    if family == "ice40":
        flops = sum(n for cell, n in yosys["cells"].items() if cell.startswith("SB_DFF"))
        lcs = nextpnr["utilisation"].get("ICESTORM_LC", {}).get("available")
        summary["ff"] = {"cell": "SB_DFF*", "used": flops, "available": lcs,
                         "percent": round(100 * flops / lcs) if lcs else None}
    order = ["lut", "ff", "dsp", "bram", "spram"]
    return {key: summary[key] for key in sorted(summary, key=order.index)}


def tool_errors(text: str, limit: int = 5) -> list[str]:
    """Return up to ``limit`` error lines of a tool log (for failure messages)."""
    return [m.group(0).strip() for m in _ERROR_LINE.finditer(text)][:limit]


def _top_line(top: dict) -> str:
    """The probe top's LFSR/fold figures, or a job top's own summary (it has no probe)."""
    if "input_bits" in top:
        return (f"- board top: {top['input_bits']} input bits from the LFSR chain, "
                f"{top['output_bits']} output bits XOR-folded in {top['fold_stages']} stages "
                "to the LED")
    return "- board top: " + ", ".join(f"{k}={v}" for k, v in top.items())


def format_markdown(report: dict) -> str:
    """Render a build report (as written to ``report.json``) as Markdown."""
    params = ", ".join(f"{k}={v}" for k, v in report["params"].items()) or "(defaults)"
    lines = [
        f"# FPGA build: {report['block']} on {report['board']}",
        "",
        f"- device: {report['device']}",
        f"- block: `{report['block']}` ({params})",
        _top_line(report["top"]),
        f"- post-route Fmax: **{report['fmax_mhz']:.2f} MHz** (target {report['target_mhz']:.2f} "
        f"MHz, {'met' if report['timing_met'] else 'NOT met'})",
        f"- bitstream: `{report['bitstream']['file']}` ({report['bitstream']['bytes']} bytes)",
        f"- build time: {report['build_seconds']:.1f} s",
        "",
        "| resource | cell | used | available | % |",
        "|---|---|---:|---:|---:|",
    ]
    for resource, entry in report["utilisation"].items():
        available = "" if entry["available"] is None else entry["available"]
        percent = "" if entry["percent"] is None else entry["percent"]
        lines.append(f"| {resource} | {entry['cell']} | {entry['used']} | {available} "
                     f"| {percent} |")
    lines += ["", "Tools: " + ", ".join(f"{k} {v}" for k, v in report["tools"].items()), ""]
    return "\n".join(lines)


def write_report(report: dict, out_dir: Path) -> tuple[Path, Path]:
    """Write ``report.json`` and ``report.md`` into ``out_dir``; return both paths."""
    out_dir = Path(out_dir)
    json_path, md_path = out_dir / "report.json", out_dir / "report.md"
    json_path.write_text(json.dumps(report, indent=2) + "\n")
    md_path.write_text(format_markdown(report))
    return json_path, md_path
