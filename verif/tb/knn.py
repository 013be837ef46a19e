"""cocotb testbench of :class:`nms.rtl.knn.KnnDatapath` (distance engine + kNN selector), run
with ``nms.verif.sim.run_cocotb``; parameters come from :func:`nms.verif.sim.tb_params`.

Scoreboard: drivers on ``tile_base``/``query``/``candidate`` -> a passive monitor of the accepted
candidate beats -> the model (:func:`nms.verif.models.desne.knn` on the whole class, computed once per
class) releases a tile's expected rows into the :class:`InOrderChecker` when that tile's final
candidate beat is accepted <- sink monitor on ``rows`` (random back-pressure). Every emitted
(index, distance, last) beat is compared; nothing may come out beyond the expected rows.

Parameters (JSON): ``datapath`` (KnnDatapath keyword parameters), ``seed``, ``digits`` (a list of
64-element uint8 rows of one real digits class, optional), ``report`` (path for the no-stall
cycle report, optional).
"""

from __future__ import annotations

import warnings
import json
import random
from pathlib import Path

import cocotb
import numpy as np

from nms.rtl.knn import KnnDatapath
from nms.verif.models.desne import knn
from nms.verif.models.distance import DistanceParams, candidate_beats, query_beats
from nms.verif.sim.build import tb_params
from nms.verif.sim.streams import CycleLoop, InOrderChecker, StreamDriver, StreamMonitor, start_clock

from amaranth.hdl import UnusedElaboratable

# Components are built here only to read their layouts and formulas (never elaborated in this
# process); Amaranth's public warning category for that is filtered in this simulator process.
warnings.filterwarnings("ignore", category=UnusedElaboratable)


def expected_rows(X: np.ndarray, k: int, lo: int, hi: int) -> list[dict]:
    """Row beats of points ``lo .. hi-1`` of class ``X`` as the golden model defines them."""
    nbr, dist = knn(X, k)
    kk = nbr.shape[1]
    return [{"index": int(nbr[i, j]), "dist": int(dist[i, j]), "last": int(j == kk - 1)}
            for i in range(lo, hi) for j in range(kk)]


class KnnTB:
    """Drivers, monitors, model and checker around one :class:`KnnDatapath`."""

    def __init__(self, dut, *, idle=None, backpressure=None, seed: int = 0):
        self.dut = dut
        self.params = tb_params()
        layouts = KnnDatapath(**self.params["datapath"])  # same layouts as the Verilog under test
        self.dp = layouts
        e = layouts.engine
        self.p = DistanceParams(lanes=e.lanes, tile=e.tile, elem_width=e.elem_width,
                                max_dim=e.max_dim)
        self.k = layouts.selector.k
        self.rng = np.random.default_rng(seed)
        self.fill_rng = random.Random(seed + 1)
        self.loop = CycleLoop(dut.clk)
        self.checker = InOrderChecker("knn rows")
        self.tile_base = StreamDriver(dut, "tile_base", loop=self.loop, idle=idle, seed=seed + 2)
        self.query = StreamDriver(dut, "query", loop=self.loop, layout=e.query_layout,
                                  idle=idle, seed=seed + 3)
        self.candidate = StreamDriver(dut, "candidate", loop=self.loop,
                                      layout=e.candidate_layout, idle=idle, seed=seed + 4)
        self.candidate_mon = StreamMonitor(dut, "candidate", loop=self.loop,
                                           layout=e.candidate_layout, callback=self._pass_done)
        self.rows = StreamMonitor(dut, "rows", loop=self.loop, layout=layouts.selector.row_layout,
                                  sink=True, backpressure=backpressure, seed=seed + 5,
                                  callback=self.checker.observe)
        self.pending: list[list[dict]] = []   # expected rows per queued tile, in order
        self.n_expected = 0
        self.beats_queued = 0                 # input beats (queries + candidates) queued

    def _pass_done(self, beat) -> None:
        # model step: a tile's rows are due once its final candidate beat has gone in
        if beat["last"]:
            self.checker.expect_all(self.pending.pop(0))

    async def start(self) -> None:
        await start_clock(self.dut)
        self.loop.start()

    def _fill(self):
        # random values in the unused lanes of final beats: the engine must ignore them
        while True:
            yield self.fill_rng.randrange(1 << self.p.elem_width)

    def send_class(self, X, *, tiles=None) -> None:
        """Queue the tiles of class ``X``: base, queries (the padding of a partial final tile is
        random), all N candidates. ``tiles``: all (None), the first ``tiles`` (int) or the given
        tile numbers (a list; negative numbers count from the end)."""
        X = np.asarray(X, dtype=np.int64)
        n, T = len(X), self.p.tile
        count = -(-n // T)
        if tiles is None:
            tiles = range(count)
        elif isinstance(tiles, int):
            tiles = range(tiles)
        for tile in tiles:
            tile %= count
            base = tile * T
            queries = X[base:base + T]
            if len(queries) < T:
                pad = self.rng.integers(0, self.p.elem_max + 1, (T - len(queries), X.shape[1]))
                queries = np.vstack([queries, pad])
            self.tile_base.send(base)
            qb = query_beats(self.p, queries, fill=self._fill())
            cb = candidate_beats(self.p, X, fill=self._fill())
            self.query.extend(qb)
            self.candidate.extend(cb)
            self.beats_queued += len(qb) + len(cb)
            rows = expected_rows(X, self.k, base, min(base + T, n))
            self.pending.append(rows)
            self.n_expected += len(rows)

    def random_class(self, n: int, dim: int) -> np.ndarray:
        return self.rng.integers(0, self.p.elem_max + 1, size=(n, dim))

    async def finish(self) -> None:
        bound = 20 * self.beats_queued + 50 * self.n_expected + 1000
        try:
            await self.rows.wait_count(self.n_expected, timeout_cycles=bound)
        except TimeoutError as exc:
            raise AssertionError(f"{exc}\n{self.checker.report()}") from None
        start = self.loop.cycle  # a few more cycles: nothing else may come out
        await self.loop.wait_until(lambda: self.loop.cycle >= start + 30, timeout_cycles=60)
        self.loop.stop()
        problems = self.candidate_mon.protocol_errors + self.rows.protocol_errors
        assert not problems, "stream protocol violations:\n" + "\n".join(problems[:10])
        assert not self.pending, f"{len(self.pending)} tiles never finished"
        self.checker.assert_done()
        self.dut._log.info("%s; %d cycles", self.checker.report(), self.loop.cycle)


@cocotb.test()
async def random_classes(dut):
    """Random uint8 classes, several tiles with N not a multiple of T, random valid gaps on every
    input and random back-pressure on the rows."""
    seed = tb_params().get("seed", 1)
    tb = KnnTB(dut, idle=0.3, backpressure=0.4, seed=seed)
    T, D, k = tb.p.tile, tb.p.max_dim, tb.k
    tb.send_class(tb.random_class(3 * T + 1, D))
    tb.send_class(tb.random_class(2 * T + T // 2 + 1 + k, min(D, tb.p.lanes + 3)))
    tb.send_class(tb.random_class(T + 2, 1))  # dim 1: many equal distances
    await tb.start()
    await tb.finish()


@cocotb.test()
async def edge_classes(dut):
    """Duplicates (zero distances, ties), an all-identical class, N = K + 1, N = 2, extreme
    pixel values 0/255 at dim = max_dim (the largest distance)."""
    seed = tb_params().get("seed", 1) + 100
    tb = KnnTB(dut, idle=0.2, backpressure=0.5, seed=seed)
    T, D, k, top = tb.p.tile, tb.p.max_dim, tb.k, tb.p.elem_max
    protos = tb.random_class(3, D)
    tb.send_class(protos[tb.rng.integers(0, 3, 2 * T + k + 1)])        # duplicates only
    tb.send_class(np.full((T + 3, 7), 42))                              # all identical
    tb.send_class(tb.random_class(k + 1, D))                            # N = K + 1
    tb.send_class(tb.random_class(2, D))                                # N = 2
    ext = tb.rng.integers(0, 2, size=(2 * T + 3, D)) * top              # 0 / 255 only
    ext[0], ext[1] = 0, top
    tb.send_class(ext)
    tb.send_class(np.vstack([np.zeros((1, D), int), np.full((1, D), top)]))  # only neighbour at max
    await tb.start()
    await tb.finish()
    biggest = D * top ** 2
    assert any(b["dist"] == biggest for b in tb.rows.beats), "largest distance not exercised"


@cocotb.test(skip=not tb_params().get("digits"))
async def digits_class(dut):
    """One real class of sklearn's digits (64-D, values 0..16), with gaps and back-pressure:
    the first tiles and the final (possibly partial) one, every row checked against the whole
    class's kNN (all tiles take ~20 s of simulation and add no new case)."""
    params = tb_params()
    tb = KnnTB(dut, idle=0.1, backpressure=0.3, seed=params.get("seed", 1) + 200)
    tb.send_class(np.asarray(params["digits"]), tiles=[0, 1, 2, -1])
    await tb.start()
    await tb.finish()


@cocotb.test()
async def no_stall(dut):
    """No input gaps and no back-pressure: every query and candidate beat of consecutive tiles
    is accepted on consecutive cycles (the selector adds no stall); cycles per tile reported."""
    params = tb_params()
    tb = KnnTB(dut, seed=params.get("seed", 1) + 300)
    T, D, L = tb.p.tile, tb.p.max_dim, tb.p.lanes
    runs = [(64, D, 3), (256, D, 3), (64, min(D, L), 3)]  # (N, dim, tiles)
    for n, dim, tiles in runs:
        tb.send_class(tb.random_class(n, dim), tiles=tiles)
    await tb.start()
    await tb.finish()
    accepted = sorted(tb.query.accept_cycles + tb.candidate.accept_cycles)
    span = accepted[-1] - accepted[0] + 1
    assert span == len(accepted), (
        f"{len(accepted)} input beats took {span} cycles: {span - len(accepted)} stall cycles")
    report = []
    q_cycles, c_cycles, r_cycles = (tb.query.accept_cycles, tb.candidate.accept_cycles,
                                    tb.rows.accept_cycles)
    qi = ci = ri = 0
    for n, dim, tiles in runs:
        beats = tb.p.beats(dim)
        start = q_cycles[qi]
        qi += tiles * T * beats
        ci += tiles * n * beats
        ri += tiles * T * min(tb.k, n - 1)
        end = c_cycles[ci - 1]
        report.append({"n": n, "dim": dim, "tile": T, "k": tb.k, "lanes": L, "tiles": tiles,
                       "cycles_per_tile": (end - start + 1) / tiles,
                       "formula_cycles_per_tile": (T + n) * beats,
                       "rows_tail_cycles": r_cycles[ri - 1] - end})
    if params.get("report"):
        Path(params["report"]).write_text(json.dumps(report, indent=2))
    for r in report:
        dut._log.info("no-stall: %s", r)
        assert r["cycles_per_tile"] == r["formula_cycles_per_tile"], r
