"""The project's sequential dividers (rtl/divider.py), in the Amaranth simulator.

The grid sampler and the embedding engine's gain divider use :class:`Divider`, the affinity unit
:class:`Radix4Divider`, so their exactness, constant latency and saturation are tested here once.
"""

import random

import pytest
from amaranth.sim import Simulator

from nms.rtl.divider import Divider, Radix4Divider


def _divide_all(dut, cases):
    """Feed (n, d) pairs one at a time; return (quotient, remainder, cycles to the result); the
    remainder is None for a divider without one (:class:`Radix4Divider`)."""
    got = []

    async def bench(ctx):
        for n, d in cases:
            ctx.set(dut.operands.payload.n, n)
            ctx.set(dut.operands.payload.d, d)
            ctx.set(dut.operands.valid, 1)
            await ctx.tick().until(dut.operands.ready)
            ctx.set(dut.operands.valid, 0)
            ctx.set(dut.quotient.ready, 1)
            cycles = 0
            while not ctx.get(dut.quotient.valid):
                await ctx.tick()
                cycles += 1
            rem = ctx.get(dut.remainder) if hasattr(dut, "remainder") else None
            got.append((ctx.get(dut.quotient.payload), rem, cycles))
            await ctx.tick()
            ctx.set(dut.quotient.ready, 0)

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    return got


@pytest.mark.parametrize("bits_per_cycle", [1, 2, 3])
def test_divider_is_exact_at_the_quotient_bound(bits_per_cycle):
    dut = Divider(dividend_width=20, divisor_width=9, quotient_width=11, bits_per_cycle=bits_per_cycle)
    rng = random.Random(bits_per_cycle)
    cases = [(0, 1), (1, 1), ((1 << 11) - 1, 1), (511 * 2048 - 1, 511), (5, 7)]
    while len(cases) < 40:
        d = rng.randrange(1, 512)
        cases.append((rng.randrange(0, d << 11), d))
    got = _divide_all(dut, cases)
    assert [(q, r) for q, r, _ in got] == [divmod(n, d) for n, d in cases]
    assert {c for *_, c in got} == {dut.cycles}  # constant: cycles after the accepting edge


@pytest.mark.parametrize("bits_per_cycle", [1, 2])
def test_saturating_divider(bits_per_cycle):
    dut = Divider(dividend_width=12, divisor_width=6, quotient_width=5,
                  bits_per_cycle=bits_per_cycle, saturate=True)
    rng = random.Random(bits_per_cycle)
    cases = [(0, 0), (5, 0), (0, 1), (31, 1), (32, 1), (63 * 32 - 1, 63), (63 * 32, 63)]
    cases += [(rng.randrange(1 << 12), rng.randrange(1 << 6)) for _ in range(40)]
    got = [(q, c) for q, _, c in _divide_all(dut, cases)]
    # out of range (including d = 0): all ones one cycle after the operands are taken
    want = [(31, 0) if n >= d << 5 else (n // d, dut.cycles) for n, d in cases]
    assert got == want


@pytest.mark.parametrize("nw, dw, qw", [(41, 21, 21), (33, 21, 17), (30, 9, 20), (9, 4, 3)])
def test_radix4_divider_exact_quotients_and_latency(nw, dw, qw):
    """Parallel d / 2d / 3d compares; an odd quotient's top bit decided at the hand-off, so
    ``quotient_width // 2`` cycles (the affinity unit's entropy and normalisation widths)."""
    dut = Radix4Divider(dividend_width=nw, divisor_width=dw, quotient_width=qw)
    assert dut.cycles == qw // 2 and dut.latency == dut.cycles + 1
    rng = random.Random(qw)
    dmax = (1 << dw) - 1
    cases = [(min((dmax << qw) - 1, (1 << nw) - 1), dmax), ((1 << qw) - 1, 1), (0, 1)]
    for _ in range(150):
        d = rng.randrange(1, 1 << dw)
        cases.append((rng.randrange(0, min(d << qw, 1 << nw)), d))
    got = _divide_all(dut, cases)
    assert [(q, c) for q, _, c in got] == [(n // d, dut.cycles) for n, d in cases]


def test_divider_rejects_bad_parameters():
    with pytest.raises(ValueError, match="bits_per_cycle=5 is out of range"):
        Divider(dividend_width=8, divisor_width=8, quotient_width=8, bits_per_cycle=5)
    with pytest.raises(ValueError, match="quotient_width=0 is out of range"):
        Divider(dividend_width=8, divisor_width=8, quotient_width=0)
    with pytest.raises(ValueError, match="quotient_width=1 is out of range"):
        Radix4Divider(dividend_width=8, divisor_width=8, quotient_width=1)
