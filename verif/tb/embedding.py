"""cocotb testbench of :class:`nms.rtl.embedding.EmbeddingEngine` (run it with
``nms.verif.sim.run_cocotb``; parameters come from :func:`nms.verif.sim.tb_params`).

Scoreboard: for each job a problem (neighbour lists + P) is built, the golden
:func:`nms.verif.models.desne.embed` gives the expected final coordinates, drivers send the ``config``
beat and the ``N * k'`` list beats (random idle cycles), a sink monitor takes ``coords`` (random
back-pressure) and an :class:`InOrderChecker` compares every coordinate. Several jobs run back to
back on one instance, so state left by one job (the scatter banks, counters) is exercised by the
next. The ``perf`` counters are checked against the exact pair counts.

Parameters (JSON): ``engine`` (EmbeddingEngine keyword parameters), ``cases`` (list of job
descriptions, see :func:`make_problem`), ``idle`` / ``backpressure`` (probabilities), ``seed``,
optional ``report`` (path of a JSON file receiving per job its ``perf`` counters and the cycles
from the config beat to the first coordinate; ``nms.bench.embedding`` derives its figures from
them).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import cocotb
import numpy as np

from nms.rtl import fixedpoint as fp
from nms.rtl.embedding import EmbeddingEngine
from nms.verif.models import desne
from nms.verif.sim.build import tb_params
from nms.verif.sim.streams import CycleLoop, InOrderChecker, StreamDriver, StreamMonitor, start_clock

#: algorithm fields of a case's ``cfg`` (the rest of DesneConfig does not affect ``embed``)
CFG_FIELDS = ("n_iter", "exaggeration_shift", "exaggeration_iters", "momentum_early",
              "momentum_late", "momentum_switch", "learning_rate")


def make_problem(case: dict, engine: dict):
    """Build ``(nbr, P, cfg, seed)`` of one job.

    ``case`` keys: ``kind`` — ``"knn"`` (random uint8 points, model kNN + affinities),
    ``"digits"`` (the first ``n`` images of one digits class, ``label``), ``"identical"`` (all
    points equal: every kNN distance is 0) or ``"lists"`` (arbitrary lists: random indices,
    self-edges and repeats included, random P up to 1.0); ``n``, ``kk``, ``seed``, ``cfg``
    (DesneConfig fields) and optional ``perplexity``.
    """
    n, kk = case["n"], case["kk"]
    rng = np.random.default_rng(case.get("data_seed", 1000 + n * 7 + kk))
    k = engine.get("k", 16)
    cfg = desne.DesneConfig(k=k, perplexity=min(float(case.get("perplexity", 3.0)), k),
                            neg_samples=engine.get("neg_samples", 8),
                            capacity=engine.get("capacity", 1024), **case.get("cfg", {}))
    kind = case["kind"]
    if kind == "lists":
        nbr = rng.integers(0, n, size=(n, kk))
        P = rng.integers(0, (1 << fp.P_FRAC_BITS) + 1, size=(n, kk))
        return nbr, P, cfg, case["seed"]
    if kind == "knn":
        X = rng.integers(0, 256, size=(n, 8))
    elif kind == "identical":
        X = np.full((n, 8), 37)
    elif kind == "digits":
        from sklearn.datasets import load_digits  # real data without the host layer (nms.sw)

        Xd, yd = load_digits(return_X_y=True)
        X = Xd.astype(np.int64)[yd == case.get("label", 3)][:n]
        assert len(X) == n, f"digits class {case.get('label', 3)} has fewer than {n} images"
    else:
        raise ValueError(f"unknown case kind {kind!r}")
    nbr, dist = desne.knn(X.astype(np.int64), kk)
    assert nbr.shape == (n, kk), f"kk={kk} needs n > kk (n={n})"
    P = desne.affinities(dist, min(cfg.perplexity, kk) if kk > 1 else 1.5)["P"]
    return nbr, P, cfg, case["seed"]


def config_beat(n: int, kk: int, cfg: desne.DesneConfig, seed: int) -> dict:
    clamp = (1 << 16) - 1
    return {"n": n, "kk": kk, "n_iter": cfg.n_iter,
            "exaggeration_iters": min(cfg.exaggeration_iters, clamp),
            "exaggeration_shift": cfg.exaggeration_shift,
            "momentum_early": cfg.momentum_early, "momentum_late": cfg.momentum_late,
            "momentum_switch": min(cfg.momentum_switch, clamp),
            "learning_rate": cfg.learning_rate, "seed": seed & fp.MASK32}


class EmbeddingTB:
    """Drivers, sink monitor and checker around one engine instance."""

    def __init__(self, dut, params: dict):
        self.dut = dut
        self.params = params
        self.engine_params = dict(params.get("engine", {}))
        self.eng = EmbeddingEngine(**self.engine_params)  # same layouts as the Verilog
        seed = params.get("seed", 1)
        self.rng = random.Random(seed)
        self.idle_p = params.get("idle", 0.0)
        self.bp_p = params.get("backpressure", 0.0)
        self.loop = CycleLoop(dut.clk)
        self.config = StreamDriver(dut, "config", loop=self.loop, layout=self.eng.config_layout)
        self.knn = StreamDriver(dut, "knn", loop=self.loop, layout=self.eng.knn_layout,
                                idle=lambda: self.rng.random() < self.idle_p, seed=seed + 1)
        self.coords = StreamMonitor(dut, "coords", loop=self.loop, layout=self.eng.coord_layout,
                                    sink=True,
                                    backpressure=lambda: self.rng.random() < self.bp_p,
                                    seed=seed + 2)

    def perf(self) -> dict:
        from nms.verif.sim.streams import unpack

        return unpack(self.eng.perf_layout, self.dut.perf.value.to_unsigned())

    async def run_job(self, case: dict) -> dict:
        eng = self.eng
        nbr, P, cfg, seed = make_problem(case, self.engine_params)
        n, kk = nbr.shape
        self.idle_p = case.get("idle", self.params.get("idle", 0.0))
        self.bp_p = case.get("backpressure", self.params.get("backpressure", 0.0))
        expected = desne.embed(nbr, P, cfg, seed)
        checker = InOrderChecker(f"coords of {case.get('name', case['kind'])} (n={n}, kk={kk})")
        checker.expect_all({"x": int(x), "y": int(y)} for x, y in expected)
        self.coords.callbacks = [checker.observe]
        start_beats = len(self.coords.beats)
        self.config.send(config_beat(n, kk, cfg, seed))
        self.knn.extend({"index": int(j), "p": int(p)} for j, p in zip(nbr.ravel(), P.ravel()))
        # a generous time-out from the documented formula (stalls can double every phase)
        budget = ((n * kk * 4 + 2 * n * 2 + cfg.n_iter * eng.iteration_cycles(n, kk)) * 2
                  + n * 8 + 500)
        t0 = self.loop.cycle
        await self.coords.wait_count(start_beats + n, timeout_cycles=budget)
        await self.loop.wait_until(lambda: not self.dut.busy.value, timeout_cycles=10,
                                   what="busy to drop after the last coordinate")
        checker.assert_done()
        assert not self.coords.protocol_errors, self.coords.protocol_errors[:3]
        perf = self.perf()
        S, U = eng.neg_samples, eng.pair_units
        assert perf["pair_items"] == cfg.n_iter * n * (kk + S), perf
        assert perf["rep_items"] == cfg.n_iter * n * S, perf
        first_out = self.coords.accept_cycles[start_beats]
        # raw observations only; cycle figures are derived by the caller (tests, nms.bench)
        result = {"name": case.get("name", case["kind"]), "n": n, "kk": kk, "n_iter": cfg.n_iter,
                  "pair_units": U, "neg_samples": S, "perf": perf,
                  "cycles_to_first_coord": first_out - t0}
        self.dut._log.info("job %s: n=%d kk=%d iters=%d: %d matched, perf %s", result["name"], n,
                           kk, cfg.n_iter, checker.matched, perf)
        return result


@cocotb.test()
async def jobs(dut):
    """Run every case of ``cases`` back to back and compare all coordinates with ``embed``."""
    params = tb_params()
    await start_clock(dut)
    tb = EmbeddingTB(dut, params)
    tb.loop.start()
    results = []
    for case in params["cases"]:
        results.append(await tb.run_job(case))
    tb.loop.stop()
    if params.get("report"):
        Path(params["report"]).write_text(json.dumps(results, indent=2, sort_keys=True))
