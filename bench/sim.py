"""``nms bench sim``: how fast whole jobs run on the simulated device (``NmsAccelerator``).

* **Fast simulation** (:mod:`nms.verif.sim.fastsim`): the Verilated top in a shared library with
  the C++ AXI4 memory model (latency 20 cycles) and the C++ CSR master; Python only at
  transaction boundaries. Measured: simulated cycles per wall second of one whole chunk job
  (random uint8 vectors, checked bit-exact against ``desne.run_chunk``), and the Verilator +
  C++ build time of the library (the cached build's recorded time when it was already built).
  The chunk job runs 5 times on one device (each checked bit-exact); rates are medians, with the
  spread. The same job on the plain top (``reset_flop=False``: ``rst`` a top-level input, the
  build before ``fastsim._reset_flop``) gives the report's step table.
* **cocotb testbench** (``nms.verif.tb.top``, cocotbext-axi AxiRam + AxiLiteMaster + burst
  monitor) on the same job and the same small build: its simulated cycles per second from the
  cocotb results file (``sim_time_duration`` / wall time, 10 ns clock).
* **Digits through the driver**: ``Driver(RtlTransport)`` selecting 10 % of scikit-learn's digits
  training images, as ``nms run --backend rtl`` does, compared index for index with the model
  backend; total simulated cycles, per-stage busy cycles from the ``PERF_*`` registers, wall
  time, job time at 100 MHz.

Configurations: ``small`` = the test build (C = 64, K = 4, 64-bit bus); the full run adds the
generator defaults (C = 1024, K = 16) used by ``nms run --backend rtl``. ``--quick``: the small
build only, a short schedule.
"""

from __future__ import annotations

import json
import os
import platform
import time
import warnings
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
from amaranth.hdl import UnusedElaboratable

warnings.filterwarnings("ignore", category=UnusedElaboratable)

SMALL_HW = {"lanes": 8, "tile": 4, "elem_width": 8, "max_dim": 64, "k": 4, "capacity": 64,
            "neg_samples": 2, "affinity_lanes": 2, "pair_units": 1, "data_width": 64,
            "max_burst": 16}
SHORT = {"n_iter": 30, "exaggeration_iters": 10, "momentum_switch": 10, "perplexity": 3.0}
CLOCK_HZ = 100e6

def _cxxrtl_flags_shown() -> list[str]:
    """The optimisation flags of the CXXRTL build, as named in the report."""
    from nms.verif.sim.fastsim import CXXRTL_CXX_FLAGS

    return [f for f in CXXRTL_CXX_FLAGS
            if f.startswith(("-O", "-f", "-DCXXRTL_STEP")) and f != "-fPIC"]
STAGES = ("dist_cycles", "knn_cycles", "aff_cycles", "embed_cycles", "embed_run_cycles",
          "grid_cycles", "mem_beats", "mem_wait", "pair_items", "rep_items")


def _build_seconds(info: dict) -> dict:
    rec = Path(info["dir"]) / "build.json"
    recorded = json.loads(rec.read_text()) if rec.exists() else {}
    return {"cached": info["cached"], "build_seconds": recorded.get("build_seconds"),
            "verilator_seconds": recorded.get("verilator_seconds"),
            "link_seconds": recorded.get("link_seconds"), "hash": info["hash"],
            "reset_flop": recorded.get("reset_flop", False)}


def _transport(hw: dict, engine: str, reset_flop: bool):
    from nms.rtl import regmap
    from nms.sw.transport_rtl import RtlTransport
    from nms.verif.sim.fastsim import FastSim

    t = RtlTransport(hw=hw, latency=20, engine=engine)
    if not reset_flop:
        # the step rows: the same transport over another build of the same top; RtlTransport
        # always takes the default build, so swap the simulator and redo its init
        mem_size = t.sim.mem_size
        t.sim.close()
        t.sim = FastSim(t.hw, mem_size=mem_size, latency=20, engine=engine, reset_flop=False)
        t.write_reg("IRQ_ENABLE", regmap.REGMAP["IRQ_ENABLE"].pack(done=1, error=1))
    return t


def _fast_job(hw: dict, n: int, dim: int, cfg, seed: int, engine: str = "verilator", *,
              reset_flop: bool = True, repeats: int = 5) -> dict:
    """One chunk job ``repeats`` times on one simulated device (each checked bit-exact); the
    rate is the median over the repeats (a shared machine: single runs vary by +-10 %)."""
    from threadpoolctl import threadpool_limits

    from nms.sw.driver import Driver
    from nms.verif.models import desne

    t = _transport(hw, engine, reset_flop)
    drv = Driver(t, cfg)
    rng = np.random.default_rng(seed)
    X = rng.integers(0, 256, size=(n, dim))
    budget = max(1, n // 10)
    want = desne.run_chunk(X, budget, cfg, seed)["selected"].tolist()
    t.write_mem(0, X.astype(np.uint8).tobytes())
    job = drv.job_values(n, dim, budget, seed)
    runs, exact = [], True
    # BLAS worker threads would otherwise spin on the other core and be counted as our CPU time
    with threadpool_limits(limits=1):
        for _ in range(repeats):
            c0 = t.sim.cycle
            w0, p0 = time.perf_counter(), time.process_time()
            drv.run_job(job, 0, 1 << 20)
            wall, cpu = time.perf_counter() - w0, time.process_time() - p0
            runs.append((t.sim.cycle - c0, wall, cpu))
            got = np.frombuffer(t.read_mem(1 << 20, 4 * budget), dtype="<u4").tolist()
            exact = exact and got == want
    cycles = runs[0][0]
    wall = float(np.median([r[1] for r in runs]))
    cpu = float(np.median([r[2] for r in runs]))
    rates = [r[0] / max(r[2], 1e-9) for r in runs]
    out = {"n": n, "dim": dim, "budget": budget, "n_iter": cfg.n_iter, "repeats": repeats,
           "cycles_incl_csr": cycles, "job_cycles": t.read_reg("CYCLES_LO"),
           "same_cycles_every_repeat": all(r[0] == cycles for r in runs),
           "wall_seconds": wall, "cycles_per_second": cycles / wall,
           "cpu_seconds": cpu, "cycles_per_cpu_second": cycles / max(cpu, 1e-9),
           "cycles_per_cpu_second_min_max": [min(rates), max(rates)],
           "run_until_irq_cycles_per_second": t.sim_cycles / max(t.sim_seconds, 1e-9),
           "bit_exact": exact, "build": _build_seconds(t.sim.build_info),
           "engine": engine, "reset_flop": reset_flop,
           "unconverged_edges": t.sim.counters()["unconverged_edges"]}
    t.close()
    return out


def _cocotb_speed(hw: dict, n: int, dim: int, cfg_dict: dict, seed: int) -> dict:
    from amaranth.back import verilog

    from nms.rtl.top import NmsAccelerator
    from nms.verif.sim.build import run_cocotb, verilator_build

    rng = np.random.default_rng(seed)
    X = rng.integers(0, 256, size=(n, dim))
    job = {"X": X.tolist(), "budget": max(1, n // 10), "seed": seed, "cfg": cfg_dict}
    text = verilog.convert(NmsAccelerator(**hw), name="top", emit_src=False)
    # build first (a no-op when current), so the CPU time below is the simulation's only
    tb0 = time.perf_counter()
    verilator_build("top_c64", text)
    build_seconds = time.perf_counter() - tb0
    import resource

    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    xml = run_cocotb("top_c64", text, "nms.verif.tb.top", {"hw": hw, "jobs": [job], "seed": 1,
                                                           "stall": 0.0}, testcase="test_jobs")
    wall_total = time.perf_counter() - t0
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    child_cpu = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
    case = ET.parse(xml).getroot().find(".//testcase")
    props = {p.get("name"): p.get("value") for p in case.iter("property")}
    sim_ns = float(props["sim_time_duration"])
    wall = float(case.get("time"))
    return {"n": n, "dim": dim, "cycles": int(sim_ns / 10), "wall_seconds": wall,
            "cycles_per_second": sim_ns / 10 / wall, "process_seconds": wall_total,
            "process_cpu_seconds": child_cpu, "build_or_check_seconds": build_seconds,
            # the whole simulator process (start-up included): a lower bound of its rate
            "cycles_per_cpu_second": sim_ns / 10 / max(child_cpu, 1e-9),
            "passed": case.find("failure") is None and case.find("error") is None}


def _digits(hw: dict | None, cfg_extra: dict, ratio: float, seed: int,
            engine: str = "verilator") -> dict:
    from nms.sw.datasets import load_digits
    from nms.sw.driver import Driver, ModelDevice
    from nms.sw.transport_rtl import RtlTransport
    from nms.verif.models import desne

    ds = load_digits()
    X = ds.X_train.reshape(len(ds.X_train), -1).astype(np.int64)
    y = ds.y_train
    t = RtlTransport(hw=hw, latency=20, engine=engine)
    cfg = desne.DesneConfig(k=t.k, neg_samples=t.neg_samples, capacity=t.capacity, **cfg_extra)
    drv = Driver(t, cfg)
    # Driver.select itself, the per-stage counters read after each job
    stage = dict.fromkeys(STAGES, 0)

    def add_stages(_chunk):
        for key in STAGES:
            stage[key] += t.read_reg(f"PERF_{key.upper()}")

    from threadpoolctl import threadpool_limits

    limits = threadpool_limits(limits=1)   # no spinning BLAS workers in the CPU time
    w0, p0 = time.perf_counter(), time.process_time()
    c0 = t.sim.cycle
    sel = drv.select(X, y, ratio, seed=seed, on_chunk=add_stages)
    wall, cpu = time.perf_counter() - w0, time.process_time() - p0
    limits.restore_original_limits()
    sim_cycles = t.sim.cycle - c0
    counters = sel["counters"]
    t.close()
    model = Driver(ModelDevice(capacity=cfg.capacity, max_dim=t.max_dim, k=t.k,
                               neg_samples=t.neg_samples, tile=t.tile, lanes=t.lanes,
                               buffer_dim=t.buffer_dim, cand_tile=t.cand_tile), cfg)
    ref = model.select(X, y, ratio, seed=seed)["indices"]
    return {"engine": engine, "n_train": len(y), "ratio": ratio, "chunks": counters["chunks"], "n_iter": cfg.n_iter,
            "job_cycles": counters["cycles"], "simulated_cycles_incl_csr": sim_cycles,
            "wall_seconds": wall, "cycles_per_second": sim_cycles / wall,
            "cpu_seconds": cpu, "cycles_per_cpu_second": sim_cycles / max(cpu, 1e-9),
            "job_seconds_at_100MHz": counters["cycles"] / CLOCK_HZ,
            "near_bytes_read": counters["near_bytes_read"], "stages": stage,
            "equal_to_model_backend": bool(np.array_equal(sel["indices"], ref)),
            "n_selected": int(sel["indices"].size)}


def run(out_dir: Path, quick: bool) -> dict:
    from nms.sw.transport_rtl import DEFAULT_HW
    from nms.verif.models import desne

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    res = {"machine": {"python": platform.python_version(), "cpu": platform.processor() or
                       platform.machine(), "cores": os.cpu_count(),
                       "load_average_at_start": os.getloadavg()},
           "quick": quick, "clock_hz": CLOCK_HZ}
    cfg_small = desne.DesneConfig(k=SMALL_HW["k"], neg_samples=SMALL_HW["neg_samples"],
                                  capacity=SMALL_HW["capacity"], **SHORT)
    res["fast_small"] = {"hw": SMALL_HW, **_fast_job(SMALL_HW, 64, 64, cfg_small, 3)}
    # before/after of the fast simulation's own steps, same job, same harness
    res["fast_small_plain"] = {"hw": SMALL_HW, **_fast_job(SMALL_HW, 64, 64, cfg_small, 3,
                                                           reset_flop=False)}
    res["fast_small_cxxrtl"] = {"hw": SMALL_HW, **_fast_job(SMALL_HW, 64, 64, cfg_small, 3,
                                                            "cxxrtl")}
    res["cocotb_small"] = {"hw": SMALL_HW, **_cocotb_speed(SMALL_HW, 64, 64, SHORT, 3)}
    res["speedup_fast_vs_cocotb"] = (res["fast_small"]["cycles_per_second"]
                                     / res["cocotb_small"]["cycles_per_second"])
    res["speedup_cxxrtl_vs_cocotb"] = (res["fast_small_cxxrtl"]["cycles_per_second"]
                                       / res["cocotb_small"]["cycles_per_second"])
    res["digits_small"] = {"hw": SMALL_HW, **_digits(SMALL_HW, SHORT, 0.1, 0)}
    res["digits_small_cxxrtl"] = {"hw": SMALL_HW, **_digits(SMALL_HW, SHORT, 0.1, 0, "cxxrtl")}
    if not quick:
        cfg_def = desne.DesneConfig(k=DEFAULT_HW["k"], neg_samples=DEFAULT_HW["neg_samples"],
                                    capacity=DEFAULT_HW["capacity"], n_iter=60,
                                    exaggeration_iters=20, momentum_switch=20)
        res["fast_default"] = {"hw": DEFAULT_HW, **_fast_job(DEFAULT_HW, 256, 64, cfg_def, 3,
                                                                  repeats=3)}
        res["digits_default"] = {"hw": DEFAULT_HW, **_digits(None, {}, 0.1, 0)}
    res["machine"]["load_average_at_end"] = os.getloadavg()
    (out_dir / "sim.json").write_text(json.dumps(res, indent=1) + "\n")
    (out_dir / "sim.md").write_text(_markdown(res))
    return res


def _goal_lines(r: dict, fmt) -> list[str]:
    """Issue 10's goal against this report, and what each fast-simulation step gave."""
    goal = 1e6
    fast, coco = r["fast_small"], r["cocotb_small"]
    cpu_ratio = fast["cycles_per_cpu_second"] / coco["cycles_per_cpu_second"]
    out = ["## Goal: >= 1 M simulated cycles/s for the whole top, >= 100x the cocotb testbench",
           "", "| build | cycles per CPU s (median) | goal 1 M |", "|---|---|---|"]
    for key in ("fast_small", "fast_default"):
        if key in r:
            e, hw = r[key], r[key]["hw"]
            rate = e["cycles_per_cpu_second"]
            verdict = ("met" if rate >= goal else
                       f"not met: {100 * (1 - rate / goal):.0f} % short")
            out.append(f"| C={hw['capacity']}, K={hw['k']} | {fmt(rate)} | {verdict} |")
    wall_ratio = r["speedup_fast_vs_cocotb"]
    met = [name for name, x in (("wall time", wall_ratio), ("CPU time", cpu_ratio)) if x >= 100]
    out += ["", f"Speed-up over cocotb on the same job: {wall_ratio:.0f}x in wall time, "
            f"{cpu_ratio:.0f}x per CPU second (goal 100x: "
            f"{'met in ' + ' and '.join(met) if met else 'not met'}).", ""]
    if "fast_small_plain" in r:
        before = r["fast_small_plain"]["cycles_per_cpu_second"]
        out += ["Steps of the fast simulation measured here (same small build, same job, "
                "median cycles per CPU second):", "",
                "| step | cycles per CPU s | vs before |", "|---|---|---|",
                f"| before: plain top, `rst` a top-level input (Verilator re-runs all "
                f"next-state logic in its input-combinational region on every eval(), twice "
                f"per clock) | {fmt(before)} | 1.00x |",
                f"| `rst` behind a flop (`fastsim._reset_flop`, default) | "
                f"{fmt(fast['cycles_per_cpu_second'])} | "
                f"{fast['cycles_per_cpu_second'] / before:.2f}x |", ""]
    return out


def _markdown(r: dict) -> str:
    def fmt(x):
        return f"{x / 1e6:.2f} M" if x >= 1e6 else f"{x / 1e3:.1f} k"

    lines = ["# Simulation speed of the whole device (`nms bench sim`)", "",
             "Whole top (`NmsAccelerator`: datapath, AXI4 masters, CSR block) including the memory "
             "model, on this machine (2 shared cores).", "",
             "| configuration | method | job | simulated cycles | wall s | cycles/s (wall) | "
             "cycles per CPU s | build |",
             "|---|---|---|---|---|---|---|---|"]
    for key, method in (("fast_small", "fast sim, Verilator (C++ memory + CSR master, ctypes)"),
                        ("fast_small_plain", "same, plain top (rst a top input: the build "
                                             "before this step)"),
                        ("fast_small_cxxrtl", "fast sim, CXXRTL (same harness)"),
                        ("cocotb_small", "cocotb + cocotbext-axi testbench"),
                        ("fast_default", "fast sim, Verilator (C++ memory + CSR master, ctypes)"),
                        ("fast_default_cxxrtl", "fast sim, CXXRTL (same harness)")):
        if key not in r:
            continue
        e = r[key]
        hw = e["hw"]
        b = e.get("build")
        build = (f"{b['build_seconds']:.0f} s{' (cached)' if b['cached'] else ''}"
                 if b and b.get("build_seconds") else "—")
        cyc = e.get("cycles_incl_csr", e.get("cycles"))
        spread = ""
        if "cycles_per_cpu_second_min_max" in e:
            lo, hi = e["cycles_per_cpu_second_min_max"]
            spread = f" ({fmt(lo)}–{fmt(hi)}, {e['repeats']} runs)"
        lines.append(f"| C={hw['capacity']}, K={hw['k']}, {hw['data_width']}-bit | {method} | "
                     f"N={e['n']}, D={e['dim']} | {cyc} | {e['wall_seconds']:.2f} | "
                     f"{fmt(e['cycles_per_second'])} | "
                     f"{fmt(e['cycles_per_cpu_second']) if 'cycles_per_cpu_second' in e else '—'}"
                     f"{spread} | {build} |")
    la0, la1 = r["machine"]["load_average_at_start"], r["machine"]["load_average_at_end"]
    lines += ["", f"Machine load while measuring (1/5/15-min load average on "
              f"{r['machine']['cores']} cores): start {la0[0]:.1f}/{la0[1]:.1f}/{la0[2]:.1f}, "
              f"end {la1[0]:.1f}/{la1[1]:.1f}/{la1[2]:.1f}; wall-clock rates are shared-machine "
              "rates, 'cycles per CPU s' is the rate per core actually received.", ""]
    cpu_ratio = (r["fast_small"]["cycles_per_cpu_second"]
                 / r["cocotb_small"]["cycles_per_cpu_second"])
    lines += ["", f"Fast simulation vs the cocotb testbench (same configuration, same job): "
              f"**{r['speedup_fast_vs_cocotb']:.0f}x** in wall time, {cpu_ratio:.0f}x per CPU "
              f"second (cocotb's CPU includes its process start-up). Bit-exact against `desne.run_chunk`: "
              f"{r['fast_small']['bit_exact']}"
              + (f" / {r['fast_default']['bit_exact']}" if "fast_default" in r else "") + ".", ""]
    lines += _goal_lines(r, fmt)
    if "fast_small_cxxrtl" in r:
        c = r["fast_small_cxxrtl"]
        lines += [f"CXXRTL engine (`FastSim(..., engine=\"cxxrtl\")`, Yosys `write_cxxrtl` via "
                  f"`amaranth.back.cxxrtl`, g++ {' '.join(_cxxrtl_flags_shown())}): "
                  f"**{r['speedup_cxxrtl_vs_cocotb']:.0f}x** the cocotb testbench in wall time, "
                  f"{c['cycles_per_cpu_second'] / r['fast_small']['cycles_per_cpu_second']:.1f}x "
                  f"the Verilator engine per CPU second; bit-exact against `desne.run_chunk`: "
                  f"{c['bit_exact']}; clock edges where one eval() did not converge: "
                  f"{c['unconverged_edges']}.", ""]
    for key in ("digits_small", "digits_small_cxxrtl", "digits_default"):
        if key not in r:
            continue
        d = r[key]
        hw = d["hw"]
        lines += [f"## Digits through `Driver(RtlTransport)` (C={hw['capacity']}, K={hw['k']}, "
                  f"n_iter={d['n_iter']}, {d.get('engine', 'verilator')})", "",
                  f"{d['n_train']} training images, {100 * d['ratio']:g} %: {d['chunks']} chunk "
                  f"jobs, {d['n_selected']} indices, equal to the model backend: "
                  f"**{d['equal_to_model_backend']}**. Job cycles {d['job_cycles']} "
                  f"({1e3 * d['job_seconds_at_100MHz']:.2f} ms at 100 MHz); simulated "
                  f"{d['simulated_cycles_incl_csr']} cycles incl. CSR traffic in "
                  f"{d['wall_seconds']:.2f} s = {fmt(d['cycles_per_second'])} cycles/s "
                  f"({fmt(d['cycles_per_cpu_second'])} cycles per CPU second).", "",
                  "| counter (sum over the jobs) | value |", "|---|---|"]
        lines += [f"| {k} | {v} |" for k, v in d["stages"].items()]
        lines.append("")
    return "\n".join(lines)
