"""Fixed-point formats and lookup tables of the DE-SNE datapath — defined once.

The bit-exact model (``nms.verif.models.desne``) and the Amaranth RTL both import this module, so a
format or a table can never differ between them. Pure Python + NumPy (no Amaranth import): it is
usable without any hardware tool. ``docs/algorithm.md`` explains every constant.

Notation: ``Qa.b`` is a two's-complement or unsigned integer whose real value is ``int / 2**b``.
"""

from __future__ import annotations

import math

import numpy as np

# --- affinity stage: precision code, scaled distances, exp2 / log2 units --------------------------

#: bits of the per-row precision code c; beta' = 2**(c / BETA_STEPS_PER_OCTAVE - BETA_EXP_OFFSET)
BETA_CODE_BITS = 10
BETA_CODES = 1 << BETA_CODE_BITS
#: resolution of the precision code: 32 steps per octave (each step x 2**(1/32) = +2.2 %)
BETA_STEPS_PER_OCTAVE = 32
BETA_FRAC_BITS = 5  # log2(BETA_STEPS_PER_OCTAVE)
#: smallest beta' is 2**-30: covers squared-distance gaps up to ~2**30 (784-D uint8 is < 2**26)
BETA_EXP_OFFSET = 30
#: mantissa of 2**(f/32), f = 0..31, unsigned Q1.15 (BETA_MANT[0] = 32768 = 1.0)
BETA_MANT = tuple(int(round(2 ** 15 * 2 ** (f / BETA_STEPS_PER_OCTAVE))) for f in range(BETA_STEPS_PER_OCTAVE))
BETA_MANT_BITS = 16

#: precision-search schedules (shared by the model and the affinity unit). Robust search: coarse
#: scan every 64 codes (2 octaves) from code 32, then refine around the best with halving steps.
ROBUST_COARSE_STEP = 64
ROBUST_REFINE_STEPS = (32, 16, 8, 4, 2, 1)
#: NMS-style bisection from the middle code
BISECT_STEPS = (256, 128, 64, 32, 16, 8, 4, 2, 1)

#: exponent argument a = beta' * delta, unsigned Q5.8, saturated to A_MAX (a < 32)
A_FRAC_BITS = 8
A_BITS = 13
A_MAX = (1 << A_BITS) - 1


def a_shift(code):
    """Right shift that turns delta * BETA_MANT[c & 7] into the Q.8 exponent argument a.

    a_real = delta * 2**(c/32 - 30)  =>  a_q8 = (delta * mant) >> (15 + 30 - 8 - (c >> 5)).
    Always >= 6 for 10-bit codes, so it is a plain right shift (truncation toward -inf).
    """
    return 15 + BETA_EXP_OFFSET - A_FRAC_BITS - (code >> BETA_FRAC_BITS)


#: 2**(-f/256) for f = 0..255, unsigned Q1.16 (EXP2_LUT[0] = 65536 = 1.0; 17 bits)
EXP2_LUT_BITS = 8
EXP2_LUT = tuple(int(round(2 ** 16 * 2 ** (-f / 256))) for f in range(256))
#: affinity weights w = 2**-a in Q1.16 (w = 65536 for the nearest neighbour)
W_FRAC_BITS = 16
W_BITS = 17

#: log2(1 + m/256) for m = 0..255, unsigned Q0.16
LOG2_LUT_BITS = 8
LOG2_LUT = tuple(int(round(2 ** 16 * math.log2(1 + m / 256))) for m in range(256))
#: entropy H (bits) and its target log2(perplexity): unsigned Q8.16
H_FRAC_BITS = 16
H_BITS = 8 + H_FRAC_BITS
#: conditional affinities p_{j|i}: unsigned Q1.16 (sum over a row <= 1.0)
P_FRAC_BITS = 16
P_BITS = 17


def entropy_target(perplexity: float) -> int:
    """Target entropy log2(perplexity) in Q8.16 (rounded half up)."""
    return int(math.floor(math.log2(perplexity) * (1 << H_FRAC_BITS) + 0.5))


# --- embedding stage ---------------------------------------------------------------------------

#: embedding coordinates and velocities: signed Q8.16 in 32-bit registers, saturated to +-128.0
Y_FRAC_BITS = 16
Y_LIMIT = (1 << 23) - 1  # |y| <= Y_LIMIT  (values in [-(2**23), 2**23 - 1])
Y_MIN, Y_MAX = -(1 << 23), (1 << 23) - 1
#: initial coordinates: uniform in [-2048, 2047] / 65536 = +-0.031 (hash >> INIT_SHIFT)
INIT_SHIFT = 4

#: Student-t kernel w = 1 / (1 + d2) in Q1.16, via a 256-entry reciprocal table of the mantissa:
#: RECIP_LUT[i] = round(2**16 * 256 / (256 + i)), i = 0..255 (RECIP_LUT[0] = 65536; 17 bits)
RECIP_LUT_BITS = 8
RECIP_LUT = tuple(int(round(2 ** 16 * 256 / (256 + i))) for i in range(256))
#: momentum and learning rate are unsigned Q0.8 / Q4.8 multipliers
MOMENTUM_FRAC_BITS = 8
LR_FRAC_BITS = 8
#: repulsion normaliser g = N * 2**32 // sum(w) is saturated to this (Q16.16)
REP_GAIN_MAX = (1 << 32) - 1

# --- counter-based hash (initialisation and negative sampling) -----------------------------------

MASK32 = 0xFFFF_FFFF
HASH_MUL1 = 0x7FEB352D
HASH_MUL2 = 0x846CA68B


def hash32(x):
    """32-bit integer hash ("lowbias32"): two multiplies, three xor-shifts.

    Works on Python ints and on NumPy uint64 arrays alike (products are reduced mod 2**32).
    """
    if isinstance(x, np.ndarray):
        x = x.astype(np.uint64) & np.uint64(MASK32)
        x ^= x >> np.uint64(16)
        x = (x * np.uint64(HASH_MUL1)) & np.uint64(MASK32)
        x ^= x >> np.uint64(15)
        x = (x * np.uint64(HASH_MUL2)) & np.uint64(MASK32)
        x ^= x >> np.uint64(16)
        return x
    x &= MASK32
    x ^= x >> 16
    x = (x * HASH_MUL1) & MASK32
    x ^= x >> 15
    x = (x * HASH_MUL2) & MASK32
    x ^= x >> 16
    return x


# --- grid sampler ------------------------------------------------------------------------------

#: the sampling grid has 2**g x 2**g cells, g in [0, GRID_BITS_MAX]
GRID_BITS_MAX = 6
