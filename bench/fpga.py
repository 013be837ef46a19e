"""``nms bench fpga``: utilisation and post-route Fmax of the distance engine on every board.

For each board the default distance-engine configuration is built. If it does not fit the
device (nextpnr reports a cell type used beyond what the device has), ``lanes`` is halved with
the query tile kept, so the per-beat reuse that bounds near-memory reads stays the same, until a
build fits; the report says which configuration was built and why. ``quick`` builds a small
configuration instead (a smoke run, not the headline figures).

Writes ``<out_dir>/fpga.json`` and ``<out_dir>/fpga.md``; per-build folders with the logs and
bitstreams go under ``<out_dir>/fpga/<board>-<config>``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from nms.fpga.boards import BOARDS
from nms.fpga.build import BuildError, build
from nms.gen.generate import get_block, resolve_params

__all__ = ["run", "QUICK_PARAMS"]

BLOCK = "distance"
#: small configuration for ``--quick`` (4 MACs per cycle, 16-element vectors)
QUICK_PARAMS = {"lanes": 2, "tile": 2, "elem_width": 8, "max_dim": 16}


def _config_name(params: dict) -> str:
    return "-".join(f"{k}{v}" for k, v in params.items())


def _build_fitting(board: str, params: dict, out_root: Path) -> tuple[dict, list[dict]]:
    """Build ``params``, halving ``lanes`` while the design does not fit; return the report
    of the build that fitted and the list of configurations that did not."""
    rejected = []
    while True:
        out_dir = out_root / f"{board}-{_config_name(params)}"
        try:
            return build(board=board, block=BLOCK, params=params, out_dir=out_dir), rejected
        except BuildError as exc:
            if not exc.overused or params["lanes"] == 1:
                raise
            rejected.append({"params": dict(params),
                             "overused": {c: {"used": u, "available": a}
                                          for c, (u, a) in exc.overused.items()}})
            params = {**params, "lanes": params["lanes"] // 2}


def _markdown(result: dict) -> str:
    lines = [
        "# FPGA build benchmark: distance engine",
        "",
        f"Block `{BLOCK}` inside the generic board top (LFSR-driven registered inputs, "
        "registered XOR-folded outputs), built with YoWASP Yosys + nextpnr; Fmax is nextpnr's "
        "post-route figure for the board clock." + (" **Quick run: small configuration.**"
                                                    if result["quick"] else ""),
        "",
        "| board | device | lanes | tile | elem_width | max_dim | MACs/cycle | LUT | FF | DSP "
        "| BRAM | Fmax (MHz) | target (MHz) | build (s) | bitstream (B) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]

    def cell(util, key):
        entry = util.get(key)
        if entry is None:
            return "-"
        return f"{entry['used']}/{entry['available']}" if entry["available"] else str(entry["used"])

    for row in result["boards"]:
        p, u = row["params"], row["utilisation"]
        lines.append(
            f"| {row['board']} | {row['device']} | {p['lanes']} | {p['tile']} | "
            f"{p['elem_width']} | {p['max_dim']} | {p['lanes'] * p['tile']} | {cell(u, 'lut')} | "
            f"{cell(u, 'ff')} | {cell(u, 'dsp')} | {cell(u, 'bram')} | {row['fmax_mhz']:.2f} | "
            f"{row['target_mhz']:.2f} | {row['build_seconds']:.1f} | {row['bitstream_bytes']} |")
    notes = []
    for row in result["boards"]:
        for rejected in row["did_not_fit"]:
            over = ", ".join(f"{c} {v['used']}/{v['available']}"
                             for c, v in rejected["overused"].items())
            notes.append(f"- {row['board']}: {_config_name(rejected['params'])} does not fit "
                         f"({over}); built lanes={row['params']['lanes']} instead.")
    if notes:
        lines += ["", "Configurations that did not fit:", "", *notes]
    lines += ["", "LUT is TRELLIS_COMB on ECP5 and ICESTORM_LC (LUT+FF cell) on iCE40; iCE40 FFs "
              "are Yosys' SB_DFF* count. iCE40 multipliers use SB_MAC16 (`synth_ice40 -dsp`).",
              "", "Tools: " + ", ".join(f"{k} {v}" for k, v in result["tools"].items()), ""]
    return "\n".join(lines)


def run(out_dir: Path, quick: bool) -> dict:
    """Build the distance engine on every board; write ``fpga.json`` and ``fpga.md``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    requested = dict(QUICK_PARAMS) if quick else resolve_params(get_block(BLOCK))
    rows, tools = [], {}
    started = time.perf_counter()
    for board in BOARDS:
        report, rejected = _build_fitting(board, dict(requested), out_dir / "fpga")
        tools.update(report["tools"])
        rows.append({
            "board": board,
            "device": report["device"],
            "requested_params": requested,
            "params": report["params"],
            "did_not_fit": rejected,
            "utilisation": report["utilisation"],
            "fmax_mhz": report["fmax_mhz"],
            "target_mhz": report["target_mhz"],
            "timing_met": report["timing_met"],
            "build_seconds": report["build_seconds"],
            "bitstream_bytes": report["bitstream"]["bytes"],
        })
    result = {"benchmark": "fpga", "block": BLOCK, "quick": quick, "boards": rows,
              "tools": tools, "total_seconds": round(time.perf_counter() - started, 1)}
    (out_dir / "fpga.json").write_text(json.dumps(result, indent=2) + "\n")
    (out_dir / "fpga.md").write_text(_markdown(result))
    return result
