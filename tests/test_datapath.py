"""The combined DE-SNE datapath: parameter validation, ``nms generate`` + lint, the vector
fetcher in the Amaranth simulator, and the whole chain under Verilator (one build): raw vectors
in memory -> selected indices, equal to ``nms.verif.models.desne.run_chunk`` stage by stage, for a whole
digits class (two chunks, as ``desne.select`` splits it) and for random uint8 vectors, with random
memory stalls/latency/gaps and output back-pressure."""

from __future__ import annotations

import random

import numpy as np
import pytest
from amaranth.back import verilog
from amaranth.sim import Simulator

from nms.rtl.datapath import DesneDatapath
from nms.rtl.memport import VectorFetcher
from nms.verif.models import desne
from nms.verif.sim.build import run_cocotb

#: the simulated build: digits-sized (64-D), C = 128, short lists, 2 pair units
HW = {"lanes": 8, "tile": 4, "elem_width": 8, "max_dim": 64, "k": 8, "capacity": 128,
      "neg_samples": 4, "affinity_lanes": 4, "pair_units": 2}
#: a short schedule keeps the simulation short; everything else is the model's default
SCHEDULE = {"n_iter": 30, "exaggeration_iters": 10, "momentum_switch": 10, "perplexity": 5.0}
MEM = {"req_stall": 0.3, "latency": [1, 40], "gap": 0.25}
_VERILOG: dict = {}


def _run(jobs, *, seed=1, backpressure=0.3, mem=MEM, report=None):
    if "v" not in _VERILOG:
        _VERILOG["v"] = verilog.convert(DesneDatapath(**HW), name="top", emit_src=False)
    params = {"datapath": HW, "jobs": jobs, "mem": mem, "backpressure": backpressure,
              "seed": seed}
    if report:
        params["report"] = str(report)
    run_cocotb("datapath_c128", _VERILOG["v"], "nms.verif.tb.datapath", params)


# ------------------------------------------------------------------------------------------------
# parameters


@pytest.mark.parametrize("kwargs, match", [
    ({"lanes": 6}, "lanes=6 is not a power of two"),
    ({"tile": 0}, "tile=0"),
    ({"k": 1}, "k=1"),
    ({"k": 16, "capacity": 16}, "k=16 must be smaller than capacity=16"),
    ({"capacity": 3}, "capacity=3"),
    ({"affinity_lanes": 17}, "affinity_lanes=17"),
    ({"pair_units": 3}, "pair_units=3 is not a power of two"),
    ({"pair_units": 8, "capacity": 4, "k": 2, "affinity_lanes": 1}, "pair_units=8 exceeds capacity=4"),
    ({"neg_samples": 65}, "neg_samples=65"),
    ({"max_dim": 0}, "max_dim=0"),
    ({"elem_width": 17}, "elem_width=17"),
    ({"fetch_depth": 1}, "fetch_depth=1"),
    ({"max_dim": 64, "buffer_dim": 65}, "buffer_dim=65"),
    ({"buffer_dim": -1}, "buffer_dim=-1"),
    ({"cand_tile": 4}, "cand_tile=4 needs the chunk buffer"),
    ({"buffer_dim": 16, "max_dim": 64, "cand_tile": 17}, "cand_tile=17"),
])
def test_bad_parameters_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        DesneDatapath(**kwargs)


def test_parameters_must_be_ints():
    with pytest.raises(TypeError, match="tile must be an int"):
        DesneDatapath(tile=4.0)
    with pytest.raises(TypeError, match="k must be an int"):
        DesneDatapath(k=True)
    with pytest.raises(TypeError, match="hold_self must be True or False"):
        DesneDatapath(hold_self=0)


def test_parameters_and_derived_recorded():
    dp = DesneDatapath(**HW)
    assert dp.parameters == {**HW, "fetch_depth": 4, "buffer_dim": 0, "cand_tile": 1,
                             "buffer_banks": 1, "hold_self": True,
                             "serial_update": False, "serial_pairs": False}
    d = dp.derived
    assert d["index_width"] == 7 and d["count_width"] == 8
    assert d["knn_engine_acc_width"] == dp.knn.engine.acc_width
    assert d["embedding_index_width"] == 7 and d["grid_index_bits"] == 7
    # the documented dataflow: N vectors as queries + all N once per tile
    assert dp.bytes_read(10, 64) == (10 + 3 * 10) * 64


def test_generate_datapath_block_lints(tmp_path):
    from nms.gen.generate import generate
    from nms.gen.lint import lint_verilog

    # a small build of the default kind (chunk buffer + pooling unit, P = 4 candidates per
    # query row), with the buffer sized for its 16-element vectors
    params = {"capacity": "64", "k": "4", "max_dim": "16", "lanes": "4", "tile": "2",
              "neg_samples": "2", "affinity_lanes": "2", "pair_units": "1", "buffer_dim": "16",
              "cand_tile": "4"}
    text, meta = generate("datapath", params)
    assert meta["parameters"]["capacity"] == 64 and meta["parameters"]["fetch_depth"] == 4
    assert meta["parameters"]["buffer_dim"] == 16 and meta["parameters"]["cand_tile"] == 4
    assert meta["parameters"]["buffer_banks"] == 8          # the generator's default
    names = {p["name"] for p in meta["ports"]}
    assert {"config", "start", "mem__req__payload", "mem__resp__payload", "indices__payload",
            "busy", "done", "error", "perf"} <= names
    vfile = tmp_path / "datapath.v"
    vfile.write_text(text)
    lint_verilog(vfile, "datapath")  # strict: -Wall minus the documented backend waivers


# ------------------------------------------------------------------------------------------------
# the vector fetcher alone (Amaranth simulator): framing, padding, order, counters


def test_vector_fetcher_frames_pads_and_counts():
    L, dim = 4, 6                      # 2 beats per vector, 2 valid lanes on the final beat
    dut = VectorFetcher(lanes=L, elem_width=8, max_dim=16, index_width=5, count_width=6, depth=3)
    cmds = [(3, 2, 0, 0), (0, 3, 0, 1), (0, 4, 1, 0)]    # (first, count, dest, pad)
    rng = random.Random(3)
    seen_req, out = [], []

    def beat_word(v, b):
        return sum(((v * 16 + b * L + lane) & 0xFF) << (8 * lane) for lane in range(L))

    async def bench(ctx):
        ctx.set(dut.dim, dim)
        pending = [c for c in cmds]
        resp_queue = []
        for _ in range(400):
            if pending:
                f, c, d, p = pending[0]
                ctx.set(dut.cmd.payload, {"first": f, "count": c, "dest": d, "pad": p})
            ctx.set(dut.cmd.valid, bool(pending))
            ctx.set(dut.mem.req.ready, rng.random() < 0.6)
            rv = bool(resp_queue) and rng.random() < 0.6
            ctx.set(dut.mem.resp.valid, rv)
            if resp_queue:
                ctx.set(dut.mem.resp.payload, {"data": [(resp_queue[0] >> (8 * i)) & 0xFF
                                                        for i in range(L)]})
            ctx.set(dut.beats.ready, rng.random() < 0.7)
            if pending and ctx.get(dut.cmd.ready):
                pending.pop(0)
            if ctx.get(dut.mem.req.valid) and ctx.get(dut.mem.req.ready):
                r = ctx.get(dut.mem.req.payload)
                seen_req.append((r.first, r.count))
                resp_queue += [beat_word(v, b) for v in range(r.first, r.first + r.count)
                               for b in range(2)]
            if rv and ctx.get(dut.mem.resp.ready):
                resp_queue.pop(0)
            if ctx.get(dut.beats.valid) and ctx.get(dut.beats.ready):
                b = ctx.get(dut.beats.payload)
                out.append((sum(int(x) << (8 * i) for i, x in enumerate(b.data)), int(b.dest),
                            int(b.last)))
            await ctx.tick()
        assert ctx.get(dut.bytes_read) == (2 + 4) * dim
        assert ctx.get(dut.beats_read) == (2 + 4) * 2

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    assert seen_req == [(3, 2), (0, 4)]           # the padding command touches no memory
    want = ([(beat_word(v, b), 0, 0) for v in (3, 4) for b in range(2)]
            + [(0, 0, 0)] * 6 + [(beat_word(v, b), 1, 0) for v in range(4) for b in range(2)])
    want = [(w, d, int(i in (3, 9, 17))) for i, (w, d, _) in enumerate(want)]
    assert out == want


# ------------------------------------------------------------------------------------------------
# the whole chain under Verilator


def _cfg(**extra):
    return {**SCHEDULE, **extra}


def test_digits_class_end_to_end(tmp_path):
    """A whole digits class, chunked as ``desne.select`` does (C = 128 -> 2 chunks of 68/69),
    each chunk a job with its own seed; the union equals ``desne.select`` for the class."""
    from nms.sw.datasets import load_digits

    ds = load_digits()
    label = 3
    X = ds.X_train.reshape(len(ds.X_train), -1).astype(np.int64)
    Xc = X[ds.y_train == label]
    yc = np.full(len(Xc), label)
    cfg = desne.DesneConfig(k=HW["k"], neg_samples=HW["neg_samples"], capacity=HW["capacity"],
                            **SCHEDULE)
    ref = desne.select(Xc, yc, 0.1, cfg, seed=7, details=True)
    assert len(ref["chunks"]) == 2
    jobs = []
    for ordinal, ch in enumerate(ref["chunks"]):
        members = ch["members"]
        local = np.searchsorted(members, ch["selected"])
        jobs.append({"X": Xc[members].tolist(), "budget": int(len(local)), "seed": 7 + ordinal,
                     "cfg": _cfg()})
    _run(jobs, seed=11)


def test_random_uint8_and_status(tmp_path):
    """Random uint8 vectors (dim not a multiple of the lanes, N not a multiple of the tile:
    masked lanes and padded queries), bisection search + proportional allocation, a start while
    busy (ignored, flags error), a bad configuration (refused), and a job after it."""
    rng = np.random.default_rng(5)
    X1 = rng.integers(0, 256, size=(37, 45))
    X2 = rng.integers(0, 256, size=(9, 64))
    jobs = [
        {"X": X1.tolist(), "budget": 6, "seed": 3,
         "cfg": _cfg(n_iter=25, search="bisect", allocation="proportional")},
        {"X": X2.tolist(), "budget": 4, "seed": 4, "cfg": _cfg(n_iter=12),
         "restart_while_busy": True},
        {"X": X2.tolist(), "budget": 4, "seed": 4, "cfg": _cfg(), "expect_error": True,
         "config_override": {"budget": 10}},          # budget > N
        {"X": X2[:5].tolist(), "budget": 5, "seed": 9, "cfg": _cfg(n_iter=8)},   # budget = N
        # the streamed build has no pooling unit: a pooled job is refused (OPT.pool <= 0)
        {"X": X2.tolist(), "budget": 4, "seed": 4, "cfg": _cfg(pool="pool2"),
         "expect_error": True, "expect_cause": 0x16},
    ]
    _run(jobs, seed=12, backpressure=0.5, mem={"req_stall": 0.5, "latency": [0, 60], "gap": 0.4})


# ------------------------------------------------------------------------------------------------
# the chosen dataflow (docs/energy.md §6): one DDR read per job -> pooling -> chunk buffer


#: the same build with a chunk buffer sized for 2x2-pooled digits (128 x ceil(16/8) = 256
#: words, in 8 banks of 32: a job's words span several) and P = 4 candidates per query-memory
#: row read (the chosen dataflow's engine and bank count)
HW_BUF = {**HW, "buffer_dim": 16, "cand_tile": 4, "buffer_banks": 8}
_VERILOG_BUF: dict = {}


def _run_buf(jobs, *, seed=1, backpressure=0.3, mem=MEM, report=None, check_stages=True):
    if "v" not in _VERILOG_BUF:
        _VERILOG_BUF["v"] = verilog.convert(DesneDatapath(**HW_BUF), name="top", emit_src=False)
    params = {"datapath": HW_BUF, "jobs": jobs, "mem": mem, "backpressure": backpressure,
              "seed": seed, "check_stages": check_stages}
    if report:
        params["report"] = str(report)
    run_cocotb("datapath_c128_buf16_p4", _VERILOG_BUF["v"], "nms.verif.tb.datapath", params)


def test_chunk_buffer_sizes_and_bytes():
    dp = DesneDatapath(**HW_BUF)
    assert (dp.chunk_buffer, dp.buffer_depth) == (True, 256)
    assert (dp.buffer.bank_words, dp.buffer.banks_used) == (32, 8)
    assert dp.bytes_read(37, 64) == 37 * 64                    # every vector once
    assert dp.refusal_params == {"capacity": 128, "max_dim": 64, "lanes": 8,
                                 "buffer_depth": 256, "pool_max": 2}
    assert DesneDatapath(**HW).refusal_params == {"capacity": 128, "max_dim": 64}


def test_chunk_buffer_pooled_jobs_bit_exact():
    """A digits class chunk with 2x2 pooling (8x8 -> 4x4), random images with 4x4 pooling,
    an unpooled job that fits the buffer, a start while busy; every stage equal to
    ``run_chunk`` with ``cfg.pool``; one DDR request per job; counters exact."""
    from nms.sw.datasets import load_digits

    ds = load_digits()
    X = ds.X_train.reshape(len(ds.X_train), -1).astype(np.int64)
    Xc = X[ds.y_train == 5][:60]
    rng = np.random.default_rng(8)
    jobs = [
        {"X": Xc.tolist(), "budget": 6, "seed": 7, "cfg": _cfg(pool="pool2")},
        {"X": rng.integers(0, 256, size=(37, 64)).tolist(), "budget": 5, "seed": 3,
         "cfg": _cfg(n_iter=12, pool="pool4", search="bisect"), "restart_while_busy": True},
        {"X": rng.integers(0, 256, size=(37, 45)).tolist(), "budget": 4, "seed": 4,
         "cfg": _cfg(n_iter=10)},                      # 37 x 6 = 222 words <= 256
    ]
    _run_buf(jobs, seed=13, backpressure=0.4)


def test_chunk_buffer_refusals():
    """What the chosen dataflow cannot run is refused at start with its declared cause, no
    memory read, and the next job runs bit-exact: a chunk too big for the buffer unpooled
    (50 x 8 words > 256) that fits pooled (50 x 2), an image that is not square, a side the
    window does not divide, an undeclared pool code."""
    from nms.rtl.regmap import CAUSE

    rng = np.random.default_rng(9)
    X50 = rng.integers(0, 256, size=(50, 64)).tolist()
    jobs = [
        {"X": X50, "budget": 4, "seed": 1, "cfg": _cfg(n_iter=6), "expect_error": True,
         "expect_cause": CAUSE["BAD_CHUNK_BUFFER"].code},
        {"X": rng.integers(0, 256, size=(9, 45)).tolist(), "budget": 3, "seed": 1,
         "cfg": _cfg(pool="pool2"), "expect_error": True, "expect_cause": CAUSE["BAD_IMAGE"].code},
        {"X": rng.integers(0, 256, size=(9, 36)).tolist(), "budget": 3, "seed": 1,
         "cfg": _cfg(pool="pool2"), "img_w": 6, "config_override": {"pool": 2},
         "expect_error": True, "expect_cause": CAUSE["BAD_IMAGE"].code},
        {"X": X50, "budget": 4, "seed": 1, "cfg": _cfg(pool="pool2"),
         "config_override": {"pool": 3}, "expect_error": True,
         "expect_cause": CAUSE["BAD_OPT_POOL"].code},
        {"X": X50, "budget": 4, "seed": 2, "cfg": _cfg(n_iter=6, pool="pool2")},   # 100 words
    ]
    _run_buf(jobs, seed=14, backpressure=0.2)
