"""``nms bench grid``: cycles of the grid sampler after the last point, measured and formula.

Runs the generator's default sampler (C = 1024) under Verilator with no stalls (every index
checked against ``desne.grid_select`` by the testbench's scoreboard) on seeded uniform and
clustered point clouds of N = 64, 256 and 1024 points at a 10 % budget (M = round(0.1 N), half
up), both allocation modes, and reports the cycles from the final point's acceptance to the
final index's handshake beside ``GridGeometry.run_cycles`` (the documented formula, from the
model's statistics of the same run). Loading adds N cycles before this.

``--quick``: N = 64 only.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import numpy as np

from nms.bench import _report

#: the generator default of ``nms generate --block grid``
CAPACITY = 1024
KINDS = ("clustered", "uniform")


def _cloud(kind: str, n: int, rng) -> np.ndarray:
    """Seeded Q8.16 point clouds: uniform over +-64, or 4 uneven Gaussian clusters."""
    from nms.rtl import fixedpoint as fp

    if kind == "uniform":
        return rng.integers(-(1 << 22), 1 << 22, size=(n, 2))
    centres = rng.integers(-(1 << 21), 1 << 21, size=(4, 2))
    sizes = rng.multinomial(n, rng.dirichlet(np.ones(4)))
    pts = [c + rng.normal(0, (1 << 14) * (1 + j), size=(s, 2)).astype(np.int64)
           for j, (c, s) in enumerate(zip(centres, sizes))]
    return np.clip(np.vstack(pts), fp.Y_MIN, fp.Y_MAX)


def run(out_dir: Path, quick: bool) -> dict:
    from cocotb_tools.check_results import get_results

    from nms.gen.generate import generate
    from nms.rtl.grid import GridGeometry
    from nms.verif.models import desne
    from nms.verif.models.grid_stats import grid_run_statistics
    from nms.verif.sim.build import run_cocotb

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(13)
    cases, labels = [], []
    for n in (64,) if quick else (64, 256, 1024):
        budget = (n + 5) // 10
        for kind in KINDS:
            Y = _cloud(kind, n, rng)
            for allocation in desne.ALLOCATIONS:
                cases.append({"Y": Y.tolist(), "budget": budget, "allocation": allocation})
                labels.append(kind)
    geometry = GridGeometry(CAPACITY)
    text, meta = generate("grid", {"capacity": CAPACITY}, top="grid")
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(dir=out_dir) as tmp:
        report = (Path(tmp) / "report.json").resolve()   # cocotb runs in the build folder
        xml = run_cocotb(f"grid_c{CAPACITY}", text, "nms.verif.tb.grid",
                         {"sampler": {"capacity": CAPACITY}, "cases": cases, "seed": 1,
                          "idle": None, "backpressure": None, "report": str(report)},
                         toplevel="grid")
        n_tests, n_failed = get_results(Path(xml))
        if n_failed or not report.exists():
            raise RuntimeError(f"grid testbench failed ({n_failed} of {n_tests}); see {xml}")
        measured = json.loads(report.read_text())
    wall = time.perf_counter() - t0
    rows = []
    for case, kind, got in zip(cases, labels, measured):
        stats = grid_run_statistics(case["Y"], case["budget"], case["allocation"])
        rows.append({"n": got["n"], "budget": got["budget"], "allocation": got["allocation"],
                     "cloud": kind, "cycles": got["cycles"],
                     "cycles_formula": geometry.run_cycles(**stats),
                     "levels_tried": len(stats["level_cells"]),
                     "max_quota": stats["max_quota"]})
    result = {
        "benchmark": "grid", "quick": quick, "capacity": CAPACITY, "derived": meta["derived"],
        "rows": rows, "formula_exact": all(r["cycles"] == r["cycles_formula"] for r in rows),
        "wall_s_build_and_sim": round(wall, 1),
        "host": _report.host(),
    }
    _report.write(out_dir, "grid", result, _markdown(result))
    return result


def _markdown(r: dict) -> str:
    lines = ["# Grid sampler benchmark", "",
             f"Sampler C={r['capacity']}; M = round(0.1 N); no stalls, every index checked "
             f"against `desne.grid_select`. Cycles from the final point's acceptance to the final "
             f"index's handshake. Quick run: {r['quick']}.", "",
             "| N | M | cloud | allocation | cycles (measured) | formula | levels tried | "
             "largest quota |", "|---|---|---|---|---|---|---|---|"]
    for row in r["rows"]:
        lines.append(f"| {row['n']} | {row['budget']} | {row['cloud']} | {row['allocation']} | "
                     f"{row['cycles']} | {row['cycles_formula']} | {row['levels_tried']} | "
                     f"{row['max_quota']} |")
    lines += ["", f"Measured equals formula on every row: {r['formula_exact']}. Host: "
              f"{r['host']['machine']}, {r['host']['cpus']} CPUs, 1-min load "
              f"{r['host']['loadavg_1min_after']} after the run."]
    return "\n".join(lines) + "\n"
