"""``nms bench timing``: per-stage ECP5 timing map of the DE-SNE datapath.

Every stage of :class:`nms.rtl.datapath.DesneDatapath` is built alone at its default generator
parameters inside the generic board top (every port registered, ``docs/fpga.md``), then the whole
datapath, on the ULX3S-85F (LFE5U-85F, speed 6) with the pip YoWASP tools. For each build the
report gives utilisation, nextpnr's post-route Fmax against the 125 MHz goal, and the post-route
critical path (source, sink, logic vs routing delay) read from nextpnr's log.

One build at a time (the machine has two cores); the whole datapath alone takes 20-40 minutes.
``--quick`` builds every stage alone but not the whole datapath (the stage figures are the real
ones; the whole-datapath row is missing). ``run(out, quick, stages=("grid",))`` (from Python)
re-builds only the named stages and replaces their rows in the report on disk. Builds go to
``build/timing/<stage>`` (not tracked).
"""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path

__all__ = ["run", "STAGES", "GOAL_MHZ", "critical_path"]

BOARD = "ulx3s-85f"
GOAL_MHZ = 125.0
#: (block, what it is in the datapath), in pipeline order; the full datapath last
STAGES = (
    ("distance", "distance engine (T x L MACs)"),
    ("knn", "kNN selector"),
    ("knn_datapath", "kNN stage: distance engine + selector"),
    ("affinity", "affinity unit (precision search, exp2/log2, dividers)"),
    ("embedding", "embedding engine"),
    ("grid", "grid sampler"),
    ("cover", "coverage selector (reverse kNN lists, gains, greedy)"),
    ("datapath", "whole chunk datapath"),
)
QUICK_STAGES = tuple(b for b, _ in STAGES if b != "datapath")


def critical_path(tim_text: str) -> dict:
    """The last (post-route) critical path in nextpnr's log: clock, source, sink, delay split."""
    import re

    blocks = re.split(r"Info: Critical path report for clock '([^']*)'[^\n]*\n", tim_text)
    if len(blocks) < 3:
        return {}
    clock, body = blocks[-2], blocks[-1]
    lines = []
    for line in body.splitlines():
        if not line.startswith("Info:"):
            break
        lines.append(line[5:].strip())
    sources = [m.group(1) for t in lines for m in [re.search(r"\bSource (\S+)", t)] if m]
    sinks = [m.group(1) for t in lines for m in [re.search(r"\bSink (\S+)", t)] if m]
    nets = [m.group(1) for t in lines for m in [re.search(r"\bNet (\S+)", t)] if m]
    split = next((m for t in lines
                  for m in [re.match(r"([\d.]+) ns logic, ([\d.]+) ns routing", t)] if m), None)
    return {"clock": clock,
            "logic_ns": float(split.group(1)) if split else None,
            "routing_ns": float(split.group(2)) if split else None,
            "source": sources[0] if sources else None, "sink": sinks[-1] if sinks else None,
            "cells": sources, "nets": nets,
            "lines": [t for t in lines if t and not t.startswith(("Defined in", "/", "amaranth/"))
                      ][:80]}


def _build_stage(block: str, root: Path) -> dict:
    from nms.fpga.build import build

    out = root / block
    t0 = time.perf_counter()
    report = build(board=BOARD, block=block, out_dir=out)
    tim = out / "top.tim"
    crit = critical_path(tim.read_text(errors="replace")) if tim.exists() else {}
    return {"block": block, "params": report["params"], "utilisation": report["utilisation"],
            "fmax_mhz": report["fmax_mhz"], "meets_goal": report["fmax_mhz"] >= GOAL_MHZ,
            "build_seconds": round(time.perf_counter() - t0, 1),
            "critical_path": {k: v for k, v in crit.items() if k not in ("cells", "nets")}}


def _revision() -> str | None:
    """The commit the build ran on (``git describe --always --dirty``), or None outside git."""
    import subprocess

    try:
        out = subprocess.run(["git", "describe", "--always", "--dirty"], capture_output=True,
                             text=True, check=True, cwd=Path(__file__).resolve().parent)
    except (OSError, subprocess.CalledProcessError):
        return None
    return out.stdout.strip() or None


def run(out_dir: Path, quick: bool, stages: tuple[str, ...] | None = None) -> dict:
    """Build the stages and write ``timing.json`` / ``timing.md`` into ``out_dir``.

    ``stages`` (e.g. ``("grid",)``) re-builds only those blocks and replaces their rows in the
    report already in ``out_dir`` (the other rows stay as they were; every row names the
    revision it was built from). Without it every stage is built (``quick``: all but the whole
    datapath) and the report is written anew.
    """
    root = Path("build") / "timing"
    what = dict(STAGES)
    if stages is not None:
        unknown = [b for b in stages if b not in what]
        if unknown:
            raise ValueError(f"unknown stage(s) {unknown}; choose from {list(what)}")
        names = tuple(stages)
    else:
        names = QUICK_STAGES if quick else tuple(b for b, _ in STAGES)
    rows = []
    for block in names:
        revision = _revision()          # before the build: the tree it elaborates
        row = _build_stage(block, root)
        row["stage"] = what[block]
        row["revision"] = revision
        rows.append(row)
        print(f"[timing] {block}: {row['fmax_mhz']:.1f} MHz ({row['build_seconds']:.0f} s)")
    out_dir = Path(out_dir)
    if stages is not None:
        # merge into the report on disk (read now, after the builds)
        old = json.loads((out_dir / "timing.json").read_text())
        new = {r["block"]: r for r in rows}
        kept = [new.pop(r["block"], r) for r in old["stages"]]
        rows = kept + [new[b] for b in names if b in new]
        rows.sort(key=lambda r: list(what).index(r["block"]))
        quick = old.get("quick", quick)
    result = {"benchmark": "timing", "quick": quick, "board": BOARD, "goal_mhz": GOAL_MHZ,
              "stages": rows,
              "host": {"machine": platform.machine(), "python": platform.python_version()}}
    (out_dir / "timing.json").write_text(json.dumps(result, indent=2) + "\n")
    (out_dir / "timing.md").write_text(_markdown(result))
    return result


def _cell(util: dict, key: str) -> str:
    u = util.get(key)
    return f"{u['used']}/{u['available']}" if isinstance(u, dict) else "-"


def _markdown(r: dict) -> str:
    lines = [
        "# Timing map: every datapath stage alone, then the whole datapath (ECP5-85F, speed 6)",
        "",
        f"Each block at its default generator parameters inside the registered board top, built "
        f"with YoWASP Yosys + nextpnr (one run, default seed: expect a few % of seed noise). "
        f"Goal: {r['goal_mhz']:.0f} MHz." + (" **Quick run: the stages alone, without the whole-datapath build.**"
                                    if r["quick"] else "")
        + " A row's revision is the commit its build ran on (rows re-built alone with "
          "`run(..., stages=(...))` keep the other rows as they were; `-` = before revisions "
          "were recorded).",
        "",
        "| block | stage | LUT | FF | DSP | BRAM | Fmax (MHz) | goal met | critical path (post-route) "
        "| logic / routing (ns) | revision |",
        "|---|---|---:|---:|---:|---:|---:|---|---|---|---|",
    ]
    for s in r["stages"]:
        u, c = s["utilisation"], s["critical_path"]
        path = f"`{c.get('source')}` → `{c.get('sink')}`" if c else "-"
        split = (f"{c['logic_ns']:.1f} / {c['routing_ns']:.1f}"
                 if c and c.get("logic_ns") is not None else "-")
        lines.append(f"| `{s['block']}` | {s['stage']} | {_cell(u, 'lut')} | "
                     f"{_cell(u, 'ff')} | {_cell(u, 'dsp')} | {_cell(u, 'bram')} | "
                     f"{s['fmax_mhz']:.1f} | {'yes' if s['meets_goal'] else 'no'} | {path} | {split} | "
                     f"{s.get('revision') or '-'} |")
    return "\n".join(lines) + "\n"
