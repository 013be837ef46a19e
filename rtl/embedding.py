"""DE-SNE embedding engine: 2-D Student-t gradient iterations on chip, bit-exact with
:func:`nms.verif.models.desne.embed`.

See ``docs/rtl-embedding.md`` for the protocol, phases, memory map and cycle formula.

Structure (one component per concern):

* :class:`~nms.rtl.hash.Hash32` — counter hash for the initial coordinates and the negative
  samples (one per pair unit);
* :class:`~nms.rtl.recip.Recip1p` — ``1 / (1 + d2)`` through the reciprocal table;
* :class:`PairUnit` — one pair (i, j) per cycle: difference, squared distance, kernel, force
  term (attractive or repulsive, chosen per pair);
* :class:`GainDivider` — the once-per-iteration repulsion normaliser ``(N << 32) // Wsum``;
* :class:`EmbeddingEngine` — memories, sequencers, accumulators and the update datapath.

Why the accumulation is organised as it is: the model's sums are exact integers that never
saturate before the final clip, so their order is free. Each pair unit owns the points
``i = u, u + U, ...`` and sums their out-edge forces / sampled repulsions in a register (written
once per point), while the equal-and-opposite attraction on the neighbour ``j`` is scattered by a
read-modify-write into a per-unit bank (a one-cycle loop through a write-transparent read port,
so back-to-back updates of the same ``j`` need no hazard logic). The update phase adds the banks.
"""

from __future__ import annotations

from amaranth import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out
from amaranth.utils import bits_for, ceil_log2

from nms.rtl import fixedpoint as fp
from nms.rtl.divider import Divider
from nms.rtl.hash import Hash32
from nms.rtl.params import check_int
from nms.rtl.recip import Recip1p

__all__ = ["PairUnit", "GainDivider", "EmbeddingEngine"]

#: coordinate / velocity storage width: Q8.16 saturated to [-2**23, 2**23 - 1]
Y_WIDTH = 24
#: coordinate difference width (|d| <= 2**24 - 1)
D_WIDTH = Y_WIDTH + 1
#: one pair's force term: |(m * d) >> 16| <= 2**24 with m <= 65536 (plus sign and floor)
F_WIDTH = D_WIDTH + 1
#: squared distance (Q.16): (2 * (2**24 - 1)**2) >> 16 < 2**33
D2_WIDTH = 33
#: runtime iteration counters (n_iter, exaggeration_iters, momentum_switch)
from nms.rtl.regmap import ITER_BITS  # noqa: E402  (declared with the ITER fields)
#: |F| is saturated here before the learning-rate multiply; any lr >= 1 then still drives the
#: velocity past the clip bound in the same direction, so the clipped result is unchanged
F_SAT = 1 << 34
GAIN_BITS = 32


def _delay(m, sig, n, name):
    """``sig`` delayed by ``n`` clock cycles; returns the list of taps (tap[0] = sig)."""
    taps = [sig]
    for s in range(n):
        r = Signal(sig.shape(), name=f"{name}_d{s + 1}")
        m.d.sync += r.eq(taps[-1])
        taps.append(r)
    return taps


def _clip(value, lo, hi):
    return Mux(value < lo, lo, Mux(value > hi, hi, value))


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
        # stage 2: squares; the force direction (d for attraction, -d = a - b for repulsion) is
        # chosen here so that the final floor shift acts on the signed product as in the model
        sx, sy = Signal(2 * D_WIDTH - 1), Signal(2 * D_WIDTH - 1)
        vx, vy = Signal(signed(D_WIDTH + 1)), Signal(signed(D_WIDTH + 1))
        m.d.sync += [sx.eq(dx * dx), sy.eq(dy * dy),
                     vx.eq(Mux(mode[1], -dx, dx)), vy.eq(Mux(mode[1], -dy, dy))]
        vx_d = _delay(m, vx, 1 + self.recip_latency + 1, "vx")[-1]
        vy_d = _delay(m, vy, 1 + self.recip_latency + 1, "vy")[-1]
        # stage 3: d2 = (dx^2 + dy^2) >> 16
        d2 = Signal(D2_WIDTH)
        m.d.sync += d2.eq((sx + sy) >> 16)
        # stages 4-5: kernel
        m.submodules.recip = recip = Recip1p(d2_width=D2_WIDTH)
        m.d.comb += [recip.i.payload.eq(d2), recip.i.valid.eq(valid[3])]
        w = recip.o.payload
        # stage 6: weight = (p * w) >> 16 (attraction) or (w * w) >> 16 (repulsion); <= 65536
        k = 3 + self.recip_latency
        weight = Signal(fp.W_BITS)
        m.d.sync += weight.eq((Mux(mode[k], w, p[k]) * w) >> 16)
        w_out = _delay(m, w, 2, "w")[-1]
        # stage 7: force term
        m.d.sync += [
            self.o.payload.fx.eq((weight * vx_d) >> 16),
            self.o.payload.fy.eq((weight * vy_d) >> 16),
        ]
        m.d.comb += [
            self.o.payload.w.eq(w_out),
            self.o.payload.mode.eq(mode[lat]),
            self.o.payload.tag.eq(tag[lat]),
            self.o.valid.eq(valid[lat]),
        ]
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
        repulsive pairs issued.

    Raises
    ------
    TypeError, ValueError
        A parameter of the wrong type or out of range; the message names it.
    """

    def __init__(self, *, capacity: int = 1024, k: int = 16, neg_samples: int = 8,
                 pair_units: int = 1):
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
        self.capacity, self.k, self.neg_samples, self.pair_units = (
            capacity, k, neg_samples, pair_units)

        C, U, S = capacity, pair_units, neg_samples
        self.unit_shift = ceil_log2(U)
        self.unit_depth = -(-C // U)                    # points owned by one unit
        self.index_width = bits_for(C - 1)
        self.n_width = bits_for(C)
        self.kk_width = bits_for(k)
        # attraction sums: at most C * k edge terms of |f| <= 2**24
        self.fa_width = F_WIDTH + bits_for(C * k)
        # repulsion sums: S terms per point
        self.fr_width = F_WIDTH + bits_for(S)
        # kernel sum over all N * S samples, each <= 65536
        self.wsum_width = bits_for(C * S * (1 << 16))
        self.hash_latency = Hash32.latency
        # issue -> Y read address: hash (H) + j product + j wrap; Y data one cycle later
        self.front_latency = self.hash_latency + 3
        self.pair_latency = PairUnit.latency
        # after the last issue: front end + pair unit + scatter write, plus one spare cycle
        self.pair_drain = self.front_latency + self.pair_latency + 2
        self.update_latency = 6

        self.config_layout = data.StructLayout({
            "n": unsigned(self.n_width),
            "kk": unsigned(self.kk_width),
            "n_iter": unsigned(ITER_BITS),
            "exaggeration_iters": unsigned(ITER_BITS),
            "exaggeration_shift": unsigned(3),
            "momentum_early": unsigned(fp.MOMENTUM_FRAC_BITS),
            "momentum_late": unsigned(fp.MOMENTUM_FRAC_BITS),
            "momentum_switch": unsigned(ITER_BITS),
            "learning_rate": unsigned(4 + fp.LR_FRAC_BITS),
            "seed": unsigned(32),
        })
        self.knn_layout = data.StructLayout({
            "index": unsigned(self.index_width), "p": unsigned(fp.P_BITS)})
        self.coord_layout = coord_layout()
        self.perf_layout = data.StructLayout({
            "cycles": unsigned(32), "pair_cycles": unsigned(32), "pair_items": unsigned(32),
            "rep_cycles": unsigned(32), "rep_items": unsigned(32)})
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
                "pair_units": self.pair_units}

    @property
    def derived(self) -> dict:
        """Derived widths, depths and latencies (for metadata)."""
        return {"index_width": self.index_width, "coord_width": Y_WIDTH,
                "fa_width": self.fa_width, "fr_width": self.fr_width,
                "wsum_width": self.wsum_width, "unit_depth": self.unit_depth,
                "knn_depth": self.capacity * self.k, "front_latency": self.front_latency,
                "pair_latency": self.pair_latency, "pair_drain": self.pair_drain,
                "update_latency": self.update_latency, "iter_bits": ITER_BITS}

    def iteration_cycles(self, n: int, kk: int) -> int:
        """Cycles of one iteration for ``n`` points and ``kk`` neighbours (measured exactly):
        pair issue ``ceil(n / U) * (kk + S)`` + drain + division (33, or 1 when the gain
        saturates: the count assumes it does not) + ``n`` update issues + update drain."""
        U, S = self.pair_units, self.neg_samples
        pairs = -(-n // U) * (kk + S)
        return pairs + self.pair_drain + 1 + (GAIN_BITS + 1) + n + self.update_latency + 2

    # ------------------------------------------------------------------------------------------
    def elaborate(self, platform):
        m = Module()
        C, K, S, U = self.capacity, self.k, self.neg_samples, self.pair_units
        CU, LG = self.unit_depth, self.unit_shift
        H = self.hash_latency
        cfg = self.config.payload
        coord = self.coord_layout
        fa_pair = data.StructLayout({"x": signed(self.fa_width), "y": signed(self.fa_width)})
        fr_pair = data.StructLayout({"x": signed(self.fr_width), "y": signed(self.fr_width)})

        # ---- latched configuration -------------------------------------------------------------
        n = Signal(range(C + 1), init=2)
        kk = Signal(range(K + 1), init=1)
        n_iter = Signal(ITER_BITS)
        ex_iters = Signal(ITER_BITS)
        ex_shift = Signal(3)
        mom_early = Signal(8)
        mom_late = Signal(8)
        mom_switch = Signal(ITER_BITS)
        lr = Signal(4 + fp.LR_FRAC_BITS)
        seed = Signal(32)
        nm1 = Signal(range(C))

        # ---- memories ----------------------------------------------------------------------------
        m.submodules.ymem = ymem = Memory(shape=coord, depth=C, init=[])
        m.submodules.vmem = vmem = Memory(shape=coord, depth=C, init=[])
        m.submodules.knnmem = knnmem = Memory(shape=self.knn_layout, depth=C * K, init=[])
        y_wr = ymem.write_port()
        y_upd = ymem.read_port()   # update phase and output
        v_wr = vmem.write_port()
        v_rd = vmem.read_port()
        knn_wr = knnmem.write_port()

        t = Signal(ITER_BITS)            # current iteration
        iter_base = Signal(32)           # hash counter of (iteration t, point 0, sample 0)
        base0 = Signal(32)
        base1 = Signal(32)
        gain = Signal(GAIN_BITS)

        start_pairs = Signal()           # pulse: (re)start the unit sequencers
        in_pairs = Signal()
        in_update = Signal()
        clear_wsum = Signal()

        # ---- per pair unit: sequencer, front end, pair unit, accumulators -------------------
        units = []
        for u in range(U):
            un = {}
            m.submodules[f"hash{u}"] = hsh = Hash32()
            jw = self.index_width
            lw = max(1, bits_for(CU - 1))
            m.submodules[f"pair{u}"] = pu = PairUnit(tag_width=jw + lw + 1)
            y_self = ymem.read_port()
            y_part = ymem.read_port()
            knn_rd = knnmem.read_port()
            m.submodules[f"sbank{u}"] = sbank = Memory(shape=fa_pair, depth=C, init=[])
            s_wr = sbank.write_port()
            s_rd = sbank.read_port(transparent_for=(s_wr,))
            m.submodules[f"lbank{u}"] = lbank = Memory(shape=fa_pair, depth=CU, init=[])
            l_wr = lbank.write_port()
            l_rd = lbank.read_port()
            m.submodules[f"rbank{u}"] = rbank = Memory(shape=fr_pair, depth=CU, init=[])
            r_wr = rbank.write_port()
            r_rd = rbank.read_port()
            un.update(hash=hsh, s_rd=s_rd, s_wr=s_wr, l_rd=l_rd, r_rd=r_rd)

            # sequencer: attraction over the unit's points, then repulsion over them
            act = Signal(name=f"u{u}_act")
            mode = Signal(name=f"u{u}_mode")
            pi = Signal(range(C), name=f"u{u}_i")
            pl = Signal(lw, name=f"u{u}_il")
            e = Signal(range(max(K, S)), name=f"u{u}_e")
            kbase = Signal(range(C * K), name=f"u{u}_kbase")
            ctr = Signal(32, name=f"u{u}_ctr")
            last = Signal(name=f"u{u}_last")
            final_point = Signal(name=f"u{u}_final")
            m.d.comb += [
                last.eq(Mux(mode, e == S - 1, e == kk - 1)),
                final_point.eq(pi + U >= n),
                knn_rd.addr.eq(kbase + e),
            ]
            with m.If(start_pairs):
                m.d.sync += [act.eq(n > u), mode.eq(0), pi.eq(u), pl.eq(0), e.eq(0),
                             kbase.eq(u * K), ctr.eq(iter_base + u * S)]
            with m.Elif(act):
                with m.If(~last):
                    m.d.sync += e.eq(e + 1)
                    with m.If(mode):
                        m.d.sync += ctr.eq(ctr + 1)
                with m.Else():
                    m.d.sync += [e.eq(0), pi.eq(pi + U), pl.eq(pl + 1), kbase.eq(kbase + U * K)]
                    with m.If(mode):
                        # the unit's next point starts (U - 1) * S samples further on
                        m.d.sync += ctr.eq(ctr + (U - 1) * S + 1)
                    with m.If(final_point):
                        with m.If(mode):
                            m.d.sync += act.eq(0)
                        with m.Else():
                            m.d.sync += [mode.eq(1), pi.eq(u), pl.eq(0)]
            un["act"], un["mode"] = act, mode
            issue = act & ~start_pairs
            if u > 0:
                m.d.comb += [hsh.i.payload.eq(ctr), hsh.i.valid.eq(issue & mode)]
            else:
                un["hash_seq"] = (ctr, issue & mode)

            # front end: meta delayed to the Y read stage (F[H+2]) and one more to the pair input
            v_t = _delay(m, issue, H + 3, f"u{u}_fv")
            m_t = _delay(m, mode, H + 3, f"u{u}_fm")
            i_t = _delay(m, pi, H + 3, f"u{u}_fi")
            l_t = _delay(m, pl, H + 3, f"u{u}_fl")
            z_t = _delay(m, last, H + 3, f"u{u}_fz")
            # attraction: (j, p) from the list memory at F[1], aligned to F[H+2]
            kn_t = _delay(m, knn_rd.data, H + 1, f"u{u}_kn")
            # repulsion: j = i + 1 + ((h & 0xFFFF) * (n - 1)) >> 16, wrapped below n
            prod = Signal(16 + self.n_width, name=f"u{u}_jprod")
            m.d.sync += prod.eq(hsh.o.payload[:16] * nm1)
            jr = Signal(range(2 * C + 1), name=f"u{u}_jraw")
            m.d.comb += jr.eq(i_t[H + 1] + 1 + (prod >> 16))
            jrep = Signal(range(C), name=f"u{u}_jrep")
            m.d.sync += jrep.eq(Mux(jr >= n, jr - n, jr))
            j_sel = Signal(range(C), name=f"u{u}_j")
            m.d.comb += [
                j_sel.eq(Mux(m_t[H + 2], jrep, kn_t[-1].index)),
                y_self.addr.eq(i_t[H + 2]),
                y_part.addr.eq(j_sel),
            ]
            j_in = Signal(jw, name=f"u{u}_jin")
            p_in = Signal(fp.P_BITS, name=f"u{u}_pin")
            m.d.sync += [j_in.eq(j_sel), p_in.eq(kn_t[-1].p)]
            m.d.comb += [
                pu.i.valid.eq(v_t[H + 3]),
                pu.i.payload.a.eq(y_self.data),
                pu.i.payload.b.eq(y_part.data),
                pu.i.payload.p.eq(p_in),
                pu.i.payload.mode.eq(m_t[H + 3]),
                pu.i.payload.tag.eq(Cat(j_in, l_t[H + 3], z_t[H + 3])),
            ]

            # back end: per-point sums (written once per point) and the kernel sum
            o = pu.o.payload
            o_j, o_l, o_last = o.tag[:jw], o.tag[jw:jw + lw], o.tag[jw + lw]
            acc_x = Signal(signed(self.fa_width), name=f"u{u}_accx")
            acc_y = Signal(signed(self.fa_width), name=f"u{u}_accy")
            sum_x = acc_x + o.fx
            sum_y = acc_y + o.fy
            m.d.comb += [l_wr.addr.eq(o_l), r_wr.addr.eq(o_l),
                         l_wr.data.x.eq(sum_x), l_wr.data.y.eq(sum_y),
                         r_wr.data.x.eq(sum_x), r_wr.data.y.eq(sum_y)]
            with m.If(pu.o.valid):
                with m.If(o_last):
                    m.d.sync += [acc_x.eq(0), acc_y.eq(0)]
                    m.d.comb += [l_wr.en.eq(~o.mode), r_wr.en.eq(o.mode)]
                with m.Else():
                    m.d.sync += [acc_x.eq(sum_x), acc_y.eq(sum_y)]
            wsum = Signal(self.wsum_width, name=f"u{u}_wsum")
            with m.If(clear_wsum):
                m.d.sync += wsum.eq(0)
            with m.Elif(pu.o.valid & o.mode):
                m.d.sync += wsum.eq(wsum + o.w)
            un["wsum"] = wsum

            # scatter Fa[j] -= f: read at the pair output, write one cycle later; the read port
            # is transparent to this write, so the next pair sees the updated value
            sc_valid = Signal(name=f"u{u}_scv")
            sc_j = Signal(range(C), name=f"u{u}_scj")
            sc_fx = Signal(signed(F_WIDTH), name=f"u{u}_scfx")
            sc_fy = Signal(signed(F_WIDTH), name=f"u{u}_scfy")
            m.d.sync += [sc_valid.eq(pu.o.valid & ~o.mode), sc_j.eq(o_j),
                         sc_fx.eq(o.fx), sc_fy.eq(o.fy)]
            un["scatter"] = (sc_valid, sc_j, sc_fx, sc_fy, o_j)
            units.append(un)

        # ---- update-phase sequencer and datapath ---------------------------------------------
        upd_act = Signal()
        upd_i = Signal(range(C))
        upd_issue = Signal()
        m.d.comb += upd_issue.eq(upd_act & in_update)
        u1_valid, u1_i = Signal(), Signal(range(C))
        u1_sel = Signal(range(U)) if U > 1 else None
        m.d.sync += [u1_valid.eq(upd_issue), u1_i.eq(upd_i)]
        if U > 1:
            m.d.sync += u1_sel.eq(upd_i[:LG])
        for u, un in enumerate(units):
            sc_valid, sc_j, sc_fx, sc_fy, o_j = un["scatter"]
            s_rd, s_wr = un["s_rd"], un["s_wr"]
            with m.If(in_update):
                m.d.comb += [s_rd.addr.eq(upd_i),
                             # clear the bank entry just read, for the next iteration
                             s_wr.addr.eq(u1_i), s_wr.en.eq(u1_valid),
                             s_wr.data.x.eq(0), s_wr.data.y.eq(0)]
            with m.Else():
                m.d.comb += [s_rd.addr.eq(o_j),
                             s_wr.addr.eq(sc_j), s_wr.en.eq(sc_valid),
                             s_wr.data.x.eq(s_rd.data.x - sc_fx),
                             s_wr.data.y.eq(s_rd.data.y - sc_fy)]
            m.d.comb += [un["l_rd"].addr.eq(upd_i >> LG), un["r_rd"].addr.eq(upd_i >> LG)]

        # U1: gather Fa = own sum + all scatter banks, Fr from the owning unit
        fa_x = sum((un["s_rd"].data.x for un in units), Const(0, signed(self.fa_width)))
        fa_y = sum((un["s_rd"].data.y for un in units), Const(0, signed(self.fa_width)))
        if U > 1:
            own_l = Signal(fa_pair)
            own_r = Signal(fr_pair)
            with m.Switch(u1_sel):
                for u, un in enumerate(units):
                    with m.Case(u):
                        m.d.comb += [own_l.eq(un["l_rd"].data), own_r.eq(un["r_rd"].data)]
        else:
            own_l, own_r = units[0]["l_rd"].data, units[0]["r_rd"].data
        u2_valid, u2_i = Signal(), Signal(range(C))
        u2_fa_x, u2_fa_y = Signal(signed(self.fa_width)), Signal(signed(self.fa_width))
        u2_fr_x, u2_fr_y = Signal(signed(self.fr_width)), Signal(signed(self.fr_width))
        u2_y, u2_v = Signal(coord), Signal(coord)
        m.d.comb += [y_upd.addr.eq(upd_i), v_rd.addr.eq(upd_i)]
        m.d.sync += [u2_valid.eq(u1_valid), u2_i.eq(u1_i),
                     u2_fa_x.eq(fa_x + own_l.x), u2_fa_y.eq(fa_y + own_l.y),
                     u2_fr_x.eq(own_r.x), u2_fr_y.eq(own_r.y),
                     u2_y.eq(y_upd.data), u2_v.eq(v_rd.data)]
        # U2: exaggerated attraction, normalised repulsion, momentum term
        exaggerate = t < ex_iters
        mom = Mux(t < mom_switch, mom_early, mom_late)
        att_w = self.fa_width + 7
        u3_valid, u3_i, u3_y = Signal(), Signal(range(C)), Signal(coord)
        u3_att_x, u3_att_y = Signal(signed(att_w)), Signal(signed(att_w))
        rep_w = self.fr_width + GAIN_BITS - 16 + 1
        u3_rep_x, u3_rep_y = Signal(signed(rep_w)), Signal(signed(rep_w))
        u3_mv_x, u3_mv_y = Signal(signed(Y_WIDTH + 8)), Signal(signed(Y_WIDTH + 8))
        m.d.sync += [
            u3_valid.eq(u2_valid), u3_i.eq(u2_i), u3_y.eq(u2_y),
            u3_att_x.eq(Mux(exaggerate, u2_fa_x << ex_shift, u2_fa_x)),
            u3_att_y.eq(Mux(exaggerate, u2_fa_y << ex_shift, u2_fa_y)),
            u3_rep_x.eq((u2_fr_x * gain) >> 16),
            u3_rep_y.eq((u2_fr_y * gain) >> 16),
            u3_mv_x.eq(mom * u2_v.x),
            u3_mv_y.eq(mom * u2_v.y),
        ]
        # U3: F = (att >> 1) + rep, saturated where that cannot change the clipped velocity
        f_w = bits_for(F_SAT) + 1
        u4_valid, u4_i, u4_y = Signal(), Signal(range(C)), Signal(coord)
        u4_f_x, u4_f_y = Signal(signed(f_w)), Signal(signed(f_w))
        u4_mv_x, u4_mv_y = Signal(signed(Y_WIDTH)), Signal(signed(Y_WIDTH))
        m.d.sync += [
            u4_valid.eq(u3_valid), u4_i.eq(u3_i), u4_y.eq(u3_y),
            u4_f_x.eq(_clip((u3_att_x >> 1) + u3_rep_x, -F_SAT, F_SAT)),
            u4_f_y.eq(_clip((u3_att_y >> 1) + u3_rep_y, -F_SAT, F_SAT)),
            u4_mv_x.eq(u3_mv_x >> 8), u4_mv_y.eq(u3_mv_y >> 8),
        ]
        # U4: velocity before the clip
        vs_w = f_w + 12
        u5_valid, u5_i, u5_y = Signal(), Signal(range(C)), Signal(coord)
        u5_vs_x, u5_vs_y = Signal(signed(vs_w)), Signal(signed(vs_w))
        m.d.sync += [
            u5_valid.eq(u4_valid), u5_i.eq(u4_i), u5_y.eq(u4_y),
            u5_vs_x.eq(((lr * u4_f_x) >> 8) + u4_mv_x),
            u5_vs_y.eq(((lr * u4_f_y) >> 8) + u4_mv_y),
        ]
        # U5: clipped velocity
        u6_valid, u6_i, u6_y, u6_v = Signal(), Signal(range(C)), Signal(coord), Signal(coord)
        m.d.sync += [
            u6_valid.eq(u5_valid), u6_i.eq(u5_i), u6_y.eq(u5_y),
            u6_v.x.eq(_clip(u5_vs_x, fp.Y_MIN, fp.Y_MAX)),
            u6_v.y.eq(_clip(u5_vs_y, fp.Y_MIN, fp.Y_MAX)),
        ]
        # U6: position, written back together with the velocity
        upd_y = Signal(coord)
        m.d.comb += [upd_y.x.eq(_clip(u6_y.x + u6_v.x, fp.Y_MIN, fp.Y_MAX)),
                     upd_y.y.eq(_clip(u6_y.y + u6_v.y, fp.Y_MIN, fp.Y_MAX))]

        # ---- initialisation: hash bases, then the initial coordinates ----------------------
        h0 = units[0]["hash"]
        init_ctr = Signal(32)
        init_issue = Signal()
        init_left = Signal(range(2 * C + 3))      # hash inputs still to issue
        init_got = Signal(range(2 * C + 3))       # hash outputs received
        x_tmp = Signal(signed(Y_WIDTH))
        hv = Signal(signed(17))
        m.d.comb += hv.eq(h0.o.payload[:16] - 32768)
        init_val = hv >> fp.INIT_SHIFT
        seq_ctr, seq_valid = units[0]["hash_seq"]
        with m.If(init_issue):
            m.d.comb += [h0.i.payload.eq(init_ctr), h0.i.valid.eq(1)]
        with m.Else():
            m.d.comb += [h0.i.payload.eq(seq_ctr), h0.i.valid.eq(seq_valid)]

        y_init_en = Signal()
        m.d.comb += [
            y_wr.addr.eq(Mux(y_init_en, init_got >> 1, u6_i)),
            v_wr.addr.eq(Mux(y_init_en, init_got >> 1, u6_i)),
        ]
        with m.If(y_init_en):
            m.d.comb += [y_wr.data.x.eq(x_tmp), y_wr.data.y.eq(init_val),
                         v_wr.data.eq(0), y_wr.en.eq(h0.o.valid & init_got[0]),
                         v_wr.en.eq(h0.o.valid & init_got[0])]
        with m.Else():
            m.d.comb += [y_wr.data.eq(upd_y), v_wr.data.eq(u6_v),
                         y_wr.en.eq(u6_valid), v_wr.en.eq(u6_valid)]

        # ---- GainDivider ---------------------------------------------------------------------
        m.submodules.divider = div = GainDivider(n_width=self.n_width, den_width=self.wsum_width)
        wsum_total = sum((un["wsum"] for un in units), Const(0, self.wsum_width))
        m.d.comb += [div.i.payload.n.eq(n), div.i.payload.den.eq(wsum_total),
                     div.o.ready.eq(1)]

        # ---- pair-phase drain detection ------------------------------------------------------
        any_act = Signal()
        m.d.comb += any_act.eq(Cat(*(un["act"] for un in units)).any())
        quiet = Signal(range(max(self.pair_drain, self.update_latency + 2) + 2))

        # ---- output --------------------------------------------------------------------------
        out_ptr = Signal(range(C + 1))
        out_fetch = Signal()
        m.d.comb += self.coords.payload.eq(y_upd.data)

        # ---- perf counters -------------------------------------------------------------------
        perf = self.perf
        issues = [un["act"] for un in units]
        rep_issues = [un["act"] & un["mode"] for un in units]
        issue_count = Signal(range(U + 1))
        rep_count = Signal(range(U + 1))
        m.d.comb += [issue_count.eq(sum(issues, Const(0, range(U + 1)))),
                     rep_count.eq(sum(rep_issues, Const(0, range(U + 1))))]
        with m.If(in_pairs & ~start_pairs):
            m.d.sync += [perf.pair_cycles.eq(perf.pair_cycles + 1),
                         perf.pair_items.eq(perf.pair_items + issue_count)]
            with m.If(rep_count != 0):
                m.d.sync += [perf.rep_cycles.eq(perf.rep_cycles + 1),
                             perf.rep_items.eq(perf.rep_items + rep_count)]
        with m.If(self.busy):
            m.d.sync += perf.cycles.eq(perf.cycles + 1)

        # ---- control FSM ---------------------------------------------------------------------
        load_e = Signal(range(K))
        load_i = Signal(range(C))
        load_base = Signal(range(C * K))
        m.d.comb += [knn_wr.addr.eq(load_base + load_e), knn_wr.data.eq(self.knn.payload)]

        def iteration_or_output(last):
            """After the initialisation or an update: the output if ``last``, else a pair phase."""
            with m.If(last):
                m.d.sync += [out_ptr.eq(0), self.coords.valid.eq(0)]
                m.next = "OUTPUT"
            with m.Else():
                m.d.comb += [start_pairs.eq(1), clear_wsum.eq(1)]
                m.next = "PAIRS"

        with m.FSM(name="ctrl"):
            with m.State("IDLE"):
                m.d.comb += self.config.ready.eq(1)
                with m.If(self.config.valid):
                    m.d.sync += [
                        n.eq(_clip(cfg.n, 2, C)), nm1.eq(_clip(cfg.n, 2, C) - 1),
                        kk.eq(_clip(cfg.kk, 1, K)),
                        n_iter.eq(cfg.n_iter), ex_iters.eq(cfg.exaggeration_iters),
                        ex_shift.eq(cfg.exaggeration_shift),
                        mom_early.eq(cfg.momentum_early), mom_late.eq(cfg.momentum_late),
                        mom_switch.eq(cfg.momentum_switch), lr.eq(cfg.learning_rate),
                        seed.eq(cfg.seed),
                        load_e.eq(0), load_i.eq(0), load_base.eq(0),
                        perf.eq(0), self.busy.eq(1),
                    ]
                    m.next = "LOAD"
            with m.State("LOAD"):
                m.d.comb += self.knn.ready.eq(1)
                with m.If(self.knn.valid):
                    m.d.comb += knn_wr.en.eq(1)
                    with m.If(load_e == kk - 1):
                        m.d.sync += [load_e.eq(0), load_i.eq(load_i + 1),
                                     load_base.eq(load_base + K)]
                        with m.If(load_i == n - 1):
                            m.d.sync += [init_ctr.eq(Cat(Const(0, 1), seed[:31])),
                                         init_left.eq(2), init_got.eq(0)]
                            m.next = "SEED"
                    with m.Else():
                        m.d.sync += load_e.eq(load_e + 1)
            with m.State("SEED"):
                # hash 2*seed and 2*seed + 1 into the two counter bases (desne._seed_bases)
                m.d.comb += init_issue.eq(init_left != 0)
                with m.If(init_left != 0):
                    m.d.sync += [init_left.eq(init_left - 1), init_ctr.eq(init_ctr + 1)]
                with m.If(h0.o.valid):
                    m.d.sync += init_got.eq(1)
                    with m.If(init_got == 0):
                        m.d.sync += base0.eq(h0.o.payload)
                    with m.Else():
                        m.d.sync += [base1.eq(h0.o.payload), iter_base.eq(h0.o.payload),
                                     init_got.eq(0), init_ctr.eq(base0), init_left.eq(n << 1)]
                        m.next = "INIT"
            with m.State("INIT"):
                # hash base0 + 2i + axis into the initial coordinates (desne.init_embedding)
                m.d.comb += [init_issue.eq(init_left != 0), y_init_en.eq(1)]
                with m.If(init_left != 0):
                    m.d.sync += [init_left.eq(init_left - 1), init_ctr.eq(init_ctr + 1)]
                with m.If(h0.o.valid):
                    m.d.sync += init_got.eq(init_got + 1)
                    with m.If(~init_got[0]):
                        m.d.sync += x_tmp.eq(init_val)
                    with m.If(init_got == (n << 1) - 1):
                        m.d.sync += t.eq(0)
                        iteration_or_output(n_iter == 0)
            with m.State("PAIRS"):
                m.d.comb += in_pairs.eq(1)
                with m.If(any_act):
                    m.d.sync += quiet.eq(0)
                with m.Else():
                    m.d.sync += quiet.eq(quiet + 1)
                    with m.If(quiet == self.pair_drain):
                        m.next = "DIVIDE"
                        m.d.comb += div.i.valid.eq(1)
            with m.State("DIVIDE"):
                with m.If(div.o.valid):
                    m.d.sync += [gain.eq(div.o.payload), upd_act.eq(1), upd_i.eq(0),
                                 quiet.eq(0)]
                    m.next = "UPDATE"
            with m.State("UPDATE"):
                m.d.comb += in_update.eq(1)
                with m.If(upd_act):
                    m.d.sync += upd_i.eq(upd_i + 1)
                    with m.If(upd_i == n - 1):
                        # the next iteration's sample counters start N * S further on (set
                        # here, not with start_pairs, which already reads the new value)
                        m.d.sync += [upd_act.eq(0), iter_base.eq(iter_base + n * S)]
                with m.Else():
                    m.d.sync += quiet.eq(quiet + 1)
                    with m.If(quiet == self.update_latency + 1):
                        m.d.sync += [t.eq(t + 1), quiet.eq(0)]
                        iteration_or_output(t + 1 == n_iter)
            with m.State("OUTPUT"):
                # the read port holds its data while disabled, so a stalled beat stays stable
                m.d.comb += [out_fetch.eq(~self.coords.valid | self.coords.ready),
                             y_upd.en.eq(out_fetch), y_upd.addr.eq(out_ptr)]
                with m.If(out_fetch):
                    with m.If(out_ptr != n):
                        m.d.sync += [self.coords.valid.eq(1), out_ptr.eq(out_ptr + 1)]
                    with m.Else():
                        m.d.sync += [self.coords.valid.eq(0), self.busy.eq(0)]
                        m.next = "IDLE"
        return m
