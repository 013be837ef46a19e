"""The grid sampler's units one by one in the Amaranth simulator (no Verilator build), each against
an independent expectation: the bit-exact model's own functions (``desne.grid_cells``,
``grid_level``, ``allocate``, ``grid_select``) or a direct Python computation. Units that work on
memories run with real ``amaranth.lib.memory.Memory`` instances around them, preloaded with
their inputs, and their results are read back out of the memories."""

from __future__ import annotations

import random

import numpy as np
import pytest
from amaranth import Elaboratable, Module, Signal, unsigned
from amaranth.hdl import ResetInserter
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.sim import Simulator

from nms.rtl import fixedpoint as fp
from nms.rtl.grid import (COORD_BITS, DIST_BITS, Allocation, BoundingBox, CentreDistance,
                          Emitter, ExtraUnits, GridController, GridGeometry, GridSampler,
                          LevelSearch, SelectionRounds, WaterLevel)
from nms.verif.models import desne
from nms.verif.models.grid_stats import grid_run_statistics

G = fp.GRID_BITS_MAX
MASK24 = (1 << COORD_BITS) - 1
#: cycles of the level search's cell-map sweep after a reset (one per entry)
CELL_MAP_CLEAR = 1 << (2 * G)


def _simulate(dut, bench, *, reset=None):
    """Run the async testbench ``bench(ctx)`` against ``dut`` to its end (every wait loop in
    the testbenches has its own cycle limit, so nothing hangs). With ``reset`` (a signal the
    testbench drives), ``dut`` is simulated behind ``ResetInserter(reset)``."""
    sim = Simulator(dut if reset is None else ResetInserter(reset)(dut))
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    assert bench.finished, "testbench did not run to its end"


def _finishing(fn):
    """Mark an async testbench so that :func:`_simulate` can tell it ran to the end."""
    async def bench(ctx):
        await fn(ctx)
        bench.finished = True
    bench.finished = False
    return bench


class _WithMemories(Elaboratable):
    """A unit plus one real memory per name; each memory is wired to the unit's read and/or
    write port (``spec = (width, depth, init, read_port_or_None, write_port_or_None)``)."""

    def __init__(self, unit, specs: dict):
        self.unit = unit
        self.specs = specs
        self.mem = {name: Memory(shape=unsigned(w), depth=d, init=init)
                    for name, (w, d, init, _, _) in specs.items()}

    def elaborate(self, platform):
        m = Module()
        m.submodules.unit = self.unit
        for name, (_, _, _, rd, wr) in self.specs.items():
            m.submodules[name] = mem = self.mem[name]
            if rd is not None:
                wiring.connect(m, rd, mem.read_port())
            if wr is not None:
                wiring.connect(m, wr, mem.write_port())
        return m


async def _wait_cell_map_clear(ctx, unit):
    """After a reset: the level search sweeps its cell map for exactly ``4**G`` cycles (not
    busy, ``run.start`` must wait); returns that count."""
    cycles = 0
    while ctx.get(unit.clearing):
        assert not ctx.get(unit.busy), "busy while clearing the cell map"
        cycles += 1
        assert cycles <= CELL_MAP_CLEAR, "the cell-map sweep does not end"
        await ctx.tick()
    return cycles


async def _run_phase(ctx, unit, *, limit=100_000):
    """Pulse ``run.start``; return the cycles from the next one up to ``done`` (inclusive)."""
    ctx.set(unit.run.start, 1)
    await ctx.tick()
    ctx.set(unit.run.start, 0)
    cycles = 0
    while True:
        assert ctx.get(unit.busy), "the unit left its phase without done"
        cycles += 1
        if ctx.get(unit.run.done):
            await ctx.tick()
            assert not ctx.get(unit.busy), "still busy after done"
            return cycles
        assert cycles < limit, "done never came"
        await ctx.tick()


def _clouds(seed):
    """Point sets that exercise the level search: uniform, clustered, one cell, collinear."""
    rng = np.random.default_rng(seed)
    out = [rng.integers(-(1 << 22), 1 << 22, size=(40, 2)),
           np.vstack([c + rng.normal(0, 2000, size=(15, 2)).astype(np.int64)
                      for c in rng.integers(-(1 << 21), 1 << 21, size=(3, 2))]),
           np.full((9, 2), -4321),
           np.stack([np.arange(20) * 1000, np.full(20, 7)], 1),
           np.array([[fp.Y_MIN, fp.Y_MAX], [fp.Y_MAX, fp.Y_MIN], [0, 0], [5, -5]]),
           np.array([[3, 3]])]
    return [np.clip(Y, fp.Y_MIN, fp.Y_MAX) for Y in out]


# ------------------------------------------------------------------------------------------------
# bounding box and centre distance


def test_bounding_box_matches_grid_cells():
    box = BoundingBox()
    sets = _clouds(1)
    got = []

    async def bench(ctx):
        for Y in sets:
            for k, (x, y) in enumerate(Y.tolist()):
                if random.random() < 0.3:                  # gaps between points
                    await ctx.tick()
                ctx.set(box.sample.valid, 1)
                ctx.set(box.sample.payload, {"x": x, "y": y, "first": int(k == 0)})
                await ctx.tick()
                ctx.set(box.sample.valid, 0)
            ctx.set(box.finish, 1)
            await ctx.tick()
            ctx.set(box.finish, 0)
            for _ in range(BoundingBox.latency - 1):
                await ctx.tick()
            got.append(((ctx.get(box.lo_x), ctx.get(box.lo_y)), (ctx.get(box.ex), ctx.get(box.ey))))

    random.seed(2)
    _simulate(box, _finishing(bench))
    for Y, (lo, e) in zip(sets, got):
        _, lo_m, e_m = desne.grid_cells(Y, 0)
        assert lo == tuple(lo_m.tolist()) and e == tuple(e_m.tolist())


def test_centre_distance_is_the_models_distance_with_fixed_latency():
    dut = CentreDistance(capacity=64)
    rng = random.Random(4)
    for Y in _clouds(3)[:5]:
        for g in (0, 2, G):                     # one pass: the exponents are constant
            c, lo, e = desne.grid_cells(Y, g)
            centre = lo + (((2 * c + 1) << e) >> (g + 1))
            dd = ((Y - centre) ** 2).sum(1)
            sent, got = [], []

            async def bench(ctx, Y=Y, g=g, c=c, lo=lo, e=e, sent=sent, got=got):
                ctx.set(dut.ex, int(e[0]))
                ctx.set(dut.ey, int(e[1]))
                k, cycle = 0, 0
                drain = CentreDistance.latency + 2      # cycles after the last beat
                while k < len(Y) or cycle < (sent[-1][0] if sent else 0) + drain:
                    valid = k < len(Y) and rng.random() < 0.7
                    if k < len(Y):
                        d = (Y[k] - lo).tolist()
                        ctx.set(dut.i.payload, {"addr": k, "dx": d[0], "dy": d[1], "g": g,
                                                "cx": int(c[k, 0]), "cy": int(c[k, 1])})
                    ctx.set(dut.i.valid, valid)
                    if valid:
                        sent.append((cycle, k))
                        k += 1
                    if ctx.get(dut.pdist.en):
                        got.append((cycle, ctx.get(dut.pdist.addr), ctx.get(dut.pdist.data)))
                    await ctx.tick()
                    cycle += 1

            _simulate(dut, _finishing(bench))
            assert [(t + CentreDistance.latency, k, int(dd[k])) for t, k in sent] == got
            assert dd.max() < 1 << DIST_BITS


# ------------------------------------------------------------------------------------------------
# level search


def _level_harness(geo):
    unit = LevelSearch(capacity=geo.capacity)
    specs = {
        "pts": (2 * COORD_BITS, geo.capacity, [], unit.pts, None),
        "pslot": (geo.slot_bits, geo.capacity, [], None, unit.pslot),
        "pdist": (DIST_BITS, geo.capacity, [], None, unit.pdist),
        "cellid": (geo.cell_bits, geo.max_cells, [], unit.cellid_r, unit.cellid_w),
        "cnt": (geo.count_bits, geo.max_cells, [], None, unit.cnt_w),
    }
    return unit, _WithMemories(unit, specs)


def _level_expectation(Y, budget):
    """Level, slots (hardware cell ids in first-occurrence order), counts, each point's slot
    and distance (from the model), and the cycles of the passes (docs/rtl-grid.md)."""
    g = desne.grid_level(Y, budget)
    _, det = desne.grid_select(Y, budget, details=True)
    c, _, _ = desne.grid_cells(Y, g)
    hw_cell = (c[:, 0] | (c[:, 1] << G)).tolist()
    slots = list(dict.fromkeys(hw_cell))
    cycles = 0
    for lv in range(G, g - 1, -1):        # 10 + 2 * points read + cells per level tried
        cl, _, _ = desne.grid_cells(Y, lv)
        seen, read = set(), 0
        for x in (cl[:, 1] * (1 << lv) + cl[:, 0]).tolist():
            read += 1
            if x not in seen and len(seen) == budget:
                break
            seen.add(x)
        cycles += 10 + 2 * read + len(seen)
    return {"g": g, "K": len(slots), "max": max(hw_cell.count(x) for x in slots),
            "cellid": slots, "cnt": [hw_cell.count(x) for x in slots],
            "pslot": [slots.index(x) for x in hw_cell], "pdist": det["dist"].tolist(),
            "cycles": cycles}


def test_level_search_finds_the_models_level_slots_counts_and_distances():
    """All point sets and budgets back to back on one instance: the cell map must be all-zero
    again after every search (stale entries would corrupt the next one)."""
    geo = GridGeometry(64)
    rng = random.Random(5)
    runs = [(Y, budget) for seed in (5, 6) for Y in _clouds(seed)
            for budget in sorted({1, len(Y), rng.randint(1, len(Y)), rng.randint(1, len(Y))})]
    unit, top = _level_harness(geo)
    got = []

    async def bench(ctx):
        assert await _wait_cell_map_clear(ctx, unit) == CELL_MAP_CLEAR
        for Y, budget in runs:
            got.append(await _level_run(ctx, unit, top, Y, budget))

    _simulate(top, _finishing(bench))
    for (Y, budget), result in zip(runs, got, strict=True):
        assert result == _level_expectation(Y, budget), (len(Y), budget)


def _level_inputs(ctx, unit, top, Y, budget):
    """Preload the point memory with ``Y`` and drive the box and job values of a search."""
    for a, (x, y) in enumerate(Y.tolist()):
        ctx.set(top.mem["pts"].data[a], (x & MASK24) | ((y & MASK24) << COORD_BITS))
    _, lo, e = desne.grid_cells(Y, 0)
    for port, v in ((unit.lo_x, lo[0]), (unit.lo_y, lo[1]), (unit.ex, e[0]),
                    (unit.ey, e[1]), (unit.n_points, len(Y)), (unit.budget, budget)):
        ctx.set(port, int(v))


async def _level_run(ctx, unit, top, Y, budget):
    """One whole search; its results read back out of the unit and the memories."""
    n = len(Y)
    _level_inputs(ctx, unit, top, Y, budget)
    cycles = await _run_phase(ctx, unit)
    for _ in range(CentreDistance.latency):    # the last distances land behind
        await ctx.tick()
    K = ctx.get(unit.cells)
    mem = {name: [ctx.get(top.mem[name].data[a]) for a in range(depth)]
           for name, depth in (("cellid", K), ("cnt", K), ("pslot", n), ("pdist", n))}
    return {"g": ctx.get(unit.level), "K": K, "max": ctx.get(unit.max_count),
            "cycles": cycles, **mem}


def test_level_search_reset_mid_pass_then_the_next_search_is_exact():
    """A reset in the middle of a level pass leaves the cell map half built (a run clears it
    only at its end): the sweep after the reset must zero it, so the next search is exact."""
    geo = GridGeometry(64)
    # the same points before and after the reset: the stale entries sit in the very cells the
    # clean search looks up
    Y_dirty = Y_clean = _clouds(8)[1]                # 3 clusters of 15 points
    rst = Signal()
    unit, top = _level_harness(geo)
    got = []

    async def bench(ctx):
        await _wait_cell_map_clear(ctx, unit)
        for cut in (13, 57):                         # inside the g = 6 pass (~110 cycles)
            _level_inputs(ctx, unit, top, Y_dirty, len(Y_dirty))
            ctx.set(unit.run.start, 1)
            await ctx.tick()
            ctx.set(unit.run.start, 0)
            for _ in range(cut):
                assert ctx.get(unit.busy) and not ctx.get(unit.run.done)
                await ctx.tick()
            ctx.set(rst, 1)
            await ctx.tick()
            ctx.set(rst, 0)
            assert ctx.get(unit.clearing) and not ctx.get(unit.busy)
            assert await _wait_cell_map_clear(ctx, unit) == CELL_MAP_CLEAR
            got.append(await _level_run(ctx, unit, top, Y_clean, 3))
            got.append(await _level_run(ctx, unit, top, Y_clean, len(Y_clean)))

    _simulate(top, _finishing(bench), reset=rst)
    want = [_level_expectation(Y_clean, 3), _level_expectation(Y_clean, len(Y_clean))] * 2
    assert got == want


# ------------------------------------------------------------------------------------------------
# allocation


def _alloc_problem(rng, g, K, allocation, capacity):
    """K occupied cells of level g with random counts (N <= capacity) and a budget K..N."""
    cells = rng.sample(range(1 << (2 * g)), K)
    counts = [1] * K
    for _ in range(rng.randint(0, capacity - K)):
        counts[min(rng.randrange(K), rng.randrange(K))] += 1   # uneven: low slots fuller
    n = sum(counts)
    budget = rng.randint(K, n)
    full = np.zeros(1 << (2 * g), dtype=np.int64)
    full[cells] = counts
    quota = desne.allocate(full, budget, allocation)[cells].tolist()
    hw_cells = [(x % (1 << g)) | ((x >> g) << G) for x in cells]
    return hw_cells, counts, n, budget, quota


@pytest.mark.parametrize("allocation", desne.ALLOCATIONS)
def test_allocation_matches_the_models_quotas(allocation):
    geo = GridGeometry(64)
    rng = random.Random(7 if allocation == "adaptive" else 8)
    problems = [_alloc_problem(rng, g, K, allocation, geo.capacity)
                for g, K in ((0, 1), (1, 3), (2, 4), (3, 12), (G, 20), (G, 1), (4, 16), (G, 64))]
    unit = Allocation(capacity=geo.capacity)
    specs = {
        "cnt": (geo.count_bits, geo.max_cells, [], unit.cnt_r, None),
        "cellid": (geo.cell_bits, geo.max_cells, [], unit.cellid_r, None),
        "quota": (geo.count_bits, geo.max_cells, [], unit.quota_r, unit.quota_w),
        "best": (geo.best_bits, geo.max_cells, [], None, unit.best_w),
    }
    top = _WithMemories(unit, specs)
    got = []

    async def bench(ctx):
        ctx.set(unit.proportional, int(allocation == "proportional"))
        for hw_cells, counts, n, budget, _ in problems:
            K = len(counts)
            for a in range(K):
                ctx.set(top.mem["cnt"].data[a], counts[a])
                ctx.set(top.mem["cellid"].data[a], hw_cells[a])
                # a stale best entry of a previous run: the quota pass must clear it
                ctx.set(top.mem["best"].data[a], (1 << geo.best_bits) - 1)
            for port, v in ((unit.cells, K), (unit.max_count, max(counts)), (unit.n_points, n),
                            (unit.budget, budget)):
                ctx.set(port, v)
            await _run_phase(ctx, unit)
            got.append(([ctx.get(top.mem["quota"].data[a]) for a in range(K)],
                        [ctx.get(top.mem["best"].data[a]) for a in range(K)]))

    _simulate(top, _finishing(bench))
    for (_, counts, _, budget, quota), (q, best) in zip(problems, got, strict=True):
        assert q == quota, (counts, budget)
        assert sum(q) == budget and best == [0] * len(counts)


def test_water_level_and_extra_units_alone():
    """The two searches of the allocation on their own: the water level equals the model's
    water-filling loop, and the extra units go to the largest (primary, lower cell) keys."""
    geo = GridGeometry(64)
    rng = random.Random(12)
    water, extra = WaterLevel(capacity=64), ExtraUnits(capacity=64)
    cases = []
    for _ in range(8):
        K = rng.randint(1, 20)
        counts = [rng.randint(1, 3 * 64 // K) for _ in range(K)][:K]
        while sum(counts) > 64:
            counts[counts.index(max(counts))] -= 1
        cases.append((counts, rng.randint(K, sum(counts))))
    wtop = _WithMemories(water, {"cnt": (geo.count_bits, geo.max_cells, [], water.cnt_r, None)})
    levels = []

    async def wbench(ctx):
        for counts, budget in cases:
            for a, c in enumerate(counts):
                ctx.set(wtop.mem["cnt"].data[a], c)
            ctx.set(water.cells, len(counts))
            ctx.set(water.max_count, max(counts))
            ctx.set(water.budget, budget)
            await _run_phase(ctx, water)
            levels.append(ctx.get(water.level))

    _simulate(wtop, _finishing(wbench))
    for (counts, budget), got in zip(cases, levels, strict=True):
        c = np.array(counts)
        level = 0                          # desne.allocate's water-filling loop
        while np.minimum(c, level + 1).sum() <= budget and level < c.max():
            level += 1
        assert got == level, (counts, budget)

    xcases = []
    for _ in range(6):
        K = rng.randint(1, 30)
        cells = rng.sample(range(1 << geo.cell_bits), K)
        prim = [rng.choice([0, 0, 1, 2, 2, 7, 40]) for _ in range(K)]
        quota = [rng.randint(0, 3) for _ in range(K)]
        left = rng.randint(0, sum(p > 0 for p in prim))
        xcases.append((cells, prim, quota, left))
    xtop = _WithMemories(extra, {
        "cellid": (geo.cell_bits, geo.max_cells, [], extra.cellid_r, None),
        "prim": (geo.count_bits, geo.max_cells, [], extra.prim_r, None),
        "quota": (geo.count_bits, geo.max_cells, [], extra.quota_r, extra.quota_w)})
    results = []

    async def xbench(ctx):
        for cells, prim, quota, left in xcases:
            for a in range(len(cells)):
                ctx.set(xtop.mem["cellid"].data[a], cells[a])
                ctx.set(xtop.mem["prim"].data[a], prim[a])
                ctx.set(xtop.mem["quota"].data[a], quota[a])
            ctx.set(extra.cells, len(cells))
            ctx.set(extra.quota_sum, sum(quota))
            ctx.set(extra.budget, sum(quota) + left)
            cycles = await _run_phase(ctx, extra)
            results.append(([ctx.get(xtop.mem["quota"].data[a]) for a in range(len(cells))],
                            cycles))

    _simulate(xtop, _finishing(xbench))
    for (cells, prim, quota, left), (got, cycles) in zip(xcases, results, strict=True):
        order = sorted(range(len(cells)), key=lambda a: (-prim[a], cells[a]))
        expected = list(quota)
        for a in order[:left]:
            expected[a] += 1
        assert got == expected
        K = len(cells)
        assert cycles == (2 + geo.key_bits * (K + 4) + K + 5 if left else 2)


# ------------------------------------------------------------------------------------------------
# rounds and emission


def test_selection_rounds_pick_the_quota_nearest_members():
    """Six problems back to back: ``picked`` is cleared in between (the emitter's job), while
    the unit itself must leave every quota and best entry at 0."""
    geo = GridGeometry(64)
    rng = random.Random(9)
    problems = []
    for _ in range(6):
        K = rng.randint(1, 8)
        n = rng.randint(K, 50)
        slot = list(range(K)) + [rng.randrange(K) for _ in range(n - K)]
        rng.shuffle(slot)
        # few distinct distances: ties decided by the lower index
        dist = [rng.choice([0, 5, 5, 9, 1 << 49, (1 << DIST_BITS) - 1]) for _ in range(n)]
        members = [[i for i in range(n) if slot[i] == s] for s in range(K)]
        quota = [rng.randint(1 if s == 0 else 0, len(members[s])) for s in range(K)]
        expected = sorted(i for s in range(K)
                          for i in sorted(members[s], key=lambda i: (dist[i], i))[:quota[s]])
        problems.append((K, n, slot, dist, quota, expected))
    unit = SelectionRounds(capacity=geo.capacity)
    specs = {
        "pslot": (geo.slot_bits, geo.capacity, [], unit.pslot_r, None),
        "pdist": (DIST_BITS, geo.capacity, [], unit.pdist_r, None),
        "picked": (1, geo.capacity, [], unit.picked_r, unit.picked_w),
        "quota": (geo.count_bits, geo.max_cells, [], unit.quota_r, unit.quota_w),
        "best": (geo.best_bits, geo.max_cells, [], unit.best_r, unit.best_w),
    }
    top = _WithMemories(unit, specs)
    got = []

    async def bench(ctx):
        for K, n, slot, dist, quota, _ in problems:
            for a in range(n):
                ctx.set(top.mem["pslot"].data[a], slot[a])
                ctx.set(top.mem["pdist"].data[a], dist[a])
            for a in range(K):
                ctx.set(top.mem["quota"].data[a], quota[a])
            ctx.set(unit.cells, K)
            ctx.set(unit.n_points, n)
            cycles = await _run_phase(ctx, unit)
            picked = [a for a in range(geo.capacity) if ctx.get(top.mem["picked"].data[a])]
            got.append((cycles, picked, [ctx.get(top.mem["quota"].data[a]) for a in range(K)],
                        [ctx.get(top.mem["best"].data[a]) for a in range(K)]))
            for a in picked:
                ctx.set(top.mem["picked"].data[a], 0)

    _simulate(top, _finishing(bench))
    for (K, n, _, _, quota, expected), (cycles, picked, q, best) in zip(problems, got,
                                                                         strict=True):
        assert picked == expected
        assert q == [0] * K and best == [0] * K
        assert cycles == max(quota) * (n + K + 10)


def test_emitter_streams_the_bitmap_under_backpressure_and_clears_it():
    geo = GridGeometry(64)
    rng = random.Random(10)
    for trial, bp in enumerate((0.0, 0.5, 0.0, 0.7)):
        n = rng.randint(1, 64)
        picked = sorted(rng.sample(range(n), rng.randint(1, n)))
        unit = Emitter(capacity=geo.capacity)
        bitmap = [int(i in picked) for i in range(geo.capacity)]
        top = _WithMemories(unit, {"picked": (1, geo.capacity, bitmap, unit.picked_r,
                                              unit.picked_w)})
        got = {"beats": []}

        async def bench(ctx, unit=unit, top=top, got=got, n=n, picked=picked, bp=bp):
            ctx.set(unit.n_points, n)
            ctx.set(unit.budget, len(picked))
            ctx.set(unit.run.start, 1)
            await ctx.tick()
            ctx.set(unit.run.start, 0)
            cycles = 0
            while True:
                cycles += 1
                ready = rng.random() >= bp
                ctx.set(unit.indices.ready, ready)
                if ctx.get(unit.indices.valid) and ready:
                    got["beats"].append(ctx.get(unit.indices.payload))
                done = ctx.get(unit.run.done)
                await ctx.tick()
                if done:
                    break
                assert cycles < 10_000
            got["cycles"] = cycles
            got["bitmap"] = [ctx.get(top.mem["picked"].data[a]) for a in range(geo.capacity)]

        _simulate(top, _finishing(bench))
        assert [b["index"] for b in got["beats"]] == picked
        assert [b["last"] for b in got["beats"]] == [0] * (len(picked) - 1) + [1]
        assert got["bitmap"] == [0] * geo.capacity
        if bp == 0.0:
            assert got["cycles"] == 2 + picked[-1] + 1


# ------------------------------------------------------------------------------------------------
# controller


def test_controller_loads_points_and_sequences_the_phases():
    C = 16
    ctrl = GridController(capacity=C)
    rng = random.Random(11)
    # (points, budget given, proportional, ends with last): the C-th point ends a load by itself
    jobs = [(5, 3, 1, True), (C, 31, 0, False), (1, 0, 1, True), (7, 7, 0, True)]
    log = []

    async def bench(ctx):
        phases = [ctrl.level, ctrl.allocation, ctrl.rounds, ctrl.emit]
        # while the cell map is being cleared no point is taken
        ctx.set(ctrl.clearing, 1)
        ctx.set(ctrl.points.valid, 1)
        for _ in range(3):
            assert not ctx.get(ctrl.points.ready) and not ctx.get(ctrl.busy)
            assert not ctx.get(ctrl.pts_w.en) and not ctx.get(ctrl.picked_w.en)
            await ctx.tick()
        ctx.set(ctrl.clearing, 0)
        ctx.set(ctrl.points.valid, 0)
        for n, budget, prop, with_last in jobs:
            ctx.set(ctrl.budget_in, budget)
            ctx.set(ctrl.proportional_in, prop)
            writes, k = [], 0
            while k < n:
                valid = rng.random() < 0.7
                x, y = rng.randrange(-(1 << 23), 1 << 23), rng.randrange(-(1 << 23), 1 << 23)
                ctx.set(ctrl.points.valid, valid)
                ctx.set(ctrl.points.payload, {"x": x, "y": y,
                                              "last": int(with_last and k == n - 1)})
                assert ctx.get(ctrl.points.ready) and not ctx.get(ctrl.busy)
                if valid:
                    assert ctx.get(ctrl.pts_w.en) and ctx.get(ctrl.box.valid)
                    # the point's picked bit is zeroed as it loads (the bitmap starts clean)
                    assert (ctx.get(ctrl.picked_w.en), ctx.get(ctrl.picked_w.addr),
                            ctx.get(ctrl.picked_w.data)) == (1, k, 0)
                    assert ctx.get(ctrl.box.payload.first) == (k == 0)
                    writes.append((ctx.get(ctrl.pts_w.addr), ctx.get(ctrl.pts_w.data)))
                    assert writes[-1] == (k, (x & MASK24) | ((y & MASK24) << COORD_BITS))
                    k += 1
                else:
                    assert not ctx.get(ctrl.pts_w.en) and not ctx.get(ctrl.picked_w.en)
                await ctx.tick()
            ctx.set(ctrl.points.valid, 1)                    # the next job's point must wait
            assert ctx.get(ctrl.busy) and not ctx.get(ctrl.points.ready)
            assert ctx.get(ctrl.box_finish) and ctx.get(ctrl.level.start)
            assert ctx.get(ctrl.n_points) == n and ctx.get(ctrl.proportional) == prop
            assert ctx.get(ctrl.budget) == min(max(budget, 1), n)
            await ctx.tick()
            for p, phase in enumerate(phases):
                for _ in range(rng.randint(0, 4)):           # the unit works
                    assert not any(ctx.get(q.start) for q in phases)
                    assert ctx.get(ctrl.busy) and not ctx.get(ctrl.points.ready)
                    await ctx.tick()
                ctx.set(phase.done, 1)
                # the next phase starts in the cycle of this one's done
                for q, other in enumerate(phases):
                    assert ctx.get(other.start) == (q == p + 1)
                await ctx.tick()
                ctx.set(phase.done, 0)
            ctx.set(ctrl.points.valid, 0)
            log.append(n)

    _simulate(ctrl, _finishing(bench))
    assert log == [n for n, *_ in jobs]


# ------------------------------------------------------------------------------------------------
# the whole sampler: a reset in the middle of a run, then the next run


def test_sampler_reset_mid_run_then_next_run_is_bit_exact():
    """Reset the sampler in the middle of a level pass (cell map half built), of the rounds
    (picked bits set, best entries filled) and of the emission (bitmap half cleared); after
    each, a clean run must equal ``grid_select`` index for index, and its cycles from the
    final point must still be exactly ``run_cycles``. Points are accepted only after the
    cell-map sweep (``4**G`` cycles from the reset)."""
    C = 64
    dut = GridSampler(capacity=C)
    rst = Signal()
    rng = np.random.default_rng(31)
    dirty = np.clip(rng.integers(-(1 << 22), 1 << 22, size=(C, 2)), fp.Y_MIN, fp.Y_MAX)
    clean = _clouds(9)[1]                                  # 45 points in 3 clusters
    runs = [(clean, 9, "adaptive"), (clean, 20, "proportional")]
    stats = grid_run_statistics(dirty, 40, "proportional")
    total = dut.run_cycles(**stats)
    emit = 1 + stats["last_index"] + 1
    rounds = stats["max_quota"] * (2 * C + 8)              # upper part of the rounds
    # (points, budget, proportional, reset cycle after the final point): a level pass over
    # the clean run's own points (the stale cell-map entries lie in the cells it looks up),
    # then the middle of the rounds and of the emission of a full uniform set
    cuts = [(clean, len(clean), False, 20), (dirty, 40, True, total - emit - rounds // 2),
            (dirty, 40, True, total - emit // 2)]
    log = []

    async def load(ctx, Y, budget, proportional):
        """Send the points; returns the cycle count from the reset/idle to the first point."""
        ctx.set(dut.budget, budget)
        ctx.set(dut.proportional, int(proportional))
        waited = 0
        for k, (x, y) in enumerate(Y.tolist()):
            ctx.set(dut.points.payload, {"x": x, "y": y, "last": int(k == len(Y) - 1)})
            ctx.set(dut.points.valid, 1)
            while not ctx.get(dut.points.ready):
                waited += 1
                assert waited <= CELL_MAP_CLEAR + 10, "points never accepted"
                await ctx.tick()
            await ctx.tick()
        ctx.set(dut.points.valid, 0)
        return waited

    async def bench(ctx):
        ctx.set(dut.indices.ready, 1)
        for Y_dirty, budget_dirty, proportional_dirty, cut in cuts:
            await load(ctx, Y_dirty, budget_dirty, proportional_dirty)
            for _ in range(cut):
                assert ctx.get(dut.busy), "the dirty run ended before the reset"
                await ctx.tick()
            ctx.set(rst, 1)
            await ctx.tick()
            ctx.set(rst, 0)
            waited = await load(ctx, *runs[0][:2], runs[0][2] == "proportional")
            assert waited == CELL_MAP_CLEAR
            for r, (Y, budget, allocation) in enumerate(runs):
                if r:
                    assert await load(ctx, Y, budget, allocation == "proportional") == 0
                out, cycles = [], 0
                while True:
                    cycles += 1
                    assert cycles < 50_000, "the run never ended"
                    if ctx.get(dut.indices.valid):
                        out.append(ctx.get(dut.indices.payload.index))
                        if ctx.get(dut.indices.payload.last):
                            await ctx.tick()
                            break
                    await ctx.tick()
                log.append((out, cycles))

    _simulate(dut, _finishing(bench), reset=rst)
    want = [(desne.grid_select(Y, budget, allocation).tolist(),
             dut.run_cycles(**grid_run_statistics(Y, budget, allocation)))
            for Y, budget, allocation in runs] * len(cuts)
    assert log == want
