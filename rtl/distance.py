"""Near-memory distance engine: exact squared L2 distances, T resident queries x L lanes.

See ``docs/distance-engine.md`` for the protocol, timing and widths in one page.
"""

from __future__ import annotations

from amaranth import Cat, ClockSignal, Const, Instance, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out
from amaranth.utils import bits_for, ceil_log2

from nms.rtl.params import check_int

__all__ = ["DistanceEngine"]


class DistanceEngine(wiring.Component):
    """Exact squared L2 distances between ``tile`` resident queries and streamed candidates.

    Each accepted candidate beat (``lanes`` elements) is multiplied against the same beat of all
    ``tile`` resident queries: ``tile * lanes`` squared differences per cycle. With no stalls one
    candidate beat is accepted every cycle; one result beat per candidate leaves, in candidate
    order, carrying the ``tile`` distances.

    Protocol (one *pass* per query tile, repeated):

    1. **Load**: ``tile * ceil(dim / lanes)`` beats on ``query``: query 0 beats 0.., then query 1,
       ... Element ``i`` of a vector is lane ``i % lanes`` of beat ``i // lanes``. ``dim`` is taken
       from the first beat of the tile (query 0, beat 0), clamped to ``1..max_dim``; it is ignored
       on the other beats.
    2. **Stream**: candidates on ``candidate``, ``ceil(dim / lanes)`` beats each, same element
       order. ``last`` on a candidate's final beat ends the pass (ignored on other beats); the
       engine then waits for the next tile load. In-flight results still drain normally.

    Unused lanes of a vector's final beat (lanes ``>= dim % lanes`` when ``dim % lanes != 0``)
    are masked: their difference is forced to zero, so producers may leave any value there.

    **Candidate groups** (``cand_tile`` P > 1, ``docs/energy.md`` §6.4): one query-memory row
    read serves P candidates. The candidates of a pass are streamed in groups of P (the last
    group may be smaller), *beat-interleaved*: beat 0 of every candidate of the group, then beat
    1, ... Each beat carries its ``slot`` in the group and ``group_end`` on the group's last slot
    at that beat index. The engine reads the row of a beat index once, on slot 0, holds it for
    the other slots, and keeps ``P`` accumulators per query; results still leave one per
    candidate in candidate order, at one beat per cycle, so distances and timing are those of
    P = 1. ``last`` goes on the pass's final beat (the last candidate's final beat).

    Parameters
    ----------
    lanes : int
        L, elements per beat; a power of two (the beat count is ``(dim - 1) >> log2(L)`` and the
        adder tree is balanced). Default 8.
    tile : int
        T, resident queries. Default 4.
    elem_width : int
        Unsigned element width in bits, 1..16. Default 8.
    max_dim : int
        Largest vector length ``dim`` (sizes the query memory and the accumulator). Default 1024.
    cand_tile : int
        P, candidates per query-memory row read, 1..16. Default 1 (no groups: the candidate
        layout has no ``slot`` / ``group_end``).

    Attributes
    ----------
    query : In(stream.Signature(query_layout))
        Query load stream; payload ``{data: ArrayLayout(unsigned(elem_width), lanes),
        dim: unsigned(dim_width)}`` (``data`` at the LSB).
    candidate : In(stream.Signature(candidate_layout))
        Candidate stream; payload ``{data: ArrayLayout(unsigned(elem_width), lanes),
        last: unsigned(1)}``.
    result : Out(stream.Signature(result_layout))
        One beat per candidate: ``{dist: ArrayLayout(unsigned(acc_width), tile), last:
        unsigned(1)}``; ``dist[t]`` is the squared distance to query ``t`` of the tile, ``last``
        marks the result of the pass's final candidate.
    acc_width : int
        Distance width, ``bits_for(max_dim * (2**elem_width - 1)**2)``: never overflows.
    dim_width : int
        Width of the ``dim`` field, ``bits_for(max_dim)``.
    beats_max : int
        ``ceil(max_dim / lanes)``, depth of the query memory.
    latency : int
        Cycles from accepting a candidate's final beat to its result being written to the output
        FIFO; the result leaves ``latency + 1`` cycles after that beat at the earliest.
    fifo_depth : int
        Output FIFO depth. Input ``ready`` is held low while ``fifo_depth`` results are in flight
        or buffered (a credit counter), so output back-pressure never stalls the pipeline and
        ``candidate.ready`` does not depend combinationally on ``result.ready``.

    Raises
    ------
    TypeError, ValueError
        A parameter of the wrong type or out of range; the message names it.
    """

    def __init__(self, *, lanes: int = 8, tile: int = 4, elem_width: int = 8, max_dim: int = 1024,
                 cand_tile: int = 1):
        check_int("lanes", lanes, 1, 256, "a power of two from 1 to 256")
        if lanes & (lanes - 1):
            raise ValueError(f"lanes={lanes} is not a power of two: use 1, 2, 4, 8, ... 256")
        check_int("tile", tile, 1, 64, "1 to 64 resident queries")
        check_int("elem_width", elem_width, 1, 16, "1 to 16 bits per unsigned element")
        check_int("max_dim", max_dim, 1, 1 << 20, "1 to 1048576 elements per vector")
        check_int("cand_tile", cand_tile, 1, 16, "1 to 16 candidates per query-memory read")
        self.cand_tile = cand_tile
        self.lanes = lanes
        self.tile = tile
        self.elem_width = elem_width
        self.max_dim = max_dim

        self.lane_shift = ceil_log2(lanes)
        self.beats_max = -(-max_dim // lanes)
        self.dim_width = bits_for(max_dim)
        self.square_width = 2 * elem_width
        self.acc_width = bits_for(max_dim * ((1 << elem_width) - 1) ** 2)
        self.beat_sum_width = bits_for(lanes * ((1 << elem_width) - 1) ** 2)
        # accept -> S1 (memory read) -> S2 (row registered behind the RAM) -> S3 (difference)
        # -> S4 (multiplier input register) -> S5 (square, multiplier output register)
        # -> adder tree -> acc/FIFO
        self.latency = 5 + self.lane_shift + 1
        # SyncFIFOBuffered adds one cycle; with this many credits the no-stall case never waits.
        self.fifo_depth = self.latency + 4

        elem = unsigned(elem_width)
        self.query_layout = data.StructLayout({
            "data": data.ArrayLayout(elem, lanes),
            "dim": unsigned(self.dim_width),
        })
        cand_fields = {"data": data.ArrayLayout(elem, lanes), "last": unsigned(1)}
        if cand_tile > 1:
            cand_fields.update(slot=unsigned(ceil_log2(cand_tile)), group_end=unsigned(1))
        self.candidate_layout = data.StructLayout(cand_fields)
        self.result_layout = data.StructLayout({
            "dist": data.ArrayLayout(unsigned(self.acc_width), tile),
            "last": unsigned(1),
        })
        super().__init__({
            "query": In(stream.Signature(self.query_layout)),
            "candidate": In(stream.Signature(self.candidate_layout)),
            "result": Out(stream.Signature(self.result_layout)),
        })

    @property
    def parameters(self) -> dict:
        """Generator parameters (for metadata)."""
        out = {"lanes": self.lanes, "tile": self.tile, "elem_width": self.elem_width,
               "max_dim": self.max_dim}
        if self.cand_tile > 1:
            out["cand_tile"] = self.cand_tile
        return out

    @property
    def derived(self) -> dict:
        """Derived widths and sizes (for metadata)."""
        return {"acc_width": self.acc_width, "dim_width": self.dim_width,
                "beats_max": self.beats_max, "square_width": self.square_width,
                "beat_sum_width": self.beat_sum_width, "latency": self.latency,
                "fifo_depth": self.fifo_depth, "macs_per_cycle": self.lanes * self.tile}

    @staticmethod
    def _square(m, platform, diff, square, name):
        """``square = diff * diff`` two cycles after ``diff``: the multiplier's operands and its
        product are both registered. On ECP5 the registers are the MULT18X18D's own input and
        output registers (Yosys' DSP mapping leaves them off and puts the multiplier between two
        fabric flip-flops, often far from both: its routing limited the engine); elsewhere
        (simulation, generic Verilog) two plain registers with the same timing."""
        if getattr(platform, "family", None) == "ecp5":
            a = Signal(18, name=f"mul_a_{name}")
            p = Signal(36, name=f"mul_p_{name}")
            m.d.comb += [a.eq(diff.as_signed()), square.eq(p[:len(square)])]   # sign-extended
            ports = {f"i_A{i}": a[i] for i in range(18)}
            ports.update({f"i_B{i}": a[i] for i in range(18)})
            ports.update({f"i_C{i}": Const(0) for i in range(18)})
            ports.update({f"o_P{i}": p[i] for i in range(36)})
            m.submodules[f"mul_{name}"] = Instance(
                "MULT18X18D",
                p_REG_INPUTA_CLK="CLK0", p_REG_INPUTB_CLK="CLK0", p_REG_OUTPUT_CLK="CLK0",
                p_REG_INPUTA_CE="CE0", p_REG_INPUTB_CE="CE0", p_REG_OUTPUT_CE="CE0",
                p_REG_INPUTA_RST="RST0", p_REG_INPUTB_RST="RST0", p_REG_OUTPUT_RST="RST0",
                p_GSR="DISABLED",
                i_CLK0=ClockSignal("sync"), i_CE0=Const(1), i_RST0=Const(0),
                i_SIGNEDA=Const(1), i_SIGNEDB=Const(1), i_SOURCEA=Const(0), i_SOURCEB=Const(0),
                **ports)
        else:
            a = Signal.like(diff, name=f"mul_a_{name}")
            m.d.sync += [a.eq(diff), square.eq(a * a)]

    def elaborate(self, platform):
        m = Module()
        L, T, w = self.lanes, self.tile, self.elem_width
        all_lanes = (1 << L) - 1

        # ---- runtime dimension, latched from the first query beat of each tile ----------------
        dim_live = Signal(range(self.max_dim + 1))
        raw_dim = self.query.payload.dim
        m.d.comb += dim_live.eq(Mux(raw_dim == 0, 1, Mux(raw_dim > self.max_dim, self.max_dim,
                                                            raw_dim)))
        # Counters get at least one bit: zero-width signals become `[-1:0]` in the Verilog.
        beat_range = range(max(self.beats_max, 2))
        final_beat_live = Signal(beat_range)
        tail_mask_live = Signal(L)
        m.d.comb += final_beat_live.eq((dim_live - 1) >> self.lane_shift)
        if self.lane_shift:
            rem = dim_live[:self.lane_shift]
            m.d.comb += tail_mask_live.eq(
                Mux(rem == 0, all_lanes, (Const(1, L + 1) << rem) - 1))
        else:
            m.d.comb += tail_mask_live.eq(all_lanes)
        final_beat = Signal(beat_range)  # index of a vector's last beat
        tail_mask = Signal(L, init=all_lanes)       # lanes in use on that beat

        # ---- query memory: one row per beat index, T queries side by side ---------------------
        # `no_rw_check`: the rows are written only while loading and read only while streaming,
        # so no read ever sees a same-cycle write; without it Yosys emulates read-during-write
        # with a bypass multiplexer behind the RAM output. The read is an asynchronous port plus
        # a data register (`rd_data`), the form Yosys merges into the DP16KD's read port.
        m.submodules.queries = queries = Memory(shape=unsigned(T * L * w), depth=self.beats_max,
                                                init=[], attrs={"no_rw_check": 1})
        wr = queries.write_port(granularity=L * w)
        rd = queries.read_port(domain="comb")
        rd_en = Signal(init=1)
        rd_data = Signal(T * L * w)
        with m.If(rd_en):
            m.d.sync += rd_data.eq(rd.data)

        loading = Signal(init=1)  # 1: accepting the tile's queries; 0: streaming candidates
        load_query = Signal(range(max(T, 2)))
        load_beat = Signal(beat_range)
        first_load_beat = (load_query == 0) & (load_beat == 0)
        load_final_beat = Mux(first_load_beat, final_beat_live, final_beat)

        m.d.comb += [
            self.query.ready.eq(loading),
            wr.addr.eq(load_beat),
            wr.data.eq(Cat(*([self.query.payload.data.as_value()] * T))),
        ]
        with m.If(self.query.valid & loading):
            m.d.comb += wr.en.eq(1 << load_query)
            with m.If(first_load_beat):
                m.d.sync += [final_beat.eq(final_beat_live), tail_mask.eq(tail_mask_live)]
            with m.If(load_beat == load_final_beat):
                m.d.sync += load_beat.eq(0)
                with m.If(load_query == T - 1):
                    m.d.sync += [load_query.eq(0), loading.eq(0)]
                with m.Else():
                    m.d.sync += load_query.eq(load_query + 1)
            with m.Else():
                m.d.sync += load_beat.eq(load_beat + 1)

        # ---- candidate acceptance, gated by output credits ------------------------------------
        m.submodules.fifo = fifo = SyncFIFOBuffered(width=self.result_layout.size,
                                                    depth=self.fifo_depth)
        in_flight = Signal(range(self.fifo_depth + 1))  # results accepted, not yet delivered
        cand_beat = Signal(beat_range)
        cand_final = cand_beat == final_beat
        accept = Signal()
        P = self.cand_tile
        m.d.comb += [
            self.candidate.ready.eq(~loading & (in_flight != self.fifo_depth)),
            accept.eq(self.candidate.valid & self.candidate.ready),
            rd.addr.eq(cand_beat),
        ]
        if P > 1:
            # one row read per beat index of a group (on slot 0), held for the other slots
            slot_in = self.candidate.payload.slot
            group_end = self.candidate.payload.group_end
            m.d.comb += rd_en.eq(accept & (slot_in == 0))
            # accumulator queue write position (one-hot), see "accumulate": on a candidate's
            # first beat its own slot; on later beats the tail, group size - 1, which is the
            # slot of the group's beat-0 `group_end` (only the pass's last group may be smaller)
            slot_hot = Signal(P)
            tail_hot = Signal(P, init=1 << (P - 1))
            m.d.comb += slot_hot.eq(Const(1, P) << slot_in)
            with m.If(accept & group_end & (cand_beat == 0)):
                m.d.sync += tail_hot.eq(slot_hot)
        else:
            group_end = 1
        with m.If(accept):
            with m.If(group_end):
                m.d.sync += cand_beat.eq(Mux(cand_final, 0, cand_beat + 1))
            with m.If(cand_final & self.candidate.payload.last):
                m.d.sync += loading.eq(1)

        delivered = self.result.valid & self.result.ready
        reserve = accept & cand_final
        m.d.sync += in_flight.eq(in_flight + reserve - delivered)

        # ---- S1: candidate beat registered next to the query memory's read data ---------------
        s1_valid = Signal()
        s1_cand = Signal(data.ArrayLayout(unsigned(w), L))
        s1_mask = Signal(L)
        s1_first, s1_final, s1_last = Signal(), Signal(), Signal()
        # the accumulator write one-hot rides along the pipeline (P > 1 only: P = 1 is the plain
        # engine); registered here, so the accumulators' enables are flip-flop outputs
        s1_extra = ()
        if P > 1:
            s1_wr = Signal(P)
            m.d.sync += s1_wr.eq(Mux(cand_beat == 0, slot_hot, tail_hot))
            s1_extra = (s1_wr,)
        m.d.sync += [
            s1_valid.eq(accept),
            s1_cand.eq(self.candidate.payload.data),
            s1_mask.eq(Mux(cand_final, tail_mask, all_lanes)),
            s1_first.eq(cand_beat == 0),
            s1_final.eq(cand_final),
            s1_last.eq(self.candidate.payload.last),
        ]
        flags = [(s1_valid, s1_first, s1_final, s1_last, *s1_extra)]

        def next_flags(stage):
            regs = tuple(Signal(name=f"s{stage}_{n}")
                         for n in ("valid", "first", "final", "last")) \
                + tuple(Signal(P, name=f"s{stage}_wr") for _ in s1_extra)
            m.d.sync += [r.eq(p) for r, p in zip(regs, flags[-1])]
            flags.append(regs)

        # ---- S2: the row registered behind the RAM (no logic after the DP16KD output) --------
        row = Signal(T * L * w)
        s2_cand = Signal(data.ArrayLayout(unsigned(w), L))
        s2_mask = Signal(L)
        m.d.sync += [row.eq(rd_data), s2_cand.eq(s1_cand), s2_mask.eq(s1_mask)]
        next_flags(2)

        # ---- S3: masked differences (w+1 bit signed); S4/S5: squares ------------------------
        sq = []
        for t in range(T):
            sq_t = []
            for lane in range(L):
                q = row[(t * L + lane) * w:(t * L + lane + 1) * w]
                diff = Signal(signed(w + 1), name=f"diff_{t}_{lane}")
                m.d.sync += diff.eq(Mux(s2_mask[lane], q - s2_cand[lane], 0))
                square = Signal(unsigned(2 * w), name=f"square_{t}_{lane}")
                self._square(m, platform, diff, square, f"{t}_{lane}")
                sq_t.append(square)
            sq.append(sq_t)
        next_flags(3)
        next_flags(4)
        next_flags(5)

        # ---- adder tree, one register level per pairwise addition level ----------------------
        level = 0
        while len(sq[0]) > 1:
            level += 1
            new = []
            for t in range(T):
                pairs = sq[t]
                width = pairs[0].shape().width + 1
                summed = []
                for i in range(0, len(pairs), 2):
                    s = Signal(unsigned(width), name=f"sum{level}_{t}_{i // 2}")
                    m.d.sync += s.eq(pairs[i] + pairs[i + 1])
                    summed.append(s)
                new.append(summed)
            sq = new
            next_flags(5 + level)
        beat_sums = [sq[t][0] for t in range(T)]
        valid, first, final, last = flags[-1][:4]

        # ---- accumulate over a candidate's beats; write the finished result to the FIFO -------
        # With groups: P accumulators per query, kept as a shift queue rather than an array
        # indexed by slot (its P:1 read multiplexer limited Fmax at P = 8). Slots arrive in order
        # 0..g-1 at every beat index, so the accumulator due is always at position 0: on a later
        # beat each slot reads position 0, the queue shifts down by one and the new sum goes in
        # at the tail g-1; after the g slots the queue is back in slot order. On a candidate's
        # first beat (nothing to read) each slot writes its own position without shifting, so g
        # need not be known yet. `wr` is the registered one-hot write position.
        acc_next = [Signal(unsigned(self.acc_width), name=f"acc_next_{t}") for t in range(T)]
        if P > 1:
            wr = flags[-1][4]
            acc = [[Signal(unsigned(self.acc_width), name=f"acc_{t}_{p}") for p in range(P)]
                   for t in range(T)]
            held = [acc[t][0] for t in range(T)]
            for p in range(P):
                # (position P-1 has no neighbour: unless it is the tail, its value is unused)
                with m.If(valid & (wr[p] | ~first)):
                    for t in range(T):
                        m.d.sync += acc[t][p].eq(
                            acc_next[t] if p == P - 1 else Mux(wr[p], acc_next[t], acc[t][p + 1]))
        else:
            acc = [Signal(unsigned(self.acc_width), name=f"acc_{t}") for t in range(T)]
            held = acc
            for t in range(T):
                with m.If(valid):
                    m.d.sync += acc[t].eq(acc_next[t])
        result = Signal(self.result_layout)
        for t in range(T):
            m.d.comb += [acc_next[t].eq(Mux(first, 0, held[t]) + beat_sums[t]),
                         result.dist[t].eq(acc_next[t])]
        m.d.comb += [
            result.last.eq(last),
            fifo.w_data.eq(result),
            fifo.w_en.eq(valid & final),
            self.result.valid.eq(fifo.r_rdy),
            self.result.payload.eq(fifo.r_data),
            fifo.r_en.eq(self.result.ready),
        ]
        return m
