"""CoverSelector / MeanNearest (rtl/cover.py): parameters, lint, and cocotb/Verilator runs
compared pick by pick (order included) with the bit-exact model ``desne.cover_select`` /
``grid_cover_select`` (random idle cycles on every input stream, random back-pressure on the
indices). One Verilator build (C = 128, K = 8) is shared by the runs."""

from __future__ import annotations

import functools
import json

import numpy as np
import pytest

from nms.rtl.cover import CoverSelector, MeanNearest, build_cycles, cover_cycles
from nms.verif.models import desne
from nms.verif.models.cover_stats import cover_run_statistics, slots_and_quotas
from nms.verif.sim.build import run_cocotb

# K = 16: C·K = 2048 edges, deeper than one block RAM in its widest mode, so the edge memories
# nbr/pv are built from bit slices (nms.rtl.bram) and the sliced ports run here too
CAPACITY, K = 128, 16


@pytest.mark.parametrize("kwargs, exc, message", [
    ({"capacity": 3, "k": 2}, ValueError, "capacity=3"),
    ({"capacity": 64, "k": 64}, ValueError, "k=64"),
    ({"capacity": 64, "k": 0}, ValueError, "k=0"),
    ({"capacity": 64.0, "k": 4}, TypeError, "capacity"),
    ({"capacity": 64, "k": 4, "max_cells": 65}, ValueError, "max_cells=65"),
])
def test_selector_rejects_bad_parameters(kwargs, exc, message):
    with pytest.raises(exc, match=message):
        CoverSelector(**kwargs)


def test_mean_nearest_rejects_bad_parameters():
    with pytest.raises(ValueError, match="tile=0"):
        MeanNearest(tile=0, dist_width=26, capacity=64)
    with pytest.raises(TypeError, match="dist_width"):
        MeanNearest(tile=4, dist_width="26", capacity=64)


def test_widths():
    s = CoverSelector(capacity=1024, k=16, max_cells=1024)
    assert s.gain_width == 17 + 11 and (1 << s.gain_width) > (1 << 16) * 1024
    assert (1 << s.edge_width) >= 1024 * 16 and (1 << s.offset_width) > 1024 * 16


def test_lint(tmp_path):
    from amaranth.back import verilog

    from nms.gen.lint import lint_verilog

    for name, comp in (("cover", CoverSelector(capacity=100, k=6, max_cells=50)),
                       ("mean_nearest", MeanNearest(tile=4, dist_width=26, capacity=100))):
        f = tmp_path / f"{name}.v"
        f.write_text(verilog.convert(comp, name=name, emit_src=False))
        lint_verilog(f, name)


# ---------------------------------------------------------------------------------------------
# cases


def _chunk(rng, n, k, dim=10, dup=True):
    X = rng.integers(0, 256, (n, dim))
    if dup:   # duplicates: distance-0 neighbours and equal gains
        X[rng.integers(0, n, max(1, n // 8))] = X[0]
    nbr, dist = desne.knn(X, k)
    kk = nbr.shape[1]
    aff = desne.affinities(dist, min(5.0, kk - 0.5) if kk > 1 else 1.5)
    return X, nbr, aff["P"]


def _case(X, nbr, P, budget, *, Y=None, allocation="proportional", start="mean", cells=None):
    n = nbr.shape[0]
    if Y is not None:     # the grid's cells and quotas, as grid_cover_select computes them
        _, info = desne.grid_cover_select(Y, nbr, P, budget, allocation, details=True)
        cell, quota = slots_and_quotas(info["cell"], info["quota"])
    elif cells is not None:
        slot, _ = slots_and_quotas(cells, np.zeros(int(np.max(cells)) + 1))
        counts = np.bincount(slot)
        cell, quota = slot, desne.allocate(counts, budget, allocation)
    else:                 # coverage without the grid: one slot holding the whole budget
        cell, quota = np.zeros(n, dtype=np.int64), np.array([budget])
    s = desne.mean_nearest(X) if start == "mean" else start
    return {"nbr": nbr.tolist(), "P": P.tolist(), "cell": [int(v) for v in cell],
            "quota": [int(v) for v in quota], "start": None if s is None else int(s),
            "budget": int(budget)}


def _shared_row_ends(nbr, P):
    """The rows' columns reordered (the same graph: a row is a set) so that row i's last
    neighbour is row i + 1's first wherever they share one: the build's walks then read a
    word in the cycle the previous edge writes it, which only their forwarding gets right."""
    nbr, P = nbr.copy(), P.copy()
    shared = 0
    for i in range(len(nbr) - 1):
        fixed = nbr[i, 0] if i else None      # row i's first column, placed by row i - 1
        common = [j for j in nbr[i + 1] if j in set(nbr[i]) and j != fixed]
        if not common:
            continue
        j = common[0]
        a, b = int(np.flatnonzero(nbr[i] == j)[0]), int(np.flatnonzero(nbr[i + 1] == j)[0])
        for row, src, dst in ((i, a, -1), (i + 1, b, 0)):
            order = [c for c in range(nbr.shape[1]) if c != src]
            order.insert(len(order) if dst == -1 else 0, src)
            nbr[row], P[row] = nbr[row, order], P[row, order]
        shared += 1
    return nbr, P, shared


@functools.lru_cache(maxsize=2)
def _verilog(capacity=CAPACITY):
    from amaranth.back import verilog

    return verilog.convert(CoverSelector(capacity=capacity, k=K, max_cells=capacity),
                           name="cover", emit_src=False)


def _run(cases, *, seed=1, idle=0.3, backpressure=0.4, report=None, capacity=CAPACITY):
    params = {"selector": {"capacity": capacity, "k": K, "max_cells": capacity},
              "cases": cases, "seed": seed, "idle": idle, "backpressure": backpressure}
    if report is not None:
        params["report"] = str(report)
    run_cocotb(f"cover_c{capacity}_k{K}", _verilog(capacity), "nms.verif.tb.cover", params,
               toplevel="cover")


def test_cocotb_grid_quotas_and_start():
    """Real chunks (model kNN + affinities), cells and quotas from the grid over an embedding
    and over random cells, with and without the chunk-mean start."""
    rng = np.random.default_rng(5)
    cases = []
    X, nbr, P = _chunk(rng, 100, K)
    Y = rng.integers(-(1 << 20), 1 << 20, (100, 2))
    for budget in (1, 5, 10, 20):
        cases.append(_case(X, nbr, P, budget, Y=Y))
    cases.append(_case(X, nbr, P, 10, Y=Y, allocation="adaptive", start=None))
    X, nbr, P = _chunk(rng, 60, 5)               # kk = 5 < K
    cases.append(_case(X, nbr, P, 12, cells=rng.integers(0, 7, 60)))
    cases.append(_case(X, nbr, P, 12, cells=rng.integers(0, 7, 60), start=None))
    _run(cases, seed=3)


def test_cocotb_edge_cases():
    """No grid, budget = n, n = 2, kk = 1, a start in a cell of quota 0, identical points."""
    rng = np.random.default_rng(6)
    cases = []
    X, nbr, P = _chunk(rng, 40, K)
    cases.append(_case(X, nbr, P, 7))                       # one slot (cover without the grid)
    cases.append(_case(X, nbr, P, 40, start=None))          # budget = n
    cells = np.zeros(40, dtype=np.int64)
    cells[:3] = 1
    s = 1                                                   # its cell gets quota 0 at budget 2
    c = _case(X, nbr, P, 2, cells=cells, start=s)
    assert c["quota"][c["cell"][s]] == 0
    cases.append(c)
    X2, nbr2, P2 = _chunk(rng, 2, K)                        # n = 2: kk = 1
    cases.append(_case(X2, nbr2, P2, 1))
    cases.append(_case(X2, nbr2, P2, 2))
    same = np.full((20, 4), 9)                              # all equal: every gain ties
    nbr3, dist3 = desne.knn(same, K)
    P3 = desne.affinities(dist3, 5.0)["P"]
    cases.append(_case(same, nbr3, P3, 6, cells=np.arange(20) % 3))
    nbr5, P5, shared = _shared_row_ends(nbr, P)             # the walks' forwarding
    assert shared > 10
    cases.append(_case(X, nbr5, P5, 9, start=None))
    X4, nbr4, P4 = _chunk(rng, CAPACITY, K)                 # n = C
    cases.append(_case(X4, nbr4, P4, 13, Y=rng.integers(-999, 999, (CAPACITY, 2))))
    _run(cases, seed=4, idle=0.5, backpressure=0.6)


def test_cocotb_banked_reverse_lists():
    """At C = 256 the reverse lists (C·K = 4096 words) are two banks of nms.rtl.bram's banked
    memory: the reads that cross banks, against the model."""
    from nms.rtl.bram import bank_depth

    assert 256 * K // bank_depth(27, 256 * K) == 2
    rng = np.random.default_rng(8)
    X, nbr, P = _chunk(rng, 256, K)
    Y = rng.integers(-(1 << 20), 1 << 20, (256, 2))
    _run([_case(X, nbr, P, 25, Y=Y), _case(X, nbr, P, 60, start=None)], seed=5, capacity=256)


def _statistics(case):
    """What the cycle formula needs, from the model's pick order (independent of the RTL)."""
    return cover_run_statistics(case["nbr"], case["P"], case["cell"], case["quota"],
                                case["start"], case["budget"])


def test_cocotb_cycles_no_stall(tmp_path):
    """Without stalls every run takes exactly ``cover_cycles`` (and the build ``build_cycles``)."""
    rng = np.random.default_rng(7)
    X, nbr, P = _chunk(rng, CAPACITY, K, dim=16, dup=False)
    Y = rng.integers(-(1 << 20), 1 << 20, (CAPACITY, 2))
    cases = [_case(X, nbr, P, b, Y=Y) for b in (1, 6, 13, 26)]
    cases.append(_case(X, nbr, P, 13, Y=Y, start=None))
    report = tmp_path / "cover_cycles.json"
    _run(cases, seed=8, idle=None, backpressure=None, report=report)
    rows = json.loads(report.read_text())
    assert [r["cycles"] for r in rows] == [cover_cycles(**_statistics(c)) for c in cases]
    assert [r["build_cycles"] for r in rows] == [build_cycles(n=CAPACITY, kk=K)] * len(cases)


# ---------------------------------------------------------------------------------------------
# the start point (Amaranth simulator: the unit only observes a stream)


@pytest.mark.parametrize("n, tile, dim, seed", [(37, 4, 12, 1), (8, 4, 3, 2), (2, 1, 5, 3),
                                                (64, 8, 20, 4), (30, 4, 1, 5),
                                                # the chosen T = 16 (its chain once elaborated
                                                # as a tree of 2^T copies: minutes)
                                                (40, 16, 6, 6)])
def test_mean_nearest_equals_the_model(n, tile, dim, seed):
    """Distances of every tile (padding queries included, random gaps and refused beats) in;
    the start index equals ``desne.mean_nearest`` of the vectors — also with duplicates, whose
    sums tie (the lower index wins)."""
    import random

    from amaranth.sim import Simulator

    rng = np.random.default_rng(seed)
    jobs = []
    for _ in range(3):
        X = rng.integers(0, 256, (n, dim))
        X[rng.integers(0, n, max(1, n // 4))] = X[n // 2]      # ties
        jobs.append(X)
    jobs.append(np.tile(jobs[0][:1], (n, 1)))                  # all equal: index 0
    dut = MeanNearest(tile=tile, dist_width=26, capacity=128)
    got = []

    async def bench(ctx):
        rnd = random.Random(seed)
        for X in jobs:
            D = desne.squared_distances(X, X)
            ctx.set(dut.n, n)
            ctx.set(dut.clear, 1)
            await ctx.tick()
            ctx.set(dut.clear, 0)
            for base in range(0, n, tile):
                for j in range(n):
                    dist = [int(D[base + t, j]) if base + t < n else rnd.randrange(1 << 20)
                            for t in range(tile)]          # padding rows: any value
                    ctx.set(dut.dist.payload, {"dist": dist, "last": int(j == n - 1)})
                    ctx.set(dut.dist.valid, 1)
                    while True:                              # random refusals by the consumer
                        ready = rnd.random() < 0.7
                        ctx.set(dut.dist_ready, int(ready))
                        await ctx.tick()
                        if ready:
                            break
                    ctx.set(dut.dist.valid, 0)
                    if rnd.random() < 0.3 and not (base + tile >= n and j == n - 1):
                        await ctx.tick()
            # right after the final beat's handshake edge here: the start is valid after
            # `latency` edges counted from that one, not before
            for _ in range(dut.latency - 2):
                await ctx.tick()
                assert not ctx.get(dut.start.valid)
            await ctx.tick()
            assert ctx.get(dut.start.valid)
            got.append(ctx.get(dut.start.payload.index))
            ctx.set(dut.start.ready, 1)
            await ctx.tick()
            ctx.set(dut.start.ready, 0)
            assert not ctx.get(dut.start.valid)
        bench.finished = True

    bench.finished = False
    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    assert bench.finished
    assert got == [desne.mean_nearest(X) for X in jobs]
