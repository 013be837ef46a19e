"""``nms bench datapath``: cycles per stage, unit utilisation, simulation speed and the ECP5 build
of the combined DE-SNE datapath (:class:`nms.rtl.datapath.DesneDatapath`).

* **Measured** (cocotb + Verilator, the default generator configuration, every selection checked
  against ``desne.run_chunk``): digits chunks of N = 64 and 256 (64-D, values 0..16) with a short
  schedule (``n_iter`` = 40), memory latency 20 cycles, no gaps, no output back-pressure. The
  ``perf`` counters of the hardware give the cycles per stage.
* **Formula**: the stages' own documented cycle formulas (``AffinityUnit.cycles_per_row``,
  ``EmbeddingEngine.iteration_cycles``, the distance engine's ``(T + N) * ceil(D / L)`` per tile,
  the grid sampler's ``run_cycles``) for the same N (checked against the measurement) and
  for N = C = 1024 and the default schedule of 300 iterations (too long to simulate here).
* **Simulation speed**: simulated cycles per second of the chained test set-up (random memory
  stalls/latency/gaps, output back-pressure, all stage monitors) and of the plain runs.
* **FPGA**: ``nms.fpga.build`` of the default datapath on the ULX3S-85F (ECP5): utilisation,
  post-route Fmax and the nextpnr critical path (what limits it).

``--quick``: N = 64 only and no FPGA build (an up-to-date build of the datapath by ``nms bench
timing`` is reused if present; the full run reuses it too).
"""

from __future__ import annotations

import warnings
import json
import re
import shutil
import time
from pathlib import Path

import numpy as np

from nms.bench import _report
from nms.bench.timing import critical_path

from amaranth.hdl import UnusedElaboratable

# Components are built here only to read their layouts and formulas (never elaborated in this
# process); Amaranth's public warning category for that is filtered in the benchmark process.
warnings.filterwarnings("ignore", category=UnusedElaboratable)

#: the generator defaults (as ``nms generate --block datapath`` and ``nms build`` use them)
DEFAULT_HW: dict = {}
SCHEDULE = {"n_iter": 40, "exaggeration_iters": 13, "momentum_switch": 13}
FULL_SCHEDULE_ITERS = 300
BOARD = "ulx3s-85f"


def _hw():
    from nms.rtl.datapath import DesneDatapath

    dp = DesneDatapath(**DEFAULT_HW)
    return dp


def _digits(n: int, label: int | None = None) -> np.ndarray:
    from nms.sw.datasets import load_digits

    ds = load_digits()
    X = ds.X_train.reshape(len(ds.X_train), -1).astype(np.int64)
    if label is not None:
        X = X[ds.y_train == label]
    assert len(X) >= n, f"only {len(X)} digits images"
    return X[:n]


def formula(dp, X: np.ndarray, budget: int, cfg, seed: int) -> dict:
    """Cycle estimate per stage from the stages' documented formulas (no stalls)."""
    from nms.verif.models import desne
    from nms.verif.models.grid_stats import grid_run_statistics

    n, dim = X.shape
    T, L = dp.tile, dp.lanes
    kk = min(dp.k, n - 1)
    bpv = -(-dim // L)
    tiles = -(-n // T)
    pass_cycles = (T + n) * bpv
    dist = tiles * pass_cycles
    cpr = dp.affinity.cycles_per_row(kk, 0 if cfg.search == "robust" else 1)
    # rows of a tile are ready after its pass; the affinity unit takes them one at a time
    front = max(dist + T * cpr, pass_cycles + n * cpr)
    it = dp.embedding.iteration_cycles(n, kk)
    init = 2 * n + 2 * 8  # two seed hashes, then one hash per coordinate (pipelined)
    embed_after_load = init + cfg.n_iter * it + n
    res = desne.run_chunk(X, budget, cfg, seed)
    Y = res["Y"]
    cover = cfg.exemplar == "cover"
    grid = n + dp.grid.run_cycles(**grid_run_statistics(Y, budget, cfg.allocation), cover=cover)
    if cover:   # the cover unit's greedy after the grid's cells (its build overlaps the embedding)
        from nms.rtl.cover import cover_cycles
        from nms.verif.models.cover_stats import grid_cover_run_statistics

        start = desne.mean_nearest(res["Xk"]) if cfg.cover_start == "mean" else None
        grid += cover_cycles(**grid_cover_run_statistics(Y, res["nbr"], res["P"], budget,
                                                         cfg.allocation, start))
    return {"dist_cycles": dist, "affinity_cycles_per_row": cpr, "front_end_cycles": front,
            "embed_iteration_cycles": it, "embed_cycles_after_load": embed_after_load,
            "grid_cycles": grid, "total_cycles": front + embed_after_load + grid,
            "distance_bound": dist + T * cpr >= pass_cycles + n * cpr}


def _fpga_build_dir() -> Path:
    """The whole-datapath build folder of ``nms bench timing`` (relative to the working dir), so
    running both benchmarks places and routes the datapath once."""
    return Path("build") / "timing" / "datapath"


def _fpga(quick: bool) -> dict | None:
    """Build (or reuse) the default datapath on the ULX3S-85F and summarise the report.

    An existing report is reused when it has the default parameters and is newer than every
    ``nms.rtl`` source (a place-and-route of the whole datapath takes tens of minutes); the quick
    run never builds.
    """
    import nms.rtl
    from nms.fpga.build import build

    build_dir = _fpga_build_dir()
    report_file = build_dir / "report.json"
    newest_rtl = max(f.stat().st_mtime for f in Path(nms.rtl.__file__).parent.glob("*.py"))
    report = None
    if report_file.exists() and report_file.stat().st_mtime > newest_rtl:
        report = json.loads(report_file.read_text())
        if report.get("params") != _hw().parameters:
            report = None
    if report is None:
        if quick:
            return None
        report = build(board=BOARD, block="datapath", params=DEFAULT_HW, out_dir=build_dir)
    tim = build_dir / "top.tim"
    crit = critical_path(tim.read_text(errors="replace")) if tim.exists() else {}
    return {"board": report["board"], "device": report["device"], "params": report["params"],
            "utilisation": report["utilisation"], "fmax_mhz": report["fmax_mhz"],
            "goal_mhz": 125.0, "build_seconds": report["build_seconds"],
            "elaborate_seconds": report["elaborate_seconds"], "critical_path": crit,
            "cells": report["cells"]}


def run(out_dir: Path, quick: bool, *, fpga: bool = True) -> dict:
    from amaranth.back import verilog

    from nms.rtl.datapath import DesneDatapath
    from nms.verif.models import desne
    from nms.verif.sim.build import build_dir_root, run_cocotb, verilator_build
    from nms.verif.tb.datapath import job_config

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    dp = _hw()

    t0 = time.perf_counter()
    text = verilog.convert(DesneDatapath(**DEFAULT_HW), name="top", emit_src=False)
    generate_s = time.perf_counter() - t0
    name = "bench_datapath"
    shutil.rmtree(build_dir_root() / name, ignore_errors=True)  # measure a clean build
    t0 = time.perf_counter()
    verilator_build(name, text, "top")
    build_s = time.perf_counter() - t0

    sizes = [64] if quick else [64, 256]
    jobs = []
    for n in sizes:
        X = _digits(n, label=3 if n <= 130 else None)
        jobs.append({"X": X.tolist(), "budget": max(1, round(0.1 * n)), "seed": n,
                     "cfg": dict(SCHEDULE)})

    def sim(jobs, params, tag):
        report = out_dir / f"datapath_tb_{tag}.json"
        report.unlink(missing_ok=True)
        run_cocotb(name, text, "nms.verif.tb.datapath",
                   {"datapath": DEFAULT_HW, "jobs": jobs, "report": str(report.resolve()),
                    **params}, toplevel="top")
        out = json.loads(report.read_text())
        report.unlink()
        if not all(j["ok"] for j in out):
            raise RuntimeError(f"datapath bench run {tag} failed: {out}")
        return out

    plain = sim(jobs, {"mem": {"latency": [20, 20]}, "backpressure": 0.0,
                       "check_stages": False}, "plain")
    chained = sim(jobs[:1], {"mem": {"req_stall": 0.3, "latency": [1, 40], "gap": 0.25},
                             "backpressure": 0.3, "check_stages": True, "seed": 11}, "chained")

    stages = []
    for job, res in zip(jobs, plain):
        X = np.asarray(job["X"], dtype=np.int64)
        cfg = job_config(job, DEFAULT_HW)
        f = formula(dp, X, job["budget"], cfg, job["seed"])
        p = res["perf"]
        n, dim, kk = res["n"], res["dim"], res["kk"]
        U, T, L = dp.pair_units, dp.tile, dp.lanes
        stages.append({
            "n": n, "dim": dim, "budget": job["budget"], "kk": kk, "n_iter": cfg.n_iter,
            "measured": {
                "total_cycles": p["cycles"], "dist_cycles": p["dist_cycles"],
                "knn_cycles": p["knn_cycles"], "affinity_cycles": p["aff_cycles"],
                "affinity_cycles_per_row": p["aff_cycles"] / n,
                "embed_cycles": p["embed_cycles"],
                "embed_run_cycles": p["embed_run_cycles"],
                # init (about 2N + 16) and the final update are inside the run window
                "embed_iteration_cycles": (p["embed_run_cycles"] - 2 * n - 16) / cfg.n_iter,
                "grid_cycles": p["grid_cycles"],
                "bytes_read": p["bytes_read"], "mem_beats": p["mem_beats"],
                "mem_wait_cycles": p["mem_wait"],
                "dist_stall_cycles": p["dist_stall"],
                "distance_busy_fraction": p["dist_beats"] / p["dist_cycles"],
                "mac_utilisation": n * n * dim / (T * L * p["dist_cycles"]),
                "pair_unit_busy_repulsive": p["rep_items"] / (U * max(p["rep_cycles"], 1)),
                "pair_unit_busy_pair_phase": p["pair_items"] / (U * max(p["pair_cycles"], 1)),
                # of the iterations proper (init + iterations window, the load excluded)
                "pair_phase_share_of_embedding": p["pair_cycles"] / p["embed_run_cycles"],
            },
            "formula": f,
            "sim_cycles_per_s": res["cycles_tb"] / res["wall_seconds"],
        })
    # N = C with the full default schedule: formula only
    C = dp.capacity
    Xc = _digits(C)
    cfg_full = desne.DesneConfig(k=dp.k, neg_samples=dp.neg_samples, capacity=C)
    f_full = formula(dp, Xc, round(0.1 * C), cfg_full, 0)
    f_full["n"], f_full["dim"], f_full["n_iter"] = C, Xc.shape[1], cfg_full.n_iter
    f_full["dim784_dist_cycles"] = -(-C // dp.tile) * (dp.tile + C) * -(-784 // dp.lanes)

    fpga = _fpga(quick) if fpga else None
    result = {
        "benchmark": "datapath", "quick": quick, "params": dp.parameters,
        "derived": dp.derived, "schedule": SCHEDULE,
        "stages": stages, "formula_full_chunk": f_full,
        "sim": {"chained_test_cycles_per_s": chained[0]["cycles_tb"] / chained[0]["wall_seconds"],
                "chained_test_cycles": chained[0]["cycles_tb"],
                "plain_cycles_per_s": [s["sim_cycles_per_s"] for s in stages],
                "verilog_generate_s": round(generate_s, 2),
                "verilator_build_s": round(build_s, 1)},
        "fpga": fpga,
        "host": _report.host("loadavg_1min"),
    }
    _report.write(out_dir, "datapath", result, _markdown(result))
    return result


def _short(text: str, keep: int = 110) -> str:
    """nextpnr's cell names grow with every LUT/carry split: keep their head and tail."""
    return text if len(text) <= keep else text[:keep // 2] + " ... " + text[-keep // 2:]


def _markdown(r: dict) -> str:
    p = r["params"]
    lines = ["# DE-SNE datapath benchmark", "",
             f"Quick run: {r['quick']}. Configuration (generator defaults): "
             + ", ".join(f"{k}={v}" for k, v in p.items()) + ".", "",
             "## Cycles per stage (measured by the hardware counters; formula in brackets)", "",
             f"Digits chunks (64-D), schedule n_iter={r['schedule']['n_iter']}, memory latency "
             "20 cycles, no gaps, no back-pressure; every selection equal to `run_chunk`. Stage "
             "windows overlap (the kNN, affinity and embedding load run concurrently).", "",
             "`distance` is the engine's window (first query beat to final candidate beat, "
             "stalls included); its bracket is the engine alone with no stall, "
             "`tiles * (T + N) * ceil(D / L)`. `embedding` is the engine's busy time (it loads "
             "while the affinity unit works); the per-iteration figure is measured from the "
             "`embed_run_cycles` window.", "",
             "| N | total | distance | kNN | affinity (per row) | embedding (per iteration) "
             "| grid | bytes read |", "|---|---|---|---|---|---|---|---|"]
    for s in r["stages"]:
        m, f = s["measured"], s["formula"]
        lines.append(
            f"| {s['n']} | {m['total_cycles']} [{f['total_cycles']}] | {m['dist_cycles']} "
            f"[{f['dist_cycles']}] | {m['knn_cycles']} | {m['affinity_cycles']} "
            f"({m['affinity_cycles_per_row']:.0f} [{f['affinity_cycles_per_row']}]) | "
            f"{m['embed_cycles']} ({m['embed_iteration_cycles']:.0f} "
            f"[{f['embed_iteration_cycles']}]) | {m['grid_cycles']} "
            f"[{f['grid_cycles']}] | {m['bytes_read']} |")
    ff = r["formula_full_chunk"]
    lines += ["", f"Formula only, N = C = {ff['n']} (digits, 64-D), the default schedule "
              f"(n_iter = {ff['n_iter']}): total {ff['total_cycles']} cycles = front end "
              f"(distance + kNN + affinity) {ff['front_end_cycles']} + embedding "
              f"{ff['embed_cycles_after_load']} ({ff['embed_iteration_cycles']} per iteration) + "
              f"grid {ff['grid_cycles']}; at 784-D the distance passes alone take "
              f"{ff['dim784_dist_cycles']} cycles.", "",
              "## Utilisation", "",
              "| N | distance engine busy | MAC utilisation | engine stalled by kNN (cycles) "
              "| memory wait (cycles) | pair units busy, repulsive phase | pair units busy, "
              "pair phase | pair phase share of the iterations |",
              "|---|---|---|---|---|---|---|---|"]
    for s in r["stages"]:
        m = s["measured"]
        lines.append(
            f"| {s['n']} | {m['distance_busy_fraction']:.3f} | {m['mac_utilisation']:.3f} | "
            f"{m['dist_stall_cycles']} | {m['mem_wait_cycles']} | "
            f"{m['pair_unit_busy_repulsive']:.3f} | {m['pair_unit_busy_pair_phase']:.3f} | "
            f"{m['pair_phase_share_of_embedding']:.3f} |")
    lines += ["", "The kNN selector itself takes one distance beat per cycle; it holds the engine "
              "(`engine stalled by kNN`) only while its output bank still holds the previous "
              "tile's rows, i.e. when the affinity unit (T rows x cycles per row per tile) is "
              "slower than a distance pass ((T + N) x ceil(D / L) cycles). The pair-unit figures "
              "are pairs issued / (units x cycles) over the repulsive cycles and the whole pair "
              "phase."]
    sm = r["sim"]
    lines += ["", "## Simulation", "",
              f"- chained test set-up (random memory stalls/latency/gaps, back-pressure, stage "
              f"monitors): {sm['chained_test_cycles_per_s']:.0f} simulated cycles/s "
              f"({sm['chained_test_cycles']} cycles)",
              "- plain runs: " + ", ".join(f"{c:.0f}" for c in sm["plain_cycles_per_s"])
              + " cycles/s",
              f"- Verilog generation {sm['verilog_generate_s']} s, clean Verilator build "
              f"{sm['verilator_build_s']} s", ""]
    fp_ = r["fpga"]
    if fp_:
        u = fp_["utilisation"]
        lines += ["## FPGA (ULX3S-85F, ECP5 LFE5U-85F)", "",
                  f"Post-route Fmax **{fp_['fmax_mhz']:.1f} MHz** (goal {fp_['goal_mhz']:.0f} MHz)"
                  f"; build {fp_['build_seconds']:.0f} s.", "",
                  "| resource | used | available | % |", "|---|---|---|---|"]
        for key, v in u.items():
            if isinstance(v, dict) and "used" in v:
                lines.append(f"| {key} ({v.get('cell', '')}) | {v['used']} | {v['available']} | "
                             f"{v['percent']:.1f} |")
        cp = fp_["critical_path"]
        if cp:
            path = [_short(t) for t in cp["lines"] if "Source" in t or "Sink" in t][:30]
            lines += ["", f"Critical path ({cp['clock']}): logic {cp['logic_ns']} ns + routing "
                      f"{cp['routing_ns']} ns, from `{_short(cp['source'])}` to "
                      f"`{_short(cp['sink'])}`:", "", "```", *path, "```", ""]
    else:
        lines += ["## FPGA", "", "Not built in this run (quick, or `fpga=False`, and no up-to-date "
                  "`nms build` report of the default datapath).", ""]
    return "\n".join(lines) + "\n"
