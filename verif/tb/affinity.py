"""cocotb testbench of :class:`nms.rtl.affinity.AffinityUnit` (run it with
``nms.verif.sim.run_cocotb``; parameters come from :func:`nms.verif.sim.tb_params`).

Scoreboard: driver on ``row`` (random idle cycles) -> passive monitor of the accepted beats, which
cuts them into rows exactly as the unit does (``last`` or the ``k``-th beat) -> bit-exact model
:func:`nms.verif.models.desne.affinities` -> :class:`InOrderChecker` <- sink monitor on ``result``
(random back-pressure). Every output field (index, P, code, err, last) of every beat is compared.

``target``/``mode`` are plain inputs sampled with a row's first beat: the testbench changes them
only between batches, when every queued row has come out.

Parameters (JSON): ``unit`` (AffinityUnit keyword parameters), ``seed``, ``report`` (path of a
JSON file :func:`no_stall_cycles` writes its measurements to).
"""

from __future__ import annotations

import warnings
import json
import random

import cocotb
import numpy as np

from nms.rtl import fixedpoint as fp
from nms.rtl.affinity import MODE_BISECT, MODE_ROBUST, AffinityUnit
from nms.verif.models import desne
from nms.verif.sim.build import tb_params
from nms.verif.sim.streams import CycleLoop, InOrderChecker, StreamDriver, StreamMonitor, start_clock

from amaranth.hdl import UnusedElaboratable

# Components are built here only to read their layouts and formulas (never elaborated in this
# process); Amaranth's public warning category for that is filtered in this simulator process.
warnings.filterwarnings("ignore", category=UnusedElaboratable)

#: the 784-D uint8 maximum squared distance (Fashion-MNIST / MNIST pixels)
MAX_784 = 784 * 255 ** 2
SEARCH_NAMES = {MODE_ROBUST: "robust", MODE_BISECT: "bisect"}


def expected_beats(indices, dists, perplexity: float, mode: int) -> list[dict]:
    """The model's output beats for one row (ascending ``dists``)."""
    res = desne.affinities(np.asarray([dists], dtype=np.int64), perplexity, SEARCH_NAMES[mode])
    n = len(dists)
    return [{"index": int(indices[j]), "p": int(res["P"][0, j]), "code": int(res["code"][0]),
             "err": int(res["err"][0]), "last": int(j == n - 1)} for j in range(n)]


class AffinityTB:
    """Driver, monitors, model and checker around one unit instance."""

    def __init__(self, dut, *, idle=None, backpressure=None, seed: int = 0):
        self.dut = dut
        self.params = tb_params()
        self.unit = AffinityUnit(**self.params.get("unit", {}))  # same layouts as the Verilog
        self.k = self.unit.k
        self.rng = np.random.default_rng(seed)
        self.loop = CycleLoop(dut.clk)
        self.checker = InOrderChecker("affinity result")
        self.row = StreamDriver(dut, "row", loop=self.loop, layout=self.unit.row_layout,
                                idle=idle, seed=seed + 1)
        self.row_mon = StreamMonitor(dut, "row", loop=self.loop, layout=self.unit.row_layout,
                                     callback=self._row_beat)
        self.result = StreamMonitor(dut, "result", loop=self.loop,
                                    layout=self.unit.result_layout, sink=True,
                                    backpressure=backpressure, seed=seed + 2,
                                    callback=self.checker.observe)
        self.perplexity = 2.0
        self.mode = MODE_ROBUST
        self._pending: list[dict] = []
        self.rows_done = 0
        self.expected_total = 0
        self.row_start_cycles: list[int] = []
        self.codes: list[int] = []

    # -- model side: cut accepted beats into rows like the unit, then ask the model -------------
    def _row_beat(self, beat: dict) -> None:
        if not self._pending:
            self.row_start_cycles.append(self.loop.cycle)
        self._pending.append(beat)
        if beat["last"] or len(self._pending) == self.k:
            idx = [b["index"] for b in self._pending]
            dist = [b["dist"] for b in self._pending]
            exp = expected_beats(idx, dist, self.perplexity, self.mode)
            self.codes.append(exp[0]["code"])
            self.checker.expect_all(exp)
            self._pending = []
            self.rows_done += 1

    async def start(self) -> None:
        self.dut.target.value = fp.entropy_target(self.perplexity)
        self.dut.mode.value = self.mode
        await start_clock(self.dut)
        self.loop.start()

    def queue_row(self, dists, indices=None, *, last_on_final: bool = True) -> int:
        """Queue one row (sorted here); returns the number of output beats it will produce."""
        dists = np.sort(np.asarray(dists, dtype=np.int64))
        n = len(dists)
        assert 1 <= n <= self.k
        if indices is None:
            indices = self.rng.integers(0, 1 << self.unit.index_width, n)
        for j in range(n):
            self.row.send({"index": int(indices[j]), "dist": int(dists[j]),
                           "last": int(last_on_final and j == n - 1)})
        self.expected_total += n
        return n

    async def batch(self, rows, perplexity: float, mode: int = MODE_ROBUST) -> None:
        """Run rows (list of dist arrays or (dists, indices) pairs) at one target and mode."""
        await self.drain()
        self.perplexity, self.mode = float(perplexity), int(mode)
        self.dut.target.value = fp.entropy_target(self.perplexity)
        self.dut.mode.value = self.mode
        for r in rows:
            if isinstance(r, tuple):
                self.queue_row(*r)
            else:
                self.queue_row(r)
        await self.drain()

    async def drain(self) -> None:
        await self.result.wait_count(self.expected_total,
                                     timeout_cycles=20_000 * (1 + self.expected_total))

    async def finish(self) -> None:
        await self.drain()
        start = self.loop.cycle
        await self.loop.wait_until(lambda: self.loop.cycle >= start + 40, timeout_cycles=80)
        self.loop.stop()
        problems = self.row_mon.protocol_errors + self.result.protocol_errors
        assert not problems, "stream protocol violations:\n" + "\n".join(problems[:10])
        assert not self._pending, "a row was left open"
        self.checker.assert_done()
        self.dut._log.info("%s; %d rows, %d cycles", self.checker.report(), self.rows_done,
                           self.loop.cycle)

    # -- row generators -------------------------------------------------------------------------
    def random_row(self, n: int | None = None, scale: int | None = None):
        n = n if n is not None else int(self.rng.integers(1, self.k + 1))
        top = min(MAX_784, (1 << self.unit.dist_width) - 1)
        if scale is None:
            scale = int(2 ** self.rng.uniform(0, np.log2(top)))
        d0 = int(self.rng.integers(0, max(1, top - scale) + 1))
        gaps = self.rng.integers(0, scale + 1, n)
        gaps[0] = 0
        return np.minimum(d0 + gaps, top)


def _seed() -> int:
    return int(tb_params().get("seed", 1))


@cocotb.test()
async def random_rows(dut):
    """Random rows of every length 1..k, several distance scales and perplexities, robust mode."""
    tb = AffinityTB(dut, idle=0.3, backpressure=0.4, seed=_seed())
    await tb.start()
    for perp in (2.0, min(5.0, tb.k), float(tb.k)):
        if perp <= 1.0:
            continue
        rows = [tb.random_row(n) for n in range(1, tb.k + 1)]
        rows += [tb.random_row() for _ in range(4)]
        await tb.batch(rows, perp)
    await tb.finish()


@cocotb.test()
async def sweep(dut):
    """Seeded randomized sweep: per batch a random perplexity and mode, rows of random length,
    scale and gap shape (uniform, clustered, geometric)."""
    seed = _seed() + 10
    tb = AffinityTB(dut, idle=0.5, backpressure=0.5, seed=seed)
    rng = random.Random(seed)
    await tb.start()
    for _ in range(int(tb.params.get("sweep_batches", 4))):
        perp = rng.uniform(1.05, tb.k) if tb.k > 1 else 2.0
        mode = rng.choice((MODE_ROBUST, MODE_ROBUST, MODE_BISECT))
        rows = []
        for _ in range(rng.randint(2, 5)):
            n = rng.randint(1, tb.k)
            shape = rng.choice(("uniform", "cluster", "geometric"))
            if shape == "uniform":
                rows.append(tb.random_row(n))
            elif shape == "cluster":  # a tight group then far neighbours
                d0 = rng.randint(0, 1 << 20)
                rows.append([d0 + (rng.randint(0, 8) if j < n // 2 else rng.randint(1 << 18, 1 << 22))
                             for j in range(n)])
            else:
                d0 = rng.randint(0, 1000)
                rows.append([d0 + int(1.7 ** j * rng.randint(1, 40)) for j in range(n)])
        await tb.batch(rows, perp, mode)
    await tb.finish()


def digits_knn_rows(k: int, *, label: int = 3, picks: int = 8, seed: int = 0) -> dict:
    """Real kNN rows of one digits class (sklearn ``load_digits``), computed by the model's
    :func:`~nms.verif.models.desne.knn`: ``class`` (``picks`` rows of the whole class), ``kp1`` (a chunk
    of N = k + 1 points: k + 1 rows of k neighbours) and ``small`` (a chunk of min(4, k + 1)
    points: rows shorter than k). Each is a list of ``[dists, indices]``; JSON-ready, so the
    pytest side computes it once and the simulator does not import scikit-learn."""
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    cls = X[y == label].astype(np.int64)
    rng = np.random.default_rng(seed)
    out = {}
    nbr, dist = desne.knn(cls, k)
    rows = rng.choice(len(cls), size=picks, replace=False)
    out["class"] = [[dist[i].tolist(), nbr[i].tolist()] for i in rows]
    nbr, dist = desne.knn(cls[: k + 1], k)
    assert dist.shape == (k + 1, k)
    out["kp1"] = [[dist[i].tolist(), nbr[i].tolist()] for i in range(k + 1)]
    small = min(4, k + 1)
    nbr, dist = desne.knn(cls[40:40 + small], k)
    out["small"] = [[dist[i].tolist(), nbr[i].tolist()] for i in range(small)]
    return out


@cocotb.test()
async def digits_rows(dut):
    """Real kNN rows of a digits class (param ``digits`` from :func:`digits_knn_rows`): whole
    class rows at three perplexities (one bisect), the N = k + 1 chunk, a tiny chunk."""
    tb = AffinityTB(dut, idle=0.2, backpressure=0.3, seed=_seed() + 20)
    digits = tb.params.get("digits") or digits_knn_rows(tb.k)
    rows = {key: [(np.array(d), np.array(i)) for d, i in val] for key, val in digits.items()}
    assert all(len(d) == tb.k for d, _ in rows["kp1"]) and len(rows["kp1"]) == tb.k + 1
    await tb.start()
    for perp, mode in ((min(10.0, tb.k), MODE_ROBUST), (min(3.0, tb.k), MODE_ROBUST),
                       (min(6.0, tb.k), MODE_BISECT)):
        await tb.batch(rows["class"], perp, mode)
    await tb.batch(rows["kp1"], min(5.0, tb.k))
    await tb.batch(rows["small"], 1.5)
    await tb.finish()


@cocotb.test()
async def edge_rows(dut):
    """Identical points (all-zero gaps), distances near the 784-D uint8 maximum, very small
    gaps, single-neighbour rows, and a k-beat row without ``last`` (the k-th beat ends it)."""
    tb = AffinityTB(dut, idle=0.3, backpressure=0.5, seed=_seed() + 30)
    k = tb.k
    top = min(MAX_784, (1 << tb.unit.dist_width) - 1)
    rows = [
        np.zeros(k, np.int64),                      # k duplicates of the query
        np.full(k, top),                            # all at the maximum distance
        np.full(max(1, k // 2), 12345),
        np.array([0] + [top] * (k - 1)),            # one duplicate, the rest maximally far
        np.array([top - 1] + [top] * (k - 1)),      # gap of 1 at the top of the range
        np.arange(k),                               # gaps 0, 1, 2, ...
        np.array([0] + [1] * (k - 1)),
        np.array([5] * (k - 1) + [6]),
        np.array([0] + [top] * (k - 1))[:max(1, k - 1)],
        np.array([7]),                              # a single neighbour: P = 1.0
        np.linspace(top // 2, top, k).astype(np.int64),
    ]
    await tb.start()
    for perp, mode in ((2.0, MODE_ROBUST), (float(k) if k > 1 else 2.0, MODE_ROBUST),
                       (1.01, MODE_ROBUST), (3.0, MODE_BISECT)):
        await tb.batch(rows, perp, mode)
    # the k-th beat ends a row even when `last` is low; the next beats start a new row
    await tb.drain()
    tb.queue_row(np.arange(k) * 1000, last_on_final=False)
    tb.queue_row(np.arange(k) * 3)
    await tb.finish()
    assert 0 in tb.codes or max(tb.codes) > 0  # sanity: the model produced codes


@cocotb.test()
async def no_stall_cycles(dut):
    """No idle cycles, no back-pressure: cycles per row equal ``AffinityUnit.cycles_per_row``."""
    tb = AffinityTB(dut, seed=_seed() + 40)
    await tb.start()
    lengths = [tb.k, tb.k, tb.k, max(1, tb.k // 2), 1, tb.k]
    measured = {}
    for mode in (MODE_ROBUST, MODE_BISECT):
        first = len(tb.row_start_cycles)
        # queued together so row i+1's first beat waits only for the unit
        await tb.batch([tb.random_row(n) for n in lengths], 4.0 if tb.k >= 4 else 1.5, mode)
        starts = tb.row_start_cycles[first:]
        end = tb.result.accept_cycles[-1] + 1  # the unit takes a new row the cycle after
        got = [b - a for a, b in zip(starts, starts[1:] + [end])]
        want = [tb.unit.cycles_per_row(n, mode) for n in lengths]
        assert got == want, f"mode {mode}: cycles per row {got}, formula says {want}"
        measured[SEARCH_NAMES[mode]] = {str(n): c for n, c in zip(lengths, got)}
    await tb.finish()
    report = tb.params.get("report")
    if report:
        with open(report, "w") as f:
            json.dump({"unit": tb.unit.parameters, "cycles_per_row": measured}, f, indent=2)
    dut._log.info("cycles per row: %s", measured)
