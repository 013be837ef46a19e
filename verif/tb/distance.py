"""cocotb testbench of :class:`nms.rtl.distance.DistanceEngine` (run it with
``nms.verif.sim.run_cocotb``; parameters come from :func:`nms.verif.sim.tb_params`).

Scoreboard: drivers on ``query``/``candidate`` -> passive monitors of the accepted beats ->
beat-level :class:`~nms.verif.models.distance.DistanceEngineModel` -> :class:`InOrderChecker`
<- sink monitor on ``result`` (random back-pressure). At the end the observed beats are also
compared with the vector-level NumPy reference, so the beat model cannot share a protocol bug
with the RTL unnoticed.

Parameters (JSON): ``engine`` (DistanceEngine keyword parameters), ``seed``, ``n_candidates``
(per pass), ``dims`` (optional list of runtime dims for :func:`random_traffic`), and for
:func:`bench_throughput` ``bench`` = ``{"dim", "n_candidates", "n_tiles", "report"}``.
"""

from __future__ import annotations

import warnings
import itertools
import json
import random
import time
from pathlib import Path

import cocotb
import numpy as np

from nms.rtl.distance import DistanceEngine
from nms.verif.models.distance import (DistanceEngineModel, DistanceParams, Pass,
                                      candidate_beats, expected_results, query_beats)
from nms.verif.sim.build import tb_params
from nms.verif.sim.streams import CycleLoop, InOrderChecker, StreamDriver, StreamMonitor, start_clock

from amaranth.hdl import UnusedElaboratable

# Components are built here only to read their layouts and formulas (never elaborated in this
# process); Amaranth's public warning category for that is filtered in this simulator process.
warnings.filterwarnings("ignore", category=UnusedElaboratable)


class DistanceTB:
    """Drivers, monitors, model and checker around one engine instance."""

    def __init__(self, dut, *, query_idle=None, candidate_idle=None, backpressure=None,
                 seed: int = 0):
        self.dut = dut
        self.params = tb_params()
        self.engine_params = dict(self.params.get("engine", {}))
        layouts = DistanceEngine(**self.engine_params)  # same layouts as the Verilog under test
        self.p = DistanceParams(lanes=layouts.lanes, tile=layouts.tile,
                                elem_width=layouts.elem_width, max_dim=layouts.max_dim)
        self.rng = np.random.default_rng(seed)
        self.fill_rng = random.Random(seed + 1)
        self.loop = CycleLoop(dut.clk)
        self.model = DistanceEngineModel(self.p)
        self.checker = InOrderChecker("distance result")
        self.query = StreamDriver(dut, "query", loop=self.loop, layout=layouts.query_layout,
                                  idle=query_idle, seed=seed + 2)
        self.candidate = StreamDriver(dut, "candidate", loop=self.loop,
                                      layout=layouts.candidate_layout, idle=candidate_idle,
                                      seed=seed + 3)
        self.query_mon = StreamMonitor(dut, "query", loop=self.loop, layout=layouts.query_layout,
                                       callback=self.model.query_beat)
        self.candidate_mon = StreamMonitor(
            dut, "candidate", loop=self.loop, layout=layouts.candidate_layout,
            callback=lambda beat: self.checker.expect_all(self.model.candidate_beat(beat)))
        self.result = StreamMonitor(dut, "result", loop=self.loop, layout=layouts.result_layout,
                                    sink=True, backpressure=backpressure, seed=seed + 4,
                                    callback=self.checker.observe)
        self.passes: list[Pass] = []

    async def start(self) -> None:
        await start_clock(self.dut)
        self.loop.start()

    def _fill(self):
        # Random values in the unused lanes of final beats: the engine must ignore them.
        while True:
            yield self.fill_rng.randrange(1 << self.p.elem_width)

    def random_vectors(self, n: int, dim: int) -> np.ndarray:
        return self.rng.integers(0, self.p.elem_max + 1, size=(n, dim))

    def send_pass(self, queries, candidates) -> None:
        queries, candidates = np.asarray(queries), np.asarray(candidates)
        self.passes.append(Pass(queries, candidates))
        self.query.extend(query_beats(self.p, queries, fill=self._fill()))
        self.candidate.extend(candidate_beats(self.p, candidates, fill=self._fill()))

    def cycle_bound(self) -> int:
        """Generous cycle limit for everything queued (stalls at most ~x4 each way)."""
        beats = sum((self.p.tile + len(ps.candidates)) * self.p.beats(ps.queries.shape[1])
                    for ps in self.passes)
        return 20 * beats + 1000

    async def finish(self) -> None:
        expected = expected_results(self.p, self.passes)
        try:
            await self.result.wait_count(len(expected), timeout_cycles=self.cycle_bound())
        except TimeoutError as exc:
            raise AssertionError(f"{exc}\n{self.checker.report()}") from None
        # A few more cycles: nothing else may come out.
        start = self.loop.cycle
        await self.loop.wait_until(lambda: self.loop.cycle >= start + 20, timeout_cycles=40)
        self.loop.stop()
        problems = self.query_mon.protocol_errors + self.candidate_mon.protocol_errors \
            + self.result.protocol_errors
        assert not problems, "stream protocol violations:\n" + "\n".join(problems[:10])
        self.checker.assert_done()
        assert self.result.beats == expected, "result beats differ from the vector-level reference"
        self.dut._log.info("%s; %d cycles", self.checker.report(), self.loop.cycle)


def _dims(tb: DistanceTB) -> list[int]:
    """Runtime dims exercising full and partial final beats, a single element and max_dim."""
    given = tb.params.get("dims")
    if given:
        return list(given)
    L, D = tb.p.lanes, tb.p.max_dim
    dims = {D, 1, min(D, L + 1 if L > 1 else 2), min(D, 3 * L - 1 if L > 1 else 3)}
    return sorted(dims, reverse=True)


@cocotb.test()
async def random_traffic(dut):
    """Several tiles back to back with different dims, random valid gaps and back-pressure."""
    seed = tb_params().get("seed", 1)
    tb = DistanceTB(dut, query_idle=0.3, candidate_idle=0.3, backpressure=0.4, seed=seed)
    n = tb.params.get("n_candidates", 10)
    for dim in _dims(tb):
        tb.send_pass(tb.random_vectors(tb.p.tile, dim), tb.random_vectors(n, dim))
    await tb.start()
    await tb.finish()


@cocotb.test()
async def extremes(dut):
    """All-zero and all-max vectors at dim = max_dim (largest possible distance) and dim = 1."""
    seed = tb_params().get("seed", 1) + 100
    tb = DistanceTB(dut, query_idle=0.2, candidate_idle=0.2, backpressure=0.5, seed=seed)
    T, top = tb.p.tile, tb.p.elem_max
    for dim in sorted({tb.p.max_dim, 1}, reverse=True):
        zeros, full = np.zeros((1, dim), int), np.full((1, dim), top)
        queries = np.vstack([zeros, full] * T)[:T]        # alternate 0 / max queries
        candidates = np.vstack([full, zeros, full, zeros[:, ::-1] + full * (np.arange(dim) % 2)])
        tb.send_pass(queries, candidates)
    await tb.start()
    await tb.finish()
    biggest = tb.p.max_dim * top ** 2
    assert max(max(b["dist"]) for b in tb.result.beats) == biggest, "max distance not exercised"


@cocotb.test()
async def backpressure_burst(dut):
    """Output blocked for a long stretch, then slow: the credit counter must stop the input
    before the output FIFO overflows (one beat per candidate is the hardest case)."""
    params = tb_params()
    seed = params.get("seed", 1) + 200
    layouts = DistanceEngine(**params["engine"])
    depth, lanes = layouts.fifo_depth, layouts.lanes
    rng = random.Random(seed)
    blocked = itertools.chain([True] * (6 * depth), iter(lambda: rng.random() < 0.7, None))
    tb = DistanceTB(dut, backpressure=blocked, seed=seed)
    dim = min(lanes, tb.p.max_dim)
    tb.send_pass(tb.random_vectors(tb.p.tile, dim), tb.random_vectors(4 * depth, dim))
    await tb.start()
    await tb.finish()


async def _no_stall_run(dut, dims: list[int], n: int, seed: int):
    tb = DistanceTB(dut, seed=seed)
    for dim in dims:
        tb.send_pass(tb.random_vectors(tb.p.tile, dim), tb.random_vectors(n, dim))
    await tb.start()
    wall, cpu = time.perf_counter(), time.process_time()
    await tb.finish()
    # CPU time too: on a shared machine wall time depends on the other processes' load.
    return tb, time.perf_counter() - wall, time.process_time() - cpu


@cocotb.test()
async def full_throughput(dut):
    """No stalls: every query and candidate beat is accepted on consecutive cycles, tiles back
    to back included (one candidate beat per cycle after the pipeline fill)."""
    tb0 = tb_params()
    L, D = tb0["engine"].get("lanes", 8), tb0["engine"].get("max_dim", 1024)
    # dim <= L gives one beat per candidate: the case that needs the most output credits.
    dims = [min(L, D), min(D, 2 * L + 1)]
    tb, _, _ = await _no_stall_run(dut, dims, tb0.get("n_candidates", 10) * 3, tb0.get("seed", 1))
    cycles = sorted(tb.query.accept_cycles + tb.candidate.accept_cycles)
    span = cycles[-1] - cycles[0] + 1
    assert span == len(cycles), (
        f"{len(cycles)} input beats took {span} cycles: {span - len(cycles)} bubbles")
    first_final = tb.candidate.accept_cycles[tb.p.beats(dims[0]) - 1]
    latency = tb.result.accept_cycles[0] - first_final
    dut._log.info("no-stall: %d beats in %d cycles; result latency %d cycles", len(cycles), span,
                  latency)


@cocotb.test(skip=("bench" not in tb_params()))
async def bench_throughput(dut):
    """Benchmark run (``nms bench distance``): no stalls, cycle counts and simulation speed."""
    cfg = tb_params()["bench"]
    dim, n, tiles = cfg["dim"], cfg["n_candidates"], cfg["n_tiles"]
    tb, wall, cpu = await _no_stall_run(dut, [dim] * tiles, n, tb_params().get("seed", 1))
    p = tb.p
    first = tb.query.accept_cycles[0]
    last_out = tb.result.accept_cycles[-1]
    cycles = last_out - first + 1
    useful_macs = tiles * p.tile * n * dim
    report = {
        "dim": dim, "n_candidates": n, "n_tiles": tiles,
        "cycles_total": cycles,
        "cycles_per_tile": cycles / tiles,
        "candidate_beats": tb.candidate.accepted,
        "query_beats": tb.query.accepted,
        "mac_utilisation": useful_macs / (p.tile * p.lanes * cycles),
        "lane_utilisation_streaming": (n * dim) / (p.lanes * n * p.beats(dim)),
        "result_latency_cycles": tb.result.accept_cycles[0]
        - tb.candidate.accept_cycles[p.beats(dim) - 1],
        "sim_cycles": tb.loop.cycle,
        "sim_wall_s": wall,
        "sim_cycles_per_s": tb.loop.cycle / wall,
        "sim_cpu_s": cpu,
        "sim_cycles_per_cpu_s": tb.loop.cycle / cpu,
        "results_checked": tb.checker.matched,
    }
    Path(cfg["report"]).write_text(json.dumps(report, indent=2, sort_keys=True))
