"""Coverage exemplars on the kNN graph (DE-SNE stage 4b, ``PRESETS["desne"]``).

Bit-exact with :func:`nms.verif.models.desne.cover_select` / ``grid_cover_select`` (the pick
order included) and :func:`~nms.verif.models.desne.mean_nearest`, as ``docs/algorithm.md``
§11a.3 specifies them in integers; see ``docs/rtl-cover.md`` for the phases, memories and cycles.

* :class:`MeanNearest` — the start point, from the distance engine's results as they pass:
  ``argmin_i Σ_j d(i, j)`` (ties to the lower index). Since ``Σ_j ‖x_i − x_j‖² = n‖x_i‖² −
  2⟨x_i, S⟩ + Σ_j ‖x_j‖²``, this is the same order as §11a.3's ``n·‖x_i‖² − 2⟨x_i, S⟩`` and as
  the model's ``‖n·x_i − S‖²`` — without an extra pass over the vectors or a multiplier.
* :class:`CoverSelector` — stores the kNN lists and affinities, builds the reverse-kNN lists
  (in-degree count, prefix sum, scatter) and the initial gains, takes the cell of every point
  and the quota of every cell, then runs the greedy: one argmax scan per pick (ties to the lower
  index) and the incremental gain update of §11a.3 step 4; finally the picks in index order;
* :class:`CoverStage` — the datapath's glue: both units, the fork of the affinity rows to the
  embedding and the selector, and the index source chosen by ``OPT.exemplar``.

Every memory has one synchronous read port and one write port (block-RAM friendly); a
read-modify-write takes two cycles and never overlaps another access to the same address.
"""

from __future__ import annotations

from amaranth import Cat, Const, Module, Mux, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFO
from amaranth.lib.wiring import In, Out
from amaranth.utils import bits_for, ceil_log2

from nms.rtl import fixedpoint as fp
from nms.rtl.bram import banked_block_ram, block_ram, sliced_block_ram
from nms.rtl.params import check_int

__all__ = ["MeanNearest", "CoverSelector", "CoverStage", "cover_cycles", "build_cycles"]

#: the self-cover value K[i][i] = 1.0 in Q1.16
ONE = 1 << fp.P_FRAC_BITS
#: width of P and of a cover value (0 .. 2^16)
P_BITS = fp.P_BITS


class MeanNearest(wiring.Component):
    """The member nearest the chunk mean, from the distance results of every tile.

    Watches the distance engine's result beats (``dist`` = one per candidate, ``T`` distances,
    ``last`` on the pass's final candidate) without driving ``ready``: per resident query it sums
    the distances to all N candidates; at each pass's ``last`` beat the T sums of the real
    queries (``base + t < n``; padding queries are skipped) are compared with the best so far,
    ``<`` strictly, so ties keep the lower index (tiles come in index order). After the final
    tile ``start`` offers the index.

    Parameters
    ----------
    tile : int
        T, queries per pass.
    dist_width : int
        Width of one squared distance (the engine's ``acc_width``).
    capacity : int
        C, the most points (candidates per pass).

    Attributes
    ----------
    clear : In(1)
        A new job: ``n`` is sampled, the sums and the best are reset.
    n : In(count)
        Points of the job (sampled with ``clear``).
    dist : In(stream.Signature({dist: ArrayLayout(dist_width, T), last}))
        The engine's result stream (observed: this unit never drives its ``ready``).
    dist_ready : In(1)
        The consumer's ``ready`` of that stream (a beat counts when ``valid & ready``).
    start : Out(stream.Signature({index}))
        The start point, offered once per job after the final tile.
    sum_width : int
        ``dist_width + bits_for(C)``: a row sum never overflows.
    latency : int
        Clock edges from the final tile's ``last`` beat's handshake (that edge counted) until
        ``start.valid`` is high: ``3 + ceil(log2 T)``
        (the pipeline above; the selector takes the start point only after its build phase).
    """

    def __init__(self, *, tile: int, dist_width: int, capacity: int):
        check_int("tile", tile, 1, 64, "1 to 64 queries per pass")
        check_int("dist_width", dist_width, 1, 64, "1 to 64 bits per distance")
        check_int("capacity", capacity, 2, 1 << 16, "2 to 65536 points")
        self.tile, self.dist_width, self.capacity = tile, dist_width, capacity
        self.index_width = max(1, ceil_log2(capacity))
        self.count_width = bits_for(capacity)
        self.sum_width = dist_width + bits_for(capacity)
        self.latency = 3 + ceil_log2(tile)
        self.dist_layout = data.StructLayout({
            "dist": data.ArrayLayout(unsigned(dist_width), tile), "last": unsigned(1)})
        self.start_layout = data.StructLayout({"index": unsigned(self.index_width)})
        super().__init__({
            "clear": In(1),
            "n": In(self.count_width),
            "dist": In(stream.Signature(self.dist_layout)),
            "dist_ready": In(1),
            "start": Out(stream.Signature(self.start_layout)),
        })

    def elaborate(self, platform):
        m = Module()
        T, SW = self.tile, self.sum_width
        n = Signal(self.count_width)
        base = Signal(self.count_width + 7)     # first query of the pass being summed
        sums = [Signal(SW, name=f"sum{t}") for t in range(T)]
        best = Signal(SW)
        best_idx = Signal(self.index_width)
        found = Signal()
        beat = self.dist.payload
        clear = self.clear

        # a pipeline, so no adder or compare sits behind the engine's result wires or behind
        # another compare (the T-link compare chain after the pass's last sum was the ULX3S
        # job top's critical path). Stage 0 registers the observed beat; stage 1 adds it to the
        # sums, or on `last` registers the pass's T totals; then a tree of registered pairwise
        # minima (lower t wins ties, as the chain did); the last stage compares with the best.
        # The stage registers hold one pass's data; passes are >= 2 beats apart, any stage
        # takes one per cycle. `clear` empties every stage.
        b_fire, b_last = Signal(name="b_fire"), Signal(name="b_last")
        b_dist = [Signal(self.dist_width, name=f"b_dist{t}") for t in range(T)]
        m.d.sync += [b_fire.eq(self.dist.valid & self.dist_ready & ~clear),
                     b_last.eq(beat.last), *[d.eq(beat.dist[t]) for t, d in enumerate(b_dist)]]

        # stage 1: a pass's totals with their "real query" flags (base + t < n)
        level = [(Signal(SW + 1, name=f"tot{t}"), Const(t, range(T)), Signal(name=f"tot{t}_ok"))
                 for t in range(T)]
        valid, pbase, final = Signal(name="tot_valid"), Signal.like(base, name="tot_base"), \
            Signal(name="tot_final")
        m.d.sync += valid.eq(b_fire & b_last & ~clear)
        with m.If(b_fire):
            with m.If(b_last):
                m.d.sync += [s.eq(0) for s in sums]
                m.d.sync += [base.eq(base + T), pbase.eq(base), final.eq(base + T >= n)]
                for t, (tot, _, ok) in enumerate(level):
                    m.d.sync += [tot.eq(sums[t] + b_dist[t]), ok.eq(base + t < n)]
            with m.Else():
                m.d.sync += [s.eq(s + b_dist[t]) for t, s in enumerate(sums)]

        # the tree: each level halves the candidates (an odd last one passes through)
        depth = 0
        while len(level) > 1:
            depth += 1
            nxt = []
            for i in range(0, len(level), 2):
                name = f"m{depth}_{i // 2}"
                val, ti, ok = (Signal(SW + 1, name=name), Signal(range(T), name=f"{name}_t"),
                               Signal(name=f"{name}_ok"))
                lv, lt, lok = level[i]
                if i + 1 == len(level):
                    m.d.sync += [val.eq(lv), ti.eq(lt), ok.eq(lok)]
                else:
                    rv, rt, rok = level[i + 1]
                    take = lok & (~rok | (lv <= rv))
                    m.d.sync += [val.eq(Mux(take, lv, rv)), ti.eq(Mux(take, lt, rt)),
                                 ok.eq(lok | rok)]
                nxt.append((val, ti, ok))
            level = nxt
            v2, b2, f2 = Signal(name=f"m{depth}_valid"), Signal.like(base, name=f"m{depth}_base"), \
                Signal(name=f"m{depth}_final")
            m.d.sync += [v2.eq(valid & ~clear), b2.eq(pbase), f2.eq(final)]
            valid, pbase, final = v2, b2, f2
        (cand, cand_t, cand_ok), = level

        with m.If(self.start.ready):
            m.d.sync += self.start.valid.eq(0)
        m.d.comb += self.start.payload.index.eq(best_idx)
        with m.If(valid):
            with m.If(cand_ok & (~found | (cand < best))):
                m.d.sync += [best.eq(cand), best_idx.eq(pbase + cand_t), found.eq(1)]
            with m.If(final):
                m.d.sync += self.start.valid.eq(1)
        with m.If(clear):
            m.d.sync += [n.eq(self.n), base.eq(0), found.eq(0), self.start.valid.eq(0)]
            m.d.sync += [s.eq(0) for s in sums]
        return m


#: the emission's output FIFO: a bitmap read is issued while level + reads in flight < depth,
#: so without back-pressure one index leaves per cycle, EMIT_LATENCY cycles after its read
EMIT_FIFO_DEPTH = 3
EMIT_LATENCY = 2


def cover_cycles(*, n: int, kk: int, start_checked: bool, start_taken: bool, in_degree,
                 covered_rows, last_index: int) -> int:
    """Cycles of :class:`CoverSelector` from the final ``cells`` beat's acceptance to the final
    index's handshake, without back-pressure (the formula of ``docs/rtl-cover.md``).

    ``in_degree[t]`` = reverse-list length of the t-th pick, ``covered_rows[t]`` = rows whose
    cover rose at that pick (at most ``1 + in_degree[t]``), ``start_checked`` = a start point
    was offered, ``start_taken`` = it was the first pick, ``last_index`` = the largest pick.
    """
    cyc = 5 if start_checked else 0
    for t, (deg, rows) in enumerate(zip(in_degree, covered_rows)):
        if not (t == 0 and start_taken):
            cyc += n + 6                                    # argmax scan
        cyc += 5 + 3 * (1 + deg) + 2 * deg                  # commit, row checks, list reads
        cyc += rows * 2 * (kk + 1)                          # gain read-modify-writes
    return cyc + 1 + last_index + 1 + EMIT_LATENCY          # emission


def build_cycles(*, n: int, kk: int) -> int:
    """Cycles of the build (clear, in-degree + gains, prefix sum, scatter) after the final row
    beat, before the ``start`` beat is taken; the rows themselves load at one beat per cycle."""
    return 1 + 2 * n * kk + 1 + 2 * n + 2 * n * kk + 1


class CoverSelector(wiring.Component):
    """Greedy kNN-graph coverage inside cell quotas: ``budget`` picks, emitted ascending.

    Protocol, one job at a time (``busy`` high from the ``job`` beat to the final index):

    1. ``job`` beat ``{n, kk, budget}`` (2 <= n <= C, 1 <= kk <= min(K, n-1), 1 <= budget <= n).
    2. ``rows``: the n·kk kNN beats ``{index, p}`` in row order (the affinity unit's result
       order; ``p`` in Q1.16). Beats are counted, ``last`` is not needed.
       Then the unit builds the reverse lists and the initial gains (no input taken).
    3. ``start`` beat ``{index, use}``: the start point (``use`` = 0: none).
    4. ``cells``: n beats ``{value}`` = the cell (slot) of each point, then one beat per slot =
       its quota, ``last`` on the final quota. Σ quota must be ``budget`` (the grid's
       allocation guarantees it); for coverage without the grid send one slot of quota
       ``budget``.
    5. The greedy runs; each pick is shown on ``pick_valid``/``pick_index`` (one cycle, in
       pick order), then the picks leave on ``indices`` ascending, ``last`` on the ``budget``-th.

    Parameters
    ----------
    capacity : int
        C, most points, 4..65536.
    k : int
        K, the longest kNN list, 1..64 (``k < capacity``).
    max_cells : int
        Depth of the per-slot quota memory, 1..C (the grid's ``max_cells``). Default C.

    Attributes
    ----------
    job, rows, start, cells : In(stream)
    indices : Out(stream.Signature({index, last}))
    pick_valid, pick_index : Out
        High for one cycle per pick, with its index, in pick order (for verification and
        counters).
    busy : Out(1)
    gain_width, edge_width : int
        Width of a gain (``17 + bits_for(C)``) and of an edge address (``ceil_log2(C·K)``).
    """

    def __init__(self, *, capacity: int, k: int, max_cells: int | None = None):
        check_int("capacity", capacity, 4, 1 << 16, "4 to 65536 points")
        check_int("k", k, 1, 64, "1 to 64 neighbours per point")
        if k >= capacity:  # a kNN list never holds the point itself
            raise ValueError(f"k={k} must be smaller than capacity={capacity}")
        if max_cells is None:
            max_cells = capacity
        check_int("max_cells", max_cells, 1, capacity, f"1 to capacity={capacity} slots")
        self.capacity, self.k, self.max_cells = capacity, k, max_cells
        C = capacity
        self.index_width = IW = max(1, ceil_log2(C))
        self.count_width = CW = bits_for(C)
        self.slot_width = max(1, ceil_log2(max_cells))
        self.edges = C * k
        self.edge_width = max(1, ceil_log2(self.edges))
        # gain_j <= 2^16 * (1 + in-degree) <= 2^16 * C
        self.gain_width = P_BITS + bits_for(C)
        self.offset_width = bits_for(self.edges)
        self.job_layout = data.StructLayout({
            "n": unsigned(CW), "kk": unsigned(bits_for(k)), "budget": unsigned(CW)})
        self.row_layout = data.StructLayout({"index": unsigned(IW), "p": unsigned(P_BITS)})
        self.start_layout = data.StructLayout({"index": unsigned(IW), "use": unsigned(1)})
        self.cell_layout = data.StructLayout({"value": unsigned(max(CW, self.slot_width)),
                                              "last": unsigned(1)})
        self.index_layout = data.StructLayout({"index": unsigned(IW), "last": unsigned(1)})
        super().__init__({
            "job": In(stream.Signature(self.job_layout)),
            "rows": In(stream.Signature(self.row_layout)),
            "start": In(stream.Signature(self.start_layout)),
            "cells": In(stream.Signature(self.cell_layout)),
            "indices": Out(stream.Signature(self.index_layout)),
            "pick_valid": Out(1),
            "pick_index": Out(IW),
            "busy": Out(1),
        })

    @property
    def parameters(self) -> dict:
        return {"capacity": self.capacity, "k": self.k, "max_cells": self.max_cells}

    @property
    def derived(self) -> dict:
        return {"index_width": self.index_width, "gain_width": self.gain_width,
                "edge_width": self.edge_width, "offset_width": self.offset_width,
                "slot_width": self.slot_width}

    def elaborate(self, platform):
        m = Module()
        C, K = self.capacity, self.k
        IW, CW, SW, EW, GW, OW = (self.index_width, self.count_width, self.slot_width,
                                  self.edge_width, self.gain_width, self.offset_width)

        def mem(name, width, depth, *, sliced=False, banked=False):
            # block RAMs without read-during-write logic (nms.rtl.bram.block_ram): no phase
            # uses a word read in the cycle its address is written (the walks and the gain
            # update read at A and write at B or a cycle later, at another address; the other
            # phases read and write a memory in different states); sliced: bit slices one
            # block RAM deep, no cascade multiplexer behind the outputs; banked: banks in depth
            # whose words are registered before the bank multiplexer (reads take two cycles)
            if sliced:
                r, w = sliced_block_ram(m, name, unsigned(width), depth)
            elif banked:
                r, w = banked_block_ram(m, name, unsigned(width), depth)
            else:
                _, r, w = block_ram(m, name, unsigned(width), depth)
            m.d.comb += w.en.eq(0)
            return r, w

        # the gain update reads nbr/pv straight into its compares and the gain RAM's address:
        # sliced (at C·K = 16 384: pv 17 RAMs against a cascade's 16, nbr 10 either way)
        nbr_r, nbr_w = mem("nbr", IW, self.edges, sliced=True)   # kNN index of edge i*K + t
        pv_r, pv_w = mem("pv", P_BITS, self.edges, sliced=True)  # P of that edge
        # reverse lists {i, P[i][t]}: banked (sliced it takes 27 RAMs, 24 so; the datapath
        # has none to spare), read in the greedy phase only, two cycles ahead
        rev_r, rev_w = mem("rev", IW + P_BITS, self.edges, banked=True)
        off_r, off_w = mem("off", OW, C)                     # in-degree, then list ends
        gain_r, gain_w = mem("gain", GW, C)
        cov_r, cov_w = mem("covered", P_BITS, C)
        # per point {slot of its cell, picked}: the scan reads both at one address, and the
        # picked bit needs no memory of its own (in LUT RAM its 1024-deep read multiplexer
        # was the unit's critical path)
        cell_r, cell_w = mem("cell", SW + 1, C)
        slot_of, picked_of = cell_r.data[:SW], cell_r.data[SW]
        left_r, left_w = mem("left", CW, self.max_cells)

        n = Signal(CW)
        kk = Signal(bits_for(K))
        budget = Signal(CW)
        # n - 1, kk - 1, budget - 1 as registers (set with the job): no subtractor in front of
        # the compares that steer the walks and the RAM addresses
        n_last = Signal(CW)
        kk_last = Signal(bits_for(K))
        budget_last = Signal(CW)
        i = Signal(CW)                 # point / row counter
        t = Signal(bits_for(K))        # position in a row
        e = Signal(EW + 1)             # edge address (LOAD and the walks)
        e_row = Signal(EW + 1)         # i * K
        t_last = Signal()              # t == kk - 1 (the walks)
        i_last = Signal()              # i == n - 1 (the walks)
        walk_addr = Signal(EW + 1)     # the edge after e (the walks' next address)
        up_addr = Signal(EW + 1)       # the gain update's next edge address
        acc = Signal(OW)               # prefix sum
        j_l = Signal(IW)               # latched candidate / target
        # nbr/pv of the edge being walked, registered behind the RAMs: the walks read each edge
        # a cycle ahead, so RAM outputs only reach flip-flops (not compares or RAM addresses)
        q_j = Signal(IW)
        q_p = Signal(P_BITS)
        p_l = Signal(P_BITS)           # latched P / cover candidate value
        s_idx = Signal(IW)
        s_use = Signal()
        picks = Signal(CW)             # picks done
        p = Signal(IW)                 # current pick
        slot_p = Signal(SW)
        r = Signal(OW)                 # reverse-list pointer
        r_end = Signal(OW)
        row_i = Signal(IW)             # row whose cover rises
        c_new = Signal(P_BITS)
        a_old = Signal(P_BITS)
        self_cand = Signal()           # the row's own candidate (j = i, K = 2^16) is next
        delta = Signal(P_BITS + 1)
        # scan pipeline
        sj = Signal(CW + 1)
        v1, v2 = Signal(), Signal()
        j1, j2 = Signal(IW), Signal(IW)
        g2 = Signal(GW)
        pk2 = Signal()
        c2 = Signal(SW)                # cell of the point at stage 2 (-> left address)
        v3, v4 = Signal(), Signal()
        j3, j4 = Signal(IW), Signal(IW)
        g3, g4 = Signal(GW), Signal(GW)
        pk3, pk4 = Signal(), Signal()
        left4 = Signal(CW)
        left_q = Signal(CW)            # left[cell[p]] of the pick, registered
        gain_q = Signal(GW)            # gain word of the update, registered behind the RAM
        gain_wb = Signal()             # its write (gain_q - delta) is due this cycle
        # the walks' read-modify-writes: read at A, words registered at B, written the cycle
        # after B (walk_wb) from registers; a word the previous edge writes in the cycle it is
        # read (same target j at a row boundary) is taken from that write instead (fwd)
        walk_wb = Signal()
        off_q = Signal(OW)
        fwd = Signal()
        wr_off = Signal(OW)            # the word the last write-behind gave off[j]
        wr_gain = Signal(GW)           # ... and gain[j]
        i_a = Signal(IW)               # the row of the edge at A
        pre_q = Signal(OW)             # prefix sum: in-degree of the previous point
        best = Signal(GW)
        best_j = Signal(IW)
        found = Signal()
        emitted = Signal(CW)
        em_more = Signal()             # bitmap words left to read
        em_valid = Signal()            # a bitmap word (of em_idx) is on the read port
        em_idx = Signal(IW)
        m.submodules.em_fifo = em_fifo = SyncFIFO(width=IW + 1, depth=EMIT_FIFO_DEPTH)
        m.d.comb += [self.indices.valid.eq(em_fifo.r_rdy), em_fifo.r_en.eq(self.indices.ready),
                     self.indices.payload.eq(em_fifo.r_data)]

        job, rows, cells, start = self.job.payload, self.rows.payload, self.cells.payload, \
            self.start.payload
        m.d.comb += self.pick_index.eq(p)

        # LOAD writes each beat a cycle later from registers: the beat's handshake (the
        # datapath's fork of the affinity output) reaches no RAM pin
        ld_wb = Signal()
        ld_e = Signal(EW + 1)
        ld_j = Signal(IW)
        ld_p = Signal(P_BITS)
        m.d.sync += ld_wb.eq(0)
        with m.If(ld_wb):
            m.d.comb += [nbr_w.en.eq(1), nbr_w.addr.eq(ld_e), nbr_w.data.eq(ld_j),
                         pv_w.en.eq(1), pv_w.addr.eq(ld_e), pv_w.data.eq(ld_p)]

        with m.FSM(name="cover") as fsm:
            def walk_start():
                # edge 0 of a walk: t = i = 0, its successor's address (n >= 2: not the last)
                m.d.sync += [i.eq(0), t.eq(0), e.eq(0), e_row.eq(0), t_last.eq(kk_last == 0),
                             i_last.eq(0), walk_addr.eq(Mux(kk_last == 0, K, 1))]

            with m.State("IDLE"):
                m.d.comb += self.job.ready.eq(1)
                with m.If(self.job.valid):
                    m.d.sync += [n.eq(job.n), kk.eq(job.kk), budget.eq(job.budget), i.eq(0),
                                 n_last.eq(job.n - 1), kk_last.eq(job.kk - 1),
                                 budget_last.eq(job.budget - 1)]
                    m.next = "CLEAR"
            with m.State("CLEAR"):
                # per point: no in-edges yet, gain = K[j][j], not covered (not picked: CELLS)
                for w, v in ((off_w, 0), (gain_w, ONE), (cov_w, 0)):
                    m.d.comb += [w.en.eq(1), w.addr.eq(i), w.data.eq(v)]
                m.d.sync += i.eq(i + 1)
                with m.If(i == n_last):
                    m.d.sync += [i.eq(0), t.eq(0), e.eq(0), e_row.eq(0)]
                    m.next = "LOAD"
            with m.State("LOAD"):
                m.d.comb += self.rows.ready.eq(1)
                with m.If(self.rows.valid):
                    m.d.sync += [ld_wb.eq(1), ld_e.eq(e), ld_j.eq(rows.index), ld_p.eq(rows.p)]
                    with m.If(e == 0):
                        # the DEG walk starts with edge 0 registered, taken from its beat
                        m.d.sync += [q_j.eq(rows.index), q_p.eq(rows.p)]
                    with m.If(t == kk_last):
                        m.d.sync += [t.eq(0), i.eq(i + 1), e_row.eq(e_row + K), e.eq(e_row + K)]
                        with m.If(i == n_last):
                            walk_start()
                            m.next = "LOAD_END"
                    with m.Else():
                        m.d.sync += [t.eq(t + 1), e.eq(e + 1)]
            with m.State("LOAD_END"):
                m.next = "DEG_A"           # (the final beat's write; DEG_A may read its word)

            def edge_walk(state_a, state_b, after, on_a):
                """Two cycles per edge (i, t): A has nbr/pv of edge e in q_j/q_p and presents
                the next edge's address (edge 0 after the final one, for the next walk), B has
                the data of the addresses A presented and registers the next edge.

                The address A presents is the register ``walk_addr``, computed with the step
                to edge e (``t_last`` / ``i_last`` say e ends its row / is in the last row), so
                only registers drive the edge memories' 27 address inputs."""
                with m.State(state_a):
                    m.d.sync += [j_l.eq(q_j), p_l.eq(q_p), i_a.eq(i),
                                 fwd.eq(walk_wb & (q_j == j_l))]
                    on_a(q_j)
                    m.d.comb += [nbr_r.addr.eq(walk_addr), pv_r.addr.eq(walk_addr)]
                    m.next = state_b
                with m.State(state_b):
                    # (gain_q is the DEG walk's; the scatter does not read gain)
                    m.d.sync += [q_j.eq(nbr_r.data), q_p.eq(pv_r.data), walk_wb.eq(1),
                                 off_q.eq(off_r.data), gain_q.eq(gain_r.data)]
                    # the step to edge e2 (the row's next edge, or the next row's first)
                    row2 = Mux(t_last, e_row + K, e_row)
                    e2 = Mux(t_last, e_row + K, e + 1)
                    t_last2 = Mux(t_last, kk_last == 0, t + 1 == kk_last)
                    i_last2 = Mux(t_last, i + 1 == n_last, i_last)
                    m.d.sync += [t.eq(Mux(t_last, 0, t + 1)), i.eq(Mux(t_last, i + 1, i)),
                                 e_row.eq(row2), e.eq(e2), t_last.eq(t_last2),
                                 i_last.eq(i_last2),
                                 walk_addr.eq(Mux(t_last2 & i_last2, 0,
                                                  Mux(t_last2, row2 + K, e2 + 1)))]
                    with m.If(t_last):
                        with m.If(i_last):
                            walk_start()
                            m.d.sync += acc.eq(0)
                            m.next = after
                        with m.Else():
                            m.next = state_a
                    with m.Else():
                        m.next = state_a

            # ---- in-degree and initial gain: gain[j] = 2^16 + Σ P over the edges into j
            # (DEG_A is entered with edge 0 in q_j/q_p, registered from its LOAD beat)
            def deg_a(j):
                m.d.comb += [off_r.addr.eq(j), gain_r.addr.eq(j)]

            edge_walk("DEG_A", "DEG_B", "DEG_END", deg_a)
            with m.State("DEG_END"):
                # the final edge's write-behind (PRE_A would read off[0] beside it)
                m.d.sync += pre_q.eq(0)
                m.next = "PRE_A"

            # ---- prefix sum: off[j] = first slot of j's reverse list (PRE_A adds the previous
            # point's in-degree, registered at its PRE_B, so no adder sits behind the RAM)
            with m.State("PRE_A"):
                m.d.comb += off_r.addr.eq(i)
                m.d.sync += acc.eq(acc + pre_q)
                m.next = "PRE_B"
            with m.State("PRE_B"):
                m.d.comb += [off_w.en.eq(1), off_w.addr.eq(i), off_w.data.eq(acc)]
                m.d.sync += [pre_q.eq(off_r.data), i.eq(i + 1)]
                with m.If(i == n_last):
                    walk_start()
                    m.next = "SCAT_A"      # with edge 0 in q_j/q_p, from the DEG walk's end
                with m.Else():
                    m.next = "PRE_A"

            # ---- scatter: rev[off[j]++] = {i, P[i][t]}; afterwards off[j] = end of j's list
            def scat_a(j):
                m.d.comb += off_r.addr.eq(j)

            edge_walk("SCAT_A", "SCAT_B", "START", scat_a)

            with m.State("START"):
                m.d.comb += self.start.ready.eq(1)
                with m.If(self.start.valid):
                    m.d.sync += [s_idx.eq(start.index), s_use.eq(start.use), i.eq(0)]
                    m.next = "CELLS"
            with m.State("CELLS"):
                m.d.comb += self.cells.ready.eq(1)
                with m.If(self.cells.valid):
                    with m.If(i < n):
                        m.d.comb += [cell_w.en.eq(1), cell_w.addr.eq(i),
                                     cell_w.data.eq(Cat(cells.value[:SW], 0))]
                    with m.Else():
                        m.d.comb += [left_w.en.eq(1), left_w.addr.eq(i - n),
                                     left_w.data.eq(cells.value)]
                    m.d.sync += i.eq(i + 1)
                    with m.If(cells.last):
                        m.d.sync += picks.eq(0)
                        with m.If(s_use):
                            m.next = "ST_A"
                        with m.Else():
                            m.next = "SCAN_INIT"

            # ---- the start point, if its cell has quota
            # (every RAM word is registered before it is compared or used as an address)
            with m.State("ST_A"):
                m.d.comb += cell_r.addr.eq(s_idx)
                m.next = "ST_B"
            with m.State("ST_B"):
                m.d.sync += slot_p.eq(slot_of)
                m.next = "ST_C"
            with m.State("ST_C"):
                m.d.comb += left_r.addr.eq(slot_p)
                m.next = "ST_D"
            with m.State("ST_D"):
                m.d.sync += left_q.eq(left_r.data)
                m.next = "ST_E"
            with m.State("ST_E"):
                with m.If(left_q != 0):
                    m.d.sync += p.eq(s_idx)
                    m.next = "COMMIT"
                with m.Else():
                    m.next = "SCAN_INIT"

            # ---- argmax over the allowed points (not picked, cell quota left), ties to the lower
            # index: stage 0 reads gain/picked/cell of sj, stage 1 registers the words, stage 2
            # reads left of the cell, stage 3 registers it, stage 4 compares
            with m.State("SCAN_INIT"):
                m.d.sync += [sj.eq(0), v1.eq(0), v2.eq(0), v3.eq(0), v4.eq(0), found.eq(0)]
                m.next = "SCAN"
            with m.State("SCAN"):
                for rp in (gain_r, cell_r):
                    m.d.comb += rp.addr.eq(sj)
                m.d.comb += left_r.addr.eq(c2)
                m.d.sync += [v1.eq(sj < n), j1.eq(sj),
                             v2.eq(v1), j2.eq(j1), g2.eq(gain_r.data), pk2.eq(picked_of),
                             c2.eq(slot_of),
                             v3.eq(v2), j3.eq(j2), g3.eq(g2), pk3.eq(pk2),
                             v4.eq(v3), j4.eq(j3), g4.eq(g3), pk4.eq(pk3), left4.eq(left_r.data)]
                with m.If(sj < n):
                    m.d.sync += sj.eq(sj + 1)
                ok = v4 & ~pk4 & (left4 != 0)
                with m.If(ok & (~found | (g4 > best))):
                    m.d.sync += [best.eq(g4), best_j.eq(j4), found.eq(1)]
                with m.If((sj == n) & ~v1 & ~v2 & ~v3 & ~v4):
                    m.d.sync += p.eq(best_j)
                    m.next = "COMMIT"

            # ---- commit pick p: picked, left[cell[p]] -= 1, its reverse list [off[p-1], off[p])
            with m.State("COMMIT"):
                m.d.comb += [self.pick_valid.eq(1), cell_r.addr.eq(p), off_r.addr.eq(p - 1)]
                m.next = "CM_B"
            with m.State("CM_B"):
                m.d.comb += off_r.addr.eq(p)
                m.d.sync += [slot_p.eq(slot_of), r.eq(off_r.data)]
                m.next = "CM_C"
            with m.State("CM_C"):
                m.d.comb += left_r.addr.eq(slot_p)
                m.d.sync += [r_end.eq(off_r.data), r.eq(Mux(p == 0, 0, r))]
                m.next = "CM_D"
            with m.State("CM_D"):
                m.d.sync += left_q.eq(left_r.data)
                m.next = "CM_E"
            with m.State("CM_E"):
                m.d.comb += [left_w.en.eq(1), left_w.addr.eq(slot_p), left_w.data.eq(left_q - 1),
                             cell_w.en.eq(1), cell_w.addr.eq(p), cell_w.data.eq(Cat(slot_p, 1)),
                             cov_r.addr.eq(p)]
                m.d.sync += [row_i.eq(p), c_new.eq(ONE)]
                m.next = "ROW"
            # row row_i's cover (on the read port) is registered, then may rise to c_new
            with m.State("ROW"):
                m.d.sync += a_old.eq(cov_r.data)
                m.next = "ROW_CMP"
            with m.State("ROW_CMP"):
                with m.If(c_new > a_old):
                    m.d.comb += [cov_w.en.eq(1), cov_w.addr.eq(row_i), cov_w.data.eq(c_new)]
                    m.d.sync += [self_cand.eq(1), t.eq(0), up_addr.eq(row_i * K)]
                    m.next = "UP_A"
                with m.Else():
                    m.next = "NEXT_ROW"
            with m.State("NEXT_ROW"):
                m.d.comb += rev_r.addr.eq(r)
                with m.If(r != r_end):
                    m.d.sync += r.eq(r + 1)
                    m.next = "REV"
                with m.Else():
                    m.d.sync += picks.eq(picks + 1)
                    with m.If(picks == budget_last):
                        m.d.sync += i.eq(0)
                        m.next = "EM_PRIME"
                    with m.Else():
                        m.next = "SCAN_INIT"
            with m.State("REV"):
                m.next = "ROW_RD"          # (the banked rev read takes two cycles)
            with m.State("ROW_RD"):
                m.d.comb += cov_r.addr.eq(rev_r.data[:IW])
                m.d.sync += [row_i.eq(rev_r.data[:IW]), c_new.eq(rev_r.data[IW:])]
                m.next = "ROW"
            # gain[j] -= max(K_ij - a, 0) - max(K_ij - c, 0) for j = i, then j = nbr[i][t]:
            # UP_A reads gain[j], UP_B registers the word, the cycle after UP_B writes it
            # (gain_wb; the next UP_A reads another j: a row's candidates are distinct)
            # (UP_A presents the next edge's address, the register up_addr, UP_B registers its
            # data: the row's own candidate reads edge i*K, edge e reads e + 1)
            with m.State("UP_A"):
                jj = Mux(self_cand, row_i, q_j)
                kv = Mux(self_cand, ONE, q_p)
                m.d.comb += [nbr_r.addr.eq(up_addr), pv_r.addr.eq(up_addr)]
                m.d.sync += up_addr.eq(up_addr + 1)
                # max(kv - a, 0) - max(kv - c, 0) with c = c_new > a = a_old (ROW enters UP_A
                # only then) is min(kv, c) - a, or 0 for kv <= a: two compares and one
                # subtract of kv side by side, not a compare-subtract chain behind the RAM
                m.d.comb += gain_r.addr.eq(jj)
                m.d.sync += [j_l.eq(jj),
                             delta.eq(Mux(kv <= a_old, 0,
                                          Mux(kv >= c_new, c_new - a_old, kv - a_old)))]
                m.next = "UP_B"
            with m.State("UP_B"):
                m.d.sync += [gain_q.eq(gain_r.data), gain_wb.eq(1),
                             self_cand.eq(0), q_j.eq(nbr_r.data), q_p.eq(pv_r.data)]
                with m.If(~self_cand & (t == kk_last)):
                    m.next = "NEXT_ROW"
                with m.Else():
                    with m.If(~self_cand):
                        m.d.sync += t.eq(t + 1)
                    m.next = "UP_A"

            # ---- the picks in index order (the next job's CLEAR clears the bitmap). The
            # bitmap is read at the register i while the output FIFO has room, counting the
            # word in flight, and picked indices enter the FIFO: the consumer's ready reaches
            # neither the bitmap's address nor its output
            with m.State("EM_PRIME"):
                m.d.sync += [i.eq(0), emitted.eq(0), em_more.eq(1), em_valid.eq(0)]
                m.next = "EM"
            with m.State("EM"):
                issue = em_more & (em_fifo.level + em_valid < EMIT_FIFO_DEPTH)
                m.d.comb += cell_r.addr.eq(i)
                m.d.sync += [em_valid.eq(issue), em_idx.eq(i)]
                with m.If(issue):
                    m.d.sync += i.eq(i + 1)
                    with m.If(i == n_last):
                        m.d.sync += em_more.eq(0)
                with m.If(em_valid & picked_of):
                    m.d.comb += [em_fifo.w_en.eq(1),
                                 em_fifo.w_data.eq(Cat(em_idx, emitted == budget_last))]
                    m.d.sync += emitted.eq(emitted + 1)
                    with m.If(emitted == budget_last):
                        m.d.sync += em_more.eq(0)
                with m.If(self.indices.valid & self.indices.ready & self.indices.payload.last):
                    m.next = "IDLE"
        # the walks' write-behind (the cycle after B: the next A, DEG_END or START, none of
        # which writes these memories; j_l, p_l, i_a and fwd change only at its end)
        with m.If(walk_wb):
            slot = Mux(fwd, wr_off, off_q)
            m.d.comb += [off_w.en.eq(1), off_w.addr.eq(j_l), off_w.data.eq(slot + 1)]
            m.d.sync += [wr_off.eq(slot + 1), walk_wb.eq(0)]
            with m.If(fsm.ongoing("DEG_A") | fsm.ongoing("DEG_END")):
                g = Mux(fwd, wr_gain, gain_q) + p_l
                m.d.comb += [gain_w.en.eq(1), gain_w.addr.eq(j_l), gain_w.data.eq(g)]
                m.d.sync += wr_gain.eq(g)
            with m.Else():
                m.d.comb += [rev_w.en.eq(1), rev_w.addr.eq(slot), rev_w.data.eq(Cat(i_a, p_l))]
        # the gain update's write-behind (the cycle after UP_B: UP_A or NEXT_ROW, which write
        # no other gain word; j_l, gain_q and delta change only at the end of this cycle)
        with m.If(gain_wb):
            m.d.comb += [gain_w.en.eq(1), gain_w.addr.eq(j_l), gain_w.data.eq(gain_q - delta)]
            m.d.sync += gain_wb.eq(0)
        m.d.comb += self.busy.eq(~fsm.ongoing("IDLE"))
        return m


class CoverStage(wiring.Component):
    """The datapath's coverage glue: :class:`MeanNearest` + :class:`CoverSelector`, the fork of
    the affinity rows and the choice of the index source.

    On ``clear`` (an accepted job start) the job values are latched; when ``cover`` is set the
    selector gets its ``job`` beat, takes every affinity beat together with the embedding
    (:attr:`rows` is accepted only when both take it: see :meth:`fork`), the start point from
    the distance results (``use`` = ``use_start``), and the grid's cells and quotas; its picks
    leave on :attr:`indices`. Otherwise :attr:`indices` passes the grid's indices through.

    Attributes
    ----------
    clear : In(1)
    n, kk, budget : In
        Job values, sampled with ``clear``.
    cover, use_start : In(1)
        ``OPT.exemplar == cover`` and ``OPT.cover_start == mean``, sampled with ``clear``.
    dist, dist_ready : In
        The distance engine's result stream (observed) and its consumer's ``ready``.
    rows : In(stream.Signature({index, p}))
        Selector side of the affinity-row fork.
    cells : In(stream.Signature({value, last}))
        The grid sampler's ``cells``.
    grid_indices : In(stream.Signature({index, last}))
        The grid sampler's ``indices``.
    indices : Out(stream.Signature({index, last}))
        The job's indices.
    mode : Out(1)
        The latched ``cover`` of the current job.
    """

    def __init__(self, *, capacity: int, k: int, tile: int, dist_width: int, max_cells: int,
                 cell_layout: data.StructLayout, index_layout: data.StructLayout):
        self.mean = MeanNearest(tile=tile, dist_width=dist_width, capacity=capacity)
        self.selector = CoverSelector(capacity=capacity, k=k, max_cells=max_cells)
        sel = self.selector
        self.external_cell_layout = cell_layout
        super().__init__({
            "clear": In(1),
            "n": In(sel.count_width),
            "kk": In(bits_for(k)),
            "budget": In(sel.count_width),
            "cover": In(1),
            "use_start": In(1),
            "dist": In(stream.Signature(self.mean.dist_layout)),
            "dist_ready": In(1),
            "rows": In(stream.Signature(sel.row_layout)),
            "cells": In(stream.Signature(cell_layout)),
            "grid_indices": In(stream.Signature(index_layout)),
            "indices": Out(stream.Signature(index_layout)),
            "mode": Out(1),
        })

    def fork(self, m, source, other):
        """Wire the stream ``source`` (affinity results) to ``other`` (the embedding's input,
        ``index``/``p`` fields) and to :attr:`rows`: a beat moves only when both take it
        (``rows`` counts as taking it when the job is not in coverage mode)."""
        mode = self.mode
        sel_ready = self.rows.ready | ~mode
        m.d.comb += [
            other.payload.index.eq(source.payload.index), other.payload.p.eq(source.payload.p),
            other.valid.eq(source.valid & sel_ready),
            self.rows.payload.index.eq(source.payload.index),
            self.rows.payload.p.eq(source.payload.p),
            self.rows.valid.eq(source.valid & other.ready & mode),
            source.ready.eq(other.ready & sel_ready),
        ]

    def elaborate(self, platform):
        m = Module()
        m.submodules.mean = mean = self.mean
        m.submodules.selector = sel = self.selector
        mode = self.mode
        use = Signal()
        n_l, kk_l, budget_l = Signal.like(self.n), Signal.like(self.kk), Signal.like(self.budget)
        with m.If(self.clear):
            m.d.sync += [mode.eq(self.cover), use.eq(self.use_start)]
        # the selector's job beat, offered once per coverage job
        jv = Signal()
        with m.If(self.clear):
            m.d.sync += jv.eq(self.cover)
        with m.Elif(sel.job.ready):
            m.d.sync += jv.eq(0)
        m.d.comb += [sel.job.valid.eq(jv), sel.job.payload.n.eq(n_l),
                     sel.job.payload.kk.eq(kk_l), sel.job.payload.budget.eq(budget_l)]
        with m.If(self.clear):
            m.d.sync += [n_l.eq(self.n), kk_l.eq(self.kk), budget_l.eq(self.budget)]
        m.d.comb += [mean.clear.eq(self.clear), mean.n.eq(self.n),
                     mean.dist.payload.eq(self.dist.payload), mean.dist.valid.eq(self.dist.valid),
                     mean.dist_ready.eq(self.dist_ready)]
        # start point -> selector (coverage jobs only; otherwise it is dropped at the next clear)
        m.d.comb += [sel.start.valid.eq(mean.start.valid & mode),
                     sel.start.payload.index.eq(mean.start.payload.index),
                     sel.start.payload.use.eq(use),
                     mean.start.ready.eq(sel.start.ready & mode)]
        wiring.connect(m, wiring.flipped(self.rows), sel.rows)
        m.d.comb += [sel.cells.valid.eq(self.cells.valid & mode),
                     sel.cells.payload.value.eq(self.cells.payload.value),
                     sel.cells.payload.last.eq(self.cells.payload.last),
                     self.cells.ready.eq(sel.cells.ready & mode)]
        # indices: the selector's in coverage mode, the grid's otherwise
        src_sel, src_grid, out = sel.indices, self.grid_indices, self.indices
        m.d.comb += [
            out.valid.eq(Mux(mode, src_sel.valid, src_grid.valid)),
            out.payload.index.eq(Mux(mode, src_sel.payload.index, src_grid.payload.index)),
            out.payload.last.eq(Mux(mode, src_sel.payload.last, src_grid.payload.last)),
            src_sel.ready.eq(out.ready & mode),
            src_grid.ready.eq(out.ready & ~mode),
        ]
        return m
