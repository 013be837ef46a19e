"""kNN selection behind the distance engine: the K nearest neighbours of every query of a tile.

See ``docs/rtl-knn.md`` for ports, timing and the no-stall condition in one page.
"""

from __future__ import annotations

from amaranth import Cat, Const, Module, Mux, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.wiring import In, Out

from nms.rtl.distance import DistanceEngine
from nms.rtl.params import check_int

__all__ = ["KnnSelector", "KnnDatapath"]


class KnnSelector(wiring.Component):
    """Keeps, for each of ``tile`` queries in parallel, the ``k`` nearest candidates of a pass.

    The input is the distance engine's result stream: one beat per candidate, candidates in index
    order ``0, 1, ... N-1``, ``dist[t]`` the squared distance to query ``t`` of the tile, ``last``
    on candidate ``N-1``. Query ``t`` is point ``base + t``, where ``base`` is the pass's beat on
    ``tile_base``; the candidate with that index (the query itself) is skipped, so a point is
    never its own neighbour (its duplicates are).

    Per query a K-entry insertion register (sorted by distance, invalid entries at the tail)
    takes one candidate per cycle: every entry compares ``dist < entry`` in parallel and the
    list shifts right from the first entry that is larger. Strict ``<`` keeps an earlier (lower)
    index ahead of a later equal distance, so ties go to the lower index as in
    ``nms.verif.models.desne.knn``.

    When the pass's ``last`` beat is taken the lists (including that beat) are copied to an
    output bank in the next cycle and the insertion registers start the next pass as empty (a
    pass's first beat ignores their old entries): the bank is emitted while the next pass is
    selected. Rows leave in query order ``t = 0 .. tile-1``; row
    ``t`` holds ``min(k, N - 1)`` beats sorted by (distance, index), ``last`` on its final beat.
    Rows of queries with ``base + t >= N`` (the padding of a partial final tile) and empty rows
    (``N = 1``) are not emitted.

    Beats enter through a 2-entry input buffer (``ready`` = not full); the head beat waits only
    (a) on a pass's first beat while no ``tile_base`` beat is offered, and (b) on a pass's
    ``last`` beat while the output bank still holds rows of the previous pass.
    So the engine is never stalled if the ``tile_base`` beat arrives before the pass's first
    result and the rows (at most ``tile * k`` beats, one per cycle) drain while the next pass runs:
    with an always-ready sink this holds when the next pass delivers its ``last`` beat at least
    ``tile * min(k, N - 1) + 2`` cycles after this pass's ``last`` beat, e.g. whenever
    ``N >= tile * k + 2`` (one result per cycle at most).

    Parameters
    ----------
    k : int
        K, neighbours kept per query, 1..256.
    tile : int
        T, queries per pass (the engine's ``tile``), 1..64.
    dist_width : int
        Squared-distance width in bits, 1..64 (the engine's ``acc_width``).
    index_width : int
        Candidate index width in bits, 1..32; a pass holds at most ``2**index_width`` candidates
        (indices wrap beyond that).

    Attributes
    ----------
    dist : In(stream.Signature(dist_layout))
        Distance beats ``{dist: ArrayLayout(unsigned(dist_width), tile), last: unsigned(1)}``
        (the engine's ``result`` layout), one per candidate in index order.
    tile_base : In(stream.Signature(unsigned(index_width)))
        One beat per pass: the index of query 0 of the tile. Consumed with the pass's first
        distance beat.
    rows : Out(stream.Signature(row_layout))
        Neighbour beats ``{index: unsigned(index_width), dist: unsigned(dist_width),
        last: unsigned(1)}`` (``index`` at the LSB; the affinity unit's ``row`` layout); ``last``
        ends a query's row.
    latency : int
        Cycles from accepting a pass's ``last`` beat to the first row beat being offered (4: the
        beat leaves the input buffer into the lists, the bank copies them, the first shift is
        decided a cycle ahead, the beat enters the output buffer).

    Raises
    ------
    TypeError, ValueError
        A parameter of the wrong type or out of range; the message names it and its value.
    """

    def __init__(self, *, k: int = 16, tile: int = 4, dist_width: int = 26, index_width: int = 16):
        check_int("k", k, 1, 256, "1 to 256 neighbours per query")
        check_int("tile", tile, 1, 64, "1 to 64 queries per pass")
        check_int("dist_width", dist_width, 1, 64, "1 to 64 bits per squared distance")
        check_int("index_width", index_width, 1, 32, "1 to 32 bits per candidate index")
        self.k = k
        self.tile = tile
        self.dist_width = dist_width
        self.index_width = index_width
        self.latency = 4
        self.dist_layout = data.StructLayout({
            "dist": data.ArrayLayout(unsigned(dist_width), tile),
            "last": unsigned(1),
        })
        self.row_layout = data.StructLayout({
            "index": unsigned(index_width),
            "dist": unsigned(dist_width),
            "last": unsigned(1),
        })
        super().__init__({
            "dist": In(stream.Signature(self.dist_layout)),
            "tile_base": In(stream.Signature(unsigned(index_width))),
            "rows": Out(stream.Signature(self.row_layout)),
        })

    @property
    def parameters(self) -> dict:
        """Generator parameters (for metadata)."""
        return {"k": self.k, "tile": self.tile, "dist_width": self.dist_width,
                "index_width": self.index_width}

    @property
    def derived(self) -> dict:
        """Derived sizes (for metadata)."""
        return {"latency": self.latency, "comparators": self.tile * self.k,
                "list_bits": 2 * self.tile * self.k * (self.dist_width + self.index_width + 1)}

    def elaborate(self, platform):
        m = Module()
        K, T = self.k, self.tile
        dw, iw = self.dist_width, self.index_width

        def entry_signals(prefix):
            return ([[Signal(dw, name=f"{prefix}_dist_{t}_{i}") for i in range(K)] for t in range(T)],
                    [[Signal(iw, name=f"{prefix}_idx_{t}_{i}") for i in range(K)] for t in range(T)],
                    [[Signal(name=f"{prefix}_vld_{t}_{i}") for i in range(K)] for t in range(T)])

        # insertion registers (the pass being selected) and the output bank (the finished pass)
        l_dist, l_idx, l_vld = entry_signals("list")
        o_dist, o_idx, o_vld = entry_signals("bank")
        o_act = Signal(T)        # rows still to emit, one bit per query

        # ---- pass state: the candidate index and the tile base ---------------------------------
        first = Signal(init=1)   # the next distance beat is a pass's first
        cand = Signal(iw)        # index of the candidate on `dist` (0 on a pass's first beat)
        cand_p1 = Signal(iw, init=1)    # cand + 1 (wrapping), kept as a register
        next_ok = Signal()       # a one-beat slot (next_bt), so the next pass's base can wait
        # base + t of every query, one bit wider (a query past the index range never matches):
        # of the pass (`cur_bt`) and of the next one (`next_bt`), registered with the base
        cur_bt = [Signal(iw + 1, name=f"cur_bt_{t}") for t in range(T)]
        next_bt = [Signal(iw + 1, name=f"next_bt_{t}") for t in range(T)]

        # ---- input: a 2-entry buffer; `dist.ready` is "not full" (a register compare), so the
        # selector's accept logic and the engine's output FIFO are not one combinational path
        ibuf = [Signal(self.dist_layout, name=f"in_{j}") for j in range(2)]
        icount = Signal(range(3))       # beats in the buffer; ibuf[0] is the head
        push = Signal()
        m.d.comb += [self.dist.ready.eq(icount != 2),
                     push.eq(self.dist.valid & self.dist.ready)]
        head = ibuf[0]

        in_last = head.last
        # Whether the head beat is taken by the selection (`accept`) is decided a cycle ahead
        # and registered (`go`), and so is, per query, whether it is inserted (`ins_r`: taken
        # and not the query itself): no combinational accept logic fans out to the T lists.
        # The head waits (a) on a pass's first beat until the tile base is there and (b) on a
        # pass's last beat while a row of the previous pass is active; in the cycle after a
        # bank load the rows count as active (their flags are being written).
        go = Signal()
        ins_r = Signal(T)
        act_after = Signal(T)            # o_act after this cycle's row pops (output section)
        accept = go
        with m.If(accept):
            m.d.sync += ibuf[0].eq(ibuf[1])
        with m.If(push):
            with m.If((icount == 0) | ((icount == 1) & accept)):
                m.d.sync += ibuf[0].eq(self.dist.payload)
            with m.Else():
                m.d.sync += ibuf[1].eq(self.dist.payload)
        m.d.sync += icount.eq(icount + push - accept)

        index = cand             # 0 on a pass's first beat: a register, no mux on its fan-out
        base_t = [Mux(first, next_bt[t], cur_bt[t]) for t in range(T)]   # base + t of the beat

        # `own` (the beat's candidate is query t itself) comes from flip-flops: on a pass's
        # first beat (index 0) only query 0 of a tile based at 0 matches (`next_base_zero`,
        # registered with the base); on the other beats `own_next` was computed one beat ahead,
        # from registers only (the next beat's index `cand_p1`, the pass's `cur_bt`, and for a
        # first beat's successor (index 1) the flags `next_is_one` registered with the base)
        own_next = Signal(T)
        next_base_zero = Signal()
        next_is_one = Signal(T)         # next_base + t == 1
        m.d.comb += self.tile_base.ready.eq(~next_ok)
        with m.If(self.tile_base.valid & self.tile_base.ready):
            b = self.tile_base.payload
            m.d.sync += [next_ok.eq(1), next_base_zero.eq(b == 0)]
            m.d.sync += [next_bt[t].eq(b + t) for t in range(T)]
            m.d.sync += [next_is_one[t].eq(b + t == 1) for t in range(T)]
        tb_take = self.tile_base.valid & self.tile_base.ready
        hv_next = (icount + push - accept) != 0
        hl_next = Mux(accept, Mux(icount == 2, ibuf[1].last, self.dist.payload.last),
                      Mux(icount != 0, ibuf[0].last, self.dist.payload.last))
        first_next = Mux(accept, in_last, first)
        next_ok_next = tb_take | (next_ok & ~(accept & first))
        nbz_next = Mux(tb_take, self.tile_base.payload == 0, next_base_zero)
        busy_next = Mux(accept & in_last, 1, act_after.any())
        go_next = Signal()
        m.d.comb += go_next.eq(hv_next & Mux(first_next, next_ok_next, 1) & ~(hl_next & busy_next))
        m.d.sync += go.eq(go_next)
        for t in range(T):
            own_next_next = Mux(accept, Mux(first, next_is_one[t], cand_p1 == cur_bt[t]),
                                own_next[t])
            own_c = Mux(first_next, nbz_next if t == 0 else 0, own_next_next)
            m.d.sync += ins_r[t].eq(go_next & ~own_c)
        with m.If(accept):
            m.d.sync += [first.eq(in_last), cand.eq(Mux(in_last, 0, cand_p1)),
                         cand_p1.eq(Mux(in_last, 1, cand_p1 + 1))]
            m.d.sync += [own_next[t].eq(Mux(first, next_is_one[t], cand_p1 == cur_bt[t]))
                         for t in range(T)]
            with m.If(first):
                m.d.sync += [cur_bt[t].eq(next_bt[t]) for t in range(T)]
                # the slot is free again unless it is refilled in this very cycle
                with m.If(~(self.tile_base.valid & self.tile_base.ready)):
                    m.d.sync += next_ok.eq(0)

        # ---- per query: compare with every entry in parallel, shift right from the first larger
        # Timing: no clock enable on the lists. Every cycle each list takes its next value, which
        # equals the list itself unless the beat is inserted (`ins`: accepted, not the query
        # itself); on a pass's first beat the entries count as empty (`first`), so the lists need
        # no clearing. The finished lists of a pass (written with its `last` beat) are copied to
        # the bank one cycle later (`load_d`, a register) while the next pass already runs.
        load_d = Signal()
        m.d.sync += load_d.eq(accept & in_last)
        for t in range(T):
            d = head.dist[t]
            ins = ins_r[t]
            vld = [Signal(name=f"vld_{t}_{i}") for i in range(K)]   # holds a candidate of the pass
            m.d.comb += [vld[i].eq(l_vld[t][i] & ~first) for i in range(K)]
            less = [Signal(name=f"less_{t}_{i}") for i in range(K)]
            for i in range(K):
                # an empty entry acts as +infinity; strict < keeps the earlier index on a tie
                m.d.comb += less[i].eq(ins & (~vld[i] | (d < l_dist[t][i])))
            n_dist = [Signal(dw, name=f"next_dist_{t}_{i}") for i in range(K)]
            n_idx = [Signal(iw, name=f"next_idx_{t}_{i}") for i in range(K)]
            n_vld = [Signal(name=f"next_vld_{t}_{i}") for i in range(K)]
            for i in range(K):
                # entry i takes its left neighbour if that one moves too, else the candidate
                shift = less[i - 1] if i > 0 else Const(0)
                with m.If(shift):
                    m.d.comb += [n_dist[i].eq(l_dist[t][i - 1]), n_idx[i].eq(l_idx[t][i - 1]),
                                 n_vld[i].eq(vld[i - 1])]
                with m.Elif(less[i]):
                    m.d.comb += [n_dist[i].eq(d), n_idx[i].eq(index), n_vld[i].eq(1)]
                with m.Else():
                    m.d.comb += [n_dist[i].eq(l_dist[t][i]), n_idx[i].eq(l_idx[t][i]),
                                 n_vld[i].eq(vld[i])]
            m.d.sync += [l_dist[t][i].eq(n_dist[i]) for i in range(K)]
            m.d.sync += [l_idx[t][i].eq(n_idx[i]) for i in range(K)]
            m.d.sync += [l_vld[t][i].eq(n_vld[i]) for i in range(K)]
            with m.If(accept & in_last):
                # emit the row only for a real query (base + t < N, N = index + 1)
                m.d.sync += o_act[t].eq(n_vld[0] & (base_t[t] <= index))

        # ---- output: the lowest active row shifts its entries out, one per beat ---------------
        # Timing: the shift of row t (the enable of its K bank entries, 2·K·... loads) is a
        # register, `pop_row[t]`, decided a cycle ahead from registers and `rows.ready`; the beat
        # moves into a 2-entry output buffer, so the bank never waits on `rows.ready`
        # combinationally. A beat pops only while the buffer will have room for it whatever the
        # sink does (at most one beat in it after this cycle).
        row_last = [Const(1) if K == 1 else ~o_vld[t][1] for t in range(T)]
        pop_row = Signal(T)      # one-hot (or 0): the row whose head moves to the buffer now
        pop = Signal()           # pop_row.any(), its own register
        buf = [Signal(self.row_layout, name=f"out_{j}") for j in range(2)]
        count = Signal(range(3))  # beats in the buffer
        payload = self.rows.payload
        m.d.comb += [self.rows.valid.eq(count != 0), payload.eq(buf[0])]
        take = Signal()
        m.d.comb += take.eq((count != 0) & self.rows.ready)

        popped = Signal(self.row_layout)
        p_idx, p_dist, p_last = Const(0, iw), Const(0, dw), Const(0)
        for t in range(T):
            p_idx = p_idx | Mux(pop_row[t], o_idx[t][0], 0)
            p_dist = p_dist | Mux(pop_row[t], o_dist[t][0], 0)
            p_last = p_last | (pop_row[t] & row_last[t])
        m.d.comb += [popped.index.eq(p_idx), popped.dist.eq(p_dist), popped.last.eq(p_last)]

        with m.If(take):
            m.d.sync += buf[0].eq(buf[1])
        with m.If(pop):
            with m.If((count == 0) | ((count == 1) & take)):
                m.d.sync += buf[0].eq(popped)
            with m.Else():
                m.d.sync += buf[1].eq(popped)
        m.d.sync += count.eq(count + pop - take)

        # the next cycle's pop: the lowest row still active after this cycle's pop
        done_rows = Signal(T)
        m.d.comb += [done_rows.eq(Cat(*[pop_row[t] & row_last[t] for t in range(T)])),
                     act_after.eq(o_act & ~done_rows)]
        full_next = ((count == 2) & ~take) | ((count == 1) & pop & ~take)
        pop_next = Signal()
        m.d.comb += pop_next.eq(act_after.any() & ~full_next)
        m.d.sync += [pop.eq(pop_next),
                     pop_row.eq(Mux(pop_next, act_after & ~(act_after - 1), 0))]

        for t in range(T):
            with m.If(pop_row[t]):
                for i in range(K - 1):
                    m.d.sync += [o_dist[t][i].eq(o_dist[t][i + 1]), o_idx[t][i].eq(o_idx[t][i + 1]),
                                 o_vld[t][i].eq(o_vld[t][i + 1])]
                m.d.sync += o_vld[t][K - 1].eq(0)
                with m.If(row_last[t]):
                    m.d.sync += o_act[t].eq(0)
            with m.Elif(load_d):
                # the bank is idle here: `last` is accepted only while no row is active
                m.d.sync += [o_dist[t][i].eq(l_dist[t][i]) for i in range(K)]
                m.d.sync += [o_idx[t][i].eq(l_idx[t][i]) for i in range(K)]
                m.d.sync += [o_vld[t][i].eq(l_vld[t][i]) for i in range(K)]
        return m


class KnnDatapath(wiring.Component):
    """The kNN stage: :class:`~nms.rtl.distance.DistanceEngine` feeding a :class:`KnnSelector`.

    The engine's ``result`` stream is connected to the selector's ``dist`` stream
    (``wiring.connect``); ``tile_base`` passes through a FIFO deep enough for every pass the
    engine can have in flight, so a controller may push a tile's base at any time before (or
    while) it loads that tile's queries without waiting for earlier passes to drain.

    Protocol per tile: one beat on ``tile_base`` (index of query 0), ``tile`` query vectors on
    ``query``, then candidates ``0 .. N-1`` on ``candidate`` (``last`` on the final beat of
    candidate ``N-1``), exactly as :class:`~nms.rtl.distance.DistanceEngine` describes. Queries
    ``t`` with ``tile_base + t >= N`` (padding of the last tile) may hold any vector; their rows
    are not emitted.

    Parameters
    ----------
    lanes, tile, elem_width, max_dim : int
        The distance engine's parameters.
    k : int
        Neighbours per query (:class:`KnnSelector`).
    index_width : int
        Candidate index width in bits; ``N <= 2**index_width``.
    cand_tile : int
        The engine's P (1..16, default 1): candidates arrive in beat-interleaved groups of P
        (``slot``, ``group_end``); results still come in candidate order.

    Attributes
    ----------
    query : In(stream.Signature(engine.query_layout))
        The engine's query load stream.
    candidate : In(stream.Signature(engine.candidate_layout))
        The engine's candidate stream.
    tile_base : In(stream.Signature(unsigned(index_width)))
        One beat per tile, buffered (depth :attr:`base_fifo_depth`).
    rows : Out(stream.Signature(selector.row_layout))
        The selector's neighbour rows.
    engine, selector : the two sub-components (for their layouts and derived sizes).
    base_fifo_depth : int
        ``engine.fifo_depth + 2``: passes with a result still in the engine (at most its credit
        count), the pass being streamed and the next tile's base.

    Raises
    ------
    TypeError, ValueError
        A parameter of the wrong type or out of range; the message names it and its value.
    """

    def __init__(self, *, lanes: int = 8, tile: int = 4, elem_width: int = 8, max_dim: int = 1024,
                 k: int = 16, index_width: int = 16, cand_tile: int = 1):
        # cand_tile: the engine's P (candidate groups, beat-interleaved; see DistanceEngine)
        self.engine = DistanceEngine(lanes=lanes, tile=tile, elem_width=elem_width,
                                     max_dim=max_dim, cand_tile=cand_tile)
        self.selector = KnnSelector(k=k, tile=tile, dist_width=self.engine.acc_width,
                                    index_width=index_width)
        self.base_fifo_depth = self.engine.fifo_depth + 2
        super().__init__({
            "query": In(stream.Signature(self.engine.query_layout)),
            "candidate": In(stream.Signature(self.engine.candidate_layout)),
            "tile_base": In(stream.Signature(unsigned(index_width))),
            "rows": Out(stream.Signature(self.selector.row_layout)),
        })

    @property
    def parameters(self) -> dict:
        return {**self.engine.parameters, "k": self.selector.k,
                "index_width": self.selector.index_width}

    @property
    def derived(self) -> dict:
        return {**{f"engine_{k}": v for k, v in self.engine.derived.items()},
                **{f"selector_{k}": v for k, v in self.selector.derived.items()},
                "base_fifo_depth": self.base_fifo_depth}

    def elaborate(self, platform):
        m = Module()
        m.submodules.engine = engine = self.engine
        m.submodules.selector = selector = self.selector
        m.submodules.base_fifo = fifo = SyncFIFOBuffered(width=self.selector.index_width,
                                                         depth=self.base_fifo_depth)
        wiring.connect(m, wiring.flipped(self.query), engine.query)
        wiring.connect(m, wiring.flipped(self.candidate), engine.candidate)
        wiring.connect(m, engine.result, selector.dist)
        wiring.connect(m, wiring.flipped(self.tile_base), fifo.w_stream)
        wiring.connect(m, fifo.r_stream, selector.tile_base)
        wiring.connect(m, selector.rows, wiring.flipped(self.rows))
        return m
