"""``nms bench boardtop``: bitstreams of the job-running board tops (``nms build --block top``).

Each board of :data:`nms.fpga.board_top.BOARD_CONFIGS` is built with its configuration
(accelerator + on-board memory + UART bridge + PLL + LEDs). A top that does not fit its device
is recorded with the cell types it overuses (from nextpnr's utilisation), not dropped. ``quick``
builds only the iCEBreaker top.

Writes ``<out_dir>/boardtop.json`` and ``<out_dir>/boardtop.md``; build folders (logs,
bitstreams) go under ``<out_dir>/boardtop/<board>``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from nms.fpga.board_top import BOARD_CONFIGS
from nms.bench.timing import _revision, critical_path
from nms.fpga.build import BuildError, build

__all__ = ["run"]


def run(out_dir: Path, quick: bool = False, boards: tuple[str, ...] | None = None) -> dict:
    """Build the board tops and write the report; ``boards`` (e.g. ``("icebreaker",)``)
    re-builds only those and replaces their rows in the report already in ``out_dir`` (every row
    names the revision it was built from)."""
    out_dir = Path(out_dir)
    merge = boards is not None
    if merge:
        unknown = [b for b in boards if b not in BOARD_CONFIGS]
        if unknown:
            raise ValueError(f"unknown board(s) {unknown}; choose from {list(BOARD_CONFIGS)}")
    else:
        boards = ["icebreaker"] if quick else ["ulx3s-85f", "icebreaker"]
    rows = []
    for board in boards:
        cfg = BOARD_CONFIGS[board]
        t0 = time.perf_counter()
        row = {"board": board, "clock_mhz": cfg.clock_hz / 1e6, "hw": dict(cfg.hw),
               "memory": {"backend": cfg.mem_backend, "bytes": cfg.mem_size},
               "baud": cfg.baud, "revision": _revision()}
        try:
            build_dir = out_dir / "boardtop" / board
            report = build(board=board, block="top", out_dir=build_dir)
            row.update(fits=True, fmax_mhz=report["fmax_mhz"], timing_met=report["timing_met"],
                       utilisation=report["utilisation"], build_seconds=report["build_seconds"],
                       bitstream=report["bitstream"], tools=report["tools"])
            tim = build_dir / "top.tim"
            if tim.exists():
                crit = critical_path(tim.read_text(errors="replace"))
                row["critical_path"] = {k: v for k, v in crit.items()
                                        if k not in ("cells", "nets")}
        except BuildError as exc:
            row.update(fits=False, overused={k: list(v) for k, v in exc.overused.items()},
                       error=str(exc).splitlines()[0][:600])
        row["seconds"] = time.perf_counter() - t0
        rows.append(row)
    if merge:
        old = json.loads((out_dir / "boardtop.json").read_text())
        new = {r["board"]: r for r in rows}
        rows = [new.pop(r["board"], r) for r in old["boards"]] + list(new.values())
        quick = old.get("quick", quick)
    result = {"quick": quick, "boards": rows}
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "boardtop.json").write_text(json.dumps(result, indent=1, default=float) + "\n")
    (out_dir / "boardtop.md").write_text(_markdown(result))
    return result


def _markdown(r: dict) -> str:
    lines = ["# Job-running board tops (`nms build --board B --block top`)", "",
             "Accelerator + on-board memory + UART uartbone bridge + PLL + LEDs "
             "(`nms.fpga.board_top`), YoWASP Yosys + nextpnr. Fmax is nextpnr's post-route "
             "figure of the PLL clock; the target is the clock the PLL makes.", "",
             "| board | clock (MHz) | memory | fits | Fmax (MHz) | timing met | utilisation / "
             "overuse | build (s) | revision |", "|---|---:|---|---|---:|---|---|---:|---|"]
    for b in r["boards"]:
        mem = f"{b['memory']['bytes'] // 1024} KiB {b['memory']['backend']}"
        if b["fits"]:
            util = ", ".join(f"{k.upper()} {v['used']}/{v['available']}"
                             for k, v in b["utilisation"].items())
            lines.append(f"| {b['board']} | {b['clock_mhz']:g} | {mem} | yes | "
                         f"{b['fmax_mhz']:.2f} | {b['timing_met']} | {util} | "
                         f"{b['build_seconds']:.0f} | {b.get('revision') or '-'} |")
        else:
            over = ", ".join(f"{k} {u}/{a}" for k, (u, a) in b["overused"].items()) or b["error"]
            lines.append(f"| {b['board']} | {b['clock_mhz']:g} | {mem} | **no** | - | - | "
                         f"{over} | {b['seconds']:.0f} | {b.get('revision') or '-'} |")
    paths = [b for b in r["boards"] if b.get("critical_path")]
    if paths:
        lines += ["", "Critical paths (post-route):", ""]
        for b in paths:
            c = b["critical_path"]
            lines.append(f"- {b['board']}: `{c.get('source')}` → `{c.get('sink')}`, "
                         f"{c.get('logic_ns')} ns logic / {c.get('routing_ns')} ns routing")
    lines += ["", "Accelerator parameters per board:", ""]
    for b in r["boards"]:
        lines.append(f"- {b['board']}: " + ", ".join(f"{k}={v}" for k, v in b["hw"].items()))
    return "\n".join(lines) + "\n"
