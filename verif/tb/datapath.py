"""cocotb testbench of :class:`nms.rtl.datapath.DesneDatapath`: raw vectors in memory -> indices.

Run it with ``nms.verif.sim.run_cocotb``; parameters come from :func:`nms.verif.sim.tb_params`.

For each job the golden :func:`nms.verif.models.desne.run_chunk` gives the expected kNN rows, affinity
beats, final embedding and selected indices. The testbench

* answers the datapath's memory port like a DDR behind a bus: requests accepted with random
  stalls, served in order after a random latency, response beats with random gaps, junk in the
  unused lanes of a vector's final beat; it checks the request sequence against the documented
  one (streaming: per tile, the tile's queries, then all N candidates; with the chunk buffer,
  ``buffer_dim > 0``: one request for all N vectors);
* takes ``indices`` with random back-pressure;
* watches the internal streams passively (kNN rows and affinity beats at the affinity unit,
  coordinates out of the embedding engine) and compares every stage with the model;
* checks the ``perf`` counters against the exact dataflow counts (this file's own formulas,
  independent of ``nms.sw.dataflow``) and the status outputs
  (``busy``, ``done``, ``error`` and ``cause`` for a bad configuration and for a start while
  busy).

Jobs run back to back on one instance. Parameters (JSON): ``datapath`` (DesneDatapath keyword
parameters), ``jobs`` (list: ``X`` rows, ``budget``, ``seed``, ``cfg`` (DesneConfig fields),
optional ``pool`` in ``cfg`` (``"pool2"``/``"pool4"``, with the chunk buffer) and ``img_w``
(default ``isqrt(dim)`` when pooled), optional ``expect_error`` (with ``expect_cause``, the code ``cause`` must show) /
``restart_while_busy`` / ``config_override`` (register fields set directly, e.g. ``h_target``)),
``mem`` (``req_stall``, ``latency`` [lo, hi], ``gap``), ``backpressure``, ``seed``, optional
``report`` (JSON file receiving the per-job counters and cycle counts), optional
``check_stages`` (default true).
"""

from __future__ import annotations

import warnings
import json
import math
import random
import time
from collections import deque
from pathlib import Path

import cocotb
import numpy as np

from nms.rtl import fixedpoint as fp
from nms.rtl.datapath import DesneDatapath, config_layout, perf_layout
from nms.rtl.regmap import ALLOCATION_CODES, CAUSE, COVER_START_CODES, EXEMPLAR_CODES, SEARCH_CODES
from nms.verif.models import desne
from nms.verif.models.pool import POOL_NAMES
from nms.verif.sim.build import tb_params
from nms.verif.sim.streams import CycleLoop, PayloadCodec, StreamMonitor, start_clock

from amaranth.hdl import UnusedElaboratable

# Components are built here only to read their layouts and formulas (never elaborated in this
# process); Amaranth's public warning category for that is filtered in this simulator process.
warnings.filterwarnings("ignore", category=UnusedElaboratable)


def job_config(job: dict, hw: dict) -> desne.DesneConfig:
    """The model configuration of a job: its ``cfg`` plus the datapath's generator parameters."""
    return desne.DesneConfig(k=hw.get("k", 16), neg_samples=hw.get("neg_samples", 8),
                             capacity=hw.get("capacity", 1024), **job.get("cfg", {}))


def config_value(n: int, dim: int, budget: int, cfg: desne.DesneConfig, seed: int,
                 img_w: int | None = None) -> dict:
    """The datapath's ``config`` input (register fields) for one job."""
    clamp = (1 << 16) - 1
    pool = POOL_NAMES[cfg.pool]
    side = (math.isqrt(dim) if img_w is None else img_w) if pool else 0
    return {"n": n, "dim": dim, "budget": budget, "h_target": fp.entropy_target(cfg.perplexity),
            "pool": pool, "img_w": side,
            "n_iter": cfg.n_iter, "exaggeration_iters": min(cfg.exaggeration_iters, clamp),
            "learning_rate": cfg.learning_rate, "exaggeration_shift": cfg.exaggeration_shift,
            "allocation": ALLOCATION_CODES[cfg.allocation], "search": SEARCH_CODES[cfg.search],
            "exemplar": EXEMPLAR_CODES[cfg.exemplar], "cover_start": COVER_START_CODES[cfg.cover_start],
            "momentum_early": cfg.momentum_early, "momentum_late": cfg.momentum_late,
            "momentum_switch": min(cfg.momentum_switch, clamp), "seed": seed & 0xFFFFFFFF}


class MemoryModel:
    """The memory behind ``mem``: in-order requests, random stall / latency / gaps.

    Requests are logged in :attr:`requests` as ``(first, count)``. Each request's data is ready
    ``latency`` cycles after it was accepted (and not before the previous request's data).
    """

    def __init__(self, dut, loop: CycleLoop, *, lanes: int, elem_width: int, rng: random.Random,
                 req_stall: float = 0.0, latency=(1, 1), gap: float = 0.0):
        self.req_valid, self.req_ready = dut.mem__req__valid, dut.mem__req__ready
        self.req_payload = dut.mem__req__payload
        self.resp_valid, self.resp_ready = dut.mem__resp__valid, dut.mem__resp__ready
        self.resp_payload = dut.mem__resp__payload
        self.lanes, self.width = lanes, elem_width
        self.rng, self.req_stall, self.latency, self.gap = rng, req_stall, tuple(latency), gap
        self.req_codec = None   # set by load()
        self.X = None
        self.requests: list[tuple[int, int]] = []
        self.errors: list[str] = []
        self._pending: deque = deque()   # (data-ready cycle, first, count)
        self._beats: deque = deque()
        self._cur = None
        self._ready_at = 0
        self.beats_sent = 0
        self.req_valid_seen = 0
        self.resp_valid.value = self._valid_level = 0
        self.req_ready.value = self._ready_level = 0
        loop.add(self)

    def load(self, X: np.ndarray, req_layout) -> None:
        self.X = np.asarray(X, dtype=np.int64)
        self.req_codec = PayloadCodec(req_layout)
        self.requests = []

    def _vector_beats(self, v: int):
        row = self.X[v]
        L, w = self.lanes, self.width
        nb = -(-len(row) // L)
        junk = [self.rng.randrange(1 << w) for _ in range(nb * L - len(row))]
        elems = list(row) + junk  # unused lanes carry junk: the engine must mask them
        for b in range(nb):
            word = 0
            for lane in range(L):
                word |= int(elems[b * L + lane]) << (lane * w)
            yield word

    def drive(self, cycle: int) -> None:
        # signal writes cost more than the model: write only on a change
        ready = int(self.rng.random() >= self.req_stall)
        if ready != self._ready_level:
            self.req_ready.value = self._ready_level = ready
        if self._cur is None:
            if not self._beats and self._pending and self._pending[0][0] <= cycle:
                _, first, count = self._pending.popleft()
                for v in range(first, first + count):
                    self._beats.extend(self._vector_beats(v))
            if self._beats and self.rng.random() >= self.gap:
                self._cur = self._beats.popleft()
                self.resp_payload.value = self._cur
        valid = int(self._cur is not None)
        if valid != self._valid_level:
            self.resp_valid.value = self._valid_level = valid

    def sample(self, cycle: int) -> None:
        if self._ready_level and self.req_valid.value:
            req = self.req_codec.unpack(self.req_payload.value.to_unsigned())
            first, count = req["first"], req["count"]
            self.requests.append((first, count))
            if self.X is None or count < 1 or first + count > len(self.X):
                self.errors.append(f"cycle {cycle}: request {first}+{count} outside the chunk")
                count = 0
            lat = self.rng.randint(*self.latency)
            self._ready_at = max(self._ready_at, cycle + lat)
            self._pending.append((self._ready_at, first, count))
        if self._cur is not None and self.resp_ready.value:
            self._cur = None
            self.beats_sent += 1


class Control:
    """Drives ``config`` and ``start`` (one-cycle pulses) and samples the status outputs."""

    def __init__(self, dut, loop: CycleLoop):
        self.dut = dut
        self.codec = PayloadCodec(config_layout())
        self._pulse = False
        self._high = False
        self.pulsed_at = -1   # cycle of the last start pulse
        self.busy = self.done = self.error = self.cause = 0
        dut.start.value = 0
        loop.add(self)

    def start(self, config: dict | None = None) -> None:
        if config is not None:
            self.dut.config.value = self.codec.pack(config)
        self._pulse = True
        self.busy = self.done = self.error = self.cause = 0   # stale until sampled after the pulse

    def drive(self, cycle: int) -> None:
        if self._pulse:
            self.dut.start.value = 1
            self._pulse, self._high = False, True
            self.pulsed_at = cycle
        elif self._high:
            self.dut.start.value = 0
            self._high = False

    def sample(self, cycle: int) -> None:
        if cycle <= self.pulsed_at or self._pulse:
            return   # the status still shows the time before the pulse
        self.busy = int(self.dut.busy.value)
        self.done = int(self.dut.done.value)
        self.error = int(self.dut.error.value)
        self.cause = int(self.dut.cause.value)


def _first_mismatch(name: str, expected: list, got: list) -> str | None:
    if expected == got:
        return None
    for i, (e, g) in enumerate(zip(expected, got)):
        if e != g:
            return f"{name}: item {i} of {len(expected)}: expected {e}, got {g}"
    return f"{name}: expected {len(expected)} items, got {len(got)}"


@cocotb.test()
async def run_jobs(dut):
    """Every job: memory -> datapath -> indices, stage by stage against ``run_chunk``."""
    p = tb_params()
    hw = p.get("datapath", {})
    dp = DesneDatapath(**hw)
    rng = random.Random(p.get("seed", 1))
    memp = p.get("mem", {})
    check_stages = p.get("check_stages", True)

    await start_clock(dut)
    loop = CycleLoop(dut.clk)
    mem = MemoryModel(dut, loop, lanes=dp.lanes, elem_width=dp.elem_width, rng=rng,
                      req_stall=memp.get("req_stall", 0.0), latency=memp.get("latency", (1, 1)),
                      gap=memp.get("gap", 0.0))
    ctl = Control(dut, loop)
    out = StreamMonitor(dut, "indices", loop=loop, layout=dp.index_layout, sink=True,
                        backpressure=p.get("backpressure", 0.0), seed=rng.randrange(1 << 30))
    mons = {}
    if check_stages:
        mons = {
            "rows": StreamMonitor(dut.affinity, "row", loop=loop, layout=dp.affinity.row_layout),
            "affinity": StreamMonitor(dut.affinity, "result", loop=loop,
                                      layout=dp.affinity.result_layout),
            "coords": StreamMonitor(dut.embedding, "coords", loop=loop,
                                    layout=dp.embedding.coord_layout),
        }
    perf_codec = PayloadCodec(perf_layout())
    loop.start()
    await loop.wait_until(lambda: True, timeout_cycles=2)

    failures, report = [], []
    for jn, job in enumerate(p["jobs"]):
        X = np.asarray(job["X"], dtype=np.int64)
        n, dim = X.shape
        cfg = job_config(job, hw)
        seed, budget = job["seed"], job["budget"]
        value = config_value(n, dim, budget, cfg, seed, job.get("img_w"))
        value.update(job.get("config_override", {}))
        mem.load(X, dp.mem_signature.req_layout)
        for mon in (out, *mons.values()):
            mon.beats.clear()
        t0, wall0 = loop.cycle, time.perf_counter()
        ctl.start(value)
        await loop.wait_until(lambda: ctl.busy or ctl.done, timeout_cycles=10, what="start")
        if job.get("expect_error"):
            await loop.wait_until(lambda: ctl.done, timeout_cycles=10, what="done")
            if not (ctl.error and not ctl.busy and not out.beats and not mem.requests):
                failures.append(f"job {jn}: bad config not refused (error={ctl.error}, "
                                f"busy={ctl.busy}, {len(out.beats)} indices, "
                                f"{len(mem.requests)} requests)")
            if "expect_cause" in job and ctl.cause != job["expect_cause"]:
                failures.append(f"job {jn}: refused with cause 0x{ctl.cause:02X}, expected "
                                f"0x{job['expect_cause']:02X} (config_override "
                                f"{job.get('config_override')})")
            continue
        if job.get("restart_while_busy"):
            await loop.wait_until(lambda: loop.cycle >= t0 + 50, timeout_cycles=100)
            ctl.start({**value, "n": 1})   # must be ignored (and flagged)
        await loop.wait_until(lambda: ctl.done and not ctl.busy, timeout_cycles=50_000_000,
                              what=f"job {jn} done")
        # let the final handshake settle into the counters
        await loop.wait_until(lambda: True, timeout_cycles=2)
        cycles = loop.cycle - t0
        wall = time.perf_counter() - wall0
        perf = perf_codec.unpack(dut.perf.value.to_unsigned())

        res = desne.run_chunk(X, budget, cfg, seed, target=value["h_target"],
                              img_w=value["img_w"] or None)
        kk = res["nbr"].shape[1]
        got = [b["index"] for b in out.beats]
        lasts = [b["last"] for b in out.beats]
        errs = []
        if got != [int(i) for i in res["selected"]]:
            errs.append(f"selected: expected {res['selected'].tolist()}, got {got}")
        if lasts != [0] * (len(lasts) - 1) + [1]:
            errs.append(f"indices: `last` flags {lasts}")
        if bool(ctl.error) != bool(job.get("restart_while_busy")):
            errs.append(f"error={ctl.error} at the end (restart_while_busy="
                        f"{bool(job.get('restart_while_busy'))})")
        want_cause = CAUSE["START_WHILE_BUSY" if job.get("restart_while_busy") else "NONE"].code
        if ctl.cause != want_cause:
            errs.append(f"cause=0x{ctl.cause:02X} at the end, expected 0x{want_cause:02X}")
        T = dp.tile
        tiles = -(-n // T)
        want_reqs = []
        for b in range(0, n, T):
            want_reqs += [(b, min(T, n - b)), (0, n)]
        if dp.chunk_buffer:
            want_reqs = [(0, n)]          # the job's one DDR read
        if mem.requests != want_reqs:
            errs.append(f"memory requests {mem.requests[:6]}... != {want_reqs[:6]}...")
        errs += mem.errors
        if check_stages:
            rows = [{"index": int(res["nbr"][i, j]), "dist": int(res["dist"][i, j]),
                     "last": int(j == kk - 1)} for i in range(n) for j in range(kk)]
            aff = [{"index": int(res["nbr"][i, j]), "p": int(res["P"][i, j]),
                    "code": int(res["code"][i]), "err": int(res["err"][i]),
                    "last": int(j == kk - 1)} for i in range(n) for j in range(kk)]
            coords = [{"x": int(res["Y"][i, 0]), "y": int(res["Y"][i, 1])} for i in range(n)]
            for name, want in (("rows", rows), ("affinity", aff), ("coords", coords)):
                msg = _first_mismatch(name, want, mons[name].beats)
                if msg:
                    errs.append(msg)
                errs += mons[name].protocol_errors
        errs += out.protocol_errors
        # counters against the exact dataflow
        bpv_raw = -(-dim // dp.lanes)
        bpv = -(-res["Xk"].shape[1] // dp.lanes)     # beats of the vectors the kNN sees
        s = dp.neg_samples
        read_vectors = n if dp.chunk_buffer else n + tiles * n
        exact = {"bytes_read": dp.bytes_read(n, dim), "mem_beats": read_vectors * bpv_raw,
                 "dist_beats": tiles * (T + n) * bpv, "pair_items": cfg.n_iter * n * (kk + s),
                 "rep_items": cfg.n_iter * n * s,
                 "buf_read_beats": (n + tiles * n) * bpv if dp.chunk_buffer else 0,
                 "buf_write_beats": n * bpv if dp.chunk_buffer else 0,
                 # one query-memory row per beat index of each group of P candidates
                 "query_rows_read": tiles * -(-n // dp.cand_tile) * bpv}
        exact = {key: v for key, v in exact.items() if key in perf}
        for key, want in exact.items():
            if perf[key] != want:
                errs.append(f"perf.{key} = {perf[key]}, expected {want}")
        if not 0 < perf["cycles"] <= cycles:
            errs.append(f"perf.cycles = {perf['cycles']} outside (0, {cycles}]")
        for key in ("dist_cycles", "knn_cycles", "aff_cycles", "embed_cycles", "embed_run_cycles",
                    "grid_cycles"):
            if not 0 < perf[key] <= perf["cycles"]:
                errs.append(f"perf.{key} = {perf[key]} outside (0, cycles={perf['cycles']}]")
        failures += [f"job {jn} (n={n}, dim={dim}): {e}" for e in errs]
        report.append({"job": jn, "n": n, "dim": dim, "budget": budget, "kk": kk, "tiles": tiles,
                       "pool": value["pool"], "img_w": value["img_w"],
                       "n_iter": cfg.n_iter, "search": cfg.search, "allocation": cfg.allocation,
                       "cycles_tb": cycles, "wall_seconds": wall, "perf": perf,
                       "selected": got, "ok": not errs})
        dut._log.info(f"job {jn}: n={n} dim={dim} budget={budget}: {cycles} cycles, "
                      f"{cycles / max(wall, 1e-9):.0f} cycles/s, "
                      f"{'OK' if not errs else 'FAILED'}; perf={perf}")
    loop.stop()
    if p.get("report"):
        Path(p["report"]).write_text(json.dumps(report, indent=1))
    assert not failures, "\n".join(failures[:20])
