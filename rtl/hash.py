"""Pipelined 32-bit counter hash (``fixedpoint.hash32``, "lowbias32") for the embedding engine.

The hash drives the deterministic initial coordinates and the negative-sample partners, so the
RTL must equal :func:`nms.rtl.fixedpoint.hash32` bit for bit. Its two 32x32 multiplies keep only
the low half, which splits into three 16x16 partial products (one DSP-sized multiplier each):
``a * c mod 2**32 = a_lo*c_lo + ((a_hi*c_lo + a_lo*c_hi) mod 2**16) << 16``. Each multiply takes
two pipeline stages (partial products, then their sum), so the unit accepts one value per cycle.
"""

from __future__ import annotations

from amaranth import Module, Signal, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from nms.rtl import fixedpoint as fp

__all__ = ["Hash32"]


def _low_mul_stage(m, x, const, name):
    """Two registered stages computing ``(x * const) mod 2**32``; returns the product signal."""
    c_lo, c_hi = const & 0xFFFF, const >> 16
    lo_lo = Signal(32, name=f"{name}_lolo")
    cross = Signal(16, name=f"{name}_cross")
    m.d.sync += [
        lo_lo.eq(x[:16] * c_lo),
        # only the low 16 bits of the cross terms reach the low half of the product
        cross.eq(x[16:] * c_lo + x[:16] * c_hi),
    ]
    prod = Signal(32, name=f"{name}_prod")
    m.d.sync += prod.eq(lo_lo + (cross << 16))
    return prod


class Hash32(wiring.Component):
    """``fixedpoint.hash32`` as a 5-stage pipeline, one input per cycle, never stalls.

    Attributes
    ----------
    i : In(stream.Signature(unsigned(32), always_ready=True))
        Value to hash; ``i.valid`` marks a real input (the unit is always ready).
    o : Out(stream.Signature(unsigned(32), always_ready=True))
        ``hash32(i.payload)``, exactly :attr:`latency` cycles after the input; ``o.valid``
        follows ``i.valid`` with the same delay. The consumer must always accept.
    latency : int
        Cycles from input to output (5).
    """

    latency = 5

    def __init__(self):
        super().__init__({
            "i": In(stream.Signature(unsigned(32), always_ready=True)),
            "o": Out(stream.Signature(unsigned(32), always_ready=True)),
        })

    def elaborate(self, platform):
        m = Module()
        x = self.i.payload
        x0 = Signal(32)
        m.d.comb += x0.eq(x ^ (x >> 16))
        p1 = _low_mul_stage(m, x0, fp.HASH_MUL1, "mul1")          # stages 1-2
        x1 = Signal(32)
        m.d.comb += x1.eq(p1 ^ (p1 >> 15))
        p2 = _low_mul_stage(m, x1, fp.HASH_MUL2, "mul2")          # stages 3-4
        m.d.sync += self.o.payload.eq(p2 ^ (p2 >> 16))            # stage 5
        valid = self.i.valid
        for n in range(self.latency):
            v = Signal(name=f"valid_{n + 1}")
            m.d.sync += v.eq(valid)
            valid = v
        m.d.comb += self.o.valid.eq(valid)
        return m
