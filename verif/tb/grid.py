"""cocotb testbench of :class:`nms.rtl.grid.GridSampler` (run it with
``nms.verif.sim.run_cocotb``; parameters come from :func:`nms.verif.sim.tb_params`).

Scoreboard: the point sets of all cases are queued back to back on ``points`` (random valid
gaps); a small agent drives ``budget``/``proportional`` for the case whose points are being
accepted; the expected index stream (``{index, last}`` per chosen point, from
:func:`nms.verif.models.desne.grid_select`) goes into an :class:`InOrderChecker` fed by the sink monitor
on ``indices`` (random back-pressure).

Parameters (JSON): ``sampler`` (GridSampler keyword parameters), ``seed``, ``idle`` and
``backpressure`` (probabilities), ``cases`` = list of ``{"Y": [[x, y], ...], "budget": M,
"allocation": "adaptive" | "proportional", "exemplar": "centre" (default) | "cover"}`` (in
coverage mode the ``cells`` stream, with random back-pressure, is checked instead of
``indices``), optional ``report`` (path: per-case cycle counts as JSON, for the caller to
compare with ``GridSampler.run_cycles``).
"""

from __future__ import annotations

import json
from pathlib import Path

import cocotb
import numpy as np

from nms.rtl.grid import GridSampler
from nms.verif.models.desne import grid_cover_select, grid_select
from nms.verif.sim.build import tb_params
from nms.verif.sim.streams import CycleLoop, InOrderChecker, StreamDriver, StreamMonitor, start_clock


class _ConfigAgent:
    """Drives ``budget``/``proportional`` for the case that owns the next point to be accepted."""

    def __init__(self, dut, cases, point_mon: StreamMonitor, loop: CycleLoop):
        self.dut = dut
        self.cases = cases
        self.point_mon = point_mon
        self.ends = np.cumsum([len(c["Y"]) for c in cases])
        self.last_accept: list[int] = []   # cycle of each case's final point
        self._seen = 0
        loop.add(self)

    def drive(self, cycle: int) -> None:
        k = int(np.searchsorted(self.ends, len(self.point_mon.beats), side="right"))
        case = self.cases[min(k, len(self.cases) - 1)]
        self.dut.budget.value = int(case["budget"])
        self.dut.proportional.value = int(case["allocation"] == "proportional")
        self.dut.cover.value = int(case.get("exemplar", "centre") == "cover")

    def sample(self, cycle: int) -> None:
        got = len(self.point_mon.beats)
        if got != self._seen:
            self._seen = got
            if got in self.ends:
                self.last_accept.append(cycle)


def expected_cells(case) -> list[dict]:
    """Coverage mode: each point's slot (cells renumbered by first occurrence), then the quota
    of each slot, from the model's ``grid_cover_select`` cells and quotas."""
    Y = np.asarray(case["Y"], dtype=np.int64)
    n = Y.shape[0]
    _, info = grid_cover_select(Y, np.zeros((n, 1), dtype=np.int64),
                                np.zeros((n, 1), dtype=np.int64), int(case["budget"]),
                                case["allocation"], details=True)
    cell = info["cell"]
    _, first, inv = np.unique(cell, return_index=True, return_inverse=True)
    rank = np.empty(first.size, dtype=np.int64)
    rank[np.argsort(first)] = np.arange(first.size)
    quotas = info["quota"][cell[np.sort(first)]]
    vals = [int(v) for v in rank[inv]] + [int(q) for q in quotas]
    return [{"value": v, "last": int(k == len(vals) - 1)} for k, v in enumerate(vals)]


def expected_indices(case) -> list[dict]:
    chosen = grid_select(np.asarray(case["Y"], dtype=np.int64), int(case["budget"]),
                         case["allocation"])
    return [{"index": int(ix), "last": int(k == len(chosen) - 1)} for k, ix in enumerate(chosen)]


@cocotb.test()
async def run_cases(dut):
    """All cases back to back; every emitted index checked against the bit-exact model."""
    params = tb_params()
    seed = int(params.get("seed", 1))
    cases = params["cases"]
    sampler = GridSampler(**params.get("sampler", {}))   # same layouts as the Verilog under test
    loop = CycleLoop(dut.clk)
    checker = InOrderChecker("grid indices", max_reports=8)
    points = StreamDriver(dut, "points", loop=loop, layout=sampler.point_layout,
                          idle=params.get("idle"), seed=seed)
    point_mon = StreamMonitor(dut, "points", loop=loop, layout=sampler.point_layout)
    out = StreamMonitor(dut, "indices", loop=loop, layout=sampler.index_layout, sink=True,
                        backpressure=params.get("backpressure"), seed=seed + 1,
                        callback=checker.observe)
    cell_checker = InOrderChecker("grid cells", max_reports=8)
    cells = StreamMonitor(dut, "cells", loop=loop, layout=sampler.cell_layout, sink=True,
                          backpressure=params.get("backpressure"), seed=seed + 2,
                          callback=cell_checker.observe)
    agent = _ConfigAgent(dut, cases, point_mon, loop)
    total = total_cells = 0
    for case in cases:
        Y = case["Y"]
        for k, (x, y) in enumerate(Y):
            points.send({"x": int(x), "y": int(y), "last": int(k == len(Y) - 1)})
        if case.get("exemplar", "centre") == "cover":
            exp = expected_cells(case)
            cell_checker.expect_all(exp)
            total_cells += len(exp)
        else:
            exp = expected_indices(case)
            checker.expect_all(exp)
            total += len(exp)
    await start_clock(dut)
    loop.start()
    # generous bound: load + a few passes per level/bit + rounds x points, times stall factor
    bound = sum(20 * len(c["Y"]) * (12 + c["budget"]) + 4000 for c in cases)
    await out.wait_count(total, timeout_cycles=bound)
    await cells.wait_count(total_cells, timeout_cycles=bound)
    start = loop.cycle
    await loop.wait_until(lambda: loop.cycle >= start + 10, timeout_cycles=20)
    loop.stop()
    problems = point_mon.protocol_errors + out.protocol_errors + cells.protocol_errors
    assert not problems, "stream protocol violations:\n" + "\n".join(problems[:10])
    for check, expected_beats in ((checker, total), (cell_checker, total_cells)):
        if expected_beats:
            check.assert_done()
        else:                  # nothing expected on this stream: nothing may appear there
            assert not check.observed_early and not check.errors, check.report()
    # per case: cycles from the final point's acceptance to the final index's (coverage mode:
    # the final cells beat's) handshake; the cases run one after the other
    last_out = sorted([c for c, b in zip(out.accept_cycles, out.beats) if b["last"]]
                      + [c for c, b in zip(cells.accept_cycles, cells.beats) if b["last"]])
    per_case = [{"n": len(c["Y"]), "budget": c["budget"], "allocation": c["allocation"],
                 "exemplar": c.get("exemplar", "centre"), "cycles": e - a}
                for c, a, e in zip(cases, agent.last_accept, last_out)]
    dut._log.info("%s; %d cycles; per case: %s", checker.report(), loop.cycle,
                  [p["cycles"] for p in per_case])
    if params.get("report"):
        Path(params["report"]).write_text(json.dumps(per_case, indent=2))
