"""DE-SNE embedding engine: 2-D Student-t gradient iterations on chip, bit-exact with
:func:`nms.verif.models.desne.embed`.

See ``docs/rtl-embedding.md`` for the protocol, phases, memory map and cycle formula.

Structure (one component per concern; each has its own simulator test in
``tests/test_embedding_units.py``):

* :class:`EmbeddingController` — configuration latch, list loading, the phase sequence
  (init, pairs, divide, update per iteration, output) and the drain counters;
* :class:`Initialiser` — the seed hashes and the initial coordinates;
* :class:`PairLane` (one per pair unit) — :class:`PairSequencer` (issue order),
  front end with :class:`PartnerIndex` (negative-sample partner), :class:`PairUnit` (difference,
  squared distance, kernel, force term), :class:`PointAccumulator` (per-point sums, kernel sum)
  and :class:`ScatterBank` (the opposite attraction ``F[j] -= f``);
* :class:`~nms.rtl.hash.Hash32` — counter hash (one per lane; lane 0's is shared with the
  initialisation) and :class:`~nms.rtl.recip.Recip1p` — ``1 / (1 + d2)``;
* :class:`GainDivider` — the once-per-iteration repulsion normaliser ``(N << 32) // Wsum``;
* :class:`UpdateDatapath` — the velocity / position update, one point per cycle;
* :class:`PerfCounters` — the ``perf`` port;
* :class:`EmbeddingEngine` — the Y, V and list memories, the lanes' read ports, the gather of
  the lanes' banks for the update, and the wiring.

Why the accumulation is organised as it is: the model's sums are exact integers that never
saturate before the final clip, so their order is free. Each lane owns the points
``i = u, u + U, ...`` and sums their out-edge forces / sampled repulsions in a register (written
once per point), while the equal-and-opposite attraction on the neighbour ``j`` is scattered by a
read-modify-write into a per-lane bank (pipelined: read, register, subtract, write, with the
results of the three beats in flight forwarded to a beat of the same ``j``). The update phase
adds the banks. Every block RAM's read data go into a register before any logic, and no memory
needs read-during-write logic (:func:`nms.rtl.bram.block_ram`).
"""

from __future__ import annotations

from amaranth import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import ReadPort, WritePort
from amaranth.lib.wiring import In, Out
from amaranth.utils import bits_for, ceil_log2

from nms.rtl import fixedpoint as fp
from nms.rtl.bram import block_ram, sliced_block_ram
from nms.rtl.divider import Divider
from nms.rtl.hash import Hash32
from nms.rtl.params import check_int
from nms.rtl.recip import Recip1p

__all__ = ["PairUnit", "GainDivider", "PairSequencer", "PartnerIndex", "PointAccumulator",
           "ScatterBank", "PairLane", "UpdateDatapath", "Initialiser", "PerfCounters",
           "EmbeddingController", "EmbeddingEngine", "ITER_BITS", "iteration_cycles",
           "PAIR_DRAIN", "DIVIDE_MIN", "UPDATE_TAIL",
           "SerialUpdate", "SERIAL_UPDATE_LATENCY", "SERIAL_UPDATE_TAIL", "update_timing",
           "SerialPairUnit", "SERIAL_PAIR_DRAIN", "pair_timing"]

#: coordinate / velocity storage width: Q8.16 saturated to [-2**23, 2**23 - 1]
Y_WIDTH = 24
#: coordinate difference width (|d| <= 2**24 - 1)
D_WIDTH = Y_WIDTH + 1
#: one pair's force term: |(m * d) >> 16| <= 2**24 with m <= 65536 (plus sign and floor)
F_WIDTH = D_WIDTH + 1
#: squared distance (Q.16): (2 * (2**24 - 1)**2) >> 16 < 2**33
D2_WIDTH = 33
#: runtime iteration counters (n_iter, exaggeration_iters, momentum_switch): the one place
#: their width is set
from nms.rtl.regmap import ITER_BITS  # noqa: E402  (declared with the ITER fields)
#: |F| is saturated here before the learning-rate multiply; any lr >= 1 then still drives the
#: velocity past the clip bound in the same direction, so the clipped result is unchanged
F_SAT = 1 << 34
GAIN_BITS = 32
#: multiplier operands wider than an 18 x 18 block multiplier are split at this bit (the low
#: part 17 bits unsigned); every partial product goes straight into a register
_DSP_LOW = 17


def _delay(m, sig, n, name):
    """``sig`` delayed by ``n`` clock cycles; returns the list of taps (tap[0] = sig)."""
    taps = [sig]
    for s in range(n):
        r = Signal(sig.shape(), name=f"{name}_d{s + 1}")
        m.d.sync += r.eq(taps[-1])
        taps.append(r)
    return taps


def _check_bool(name, value):
    """``value`` if it is a bool (a generator switch), else ``TypeError`` naming it."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, not {value!r}")
    return value


def _clip(value, lo, hi):
    return Mux(value < lo, lo, Mux(value > hi, hi, value))


def _saturate(value, bits):
    """``value`` clipped to the signed ``bits``-bit range ``[-2**(bits-1), 2**(bits-1) - 1]``
    (what :func:`_clip` gives for those bounds) by bit tests: in range iff every bit from
    ``bits - 1`` up equals the sign. No comparator carry chain behind the adder."""
    value = value.as_signed()
    if len(value) <= bits:
        return value
    top = value[bits - 1:]
    in_range = top.all() | ~top.any()
    limit = Mux(value[-1], -(1 << (bits - 1)), (1 << (bits - 1)) - 1)
    return Mux(in_range, value[:bits].as_signed(), limit)


def coord_layout():
    """One embedding point: ``{x, y}``, signed Q8.16 in 24 bits (x at the LSB)."""
    return data.StructLayout({"x": signed(Y_WIDTH), "y": signed(Y_WIDTH)})


# ------------------------------------------------------------------------------------------------
# pair unit
# ------------------------------------------------------------------------------------------------

class PairUnit(wiring.Component):
    """Force term of one point pair per cycle, fixed latency, never stalls.

    With ``d = b - a`` (``a`` = own point ``Y[i]``, ``b`` = partner ``Y[j]``), ``d2 = (dx**2 +
    dy**2) >> 16`` and ``w = recip1p(d2)``:

    * ``mode = 0`` (attraction, p = P[i][e]): ``f = (((p * w) >> 16) * d) >> 16``;
    * ``mode = 1`` (repulsion): ``f = (((w * w) >> 16) * (a - b)) >> 16``.

    All shifts are floors, exactly as in :func:`nms.verif.models.desne.embed`.

    Parameters
    ----------
    tag_width : int
        Width of an opaque tag carried alongside each pair (the engine passes j, the point's
        local address and the end-of-point flag).

    Attributes
    ----------
    i : In(stream.Signature(in_layout, always_ready=True))
        ``{a: coord, b: coord, p: unsigned(17), mode: unsigned(1), tag: unsigned(tag_width)}``.
    o : Out(stream.Signature(out_layout, always_ready=True))
        ``{fx, fy: signed(26), w: unsigned(17), mode, tag}`` exactly :attr:`latency` cycles
        after the input; ``w`` is the kernel value (summed by the engine for the normaliser).
    latency : int
        7 = difference, squares, d2, kernel (2), weight product, force product.
    """

    recip_latency = Recip1p.latency
    latency = 3 + Recip1p.latency + 2
    #: cycles between inputs (a pair per cycle)
    interval = 1

    def __init__(self, *, tag_width: int):
        check_int("tag_width", tag_width, 1, 128, "1 to 128 tag bits")
        self.tag_width = tag_width
        self.in_layout = data.StructLayout({
            "a": coord_layout(), "b": coord_layout(), "p": unsigned(fp.P_BITS),
            "mode": unsigned(1), "tag": unsigned(tag_width)})
        self.out_layout = data.StructLayout({
            "fx": signed(F_WIDTH), "fy": signed(F_WIDTH), "w": unsigned(fp.W_BITS),
            "mode": unsigned(1), "tag": unsigned(tag_width)})
        super().__init__({
            "i": In(stream.Signature(self.in_layout, always_ready=True)),
            "o": Out(stream.Signature(self.out_layout, always_ready=True)),
        })

    def elaborate(self, platform):
        m = Module()
        x = self.i.payload
        lat = self.latency
        valid = _delay(m, self.i.valid, lat, "valid")
        mode = _delay(m, x.mode, lat, "mode")
        tag = _delay(m, x.tag, lat, "tag")
        p = _delay(m, x.p, 3 + self.recip_latency, "p")

        # stage 1: difference d = b - a
        dx, dy = Signal(signed(D_WIDTH)), Signal(signed(D_WIDTH))
        m.d.sync += [dx.eq(x.b.x - x.a.x), dy.eq(x.b.y - x.a.y)]
        # stage 2: the squares as registered partial products (d split at bit 17: d = h * 2**17
        # + l, d**2 = h**2 * 2**34 + h * l * 2**18 + l**2, one 18 x 18 multiplier each); the
        # force direction (d for attraction, -d = a - b for repulsion) is chosen here so that
        # the final floor shift acts on the signed product as in the model
        L = _DSP_LOW
        sq = []
        for d, a in ((dx, "x"), (dy, "y")):
            lo, hi = d[:L], d[L:].as_signed()
            parts = (Signal(2 * L, name=f"sq_ll_{a}"),
                     Signal(2 * len(hi) - 1, name=f"sq_hh_{a}"),
                     Signal(signed(len(hi) + L + 1), name=f"sq_hl_{a}"))
            m.d.sync += [parts[0].eq(lo * lo), parts[1].eq(hi * hi), parts[2].eq(hi * lo)]
            sq.append(parts)
        vx, vy = Signal(signed(D_WIDTH + 1)), Signal(signed(D_WIDTH + 1))
        m.d.sync += [vx.eq(Mux(mode[1], -dx, dx)), vy.eq(Mux(mode[1], -dy, dy))]
        vx_d = _delay(m, vx, 1 + self.recip_latency + 1, "vx")[-1]
        vy_d = _delay(m, vy, 1 + self.recip_latency + 1, "vy")[-1]
        # stage 3: d2 = (dx^2 + dy^2) >> 16; h**2 * 2**34 and l**2 < 2**34 are a concatenation
        d2 = Signal(D2_WIDTH)
        (llx, hhx, hlx), (lly, hhy, hly) = sq
        m.d.sync += d2.eq((Cat(llx, hhx) + Cat(lly, hhy) + ((hlx + hly) << (L + 1))) >> 16)
        # stages 4-5: kernel
        m.submodules.recip = recip = Recip1p(d2_width=D2_WIDTH)
        m.d.comb += [recip.i.payload.eq(d2), recip.i.valid.eq(valid[3])]
        w = recip.o.payload
        # stage 6: weight = (p * w) >> 16 (attraction) or (w * w) >> 16 (repulsion); <= 65536
        k = 3 + self.recip_latency
        weight = Signal(fp.W_BITS)
        # the first operand (w for repulsion, p for attraction) is chosen inside the kernel
        # unit's output register, so both multiplier inputs come straight from registers
        m.d.comb += [recip.alt.eq(p[k - 1]), recip.alt_sel.eq(~mode[k - 1])]
        m.d.sync += weight.eq((recip.o_alt * w) >> 16)
        w_out = _delay(m, w, 2, "w")[-1]
        # stage 7: the force term's two registered partial products (v split at bit 17); the
        # output adds them: (weight * v) >> 16 = ((weight * v_hi) << 1) + ((weight * v_lo) >> 16)
        for v, out, a in ((vx_d, self.o.payload.fx, "x"), (vy_d, self.o.payload.fy, "y")):
            lo = Signal(fp.W_BITS + L, name=f"f_lo_{a}")
            hi = Signal(signed(fp.W_BITS + len(v) - L + 1), name=f"f_hi_{a}")
            m.d.sync += [lo.eq(weight * v[:L]), hi.eq(weight * v[L:].as_signed())]
            m.d.comb += out.eq((hi << (L - 16)) + (lo >> 16))
        m.d.comb += [
            self.o.payload.w.eq(w_out),
            self.o.payload.mode.eq(mode[lat]),
            self.o.payload.tag.eq(tag[lat]),
            self.o.valid.eq(valid[lat]),
        ]
        return m


class SerialPairUnit(PairUnit):
    """:class:`PairUnit`'s force term, one pair in :attr:`interval` cycles, with no multiplier.

    For a small device (the iCE40 UP5K's 8 DSP blocks cannot hold the pair unit's 17): the
    products are shift-adds over one operand's bits, LSB first, one bit per cycle, each step
    ``acc = (acc + bit * (x << (w - s))) >> 1`` (arithmetic) so that after the ``w`` bits
    ``acc = floor(x * c / 2**s)`` exactly (see :class:`SerialUpdate`):

    * ``d2 = (dx**2 + dy**2) >> 16``: both squares at once over the bits of ``|dx|`` and
      ``|dy|`` (24 steps, one three-input add);
    * ``w = recip1p(d2)`` through the same :class:`~nms.rtl.recip.Recip1p`;
    * ``weight = (p * w) >> 16`` or ``(w * w) >> 16`` over the bits of ``w`` (17 steps);
    * ``f = (weight * v) >> 16``, ``v = d`` or ``-d``, both axes over the bits of ``weight``
      (17 steps).

    A pair is taken while the unit is idle; ``o`` carries its term :attr:`latency` cycles
    later, and the next pair is taken one cycle after that: the lane issues a pair every
    :attr:`interval` cycles. Ports as :class:`PairUnit`; the result equals it bit for bit.
    """

    #: steps of the shift-adds: |d| (24 bits), w (Q1.16, 17 bits), weight (17 bits)
    _SQ_STEPS = D_WIDTH - 1
    _W_STEPS = fp.W_BITS
    #: input latch, |d| and v, the squares, d2 into the kernel, its pipeline, weight, force
    latency = 1 + 1 + _SQ_STEPS + 1 + Recip1p.latency + _W_STEPS + _W_STEPS
    interval = latency + 1

    def elaborate(self, platform):
        m = Module()
        x = self.i.payload
        # the table in a block RAM: this unit is for a device with little logic and no need
        # for the soft-logic ROM's timing
        m.submodules.recip = recip = Recip1p(d2_width=D2_WIDTH, rom="block")
        m.d.comb += [recip.alt.eq(0), recip.alt_sel.eq(0)]   # o_alt unused
        axes = ("x", "y")
        mode, tag, p = Signal(), Signal(self.tag_width), Signal(fp.P_BITS)
        d = {a: Signal(signed(D_WIDTH), name=f"sp_d_{a}") for a in axes}
        mag = {a: Signal(D_WIDTH - 1, name=f"sp_mag_{a}") for a in axes}       # |d|, 24 bits
        v = {a: Signal(signed(D_WIDTH + 1), name=f"sp_v_{a}") for a in axes}   # d or -d
        # operands x << (w - s): the squares' |d| << 8 (w = 24 bits of |d|, s = 16; both
        # squares in one accumulator), the weight's alt << 1 (w = 17, s = 16), the force's v << 1
        sq_shift = self._SQ_STEPS - 16
        acc_w = (D_WIDTH - 1) + sq_shift + 3
        acc = {a: Signal(signed(max(acc_w, D_WIDTH + 4)), name=f"sp_acc_{a}") for a in axes}
        bits = {a: Signal(D_WIDTH - 1, name=f"sp_bits_{a}") for a in axes}
        left = Signal(range(D_WIDTH))
        w, weight = Signal(fp.W_BITS), Signal(fp.W_BITS)
        alt = Mux(mode, w, p)

        def halve(value):
            return value >> 1

        with m.FSM(name="serial_pair"):
            with m.State("IDLE"):
                with m.If(self.i.valid):
                    m.d.sync += [mode.eq(x.mode), tag.eq(x.tag), p.eq(x.p),
                                 d["x"].eq(x.b.x - x.a.x), d["y"].eq(x.b.y - x.a.y)]
                    m.next = "PREPARE"
            with m.State("PREPARE"):
                for a in axes:
                    m.d.sync += [mag[a].eq(Mux(d[a] < 0, -d[a], d[a])),
                                 bits[a].eq(Mux(d[a] < 0, -d[a], d[a])),
                                 v[a].eq(Mux(mode, -d[a], d[a])), acc[a].eq(0)]
                m.d.sync += left.eq(self._SQ_STEPS - 1)
                m.next = "SQUARES"
            with m.State("SQUARES"):
                sq = {a: Mux(bits[a][0], mag[a] << sq_shift, 0) for a in axes}
                m.d.sync += [acc["x"].eq(halve(acc["x"] + sq["x"] + sq["y"])),
                             bits["x"].eq(bits["x"] >> 1), bits["y"].eq(bits["y"] >> 1),
                             left.eq(left - 1)]
                with m.If(left == 0):
                    m.next = "KERNEL"
            with m.State("KERNEL"):
                # d2 (acc) into the kernel pipeline; its output comes Recip1p.latency later
                m.d.comb += [recip.i.valid.eq(1), recip.i.payload.eq(acc["x"])]
                m.next = "KERNEL_WAIT"
            with m.State("KERNEL_WAIT"):
                with m.If(recip.o.valid):
                    m.d.sync += [w.eq(recip.o.payload), bits["x"].eq(recip.o.payload),
                                 acc["x"].eq(0), left.eq(self._W_STEPS - 1)]
                    m.next = "WEIGHT"
            with m.State("WEIGHT"):
                term = Mux(bits["x"][0], alt << 1, 0)
                m.d.sync += [acc["x"].eq(halve(acc["x"] + term)), bits["x"].eq(bits["x"] >> 1),
                             left.eq(left - 1)]
                with m.If(left == 0):
                    weight_now = halve(acc["x"] + term)
                    m.d.sync += [weight.eq(weight_now), bits["x"].eq(weight_now),
                                 acc["x"].eq(0), acc["y"].eq(0),
                                 left.eq(self._W_STEPS - 1)]
                    m.next = "FORCE"
            with m.State("FORCE"):
                for a in axes:
                    m.d.sync += acc[a].eq(halve(acc[a] + Mux(bits["x"][0], v[a] << 1, 0)))
                m.d.sync += [bits["x"].eq(bits["x"] >> 1), left.eq(left - 1)]
                with m.If(left == 0):
                    m.next = "OUTPUT"
            with m.State("OUTPUT"):
                m.d.comb += [self.o.valid.eq(1), self.o.payload.fx.eq(acc["x"]),
                             self.o.payload.fy.eq(acc["y"]), self.o.payload.w.eq(w),
                             self.o.payload.mode.eq(mode), self.o.payload.tag.eq(tag)]
                m.next = "IDLE"
        return m


# ------------------------------------------------------------------------------------------------
# repulsion normaliser
# ------------------------------------------------------------------------------------------------

class GainDivider(wiring.Component):
    """``gain = min((n << 32) // max(den, 1), 2**32 - 1)``, exact, by restoring division.

    A saturating :class:`~nms.rtl.divider.Divider` with 32 quotient bits, radix 2: if
    ``den <= n`` the quotient is ``>= 2**32`` and saturates at once (1 cycle); otherwise
    ``n < den`` and the quotient has exactly 32 bits, found in 32 cycles (one per bit; 33 from
    the accepted operands to the valid gain). Runs once per iteration, so a serial divider costs
    ~1 % of an iteration and no multiplier.

    Parameters
    ----------
    n_width, den_width : int
        Widths of the point count and of the kernel sum.

    Attributes
    ----------
    i : In(stream.Signature({n, den}))
        Operands; accepted only while idle.
    o : Out(stream.Signature(unsigned(32)))
        The gain (Q16.16); held until accepted.
    """

    def __init__(self, *, n_width: int, den_width: int):
        check_int("n_width", n_width, 1, 32, "1 to 32 bits")
        check_int("den_width", den_width, 1, 64, "1 to 64 bits")
        self.n_width, self.den_width = n_width, den_width
        super().__init__({
            "i": In(stream.Signature(data.StructLayout({
                "n": unsigned(n_width), "den": unsigned(den_width)}))),
            "o": Out(stream.Signature(unsigned(GAIN_BITS))),
        })

    def elaborate(self, platform):
        m = Module()
        assert fp.REP_GAIN_MAX == (1 << GAIN_BITS) - 1  # the divider's saturated quotient
        # (n << 32) >= den << 32  <=>  den <= n: the saturation test of the model's min()
        m.submodules.div = div = Divider(dividend_width=self.n_width + GAIN_BITS,
                                         divisor_width=self.den_width,
                                         quotient_width=GAIN_BITS, saturate=True)
        m.d.comb += [
            div.operands.payload.n.eq(self.i.payload.n << GAIN_BITS),
            div.operands.payload.d.eq(self.i.payload.den),
            div.operands.valid.eq(self.i.valid),
            self.i.ready.eq(div.operands.ready),
        ]
        wiring.connect(m, div.quotient, wiring.flipped(self.o))
        return m


# ------------------------------------------------------------------------------------------------
# pair lane: sequencer, partner index, accumulators, scatter bank
# ------------------------------------------------------------------------------------------------

class _LaneGeometry:
    """Widths shared by the engine and its per-lane units (derived from the engine parameters)."""

    def __init__(self, capacity, k, neg_samples, pair_units):
        C, U, S = capacity, pair_units, neg_samples
        self.capacity, self.k, self.neg_samples, self.pair_units = C, k, S, U
        self.unit_shift = ceil_log2(U)
        self.unit_depth = -(-C // U)                    # points owned by one lane
        self.local_width = max(1, bits_for(self.unit_depth - 1))
        self.index_width = bits_for(C - 1)
        self.n_width = bits_for(C)
        # attraction sums: at most C * k edge terms of |f| <= 2**24
        self.fa_width = F_WIDTH + bits_for(C * k)
        # repulsion sums: S terms per point
        self.fr_width = F_WIDTH + bits_for(S)
        # kernel sum over all N * S samples, each <= 65536
        self.wsum_width = bits_for(C * S * (1 << 16))

    def pair(self, width):
        return data.StructLayout({"x": signed(width), "y": signed(width)})


def _lane_geometry(capacity, k, neg_samples, pair_units):
    check_int("capacity", capacity, 4, 1 << 16, "4 to 65536 points")
    check_int("k", k, 1, 64, "1 to 64 neighbours")
    check_int("neg_samples", neg_samples, 1, 64, "1 to 64 samples per point")
    check_int("pair_units", pair_units, 1, 16, "a power of two from 1 to 16")
    return _LaneGeometry(capacity, k, neg_samples, pair_units)


class PairSequencer(wiring.Component):
    """Issue order of one lane: the kNN edges and the S negative samples of its points.

    Lane ``u`` of ``U`` owns the points ``i = u, u + U, ...`` (``< n``); its local address is
    ``i // U``. After a ``start`` pulse it issues one pair every ``interval`` cycles (default:
    every cycle, no gap), the pairs
    ``(i, e)`` for ``e < kk`` (attraction, ``knn_addr = i * k + e``) and ``(i, s)`` for
    ``s < S`` (repulsion, sample counter ``iter_base + i * S + s``), and drops ``act`` after the
    last one. A lane with no point (``n <= u``) issues nothing. The order:

    * ``hold_self=True`` (point-major): all ``kk + S`` pairs of a point back to back, its
      attractive pairs first, then the next point — so ``Y[i]`` is read once per point
      (``self_read`` high on the point's first pair only);
    * ``hold_self=False``: the attractive pairs of every point, then the repulsive pairs of
      every point (``self_read`` high on every pair).

    The sums are exact integers, so the order changes no result; ``last`` marks the final pair
    of a point's attractive (``mode = 0``) and of its repulsive (``mode = 1``) run either way.

    Parameters
    ----------
    unit, capacity, k, neg_samples, pair_units : int
        The lane number u and the engine parameters.
    hold_self : bool
        Point-major order (default ``True``), see above.
    interval : int
        Cycles from one issue to the next (default 1: no gap; a serial pair unit takes a pair
        every :attr:`SerialPairUnit.interval` cycles).

    Attributes
    ----------
    start : In(1)
    n, kk, iter_base : In
        Points, list length and the sample counter of (point 0, sample 0) of this iteration;
        ``n`` and ``kk`` must be stable from the cycle before ``start`` on (the controller sets
        them with the config beat, long before the first pair phase).
    issue : Out(1)
        A pair is issued this cycle (``act``, not ``start``, and ``interval`` cycles since the
        last issue).
    act, mode, point, local, last, knn_addr, counter : Out
        Sequencer state: active, 0 = attraction / 1 = repulsion, point, local address, last pair
        of the point's attractive / repulsive run, list memory address, sample counter.
    self_read : Out(1)
        The issued pair reads the own point's ``Y[i]`` (see the order above).
    """

    def __init__(self, *, unit: int, capacity: int, k: int, neg_samples: int, pair_units: int,
                 hold_self: bool = True, interval: int = 1):
        geo = self.geometry = _lane_geometry(capacity, k, neg_samples, pair_units)
        check_int("unit", unit, 0, pair_units - 1, f"0 to pair_units - 1 = {pair_units - 1}")
        check_int("interval", interval, 1, 256, "1 to 256 cycles")
        self.unit, self.interval = unit, interval
        self.hold_self = _check_bool("hold_self", hold_self)
        C, K = capacity, k
        super().__init__({
            "start": In(1),
            "n": In(range(C + 1)), "kk": In(range(K + 1)), "iter_base": In(32),
            "issue": Out(1), "act": Out(1), "mode": Out(1),
            "point": Out(range(C)), "local": Out(geo.local_width), "last": Out(1),
            "knn_addr": Out(range(C * K)), "counter": Out(32), "self_read": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        geo, u = self.geometry, self.unit
        K, S, U = geo.k, geo.neg_samples, geo.pair_units
        act, mode, pi, pl, ctr = self.act, self.mode, self.point, self.local, self.counter
        e = Signal(range(max(K, S)))
        kbase = Signal(range(geo.capacity * K))
        # pi + U >= n for the present point, registered with every change of pi: the adder
        # and compare stay off the issue logic (they were the engine's critical path)
        final_point = Signal()
        # the start values' compares of n with constants, registered: n is set with the config
        # beat, and the first start comes after the whole list load and the initialisation
        has_point, single_point = Signal(), Signal()
        kkm1 = Signal.like(self.kk)
        m.d.sync += [has_point.eq(self.n > u), single_point.eq(self.n <= u + U),
                     kkm1.eq(self.kk - 1)]
        # cycles to the next issue (0: this cycle, if active)
        wait = Signal(range(self.interval))
        m.d.comb += [
            self.last.eq(Mux(mode, e == S - 1, e == kkm1)),
            self.knn_addr.eq(kbase + e),
            self.issue.eq(act & ~self.start & (wait == 0)),
            # point-major: the point's first pair is its first attractive one (kk >= 1)
            self.self_read.eq((~mode & (e == 0)) if self.hold_self else 1),
        ]

        def next_point():
            # the lane's next point; its samples start (U - 1) * S further on
            m.d.sync += [pi.eq(pi + U), pl.eq(pl + 1), kbase.eq(kbase + U * K),
                         final_point.eq(pi + 2 * U >= self.n)]

        with m.If(self.start):
            m.d.sync += [act.eq(has_point), mode.eq(0), pi.eq(u), pl.eq(0), e.eq(0),
                         kbase.eq(u * K), ctr.eq(self.iter_base + u * S),
                         final_point.eq(single_point), wait.eq(0)]
        with m.Elif(act & (wait != 0)):
            m.d.sync += wait.eq(wait - 1)
        with m.Elif(act):
            m.d.sync += wait.eq(self.interval - 1)
            with m.If(~self.last):
                m.d.sync += e.eq(e + 1)
                with m.If(mode):
                    m.d.sync += ctr.eq(ctr + 1)
            with m.Else():
                m.d.sync += e.eq(0)
                with m.If(mode):
                    m.d.sync += ctr.eq(ctr + (U - 1) * S + 1)
                if self.hold_self:
                    # attractive run -> the same point's repulsive run -> the next point
                    with m.If(~mode):
                        m.d.sync += mode.eq(1)
                    with m.Else():
                        m.d.sync += mode.eq(0)
                        next_point()
                        with m.If(final_point):
                            m.d.sync += act.eq(0)
                else:
                    # all attractive runs, then all repulsive runs from the lane's first point
                    next_point()
                    with m.If(final_point):
                        with m.If(mode):
                            m.d.sync += act.eq(0)
                        with m.Else():
                            m.d.sync += [mode.eq(1), pi.eq(u), pl.eq(0),
                                         final_point.eq(single_point)]
        return m


class PartnerIndex(wiring.Component):
    """Negative-sample partner ``j = i + 1 + ((h & 0xFFFF) * (n - 1)) >> 16``, wrapped below n.

    Exactly :func:`nms.verif.models.desne.negative_samples` for the hash ``h`` of the sample's
    counter: never ``i`` itself. One registered stage (the product, ``i + 1`` and the room
    ``n - 1 - i`` above the point), then the wrap in logic: ``q = prod >> 16 <= n - 2``, so
    ``j = q - room`` if ``q >= room`` else ``i + 1 + q`` — a compare and two adds side by side,
    the engine's Y read address. ``j`` is valid :attr:`latency` cycles after ``h`` and ``i``.

    Attributes
    ----------
    hash, point, nm1 : In
        The sample's hash (its low 16 bits are used), the point, ``n - 1``.
    n : In
        The point count (the wrap bound).
    j : Out(range(capacity))
    """

    latency = 1

    def __init__(self, *, capacity: int):
        check_int("capacity", capacity, 2, 1 << 16, "2 to 65536 points")
        self.capacity = capacity
        super().__init__({
            "hash": In(32), "point": In(range(capacity)),
            "n": In(range(capacity + 1)), "nm1": In(range(capacity)),
            "j": Out(range(capacity)),
        })

    def elaborate(self, platform):
        m = Module()
        C = self.capacity
        prod = Signal(16 + bits_for(C))
        ip1 = Signal(range(C + 1))          # i + 1
        room = Signal(range(C))             # n - 1 - i: partners above i before the wrap
        m.d.sync += [prod.eq(self.hash[:16] * self.nm1), ip1.eq(self.point + 1),
                     room.eq(self.nm1 - self.point)]
        q = Signal(range(C))
        m.d.comb += q.eq(prod >> 16)
        # i + 1 + q >= n  <=>  q >= room; then the wrapped partner is q - room
        m.d.comb += self.j.eq(Mux(q >= room, q - room, ip1 + q))
        return m


class PointAccumulator(wiring.Component):
    """Per-point force sums of one lane, and its kernel sum.

    A register sums the force terms of the current point; on the point's ``last`` term the sum
    is written once (in the next cycle, from registers) to the attraction bank (``mode = 0``) or
    the repulsion bank (``mode = 1``) at the point's local address, and the register restarts. ``wsum`` adds the kernel value ``w``
    of every repulsive term (``clear_wsum`` restarts it). The banks are read by the update phase
    (``l_addr``/``r_addr`` -> ``l_data``/``r_data`` :attr:`read_latency` = 2 cycles later: the
    RAM's output register and one behind it).

    Attributes
    ----------
    i : In(stream.Signature({fx, fy, w, mode, local, last}, always_ready=True))
        The pair unit's output.
    clear_wsum : In(1)
    wsum : Out(wsum_width)
    l_addr, r_addr : In(local_width)
    l_data : Out({x, y: signed(fa_width)})
    r_data : Out({x, y: signed(fr_width)})
    read_latency : int
        2.
    """

    read_latency = 2

    def __init__(self, *, capacity: int, k: int, neg_samples: int, pair_units: int):
        geo = self.geometry = _lane_geometry(capacity, k, neg_samples, pair_units)
        self.in_layout = data.StructLayout({
            "fx": signed(F_WIDTH), "fy": signed(F_WIDTH), "w": unsigned(fp.W_BITS),
            "mode": unsigned(1), "local": unsigned(geo.local_width), "last": unsigned(1)})
        super().__init__({
            "i": In(stream.Signature(self.in_layout, always_ready=True)),
            "clear_wsum": In(1),
            "wsum": Out(geo.wsum_width),
            "l_addr": In(geo.local_width), "r_addr": In(geo.local_width),
            "l_data": Out(geo.pair(geo.fa_width)), "r_data": Out(geo.pair(geo.fr_width)),
        })

    def elaborate(self, platform):
        m = Module()
        geo = self.geometry
        # written in the pair phase, read in the update phase only: no_rw_check is legal
        _, l_rd, l_wr = block_ram(m, "lbank", geo.pair(geo.fa_width), geo.unit_depth)
        _, r_rd, r_wr = block_ram(m, "rbank", geo.pair(geo.fr_width), geo.unit_depth)
        # the words registered once more behind the RAM (no logic after the RAM output)
        m.d.comb += [l_rd.addr.eq(self.l_addr), r_rd.addr.eq(self.r_addr),
                     l_rd.en.eq(1), r_rd.en.eq(1)]
        m.d.sync += [self.l_data.eq(l_rd.data), self.r_data.eq(r_rd.data)]
        x = self.i.payload
        acc_x, acc_y = Signal(signed(geo.fa_width)), Signal(signed(geo.fa_width))
        sum_x, sum_y = acc_x + x.fx, acc_y + x.fy
        # the point's sum is written a cycle later from registers (write-behind: the banks are
        # read only in the update phase)
        w_addr = Signal(geo.local_width)
        w_sum = Signal(geo.pair(geo.fa_width))
        w_l, w_r = Signal(), Signal()
        m.d.sync += [w_addr.eq(x.local), w_sum.x.eq(sum_x), w_sum.y.eq(sum_y),
                     w_l.eq(0), w_r.eq(0)]
        m.d.comb += [l_wr.addr.eq(w_addr), r_wr.addr.eq(w_addr),
                     l_wr.data.x.eq(w_sum.x), l_wr.data.y.eq(w_sum.y),
                     r_wr.data.x.eq(w_sum.x), r_wr.data.y.eq(w_sum.y),
                     l_wr.en.eq(w_l), r_wr.en.eq(w_r)]
        with m.If(self.i.valid):
            with m.If(x.last):
                m.d.sync += [acc_x.eq(0), acc_y.eq(0), w_l.eq(~x.mode), w_r.eq(x.mode)]
            with m.Else():
                m.d.sync += [acc_x.eq(sum_x), acc_y.eq(sum_y)]
        with m.If(self.clear_wsum):
            m.d.sync += self.wsum.eq(0)
        with m.Elif(self.i.valid & x.mode):
            m.d.sync += self.wsum.eq(self.wsum + x.w)
        return m


class ScatterBank(wiring.Component):
    """``F[j] -= f`` for every attractive pair of a lane, by a pipelined read-modify-write, one
    pair per cycle without stalls.

    Pair phase, a beat on ``scatter`` in cycle t: the bank is read at ``j`` in cycle t, the word
    is registered behind the RAM in t + 1 (no logic after the RAM output), ``word - f`` is
    computed into the result register in t + 2 and written in t + 3 (:attr:`write_latency`).
    The read of cycle t misses the writes of the three beats before it (written in t + 1, t and
    t + 2, or in flight), so the subtraction takes its operand from the newest of those with the
    same ``j`` — the result register (beat t - 1) or the two registers behind it (t - 2, t - 3)
    — and the RAM word only if none matches; the matches are compared one cycle ahead. No word
    read in the cycle its address is written is ever used (beat t - 3 writes in cycle t, and is
    forwarded), so the memory needs no read-during-write logic (``no_rw_check``).

    Update phase: ``read_addr`` is read whenever no beat is valid; its word appears on ``data``
    :attr:`read_latency` = 2 cycles later (from the same register behind the RAM). ``clear``
    zeroes an entry whenever it is valid: in the update phase the one read for the update, for
    the next iteration; before the first pair phase of a job, the job-start sweep of
    :class:`EmbeddingController`. ``clear`` is never valid while a beat is in the pipeline (the
    engine's pair drain covers :attr:`write_latency`).

    Attributes
    ----------
    scatter : In(stream.Signature({j, fx, fy}, always_ready=True))
    read_addr : In(range(capacity))
    clear : In(stream.Signature(range(capacity), always_ready=True))
    data : Out({x, y: signed(fa_width)})
    write_latency : int
        3: a beat's write cycle after its input cycle.
    read_latency : int
        2: ``read_addr`` to ``data``.
    """

    write_latency = 3
    read_latency = 2

    def __init__(self, *, capacity: int, k: int, neg_samples: int, pair_units: int):
        geo = self.geometry = _lane_geometry(capacity, k, neg_samples, pair_units)
        C = capacity
        self.scatter_layout = data.StructLayout({
            "j": range(C), "fx": signed(F_WIDTH), "fy": signed(F_WIDTH)})
        super().__init__({
            "scatter": In(stream.Signature(self.scatter_layout, always_ready=True)),
            "read_addr": In(range(C)),
            "clear": In(stream.Signature(range(C), always_ready=True)),
            "data": Out(geo.pair(geo.fa_width)),
        })

    def elaborate(self, platform):
        m = Module()
        geo = self.geometry
        word = geo.pair(geo.fa_width)
        sbank, s_rd, s_wr = block_ram(m, "sbank", word, geo.capacity)
        C = geo.capacity
        x = self.scatter
        # stage 0: the read (the beat's j, else the update's address)
        m.d.comb += [s_rd.addr.eq(Mux(x.valid, x.payload.j, self.read_addr)), s_rd.en.eq(1)]
        # stage 1: the word is in the RAM's output register; the beat moves on
        v1, b1 = Signal(), Signal(self.scatter_layout)
        m.d.sync += [v1.eq(x.valid), b1.eq(x.payload)]
        # stage 2: the word registered behind the RAM, with the forwarding matches
        v2, b2, q2 = Signal(), Signal(self.scatter_layout), Signal(word)
        # the result register (stage 3: written this cycle) and the two results before it
        v3, j3, r3 = Signal(), Signal(range(C)), Signal(word)
        v4, j4, r4 = Signal(), Signal(range(C)), Signal(word)
        v5, j5, r5 = Signal(), Signal(range(C)), Signal(word)
        hit3, hit4, hit5 = Signal(), Signal(), Signal()
        m.d.sync += [
            v2.eq(v1), b2.eq(b1), q2.eq(s_rd.data),
            # b1 meets (in stage 2) the beats now in stage 2, 3 and 4
            hit3.eq(v2 & (b2.j == b1.j)), hit4.eq(v3 & (j3 == b1.j)), hit5.eq(v4 & (j4 == b1.j)),
            v4.eq(v3), j4.eq(j3), r4.eq(r3),
            v5.eq(v4), j5.eq(j4), r5.eq(r4),
        ]
        base = Signal(word)
        m.d.comb += base.eq(Mux(hit3, r3, Mux(hit4, r4, Mux(hit5, r5, q2))))
        m.d.sync += [v3.eq(v2), j3.eq(b2.j),
                     r3.x.eq(base.x - b2.fx), r3.y.eq(base.y - b2.fy)]
        m.d.comb += self.data.eq(q2)
        with m.If(self.clear.valid):
            m.d.comb += [s_wr.addr.eq(self.clear.payload), s_wr.en.eq(1), s_wr.data.eq(0)]
        with m.Else():
            m.d.comb += [s_wr.addr.eq(j3), s_wr.en.eq(v3), s_wr.data.eq(r3)]
        return m


class PairLane(wiring.Component):
    """One lane of the pair phase: sequencer, front end, :class:`PairUnit`, sums, scatter bank.

    The front end aligns every issued pair to its memory reads: an attractive pair reads its
    list entry ``(j, p)`` one cycle after the issue, a repulsive one hashes its sample counter
    (the hash unit is outside the lane: lane 0's is shared with the initialisation) and finds
    its partner with :class:`PartnerIndex`; both then read ``Y[j]`` ``Hash32.latency + 1``
    cycles after the issue, register the word once more behind the RAM and enter the pair unit
    ``front_latency`` cycles after the issue. The own point's ``Y[i]`` is read on
    ``y_self`` in the same cycle — with ``hold_self`` only for the point's first pair (the
    sequencer's point-major order issues a point's pairs back to back): the read port's data
    register, not enabled again until the next point, holds ``Y[i]`` for the rest of them.
    Both Y ports are enabled only for issued pairs, so their enables count the Y reads. The
    pair unit's output feeds the :class:`PointAccumulator` (own sums, kernel sum) and, for
    attractive pairs, the :class:`ScatterBank` (``F[j] -= f``).

    Parameters
    ----------
    unit, capacity, k, neg_samples, pair_units : int
        The lane number and the engine parameters.
    hold_self : bool
        Read ``Y[i]`` once per point and hold it (default ``True``), or for every pair.
    serial : bool
        The force term by :class:`SerialPairUnit` (a pair every ``SerialPairUnit.interval``
        cycles, no multiplier) instead of :class:`PairUnit` (default ``False``).

    Attributes
    ----------
    start, n, kk, nm1, iter_base : In
        Pair-phase start pulse and the iteration's values.
    act, mode : Out(1)
        The sequencer is active / in its repulsive part.
    issue : Out(1)
        A pair is issued in this cycle (with a serial pair unit ``act`` stays high between
        issues).
    hash_req : Out(stream.Signature(32, always_ready=True))
        Sample counter to hash (valid for issued repulsive pairs); ``hash_rsp`` is the hash
        output, ``Hash32.latency`` cycles later.
    knn_r, y_self, y_part : read ports of the list memory and (twice) of the Y memory; the
        lane drives the Y ports' ``en`` (high exactly for the reads it uses).
    clear_wsum : In(1); wsum : Out
    update_addr, clear : In
        Update phase: read address of the banks (point index); scatter-bank entry to clear
        (the update's, or the job-start sweep's).
    fa_scatter, fa_own, fr_own : Out
        Scatter-bank entry, own attraction and repulsion sums (:attr:`read_latency` = 2 cycles
        after ``update_addr``, from registers; the own sums are those of the lane's local
        address ``update_addr // U``).
    read_latency : int
        2.
    write_latency : int
        After the last issue, the cycles until the lane's last write (the scatter bank's):
        ``front_latency + PairUnit.latency + ScatterBank.write_latency``.
    """

    read_latency = ScatterBank.read_latency
    assert PointAccumulator.read_latency == read_latency

    def __init__(self, *, unit: int, capacity: int, k: int, neg_samples: int, pair_units: int,
                 hold_self: bool = True, serial: bool = False):
        geo = self.geometry = _lane_geometry(capacity, k, neg_samples, pair_units)
        self.unit = unit
        self.hold_self = _check_bool("hold_self", hold_self)
        self.serial = _check_bool("serial", serial)
        self.pair_unit = SerialPairUnit if self.serial else PairUnit
        self.params = dict(capacity=capacity, k=k, neg_samples=neg_samples, pair_units=pair_units)
        C, K = capacity, k
        self.hash_latency = Hash32.latency
        self.front_latency = Hash32.latency + PartnerIndex.latency + 2
        self.write_latency = (self.front_latency + self.pair_unit.latency
                              + ScatterBank.write_latency)
        knn_layout = data.StructLayout({"index": unsigned(geo.index_width),
                                        "p": unsigned(fp.P_BITS)})
        super().__init__({
            "start": In(1),
            "n": In(range(C + 1)), "kk": In(range(K + 1)), "nm1": In(range(C)),
            "iter_base": In(32),
            "act": Out(1), "mode": Out(1), "issue": Out(1),
            "hash_req": Out(stream.Signature(32, always_ready=True)),
            "hash_rsp": In(32),
            "knn_r": In(ReadPort.Signature(addr_width=ceil_log2(C * K), shape=knn_layout)),
            "y_self": In(ReadPort.Signature(addr_width=ceil_log2(C), shape=coord_layout())),
            "y_part": In(ReadPort.Signature(addr_width=ceil_log2(C), shape=coord_layout())),
            "clear_wsum": In(1),
            "wsum": Out(geo.wsum_width),
            "update_addr": In(range(C)),
            "clear": In(stream.Signature(range(C), always_ready=True)),
            "fa_scatter": Out(geo.pair(geo.fa_width)),
            "fa_own": Out(geo.pair(geo.fa_width)),
            "fr_own": Out(geo.pair(geo.fr_width)),
        })

    def elaborate(self, platform):
        m = Module()
        geo = self.geometry
        H = self.hash_latency
        jw, lw = geo.index_width, geo.local_width
        m.submodules.sequencer = seq = PairSequencer(unit=self.unit, hold_self=self.hold_self,
                                                     interval=self.pair_unit.interval,
                                                     **self.params)
        m.submodules.partner = partner = PartnerIndex(capacity=geo.capacity)
        m.submodules.pair = pu = self.pair_unit(tag_width=jw + lw + 1)
        m.submodules.sums = sums = PointAccumulator(**self.params)
        m.submodules.scatter = scatter = ScatterBank(**self.params)
        m.d.comb += [seq.start.eq(self.start), seq.n.eq(self.n), seq.kk.eq(self.kk),
                     seq.iter_base.eq(self.iter_base),
                     self.act.eq(seq.act), self.mode.eq(seq.mode), self.issue.eq(seq.issue),
                     self.knn_r.addr.eq(seq.knn_addr),
                     self.hash_req.payload.eq(seq.counter),
                     self.hash_req.valid.eq(seq.issue & seq.mode)]

        # front end: meta delayed to the Y read stage (F[H+1]), the read words registered
        # behind the RAM (F[H+3], no logic after the RAM output) to the pair input
        R = H + 1
        v_t = _delay(m, seq.issue, H + 3, "fv")
        m_t = _delay(m, seq.mode, H + 3, "fm")
        i_t = _delay(m, seq.point, R, "fi")
        sr_t = _delay(m, seq.self_read, R, "fs")
        l_t = _delay(m, seq.local, H + 3, "fl")
        z_t = _delay(m, seq.last, H + 3, "fz")
        # attraction: (j, p) from the list memory at F[1]; j at F[R], p at F[H+3]
        kn_t = _delay(m, self.knn_r.data, H + 2, "kn")
        # repulsion: the partner of the hashed sample, at F[R] (PartnerIndex.latency = 1)
        assert PartnerIndex.latency == R - H
        m.d.comb += [partner.hash.eq(self.hash_rsp), partner.point.eq(i_t[H]),
                     partner.n.eq(self.n), partner.nm1.eq(self.nm1)]
        j_sel = Signal(range(geo.capacity))
        m.d.comb += [
            j_sel.eq(Mux(m_t[R], partner.j, kn_t[R - 1].index)),
            self.y_self.addr.eq(i_t[R]),
            self.y_part.addr.eq(j_sel),
            # read only for issued pairs; y_self's data register holds Y[i] between its reads
            self.y_self.en.eq(v_t[R] & sr_t[R]),
            self.y_part.en.eq(v_t[R]),
        ]
        j_in = _delay(m, j_sel, H + 3 - R, "fj")[-1]
        a_in, b_in = Signal(coord_layout()), Signal(coord_layout())
        # the own point's register follows its port, which holds Y[i] while not enabled
        m.d.sync += [a_in.eq(self.y_self.data), b_in.eq(self.y_part.data)]
        m.d.comb += [
            pu.i.valid.eq(v_t[H + 3]),
            pu.i.payload.a.eq(a_in),
            pu.i.payload.b.eq(b_in),
            pu.i.payload.p.eq(kn_t[H + 2].p),
            pu.i.payload.mode.eq(m_t[H + 3]),
            pu.i.payload.tag.eq(Cat(j_in, l_t[H + 3], z_t[H + 3])),
        ]

        # back end: own sums and kernel sum; the opposite attraction to the scatter bank
        o = pu.o.payload
        o_j, o_l, o_last = o.tag[:jw], o.tag[jw:jw + lw], o.tag[jw + lw]
        m.d.comb += [
            sums.i.valid.eq(pu.o.valid),
            sums.i.payload.fx.eq(o.fx), sums.i.payload.fy.eq(o.fy), sums.i.payload.w.eq(o.w),
            sums.i.payload.mode.eq(o.mode), sums.i.payload.local.eq(o_l),
            sums.i.payload.last.eq(o_last),
            sums.clear_wsum.eq(self.clear_wsum), self.wsum.eq(sums.wsum),
            scatter.scatter.valid.eq(pu.o.valid & ~o.mode),
            scatter.scatter.payload.j.eq(o_j),
            scatter.scatter.payload.fx.eq(o.fx), scatter.scatter.payload.fy.eq(o.fy),
            scatter.read_addr.eq(self.update_addr),
            scatter.clear.valid.eq(self.clear.valid), scatter.clear.payload.eq(self.clear.payload),
            sums.l_addr.eq(self.update_addr >> geo.unit_shift),
            sums.r_addr.eq(self.update_addr >> geo.unit_shift),
            self.fa_scatter.eq(scatter.data), self.fa_own.eq(sums.l_data),
            self.fr_own.eq(sums.r_data),
        ]
        return m


# ------------------------------------------------------------------------------------------------
# update datapath
# ------------------------------------------------------------------------------------------------

class UpdateDatapath(wiring.Component):
    """One point per cycle: gathered forces -> new velocity and position (model's update step).

    ``att = Fa << shift`` while exaggerating, ``rep = (Fr * gain) >> 16``,
    ``F = (att >> 1) + rep`` saturated to ``[-F_SAT, F_SAT - 1]`` (with ``lr >= 1`` a saturated
    F still drives V past the clip bound in the same direction, and ``lr = 0`` ignores F, so no
    result changes), ``V = clip(((momentum * V) >> 8) + ((lr * F) >> 8))``,
    ``Y = clip(Y + V)`` to ``[Y_MIN, Y_MAX]`` — :func:`nms.verif.models.desne.embed` exactly.

    The issue stage (``issue``: the point whose memories are read this cycle) is delayed one
    cycle to ``stage1`` (when the read data are there; the engine gathers ``i`` from them);
    stages 2, 3, 3b, 4..8 follow, and ``o`` carries the point's new ``Y``/``V``
    :attr:`latency` cycles after ``stage1``. Every product is split into partial products that
    fit one 18 x 18 block multiplier each (operands split at bit 17) and go straight into
    registers; the next stage adds them (exact: the floor shifts only cut bits of the lowest
    partial product): stage 2 ``Fr * gain`` (4 products per axis), 3 ``momentum * V`` (2) and
    the two partial sums of ``rep``, 3b ``rep``, 4 ``(att >> 1) + rep`` and ``(momentum * V) >>
    8``, 5 its saturation ``F``, 6 ``lr * F`` (2; F has 35 bits after the saturation), 7 the
    velocity, 8 its clip. The clips to the power-of-two bounds are bit tests
    (:func:`_saturate`), not comparators.

    Attributes
    ----------
    issue : In(stream.Signature(range(C), always_ready=True))
    stage1 : Out(stream.Signature(range(C), always_ready=True))
    i : In({fa: {x, y: signed(fa_width)}, fr: {x, y: signed(fr_width)}, y: coord, v: coord})
        The gathered values of ``stage1``'s point.
    exaggerate, shift, momentum, learning_rate, gain : In
        This iteration's constants.
    o : Out(stream.Signature({point, y: coord, v: coord}, always_ready=True))
    """

    latency = 8
    #: cycles between issues (one point per cycle)
    interval = 1

    def __init__(self, *, capacity: int, k: int, neg_samples: int, pair_units: int):
        geo = self.geometry = _lane_geometry(capacity, k, neg_samples, pair_units)
        C = capacity
        self.in_layout = data.StructLayout({
            "fa": geo.pair(geo.fa_width), "fr": geo.pair(geo.fr_width),
            "y": coord_layout(), "v": coord_layout()})
        self.out_layout = data.StructLayout({
            "point": range(C), "y": coord_layout(), "v": coord_layout()})
        super().__init__({
            "issue": In(stream.Signature(range(C), always_ready=True)),
            "stage1": Out(stream.Signature(range(C), always_ready=True)),
            "i": In(self.in_layout),
            "exaggerate": In(1), "shift": In(3), "momentum": In(fp.MOMENTUM_FRAC_BITS),
            "learning_rate": In(4 + fp.LR_FRAC_BITS), "gain": In(GAIN_BITS),
            "o": Out(stream.Signature(self.out_layout, always_ready=True)),
        })

    def elaborate(self, platform):
        m = Module()
        geo = self.geometry
        C = geo.capacity
        coord = coord_layout()
        x = self.i
        L = _DSP_LOW
        m.d.sync += [self.stage1.valid.eq(self.issue.valid),
                     self.stage1.payload.eq(self.issue.payload)]
        # the point's index, Y and valid ride along: taps[s] is stage s + 1
        valid = _delay(m, self.stage1.valid, self.latency, "uv")
        point = _delay(m, self.stage1.payload, self.latency, "ui")
        y_in = _delay(m, x.y, self.latency - 1, "uy")   # beside the velocity sum, the last stage
        axes = ("x", "y")
        # stage 2: the gathered values; Fr * gain as four registered partial products (Fr and
        # gain split at bit 17: every product fits one 18 x 18 multiplier, nothing behind it)
        u2_fa, u2_v = Signal(geo.pair(geo.fa_width)), Signal(coord)
        g_lo, g_hi = self.gain[:L], self.gain[L:]
        pr = {}
        for a in axes:
            fr = x.fr[a]
            fr_lo, fr_hi = fr[:L], fr[L:].as_signed()
            pr[a] = [Signal(signed(2 * L + 1), name=f"u2_pr_ll_{a}"),
                     Signal(signed(L + len(g_hi) + 1), name=f"u2_pr_lh_{a}"),
                     Signal(signed(len(fr_hi) + L + 1), name=f"u2_pr_hl_{a}"),
                     Signal(signed(len(fr_hi) + len(g_hi) + 1), name=f"u2_pr_hh_{a}")]
            m.d.sync += [pr[a][0].eq(fr_lo * g_lo), pr[a][1].eq(fr_lo * g_hi),
                         pr[a][2].eq(fr_hi * g_lo), pr[a][3].eq(fr_hi * g_hi)]
        m.d.sync += [u2_fa.eq(x.fa), u2_v.eq(x.v)]
        # stage 3: exaggerated attraction; rep = (Fr * gain) >> 16 from the partial products
        # (exact: the terms above bit 16 are multiples of 2**16); momentum * V as two partial
        # products (V split at bit 17)
        att_w = geo.fa_width + 7
        rep_w = geo.fr_width + GAIN_BITS - 16 + 1
        u3_att, u3_rep, u3_mv = {}, {}, {}
        for a in axes:
            ll, lh, hl, hh = pr[a]
            u3_att[a] = Signal(signed(att_w), name=f"u3_att_{a}")
            u3_rep[a] = Signal(signed(rep_w), name=f"u3_rep_{a}")
            hi_lo = Signal(signed(rep_w), name=f"u3_rep_hl_{a}")      # hh << 2L - 16 | ll >> 16
            mid = Signal(signed(rep_w), name=f"u3_rep_mid_{a}")
            m.d.comb += [hi_lo.eq(Cat(ll[16:2 * L], hh).as_signed()), mid.eq(lh + hl)]
            v = u2_v[a]
            u3_mv[a] = [Signal(unsigned(fp.MOMENTUM_FRAC_BITS + L), name=f"u3_mv_lo_{a}"),
                        Signal(signed(fp.MOMENTUM_FRAC_BITS + Y_WIDTH - L + 1),
                               name=f"u3_mv_hi_{a}")]
            # stage 3 registers the partial sums, stage 3b adds them (two chained adders in one
            # cycle were the engine's critical path); att and momentum * V wait a stage
            att3, hl3, mid3 = (Signal(signed(att_w), name=f"u3a_att_{a}"),
                               Signal(signed(rep_w), name=f"u3a_hl_{a}"),
                               Signal(signed(rep_w), name=f"u3a_mid_{a}"))
            mv3 = [Signal(s.shape(), name=s.name.replace("u3_", "u3a_")) for s in u3_mv[a]]
            m.d.sync += [
                att3.eq(Mux(self.exaggerate, u2_fa[a] << self.shift, u2_fa[a])),
                hl3.eq(hi_lo), mid3.eq(mid),
                mv3[0].eq(self.momentum * v[:L]),
                mv3[1].eq(self.momentum * v[L:].as_signed()),
                u3_att[a].eq(att3),
                u3_rep[a].eq(hl3 + (mid3 << (L - 16))),
                u3_mv[a][0].eq(mv3[0]), u3_mv[a][1].eq(mv3[1]),
            ]
        # stage 4: (att >> 1) + rep; (momentum * V) >> 8 from its two products
        # stage 5: F, that sum saturated where that cannot change the clipped velocity (to
        # [-F_SAT, F_SAT - 1], 35 bits: with lr >= 1, (lr * (F_SAT - 1)) >> 8 still drives V past
        # the clip bound; lr = 0 ignores F). The sum and its saturation are registered apart: an
        # adder and the bounds test behind it in one cycle were the engine's critical path.
        f_w = bits_for(F_SAT - 1) + 1
        assert F_SAT == 1 << (f_w - 1)
        u4_s, u4_mv, u5_f, u5_mv = {}, {}, {}, {}
        for a in axes:
            s = (u3_att[a] >> 1) + u3_rep[a]
            u4_s[a] = Signal(s.shape(), name=f"u4_s_{a}")
            u4_mv[a] = Signal(signed(Y_WIDTH), name=f"u4_mv_{a}")
            u5_f[a] = Signal(signed(f_w), name=f"u5_f_{a}")
            u5_mv[a] = Signal(signed(Y_WIDTH), name=f"u5_mv_{a}")
            lo, hi = u3_mv[a]
            m.d.sync += [
                u4_s[a].eq(s),
                u4_mv[a].eq((hi << (L - 8)) + (lo >> 8)),
                u5_f[a].eq(_saturate(u4_s[a], f_w)),
                u5_mv[a].eq(u4_mv[a]),
            ]
        # stage 6: lr * F as two partial products (F split at bit 17: 17 + 18 bits)
        lr = self.learning_rate
        u6_p, u6_mv = {}, {}
        for a in axes:
            f = u5_f[a]
            u6_p[a] = [Signal(unsigned(len(lr) + L), name=f"u6_lf_lo_{a}"),
                       Signal(signed(len(lr) + f_w - L + 1), name=f"u6_lf_hi_{a}")]
            u6_mv[a] = Signal(signed(Y_WIDTH), name=f"u6_mv_{a}")
            m.d.sync += [u6_p[a][0].eq(lr * f[:L]), u6_p[a][1].eq(lr * f[L:].as_signed()),
                         u6_mv[a].eq(u5_mv[a])]
        # stage 7: the velocity before the clip: ((lr * F) >> 8) + ((momentum * V) >> 8)
        vs_w = f_w + 13
        u7_vs = {}
        for a in axes:
            lo, hi = u6_p[a]
            u7_vs[a] = Signal(signed(vs_w), name=f"u7_vs_{a}")
            m.d.sync += u7_vs[a].eq((hi << (L - 8)) + (lo >> 8) + u6_mv[a])
        # stage 8: clipped velocity, and the position's sum Y + V from it (registered beside
        # it, so only the position's saturation, bit tests, lies before the Y memories' write
        # ports, which fan out to every copy of the Y RAM)
        assert (fp.Y_MIN, fp.Y_MAX) == (-(1 << (Y_WIDTH - 1)), (1 << (Y_WIDTH - 1)) - 1)
        u8_v = Signal(coord)
        u8_p = {a: Signal(signed(Y_WIDTH + 1), name=f"u8_p_{a}") for a in axes}
        y7 = y_in[-1]
        for a in axes:
            v_clipped = _saturate(u7_vs[a], Y_WIDTH)
            m.d.sync += [u8_v[a].eq(v_clipped), u8_p[a].eq(y7[a] + v_clipped)]
        m.d.comb += [
            self.o.valid.eq(valid[-1]), self.o.payload.point.eq(point[-1]),
            self.o.payload.v.eq(u8_v),
            self.o.payload.y.x.eq(_saturate(u8_p["x"], Y_WIDTH)),
            self.o.payload.y.y.eq(_saturate(u8_p["y"], Y_WIDTH)),
        ]
        return m


class SerialUpdate(UpdateDatapath):
    """:class:`UpdateDatapath`'s step, one point in :attr:`interval` cycles, with no multiplier.

    For a device with few DSP blocks and logic cells (the iCE40 UP5K has 8 and 5 280): the
    three products by the iteration's unsigned constants — ``momentum * V``, ``Fr * gain``,
    ``lr * F`` — are shift-adds over the constant's bits, LSB first, one bit per cycle, both
    axes at once, in one accumulator per axis: each step ``acc = (acc + bit * (x << (w - s)))
    >> 1`` (arithmetic), so after the ``w`` bits of the constant ``acc = floor(x * c / 2**s)``
    exactly (floor halvings compose: ``floor((floor(a / 2) + b) / 2) = floor((a + 2b) / 4)``).
    The result equals :class:`UpdateDatapath`'s (and :func:`nms.verif.models.desne.embed`)
    bit for bit.

    ``stage1`` (the point whose gathered values are on ``i``) is taken while the unit is idle;
    ``o`` carries its new ``Y``/``V`` :attr:`latency` cycles later, and the unit takes the next
    point one cycle after that: the controller issues a point every :attr:`interval` cycles.
    Ports as :class:`UpdateDatapath`.
    """

    #: steps of the three shift-adds: momentum (Q0.8), gain (Q16.16), learning rate (Q4.8)
    _STEPS = (fp.MOMENTUM_FRAC_BITS, GAIN_BITS, 4 + fp.LR_FRAC_BITS)
    #: stage1 -> o: the latch cycle, the three shift-adds, F, the velocity, the output beat
    latency = 1 + sum(_STEPS) + 1 + 1
    interval = latency + 1

    # the same parameters and ports as UpdateDatapath (its __init__)

    def elaborate(self, platform):
        m = Module()
        geo = self.geometry
        x = self.i
        axes = ("x", "y")
        f_w = bits_for(F_SAT - 1) + 1
        n_mom, n_gain, n_lr = self._STEPS
        # operands, scaled so that each product's w - s shift is in the operand:
        # momentum * V >> 8 (w = s = 8), Fr * gain >> 16 (w = 32, s = 16), lr * F >> 8 (w = 12)
        shift_rep = GAIN_BITS - 16
        shift_lf = n_lr - fp.LR_FRAC_BITS
        acc_w = max(Y_WIDTH, geo.fr_width + shift_rep, f_w + shift_lf) + 2
        m.d.sync += [self.stage1.valid.eq(self.issue.valid),
                     self.stage1.payload.eq(self.issue.payload)]

        point = Signal(range(geo.capacity))
        att_half = {a: Signal(signed(geo.fa_width + 7), name=f"s_att_{a}") for a in axes}
        fr = {a: Signal(signed(geo.fr_width), name=f"s_fr_{a}") for a in axes}
        y = Signal(coord_layout())
        v = Signal(coord_layout())
        f = {a: Signal(signed(f_w), name=f"s_f_{a}") for a in axes}
        mv = {a: Signal(signed(Y_WIDTH), name=f"s_mv_{a}") for a in axes}
        acc = {a: Signal(signed(acc_w), name=f"s_acc_{a}") for a in axes}
        v_new = Signal(coord_layout())
        pos = {a: Signal(signed(Y_WIDTH + 1), name=f"s_pos_{a}") for a in axes}
        bits = Signal(GAIN_BITS)                      # the constant, shifted right each step
        left = Signal(range(GAIN_BITS))               # steps left in this product
        phase = Signal(range(3))                      # 0: momentum * V, 1: Fr * gain, 2: lr * F
        m.d.comb += self.o.payload.point.eq(point)

        def operand(a):
            return Mux(phase == 0, v[a], Mux(phase == 1, fr[a] << shift_rep, f[a] << shift_lf))

        stepped = {a: (acc[a] + Mux(bits[0], operand(a), 0)) >> 1 for a in axes}
        with m.FSM(name="serial_update"):
            with m.State("IDLE"):
                with m.If(self.stage1.valid):
                    m.d.sync += [point.eq(self.stage1.payload), y.eq(x.y), v.eq(x.v),
                                 bits.eq(self.momentum), left.eq(n_mom - 1), phase.eq(0)]
                    for a in axes:
                        att = Mux(self.exaggerate, x.fa[a] << self.shift, x.fa[a])
                        m.d.sync += [att_half[a].eq(att >> 1), fr[a].eq(x.fr[a]), acc[a].eq(0)]
                    m.next = "MULTIPLY"
            with m.State("MULTIPLY"):
                m.d.sync += [bits.eq(bits >> 1), left.eq(left - 1)]
                m.d.sync += [acc[a].eq(stepped[a]) for a in axes]
                with m.If(left == 0):
                    with m.Switch(phase):
                        with m.Case(0):     # (momentum * V) >> 8 done: Fr * gain next
                            m.d.sync += [mv[a].eq(stepped[a]) for a in axes]
                            m.d.sync += [acc[a].eq(0) for a in axes]
                            m.d.sync += [bits.eq(self.gain), left.eq(n_gain - 1), phase.eq(1)]
                        with m.Case(1):     # rep = (Fr * gain) >> 16 done: F from it
                            m.next = "FORCE"
                        with m.Case(2):     # (lr * F) >> 8 done: the velocity
                            m.next = "VELOCITY"
            with m.State("FORCE"):
                # F = (att >> 1) + rep, saturated (see UpdateDatapath); lr * F next
                m.d.sync += [f[a].eq(_saturate(att_half[a] + acc[a], f_w)) for a in axes]
                m.d.sync += [acc[a].eq(0) for a in axes]
                m.d.sync += [bits.eq(self.learning_rate), left.eq(n_lr - 1), phase.eq(2)]
                m.next = "MULTIPLY"
            with m.State("VELOCITY"):
                for a in axes:
                    v_clipped = _saturate(acc[a] + mv[a], Y_WIDTH)
                    m.d.sync += [v_new[a].eq(v_clipped), pos[a].eq(y[a] + v_clipped)]
                m.next = "OUTPUT"
            with m.State("OUTPUT"):
                m.d.comb += [self.o.valid.eq(1), self.o.payload.v.eq(v_new),
                             self.o.payload.y.x.eq(_saturate(pos["x"], Y_WIDTH)),
                             self.o.payload.y.y.eq(_saturate(pos["y"], Y_WIDTH))]
                m.next = "IDLE"
        return m


# ------------------------------------------------------------------------------------------------
# initialisation, counters, controller
# ------------------------------------------------------------------------------------------------

#: phase handshake, the controller's view: ``start`` pulse out, ``done`` (last cycle) back
PHASE = wiring.Signature({"start": Out(1), "done": In(1)})


class Initialiser(wiring.Component):
    """Seed hashing and the initial coordinates (``desne._seed_bases``, ``init_embedding``).

    After ``run.start`` (which latches the counter ``2 * seed``): SEED hashes ``2*seed`` and
    ``2*seed + 1`` into ``base0`` and ``base1`` (``base1`` is handed out on ``base1`` for the
    sample counters); INIT hashes ``base0 + 2i + axis`` for every point and writes
    ``Y[i] = ((h & 0xFFFF) - 32768) >> INIT_SHIFT`` per axis and ``V[i] = 0``. ``run.done`` is
    high in the cycle of the last coordinate's write. The hash unit is outside (shared with
    pair lane 0).

    Attributes
    ----------
    run : In(PHASE)
    busy : Out(1)
    seed, n : In
    hash_req : Out(stream.Signature(32, always_ready=True))
    hash_rsp : In(stream.Signature(32, always_ready=True))
    base1 : Out(stream.Signature(32, always_ready=True))
        One beat: the second seed hash.
    y_w, v_w : write ports of the Y and V memories.
    """

    def __init__(self, *, capacity: int):
        check_int("capacity", capacity, 4, 1 << 16, "4 to 65536 points")
        self.capacity = capacity
        C = capacity
        super().__init__({
            "run": In(PHASE),
            "busy": Out(1),
            "seed": In(32), "n": In(range(C + 1)),
            "hash_req": Out(stream.Signature(32, always_ready=True)),
            "hash_rsp": In(stream.Signature(32, always_ready=True)),
            "base1": Out(stream.Signature(32, always_ready=True)),
            "y_w": In(WritePort.Signature(addr_width=ceil_log2(C), shape=coord_layout())),
            "v_w": In(WritePort.Signature(addr_width=ceil_log2(C), shape=coord_layout())),
        })

    def elaborate(self, platform):
        m = Module()
        C = self.capacity
        ctr = Signal(32)
        left = Signal(range(2 * C + 3))      # hash inputs still to issue
        got = Signal(range(2 * C + 3))       # hash outputs received
        # got == 2n - 1 (the last output), a register stepped with got: run.done reaches the
        # controller without the adder and compare in front of it
        got_last = Signal()
        base0 = Signal(32)
        x_tmp = Signal(signed(Y_WIDTH))
        h = self.hash_rsp
        hv = Signal(signed(17))
        m.d.comb += hv.eq(h.payload[:16] - 32768)
        init_val = hv >> fp.INIT_SHIFT
        m.d.comb += [self.hash_req.payload.eq(ctr), self.base1.payload.eq(h.payload),
                     self.y_w.addr.eq(got >> 1), self.v_w.addr.eq(got >> 1),
                     self.y_w.data.x.eq(x_tmp), self.y_w.data.y.eq(init_val),
                     self.v_w.data.eq(0)]

        def issue():
            m.d.comb += self.hash_req.valid.eq(left != 0)
            with m.If(left != 0):
                m.d.sync += [left.eq(left - 1), ctr.eq(ctr + 1)]

        with m.FSM() as fsm:
            with m.State("IDLE"):
                with m.If(self.run.start):
                    m.d.sync += [ctr.eq(Cat(Const(0, 1), self.seed[:31])), left.eq(2), got.eq(0)]
                    m.next = "SEED"
            with m.State("SEED"):
                issue()
                with m.If(h.valid):
                    m.d.sync += got.eq(1)
                    with m.If(got == 0):
                        m.d.sync += base0.eq(h.payload)
                    with m.Else():
                        m.d.comb += self.base1.valid.eq(1)
                        # (got_last: got == 2n - 1 is false at got = 0 for every n >= 1)
                        m.d.sync += [got.eq(0), got_last.eq(0), ctr.eq(base0),
                                     left.eq(self.n << 1)]
                        m.next = "INIT"
            with m.State("INIT"):
                issue()
                m.d.comb += [self.y_w.en.eq(h.valid & got[0]), self.v_w.en.eq(h.valid & got[0])]
                with m.If(h.valid):
                    m.d.sync += [got.eq(got + 1), got_last.eq(got + 1 == (self.n << 1) - 1)]
                    with m.If(~got[0]):
                        m.d.sync += x_tmp.eq(init_val)
                    with m.If(got_last):
                        m.d.comb += self.run.done.eq(1)
                        m.next = "IDLE"
        m.d.comb += self.busy.eq(~fsm.ongoing("IDLE"))
        return m


def perf_layout():
    """The engine's counters: ``{cycles, pair_cycles, pair_items, rep_cycles, rep_items,
    y_reads}``."""
    return data.StructLayout({
        "cycles": unsigned(32), "pair_cycles": unsigned(32), "pair_items": unsigned(32),
        "rep_cycles": unsigned(32), "rep_items": unsigned(32), "y_reads": unsigned(32)})


class PerfCounters(wiring.Component):
    """The ``perf`` counters of a job (cleared by ``clear``).

    ``cycles`` while ``busy``; while ``pairs`` (the pair phase after its start cycle):
    ``pair_cycles`` +1 and ``pair_items`` + issued pairs of all lanes; if some lane issued a
    repulsive pair, ``rep_cycles`` +1 and ``rep_items`` + those pairs. ``y_reads`` + the number
    of Y-memory read ports enabled this cycle (every Y word read, whatever the phase). The event
    counters run a cycle behind their events (``cycles`` does not).

    Attributes
    ----------
    clear, busy, pairs : In(1)
    issue, rep_issue : In(pair_units)
        Per lane: a pair / a repulsive pair is issued.
    y_read : In(y_ports)
        Per Y read port (two per lane and the update / output port): its enable.
    perf : Out(perf_layout)
    """

    def __init__(self, *, pair_units: int):
        check_int("pair_units", pair_units, 1, 16, "1 to 16 lanes")
        self.pair_units = pair_units
        self.y_ports = 2 * pair_units + 1
        super().__init__({
            "clear": In(1), "busy": In(1), "pairs": In(1),
            "issue": In(pair_units), "rep_issue": In(pair_units),
            "y_read": In(self.y_ports),
            "perf": Out(perf_layout()),
        })

    def elaborate(self, platform):
        m = Module()
        U, perf = self.pair_units, self.perf
        issue_count = Signal(range(U + 1))
        rep_count = Signal(range(U + 1))
        y_count = Signal(range(self.y_ports + 1))
        # the events' counts are registered, then added (a cycle later): the enables come from
        # the controller's and the lanes' decode logic, and with the popcount and a 32-bit adder
        # behind them in one cycle they were the engine's critical path. No count is in flight
        # when a job starts (no event in IDLE) or when it ends (the last Y read comes at least
        # a cycle before the last coordinate's handshake drops busy)
        pairs = Signal()
        m.d.sync += [issue_count.eq(sum((self.issue[u] for u in range(U)), Const(0, range(U + 1)))),
                     rep_count.eq(sum((self.rep_issue[u] for u in range(U)),
                                      Const(0, range(U + 1)))),
                     y_count.eq(sum((self.y_read[p] for p in range(self.y_ports)),
                                    Const(0, range(self.y_ports + 1)))),
                     pairs.eq(self.pairs)]
        m.d.sync += perf.y_reads.eq(perf.y_reads + y_count)
        with m.If(pairs):
            m.d.sync += [perf.pair_cycles.eq(perf.pair_cycles + 1),
                         perf.pair_items.eq(perf.pair_items + issue_count)]
            with m.If(rep_count != 0):
                m.d.sync += [perf.rep_cycles.eq(perf.rep_cycles + 1),
                             perf.rep_items.eq(perf.rep_items + rep_count)]
        with m.If(self.busy):
            m.d.sync += perf.cycles.eq(perf.cycles + 1)
        with m.If(self.clear):        # last: a config beat restarts every counter
            m.d.sync += [perf.eq(0), issue_count.eq(0), rep_count.eq(0), y_count.eq(0),
                         pairs.eq(0)]
        return m


class EmbeddingController(wiring.Component):
    """Job sequencing of the engine: IDLE, LOAD, INIT, START, (PAIRS, DIVIDE, UPDATE) x n_iter,
    OUTPUT.

    * IDLE accepts ``config`` and latches it (``n`` clamped to ``[2, C]``, ``kk`` to ``[1, k]``);
      from the next cycle on, ``sweep`` issues the scatter-bank entries ``0 .. n-1`` to clear,
      one per cycle, so the banks start every job zeroed whatever an abort or reset left in
      them (entries ``>= n`` are never read in this job). The sweep runs during LOAD and ends
      no later than the final list beat (``n <= n * kk`` beats of one cycle at least); the
      final beat is refused until the sweep ends (an interlock that never stalls);
    * LOAD writes the ``n * kk`` list beats to ``knn[i * k + e]`` (each in the cycle after its
      handshake, from registers), then starts the
      :class:`Initialiser` (``init``) and waits for it (the sample counter base comes on
      ``init_base1``);
    * START (one cycle, after the initialisation) and the update tail's last cycle carry the
      registered ``start_pairs`` (and ``clear_wsum``) pulse of the next pair phase;
    * PAIRS waits until the lanes have been
      idle for ``pair_drain`` cycles (``pairs_active`` low);
    * DIVIDE starts the gain divider (``div_start``) and takes its result (``div_result``), no
      earlier than ``divide_min`` cycles after ``div_start``;
    * UPDATE issues the points ``0 .. n-1`` on ``update_issue`` (one per ``update_interval``
      cycles; the Y/V read addresses; ``update_read`` carries each one a cycle before its issue,
      from DIVIDE's last cycle on: the lanes' bank read addresses, whose words come through two
      registers); ``update_tail``
      cycles after the last issue the next iteration starts (the sample counters move on by
      ``n * S``) or OUTPUT (the engine's :data:`UPDATE_TAIL` says why that is late enough);
    * OUTPUT streams ``Y[0 .. n-1]`` from ``y_rd`` on ``coords`` (the read port's enable holds a
      stalled beat stable).

    ``y_rd.en`` is high only for the reads used — one per update issue and one per output
    coordinate — so it counts the update's and the output's Y reads (``n`` per iteration, ``n``
    per job).

    ``exaggerate`` (``t < exaggeration_iters``) and ``momentum`` (early while
    ``t < momentum_switch``) are this iteration's (registers, a cycle behind ``t``); ``busy`` is
    high from the config beat to the last coordinate's handshake.
    """

    def __init__(self, *, capacity: int, k: int, neg_samples: int, pair_drain: int,
                 divide_min: int, update_tail: int, update_interval: int = 1):
        geo = self.geometry = _lane_geometry(capacity, k, neg_samples, 1)
        check_int("pair_drain", pair_drain, 1, 256, "1 to 256 cycles")
        check_int("divide_min", divide_min, 1, GAIN_BITS + 1, f"1 to {GAIN_BITS + 1} cycles")
        check_int("update_tail", update_tail, 2, 256, "2 to 256 cycles")
        check_int("update_interval", update_interval, 1, 256, "1 to 256 cycles")
        self.pair_drain, self.update_tail = pair_drain, update_tail
        self.update_interval = update_interval
        self.divide_min = divide_min
        C, K = capacity, k
        self.config_layout = config_layout(geo)
        self.knn_layout = data.StructLayout({"index": unsigned(geo.index_width),
                                             "p": unsigned(fp.P_BITS)})
        super().__init__({
            "config": In(stream.Signature(self.config_layout)),
            "knn": In(stream.Signature(self.knn_layout)),
            "knn_w": In(WritePort.Signature(addr_width=ceil_log2(C * K), shape=self.knn_layout)),
            "coords": Out(stream.Signature(coord_layout())),
            "y_rd": In(ReadPort.Signature(addr_width=ceil_log2(C), shape=coord_layout())),
            "busy": Out(1),
            "n": Out(range(C + 1), init=2), "nm1": Out(range(C)), "kk": Out(range(K + 1), init=1),
            "seed": Out(32), "iter_base": Out(32), "gain": Out(GAIN_BITS),
            "exaggerate": Out(1), "shift": Out(3), "momentum": Out(fp.MOMENTUM_FRAC_BITS),
            "learning_rate": Out(4 + fp.LR_FRAC_BITS),
            "init": Out(PHASE),
            "init_base1": In(stream.Signature(32, always_ready=True)),
            "start_pairs": Out(1), "clear_wsum": Out(1), "in_pairs": Out(1),
            "perf_pairs": Out(1), "pairs_active": In(1),
            "div_start": Out(1),
            "div_result": In(stream.Signature(GAIN_BITS)),
            "in_update": Out(1),
            "update_issue": Out(stream.Signature(range(C), always_ready=True)),
            "update_read": Out(stream.Signature(range(C), always_ready=True)),
            "sweep": Out(stream.Signature(range(C), always_ready=True)),
        })

    def elaborate(self, platform):
        m = Module()
        geo = self.geometry
        C, K, S = geo.capacity, geo.k, geo.neg_samples
        # job-start clear sweep of the scatter banks (entries 0 .. n-1, one per cycle)
        sweep_act = self.sweep.valid
        sweep_i = self.sweep.payload
        sweep_ends = ~sweep_act | (sweep_i == self.nm1)      # finished, or finishing now
        with m.If(sweep_act):
            m.d.sync += sweep_i.eq(sweep_i + 1)
            with m.If(sweep_i == self.nm1):
                m.d.sync += sweep_act.eq(0)
        cfg = self.config.payload
        n, kk = self.n, self.kk
        kkm1 = Signal(range(K))          # kk - 1 (and self.nm1 = n - 1): registers for compares
        n_iter, ex_iters, mom_switch = Signal(ITER_BITS), Signal(ITER_BITS), Signal(ITER_BITS)
        mom_early = Signal(fp.MOMENTUM_FRAC_BITS)
        mom_late = Signal(fp.MOMENTUM_FRAC_BITS)
        t = Signal(ITER_BITS)            # current iteration
        quiet = Signal(range(max(self.pair_drain, self.update_tail, GAIN_BITS + 1) + 2))
        upd_act = Signal()
        upd_i = Signal(range(C))
        # cycles to the next update issue (a serial update takes a point every P cycles)
        P = self.update_interval
        upd_wait = Signal(range(P))
        upd_now = Signal()               # an update issue in this cycle
        m.d.comb += upd_now.eq(upd_act & self.in_update & (upd_wait == 0))
        out_ptr = Signal(range(C + 1))
        out_fetch = Signal()
        load_e = Signal(range(K))
        load_i = Signal(range(C))
        load_base = Signal(range(C * K))
        # "load_e is the last beat of a list" / "load_i is the last list": registers set with
        # every step of the counters, so the handshake does not wait on two compares (the
        # compares into the counters' resets were the engine's critical path)
        e_last, i_last = Signal(), Signal()
        m.d.comb += [
            self.y_rd.addr.eq(upd_i),
            # read Y only where the data is used: an update issue, or the next output beat
            self.y_rd.en.eq(upd_now | (out_fetch & (out_ptr != n))),
            self.update_issue.valid.eq(upd_now),
            self.update_issue.payload.eq(upd_i),
            self.coords.payload.eq(self.y_rd.data),
            self.perf_pairs.eq(self.in_pairs & ~self.start_pairs),
        ]
        with m.If(self.init_base1.valid):
            m.d.sync += self.iter_base.eq(self.init_base1.payload)
        # the list writes a cycle behind their beats, from registers (the write enable fans
        # out to every block RAM of the list memory)
        knn_w_en = Signal()
        m.d.sync += knn_w_en.eq(0)
        m.d.comb += self.knn_w.en.eq(knn_w_en)
        # registered (a cycle behind t, which is set long before an update uses them): the
        # compares stay off the update's multiplier inputs
        m.d.sync += [self.exaggerate.eq(t < ex_iters),
                     self.momentum.eq(Mux(t < mom_switch, mom_early, mom_late))]
        # likewise the iteration-count compares that choose the next phase
        no_iter, last_iter = Signal(), Signal()
        # the banks' read address is a register of its own, a step ahead of upd_i
        with m.If(self.update_read.valid):
            m.d.sync += self.update_read.payload.eq(self.update_read.payload + 1)
        # (t == n_iter - 1 with n_iter - 1 a register: no adder in front of the compare)
        n_iter_m1 = Signal(ITER_BITS)
        m.d.sync += [no_iter.eq(n_iter == 0), last_iter.eq((t == n_iter_m1) & (n_iter != 0))]

        # start_pairs / clear_wsum come from a register set a cycle ahead (they fan out to every
        # lane's sequencer; decoded from the FSM they were the engine's critical path): high in
        # the last cycle before PAIRS, as a pulse
        start_r = Signal()
        m.d.sync += start_r.eq(0)
        m.d.comb += [self.start_pairs.eq(start_r), self.clear_wsum.eq(start_r)]
        div_r = Signal()                 # likewise div_start, a pulse from a register
        m.d.sync += div_r.eq(0)
        m.d.comb += self.div_start.eq(div_r)

        def to_output():
            m.d.sync += [out_ptr.eq(0), self.coords.valid.eq(0)]
            m.next = "OUTPUT"

        with m.FSM(name="ctrl"):
            with m.State("IDLE"):
                m.d.comb += self.config.ready.eq(1)
                with m.If(self.config.valid):
                    m.d.sync += [
                        n.eq(_clip(cfg.n, 2, C)), self.nm1.eq(_clip(cfg.n, 2, C) - 1),
                        kk.eq(_clip(cfg.kk, 1, K)), kkm1.eq(_clip(cfg.kk, 1, K) - 1),
                        n_iter.eq(cfg.n_iter), n_iter_m1.eq(cfg.n_iter - 1),
                        ex_iters.eq(cfg.exaggeration_iters),
                        self.shift.eq(cfg.exaggeration_shift),
                        mom_early.eq(cfg.momentum_early), mom_late.eq(cfg.momentum_late),
                        mom_switch.eq(cfg.momentum_switch),
                        self.learning_rate.eq(cfg.learning_rate), self.seed.eq(cfg.seed),
                        load_e.eq(0), load_i.eq(0), load_base.eq(0), self.busy.eq(1),
                        e_last.eq(_clip(cfg.kk, 1, K) == 1), i_last.eq(0),   # n >= 2
                        sweep_act.eq(1), sweep_i.eq(0),
                    ]
                    m.next = "LOAD"
            with m.State("LOAD"):
                # interlock: the lanes must not see the banks before the sweep has ended
                final_beat = e_last & i_last
                m.d.comb += self.knn.ready.eq(~final_beat | sweep_ends)
                with m.If(self.knn.valid & self.knn.ready):
                    m.d.sync += [knn_w_en.eq(1), self.knn_w.addr.eq(load_base + load_e),
                                 self.knn_w.data.eq(self.knn.payload)]
                    with m.If(e_last):
                        m.d.sync += [load_e.eq(0), load_i.eq(load_i + 1),
                                     load_base.eq(load_base + K),
                                     e_last.eq(kkm1 == 0), i_last.eq(load_i + 1 == self.nm1)]
                        with m.If(i_last):
                            m.d.comb += self.init.start.eq(1)
                            m.next = "INIT"
                    with m.Else():
                        m.d.sync += [load_e.eq(load_e + 1), e_last.eq(load_e + 1 == kkm1)]
            with m.State("INIT"):
                with m.If(self.init.done):
                    m.d.sync += t.eq(0)
                    with m.If(no_iter):
                        to_output()
                    with m.Else():
                        m.d.sync += start_r.eq(1)
                        m.next = "START"
            with m.State("START"):
                # one cycle per job: the start pulse of the first pair phase (init.done comes
                # no earlier than the last coordinate's write)
                m.next = "PAIRS"
            with m.State("PAIRS"):
                m.d.comb += self.in_pairs.eq(1)
                with m.If(self.pairs_active):
                    m.d.sync += quiet.eq(0)
                with m.Else():
                    # the lanes stay idle once idle (they start only on start_pairs), so the
                    # divider's start can be registered a cycle ahead (it enables every
                    # divider register: decoded here it was the engine's critical path)
                    m.d.sync += quiet.eq(quiet + 1)
                    with m.If(quiet == self.pair_drain - 1):
                        m.d.sync += div_r.eq(1)
                    with m.If(quiet == self.pair_drain):
                        m.next = "DIVIDE"
                        m.d.sync += [quiet.eq(1),            # cycles since div_start
                                     self.update_read.payload.eq(0)]
            with m.State("DIVIDE"):
                # the gain is taken divide_min cycles after div_start at the earliest (only a
                # saturated, one-cycle division is ever that early)
                m.d.comb += self.div_result.ready.eq(quiet >= self.divide_min)
                with m.If(quiet < self.divide_min):
                    m.d.sync += quiet.eq(quiet + 1)
                with m.If(self.div_result.valid & self.div_result.ready):
                    m.d.comb += self.update_read.valid.eq(1)
                    m.d.sync += [self.gain.eq(self.div_result.payload), upd_act.eq(1),
                                 upd_i.eq(0), upd_wait.eq(0), quiet.eq(0)]
                    m.next = "UPDATE"
            with m.State("UPDATE"):
                m.d.comb += self.in_update.eq(1)
                with m.If(upd_act & (upd_wait != 0)):
                    m.d.sync += upd_wait.eq(upd_wait - 1)
                    # the banks' address steps in the cycle before the next issue
                    m.d.comb += self.update_read.valid.eq(upd_wait == 1)
                with m.Elif(upd_act):
                    m.d.sync += [upd_i.eq(upd_i + 1), upd_wait.eq(P - 1)]
                    if P == 1:      # the next issue is in the next cycle
                        m.d.comb += self.update_read.valid.eq(upd_i != self.nm1)
                    with m.If(upd_i == self.nm1):
                        # the next iteration's sample counters start N * S further on (set
                        # here, not with start_pairs, which already reads the new value)
                        m.d.sync += [upd_act.eq(0), self.iter_base.eq(self.iter_base + n * S)]
                with m.Else():
                    m.d.sync += quiet.eq(quiet + 1)
                    with m.If((quiet == self.update_tail - 2) & ~last_iter):
                        m.d.sync += start_r.eq(1)                # for the cycle below
                    with m.If(quiet == self.update_tail - 1):    # the last issue + tail
                        m.d.sync += [t.eq(t + 1), quiet.eq(0)]
                        with m.If(last_iter):
                            to_output()
                        with m.Else():
                            m.next = "PAIRS"
            with m.State("OUTPUT"):
                # the read port holds its data while disabled, so a stalled beat stays stable
                m.d.comb += [out_fetch.eq(~self.coords.valid | self.coords.ready),
                             self.y_rd.addr.eq(out_ptr)]
                with m.If(out_fetch):
                    with m.If(out_ptr != n):
                        m.d.sync += [self.coords.valid.eq(1), out_ptr.eq(out_ptr + 1)]
                    with m.Else():
                        m.d.sync += [self.coords.valid.eq(0), self.busy.eq(0)]
                        m.next = "IDLE"
        return m


#: the engine's fixed latencies: issue -> pair-unit input (hash, partner product with the wrap
#: in logic to the Y read address, the RAM's register, one register behind it), the pair unit,
#: and the update pipeline (issue, read data, datapath stages)
FRONT_LATENCY = Hash32.latency + PartnerIndex.latency + 2
#: The pair phase's drain: with the last issue in cycle T (``pairs_active`` low from T + 1) the
#: divider starts in cycle D = T + 1 + PAIR_DRAIN, when the kernel sum must be final: its last
#: term is added in T + FRONT_LATENCY + PairUnit.latency.
PAIR_DRAIN = FRONT_LATENCY + PairUnit.latency
#: the same with :class:`SerialPairUnit`
SERIAL_PAIR_DRAIN = FRONT_LATENCY + SerialPairUnit.latency
#: The earliest the controller takes the gain, in cycles after D (a saturated gain is ready in
#: D + 1, any other in D + GAIN_BITS + 1): the update's first bank read (``update_read``) is in
#: that cycle, after the last scatter write in T + FRONT_LATENCY + PairUnit.latency +
#: ScatterBank.write_latency = D - 1 + ScatterBank.write_latency.
DIVIDE_MIN = ScatterBank.write_latency
assert DIVIDE_MIN <= GAIN_BITS + 1      # the cycle formula's division is never lengthened
UPDATE_LATENCY = 1 + UpdateDatapath.latency
#: The update's tail: with the last update issue in cycle L, the next phase starts in cycle
#: L + UPDATE_TAIL. The last Y/V write is in L + UPDATE_LATENCY; the next pair phase's first Y
#: read comes FRONT_LATENCY - 2 cycles after its first issue in L + UPDATE_TAIL + 1, and
#: OUTPUT reads Y[i] from L + UPDATE_TAIL + 1 + i on (Y[n - 1] written last, in L +
#: UPDATE_LATENCY), so both follow every write.
UPDATE_TAIL = 8
assert UPDATE_LATENCY < UPDATE_TAIL + 1 + FRONT_LATENCY - 2
#: OUTPUT reads Y[n - 1] in L + UPDATE_TAIL + n and the controller clips n to >= 2, so the
#: write must come before L + UPDATE_TAIL + 2
assert UPDATE_LATENCY < UPDATE_TAIL + 2
#: the same with :class:`SerialUpdate` (one point every ``SerialUpdate.interval`` cycles): the
#: tail covers its last write as above
SERIAL_UPDATE_LATENCY = 1 + SerialUpdate.latency
SERIAL_UPDATE_TAIL = SERIAL_UPDATE_LATENCY - 1
assert SERIAL_UPDATE_LATENCY < SERIAL_UPDATE_TAIL + 2


def pair_timing(serial_pairs: bool) -> tuple[int, int, int]:
    """``(latency, drain, interval)`` of the engine's pair unit (input -> term, the cycles from
    the last issue to the divider's start, cycles between issues)."""
    if serial_pairs:
        return SerialPairUnit.latency, SERIAL_PAIR_DRAIN, SerialPairUnit.interval
    return PairUnit.latency, PAIR_DRAIN, 1


def update_timing(serial_update: bool) -> tuple[int, int, int]:
    """``(latency, tail, interval)`` of the engine's update (issue -> Y/V write, the cycles
    from the last issue to the next phase, cycles between issues)."""
    if serial_update:
        return SERIAL_UPDATE_LATENCY, SERIAL_UPDATE_TAIL, SerialUpdate.interval
    return UPDATE_LATENCY, UPDATE_TAIL, 1


def iteration_cycles(n: int, kk: int, *, pair_units: int, neg_samples: int,
                     serial_update: bool = False, serial_pairs: bool = False) -> int:
    """Cycles of one embedding iteration without stalls (exact; asserted under Verilator).

    Pair issue ``ceil(n / U) * (kk + S)`` issues ``Q`` cycles apart (``Q * (pairs - 1) + 1``;
    ``Q = 1``, or ``SerialPairUnit.interval`` with ``serial_pairs``) + pair drain
    (:data:`PAIR_DRAIN`, :data:`SERIAL_PAIR_DRAIN`) + 1 + division
    (``GAIN_BITS + 1`` = 33 cycles; :data:`DIVIDE_MIN` when the gain saturates, ``Wsum <= n``,
    which the count does not assume) + ``n`` update issues ``P`` cycles apart
    (``P * (n - 1) + 1``; ``P = 1``, or ``SerialUpdate.interval`` with ``serial_update``) + the
    update's tail (:data:`UPDATE_TAIL`, :data:`SERIAL_UPDATE_TAIL`).

    Parameters
    ----------
    n, kk : int
        Points and list length of the job (after the engine's clamps).
    pair_units, neg_samples : int
        U and S of the engine.
    serial_update, serial_pairs : bool
        The engine's update is :class:`SerialUpdate`, its pair units :class:`SerialPairUnit`.
    """
    for name, value in (("n", n), ("kk", kk), ("pair_units", pair_units),
                        ("neg_samples", neg_samples)):
        check_int(name, value, 1, None, "a positive count")
    _, tail, interval = update_timing(_check_bool("serial_update", serial_update))
    _, drain, q = pair_timing(_check_bool("serial_pairs", serial_pairs))
    pairs = -(-n // pair_units) * (kk + neg_samples)
    return (q * (pairs - 1) + 1 + drain + 1 + (GAIN_BITS + 1) + interval * (n - 1) + 1
            + tail)


def config_layout(geo):
    """The engine's ``config`` beat (see :class:`EmbeddingEngine`)."""
    return data.StructLayout({
        "n": unsigned(geo.n_width),
        "kk": unsigned(bits_for(geo.k)),
        "n_iter": unsigned(ITER_BITS),
        "exaggeration_iters": unsigned(ITER_BITS),
        "exaggeration_shift": unsigned(3),
        "momentum_early": unsigned(fp.MOMENTUM_FRAC_BITS),
        "momentum_late": unsigned(fp.MOMENTUM_FRAC_BITS),
        "momentum_switch": unsigned(ITER_BITS),
        "learning_rate": unsigned(4 + fp.LR_FRAC_BITS),
        "seed": unsigned(32),
    })


# ------------------------------------------------------------------------------------------------
# the engine
# ------------------------------------------------------------------------------------------------

class EmbeddingEngine(wiring.Component):
    """DE-SNE 2-D embedding iterations with all state on chip (capacity C points).

    Protocol: one ``config`` beat starts a job (it is latched and held until the job ends), then
    ``N * k'`` beats on ``knn`` load the neighbour lists (point 0's k' entries first), then the
    engine initialises the coordinates, runs ``n_iter`` iterations and sends the ``N`` final
    coordinates on ``coords`` in index order; after the last one it accepts the next ``config``.
    The result equals ``nms.verif.models.desne.embed(nbr, P, cfg, seed)`` bit for bit.

    Parameters
    ----------
    capacity : int
        C, the most points per job (4 .. 65536).
    k : int
        Longest neighbour list (1 .. 64, ``k < capacity``).
    neg_samples : int
        Negative samples per point and iteration (1 .. 64).
    pair_units : int
        U, parallel pair units (a power of two, 1 .. 16, ``<= capacity``). The pair phase takes
        ``ceil(N / U) * (k' + neg_samples)`` cycles.
    hold_self : bool
        The pair front end's Y reads (``docs/energy.md`` §4, ``nms.sw.dataflow.Dataflow``).
        ``True`` (default; the chosen dataflow ``nms.sw.dataflow.CHOSEN``): each lane issues
        the ``k' + S`` pairs of a point back to back and reads the own point's ``Y[i]`` once,
        holding it for them, so a pair reads only its partner ``Y[j]`` —
        ``pairs + 2·n_iter·N + N`` Y reads per job. ``False``: the previous engine, attractive
        pairs of all points then repulsive ones, ``Y[i]`` and ``Y[j]`` read for every pair —
        ``2·pairs + n_iter·N + N``. Same results, same cycle count (:meth:`iteration_cycles`).
    serial_update : bool
        The update step as :class:`SerialUpdate` (shift-adds, no multiplier, one point every
        ``SerialUpdate.interval`` cycles) instead of :class:`UpdateDatapath` (one point per
        cycle, 12 partial products in block multipliers): for a small device. Same results;
        the update phase takes ``interval`` times longer (:meth:`iteration_cycles`).
    serial_pairs : bool
        The pair units as :class:`SerialPairUnit` (shift-adds, no multiplier, a pair every
        ``SerialPairUnit.interval`` cycles per lane) instead of :class:`PairUnit`: for a small
        device. Same results; the pair phase takes ``interval`` times longer.

    Attributes
    ----------
    config : In(stream.Signature(config_layout))
        ``{n, kk, n_iter, exaggeration_iters, exaggeration_shift, momentum_early, momentum_late,
        momentum_switch, learning_rate, seed}``; ``n`` is clamped to ``[2, C]`` and ``kk`` (k')
        to ``[1, k]``. Accepted only while idle.
    knn : In(stream.Signature(knn_layout))
        ``{index: unsigned(index_width), p: unsigned(17)}``: neighbour index (must be < n) and
        its affinity P (Q1.16); ``n * kk`` beats per job.
    coords : Out(stream.Signature(coord_layout))
        ``{x, y}`` signed Q8.16 (24 bits), the final coordinates, point 0 first.
    busy : Out(1)
        High from the accepted config beat until the last coordinate is accepted.
    perf : Out(perf_layout)
        Counters of the current/last job (cleared by a config beat): ``cycles`` busy,
        ``pair_cycles`` in the pair phase, ``pair_items`` pairs issued (all units),
        ``rep_cycles`` cycles with a repulsive pair issued by some unit, ``rep_items``
        repulsive pairs issued, ``y_reads`` Y-memory words read (pair front ends, update,
        output; every read port is enabled only for a read that is used).

    Raises
    ------
    TypeError, ValueError
        A parameter of the wrong type or out of range; the message names it.
    """

    def __init__(self, *, capacity: int = 1024, k: int = 16, neg_samples: int = 8,
                 pair_units: int = 1, hold_self: bool = True, serial_update: bool = False,
                 serial_pairs: bool = False):
        check_int("capacity", capacity, 4, 1 << 16, "4 to 65536 points")
        check_int("k", k, 1, 64, "1 to 64 neighbours")
        if k >= capacity:
            raise ValueError(f"k={k} must be smaller than capacity={capacity}")
        check_int("neg_samples", neg_samples, 1, 64, "1 to 64 samples per point")
        check_int("pair_units", pair_units, 1, 16, "a power of two from 1 to 16")
        if pair_units & (pair_units - 1):
            raise ValueError(f"pair_units={pair_units} is not a power of two: use 1, 2, 4, 8 "
                             f"or 16")
        if pair_units > capacity:
            raise ValueError(f"pair_units={pair_units} exceeds capacity={capacity}")
        self.hold_self = _check_bool("hold_self", hold_self)
        self.serial_update = _check_bool("serial_update", serial_update)
        self.serial_pairs = _check_bool("serial_pairs", serial_pairs)
        self.capacity, self.k, self.neg_samples, self.pair_units = (
            capacity, k, neg_samples, pair_units)

        geo = self.geometry = _LaneGeometry(capacity, k, neg_samples, pair_units)
        self.unit_shift = geo.unit_shift
        self.unit_depth = geo.unit_depth                # points owned by one lane
        self.index_width = geo.index_width
        self.n_width = geo.n_width
        self.kk_width = bits_for(k)
        self.fa_width, self.fr_width, self.wsum_width = geo.fa_width, geo.fr_width, geo.wsum_width
        self.hash_latency = Hash32.latency
        # issue -> pair unit: hash (H) + j product (wrap to the Y address), Y data, register
        self.front_latency = FRONT_LATENCY
        # after the last issue: front end + pair unit (:data:`PAIR_DRAIN`; the scatter bank's
        # last write is covered by the division's minimum, :data:`DIVIDE_MIN`), and the
        # cycles between a lane's issues
        self.pair_latency, self.pair_drain, self.pair_interval = pair_timing(self.serial_pairs)
        # issue, stage 1 (read data), then the datapath's stages; the tail after the last issue
        # and the cycles between issues
        self.update_latency, self.update_tail, self.update_interval = update_timing(
            self.serial_update)

        self.config_layout = config_layout(geo)
        self.knn_layout = data.StructLayout({
            "index": unsigned(self.index_width), "p": unsigned(fp.P_BITS)})
        self.coord_layout = coord_layout()
        self.perf_layout = perf_layout()
        super().__init__({
            "config": In(stream.Signature(self.config_layout)),
            "knn": In(stream.Signature(self.knn_layout)),
            "coords": Out(stream.Signature(self.coord_layout)),
            "busy": Out(1),
            "perf": Out(self.perf_layout),
        })

    @property
    def parameters(self) -> dict:
        """Generator parameters (for metadata)."""
        return {"capacity": self.capacity, "k": self.k, "neg_samples": self.neg_samples,
                "pair_units": self.pair_units, "hold_self": self.hold_self,
                "serial_update": self.serial_update, "serial_pairs": self.serial_pairs}

    @property
    def derived(self) -> dict:
        """Derived widths, depths and latencies (for metadata)."""
        return {"index_width": self.index_width, "coord_width": Y_WIDTH,
                "fa_width": self.fa_width, "fr_width": self.fr_width,
                "wsum_width": self.wsum_width, "unit_depth": self.unit_depth,
                "knn_depth": self.capacity * self.k, "front_latency": self.front_latency,
                "pair_latency": self.pair_latency, "pair_drain": self.pair_drain,
                "update_latency": self.update_latency, "update_tail": self.update_tail,
                "update_interval": self.update_interval, "pair_interval": self.pair_interval,
                "iter_bits": ITER_BITS}

    def iteration_cycles(self, n: int, kk: int) -> int:
        """:func:`iteration_cycles` of this engine's pair units and negative samples."""
        return iteration_cycles(n, kk, pair_units=self.pair_units, neg_samples=self.neg_samples,
                                serial_update=self.serial_update,
                                serial_pairs=self.serial_pairs)


    def elaborate(self, platform):
        m = Module()
        geo = self.geometry
        C, K, U, LG = self.capacity, self.k, self.pair_units, self.unit_shift
        params = dict(capacity=C, k=K, neg_samples=self.neg_samples, pair_units=U)

        # ---- memories: Y and V (one write port each), the neighbour lists -------------------
        # No read-during-write logic (no_rw_check): no word read in the cycle its address is
        # written is used. Y/V are written by the initialisation (no reads) and by the update,
        # point i - UPDATE_LATENCY while point i is read (and the pair phase reads but does not
        # write); the lists are written in LOAD and read in PAIRS.
        _, y_upd, *y_lane, y_wr = block_ram(m, "ymem", self.coord_layout, C,
                                             read_ports=1 + 2 * U)   # update/output, lanes
        _, v_rd, v_wr = block_ram(m, "vmem", self.coord_layout, C)
        *knn_lane, knn_wr = sliced_block_ram(m, "knnmem", self.knn_layout, C * K, read_ports=U)
        # V is read a cycle ahead of the update issue (the banks' address) and its word goes
        # through one more register, which can sit at the RAM: a block RAM's 5.8 ns
        # clock-to-output plus the route to the update's multipliers did not fit in 8 ns
        m.d.comb += v_rd.en.eq(1)
        v_word = Signal(self.coord_layout)
        m.d.sync += v_word.eq(v_rd.data)

        # ---- controller, initialisation, divider, update, counters ---------------------------
        m.submodules.controller = ctrl = EmbeddingController(
            capacity=C, k=K, neg_samples=self.neg_samples, pair_drain=self.pair_drain,
            divide_min=DIVIDE_MIN, update_tail=self.update_tail,
            update_interval=self.update_interval)
        m.submodules.init = init = Initialiser(capacity=C)
        m.submodules.divider = div = GainDivider(n_width=self.n_width,
                                                 den_width=self.wsum_width)
        m.submodules.update = upd = (SerialUpdate if self.serial_update else UpdateDatapath)(
            **params)
        m.submodules.counters = perf = PerfCounters(pair_units=U)
        wiring.connect(m, wiring.flipped(self.config), ctrl.config)
        wiring.connect(m, wiring.flipped(self.knn), ctrl.knn)
        wiring.connect(m, ctrl.coords, wiring.flipped(self.coords))
        wiring.connect(m, ctrl.knn_w, knn_wr)
        wiring.connect(m, ctrl.y_rd, y_upd)
        wiring.connect(m, ctrl.init, init.run)
        wiring.connect(m, init.base1, ctrl.init_base1)
        wiring.connect(m, div.o, ctrl.div_result)
        wiring.connect(m, ctrl.update_issue, upd.issue)
        m.d.comb += [
            self.busy.eq(ctrl.busy), self.perf.eq(perf.perf),
            init.seed.eq(ctrl.seed), init.n.eq(ctrl.n),
            v_rd.addr.eq(ctrl.update_read.payload),
            upd.exaggerate.eq(ctrl.exaggerate), upd.shift.eq(ctrl.shift),
            upd.momentum.eq(ctrl.momentum), upd.learning_rate.eq(ctrl.learning_rate),
            upd.gain.eq(ctrl.gain),
            perf.clear.eq(ctrl.config.valid & ctrl.config.ready),
            perf.busy.eq(ctrl.busy), perf.pairs.eq(ctrl.perf_pairs),
        ]

        # ---- pair lanes ------------------------------------------------------------------------
        lanes = []
        for u in range(U):
            m.submodules[f"hash{u}"] = hsh = Hash32()
            m.submodules[f"lane{u}"] = lane = PairLane(unit=u, hold_self=self.hold_self,
                                                       serial=self.serial_pairs,
                                                       **params)
            wiring.connect(m, lane.y_self, y_lane[2 * u])
            wiring.connect(m, lane.y_part, y_lane[2 * u + 1])
            wiring.connect(m, lane.knn_r, knn_lane[u])
            m.d.comb += [
                lane.start.eq(ctrl.start_pairs), lane.n.eq(ctrl.n), lane.kk.eq(ctrl.kk),
                lane.nm1.eq(ctrl.nm1), lane.iter_base.eq(ctrl.iter_base),
                lane.clear_wsum.eq(ctrl.clear_wsum),
                # the banks are read a cycle ahead of the update issue (two registers behind)
                lane.update_addr.eq(ctrl.update_read.payload),
                # the update clears the scatter entry it has just read, for the next iteration
                # and the job-start sweep clears entries 0 .. n-1 during LOAD (never together)
                lane.clear.valid.eq(upd.stage1.valid | ctrl.sweep.valid),
                lane.clear.payload.eq(Mux(ctrl.sweep.valid, ctrl.sweep.payload,
                                          upd.stage1.payload)),
                lane.hash_rsp.eq(hsh.o.payload),
                perf.issue[u].eq(lane.issue), perf.rep_issue[u].eq(lane.issue & lane.mode),
            ]
            if u == 0:     # the initialisation borrows lane 0's hash unit
                wiring.connect(m, hsh.o, init.hash_rsp)
                with m.If(init.hash_req.valid):
                    m.d.comb += [hsh.i.payload.eq(init.hash_req.payload), hsh.i.valid.eq(1)]
                with m.Else():
                    m.d.comb += [hsh.i.payload.eq(lane.hash_req.payload),
                                 hsh.i.valid.eq(lane.hash_req.valid)]
            else:
                wiring.connect(m, lane.hash_req, hsh.i)
            lanes.append(lane)
        m.d.comb += [
            # every Y read port's enable: the lanes' own-point and partner ports, the update's
            perf.y_read.eq(Cat(*(p for lane in lanes for p in (lane.y_self.en, lane.y_part.en)),
                               ctrl.y_rd.en)),
            ctrl.pairs_active.eq(Cat(*(lane.act for lane in lanes)).any()),
            div.i.payload.n.eq(ctrl.n),
            div.i.payload.den.eq(sum((lane.wsum for lane in lanes), Const(0, self.wsum_width))),
            div.i.valid.eq(ctrl.div_start),
        ]

        # ---- update: gather Fa = own sum + all scatter banks, Fr from the owning lane --------
        fa_x = sum((lane.fa_scatter.x for lane in lanes), Const(0, signed(self.fa_width)))
        fa_y = sum((lane.fa_scatter.y for lane in lanes), Const(0, signed(self.fa_width)))
        if U > 1:
            own_l = Signal(geo.pair(self.fa_width))
            own_r = Signal(geo.pair(self.fr_width))
            with m.Switch(upd.stage1.payload[:LG]):
                for u, lane in enumerate(lanes):
                    with m.Case(u):
                        m.d.comb += [own_l.eq(lane.fa_own), own_r.eq(lane.fr_own)]
        else:
            own_l, own_r = lanes[0].fa_own, lanes[0].fr_own
        m.d.comb += [upd.i.fa.x.eq(fa_x + own_l.x), upd.i.fa.y.eq(fa_y + own_l.y),
                     upd.i.fr.eq(own_r), upd.i.y.eq(y_upd.data), upd.i.v.eq(v_word)]

        # ---- Y/V writes: the initial coordinates, or the update's results ----------------------
        res = upd.o.payload
        with m.If(init.y_w.en):
            m.d.comb += [y_wr.addr.eq(init.y_w.addr), y_wr.data.eq(init.y_w.data),
                         v_wr.addr.eq(init.v_w.addr), v_wr.data.eq(init.v_w.data)]
        with m.Else():
            m.d.comb += [y_wr.addr.eq(res.point), y_wr.data.eq(res.y),
                         v_wr.addr.eq(res.point), v_wr.data.eq(res.v)]
        m.d.comb += [y_wr.en.eq(init.y_w.en | upd.o.valid), v_wr.en.eq(init.v_w.en | upd.o.valid)]
        return m
