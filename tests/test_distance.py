"""DistanceEngine: parameter validation, golden model, Amaranth-simulator unit test, and the cocotb
scoreboard testbench under Verilator for parameter sets that build different hardware."""

import random

import numpy as np
import pytest
from amaranth.sim import Simulator

from nms.gen.generate import generate
from nms.rtl.distance import DistanceEngine
from nms.verif.models.distance import (DistanceEngineModel, DistanceParams, Pass,
                                      candidate_beats, expected_results, query_beats,
                                      reference_distances)
from nms.verif.sim.build import run_cocotb
from nms.verif.sim.streams import Array, InOrderChecker, pack, unpack

# ---------------------------------------------------------------------------------------------
# parameter validation


@pytest.mark.parametrize("kwargs, exc, message", [
    ({"lanes": 6}, ValueError, "lanes=6 is not a power of two"),
    ({"lanes": 0}, ValueError, "lanes=0 is out of range"),
    ({"lanes": 8.0}, TypeError, "lanes must be an int"),
    ({"tile": 0}, ValueError, "tile=0 is out of range"),
    ({"tile": True}, TypeError, "tile must be an int"),
    ({"elem_width": 17}, ValueError, "elem_width=17 is out of range"),
    ({"max_dim": 0}, ValueError, "max_dim=0 is out of range"),
    ({"max_dim": "784"}, TypeError, "max_dim must be an int"),
])
def test_engine_rejects_bad_parameters(kwargs, exc, message):
    with pytest.raises(exc, match=message):
        DistanceEngine(**kwargs)


def test_engine_parameters_are_keyword_only():
    with pytest.raises(TypeError):
        DistanceEngine(8, 4)


def _unelaborated(**kwargs):
    engine = DistanceEngine(**kwargs)
    return engine


def test_derived_widths_never_overflow():
    for w, dmax in [(8, 784), (8, 1024), (4, 64), (1, 1), (16, 3)]:
        e = _unelaborated(lanes=4, tile=2, elem_width=w, max_dim=dmax)
        biggest = dmax * (2 ** w - 1) ** 2
        assert biggest < 2 ** e.acc_width and biggest >= 2 ** (e.acc_width - 1)
    e = _unelaborated()  # defaults: L=8, T=4, w=8, D=1024
    assert (e.lanes, e.tile, e.elem_width, e.max_dim) == (8, 4, 8, 1024)
    assert e.derived["macs_per_cycle"] == 32 and e.beats_max == 128


# ---------------------------------------------------------------------------------------------
# golden model


def test_model_matches_numpy_reference_and_masks_unused_lanes():
    p = DistanceParams(lanes=4, tile=3, elem_width=8, max_dim=50)
    rng = np.random.default_rng(0)
    passes = [Pass(rng.integers(0, 256, (3, d)), rng.integers(0, 256, (7, d))) for d in (50, 13, 1)]
    model = DistanceEngineModel(p)
    fill = iter(rng.integers(0, 256, 10_000))  # garbage in unused lanes must not matter
    got = []
    for ps in passes:
        for b in query_beats(p, ps.queries, fill=fill):
            model.query_beat(b)
        for b in candidate_beats(p, ps.candidates, fill=fill):
            got += model.candidate_beat(b)
    assert got == expected_results(p, passes)
    # independent check of the reference on one pair
    q, c = passes[1].queries[2], passes[1].candidates[4]
    assert got[7 + 4]["dist"][2] == sum((int(a) - int(b)) ** 2 for a, b in zip(q, c))


def test_model_rejects_bad_input():
    p = DistanceParams(lanes=2, tile=2, elem_width=4, max_dim=8)
    with pytest.raises(ValueError, match="outside 0..15"):
        query_beats(p, [[1, 16], [0, 0]])
    with pytest.raises(ValueError, match="dim=9 is out of range"):
        candidate_beats(p, np.zeros((1, 9), int))
    with pytest.raises(ValueError, match="exactly tile=2 queries"):
        query_beats(p, [[1, 2]])
    with pytest.raises(TypeError, match="must hold integers"):
        candidate_beats(p, [[0.5, 1.0]])
    with pytest.raises(RuntimeError, match="candidate beat while loading"):
        DistanceEngineModel(p).candidate_beat({"data": [0, 0], "last": 1})


def test_reference_is_exact_at_the_extremes():
    d = reference_distances(np.zeros((1, 1024), int), np.full((1, 1024), 255))
    assert d.dtype == np.int64 and d[0, 0] == 1024 * 255 ** 2


# ---------------------------------------------------------------------------------------------
# stream helpers (pure Python part)


def test_pack_unpack_roundtrip_and_range_errors():
    e = _unelaborated(lanes=4, tile=2, elem_width=5, max_dim=9)
    beat = {"data": [1, 31, 0, 7], "dim": 9}
    bits = pack(e.query_layout, beat)
    assert bits == 1 | 31 << 5 | 0 << 10 | 7 << 15 | 9 << 20  # LSB-first, declaration order
    assert unpack(e.query_layout, bits) == beat
    assert unpack({"a": ("signed", 4), "b": Array(2, 2)}, 0b10_01_1111) == {"a": -1, "b": [1, 2]}
    with pytest.raises(ValueError, match="data.1=32 does not fit 5-bit unsigned"):
        pack(e.query_layout, {"data": [1, 32, 0, 0], "dim": 1})
    with pytest.raises(ValueError, match="missing field dim"):
        pack(e.query_layout, {"data": [1, 2, 3, 4]})


def test_in_order_checker_reports_first_mismatch():
    chk = InOrderChecker("t")
    chk.expect_all([{"x": [1, 2]}, {"x": [3, 4]}])
    chk.observe({"x": [1, 2]})
    chk.observe({"x": [3, 5]})
    with pytest.raises(AssertionError, match=r"item #1: x.1: expected 4, got 5"):
        chk.assert_done()


# ---------------------------------------------------------------------------------------------
# Amaranth simulator: fast feedback on a small engine


def _grouped(p, P, candidates, fill):
    """One pass's candidate beats in groups of P (the last may be smaller), beat-interleaved:
    beat 0 of each candidate of the group with its ``slot``, ``group_end`` on the group's last
    slot, then beat 1, ...; ``last`` on the pass's final beat (the last candidate's final beat)."""
    nb = p.beats(len(candidates[0]))
    flat = candidate_beats(p, candidates, fill=fill)
    per = [flat[i * nb:(i + 1) * nb] for i in range(len(candidates))]
    out = []
    for g0 in range(0, len(per), P):
        group = per[g0:g0 + P]
        for b in range(nb):
            out += [{**c[b], "slot": s, "group_end": int(s == len(group) - 1), "last": 0}
                    for s, c in enumerate(group)]
    out[-1]["last"] = 1
    return out


def _amaranth_run(engine, passes, *, seed, p_valid=0.7, p_ready=0.6, max_cycles=3000,
                  timing=None):
    """Random valid gaps and back-pressure; returns the results (and with ``timing`` a dict,
    fills it with the accept cycles of the candidates' final beats and the results' cycles)."""
    p = DistanceParams(lanes=engine.lanes, tile=engine.tile, elem_width=engine.elem_width,
                       max_dim=engine.max_dim)
    rng = random.Random(seed)
    fill = iter(lambda: rng.randrange(1 << engine.elem_width), None)
    qbeats = [b for ps in passes for b in query_beats(p, ps.queries, fill=fill)]
    if engine.cand_tile > 1:
        cbeats = [b for ps in passes for b in _grouped(p, engine.cand_tile, ps.candidates, fill)]
    else:
        cbeats = [b for ps in passes for b in candidate_beats(p, ps.candidates, fill=fill)]
    # index of each candidate's final beat in the stream, in candidate order
    final_beats, base = [], 0
    for ps in passes:
        n, nb, P = len(ps.candidates), p.beats(ps.candidates.shape[1]), engine.cand_tile
        for i in range(n):
            g0 = i - i % P
            g = min(P, n - g0)
            final_beats.append(base + g0 * nb + (nb - 1) * g + i % P)
        base += n * nb
    accepted, loaded, delivered = [], [], []
    got = []

    async def testbench(ctx):
        qi = ci = 0
        q_on = c_on = False
        for cyc in range(max_cycles):
            # valid may only rise between beats; once up it stays until the beat is taken
            q_on = qi < len(qbeats) and (q_on or rng.random() < p_valid)
            c_on = ci < len(cbeats) and (c_on or rng.random() < p_valid)
            ctx.set(engine.query.valid, q_on)
            ctx.set(engine.candidate.valid, c_on)
            if q_on:
                ctx.set(engine.query.payload.as_value(), pack(engine.query_layout, qbeats[qi]))
            if c_on:
                ctx.set(engine.candidate.payload.as_value(),
                        pack(engine.candidate_layout, cbeats[ci]))
            ctx.set(engine.result.ready, rng.random() < p_ready)
            q_take = q_on and ctx.get(engine.query.ready)
            c_take = c_on and ctx.get(engine.candidate.ready)
            if ctx.get(engine.result.valid) and ctx.get(engine.result.ready):
                got.append(unpack(engine.result_layout, ctx.get(engine.result.payload.as_value())))
                delivered.append(cyc)
            if c_take:
                accepted.append(cyc)
            if q_take:
                loaded.append(cyc)
            await ctx.tick()
            qi, q_on = qi + q_take, q_on and not q_take
            ci, c_on = ci + c_take, c_on and not c_take

    sim = Simulator(engine)
    sim.add_clock(1e-8)
    sim.add_testbench(testbench)
    sim.run()
    if timing is not None:
        timing.update(final=[accepted[i] for i in final_beats if i < len(accepted)],
                      result=delivered, inputs=sorted(accepted + loaded))
    return got, p


def test_amaranth_sim_small_engine_random_stalls():
    engine = DistanceEngine(lanes=2, tile=3, elem_width=4, max_dim=7)
    rng = np.random.default_rng(3)
    passes = [Pass(rng.integers(0, 16, (3, d)), rng.integers(0, 16, (5, d))) for d in (7, 4, 1)]
    passes.append(Pass(np.full((3, 7), 15), np.zeros((2, 7), int)))  # largest distance
    got, p = _amaranth_run(engine, passes, seed=1)
    assert got == expected_results(p, passes)
    assert got[-1]["dist"] == [7 * 15 ** 2] * 3


@pytest.mark.parametrize("P, lanes, tile, max_dim", [(8, 2, 3, 9), (3, 4, 2, 13), (8, 1, 2, 3)])
def test_amaranth_sim_candidate_groups_random_stalls(P, lanes, tile, max_dim):
    """P > 1 (beat-interleaved groups, accumulator queue), random stalls both ways: results in
    candidate order equal the reference. Every pass ends on a partial group (N % P != 0), one
    pass has a single-candidate group, dims give one beat, a partial final beat and max_dim."""
    engine = DistanceEngine(lanes=lanes, tile=tile, elem_width=4, max_dim=max_dim, cand_tile=P)
    rng = np.random.default_rng(P)
    shapes = [(max_dim, 2 * P + 3), (1, P + 1), (min(max_dim, lanes + 1), P - 1),
              (max_dim, 3 * P + 2)]
    passes = [Pass(rng.integers(0, 16, (tile, d)), rng.integers(0, 16, (n, d))) for d, n in shapes]
    passes.append(Pass(np.full((tile, max_dim), 15), np.zeros((P + 2, max_dim), int)))  # largest
    got, p = _amaranth_run(engine, passes, seed=P, max_cycles=4000)
    assert got == expected_results(p, passes)
    assert got[-1]["dist"] == [max_dim * 15 ** 2] * tile


@pytest.mark.parametrize("P", [1, 8])
def test_amaranth_sim_candidate_groups_timing(P):
    """No stalls: one input beat per cycle, and every result leaves exactly `latency + 1`
    cycles after its candidate's final beat, as for P = 1 (groups change no timing)."""
    engine = DistanceEngine(lanes=2, tile=2, elem_width=4, max_dim=5, cand_tile=P)
    rng = np.random.default_rng(11)
    passes = [Pass(rng.integers(0, 16, (2, d)), rng.integers(0, 16, (n, d)))
              for d, n in ((5, 19), (2, 11), (3, 8))]
    timing = {}
    got, p = _amaranth_run(engine, passes, seed=3, p_valid=1.0, p_ready=1.0, max_cycles=400,
                           timing=timing)
    assert got == expected_results(p, passes)
    beats = timing["inputs"]
    assert beats[-1] - beats[0] + 1 == len(beats)       # no bubble, passes back to back
    assert [r - f for r, f in zip(timing["result"], timing["final"])] \
        == [engine.latency + 1] * len(got)


def test_amaranth_sim_out_of_range_dim_is_clamped():
    """dim=0 on the wire behaves as dim=1 and dim > max_dim as max_dim (no hang)."""
    engine = DistanceEngine(lanes=2, tile=1, elem_width=4, max_dim=3)
    p = DistanceParams(lanes=2, tile=1, elem_width=4, max_dim=3)
    q, c = np.array([[5, 9, 2]]), np.array([[1, 3, 15], [4, 4, 4]])
    model = DistanceEngineModel(p)
    expected = []
    for raw_dim, dim in ((0, 1), (3, 3)):
        beats = query_beats(p, q[:, :dim])
        beats[0]["dim"] = raw_dim
        for b in beats:
            model.query_beat(b)
        for b in candidate_beats(p, c[:, :dim]):
            expected += model.candidate_beat(b)

    # drive the same raw beats through the RTL
    rng = random.Random(0)
    seq_q, seq_c = [], []
    for raw_dim, dim in ((0, 1), (3, 3)):
        beats = query_beats(p, q[:, :dim])
        beats[0]["dim"] = raw_dim
        seq_q += beats
        seq_c += candidate_beats(p, c[:, :dim])
    got = []

    async def testbench(ctx):
        qi = ci = 0
        for _ in range(200):
            ctx.set(engine.query.valid, qi < len(seq_q))
            ctx.set(engine.candidate.valid, ci < len(seq_c))
            if qi < len(seq_q):
                ctx.set(engine.query.payload.as_value(), pack(engine.query_layout, seq_q[qi]))
            if ci < len(seq_c):
                ctx.set(engine.candidate.payload.as_value(),
                        pack(engine.candidate_layout, seq_c[ci]))
            ctx.set(engine.result.ready, rng.random() < 0.5)
            q_take = qi < len(seq_q) and ctx.get(engine.query.ready)
            c_take = ci < len(seq_c) and ctx.get(engine.candidate.ready)
            if ctx.get(engine.result.valid) and ctx.get(engine.result.ready):
                got.append(unpack(engine.result_layout, ctx.get(engine.result.payload.as_value())))
            await ctx.tick()
            qi, ci = qi + q_take, ci + c_take

    sim = Simulator(engine)
    sim.add_clock(1e-8)
    sim.add_testbench(testbench)
    sim.run()
    assert got == expected
    assert got[0]["dist"] == [(5 - 1) ** 2]  # dim 0 -> 1: only the first element counts


# ---------------------------------------------------------------------------------------------
# cocotb + Verilator: one build per parameter set that makes different hardware


CONFIGS = {
    # L=1, T=1: no adder tree, single-query memory, one element per beat
    "L1_T1": ({"lanes": 1, "tile": 1, "elem_width": 8, "max_dim": 16}, {"n_candidates": 8}),
    # odd tile, narrow elements, max_dim not a multiple of L
    "L4_T3": ({"lanes": 4, "tile": 3, "elem_width": 5, "max_dim": 37}, {"n_candidates": 10}),
    # the default engine (Fashion-MNIST sized)
    "default": ({"lanes": 8, "tile": 4, "elem_width": 8, "max_dim": 1024}, {"n_candidates": 6}),
}


@pytest.mark.parametrize("config", list(CONFIGS))
def test_distance_cocotb(config):
    engine_params, tb = CONFIGS[config]
    verilog, _ = generate("distance", engine_params, top="distance")
    run_cocotb(f"distance_{config}", verilog, "nms.verif.tb.distance",
               {"engine": engine_params, "seed": 7, **tb}, toplevel="distance")
