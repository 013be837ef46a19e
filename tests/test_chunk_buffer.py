"""The chunk buffer (``nms.rtl.memport.ChunkBuffer``) in the Amaranth simulator against a
command-level model written from its documented contract: one bank and several banks
(``banks``, ``docs/energy.md`` §6.7) serve the same beats in the same order, for queries,
beat-interleaved candidate groups (a partial last group too) and padding, under random command
gaps and output back-pressure; the bank geometry shared with the energy model."""

from __future__ import annotations

import random

import pytest
from amaranth.sim import Simulator

from nms.rtl.memport import DEST_CANDIDATE, DEST_QUERY, ChunkBuffer
from nms.rtl.params import bank_geometry
from nms.sw import dataflow as dfl
from nms.verif.sim.streams import pack, unpack


def _model(words, vec_beats, cmds, P):
    """Expected beats: {data, dest, last[, slot, group_end]} per command."""
    out = []
    for first, count, dest, pad in cmds:
        group = P if dest == DEST_CANDIDATE and not pad else 1
        beats = []
        for g0 in range(0, count, group):
            g = min(group, count - g0)
            for beat in range(vec_beats):
                for slot in range(g):
                    v = first + g0 + slot
                    data = [0] * len(words[0]) if pad else words[v * vec_beats + beat]
                    b = {"data": data, "dest": dest, "last": 0}
                    if P > 1:
                        b.update(slot=slot, group_end=int(slot == g - 1))
                    beats.append(b)
        beats[-1]["last"] = 1
        out += beats
    return out


async def _new_job(ctx, buf, vec_beats, fill_words):
    """The job's constants, then one cycle of ``clear``."""
    ctx.set(buf.vec_beats, vec_beats)
    ctx.set(buf.fill_words, fill_words)
    ctx.set(buf.clear, 1)
    await ctx.tick()
    ctx.set(buf.clear, 0)


def _run(buf: ChunkBuffer, words, vec_beats, cmds, *, seed, p_ready=0.6, p_cmd=0.5):
    rng = random.Random(seed)
    got, expected = [], _model(words, vec_beats, cmds, buf.cand_tile)

    async def bench(ctx):
        await _new_job(ctx, buf, vec_beats, len(words))
        ci, wi = 0, 0
        enabled = 0
        for _ in range(20_000):
            # fill interleaved with the first commands (their beats wait for the fill)
            if wi < len(words):
                ctx.set(buf.fill.valid, 1)
                ctx.set(buf.fill.payload.as_value(), pack(buf.word_layout, {"data": words[wi]}))
                wi += 1
            else:
                ctx.set(buf.fill.valid, 0)
            on = ci < len(cmds) and rng.random() < p_cmd
            if on:
                first, count, dest, pad = cmds[ci]
                ctx.set(buf.cmd.payload.as_value(), pack(buf.cmd_layout, {
                    "first": first, "count": count, "dest": dest, "pad": pad}))
            ctx.set(buf.cmd.valid, on)
            ctx.set(buf.beats.ready, rng.random() < p_ready)
            if on and ctx.get(buf.cmd.ready):
                ci += 1
            if ctx.get(buf.beats.valid) and ctx.get(buf.beats.ready):
                got.append(unpack(buf.beat_layout, ctx.get(buf.beats.payload.as_value())))
            en = ctx.get(buf.bank_reads)            # with this cycle's inputs
            if buf.banks_used > 1:
                # an access touches one bank, and only for a word served to the engine
                assert en & (en - 1) == 0
                enabled += bool(en)
            await ctx.tick()
            if len(got) == len(expected) and ci == len(cmds):
                break
        ctx.set(buf.beats.ready, 1)
        for _ in range(8):                      # nothing more comes out
            await ctx.tick()
            assert not ctx.get(buf.beats.valid)
            if buf.banks_used > 1:
                assert not ctx.get(buf.bank_reads)
        reads = ctx.get(buf.read_beats)
        assert reads == sum(count * vec_beats for _, count, _, pad in cmds if not pad)
        if buf.banks_used > 1:
            assert enabled == reads             # the priced bits: counted words x word width
        assert ctx.get(buf.write_beats) == len(words)

    sim = Simulator(buf)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return got, expected


@pytest.mark.parametrize("banks, P", [(1, 1), (4, 1), (8, 3), (3, 4), (64, 2)])
def test_banked_buffer_serves_the_model_beats(banks, P):
    rng = random.Random(banks * 10 + P)
    L, vec_beats, n = 4, 3, 21
    depth = 70                                        # > n * vec_beats: the last bank partly used
    words = [[rng.randrange(256) for _ in range(L)] for _ in range(n * vec_beats)]
    buf = ChunkBuffer(lanes=L, elem_width=8, depth=depth, beats_max=8, index_width=5,
                      count_width=6, cand_tile=P, banks=banks)
    bw, used = bank_geometry(depth, banks)
    assert (buf.bank_words, buf.banks_used) == (bw, used) and used <= banks
    cmds = [(0, 4, DEST_QUERY, 0), (0, n, DEST_CANDIDATE, 0), (17, 4, DEST_CANDIDATE, 0),
            (0, 2, DEST_QUERY, 1), (5, 7, DEST_CANDIDATE, 0), (20, 1, DEST_QUERY, 0)]
    got, expected = _run(buf, words, vec_beats, cmds, seed=banks + P)
    assert got == expected


def test_bank_geometry_is_the_energy_models():
    assert bank_geometry(7168, 8) == (1024, 7)       # the device: C = 1024 x 7 words, 8 KB banks
    assert bank_geometry(7168, 1) == (8192, 1)
    assert bank_geometry(100, 3) == (64, 2)
    flow = dfl.CHOSEN.replace(max_dim=784)
    depth, bw, used = flow.buffer_banks_geometry()
    assert (depth, bw, used) == (7168, *bank_geometry(7168, flow.buffer_banks))
    plan = dfl.memory_plan(flow)["memories"]
    banks = [m for name, m in plan.items() if name.startswith("chunk_buffer")]
    assert sum(m["depth"] for m in banks) == depth and len(banks) == used
    # an access is priced at the bank it touches
    c = dfl.chunk_counts(n=100, dim=784, budget=10, flow=flow, n_iter=2)
    assert c["sram"]["chunk_buffer"]["size_bytes"] == min(bw, depth) * flow.lanes


@pytest.mark.parametrize("kwargs, match", [({"banks": 0}, "banks=0 is out of range"),
                                           ({"banks": 65}, "banks=65 is out of range"),
                                           ({"banks": 2.0}, "banks must be an int")])
def test_bad_bank_counts_are_named(kwargs, match):
    with pytest.raises((TypeError, ValueError), match=match):
        ChunkBuffer(**kwargs)


@pytest.mark.parametrize("banks, P", [(1, 1), (4, 3)])
def test_read_side_serves_a_beat_every_cycle(banks, P):
    """With the output always ready the beats of a command come one per cycle, the first five
    cycles after an idle buffer takes the command (holding register, its first-word product,
    start, read stage, output FIFO), and the next command — taken while the first runs — has
    its first beat one idle cycle after the previous command's last."""
    L, vec_beats, n = 4, 3, 10
    words = [[(7 * w + lane) % 256 for lane in range(L)] for w in range(n * vec_beats)]
    buf = ChunkBuffer(lanes=L, elem_width=8, depth=40, beats_max=8, index_width=4,
                      count_width=5, cand_tile=P, banks=banks)
    cmds = [(0, n, DEST_CANDIDATE, 0), (2, 3, DEST_QUERY, 0)]
    beat_cycles, taken = [], []

    async def bench(ctx):
        await _new_job(ctx, buf, vec_beats, len(words))
        for w in words:
            ctx.set(buf.fill.valid, 1)
            ctx.set(buf.fill.payload.as_value(), pack(buf.word_layout, {"data": w}))
            await ctx.tick()
        ctx.set(buf.fill.valid, 0)
        ctx.set(buf.beats.ready, 1)
        ci = 0
        for cycle in range(200):
            if ci < len(cmds):
                first, count, dest, pad = cmds[ci]
                ctx.set(buf.cmd.payload.as_value(), pack(buf.cmd_layout, {
                    "first": first, "count": count, "dest": dest, "pad": pad}))
            ctx.set(buf.cmd.valid, ci < len(cmds))
            if ci < len(cmds) and ctx.get(buf.cmd.ready):
                taken.append(cycle)
                ci += 1
            if ctx.get(buf.beats.valid):
                beat_cycles.append(cycle)
            await ctx.tick()

    sim = Simulator(buf)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    first_len = n * vec_beats
    assert len(beat_cycles) == first_len + 3 * vec_beats
    assert beat_cycles[0] == taken[0] + 5
    assert taken[1] < beat_cycles[0]                 # held while the first command runs
    assert beat_cycles[first_len - 1] - beat_cycles[0] == first_len - 1      # no bubble
    # one idle cycle on the output between commands
    assert beat_cycles[first_len] == beat_cycles[first_len - 1] + 2
    assert beat_cycles[-1] - beat_cycles[first_len] == 3 * vec_beats - 1
