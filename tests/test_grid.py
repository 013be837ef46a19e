"""GridSampler: parameter validation, generation + lint, and cocotb/Verilator runs compared index
by index with the bit-exact model ``nms.verif.models.desne.grid_select`` (random valid gaps on the input,
random back-pressure on the output). One Verilator build (capacity 256) is shared by every run.
"""

from __future__ import annotations

import functools
import json

import numpy as np
import pytest

from nms.rtl import fixedpoint as fp
from nms.rtl.grid import GridGeometry, GridSampler
from nms.verif.models import desne
from nms.verif.models.grid_stats import grid_run_statistics
from nms.verif.sim.build import run_cocotb

CAPACITY = 256


# ---------------------------------------------------------------------------------------------
# parameters


@pytest.mark.parametrize("kwargs, exc, message", [
    ({"capacity": 1}, ValueError, "capacity=1"),
    ({"capacity": 1 << 17}, ValueError, "capacity=131072"),
    ({"capacity": 64.0}, TypeError, "capacity"),
    ({"capacity": True}, TypeError, "capacity"),
    ({"capacity": "64"}, TypeError, "capacity"),
])
def test_sampler_rejects_bad_parameters(kwargs, exc, message):
    with pytest.raises(exc, match=message):
        GridSampler(**kwargs)


def test_parameters_are_keyword_only():
    with pytest.raises(TypeError):
        GridSampler(64)  # noqa


@pytest.mark.parametrize("capacity", [2, 3, 64, 1000, 4096, 5000, 1 << 16])
def test_derived_widths(capacity):
    s = GridSampler(capacity=capacity)
    assert s.grid_bits == fp.GRID_BITS_MAX
    assert (1 << s.index_bits) >= capacity and (1 << s.count_bits) > capacity
    assert s.max_cells == min(capacity, 4 ** fp.GRID_BITS_MAX)
    assert (1 << s.slot_bits) >= s.max_cells
    assert (1 << s.divider_width) > capacity * capacity      # budget * count never overflows
    assert s.key_bits == s.count_bits + 2 * fp.GRID_BITS_MAX


def test_generate_grid_block_lints(tmp_path):
    from nms.gen.generate import generate
    from nms.gen.lint import lint_verilog

    text, meta = generate("grid", {"capacity": "100"})
    assert meta["parameters"] == {"capacity": 100}
    assert meta["derived"]["index_bits"] == 7 and meta["derived"]["max_cells"] == 100
    names = {p["name"] for p in meta["ports"]}
    assert {"points__payload", "indices__payload", "budget", "proportional", "busy"} <= names
    vfile = tmp_path / "grid.v"
    vfile.write_text(text)
    # -Wall with the project's one list of Amaranth-backend waivers (the grid sampler needs
    # WIDTHEXPAND, WIDTHTRUNC, UNUSEDSIGNAL, PROCASSINIT, DECLFILENAME and CASEINCOMPLETE)
    lint_verilog(vfile, "grid")


# ---------------------------------------------------------------------------------------------
# point clouds


def _case(Y, budget, allocation):
    Y = np.asarray(Y, dtype=np.int64)
    assert Y.min() >= fp.Y_MIN and Y.max() <= fp.Y_MAX
    return {"Y": Y.tolist(), "budget": int(budget), "allocation": allocation}


def _both(Y, budget):
    return [_case(Y, budget, a) for a in desne.ALLOCATIONS]


def _uniform(rng, n, half=1 << 22):
    return rng.integers(-half, half, size=(n, 2))


def _clustered(rng, n, k=4, spread=1 << 14):
    centres = rng.integers(-(1 << 21), 1 << 21, size=(k, 2))
    sizes = rng.multinomial(n, rng.dirichlet(np.ones(k)))   # uneven clusters
    pts = [c + rng.normal(0, spread * (1 + j), size=(s, 2)).astype(np.int64)
           for j, (c, s) in enumerate(zip(centres, sizes))]
    return np.clip(np.vstack(pts), fp.Y_MIN, fp.Y_MAX)


def _lattice(rng, n, side=4):
    """Few distinct positions: duplicates and equal distances to the cell centres everywhere."""
    return rng.integers(0, side, size=(n, 2)) * 3


@functools.lru_cache(maxsize=1)
def _digits_embedding():
    from nms.sw.datasets import load_digits

    ds = load_digits()
    X = ds.train_flat()[ds.y_train == 3][:120].astype(np.int64)
    cfg = desne.DesneConfig(n_iter=40, exaggeration_iters=20, momentum_switch=20, capacity=256)
    nbr, dist = desne.knn(X, cfg.k)
    aff = desne.affinities(dist, cfg.perplexity, cfg.search)
    return desne.embed(nbr, aff["P"], cfg, seed=3)


@functools.lru_cache(maxsize=1)
def _verilog():
    from nms.gen.generate import generate

    return generate("grid", {"capacity": CAPACITY}, top="grid")[0]


def _run(cases, *, seed=1, idle=0.3, backpressure=0.4, report=None):
    params = {"sampler": {"capacity": CAPACITY}, "cases": cases, "seed": seed, "idle": idle,
              "backpressure": backpressure}
    if report is not None:
        params["report"] = str(report)
    run_cocotb(f"grid_c{CAPACITY}", _verilog(), "nms.verif.tb.grid", params, toplevel="grid")


def test_cocotb_clouds():
    """Random, clustered and a real embedding (digits '3', model knn -> affinities -> embed)."""
    rng = np.random.default_rng(11)
    cases = []
    cases += _both(_uniform(rng, 100), 10)
    cases += _both(_uniform(rng, 57), 23)
    cases += _both(_clustered(rng, 120), 12)
    cases += _both(_clustered(rng, 90, k=2, spread=1 << 10), 40)
    Y = _digits_embedding()
    for m in (12, 30):
        cases += _both(Y, m)
    _run(cases, seed=5)


def test_cocotb_edge_cases():
    rng = np.random.default_rng(12)
    same = np.full((20, 2), 12345)
    corners = np.array([[fp.Y_MIN, fp.Y_MIN], [fp.Y_MAX, fp.Y_MAX], [fp.Y_MIN, fp.Y_MAX],
                        [fp.Y_MAX, fp.Y_MIN]] * 3 + [[0, 0], [-1, 0], [0, -1]])
    extremes = np.vstack([corners, rng.integers(fp.Y_MIN, fp.Y_MAX + 1, size=(30, 2))])
    line = np.arange(40)[:, None] * np.array([[1 << 15, 0]]) - (1 << 19)
    diag = np.repeat(np.arange(33)[:, None] * 7919, 2, axis=1)
    vertical = np.stack([np.full(25, -77), rng.integers(-1000, 1000, 25)], 1)
    cases = []
    for m in (1, 7, 20):                      # all identical: a single cell at every level
        cases += _both(same, m)
    cases += _both(_uniform(rng, 30), 1)      # M = 1
    cases += _both(_uniform(rng, 30), 30)     # M = N
    cases += _both(_clustered(rng, 40), 40)
    cases += _both(_uniform(rng, CAPACITY), 26)             # N = C at 10 %
    cases += [_case(_uniform(rng, CAPACITY), CAPACITY, "proportional")]  # N = C = M
    cases += _both(extremes, 9)               # the +-2**23 limits (largest spans and distances)
    cases += _both(np.full((5, 2), fp.Y_MAX), 2) + _both(np.full((5, 2), fp.Y_MIN), 3)
    for Y in (line, diag, vertical):          # collinear: one axis has span 0 or x == y
        cases += _both(Y, 6)
    cases += _both(_lattice(rng, 40), 5) + _both(_lattice(rng, 40, side=2), 13)  # many ties
    cases += _both([[3, 4]], 1) + _both([[1, 1], [1, 1]], 1)                     # N = 1, 2
    _run(cases, seed=6)


def test_cocotb_randomized_sweep():
    """Seeded sweep of small configurations (sizes, budgets, modes, coordinate distributions)."""
    rng = np.random.default_rng(2024)
    cases = []
    for _ in range(48):
        n = int(rng.integers(1, 49))
        kind = rng.integers(4)
        Y = (_uniform(rng, n) if kind == 0 else _uniform(rng, n, half=int(rng.integers(1, 64)))
             if kind == 1 else _clustered(rng, n, k=int(rng.integers(1, 4))) if kind == 2
             else _lattice(rng, n, side=int(rng.integers(1, 6))))
        cases.append(_case(Y, int(rng.integers(1, n + 1)), desne.ALLOCATIONS[int(rng.integers(2))]))
    _run(cases, seed=7, idle=0.5, backpressure=0.6)


def test_cocotb_cycles_no_stall(tmp_path):
    """Cycle counts without stalls at 10 %: exactly ``GridGeometry.run_cycles`` of each run."""
    rng = np.random.default_rng(13)
    cases = []
    for n in (64, CAPACITY):
        budget = (n + 5) // 10                 # round(0.1 * n), half up
        cases += _both(_clustered(rng, n), budget)
        cases += _both(_uniform(rng, n), budget)
    report = tmp_path / "grid_cycles.json"
    _run(cases, seed=8, idle=None, backpressure=None, report=report)
    rows = json.loads(report.read_text())
    assert len(rows) == len(cases)
    geometry = GridGeometry(CAPACITY)
    predicted = [geometry.run_cycles(**grid_run_statistics(c["Y"], c["budget"], c["allocation"]))
                 for c in cases]
    assert [r["cycles"] for r in rows] == predicted, \
        "cycle counts differ from GridGeometry.run_cycles (the formula in docs/rtl-grid.md)"
    for row, kind in zip(rows, ["clustered"] * 2 + ["uniform"] * 2 + ["clustered"] * 2
                         + ["uniform"] * 2):
        print(f"grid N={row['n']} M={row['budget']} {row['allocation']:12s} {kind:9s}: "
              f"{row['cycles']} cycles after the last point")


def _cover(Y, budget, allocation="proportional"):
    return {**_case(Y, budget, allocation), "exemplar": "cover"}


def test_cocotb_cover_export():
    """Coverage mode: the cells (slots) and quotas on ``cells`` equal the model's
    ``grid_cover_select`` cells and quotas; interleaved with centre-mode runs (mode per job)."""
    rng = np.random.default_rng(14)
    same = np.full((20, 2), 12345)
    cases = []
    for Y, m in ((_uniform(rng, 100), 10), (_clustered(rng, 120), 12), (_digits_embedding(), 30),
                 (same, 7), (_lattice(rng, 40), 5), (_uniform(rng, 30), 30),
                 ([[1, 1], [1, 1]], 1), (_uniform(rng, CAPACITY), 26)):
        cases += [_cover(Y, m), _cover(Y, m, "adaptive")]
        cases += _both(Y, m)[:1]
    _run(cases, seed=9, idle=0.4, backpressure=0.5)


def test_cocotb_cover_export_cycles(tmp_path):
    """Coverage mode without stalls: exactly ``run_cycles(..., cover=True)``."""
    rng = np.random.default_rng(15)
    cases = []
    for n in (64, CAPACITY):
        budget = (n + 5) // 10
        cases += [_cover(_clustered(rng, n), budget), _cover(_uniform(rng, n), budget, "adaptive")]
    report = tmp_path / "grid_cover_cycles.json"
    _run(cases, seed=10, idle=None, backpressure=None, report=report)
    rows = json.loads(report.read_text())
    geometry = GridGeometry(CAPACITY)
    predicted = [geometry.run_cycles(**grid_run_statistics(c["Y"], c["budget"], c["allocation"]),
                                     cover=True) for c in cases]
    assert [r["cycles"] for r in rows] == predicted
