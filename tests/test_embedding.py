"""Embedding engine: parameter validation, and the whole engine under Verilator against
``nms.verif.models.desne.embed`` (three builds: 1, 2 and 4 pair units), including the exact cycle
formula ``iteration_cycles``. The units one by one are in
``tests/test_embedding_units.py``."""

from __future__ import annotations

import json
import random

import pytest
from amaranth.back import verilog

from nms.rtl import fixedpoint as fp
from nms.rtl.embedding import (PAIR_DRAIN, SERIAL_PAIR_DRAIN, SERIAL_UPDATE_TAIL, UPDATE_TAIL,
                               EmbeddingEngine, SerialPairUnit, SerialUpdate, iteration_cycles)
from nms.sw.dataflow import y_reads
from nms.verif.sim.build import run_cocotb

# Two builds shared by all engine tests: different pair-unit counts and sample counts.
ENGINE_U1 = {"capacity": 64, "k": 8, "neg_samples": 4, "pair_units": 1}
ENGINE_U2 = {"capacity": 64, "k": 8, "neg_samples": 5, "pair_units": 2}
# a small third build: four units, a capacity that is a multiple of U, N not a multiple of U
ENGINE_U4 = {"capacity": 32, "k": 4, "neg_samples": 3, "pair_units": 4}
# the previous front end (Y[i] read for every pair, attractive pairs of all points first)
ENGINE_U2_NOHOLD = {**ENGINE_U2, "hold_self": False}
# the small-device units (shift-adds, no multiplier: a point every SerialUpdate.interval
# cycles, a pair every SerialPairUnit.interval cycles per lane)
ENGINE_SERIAL = {"capacity": 32, "k": 4, "neg_samples": 3, "pair_units": 2,
                 "serial_update": True, "serial_pairs": True}
_VERILOG: dict = {}


def _run(engine: dict, cases: list, *, idle=0.3, backpressure=0.4, seed=1, report=None):
    key = tuple(sorted(engine.items()))
    if key not in _VERILOG:
        _VERILOG[key] = verilog.convert(EmbeddingEngine(**engine), name="top", emit_src=False)
    name = "embedding_" + "_".join(f"{k}{v}" for k, v in key)
    params = {"engine": engine, "cases": cases, "idle": idle, "backpressure": backpressure,
              "seed": seed}
    if report:
        params["report"] = str(report)
    run_cocotb(name, _VERILOG[key], "nms.verif.tb.embedding", params)


def _check_y_reads(engine, report):
    """``perf.y_reads`` of every job in ``report`` equals the energy model's Y-read formula."""
    hold = engine.get("hold_self", True)
    for job in json.loads(report.read_text()):
        n, kk, n_iter = job["n"], job["kk"], job["n_iter"]
        pairs = n_iter * n * (kk + engine["neg_samples"])
        assert job["perf"]["pair_items"] == pairs, job["name"]
        assert job["perf"]["y_reads"] == y_reads(n=n, n_iter=n_iter, pair_items=pairs,
                                                 hold_self=hold), job["name"]


def _measured_iteration_cycles(engine, sizes, tmp_path):
    """``(job, cycles per iteration)`` per ``(n, kk)`` of ``sizes``: jobs of 1 and 3 iterations
    without stalls (their Y reads checked), half the difference of their first-coordinate
    cycles."""
    cases = [{"kind": "lists", "name": f"n{n}_it{iters}", "n": n, "kk": kk, "seed": 1,
              "cfg": _cfg(iters, 1, 1)} for n, kk in sizes for iters in (1, 3)]
    report = tmp_path / "cycles.json"
    _run(engine, cases, idle=0.0, backpressure=0.0, report=report)
    _check_y_reads(engine, report)
    jobs = json.loads(report.read_text())
    return [(one, (three["cycles_to_first_coord"] - one["cycles_to_first_coord"]) / 2)
            for one, three in zip(jobs[0::2], jobs[1::2])]


def _cfg(n_iter, ex_iters, switch, lr=32, shift=2, early=128, late=204):
    return {"n_iter": n_iter, "exaggeration_iters": ex_iters, "momentum_switch": switch,
            "learning_rate": lr, "exaggeration_shift": shift, "momentum_early": early,
            "momentum_late": late}


# ------------------------------------------------------------------------------------------------
# parameter validation
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, exc, text", [
    ({"capacity": 3}, ValueError, "capacity=3"),
    ({"capacity": 64.0}, TypeError, "capacity must be an int"),
    ({"k": 0}, ValueError, "k=0"),
    ({"k": 64, "capacity": 64}, ValueError, "k=64 must be smaller than capacity=64"),
    ({"neg_samples": 65}, ValueError, "neg_samples=65"),
    ({"neg_samples": True}, TypeError, "neg_samples must be an int"),
    ({"pair_units": 3}, ValueError, "pair_units=3 is not a power of two"),
    ({"pair_units": 0}, ValueError, "pair_units=0"),
    ({"pair_units": 8, "capacity": 4, "k": 2}, ValueError, "pair_units=8 exceeds capacity=4"),
    ({"hold_self": 1}, TypeError, "hold_self must be True or False"),
])
def test_parameter_validation(kwargs, exc, text):
    with pytest.raises(exc, match=text):
        EmbeddingEngine(**kwargs)


def test_parameters_keyword_only_and_derived():
    with pytest.raises(TypeError):
        EmbeddingEngine(64)  # noqa
    eng = EmbeddingEngine(capacity=100, k=10, neg_samples=6, pair_units=4)
    assert eng.parameters == {"capacity": 100, "k": 10, "neg_samples": 6, "pair_units": 4,
                              "hold_self": True, "serial_update": False, "serial_pairs": False}
    assert eng.derived["unit_depth"] == 25 and eng.index_width == 7
    assert eng.iteration_cycles(64, 10) < EmbeddingEngine(
        capacity=100, k=10, neg_samples=6, pair_units=1).iteration_cycles(64, 10)


# ------------------------------------------------------------------------------------------------
# the engine under Verilator, bit-exact against embed()
# ------------------------------------------------------------------------------------------------

def _random_cases(seed, count, cap, kmax):
    rng = random.Random(seed)
    cases = []
    for c in range(count):
        n = rng.randrange(16, cap + 1)
        kk = rng.randrange(4, kmax + 1)
        n_iter = rng.randrange(5, 31)
        cases.append({"kind": "knn", "name": f"random{c}", "n": n, "kk": kk,
                      "seed": rng.randrange(1 << 32), "perplexity": kk / 2 + 0.5,
                      "cfg": _cfg(n_iter, rng.randrange(0, n_iter + 1),
                                  rng.randrange(0, n_iter + 1), lr=rng.choice([16, 32, 64, 200]),
                                  shift=rng.randrange(0, 5), early=rng.randrange(256),
                                  late=rng.randrange(256))})
    return cases


@pytest.mark.parametrize("engine", [ENGINE_U1, ENGINE_U2, ENGINE_U2_NOHOLD],
                         ids=["u1", "u2", "u2-nohold"])
def test_engine_random_problems(engine, tmp_path):
    """Bit-exact with embed() under idle input and back-pressure; the Y reads equal the formula
    (hold_self: the own point once per point and iteration; without: once per pair)."""
    # small n / few iterations keep it quick; each case crosses or sits on either side of the
    # exaggeration and momentum switches
    cases = _random_cases(11 + engine["pair_units"], 3, 40, engine["k"])
    cases.append({"kind": "lists", "name": "arbitrary lists", "n": 23, "kk": engine["k"],
                  "seed": 99, "cfg": _cfg(6, 3, 2, lr=100)})
    report = tmp_path / "perf.json"
    _run(engine, cases, report=report)
    _check_y_reads(engine, report)


@pytest.mark.parametrize("engine", [ENGINE_U1, ENGINE_U2], ids=["u1", "u2"])
def test_engine_edge_cases(engine):
    k, cap = engine["k"], engine["capacity"]
    cases = [
        # smallest lists that still fill k: N = k + 1
        {"kind": "knn", "name": "n=k+1", "n": k + 1, "kk": k, "seed": 5, "cfg": _cfg(8, 4, 6)},
        # all points identical: every kNN distance is 0 (uniform P after the search)
        {"kind": "identical", "name": "identical", "n": 20, "kk": 5, "seed": 6,
         "cfg": _cfg(6, 2, 3)},
        # huge learning rate and exaggeration: velocities and positions clip at +-2**23
        {"kind": "lists", "name": "saturation", "n": 17, "kk": 6, "seed": 7,
         "cfg": _cfg(7, 5, 2, lr=4095, shift=4, early=255, late=255)},
        # full capacity
        {"kind": "knn", "name": "n=C", "n": cap, "kk": k, "seed": 8, "cfg": _cfg(3, 1, 2)},
        # smallest job and zero iterations (initial coordinates only)
        {"kind": "knn", "name": "n=2", "n": 2, "kk": 1, "seed": 9, "cfg": _cfg(4, 2, 2)},
        {"kind": "knn", "name": "no iterations", "n": 5, "kk": 3, "seed": 10,
         "cfg": _cfg(0, 0, 0)},
    ]
    _run(engine, cases, idle=0.5, backpressure=0.6, seed=engine["pair_units"])


def test_engine_four_units():
    cases = [{"kind": "knn", "name": "u4 n=30", "n": 30, "kk": 4, "seed": 12, "perplexity": 2.5,
              "cfg": _cfg(9, 4, 6, lr=64)},
             {"kind": "knn", "name": "u4 n=3", "n": 3, "kk": 2, "seed": 13, "cfg": _cfg(3, 1, 1)},
             {"kind": "lists", "name": "u4 n=C", "n": 32, "kk": 4, "seed": 14,
              "cfg": _cfg(4, 2, 2, lr=300)}]
    _run(ENGINE_U4, cases)


def test_engine_serial_units_bit_exact_and_cycles(tmp_path):
    """The serial update and pair units in the whole engine: bit-exact with embed() under idle
    input and back-pressure (random problems, a saturating one, n = C, n = 2), then without
    stalls the exact ``iteration_cycles(serial_update=True, serial_pairs=True)``: the pipelined
    one's with the update and pair issues ``interval`` cycles apart and the longer tail and
    drain."""
    cases = _random_cases(5, 2, 32, 4) + [
        {"kind": "lists", "name": "saturation", "n": 17, "kk": 4, "seed": 7,
         "cfg": _cfg(5, 3, 2, lr=4095, shift=4, early=255, late=255)},
        {"kind": "knn", "name": "n=C", "n": 32, "kk": 4, "seed": 8, "cfg": _cfg(3, 1, 2)},
        {"kind": "knn", "name": "n=2", "n": 2, "kk": 1, "seed": 9, "cfg": _cfg(4, 2, 2)}]
    _run(ENGINE_SERIAL, cases, idle=0.4, backpressure=0.5, seed=3)
    for one, per_iter in _measured_iteration_cycles(ENGINE_SERIAL, ((9, 3), (32, 4)), tmp_path):
        assert per_iter == iteration_cycles(one["n"], one["kk"], pair_units=2, neg_samples=3,
                                            serial_update=True, serial_pairs=True), one["name"]
        pipelined = iteration_cycles(one["n"], one["kk"], pair_units=2, neg_samples=3)
        pairs = -(-one["n"] // 2) * (one["kk"] + 3)
        assert per_iter - pipelined == (
            (SerialUpdate.interval - 1) * (one["n"] - 1) + SERIAL_UPDATE_TAIL - UPDATE_TAIL
            + (SerialPairUnit.interval - 1) * (pairs - 1) + SERIAL_PAIR_DRAIN - PAIR_DRAIN)


def test_engine_digits_class():
    cases = [{"kind": "digits", "name": "digits class 3", "n": 60, "kk": 8, "label": 3,
              "seed": 2024, "perplexity": 5.0, "cfg": _cfg(12, 6, 8)}]
    _run(ENGINE_U2, cases, idle=0.2, backpressure=0.2)


@pytest.mark.parametrize("engine", [ENGINE_U1, ENGINE_U2], ids=["u1", "u2"])
def test_engine_iteration_cycles_match_the_formula(engine, tmp_path):
    """No stalls: jobs of 1 and 3 iterations differ by exactly 2 x ``iteration_cycles``."""
    for one, per_iter in _measured_iteration_cycles(engine, ((23, 8), (64, 5)), tmp_path):
        assert per_iter == iteration_cycles(one["n"], one["kk"], pair_units=engine["pair_units"],
                                            neg_samples=engine["neg_samples"]), one["name"]


def test_engine_saturation_reaches_the_bounds():
    """The saturation case really drives coordinates to the clip bounds (else it tests nothing)."""
    from nms.verif.models import desne
    from nms.verif.tb.embedding import make_problem

    nbr, P, cfg, seed = make_problem(
        {"kind": "lists", "n": 17, "kk": 6, "seed": 7, "cfg": _cfg(7, 5, 2, lr=4095, shift=4,
                                                                  early=255, late=255)},
        ENGINE_U1)
    Y = desne.embed(nbr, P, cfg, seed)
    assert (Y == fp.Y_MAX).any() and (Y == fp.Y_MIN).any()


@pytest.mark.parametrize("serial", [False, True], ids=["pipelined", "serial_update"])
def test_generate_embedding_block_lints(tmp_path, serial):
    """``nms generate --block embedding`` writes Verilog + metadata that passes verilator -Wall
    (with the project's documented Amaranth waivers), with either update unit."""
    from nms.gen.lint import lint_verilog
    from nms.sw.cli import main as cli

    assert cli(["generate", "--block", "embedding", "--param", "capacity=128", "--param", "k=8",
                "--param", "pair_units=2", "--param", f"serial_update={str(serial).lower()}",
                "--param", f"serial_pairs={str(serial).lower()}",
                "--out", str(tmp_path)]) == 0
    meta = json.loads((tmp_path / "embedding.json").read_text())
    # the declared parameters of the block (nms generate does not declare hold_self yet: the
    # engine's default, True, is built)
    assert meta["parameters"] == {"capacity": 128, "k": 8, "neg_samples": 8, "pair_units": 2,
                                  "serial_update": serial, "serial_pairs": serial}
    assert meta["derived"]["knn_depth"] == 128 * 8
    assert meta["derived"]["update_interval"] == (SerialUpdate.interval if serial else 1)
    assert meta["derived"]["pair_interval"] == (SerialPairUnit.interval if serial else 1)
    ports = {p["name"]: p for p in meta["ports"]}
    assert ports["coords__payload"]["width"] == 48 and ports["knn__payload"]["width"] == 7 + 17
    # -Wall with the project's one list of Amaranth-backend waivers (the engine needs
    # WIDTHEXPAND, WIDTHTRUNC, UNUSEDSIGNAL, PROCASSINIT, DECLFILENAME and CASEINCOMPLETE)
    lint_verilog(tmp_path / "embedding.v", "embedding")
