"""Pipelined 32-bit counter hash (``fixedpoint.hash32``, "lowbias32") for the embedding engine.

The hash drives the deterministic initial coordinates and the negative-sample partners, so the
RTL must equal :func:`nms.rtl.fixedpoint.hash32` bit for bit. Its two 32x32 multiplies keep only
the low half, which splits into three 16x16 partial products (one DSP-sized multiplier each):
``a * c mod 2**32 = a_lo*c_lo + ((a_hi*c_lo + a_lo*c_hi) mod 2**16) << 16``. The five stages:
the input's xor-shift; the first partial products (registered straight behind the multipliers);
their sum and the xor-shift; the second partial products; their sum and the final xor-shift. One
value per cycle.
"""

from __future__ import annotations

from amaranth import Module, Signal, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from nms.rtl import fixedpoint as fp

__all__ = ["Hash32"]


def _low_mul_products(m, x, const, name):
    """One registered stage of the three 16 x 16 partial products of ``(x * const) mod 2**32``
    (straight from the multipliers into registers); returns ``(lo_lo, cross_a, cross_b)``."""
    c_lo, c_hi = const & 0xFFFF, const >> 16
    lo_lo = Signal(32, name=f"{name}_lolo")
    # only the low 16 bits of the cross terms reach the low half of the product
    cross_a = Signal(16, name=f"{name}_cross_a")
    cross_b = Signal(16, name=f"{name}_cross_b")
    m.d.sync += [lo_lo.eq(x[:16] * c_lo), cross_a.eq(x[16:] * c_lo), cross_b.eq(x[:16] * c_hi)]
    return lo_lo, cross_a, cross_b


def _low_mul_sum(parts):
    """``(x * const) mod 2**32`` from :func:`_low_mul_products` (a value, not registered)."""
    lo_lo, cross_a, cross_b = parts
    return (lo_lo + ((cross_a + cross_b) << 16))[:32]


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
        # every multiplier has registers on both sides: the xor-shifts sit before the
        # registers that feed the multipliers, the partial-product sums after their outputs
        x0 = Signal(32)
        m.d.sync += x0.eq(x ^ (x >> 16))                           # stage 1
        parts1 = _low_mul_products(m, x0, fp.HASH_MUL1, "mul1")   # stage 2
        p1 = _low_mul_sum(parts1)
        x1 = Signal(32)
        m.d.sync += x1.eq(p1 ^ (p1 >> 15))                         # stage 3
        parts2 = _low_mul_products(m, x1, fp.HASH_MUL2, "mul2")   # stage 4
        p2 = _low_mul_sum(parts2)
        m.d.sync += self.o.payload.eq(p2 ^ (p2 >> 16))            # stage 5
        valid = self.i.valid
        for n in range(self.latency):
            v = Signal(name=f"valid_{n + 1}")
            m.d.sync += v.eq(valid)
            valid = v
        m.d.comb += self.o.valid.eq(valid)
        return m
