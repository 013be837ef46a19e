"""``nms bench area``: which blocks of a board's job top take the area (per-module Yosys stat).

The iCEBreaker job top does not fit its UP5K (``boardtop.md``); this report says where the cells
go, so that the shrinking starts with the largest blocks. ``quick`` and full both synthesise the
iCEBreaker top only (the ECP5 top fits; its area is in ``boardtop.md``).

Writes ``<out_dir>/area.json`` and ``<out_dir>/area.md``; the synthesis folder goes under
``<out_dir>/area/<board>``.
"""

from __future__ import annotations

import json
from pathlib import Path

from nms.fpga.area import module_area
from nms.fpga.board_top import BOARD_CONFIGS

__all__ = ["run"]

#: device capacity per board, for the "share of the device" column
CAPACITY = {"icebreaker": {"lut": 5280, "dsp": 8, "bram": 30, "spram": 4}}


def run(out_dir: Path, quick: bool = False) -> dict:
    out_dir = Path(out_dir)
    board = "icebreaker"
    area = module_area(board, out_dir=out_dir / "area" / board)
    result = {"board": board, "hw": dict(BOARD_CONFIGS[board].hw), "capacity": CAPACITY[board],
              **area}
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "area.json").write_text(json.dumps(result, indent=1, default=float) + "\n")
    (out_dir / "area.md").write_text(_markdown(result))
    return result


def _markdown(r: dict, rows: int = 30) -> str:
    cap, tot = r["capacity"], r["total"]
    cls = [c for c in ("lut", "carry", "ff", "dsp", "bram", "spram") if c in tot]
    lines = [f"# Area by module: the {r['board']} job top (`nms bench area`)", "",
             "Yosys `synth_ice40 -dsp -noflatten` of `nms.fpga.board_top.BoardJobTop` and its "
             "hierarchical `stat` (own cells per module, then including sub-modules). Without "
             "flattening, constants do not propagate across module boundaries, so these totals "
             "are somewhat above the flattened build's in `boardtop.md`; the table is for "
             "finding the big blocks.", "",
             f"Accelerator parameters: {', '.join(f'{k}={v}' for k, v in r['hw'].items())}. "
             f"Synthesis {r['seconds']:.0f} s.", "",
             "Totals: " + ", ".join(
                 f"{c} {tot[c]}" + (f" of {cap[c]} ({100 * tot[c] / cap[c]:.0f} %)" if c in cap
                                    else "") for c in cls), "",
             f"## The {rows} modules with the most LUTs of their own", "",
             "| module | " + " | ".join(cls) + " | LUTs incl. sub-modules |",
             "|---|" + "---:|" * (len(cls) + 1)]
    own = sorted(r["own"].items(), key=lambda kv: -kv[1]["lut"])[:rows]
    for name, counts in own:
        lines.append(f"| `{name}` | " + " | ".join(str(counts[c]) for c in cls)
                     + f" | {r['inclusive'][name]['lut']} |")
    lines += ["", "## Sub-trees of the accelerator (including sub-modules)", "",
              "| sub-tree | " + " | ".join(cls) + " | share of LUTs |", "|---|" + "---:|" * (len(cls) + 1)]
    inc = r["inclusive"]
    depth = {name: name.count(".") for name in inc}
    acc = [n for n in inc if n.startswith("top.core.accelerator.") and
           depth[n] <= "top.core.accelerator.datapath.x".count(".")]
    for name in sorted(acc, key=lambda n: -inc[n]["lut"]):
        share = 100 * inc[name]["lut"] / max(tot["lut"], 1)
        lines.append(f"| `{name}` | " + " | ".join(str(inc[name][c]) for c in cls)
                     + f" | {share:.1f} % |")
    return "\n".join(lines) + "\n"
