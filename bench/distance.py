"""``nms bench distance``: cycles, MAC utilisation and simulation speed of the DistanceEngine.

Runs the default engine (L=8, T=4, w=8, max_dim=1024) at dim=784 (Fashion-MNIST) under
Verilator with no stalls, every result checked by the testbench's scoreboard, and reports:

* cycles per query tile over a full candidate stream (first query beat in -> last result out,
  tile loads and pipeline fill included);
* MAC utilisation = useful MACs / (T * L * cycles), useful = T * dim per candidate;
* Verilog generation time, clean Verilator build time, simulated cycles per second.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import time
from pathlib import Path

ENGINE = {"lanes": 8, "tile": 4, "elem_width": 8, "max_dim": 1024}


def run(out_dir: Path, quick: bool) -> dict:
    from cocotb_tools.check_results import get_results

    from nms.gen.generate import generate
    from nms.verif.sim.build import build_dir_root, run_cocotb, verilator_build

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    dim, n_candidates, n_tiles = (784, 200, 1) if quick else (784, 1000, 2)

    t0 = time.perf_counter()
    verilog, meta = generate("distance", ENGINE, top="distance")
    generate_s = time.perf_counter() - t0

    name = "bench_distance"
    shutil.rmtree(build_dir_root() / name, ignore_errors=True)  # measure a clean build
    t0 = time.perf_counter()
    verilator_build(name, verilog, "distance")
    build_s = time.perf_counter() - t0
    load_after_build = os.getloadavg()[0]

    report_file = out_dir / "distance_tb.json"
    report_file.unlink(missing_ok=True)
    results_xml = run_cocotb(
        name, verilog, "nms.verif.tb.distance",
        {"engine": ENGINE, "seed": 1,
         "bench": {"dim": dim, "n_candidates": n_candidates, "n_tiles": n_tiles,
                   "report": str(report_file.resolve())}},
        toplevel="distance", testcase="bench_throughput")
    n_tests, n_failed = get_results(Path(results_xml))
    if n_failed or not report_file.exists():
        raise RuntimeError(f"distance benchmark testbench failed ({n_failed} of {n_tests}); "
                           f"see {results_xml}")
    sim = json.loads(report_file.read_text())
    report_file.unlink()

    result = {
        "benchmark": "distance",
        "quick": quick,
        "engine": ENGINE,
        "derived": meta["derived"],
        **sim,
        "verilog_generate_s": round(generate_s, 3),
        "verilator_build_s": round(build_s, 2),
        # wall times depend on what else runs: record the load next to them
        "host": {"machine": platform.machine(), "cpus": os.cpu_count(),
                 "python": platform.python_version(),
                 "loadavg_1min_after_build": round(load_after_build, 2),
                 "loadavg_1min_after_sim": round(os.getloadavg()[0], 2)},
        "generator": meta["generator"],
    }
    (out_dir / "distance.json").write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    (out_dir / "distance.md").write_text(_markdown(result))
    return result


def _markdown(r: dict) -> str:
    e, d = r["engine"], r["derived"]
    rows = [
        ("engine", f"L={e['lanes']} lanes, T={e['tile']} queries, w={e['elem_width']} bit, "
                   f"max_dim={e['max_dim']} ({d['macs_per_cycle']} MACs/cycle)"),
        ("workload", f"dim={r['dim']}, {r['n_candidates']} candidates x {r['n_tiles']} tile(s), "
                     "no stalls, every result checked"),
        ("cycles per query tile", f"{r['cycles_per_tile']:.0f}"),
        ("MAC utilisation (useful / T*L*cycles)", f"{r['mac_utilisation']:.4f}"),
        ("lane utilisation while streaming (dim / (L*beats))",
         f"{r['lane_utilisation_streaming']:.4f}"),
        ("result latency (final beat in -> result out)", f"{r['result_latency_cycles']} cycles"),
        ("Verilog generation", f"{r['verilog_generate_s']:.2f} s"),
        ("Verilator clean build", f"{r['verilator_build_s']:.1f} s"),
        ("simulation speed (cocotb + Verilator, Python per-cycle tb)",
         f"{r['sim_cycles_per_s']:.0f} cycles/s wall ({r['sim_cycles']} cycles in "
         f"{r['sim_wall_s']:.1f} s); {r['sim_cycles_per_cpu_s']:.0f} cycles per CPU-second"),
        ("host load (1-min load average after build / after simulation)",
         f"{r['host']['loadavg_1min_after_build']} / {r['host']['loadavg_1min_after_sim']}"),
    ]
    lines = ["# Distance engine benchmark", "",
             f"Quick run: {r['quick']}. Host: {r['host']['machine']}, {r['host']['cpus']} CPUs.", "",
             "| measure | value |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in rows]
    return "\n".join(lines) + "\n"
