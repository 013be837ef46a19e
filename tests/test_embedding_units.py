"""The embedding engine's units one by one in the Amaranth simulator (no Verilator build), each
against an independent expectation: the bit-exact model's arithmetic (``desne.recip1p``,
``negative_samples``, ``init_embedding``, the update step of ``desne.embed``) or a direct Python
enumeration. Units that work on memories run with real ``amaranth.lib.memory.Memory`` instances
around them."""

from __future__ import annotations

import random

import numpy as np
import pytest
from amaranth import Elaboratable, Module, Signal
from amaranth.hdl import ResetInserter
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.sim import Simulator

from nms.rtl import fixedpoint as fp
from nms.rtl.embedding import (DIVIDE_MIN, F_SAT, PAIR_DRAIN, SERIAL_PAIR_DRAIN, EmbeddingController,
                               EmbeddingEngine, GainDivider, Initialiser, PairLane,
                               PairSequencer, PairUnit, PartnerIndex, PerfCounters, PointAccumulator,
                               ScatterBank, SerialUpdate, UpdateDatapath, coord_layout)
from nms.rtl.hash import Hash32
from nms.rtl.recip import Recip1p
from nms.verif.models import desne
from nms.verif.models.desne import recip1p


def _simulate(dut, bench, *, reset=None):
    """Run ``bench(ctx)`` to its end (its loops have their own cycle limits). With ``reset`` (a
    signal the testbench drives), ``dut`` is simulated behind ``ResetInserter(reset)``."""
    finished = []

    async def wrapped(ctx):
        await bench(ctx)
        finished.append(True)

    sim = Simulator(dut if reset is None else ResetInserter(reset)(dut))
    sim.add_clock(1e-6)
    sim.add_testbench(wrapped)
    sim.run()
    assert finished, "testbench did not run to its end"


def _pipeline(dut, inputs, cycles_after):
    """Feed one input per cycle to an always-ready ``i`` stream, collect every ``o`` beat."""
    out = []

    async def bench(ctx):
        for c in range(len(inputs) + cycles_after):
            if c < len(inputs):
                ctx.set(dut.i.payload, inputs[c])
            ctx.set(dut.i.valid, c < len(inputs))
            if ctx.get(dut.o.valid):
                out.append(ctx.get(dut.o.payload))
            await ctx.tick()

    _simulate(dut, bench)
    return out


# ------------------------------------------------------------------------------------------------
# arithmetic units


def test_hash_unit_matches_hash32():
    rng = random.Random(3)
    xs = [rng.getrandbits(32) for _ in range(200)] + [0, 1, fp.MASK32, 0x8000_0000]
    assert _pipeline(Hash32(), xs, Hash32.latency + 1) == [fp.hash32(x) for x in xs]


@pytest.mark.parametrize("rom", ["logic", "block"])
def test_recip_unit_matches_recip1p(rom):
    """Both table kinds (soft-logic ROM, block RAM) give the model's kernel, same latency."""
    rng = random.Random(4)
    ds = [rng.getrandbits(rng.randrange(1, 34)) for _ in range(300)]
    ds += [0, 1, 255, 256, 65535, 65536, (1 << 33) - 1]
    exp = recip1p(np.array(ds, dtype=np.int64)).tolist()
    assert _pipeline(Recip1p(d2_width=33, rom=rom), ds, Recip1p.latency + 1) == exp


def test_recip_unit_refuses_an_unknown_table_kind():
    with pytest.raises(ValueError, match="rom='lut' is not 'logic' or 'block'"):
        Recip1p(rom="lut")


def test_gain_divider_exact_and_saturating():
    dut = GainDivider(n_width=8, den_width=30)
    rng = random.Random(5)
    ops = [(n, rng.randrange(0, 1 << 30)) for n in (2, 17, 200) for _ in range(6)]
    ops += [(64, 0), (64, 1), (64, 64), (64, 65), (2, (1 << 30) - 1)]
    got = []

    async def bench(ctx):
        for n, den in ops:
            ctx.set(dut.i.payload.n, n)
            ctx.set(dut.i.payload.den, den)
            ctx.set(dut.i.valid, 1)
            await ctx.tick().until(dut.i.ready)
            ctx.set(dut.i.valid, 0)
            ctx.set(dut.o.ready, 1)
            *_, payload = await ctx.tick().sample(dut.o.payload).until(dut.o.valid)
            got.append(payload)

    _simulate(dut, bench)
    assert got == [min((n << 32) // max(den, 1), fp.REP_GAIN_MAX) for n, den in ops]


def test_partner_index_matches_negative_samples():
    C = 200
    dut = PartnerIndex(capacity=C)
    cases = [(n, t, seed) for n, t, seed in ((2, 0, 1), (3, 5, 7), (57, 2, 99), (C, 1, 12345))]
    for n, t, seed in cases:
        S = 4
        expected = desne.negative_samples(n, S, t, seed)
        _, base = desne._seed_bases(seed)
        beats = [(i, fp.hash32((base + (t * n + i) * S + s) & fp.MASK32))
                 for i in range(n) for s in range(S)]
        got = []

        async def bench(ctx, n=n, beats=beats, got=got):
            ctx.set(dut.n, n)
            ctx.set(dut.nm1, n - 1)
            for c in range(len(beats) + PartnerIndex.latency):
                if c < len(beats):
                    ctx.set(dut.point, beats[c][0])
                    ctx.set(dut.hash, beats[c][1])
                await ctx.tick()
                if c + 1 >= PartnerIndex.latency:
                    got.append(ctx.get(dut.j))

        _simulate(dut, bench)
        assert got[:len(beats)] == expected.ravel().tolist(), (n, t, seed)


# ------------------------------------------------------------------------------------------------
# pair lane parts


@pytest.mark.parametrize("interval", [1, 3])
@pytest.mark.parametrize("hold_self", [True, False])
@pytest.mark.parametrize("U, u, n, kk", [(1, 0, 7, 3), (2, 1, 9, 4), (4, 3, 6, 2), (4, 2, 2, 1),
                                         (2, 0, 4, 4)])
def test_pair_sequencer_issue_order(U, u, n, kk, hold_self, interval):
    """hold_self: each point's kk attractive then S repulsive pairs back to back, Y[i] read on
    the first only; otherwise every point's attractive pairs, then every point's repulsive
    ones, Y[i] read on every pair. Issues ``interval`` cycles apart (a serial pair unit)."""
    K, S, C = 4, 3, 16
    dut = PairSequencer(unit=u, capacity=C, k=K, neg_samples=S, pair_units=U,
                        hold_self=hold_self, interval=interval)
    iter_base = 0xFFFF_FFF0                                  # the counter wraps at 2**32

    def att(i):
        return [(0, i, i // U, int(e == kk - 1), i * K + e, int(e == 0 or not hold_self))
                for e in range(kk)]

    def rep(i):
        return [(1, i, i // U, int(s == S - 1), (iter_base + i * S + s) & fp.MASK32,
                 int(not hold_self)) for s in range(S)]

    own = list(range(u, n, U))
    if hold_self:
        expected = [p for i in own for p in att(i) + rep(i)]
    else:
        expected = [p for i in own for p in att(i)] + [p for i in own for p in rep(i)]
    got = []

    async def bench(ctx):
        ctx.set(dut.n, n)
        ctx.set(dut.kk, kk)
        ctx.set(dut.iter_base, iter_base)
        await ctx.tick()                       # n is held from a cycle before start on
        ctx.set(dut.start, 1)
        assert not ctx.get(dut.issue)          # nothing issues in the start cycle
        await ctx.tick()
        ctx.set(dut.start, 0)
        for cycle in range(interval * len(expected) + 3):
            if ctx.get(dut.issue):
                mode = ctx.get(dut.mode)
                got.append((mode, ctx.get(dut.point), ctx.get(dut.local), ctx.get(dut.last),
                            ctx.get(dut.counter) if mode else ctx.get(dut.knn_addr),
                            ctx.get(dut.self_read)))
                cycles.append(cycle)
            await ctx.tick()
        assert not ctx.get(dut.act)

    cycles = []
    _simulate(dut, bench)
    assert got == expected
    # from the cycle after start, interval cycles apart
    assert cycles == list(range(0, interval * len(expected), interval))


def test_point_accumulator_sums_and_kernel_sum():
    params = dict(capacity=16, k=4, neg_samples=3, pair_units=2)
    dut = PointAccumulator(**params)
    rng = random.Random(6)
    locals_ = list(range(8))
    terms, L, R, wsum = [], {}, {}, 0
    for mode, count in ((0, 4), (1, 3)):
        for loc in locals_:
            for e in range(count):
                fx, fy = rng.randrange(-(1 << 24), 1 << 24), rng.randrange(-(1 << 24), 1 << 24)
                w = rng.randrange(0, 1 << 16 + 1)
                terms.append({"fx": fx, "fy": fy, "w": w, "mode": mode, "local": loc,
                              "last": int(e == count - 1)})
                bank = R if mode else L
                bx, by = bank.get(loc, (0, 0))
                bank[loc] = (bx + fx, by + fy)
                wsum += w if mode else 0
    got = {}

    async def bench(ctx):
        ctx.set(dut.clear_wsum, 1)
        await ctx.tick()
        ctx.set(dut.clear_wsum, 0)
        for term in terms:
            while rng.random() < 0.3:                        # idle cycles between terms
                ctx.set(dut.i.valid, 0)
                await ctx.tick()
            ctx.set(dut.i.valid, 1)
            ctx.set(dut.i.payload, term)
            await ctx.tick()
        ctx.set(dut.i.valid, 0)
        await ctx.tick()
        got["wsum"] = ctx.get(dut.wsum)
        got["L"], got["R"] = {}, {}
        lat = dut.read_latency
        assert lat == 2
        for a in range(len(locals_) + lat - 1):           # one read per cycle, pipelined
            ctx.set(dut.l_addr, locals_[min(a, len(locals_) - 1)])
            ctx.set(dut.r_addr, locals_[min(a, len(locals_) - 1)])
            await ctx.tick()
            if a >= lat - 1:
                loc = locals_[a - (lat - 1)]
                lx, rx = ctx.get(dut.l_data), ctx.get(dut.r_data)
                got["L"][loc] = (lx["x"], lx["y"])
                got["R"][loc] = (rx["x"], rx["y"])

    _simulate(dut, bench)
    assert got["wsum"] == wsum and got["L"] == L and got["R"] == R


def _scatter_sequence(rng, C):
    """Beats (j, fx, fy, idle cycles before it): the forwarding hazards first — one ``j`` at
    distance 1, 2, 3 and 4 (``a a``, ``a b a``, ``a b c a``, ``a b c d a``, back to back and with
    idle cycles between, which shift the distance in cycles), runs of one ``j`` — then random
    beats with runs, repeats and idle cycles."""
    def f():
        return rng.randrange(-(1 << 24), 1 << 24), rng.randrange(-(1 << 24), 1 << 24)

    seq = []
    for distance in (1, 2, 3, 4, 5):
        for gap in (0, 1, 2, 3):
            js = [5] + [(6 + d) % C for d in range(distance - 1)] + [5, 5]
            for e, j in enumerate(js):
                seq.append((j, *f(), gap if e else 0))
    for _ in range(200):
        j = rng.choice([3, 3, 3, 0, C - 1, rng.randrange(C), rng.randrange(4)])
        seq.append((j, *f(), 0 if rng.random() < 0.75 else rng.randrange(1, 4)))
    # extremes: the largest terms many times on one entry (the sums stay in fa_width)
    seq += [(7, (1 << 24) if e % 2 else -(1 << 24), -(1 << 24), 0) for e in range(16)]
    return seq


def test_scatter_bank_read_modify_write_back_to_back_then_clear():
    """``F[j] -= f`` against a direct sum, with every forwarding distance (same ``j`` 1..5
    beats apart, with and without idle cycles), then the update's reads (2 cycles) and clears."""
    C = 16
    dut = ScatterBank(capacity=C, k=4, neg_samples=2, pair_units=1)
    assert dut.read_latency == 2 and dut.write_latency == 3
    rng = random.Random(7)
    seq = _scatter_sequence(rng, C)
    expected = [(0, 0)] * C
    for j, fx, fy, _ in seq:
        expected[j] = (expected[j][0] - fx, expected[j][1] - fy)
    got = []

    async def read_all(ctx, clear_behind):
        """Read entries 0 .. C-1 one per cycle (the update's order); with ``clear_behind``,
        clear each entry two cycles after its read, as the engine's update does."""
        values = []
        for a in range(C + 2):
            ctx.set(dut.read_addr, min(a, C - 1))
            ctx.set(dut.clear.valid, clear_behind and a >= 2)
            ctx.set(dut.clear.payload, max(a - 2, 0))
            await ctx.tick()
            if 1 <= a <= C:                              # the word read in cycle a - 1
                d = ctx.get(dut.data)
                values.append((d["x"], d["y"]))
        ctx.set(dut.clear.valid, 0)
        return values

    async def drain(ctx):
        ctx.set(dut.scatter.valid, 0)
        for _ in range(dut.write_latency):
            await ctx.tick()

    async def bench(ctx):
        for j, fx, fy, idle in seq:
            ctx.set(dut.scatter.valid, 0)
            for _ in range(idle):
                ctx.set(dut.read_addr, rng.randrange(C))     # reads between beats are harmless
                await ctx.tick()
            ctx.set(dut.scatter.valid, 1)
            ctx.set(dut.scatter.payload, {"j": j, "fx": fx, "fy": fy})
            await ctx.tick()
        await drain(ctx)
        got.append(await read_all(ctx, True))             # read + clear behind
        got.append(await read_all(ctx, False))            # the zeros
        # dirty again, then the job-start sweep: ``clear`` alone
        for j in range(C):
            ctx.set(dut.scatter.valid, 1)
            ctx.set(dut.scatter.payload, {"j": j, "fx": j + 1, "fy": -j})
            await ctx.tick()
        await drain(ctx)
        got.append(await read_all(ctx, False))
        for a in range(C):
            ctx.set(dut.clear.valid, 1)
            ctx.set(dut.clear.payload, a)
            await ctx.tick()
        ctx.set(dut.clear.valid, 0)
        got.append(await read_all(ctx, False))

    _simulate(dut, bench)
    assert got[0] == expected
    assert got[1] == [(0, 0)] * C
    assert got[2] == [(-(j + 1), j) for j in range(C)]
    assert got[3] == [(0, 0)] * C


class _LaneHarness(Elaboratable):
    """A pair lane with its hash unit, a preloaded Y memory and neighbour-list memory."""

    def __init__(self, lane, Y, lists):
        self.lane, self.hash = lane, Hash32()
        self.ymem = Memory(shape=coord_layout(), depth=len(Y), init=Y)
        self.knnmem = Memory(shape=lane.knn_r.data.shape(), depth=len(lists), init=lists)

    def elaborate(self, platform):
        m = Module()
        m.submodules.lane, m.submodules.hash = self.lane, self.hash
        m.submodules.ymem, m.submodules.knnmem = self.ymem, self.knnmem
        wiring.connect(m, self.lane.y_self, self.ymem.read_port())
        wiring.connect(m, self.lane.y_part, self.ymem.read_port())
        wiring.connect(m, self.lane.knn_r, self.knnmem.read_port())
        wiring.connect(m, self.lane.hash_req, self.hash.i)
        m.d.comb += self.lane.hash_rsp.eq(self.hash.o.payload)
        return m


def _lane_expectation(Y, nbr, P, n, kk, S, U, u, iter_base):
    """Own attraction / repulsion sums, scatter sums and kernel sum of lane u: the model's
    arithmetic of one ``desne.embed`` iteration, restricted to the lane's points."""
    Y = np.asarray(Y, dtype=np.int64)
    C = len(Y)
    L, R, scatter, wsum = {}, {}, np.zeros((C, 2), dtype=np.int64), 0
    for i in range(u, n, U):
        d = Y[nbr[i, :kk]] - Y[i]
        d2 = (d[:, 0] * d[:, 0] + d[:, 1] * d[:, 1]) >> 16
        pw = (P[i, :kk] * recip1p(d2)) >> 16
        f = (pw[:, None] * d) >> 16
        L[i // U] = tuple(f.sum(0).tolist())
        np.subtract.at(scatter, nbr[i, :kk], f)
        h = np.array([fp.hash32((iter_base + i * S + s) & fp.MASK32) for s in range(S)])
        j = i + 1 + (((h & 0xFFFF) * (n - 1)) >> 16)
        j = np.where(j >= n, j - n, j)
        r = Y[i] - Y[j]
        r2 = (r[:, 0] * r[:, 0] + r[:, 1] * r[:, 1]) >> 16
        wr = recip1p(r2)
        R[i // U] = tuple((((wr * wr) >> 16)[:, None] * r >> 16).sum(0).tolist())
        wsum += int(wr.sum())
    return L, R, [tuple(v) for v in scatter.tolist()], wsum


@pytest.mark.parametrize("U, u, n, kk, hold_self, serial", [
    (1, 0, 12, 4, True, False), (2, 1, 11, 3, True, False), (4, 2, 16, 2, True, False),
    (1, 0, 12, 4, False, False), (2, 1, 11, 3, False, False), (1, 0, 12, 4, True, True),
    (2, 1, 11, 3, False, True)])
def test_pair_lane_forces_match_the_models_iteration(U, u, n, kk, hold_self, serial):
    """One pair phase of a lane: its sums equal the model's iteration, one pair per cycle
    (``serial``: one per ``SerialPairUnit.interval`` cycles), and the Y ports read exactly the
    formula's words — every pair its partner, the own point once per point (hold_self) or
    once per pair."""
    C, K, S = 16, 4, 3
    rng = np.random.default_rng(8 + u)
    Y = rng.integers(-(1 << 20), 1 << 20, size=(C, 2))
    Y[1] = [fp.Y_MIN, fp.Y_MAX]                    # largest differences
    Y[2] = Y[3]                                     # a zero distance
    nbr = rng.integers(0, n, size=(C, K))
    P = rng.integers(0, (1 << fp.P_FRAC_BITS) + 1, size=(C, K))
    iter_base = int(rng.integers(0, 1 << 32))
    lane = PairLane(unit=u, capacity=C, k=K, neg_samples=S, pair_units=U, hold_self=hold_self,
                    serial=serial)
    Q = lane.pair_unit.interval
    drain = SERIAL_PAIR_DRAIN if serial else PAIR_DRAIN
    harness = _LaneHarness(lane, [{"x": int(x), "y": int(y)} for x, y in Y],
                           [{"index": int(nbr[i, e]), "p": int(P[i, e])}
                            for i in range(C) for e in range(K)])
    L, R, scatter, wsum = _lane_expectation(Y, nbr, P, n, kk, S, U, u, iter_base)
    got = {}

    async def bench(ctx):
        for port, v in ((lane.n, n), (lane.kk, kk), (lane.nm1, n - 1), (lane.iter_base, iter_base)):
            ctx.set(port, v)
        await ctx.tick()                       # n is held from a cycle before start on
        ctx.set(lane.start, 1)
        ctx.set(lane.clear_wsum, 1)
        await ctx.tick()
        ctx.set(lane.start, 0)
        ctx.set(lane.clear_wsum, 0)
        cycles = 0
        reads = {"self": 0, "part": 0}

        def count_reads():
            reads["self"] += ctx.get(lane.y_self.en)
            reads["part"] += ctx.get(lane.y_part.en)

        while ctx.get(lane.act):
            cycles += 1
            assert cycles < 1000 * Q
            count_reads()
            await ctx.tick()
        pairs = -(-(n - u) // U) * (kk + S)
        assert cycles == Q * (pairs - 1) + 1                   # Q cycles apart, no other gap
        # the engine's drain: the divider starts PAIR_DRAIN cycles after act falls; the banks
        # are read for the update DIVIDE_MIN cycles later at the earliest (a saturated
        # division), so that is when this test reads them; the lane's last write comes before
        assert lane.write_latency <= drain + DIVIDE_MIN
        for _ in range(drain + DIVIDE_MIN):
            count_reads()
            await ctx.tick()
        points = -(-(n - u) // U)
        assert reads["part"] == points * (kk + S)
        assert reads["self"] == (points if hold_self else points * (kk + S))
        got["wsum"] = ctx.get(lane.wsum)
        got["scatter"], got["L"], got["R"] = [], {}, {}
        lat = lane.read_latency
        for r in range(C + lat - 1):                # one read per cycle, pipelined
            ctx.set(lane.update_addr, min(r, C - 1))
            await ctx.tick()
            a = r - (lat - 1)                       # the address read lat - 1 cycles ago
            if a < 0:
                continue
            fs = ctx.get(lane.fa_scatter)
            got["scatter"].append((fs["x"], fs["y"]))
            if a % U == u and a < n:
                fa, fr = ctx.get(lane.fa_own), ctx.get(lane.fr_own)
                got["L"][a // U] = (fa["x"], fa["y"])
                got["R"][a // U] = (fr["x"], fr["y"])

    _simulate(harness, bench)
    assert got["wsum"] == wsum
    assert got["L"] == L and got["R"] == R
    assert got["scatter"] == scatter


# ------------------------------------------------------------------------------------------------
# update datapath, initialisation, counters


def _update_model(fa, fr, y, v, *, exaggerate, shift, momentum, lr, gain):
    """One point of the model's update step (``desne.embed``), plain Python integers."""
    out_y, out_v = [], []
    for a in range(2):
        rep = (fr[a] * gain) >> 16
        att = fa[a] << shift if exaggerate else fa[a]
        F = (att >> 1) + rep
        nv = min(max(((momentum * v[a]) >> 8) + ((lr * F) >> 8), fp.Y_MIN), fp.Y_MAX)
        out_v.append(nv)
        out_y.append(min(max(y[a] + nv, fp.Y_MIN), fp.Y_MAX))
    return out_y, out_v


@pytest.mark.parametrize("unit", [UpdateDatapath, SerialUpdate], ids=["pipelined", "serial"])
def test_update_datapath_matches_the_models_update_step(unit):
    """Both update units against the model's step in plain integers, a point issued every
    ``unit.interval`` cycles, its result exactly ``unit.latency`` cycles after its stage 1."""
    C = 32
    dut = unit(capacity=C, k=8, neg_samples=5, pair_units=2)
    P = unit.interval
    geo = dut.geometry
    rng = random.Random(9)

    def rnd(width, big):
        return rng.randrange(-(1 << (width - 1)), 1 << (width - 1)) if big else \
            rng.randrange(-(1 << 20), 1 << 20)

    settings = [dict(exaggerate=1, shift=4, momentum=255, lr=4095, gain=fp.REP_GAIN_MAX),
                dict(exaggerate=0, shift=2, momentum=128, lr=1, gain=1 << 16),
                dict(exaggerate=1, shift=0, momentum=0, lr=200, gain=12345)]
    for setting in settings:
        points = []
        for p in range(C):
            big = p % 3 == 0          # some operands at the full width: F saturates at F_SAT
            points.append(dict(fa=(rnd(geo.fa_width, big), rnd(geo.fa_width, big)),
                               fr=(rnd(geo.fr_width, big), rnd(geo.fr_width, big)),
                               y=(rng.randrange(fp.Y_MIN, fp.Y_MAX + 1),) * 2,
                               v=(rng.randrange(fp.Y_MIN, fp.Y_MAX + 1), rnd(24, False))))
        got = []

        async def bench(ctx, setting=setting, points=points, got=got):
            ctx.set(dut.exaggerate, setting["exaggerate"])
            ctx.set(dut.shift, setting["shift"])
            ctx.set(dut.momentum, setting["momentum"])
            ctx.set(dut.learning_rate, setting["lr"])
            ctx.set(dut.gain, setting["gain"])
            stage1_cycle = {}
            for c in range(C * P + unit.latency + 3):
                ctx.set(dut.issue.valid, c < C * P and c % P == 0)
                ctx.set(dut.issue.payload, (c // P) % C)
                if ctx.get(dut.stage1.valid):        # the memories' data of stage 1's point
                    p = ctx.get(dut.stage1.payload)
                    stage1_cycle[p] = c
                    q = points[p]
                    ctx.set(dut.i, {"fa": {"x": q["fa"][0], "y": q["fa"][1]},
                                    "fr": {"x": q["fr"][0], "y": q["fr"][1]},
                                    "y": {"x": q["y"][0], "y": q["y"][1]},
                                    "v": {"x": q["v"][0], "y": q["v"][1]}})
                if ctx.get(dut.o.valid):
                    o = ctx.get(dut.o.payload)
                    assert c - stage1_cycle[o["point"]] == unit.latency
                    got.append((o["point"], (o["y"]["x"], o["y"]["y"]), (o["v"]["x"], o["v"]["y"])))
                await ctx.tick()

        _simulate(dut, bench)
        expected = []
        for p, q in enumerate(points):
            ny, nv = _update_model(q["fa"], q["fr"], q["y"], q["v"], exaggerate=setting["exaggerate"],
                                   shift=setting["shift"], momentum=setting["momentum"],
                                   lr=setting["lr"], gain=setting["gain"])
            expected.append((p, tuple(ny), tuple(nv)))
        assert got == expected, setting
    assert F_SAT < 1 << 40


class _InitHarness(Elaboratable):
    def __init__(self, C):
        self.init, self.hash = Initialiser(capacity=C), Hash32()
        self.ymem = Memory(shape=coord_layout(), depth=C, init=[])
        # stale velocities of a previous job: the initialisation must zero them
        self.vmem = Memory(shape=coord_layout(), depth=C, init=[{"x": -5, "y": 77}] * C)

    def elaborate(self, platform):
        m = Module()
        m.submodules.init, m.submodules.hash = self.init, self.hash
        m.submodules.ymem, m.submodules.vmem = self.ymem, self.vmem
        wiring.connect(m, self.init.hash_req, self.hash.i)
        wiring.connect(m, self.hash.o, self.init.hash_rsp)
        wiring.connect(m, self.init.y_w, self.ymem.write_port())
        wiring.connect(m, self.init.v_w, self.vmem.write_port())
        return m


@pytest.mark.parametrize("n, seed", [(2, 0), (13, 0xDEADBEEF), (32, 7)])
def test_initialiser_matches_init_embedding(n, seed):
    C = 32
    top = _InitHarness(C)
    dut = top.init
    got = {}

    async def bench(ctx):
        ctx.set(dut.n, n)
        ctx.set(dut.seed, seed)
        ctx.set(dut.run.start, 1)
        await ctx.tick()
        ctx.set(dut.run.start, 0)
        cycles, bases = 0, []
        while True:
            cycles += 1
            assert ctx.get(dut.busy) and cycles < 1000
            if ctx.get(dut.base1.valid):
                bases.append(ctx.get(dut.base1.payload))
            if ctx.get(dut.run.done):
                break
            await ctx.tick()
        await ctx.tick()
        got["cycles"], got["bases"] = cycles, bases
        got["Y"] = [ctx.get(top.ymem.data[i]) for i in range(n)]
        got["V"] = [ctx.get(top.vmem.data[i]) for i in range(n)]

    _simulate(top, bench)
    assert [(y["x"], y["y"]) for y in got["Y"]] == [tuple(r) for r in
                                                   desne.init_embedding(n, seed).tolist()]
    assert all(v == {"x": 0, "y": 0} for v in got["V"])
    assert got["bases"] == [desne._seed_bases(seed)[1]]
    # two seed hashes, then 2n pipelined coordinate hashes
    assert got["cycles"] == 2 * n + 2 * Hash32.latency + 2


def test_perf_counters():
    U = 3
    dut = PerfCounters(pair_units=U)
    rng = random.Random(10)
    exp = {"cycles": 0, "pair_cycles": 0, "pair_items": 0, "rep_cycles": 0, "rep_items": 0,
           "y_reads": 0}

    async def bench(ctx):
        ctx.set(dut.clear, 1)
        await ctx.tick()
        ctx.set(dut.clear, 0)
        for _ in range(300):
            busy, pairs = rng.random() < 0.9, rng.random() < 0.6
            issue = [rng.random() < 0.7 for _ in range(U)]
            rep = [a and rng.random() < 0.5 for a in issue]
            ctx.set(dut.busy, busy)
            ctx.set(dut.pairs, pairs)
            ctx.set(dut.issue, sum(b << k for k, b in enumerate(issue)))
            ctx.set(dut.rep_issue, sum(b << k for k, b in enumerate(rep)))
            y_read = rng.getrandbits(2 * U + 1)          # Y port enables: counted in any phase
            ctx.set(dut.y_read, y_read)
            exp["y_reads"] += bin(y_read).count("1")
            exp["cycles"] += busy
            if pairs:
                exp["pair_cycles"] += 1
                exp["pair_items"] += sum(issue)
                if any(rep):
                    exp["rep_cycles"] += 1
                    exp["rep_items"] += sum(rep)
            await ctx.tick()
        for port in (dut.busy, dut.pairs, dut.issue, dut.rep_issue, dut.y_read):
            ctx.set(port, 0)
        assert ctx.get(dut.perf.y_reads) == exp["y_reads"] - bin(y_read).count("1")
        await ctx.tick()                 # the event counters run a cycle behind their events
        perf = ctx.get(dut.perf)
        assert {name: perf[name] for name in exp} == exp
        ctx.set(dut.clear, 1)
        await ctx.tick()
        perf = ctx.get(dut.perf)
        assert [perf[name] for name in exp] == [0] * len(exp)

    _simulate(dut, bench)


# ------------------------------------------------------------------------------------------------
# controller


class _ControllerHarness(Elaboratable):
    def __init__(self, ctrl, C, K, Y):
        self.ctrl = ctrl
        self.knnmem = Memory(shape=ctrl.knn_layout, depth=C * K, init=[])
        self.ymem = Memory(shape=coord_layout(), depth=C, init=Y)

    def elaborate(self, platform):
        m = Module()
        m.submodules.ctrl, m.submodules.knnmem, m.submodules.ymem = (
            self.ctrl, self.knnmem, self.ymem)
        wiring.connect(m, self.ctrl.knn_w, self.knnmem.write_port())
        wiring.connect(m, self.ctrl.y_rd, self.ymem.read_port())
        return m


@pytest.mark.parametrize("P", [1, 2, 3], ids=["every_cycle", "interval2", "interval3"])
def test_controller_phase_sequence_and_timing(P):
    """The phases, their handshakes and cycle counts; the update issues ``P`` cycles apart
    (``update_interval``, a serial update) with the banks' read a cycle ahead of each."""
    C, K, S, DRAIN, DMIN, TAIL = 16, 4, 3, 9, 3, 8
    ctrl = EmbeddingController(capacity=C, k=K, neg_samples=S, pair_drain=DRAIN,
                               divide_min=DMIN, update_tail=TAIL, update_interval=P)
    rng = random.Random(11)
    Y = [{"x": rng.randrange(-1000, 1000), "y": rng.randrange(-1000, 1000)} for _ in range(C)]
    top = _ControllerHarness(ctrl, C, K, Y)
    n, kk, n_iter = 5, 3, 3
    cfg = {"n": n, "kk": kk, "n_iter": n_iter, "exaggeration_iters": 1, "exaggeration_shift": 2,
           "momentum_early": 11, "momentum_late": 22, "momentum_switch": 2,
           "learning_rate": 300, "seed": 42}
    lists = [{"index": rng.randrange(n), "p": rng.randrange(1 << 17)} for _ in range(n * kk)]
    base1 = 0xFFFF_FFFE

    async def wait_for(ctx, sig, limit=500):
        cycles = 0
        while not ctx.get(sig):
            cycles += 1
            assert cycles < limit, f"{sig} never came"
            await ctx.tick()
        return cycles

    async def bench(ctx):
        ctx.set(ctrl.config.payload, cfg)
        ctx.set(ctrl.config.valid, 1)
        assert ctx.get(ctrl.config.ready) and not ctx.get(ctrl.busy)
        assert not ctx.get(ctrl.sweep.valid)
        await ctx.tick()
        ctx.set(ctrl.config.valid, 0)
        assert ctx.get(ctrl.busy) and ctx.get(ctrl.n) == n and ctx.get(ctrl.nm1) == n - 1
        cycle = 0                                           # cycles since the config beat

        def check_sweep():
            # the job-start sweep: scatter entries 0 .. n-1, one per cycle from the config beat
            # on, so over before the final list beat can come (no beat is ever refused)
            assert ctx.get(ctrl.sweep.valid) == (cycle < n)
            if cycle < n:
                assert ctx.get(ctrl.sweep.payload) == cycle

        writes = []

        def record_write():
            if ctx.get(ctrl.knn_w.en):
                d = ctx.get(ctrl.knn_w.data)
                writes.append((ctx.get(ctrl.knn_w.addr), {"index": d["index"], "p": d["p"]},
                               cycle))

        handshakes = []
        for b, beat in enumerate(lists):                    # LOAD, with idle cycles
            while rng.random() < 0.3:
                ctx.set(ctrl.knn.valid, 0)
                check_sweep()
                record_write()
                await ctx.tick()
                cycle += 1
            check_sweep()
            ctx.set(ctrl.knn.valid, 1)
            ctx.set(ctrl.knn.payload, beat)
            assert ctx.get(ctrl.knn.ready)
            assert ctx.get(ctrl.init.start) == (b == len(lists) - 1)
            handshakes.append(cycle)
            record_write()
            await ctx.tick()
            cycle += 1
        ctx.set(ctrl.knn.valid, 0)
        record_write()
        # every beat written to knn[i * k + e] once, in the cycle after its handshake
        assert writes == [((b // kk) * K + b % kk, beat, c + 1)
                          for b, (beat, c) in enumerate(zip(lists, handshakes))]
        assert not ctx.get(ctrl.sweep.valid)
        assert not ctx.get(ctrl.knn.ready)
        for _ in range(4):                                  # the initialiser works
            await ctx.tick()
        ctx.set(ctrl.init_base1.valid, 1)
        ctx.set(ctrl.init_base1.payload, base1)
        await ctx.tick()
        ctx.set(ctrl.init_base1.valid, 0)
        ctx.set(ctrl.init.done, 1)
        assert not ctx.get(ctrl.start_pairs)
        await ctx.tick()            # START: the registered start pulse, a cycle after init.done
        ctx.set(ctrl.init.done, 0)
        for t in range(n_iter):
            assert ctx.get(ctrl.start_pairs) and ctx.get(ctrl.clear_wsum)
            assert ctx.get(ctrl.iter_base) == (base1 + t * n * S) & fp.MASK32
            await ctx.tick()
            ctx.set(ctrl.init.done, 0)
            active = rng.randint(1, 20)                     # the lanes issue
            ctx.set(ctrl.pairs_active, 1)
            for _ in range(active):
                assert ctx.get(ctrl.in_pairs) and not ctx.get(ctrl.div_start)
                assert not ctx.get(ctrl.start_pairs)        # a one-cycle pulse
                await ctx.tick()
            ctx.set(ctrl.pairs_active, 0)
            assert await wait_for(ctx, ctrl.div_start) == DRAIN    # drain, then the divider
            await ctx.tick()
            # the result comes after 1 (saturated) to 33 cycles and is held until taken, no
            # earlier than DMIN cycles after div_start
            ready_in = rng.choice([1, 2, DMIN, rng.randint(1, 33)])
            for c in range(1, max(ready_in, DMIN) + 1):
                ctx.set(ctrl.div_result.valid, c >= ready_in)
                ctx.set(ctrl.div_result.payload, 1000 + t)
                taken = ctx.get(ctrl.div_result.ready) and c >= ready_in
                assert taken == (c == max(ready_in, DMIN))
                # the banks' read of point 0, a cycle ahead of its issue, with the gain
                assert ctx.get(ctrl.update_read.valid) == taken
                if taken:
                    assert ctx.get(ctrl.update_read.payload) == 0
                await ctx.tick()
            ctx.set(ctrl.div_result.valid, 0)
            assert ctx.get(ctrl.gain) == 1000 + t
            for c in range(P * (n - 1) + 1):                # UPDATE: a point every P cycles
                i, issue = c // P, c % P == 0
                assert ctx.get(ctrl.in_update)
                assert ctx.get(ctrl.update_issue.valid) == issue
                assert ctx.get(ctrl.y_rd.en) == issue      # one Y read per update issue
                if issue:
                    assert ctx.get(ctrl.update_issue.payload) == i
                # the banks' address steps to point i + 1 in the cycle before its issue
                step = c % P == P - 1 and i < n - 1
                assert ctx.get(ctrl.update_read.valid) == step
                if step:
                    assert ctx.get(ctrl.update_read.payload) == i + 1
                # this iteration's constants, while the update uses them
                assert ctx.get(ctrl.exaggerate) == (t < 1)
                assert ctx.get(ctrl.momentum) == (11 if t < 2 else 22)
                await ctx.tick()
            assert not ctx.get(ctrl.update_issue.valid) and not ctx.get(ctrl.y_rd.en)
            assert not ctx.get(ctrl.update_read.valid)
            if t + 1 < n_iter:
                # the next pair phase starts TAIL cycles after the last update issue
                assert await wait_for(ctx, ctrl.start_pairs) == TAIL - 1
        # OUTPUT, with back-pressure
        beats, out_reads = [], 0
        for _ in range(200):
            ready = rng.random() < 0.5
            ctx.set(ctrl.coords.ready, ready)
            if ctx.get(ctrl.coords.valid) and ready:
                beats.append(ctx.get(ctrl.coords.payload))
            out_reads += ctx.get(ctrl.y_rd.en)
            await ctx.tick()
            if not ctx.get(ctrl.busy):
                break
        assert beats == Y[:n]
        assert out_reads == n                               # one Y read per coordinate
        assert ctx.get(ctrl.config.ready)

    _simulate(top, bench)


# ------------------------------------------------------------------------------------------------
# the whole engine: a reset in the middle of a job, then the next job


@pytest.mark.parametrize("pair_units", [1, 2])
def test_engine_reset_mid_job_then_next_job_is_bit_exact(pair_units):
    """Reset the engine in the middle of a pair phase (the scatter banks hold partial sums) and
    in the middle of an update (half of them cleared behind); the job after each reset, on the
    same lists (so it reads the very entries left dirty), must equal ``desne.embed`` bit for
    bit: the job-start sweep zeroes the banks. A clean job first and last shows the engine
    also works with no reset in between."""
    C, K, S = 16, 3, 2
    dut = EmbeddingEngine(capacity=C, k=K, neg_samples=S, pair_units=pair_units)
    rst = Signal()
    rng = np.random.default_rng(40 + pair_units)
    n, kk = 14, K
    nbr = rng.integers(0, n, size=(n, kk))
    P = rng.integers(0, (1 << fp.P_FRAC_BITS) + 1, size=(n, kk))
    cfg = desne.DesneConfig(k=K, perplexity=2.0, neg_samples=S, capacity=C, n_iter=4, exaggeration_iters=2,
                            exaggeration_shift=2, momentum_early=128, momentum_late=200,
                            momentum_switch=1, learning_rate=200)
    per_iter = n * (kk + S)
    # (pair items issued, then cycles to wait) before the reset: the second iteration's
    # attraction half done; its update in progress (drain + 1 + divide = 51 cycles after the
    # last pair, then n update cycles)
    cuts = [(per_iter + n * kk // 2, 0), (2 * per_iter, 51 + n // 2)]
    seeds = [7, 8, 9, 10]
    got = []

    def beat(seed):
        return {"n": n, "kk": kk, "n_iter": cfg.n_iter,
                "exaggeration_iters": cfg.exaggeration_iters,
                "exaggeration_shift": cfg.exaggeration_shift,
                "momentum_early": cfg.momentum_early, "momentum_late": cfg.momentum_late,
                "momentum_switch": cfg.momentum_switch, "learning_rate": cfg.learning_rate,
                "seed": seed}

    async def start(ctx, seed):
        ctx.set(dut.config.payload, beat(seed))
        ctx.set(dut.config.valid, 1)
        assert ctx.get(dut.config.ready), "the engine is not idle"
        await ctx.tick()
        ctx.set(dut.config.valid, 0)
        for j, p in zip(nbr.ravel().tolist(), P.ravel().tolist()):
            ctx.set(dut.knn.payload, {"index": j, "p": p})
            ctx.set(dut.knn.valid, 1)
            await ctx.tick()
            assert ctx.get(dut.busy)
        ctx.set(dut.knn.valid, 0)

    async def finish(ctx):
        coords, cycles = [], 0
        ctx.set(dut.coords.ready, 1)
        while len(coords) < n:
            cycles += 1
            assert cycles < 20_000, "the job never ended"
            if ctx.get(dut.coords.valid):
                c = ctx.get(dut.coords.payload)
                coords.append((c["x"], c["y"]))
            await ctx.tick()
        got.append(coords)

    async def bench(ctx):
        await start(ctx, seeds[0])
        await finish(ctx)
        for (items, wait), seed in zip(cuts, seeds[1:]):
            await start(ctx, 99)                         # the job to be cut short
            cycles = 0
            while ctx.get(dut.perf.pair_items) < items:
                cycles += 1
                assert cycles < 20_000, "the pair phase never got there"
                await ctx.tick()
            for _ in range(wait):
                await ctx.tick()
            assert ctx.get(dut.busy), "the job ended before the reset"
            ctx.set(rst, 1)
            await ctx.tick()
            ctx.set(rst, 0)
            assert not ctx.get(dut.busy)
            await start(ctx, seed)
            await finish(ctx)
        await start(ctx, seeds[-1])
        await finish(ctx)

    _simulate(dut, bench, reset=rst)
    want = [[tuple(int(v) for v in row) for row in desne.embed(nbr, P, cfg, seed)]
            for seed in seeds]
    assert got == want
