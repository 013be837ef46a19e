"""kNN selector: parameter validation, the bare selector in the Amaranth simulator against a
beat-level model, ``nms generate`` + lint, and the chained distance engine + selector under
cocotb/Verilator against ``nms.verif.models.desne.knn`` (two builds in total)."""

import json
import random

import numpy as np
import pytest
from amaranth.sim import Simulator

from nms.gen.generate import generate
from nms.gen.lint import lint_verilog
from nms.rtl.knn import KnnDatapath, KnnSelector
from nms.verif.sim.build import run_cocotb
from nms.verif.sim.streams import pack, unpack

# ---------------------------------------------------------------------------------------------
# parameter validation


@pytest.mark.parametrize("kwargs, exc, message", [
    ({"k": 0}, ValueError, "k=0 is out of range"),
    ({"k": 257}, ValueError, "k=257 is out of range"),
    ({"k": 4.0}, TypeError, "k must be an int"),
    ({"tile": 0}, ValueError, "tile=0 is out of range"),
    ({"tile": True}, TypeError, "tile must be an int"),
    ({"dist_width": 65}, ValueError, "dist_width=65 is out of range"),
    ({"index_width": 0}, ValueError, "index_width=0 is out of range"),
    ({"index_width": "16"}, TypeError, "index_width must be an int"),
])
def test_selector_rejects_bad_parameters(kwargs, exc, message):
    with pytest.raises(exc, match=message):
        KnnSelector(**kwargs)


def test_parameters_are_keyword_only():
    with pytest.raises(TypeError):
        KnnSelector(16, 4)
    with pytest.raises(TypeError):
        KnnDatapath(8, 4)


@pytest.mark.parametrize("kwargs, exc, message", [
    ({"k": -1}, ValueError, "k=-1 is out of range"),
    ({"lanes": 3}, ValueError, "lanes=3 is not a power of two"),
    ({"index_width": 33}, ValueError, "index_width=33 is out of range"),
])
def test_datapath_rejects_bad_parameters(kwargs, exc, message):
    with pytest.raises(exc, match=message):
        KnnDatapath(**kwargs)


def test_datapath_matches_engine_width():
    dp = KnnDatapath(lanes=8, tile=4, elem_width=8, max_dim=64, k=16, index_width=10)
    assert dp.selector.dist_width == dp.engine.acc_width == (64 * 255 ** 2).bit_length()
    assert dp.selector.dist_layout == dp.engine.result_layout
    assert dp.base_fifo_depth == dp.engine.fifo_depth + 2
    assert dp.parameters == {"lanes": 8, "tile": 4, "elem_width": 8, "max_dim": 64, "k": 16,
                             "index_width": 10}


# ---------------------------------------------------------------------------------------------
# the bare selector in the Amaranth simulator


def selector_model(passes, k: int, tile: int) -> list[dict]:
    """Row beats for ``passes`` = [(base, dists (N, tile))]: per query t with base + t < N the
    min(k, N-1) smallest (distance, index) pairs over the candidates other than base + t."""
    out = []
    for base, dists in passes:
        n = len(dists)
        for t in range(tile):
            q = base + t
            if q >= n:
                continue
            row = sorted((int(dists[c][t]), c) for c in range(n) if c != q)[:k]
            out += [{"index": c, "dist": d, "last": int(j == len(row) - 1)}
                    for j, (d, c) in enumerate(row)]
    return out


def _run_selector(sel: KnnSelector, passes, *, seed: int, p_valid=0.7, p_ready=0.6,
                  max_cycles=20_000):
    """Drive ``passes`` with random gaps and back-pressure; return (rows, dist accept cycles)."""
    beats = [{"dist": [int(x) for x in row], "last": int(j == len(d) - 1)}
             for _, d in passes for j, row in enumerate(d)]
    bases = [b for b, _ in passes]
    rng = random.Random(seed)
    got, accepts = [], []
    expected_len = len(selector_model(passes, sel.k, sel.tile))

    async def testbench(ctx):
        di = bi = 0
        d_on = b_on = False
        for cycle in range(max_cycles):
            if not d_on and di < len(beats) and rng.random() < p_valid:
                d_on = True
                ctx.set(sel.dist.payload.as_value(), pack(sel.dist_layout, beats[di]))
            if not b_on and bi < len(bases) and rng.random() < p_valid:
                b_on = True
                ctx.set(sel.tile_base.payload, bases[bi])
            ctx.set(sel.dist.valid, d_on)
            ctx.set(sel.tile_base.valid, b_on)
            ctx.set(sel.rows.ready, rng.random() < p_ready)
            d_take = d_on and ctx.get(sel.dist.ready)
            b_take = b_on and ctx.get(sel.tile_base.ready)
            if ctx.get(sel.rows.valid) and ctx.get(sel.rows.ready):
                got.append(unpack(sel.row_layout, ctx.get(sel.rows.payload.as_value())))
            if d_take:
                accepts.append(cycle)
            await ctx.tick()
            di, d_on = di + d_take, d_on and not d_take
            bi, b_on = bi + b_take, b_on and not b_take
            if di == len(beats) and len(got) >= expected_len and cycle > accepts[-1] + 10:
                break

    sim = Simulator(sel)
    sim.add_clock(1e-8)
    sim.add_testbench(testbench)
    sim.run()
    return got, accepts


@pytest.mark.parametrize("k, tile", [(1, 1), (3, 2), (4, 3)])
def test_selector_random_ties_gaps_backpressure(k, tile):
    """Small distance values force many ties; partial tiles, N = 1, N = 2, N = k + 1, a tile
    base beyond N (nothing emitted) and indices up to the index range."""
    rng = np.random.default_rng(k * 10 + tile)
    sel = KnnSelector(k=k, tile=tile, dist_width=4, index_width=5)
    passes = []
    for n, base in [(7, 0), (7, 6), (1, 0), (2, 0), (k + 1, 0), (5, 9), (32, 30), (13, 3)]:
        passes.append((base, rng.integers(0, 4, (n, tile))))
    passes.append((0, np.full((6, tile), 15)))  # all equal at the largest value
    got, _ = _run_selector(sel, passes, seed=k + tile)
    assert got == selector_model(passes, k, tile)


def test_selector_accepts_one_beat_per_cycle():
    """Always-valid input, always-ready output, N >= tile * k + 2 (a pass of N beats outlasts
    the previous pass's tile * k row beats plus the selector's 2-cycle start): no cycle without
    an input beat."""
    k, tile = 3, 2
    sel = KnnSelector(k=k, tile=tile, dist_width=8, index_width=6)
    rng = np.random.default_rng(5)
    passes = [(b, rng.integers(0, 256, (tile * k + 2, tile))) for b in (0, 2, 4, 6)]
    got, accepts = _run_selector(sel, passes, seed=0, p_valid=1.0, p_ready=1.0)
    assert got == selector_model(passes, k, tile)
    assert accepts == list(range(accepts[0], accepts[0] + len(accepts)))


# ---------------------------------------------------------------------------------------------
# nms generate


@pytest.mark.parametrize("block, params, ports", [
    ("knn", {"k": "5", "tile": "3"}, {"dist__payload", "tile_base__payload", "rows__payload"}),
    ("knn_datapath", {"k": "4", "tile": "2", "lanes": "4", "max_dim": "16"},
     {"query__payload", "candidate__payload", "tile_base__payload", "rows__payload"}),
])
def test_generate_knn_blocks_lint(tmp_path, block, params, ports):
    text, meta = generate(block, params)
    assert meta["parameters"]["k"] == int(params["k"])
    assert ports <= {p["name"] for p in meta["ports"]}
    vfile = tmp_path / f"{block}.v"
    vfile.write_text(text)
    lint_verilog(vfile, block)  # strict: -Wall minus the documented backend waivers


# ---------------------------------------------------------------------------------------------
# cocotb + Verilator: distance engine + selector against desne.knn (two builds)


CONFIGS = {
    # the kNN stage sized for digits / down-sampled images: L=8, T=4, K=16
    "main": {"lanes": 8, "tile": 4, "elem_width": 8, "max_dim": 64, "k": 16, "index_width": 10},
    # odd tile, small K, narrower index: different hardware
    "odd": {"lanes": 4, "tile": 3, "elem_width": 8, "max_dim": 64, "k": 3, "index_width": 9},
}


@pytest.fixture(scope="module")
def digits_class():
    from sklearn import datasets

    d = datasets.load_digits()
    X = d.data.astype(np.int64)
    return X[d.target == 3].tolist()  # 183 points, 64-D, values 0..16


@pytest.mark.parametrize("config", list(CONFIGS))
def test_knn_datapath_cocotb(config, digits_class, tmp_path):
    params = CONFIGS[config]
    verilog, _ = generate("knn_datapath", params, top="knn_datapath")
    report = tmp_path / "no_stall.json"
    run_cocotb(f"knn_{config}", verilog, "nms.verif.tb.knn",
               {"datapath": params, "seed": 11, "digits": digits_class, "report": str(report)},
               toplevel="knn_datapath")
    cycles = json.loads(report.read_text())
    for r in cycles:  # no stall: exactly (T + N) * ceil(dim / L) cycles per tile
        assert r["cycles_per_tile"] == r["formula_cycles_per_tile"], r
    print(config, cycles)
