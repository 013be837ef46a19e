"""cocotb testbench of :class:`nms.rtl.cover.CoverSelector` (run it with
``nms.verif.sim.run_cocotb``; parameters from :func:`nms.verif.sim.tb_params`).

Scoreboard: every case's ``job`` beat, kNN rows, start beat and cells/quotas are queued back to
back on their streams (random idle cycles); the picks (``pick_valid``/``pick_index``, in pick
order) and the emitted indices (random back-pressure) are compared with the bit-exact model
:func:`nms.verif.models.desne.cover_select` — its pick order and its ascending result.

Parameters (JSON): ``selector`` (CoverSelector keyword parameters), ``seed``, ``idle``,
``backpressure``, ``cases`` (or ``cases_file``, a JSON file holding them) = list of
``{"nbr": [[...]], "P": [[...]], "cell": [...] (slot of each point), "quota": [...] (per
slot), "start": int or null, "budget": M}``, optional ``report`` (path: per-case cycle
counts as JSON).
"""

from __future__ import annotations

import json
from pathlib import Path

import cocotb
import numpy as np

from nms.rtl.cover import CoverSelector
from nms.verif.models.desne import cover_select
from nms.verif.sim.build import tb_params
from nms.verif.sim.streams import CycleLoop, InOrderChecker, StreamDriver, StreamMonitor, start_clock


class _PickMonitor:
    """Samples ``pick_valid``/``pick_index`` every cycle (the unit's pick order)."""

    def __init__(self, dut, loop: CycleLoop, callback):
        self.valid, self.index = dut.pick_valid, dut.pick_index
        self.callback = callback
        self.cycles: list[int] = []
        loop.add(self)

    def drive(self, cycle: int) -> None:
        pass

    def sample(self, cycle: int) -> None:
        if self.valid.value:
            self.cycles.append(cycle)
            self.callback({"index": int(self.index.value)})


def expected(case):
    """The model's picks in order and ascending (a start in a quota-0 cell is dropped, as
    ``grid_cover_select`` does)."""
    nbr = np.asarray(case["nbr"], dtype=np.int64)
    P = np.asarray(case["P"], dtype=np.int64)
    cell = np.asarray(case["cell"], dtype=np.int64)
    quota = np.asarray(case["quota"], dtype=np.int64)
    start = case["start"]
    if start is not None and quota[cell[start]] == 0:
        start = None
    chosen, info = cover_select(nbr, P, int(case["budget"]), cell=cell, quota=quota,
                                start=start, details=True)
    return [int(v) for v in info["order"]], [int(v) for v in chosen]


@cocotb.test()
async def run_cases(dut):
    params = tb_params()
    seed = int(params.get("seed", 1))
    # large cases come in a file: the parameters travel in one environment variable
    cases = params["cases"] if "cases" in params else \
        json.loads(Path(params["cases_file"]).read_text())
    unit = CoverSelector(**params["selector"])
    idle = params.get("idle")
    loop = CycleLoop(dut.clk)
    drivers = {name: StreamDriver(dut, name, loop=loop, layout=layout, idle=idle, seed=seed + k)
               for k, (name, layout) in enumerate((
                   ("job", unit.job_layout), ("rows", unit.row_layout),
                   ("start", unit.start_layout), ("cells", unit.cell_layout)))}
    picks = InOrderChecker("cover picks (order)", max_reports=8)
    outs = InOrderChecker("cover indices", max_reports=8)
    pick_mon = _PickMonitor(dut, loop, picks.observe)
    out = StreamMonitor(dut, "indices", loop=loop, layout=unit.index_layout, sink=True,
                        backpressure=params.get("backpressure"), seed=seed + 9,
                        callback=outs.observe)
    total = 0
    for case in cases:
        nbr = case["nbr"]
        n, kk = len(nbr), len(nbr[0])
        drivers["job"].send({"n": n, "kk": kk, "budget": int(case["budget"])})
        for i in range(n):
            for t in range(kk):
                drivers["rows"].send({"index": int(nbr[i][t]), "p": int(case["P"][i][t])})
        start = case["start"]
        drivers["start"].send({"index": 0 if start is None else int(start),
                               "use": int(start is not None)})
        vals = [int(v) for v in case["cell"]] + [int(v) for v in case["quota"]]
        for k, v in enumerate(vals):
            drivers["cells"].send({"value": v, "last": int(k == len(vals) - 1)})
        order, chosen = expected(case)
        picks.expect_all([{"index": v} for v in order])
        outs.expect_all([{"index": v, "last": int(k == len(chosen) - 1)}
                         for k, v in enumerate(chosen)])
        total += len(chosen)
    await start_clock(dut)
    loop.start()
    bound = sum(30 * len(c["nbr"]) * (len(c["nbr"][0]) + 4) * (2 + int(c["budget"])) + 5000
                for c in cases)
    await out.wait_count(total, timeout_cycles=bound)
    loop.stop()
    assert not out.protocol_errors, "\n".join(out.protocol_errors[:10])
    picks.assert_done()
    outs.assert_done()
    dut._log.info("%s; %s; %d cycles", picks.report(), outs.report(), loop.cycle)
    if params.get("report"):
        # per case: final cells beat -> final index; final row beat -> start beat taken
        cell_end = np.cumsum([len(c["cell"]) + len(c["quota"]) for c in cases]) - 1
        row_end = np.cumsum([len(c["nbr"]) * len(c["nbr"][0]) for c in cases]) - 1
        last_out = [cy for cy, b in zip(out.accept_cycles, out.beats) if b["last"]]
        rows = []
        for k, c in enumerate(cases):
            rows.append({
                "n": len(c["nbr"]), "budget": int(c["budget"]),
                "cycles": last_out[k] - drivers["cells"].accept_cycles[cell_end[k]],
                "build_cycles": drivers["start"].accept_cycles[k]
                - drivers["rows"].accept_cycles[row_end[k]],
            })
        Path(params["report"]).write_text(json.dumps(rows, indent=2))
