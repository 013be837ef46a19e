"""Every refusal condition of the declared job interface on every backend, same error cause.

The sweep is generated from ``nms.rtl.regmap`` (each bound of each ranged job field: one past
it, and the far end of the field's width) and checked against a hand-written table of the
conditions the contract must contain, so a declaration that lost a range fails here. Each case
runs on

* the model device through the Driver (``JobRefusedError`` with the cause, field and value), and
* the RTL job controller inside the Verilated datapath (the cocotb datapath testbench, on the
  build parameter set of ``tests/test_datapath.py``, so no extra Verilator build): ``error``,
  ``done``, no memory request, no index, and the same ``cause``.

The boundary values that must be accepted run as whole jobs on both backends and must equal
the bit-exact model (and each other); start while busy reports ``START_WHILE_BUSY`` on both.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
from amaranth.back import verilog

from nms.rtl import regmap
from nms.rtl.datapath import DesneDatapath
from nms.sw.driver import Driver, JobRefusedError, ModelDevice
from nms.verif.models import desne
from nms.verif.sim.build import run_cocotb

#: the parameter set of tests/test_datapath.py (same Verilog -> the same Verilator build)
HW = {"lanes": 8, "tile": 4, "elem_width": 8, "max_dim": 64, "k": 8, "capacity": 128,
      "neg_samples": 4, "affinity_lanes": 4, "pair_units": 2, "buffer_dim": 0, "cand_tile": 1}
PARAMS = {"capacity": HW["capacity"], "max_dim": HW["max_dim"]}
#: a short schedule; learning rate and shift are part of the sweep
SCHEDULE = {"n_iter": 6, "exaggeration_iters": 2, "momentum_switch": 3, "perplexity": 5.0}
CODE = {name: c.code for name, c in regmap.CAUSE.items()}

_rng = np.random.default_rng(21)
X_BASE = _rng.integers(0, 256, size=(9, 64))
BUDGET_BASE = 4
SEED = 3


def _cfg(**extra) -> desne.DesneConfig:
    return desne.DesneConfig(k=HW["k"], neg_samples=HW["neg_samples"], capacity=HW["capacity"],
                             **{**SCHEDULE, **extra})


def _base_job() -> dict:
    drv = Driver(_model(), _cfg())
    return drv.job_values(*X_BASE.shape, BUDGET_BASE, SEED)


def _model() -> ModelDevice:
    return ModelDevice.from_hw(HW)   # the streamed DesneDatapath(**HW): buffer_dim = 0


def refusal_cases(base: dict) -> list[tuple[str, int, str]]:
    """``(key, value, cause name)`` for every check of every ranged job field: one past the
    bound, and the far end of the field's width (values are never truncated)."""
    env = {**PARAMS, **base}
    cases = []
    for f in regmap.JOB_FIELDS:
        for side, bound in f.checks():
            b = bound.evaluate(env) if isinstance(bound, regmap.Ref) else bound
            values = {b - 1, 0} if side == "lo" else {b + 1, (1 << f.width) - 1}
            for v in sorted(values):
                if 0 <= v < (1 << f.width) and not (side == "lo" and v >= b):
                    cases.append((f.key, v, f.cause.name))
    return cases


def boundary_jobs(base: dict) -> list[dict]:
    """Two jobs that sit on every bound of every ranged field: all lowest, all highest."""
    env = {**PARAMS, **base}
    lo_job, hi_job = dict(base), dict(base)
    for f in regmap.JOB_FIELDS:
        if not f.ranged:
            continue
        lo, hi = f.static_range()
        lo_job[f.key] = max([lo] + [b.evaluate({**env, **lo_job}) for b in f.lo
                                    if isinstance(b, regmap.Ref)])
        hi_job[f.key] = min([hi] + [b.evaluate({**env, **hi_job}) for b in f.hi
                                    if isinstance(b, regmap.Ref)])
    return [lo_job, hi_job]


#: the conditions the contract must refuse, written out by hand (the issue's bugs included)
MUST_REFUSE = {
    ("n", 1, "BAD_N"), ("n", 0, "BAD_N"), ("n", 129, "BAD_N"), ("n", (1 << 32) - 1, "BAD_N"),
    ("dim", 0, "BAD_DIM"), ("dim", 65, "BAD_DIM"),
    ("budget", 0, "BAD_BUDGET"), ("budget", 10, "BAD_BUDGET"),
    ("h_target", 1 << 24, "BAD_H_TARGET"), ("h_target", (1 << 32) - 1, "BAD_H_TARGET"),
    ("learning_rate", 0, "BAD_OPT_LEARNING_RATE"),
    ("exaggeration_shift", 5, "BAD_OPT_EXAGGERATION_SHIFT"),
    ("exaggeration_shift", 7, "BAD_OPT_EXAGGERATION_SHIFT"),
}
#: two bad fields at once: the first in declaration order is reported
PRIORITY = [({"n": 0, "budget": 0}, "BAD_N"), ({"budget": 10, "learning_rate": 0}, "BAD_BUDGET"),
            ({"dim": 0, "exaggeration_shift": 5}, "BAD_DIM")]


def test_sweep_covers_every_declared_refusal():
    base = _base_job()
    cases = refusal_cases(base)
    assert MUST_REFUSE <= set(cases), sorted(MUST_REFUSE - set(cases))
    # every job field cause is exercised, and no cause is declared for a field without a range
    job_causes = {c.name for c in regmap.CAUSES if c.field and regmap.FIELDS[c.field].key
                  in {f.key for f in regmap.JOB_FIELDS}}
    assert {name for _, _, name in cases} == job_causes
    # the only other field cause is the result address's alignment (test_model_refuses_...)
    assert {c.name for c in regmap.CAUSES if c.field} - job_causes == {"BAD_DST_ADDR"}
    assert all(regmap.FIELDS[c.field].ranged for c in regmap.CAUSES if c.field)
    lo_job, hi_job = boundary_jobs(base)
    assert (lo_job["n"], lo_job["dim"], lo_job["budget"], lo_job["learning_rate"]) == (2, 1, 1, 1)
    assert (hi_job["n"], hi_job["dim"], hi_job["budget"], hi_job["h_target"],
            hi_job["learning_rate"], hi_job["exaggeration_shift"]) == (128, 64, 128, (1 << 24) - 1,
                                                                        4095, 4)
    # and the host-side validation agrees with the device-side walk on each of them
    for key, value, name in cases:
        with pytest.raises(regmap.JobRefused) as info:
            regmap.validate({**base, key: value}, PARAMS)
        assert info.value.refusal.cause.name == name
    for job in (lo_job, hi_job):
        regmap.validate(job, PARAMS)


def _model_run(job: dict, X: np.ndarray) -> np.ndarray:
    dev = _model()
    drv = Driver(dev, _cfg(learning_rate=job["learning_rate"],
                           exaggeration_shift=job["exaggeration_shift"]))
    dev.write_mem(0, X.astype(np.uint8).tobytes())
    drv.run_job(job, 0, 1 << 16)
    return np.frombuffer(dev.read_mem(1 << 16, 4 * job["budget"]), "<u4").astype(np.int64)


def test_model_device_refuses_every_condition_with_its_cause():
    base = _base_job()
    dev = _model()
    drv = Driver(dev, _cfg())
    dev.write_mem(0, X_BASE.astype(np.uint8).tobytes())
    cases = [({key: value}, name) for key, value, name in refusal_cases(base)] + PRIORITY
    for change, name in cases:
        t0 = time.monotonic()
        with pytest.raises(JobRefusedError) as info:
            drv.run_job({**base, **change}, 0, 1 << 16)
        err = info.value
        assert err.cause.name == name, (change, str(err))
        key = regmap.FIELDS[err.field].key
        assert err.value == change[key] and f"not {change[key]} " in str(err)
        assert time.monotonic() - t0 < 0.5      # refused at once, never busy
        st = regmap.REGMAP["STATUS"].unpack(dev.read_reg("STATUS"))
        assert st == {"busy": 0, "done": 1, "error": 1, "cause": CODE[name]}


def test_model_device_accepts_the_boundaries():
    base = _base_job()
    for job in boundary_jobs(base):
        X = _rng.integers(0, 256, size=(job["n"], job["dim"]))
        cfg = _cfg(learning_rate=job["learning_rate"], exaggeration_shift=job["exaggeration_shift"])
        want = desne.run_chunk(X, job["budget"], cfg, SEED, target=job["h_target"])["selected"]
        assert np.array_equal(_model_run(job, X), want)


def test_rtl_job_controller_refuses_every_condition_with_the_same_cause():
    """One cocotb run on the datapath build of test_datapath.py: a job interrupted by a start
    while busy, every refusal of the sweep, and the two boundary jobs (bit-exact with the model
    and with the model device)."""
    base = _base_job()
    tb_cfg = {**SCHEDULE}
    jobs = [{"X": X_BASE.tolist(), "budget": BUDGET_BASE, "seed": SEED, "cfg": tb_cfg,
             "restart_while_busy": True}]
    cases = [({key: value}, name) for key, value, name in refusal_cases(base)] + PRIORITY
    for change, name in cases:
        jobs.append({"X": X_BASE.tolist(), "budget": BUDGET_BASE, "seed": SEED, "cfg": tb_cfg,
                     "expect_error": True, "expect_cause": CODE[name], "config_override": change})
    rng = np.random.default_rng(8)
    for job in boundary_jobs(base):
        X = rng.integers(0, 256, size=(job["n"], job["dim"]))
        jobs.append({"X": X.tolist(), "budget": job["budget"], "seed": SEED,
                     "cfg": {**tb_cfg, "learning_rate": job["learning_rate"],
                             "exaggeration_shift": job["exaggeration_shift"]},
                     "config_override": {"h_target": job["h_target"]}})
        # the model device accepts it too and selects the same (the testbench checks the RTL
        # against run_chunk, this checks the model device against the same)
        cfg = _cfg(learning_rate=job["learning_rate"], exaggeration_shift=job["exaggeration_shift"])
        assert np.array_equal(_model_run(job, X), desne.run_chunk(
            X, job["budget"], cfg, SEED, target=job["h_target"])["selected"])
    text = verilog.convert(DesneDatapath(**HW), name="top", emit_src=False)
    run_cocotb("datapath_c128", text, "nms.verif.tb.datapath",
               {"datapath": HW, "jobs": jobs, "seed": 4, "backpressure": 0.2,
                "mem": {"req_stall": 0.2, "latency": [1, 20], "gap": 0.1}})


def test_model_start_while_busy_reports_the_same_cause():
    base = _base_job()
    dev = ModelDevice.from_hw(HW, job_delay_s=0.3)
    drv = Driver(dev, _cfg())
    dev.write_mem(0, X_BASE.astype(np.uint8).tobytes())
    drv.program(base, 0, 1 << 16)
    drv.start()
    dev.write_reg("CTRL", regmap.REGMAP["CTRL"].pack(start=1))
    dev.wait()
    st = regmap.REGMAP["STATUS"].unpack(dev.read_reg("STATUS"))
    assert st == {"busy": 0, "done": 1, "error": 1, "cause": CODE["START_WHILE_BUSY"]}
    assert dev.read_reg("RESULT_COUNT") == BUDGET_BASE


#: misaligned result addresses (DST_ADDR must hold whole u32 words) and a bad job field at once
BAD_DST = [1, 2, 3, 0x10002, (1 << 32) - 1]


def test_model_refuses_a_misaligned_result_address_and_writes_nothing():
    """``BAD_DST_ADDR`` before any job field (DST_ADDR is declared first); memory untouched;
    the interrupt status says error; an aligned address that is not a bus-width multiple runs."""
    base = _base_job()
    dev = _model()
    drv = Driver(dev, _cfg())
    dev.write_mem(0, X_BASE.astype(np.uint8).tobytes())
    guard = bytes(range(256)) * 2
    for dst in (0x10000 + d if d < 4 else d for d in BAD_DST):
        for change in ({}, {"n": 0}):
            dev.write_mem(0x10000, guard)
            dev.write_reg("IRQ_STATUS", 0b11)
            with pytest.raises(JobRefusedError, match=f"DST_ADDR must be a multiple of 4, not "
                                                      f"{dst} ") as info:
                drv.run_job({**base, **change}, 0, dst)
            assert info.value.cause.name == "BAD_DST_ADDR" and info.value.field == "DST_ADDR"
            assert dev.read_mem(0x10000, len(guard)) == guard
            assert regmap.REGMAP["IRQ_STATUS"].unpack(dev.read_reg("IRQ_STATUS")) == \
                {"done": 0, "error": 1}
            assert dev.read_reg("RESULT_COUNT") == 0
    drv.run_job(base, 0, 0x10004)    # 4-byte aligned, not 8: accepted
    want = desne.run_chunk(X_BASE, BUDGET_BASE, _cfg(), SEED)["selected"]
    assert np.frombuffer(dev.read_mem(0x10004, 4 * BUDGET_BASE), "<u4").tolist() == want.tolist()
    assert dev.read_mem(0x10000, 4) == guard[:4]


def test_rtl_refusal_check_at_full_size_equals_the_host():
    """The job controller's registered refusal check (``refusal_check``: the derived products
    as shift-add halves, cut to the fields' in-range widths) at full-size parameters (C = 1024,
    max_dim = 1024, the top's chunk buffer), under Amaranth's simulator, against the host's
    integer walk: jobs at both sides of the chunk-buffer limit for every ceil(D'/L) and pool,
    squares and near-squares for the image rule (sides up to 32, the product's high half),
    and random values of every field up to their full width (the cut is exact only while the
    field's range check passes, which then wins)."""
    from amaranth import Module, Shape, Signal
    from amaranth.sim import Simulator

    from nms.rtl.datapath import CHECK_CYCLES, refusal_check
    from nms.rtl.params import BUFFER_DIM

    params = {"capacity": 1024, "max_dim": 1024,
              **regmap.capabilities(capacity=1024, lanes=8, buffer_dim=BUFFER_DIM)}
    depth = params["buffer_depth"]
    layout = dict(regmap.job_layout())
    rng = np.random.default_rng(5)
    base = {key: 0 for key in layout}
    base.update(_base_job())
    base.update(n=600, dim=784, budget=10)
    jobs = []
    for pool in (0, 1, 2):
        w = 1 << pool
        for words in (1, 3, 7, 13, 50, 98, 128):
            dim = min(1024, words * 8 * w * w)   # a D' with ceil(D'/8) = words (square when pooled)
            side = int(round(dim ** 0.5))
            dim = side * side if pool else dim
            need = -(-(dim >> (2 * pool)) // 8)
            for n in (depth // need, depth // need + 1):
                if 2 <= n <= 1024:
                    jobs.append({**base, "pool": pool, "dim": dim, "img_w": side, "n": n,
                                 "budget": min(n, 10)})
    for side in (2, 4, 8, 12, 16, 20, 28, 32):
        for dim in (side * side, side * side + 1, side * side - 4):
            jobs.append({**base, "pool": 1 + side % 3 // 2, "img_w": side, "dim": dim, "n": 100})
    for _ in range(150):
        job = dict(base)
        for key in ("n", "dim", "pool", "img_w", "budget"):
            width = Shape.cast(layout[key]).width
            job[key] = int(rng.integers(0, 1 << min(width, 12))) if rng.random() < 0.8 \
                else int(rng.integers(0, 1 << width, dtype=np.uint64))
        jobs.append(job)

    m = Module()
    sig = {key: Signal(shape, name=f"job_{key}") for key, shape in layout.items()}
    cause, _states = refusal_check(m, sig, params)
    got = []

    async def bench(ctx):
        for job in jobs:
            for key, s in sig.items():
                ctx.set(s, job[key])
            await ctx.tick().repeat(CHECK_CYCLES)
            got.append(ctx.get(cause))

    sim = Simulator(m)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    want = [(r.cause.code if (r := regmap.refusal(job, params)) else 0) for job in jobs]
    assert got == want
    causes = {regmap.CAUSE_BY_CODE[c].name for c in want if c}
    assert {"BAD_CHUNK_BUFFER", "BAD_IMAGE"} <= causes and 0 in want, causes
