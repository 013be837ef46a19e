"""The block-RAM building blocks of ``nms.rtl.bram`` against a Python list (Amaranth simulator):
every read returns the word written last before it, at the documented latency."""

from __future__ import annotations

import random

import pytest
from amaranth import Module, unsigned
from amaranth.sim import Simulator

from nms.rtl.bram import (BANKED_LATENCY, bank_depth, banked_block_ram, block_ram,
                          slice_bounds, sliced_block_ram)


def test_bank_depth_takes_the_fewest_rams():
    # 16384 x 27: 2048 x 9 banks (24 RAMs) beat 16384 x 1 slices (27) and 1024 x 18 (32)
    assert bank_depth(unsigned(27), 16384) == 2048
    assert bank_depth(unsigned(10), 16384) == 16384
    assert bank_depth(unsigned(17), 1024) == 1024
    assert bank_depth(unsigned(8), 100) == 100
    assert slice_bounds(unsigned(27), 16384) == [(lo, lo + 1) for lo in range(27)]


@pytest.mark.parametrize("kind, width, depth", [
    ("banked", 27, 8192),     # 4 banks of 2048 x 27
    ("banked", 12, 1536),     # 2 banks of 1024 (the last one partly used)
    ("sliced", 11, 4096),     # 4096 x 4 slices
    ("plain", 9, 300),
])
def test_read_returns_the_last_write(kind, width, depth):
    m = Module()
    shape = unsigned(width)
    if kind == "banked":
        rd, wr = banked_block_ram(m, "mem", shape, depth)
        latency = BANKED_LATENCY
    elif kind == "sliced":
        rd, wr = sliced_block_ram(m, "mem", shape, depth)
        latency = 1
    else:
        _, rd, wr = block_ram(m, "mem", shape, depth)
        latency = 1
    rng = random.Random(f"{kind}{width}{depth}")
    model = [0] * depth
    steps = []
    for _ in range(600):
        w = rng.random() < 0.5
        steps.append((rng.randrange(depth), w, rng.randrange(1 << width),
                      rng.randrange(depth)))

    async def bench(ctx):
        expected = []          # (cycle due, word)
        for cycle, (wa, w, wd, ra) in enumerate(steps):
            ctx.set(wr.addr, wa)
            ctx.set(wr.en, w)
            ctx.set(wr.data, wd)
            ctx.set(rd.addr, ra)
            # a read in the cycle of a write to the same address is never used (no_rw_check):
            # expect nothing of it
            expected.append((cycle + latency, None if (w and wa == ra) else model[ra]))
            await ctx.tick()
            if w:
                model[wa] = wd
            due = [x for c, x in expected if c == cycle + 1]
            if due and due[0] is not None:
                assert ctx.get(rd.data) == due[0], (kind, cycle)

    sim = Simulator(m)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
