"""``nms bench elaborate``: how long ``nms generate`` takes, and how big its output is, for the
datapath and the device top at the test size, the default and the chosen dataflow's size.

* **Rows**: each configuration is elaborated and converted to Verilog in a fresh Python process
  (``nms generate``, so nothing is shared between rows), timed by that process's own CPU time
  (``resource.getrusage`` of the child, Yosys included: it runs in-process as WebAssembly), then
  linted with the project's strict lint (``nms.gen.lint.lint_verilog``, Verilator ``-Wall``
  minus the documented waivers; the Verilator child's CPU time is measured the same way).
* **The cause of the slow chosen size** (``docs/energy.md`` §6 said it was stopped after 12
  CPU minutes): :class:`~nms.rtl.cover.MeanNearest`'s best-of-T chain. Written as one
  expression in which each link used the previous one twice (compare and mux), Amaranth's
  netlist emitter (which does not share sub-expressions) expands it as a tree of ``2^T``
  copies. The table times the unit alone as it was (:class:`_TreeMeanNearest`, re-created here)
  and as it is (a named signal per link), at growing T.

``--quick``: the MeanNearest table up to T = 10 and only the test-size rows.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from nms.bench import _report

#: label -> (block, generator parameters); the default is nms.sw.dataflow.CHOSEN's (C = 1024,
#: T = 4, P = 4, chunk buffer for 4x4-pooled 28x28 images); "784-D" sets max_dim to
#: Fashion-MNIST's vector length; the first sweep round's T = 16 stays as the large row
ROWS = {
    "datapath, test size (C = 128, T = 4, buffer 16, P = 4)":
        ("datapath", {"capacity": 128, "tile": 4, "max_dim": 64, "k": 8, "neg_samples": 4,
                      "buffer_dim": 16, "cand_tile": 4}),
    "datapath, default (C = 1024, T = 4, buffer 49, P = 4)": ("datapath", {}),
    "top, default (C = 1024, T = 4, buffer 49, P = 4)": ("top", {}),
    "datapath, default at 784-D (C = 1024, T = 4, P = 4, buffer 49)":
        ("datapath", {"max_dim": 784}),
    "top, default at 784-D (C = 1024, T = 4, P = 4, buffer 49)": ("top", {"max_dim": 784}),
    "datapath, T = 16 (C = 1024, P = 4, 784-D, buffer 49; the first round's choice)":
        ("datapath", {"capacity": 1024, "tile": 16, "cand_tile": 4, "max_dim": 784,
                      "buffer_dim": 49}),
}
QUICK_ROWS = ("datapath, test size (C = 128, T = 4, buffer 16, P = 4)",)
MEAN_TILES = (4, 8, 10, 12, 16)
#: the tree version is timed only while it stays short (2^T grows by 16x from 12 to 16)
TREE_TILES = (4, 8, 10, 12)


def _child_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def _generate(block: str, params: dict, out: Path) -> dict:
    argv = [sys.executable, "-m", "nms.sw.cli", "generate", "--block", block, "--out", str(out),
            *sum((["--param", f"{k}={v}"] for k, v in params.items()), [])]
    cpu0, t0 = _child_cpu(), time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True)
    row = {"generate_cpu_s": _child_cpu() - cpu0, "generate_wall_s": time.perf_counter() - t0}
    if proc.returncode != 0:
        raise RuntimeError(f"nms generate --block {block} {params} failed:\n{proc.stderr[-2000:]}")
    text = (out / f"{block}.v").read_text()
    meta = json.loads((out / f"{block}.json").read_text())
    from nms.gen.lint import lint_verilog
    from nms.rtl import regmap

    cpu0, t0 = _child_cpu(), time.perf_counter()
    lint_verilog(out / f"{block}.v", block, timeout=3600)
    row.update(lint_cpu_s=_child_cpu() - cpu0, lint_wall_s=time.perf_counter() - t0,
               lint="clean", verilog_bytes=len(text.encode()), verilog_lines=text.count("\n"),
               modules=text.count("\nmodule ") + text.startswith("module "),
               parameters=meta["parameters"],
               capabilities=regmap.capabilities(
                   capacity=meta["parameters"]["capacity"], lanes=meta["parameters"]["lanes"],
                   buffer_dim=meta["parameters"]["buffer_dim"]))
    return row


class _TreeMeanNearest:
    """MeanNearest as it was before the fix: the best-of-T chain as one expression."""

    @staticmethod
    def make(tile: int):
        from amaranth import Const, Module, Mux, Signal

        from nms.rtl.cover import MeanNearest

        class Tree(MeanNearest):
            def elaborate(self, platform):
                m = Module()
                T, SW = self.tile, self.sum_width
                n = Signal(self.count_width)
                base = Signal(self.count_width + 7)
                sums = [Signal(SW, name=f"sum{t}") for t in range(T)]
                best = Signal(SW)
                beat = self.dist.payload
                cand, cand_t = sums[T - 1] + beat.dist[T - 1], Const(T - 1, range(T))
                cand_ok = base + T - 1 < n
                for t in reversed(range(T - 1)):
                    s_t = sums[t] + beat.dist[t]
                    ok_t = base + t < n
                    take = ok_t & (~cand_ok | (s_t <= cand))
                    cand = Mux(take, s_t, cand)
                    cand_t = Mux(take, t, cand_t)
                    cand_ok = ok_t | cand_ok
                with m.If(self.dist.valid & beat.last & cand_ok & (cand < best)):
                    m.d.sync += [best.eq(cand), self.start.payload.index.eq(base + cand_t)]
                m.d.sync += [s.eq(s + beat.dist[t]) for t, s in enumerate(sums)]
                return m

        return Tree(tile=tile, dist_width=26, capacity=1024)


def _time_rtlil(component) -> float:
    from amaranth.back import rtlil

    t0 = time.process_time()
    rtlil.convert(component, name="top")
    return time.process_time() - t0


def _mean_nearest(tiles, tree_tiles) -> list[dict]:
    from nms.rtl.cover import MeanNearest

    rows = []
    for T in tiles:
        row = {"tile": T, "now_cpu_s": _time_rtlil(MeanNearest(tile=T, dist_width=26,
                                                                  capacity=1024))}
        if T in tree_tiles:
            row["before_cpu_s"] = _time_rtlil(_TreeMeanNearest.make(T))
        rows.append(row)
    return rows


def run(out_dir: Path, quick: bool = False) -> dict:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tiles = tuple(t for t in MEAN_TILES if t <= 10) if quick else MEAN_TILES
    result = {"host": _report.host("loadavg_1min_before"), "quick": quick,
              "mean_nearest": _mean_nearest(tiles, TREE_TILES), "rows": {}}
    with tempfile.TemporaryDirectory(prefix="nms-elab-") as tmp:
        for i, (label, (block, params)) in enumerate(ROWS.items()):
            if quick and label not in QUICK_ROWS:
                continue
            result["rows"][label] = {"block": block,
                                     **_generate(block, params, Path(tmp) / str(i))}
    result["host"].update(_report.host())
    _report.write(out_dir, "elaborate", result, _markdown(result))
    return result


def _markdown(res: dict) -> str:
    h = res["host"]
    lines = ["# nms generate: elaboration time and size", "",
             f"Host: {h['machine']}, {h['cpus']} CPUs, Python {h['python']}; 1-minute load "
             f"{h['loadavg_1min_before']} before, {h['loadavg_1min_after']} after (a shared "
             "machine: CPU seconds are the comparable figure, wall seconds depend on the load)."
             + (" **Quick run.**" if res["quick"] else ""), "",
             "## `nms generate` + strict lint, one fresh process per row", "",
             "| configuration | generate CPU s | generate wall s | Verilog MB | lines | modules "
             "| lint (Verilator -Wall) | lint CPU s | chunk buffer words |",
             "|---|---:|---:|---:|---:|---:|---|---:|---:|"]
    for label, r in res["rows"].items():
        caps = r.get("capabilities") or {}
        lines.append(f"| {label} | {r['generate_cpu_s']:.1f} | {r['generate_wall_s']:.1f} | "
                     f"{r['verilog_bytes'] / 1e6:.2f} | {r['verilog_lines']:,} | {r['modules']} | "
                     f"{r['lint']} | {r['lint_cpu_s']:.1f} | {caps.get('buffer_depth', 0):,} |")
    lines += ["", "## The cause: `MeanNearest`'s best-of-T chain (the unit alone, to RTLIL)", "",
              "Before: one expression whose every link uses the previous one twice (compare and "
              "mux) — the netlist emitter expands it as 2^T copies. Now: one named signal per "
              "link (same logic, tested against the model).", "",
              "| T | before (CPU s) | now (CPU s) |", "|---:|---:|---:|"]
    for r in res["mean_nearest"]:
        before = f"{r['before_cpu_s']:.2f}" if "before_cpu_s" in r else "not run (2^16 copies)"
        lines.append(f"| {r['tile']} | {before} | {r['now_cpu_s']:.2f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":  # pragma: no cover
    print(run(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("bench/results"),
              quick="--quick" in sys.argv)["rows"].keys())
