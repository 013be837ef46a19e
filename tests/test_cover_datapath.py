"""The whole datapath with the coverage exemplar stage (``OPT.exemplar = cover``, the search
winner ``PRESETS["desne"]``) under Verilator: raw vectors in memory -> selected indices equal to
``desne.run_chunk`` (kNN rows, affinities, coordinates and the selection, stage by stage), with
random memory stalls/latency/gaps and output back-pressure; the exemplar mode changes from job
to job (coverage, NMS plain grid, v0). The generator parameters of ``tests/test_datapath.py``,
in a build folder of its own (concurrent runs of the two files do not clash)."""

from __future__ import annotations

import numpy as np
from amaranth.back import verilog

from nms.rtl.datapath import DesneDatapath
from nms.verif.models import desne
from nms.verif.sim.build import run_cocotb

#: the simulated build of tests/test_datapath.py (one Verilator build for both files)
HW = {"lanes": 8, "tile": 4, "elem_width": 8, "max_dim": 64, "k": 8, "capacity": 128,
      "neg_samples": 4, "affinity_lanes": 4, "pair_units": 2}
SCHEDULE = {"n_iter": 30, "exaggeration_iters": 10, "momentum_switch": 10, "perplexity": 5.0}
WINNER = {"exemplar": "cover", "allocation": "proportional", "cover_start": "mean"}
MEM = {"req_stall": 0.3, "latency": [1, 40], "gap": 0.25}
_VERILOG: dict = {}


def _run(jobs, *, seed=1, backpressure=0.3, mem=MEM):
    if "v" not in _VERILOG:
        _VERILOG["v"] = verilog.convert(DesneDatapath(**HW), name="top", emit_src=False)
    params = {"datapath": HW, "jobs": jobs, "mem": mem, "backpressure": backpressure,
              "seed": seed}
    run_cocotb("datapath_c128_cover", _VERILOG["v"], "nms.verif.tb.datapath", params)


def test_preset_matches_the_winner():
    want = desne.PRESETS["desne"]
    assert {k: getattr(want, k) for k in WINNER} == WINNER


def test_digits_class_cover_end_to_end():
    """A whole digits class with the winner, chunked as ``desne.select`` does (2 chunks); each
    chunk's selection equals the model's (the union is ``desne.select``'s)."""
    from nms.sw.datasets import load_digits

    ds = load_digits()
    X = ds.X_train.reshape(len(ds.X_train), -1).astype(np.int64)
    Xc = X[ds.y_train == 5]
    cfg = desne.DesneConfig(k=HW["k"], neg_samples=HW["neg_samples"], capacity=HW["capacity"],
                            **SCHEDULE, **WINNER)
    ref = desne.select(Xc, np.full(len(Xc), 5), 0.1, cfg, seed=3, details=True)
    assert len(ref["chunks"]) == 2
    jobs = [{"X": Xc[ch["members"]].tolist(),
             "budget": int(len(ch["selected"])), "seed": 3 + k, "cfg": {**SCHEDULE, **WINNER}}
            for k, ch in enumerate(ref["chunks"])]
    _run(jobs, seed=21)


def test_modes_per_job_random_vectors():
    """Random uint8 vectors (masked lanes, padded queries, duplicates: tied gains and a tied
    start), the exemplar mode switching per job: coverage + mean start, coverage + gain start,
    the NMS plain grid, v0; budget = 1 and budget = N."""
    rng = np.random.default_rng(8)
    X1 = rng.integers(0, 256, size=(37, 45))
    X1[rng.integers(0, 37, 6)] = X1[3]
    X2 = rng.integers(0, 256, size=(9, 64))
    jobs = [
        {"X": X1.tolist(), "budget": 6, "seed": 3, "cfg": {**SCHEDULE, **WINNER}},
        {"X": X1.tolist(), "budget": 6, "seed": 3,
         "cfg": {**SCHEDULE, "allocation": "proportional", "exemplar": "centre"}},    # NMS grid
        {"X": X2.tolist(), "budget": 3, "seed": 4,
         "cfg": {**SCHEDULE, **WINNER, "cover_start": "gain", "n_iter": 12}},
        {"X": X2.tolist(), "budget": 1, "seed": 5, "cfg": {**SCHEDULE, **WINNER, "n_iter": 8}},
        {"X": X2.tolist(), "budget": 4, "seed": 6,
         "cfg": {**SCHEDULE, "n_iter": 8, "exemplar": "centre", "allocation": "adaptive"}},  # v0
        {"X": X2[:5].tolist(), "budget": 5, "seed": 9, "cfg": {**SCHEDULE, "n_iter": 8}},  # default
    ]
    _run(jobs, seed=22, backpressure=0.5, mem={"req_stall": 0.5, "latency": [0, 60], "gap": 0.4})
