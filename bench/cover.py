"""``nms bench cover``: cycles per chunk of the coverage-exemplar unit, measured and formula.

Runs :class:`nms.rtl.cover.CoverSelector` (C = 1024, K = 16, the datapath defaults) under
Verilator with no stalls on one chunk of N = 1024 points (the first 1024 training images of the
bundled digits set: the cycles depend on the kNN graph, not on the vector length), with the kNN
lists and affinities of the bit-exact model, the grid's cells and proportional quotas over the
model's embedding and the chunk-mean start (``PRESETS["desne"]``), at budgets of 1 / 5 / 10 /
20 %. Every pick (in order) and every index is checked against ``desne.cover_select`` by the
testbench's scoreboard. Reported: the build (reverse lists and initial gains, after the final
row beat), the greedy + emission (after the final cell/quota beat), the formula
(``nms.rtl.cover.cover_cycles`` / ``build_cycles``) and the estimate of
``docs/algorithm.md`` §11a.3 (``b · (n + 290)``).

``--quick``: N = 256.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import numpy as np

from nms.bench import _report

CAPACITY, K = 1024, 16
RATIOS = (0.01, 0.05, 0.10, 0.20)


def run(out_dir: Path, quick: bool) -> dict:
    from amaranth.back import verilog
    from cocotb_tools.check_results import get_results

    from nms.rtl.cover import CoverSelector, build_cycles, cover_cycles
    from nms.sw.datasets import load_digits
    from nms.verif.models import desne
    from nms.verif.models.cover_stats import cover_run_statistics, slots_and_quotas
    from nms.verif.sim.build import run_cocotb

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    n = 256 if quick else 1024
    X = load_digits().train_flat()[:n].astype(np.int64)
    cfg = desne.PRESETS["desne"]
    nbr, dist = desne.knn(X, cfg.k)
    P = desne.affinities(dist, cfg.perplexity, cfg.search)["P"]
    Y = desne.embed(nbr, P, cfg, seed=0)
    start = desne.mean_nearest(X)
    cases, stats = [], []
    for ratio in RATIOS:
        budget = max(1, int(round(ratio * n)))
        _, info = desne.grid_cover_select(Y, nbr, P, budget, "proportional", details=True)
        cell, quota = slots_and_quotas(info["cell"], info["quota"])
        cases.append({"nbr": nbr.tolist(), "P": P.tolist(), "cell": cell.tolist(),
                      "quota": quota.tolist(), "start": int(start), "budget": budget})
        stats.append(cover_run_statistics(nbr, P, cell, quota, start, budget))
    unit = CoverSelector(capacity=CAPACITY, k=K, max_cells=CAPACITY)
    text = verilog.convert(unit, name="cover", emit_src=False)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(dir=out_dir) as tmp:
        report = (Path(tmp) / "report.json").resolve()
        cases_file = (Path(tmp) / "cases.json").resolve()
        cases_file.write_text(json.dumps(cases))
        xml = run_cocotb(f"cover_c{CAPACITY}_k{K}", text, "nms.verif.tb.cover",
                         {"selector": unit.parameters, "cases_file": str(cases_file), "seed": 1,
                          "idle": None,
                          "backpressure": None, "report": str(report)}, toplevel="cover")
        n_tests, n_failed = get_results(Path(xml))
        if n_failed or not report.exists():
            raise RuntimeError(f"cover testbench failed ({n_failed} of {n_tests}); see {xml}")
        measured = json.loads(report.read_text())
    wall = time.perf_counter() - t0
    rows = []
    for ratio, case, st, got in zip(RATIOS, cases, stats, measured):
        b = case["budget"]
        rows.append({
            "ratio": ratio, "n": n, "budget": b, "cycles": got["cycles"],
            "cycles_formula": cover_cycles(**st), "build_cycles": got["build_cycles"],
            "build_formula": build_cycles(n=n, kk=nbr.shape[1]),
            "estimate_11a3": b * (n + 290),
            "mean_in_degree_of_picks": round(float(np.mean(st["in_degree"])), 1),
            "mean_covered_rows": round(float(np.mean(st["covered_rows"])), 1),
        })
    result = {
        "benchmark": "cover", "quick": quick, "capacity": CAPACITY, "k": K,
        "data": f"digits train images 0..{n - 1} (64-D), PRESETS['desne'] stages 1-3, seed 0",
        "derived": unit.derived, "rows": rows,
        "formula_exact": all(r["cycles"] == r["cycles_formula"]
                             and r["build_cycles"] == r["build_formula"] for r in rows),
        "wall_s_build_and_sim": round(wall, 1),
        "host": _report.host(),
    }
    _report.write(out_dir, "cover", result, _markdown(result))
    return result


def _markdown(r: dict) -> str:
    lines = ["# Coverage-exemplar unit benchmark", "",
             f"CoverSelector C={r['capacity']}, K={r['k']}; {r['data']}; grid cells and "
             f"proportional quotas over the model's embedding, chunk-mean start; no stalls, every "
             f"pick (in order) and index checked against `desne.cover_select`. *greedy* = cycles "
             f"from the final cell/quota beat to the final index; *build* = reverse lists and "
             f"initial gains after the final kNN row beat (it overlaps the embedding in the "
             f"datapath). Quick run: {r['quick']}.", "",
             "| ratio | N | b | greedy (measured) | formula | §11a.3 estimate b·(n+290) | build "
             "(measured) | formula | mean in-degree of picks | rows covered per pick |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for x in r["rows"]:
        lines.append(f"| {x['ratio']:.0%} | {x['n']} | {x['budget']} | {x['cycles']} | "
                     f"{x['cycles_formula']} | {x['estimate_11a3']} | {x['build_cycles']} | "
                     f"{x['build_formula']} | {x['mean_in_degree_of_picks']} | "
                     f"{x['mean_covered_rows']} |")
    lines += ["", f"Measured equals formula on every row: {r['formula_exact']}. Host: "
              f"{r['host']['machine']}, {r['host']['cpus']} CPUs, 1-min load "
              f"{r['host']['loadavg_1min_after']} after the run; build + simulation "
              f"{r['wall_s_build_and_sim']} s."]
    return "\n".join(lines) + "\n"
