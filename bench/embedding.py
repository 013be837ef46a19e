"""``nms bench embedding``: cycles per iteration and pair-lane utilisation of the embedding engine.

Runs the generator's default engine (C = 1024, k = 16, S = 8) with 1 and 2 pair units under
Verilator with no stalls (every coordinate checked against ``desne.embed`` by the testbench's
scoreboard). For each N two jobs run, of 1 and 3 iterations ("lists" problems: random
neighbour lists and P, k' = 16); half the difference of their config-to-first-coordinate cycles
is the exact cycles per iteration, reported beside ``nms.rtl.embedding.iteration_cycles`` (the
documented formula, also for N = C, too long to simulate here). From the 3-iteration job's
``perf`` counters: ``rep_busy`` = repulsive pairs / (U x cycles in which some lane issued one),
``pair_busy`` = all pairs / (U x pair-phase cycles, drain included), and the update phase's
share of an iteration (N cycles, not parallelised).

``--quick``: N = 64 only.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

from nms.bench import _report

#: the generator defaults of ``nms generate --block embedding`` (pair units varied)
ENGINE = {"capacity": 1024, "k": 16, "neg_samples": 8}
PAIR_UNITS = (1, 2)


def measure_cycles(engine: dict, sizes, *, kk: int | None = None, work_dir=None) -> list[dict]:
    """Measured cycles per iteration of ``EmbeddingEngine(**engine)`` for each N in ``sizes``.

    Returns one dict per N: ``n``, ``kk``, ``pair_units``, ``neg_samples``,
    ``iteration_cycles`` (measured), ``iteration_cycles_formula``, ``rep_busy``, ``pair_busy``.
    """
    from amaranth.back import verilog
    from cocotb_tools.check_results import get_results

    from nms.rtl.embedding import EmbeddingEngine, iteration_cycles
    from nms.verif.sim.build import run_cocotb

    eng = EmbeddingEngine(**engine)
    kk = kk or eng.k
    cases = []
    for n in sizes:
        for iters in (1, 3):
            cases.append({"kind": "lists", "name": f"n{n}_it{iters}", "n": n,
                          "kk": min(kk, n - 1), "seed": 1,
                          "cfg": {"n_iter": iters, "exaggeration_iters": 1,
                                  "momentum_switch": 1}})
    key = "_".join(f"{k}{v}" for k, v in sorted(engine.items()))
    text = verilog.convert(eng, name="top", emit_src=False)
    with tempfile.TemporaryDirectory(dir=work_dir) as tmp:
        report = (Path(tmp) / "report.json").resolve()   # cocotb runs in the build folder
        xml = run_cocotb(f"embedding_{key}", text, "nms.verif.tb.embedding",
                         {"engine": engine, "cases": cases, "idle": 0.0, "backpressure": 0.0,
                          "report": str(report)})
        n_tests, n_failed = get_results(Path(xml))
        if n_failed or not report.exists():
            raise RuntimeError(f"embedding testbench failed ({n_failed} of {n_tests}); see {xml}")
        jobs = json.loads(report.read_text())
    out = []
    for one, three in zip(jobs[0::2], jobs[1::2]):
        perf, U = three["perf"], three["pair_units"]
        measured = (three["cycles_to_first_coord"] - one["cycles_to_first_coord"]) / 2
        out.append({"n": one["n"], "kk": one["kk"], "pair_units": U,
                    "neg_samples": one["neg_samples"], "iteration_cycles": measured,
                    "iteration_cycles_formula": iteration_cycles(
                        one["n"], one["kk"], pair_units=U, neg_samples=eng.neg_samples),
                    "rep_busy": perf["rep_items"] / (U * perf["rep_cycles"]),
                    "pair_busy": perf["pair_items"] / (U * perf["pair_cycles"]),
                    "update_share": one["n"] / measured})
    return out


def run(out_dir: Path, quick: bool) -> dict:
    from nms.rtl.embedding import iteration_cycles

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    sizes = (64,) if quick else (64, 256)
    rows, wall = [], {}
    for U in PAIR_UNITS:
        engine = {**ENGINE, "pair_units": U}
        t0 = time.perf_counter()
        rows += measure_cycles(engine, sizes, work_dir=out_dir)
        wall[f"u{U}"] = round(time.perf_counter() - t0, 1)
    C = ENGINE["capacity"]
    full = [{"n": C, "kk": ENGINE["k"], "pair_units": U,
             "iteration_cycles_formula": iteration_cycles(
                 C, ENGINE["k"], pair_units=U, neg_samples=ENGINE["neg_samples"])}
            for U in PAIR_UNITS]
    result = {
        "benchmark": "embedding", "quick": quick, "engine": ENGINE, "pair_units": PAIR_UNITS,
        "measured": rows, "formula_at_capacity": full,
        "formula_exact": all(r["iteration_cycles"] == r["iteration_cycles_formula"]
                             for r in rows),
        "wall_s_build_and_sim": wall,
        "host": _report.host(),
    }
    _report.write(out_dir, "embedding", result, _markdown(result))
    return result


def _markdown(r: dict) -> str:
    e = r["engine"]
    lines = ["# Embedding engine benchmark", "",
             f"Engine C={e['capacity']}, k={e['k']}, S={e['neg_samples']}; no stalls, every "
             f"coordinate checked against `desne.embed`. Quick run: {r['quick']}.", "",
             "| N | k' | U | cycles / iteration (measured) | formula | repulsive-phase busy "
             "| pair-phase busy (drain incl.) | update share |",
             "|---|---|---|---|---|---|---|---|"]
    for row in r["measured"]:
        lines.append(f"| {row['n']} | {row['kk']} | {row['pair_units']} | "
                     f"{row['iteration_cycles']:.0f} | {row['iteration_cycles_formula']} | "
                     f"{row['rep_busy']:.3f} | {row['pair_busy']:.3f} | "
                     f"{row['update_share']:.3f} |")
    for row in r["formula_at_capacity"]:
        lines.append(f"| {row['n']} (= C) | {row['kk']} | {row['pair_units']} | — | "
                     f"{row['iteration_cycles_formula']} | | | |")
    lines += ["", f"Measured equals formula on every row: {r['formula_exact']}. Host: "
              f"{r['host']['machine']}, {r['host']['cpus']} CPUs, 1-min load "
              f"{r['host']['loadavg_1min_after']} after the runs."]
    return "\n".join(lines) + "\n"
