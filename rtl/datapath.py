"""The combined DE-SNE datapath: one on-chip chunk, raw vectors in DDR -> selected indices out.

Equal, bit for bit, to ``nms.verif.models.desne.run_chunk(X, budget, cfg, seed)["selected"]``. It chains
the stage components and adds only the glue between them:

* :class:`~nms.rtl.memport.VectorFetcher` — memory requests and response framing;
* with ``chunk_buffer``: :class:`~nms.rtl.pool.PoolUnit` (``OPT.pool``) and
  :class:`~nms.rtl.memport.ChunkBuffer` — the chunk read from DDR once, pooled, then served to
  the engine per tile from on-chip memory (``docs/energy.md`` §6);
* :class:`~nms.rtl.knn.KnnDatapath` — distance engine + kNN selector;
* :class:`~nms.rtl.affinity.AffinityUnit` — precision search and P per kNN row;
* :class:`~nms.rtl.embedding.EmbeddingEngine` — the 2-D iterations;
* :class:`~nms.rtl.grid.GridSampler` — the grid level and cell quotas, and (``OPT.exemplar =
  centre``) the exact-budget exemplar indices nearest the cell centres;
* :class:`~nms.rtl.cover.CoverStage` — (``OPT.exemplar = cover``) greedy kNN-graph coverage
  inside the grid's quotas, started at the member nearest the chunk mean (``OPT.cover_start``);
* :class:`JobController` — start/busy/done/error, the runtime configuration and the sequence of
  memory commands (this file).

See ``docs/rtl-datapath.md`` for the controller's sequence, the memory port, counters and timing.
"""

from __future__ import annotations

from amaranth import Cat, Const, Module, Mux, Signal, Value, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import bits_for, ceil_log2

from nms.rtl import fixedpoint as fp
from nms.rtl import regmap
from nms.rtl.affinity import AffinityUnit
from nms.rtl.cover import CoverStage
from nms.rtl.params import check_int
from nms.rtl.embedding import EmbeddingEngine
from nms.rtl.grid import GridSampler
from nms.rtl.knn import KnnDatapath
from nms.rtl.memport import (DEST_CANDIDATE, DEST_QUERY, ChunkBuffer, MemReadSignature,
                             VectorFetcher)
from nms.rtl.pool import PoolUnit

__all__ = ["config_layout", "perf_layout", "JobController", "DesneDatapath"]


def config_layout() -> data.StructLayout:
    """The runtime job configuration: the job fields of ``nms.rtl.regmap``, in its order.

    ``N``, ``DIM``, ``BUDGET``, ``H_TARGET``, ``SEED`` are whole 32-bit registers; ``ITER``,
    ``OPT`` and ``MOMENTUM`` are split into their fields, keyed as the declaration says
    (``MOMENTUM.early`` -> ``momentum_early`` ...). Full register widths are kept so an
    out-of-range value is refused (``error`` and its ``cause``) instead of being truncated.
    """
    return data.StructLayout({key: unsigned(width) for key, width in regmap.job_layout()})


def perf_layout() -> data.StructLayout:
    """Counters of the current / last job (cleared by an accepted start): the counters declared
    in ``nms.rtl.regmap.PERF_COUNTERS``, in its order (meanings: the docs page)."""
    return data.StructLayout({c.name: unsigned(c.width) for c in regmap.PERF_COUNTERS})


#: registered steps of a configuration check (:func:`refusal_check`: derived terms, CHECK, FIRST)
CHECK_CYCLES = len(regmap.DERIVED_STEPS) + 2


def refusal_check(m: Module, job: dict, params: dict, *, prefix: str = "check"):
    """The declaration's refusal walk on registered job values, in :data:`CHECK_CYCLES` steps.

    ``job`` maps job keys to Values that hold still during the check (a latched job). Each
    ``regmap.DERIVED_STEPS`` step's terms are registered (half a product's shift-add tree or
    one add between registers each), then every condition (CHECK), then the first cause in declaration order
    (FIRST), as in the model device and the host's ``regmap.refusal``. Returns the registered
    cause (0: accepted), valid ``CHECK_CYCLES`` edges after ``job`` is, and the names of the
    check's states for the caller's FSM (the first entered with the latch, the last followed
    by the decision).
    """
    env = {**params, **job}
    for step in regmap.DERIVED_STEPS:
        terms = {}
        for name, term in step.items():
            value = term(env)
            if isinstance(value, Value):
                reg = Signal(value.shape(), name=f"{prefix}_{name}")
                m.d.sync += reg.eq(value)
                value = reg
            terms[name] = value
        env.update(terms)
    conditions = regmap.refusal_conditions(env, params)
    cond_r = Signal(len(conditions), name=f"{prefix}_conditions")
    m.d.sync += cond_r.eq(Cat(*[cond for cond, _ in conditions]))
    refusal = Signal(regmap.CAUSE_BITS, name=f"{prefix}_cause")
    first = Const(0, regmap.CAUSE_BITS)
    for i, (_, code) in reversed(list(enumerate(conditions))):
        first = Mux(cond_r[i], code, first)
    m.d.sync += refusal.eq(first)
    states = [f"DERIVE{i}" for i in range(len(regmap.DERIVED_STEPS))] + ["CHECK", "FIRST"]
    return refusal, states


class JobController(wiring.Component):
    """Job control: latches the configuration, validates it, and issues the memory commands.

    On ``start`` (while idle) the configuration is latched into :attr:`job` and ``busy`` rises;
    the check takes :data:`CHECK_CYCLES` registered steps (one per ``regmap.DERIVED_STEPS``
    step, then CHECK: every condition, FIRST: the first cause), and a bad configuration then
    ends the job in DECIDE, with ``error`` and ``done`` set (``busy`` low again) at edge
    ``CHECK_CYCLES + 2`` counted from the one that takes ``start`` as the first. Otherwise the
    embedding's configuration beat is offered;
    with ``chunk_buffer`` one command ``{first 0, count N}`` goes out on :attr:`fetch_cmd`
    (the job's only DDR read, into the chunk buffer), and then, for each query
    tile ``base = 0, T, 2T, ... < N`` (commands on :attr:`cmd`: to the fetcher when streaming, to
    the chunk buffer with ``chunk_buffer``):

    1. ``tile_base`` beat ``base`` (the kNN selector's self-exclusion and row numbering);
    2. fetch command: queries ``base .. base + q - 1``, ``q = min(T, N - base)``;
    3. if ``q < T``: a padding command of ``T - q`` zero vectors (rows of padding queries are
       never emitted by the selector, so their values do not matter);
    4. fetch command: candidates ``0 .. N - 1``.

    Commands run ahead of the data as far as the fetcher's queue allows. The job ends (``busy``
    low, ``done`` high) on ``finish`` (the final index's handshake). ``start`` while busy only
    sets ``error``; the running job is not disturbed.

    Parameters
    ----------
    capacity, tile, max_dim, k : int
        The datapath's C, T, max_dim and K.
    cmd_layout, embed_config_layout : data.StructLayout
        The fetcher's command layout and the embedding engine's configuration layout.
    refusal_params : dict
        The generator parameters the declared job ranges refer to (``capacity``, ``max_dim``,
        and with a chunk buffer ``lanes``, ``buffer_depth``, ``pool_max``).
    chunk_buffer : bool
        Issue the one DDR command on :attr:`fetch_cmd` first (default ``False``).

    Attributes
    ----------
    start : In(1)
        Start pulse.
    config : In(config_layout())
        Sampled with ``start``.
    job : Out(config_layout())
        The latched configuration (held until the next accepted start).
    busy, done, error : Out(1)
        Status; ``done`` and ``error`` stay set until the next start while idle.
    cause : Out(regmap.CAUSE_BITS)
        The first error cause since that start (``regmap.CAUSES``): the refused field's cause,
        or ``START_WHILE_BUSY``; 0 if none.
    cmd : Out(stream.Signature(cmd_layout))
        Tile commands (queries, padding, candidates).
    fetch_cmd : Out(stream.Signature(cmd_layout))
        With ``chunk_buffer``: the job's one DDR fetch command (never valid otherwise).
    tile_base : Out(stream.Signature(unsigned(index_width)))
        One beat per tile.
    embed_config : Out(stream.Signature(embed_config_layout))
        One beat per job.
    finish : In(1)
        Final index handshake of the job.
    issued : Out(1)
        Every command of the job has been issued.
    tiles : Out(count_width)
        Tiles issued so far in this job (``ceil(N / T)`` once ``issued``).
    accepted : Out(1)
        High for one cycle when a checked job goes ahead (``job`` holds it; never for a
        refused one).
    """

    def __init__(self, *, capacity: int, tile: int, max_dim: int, k: int,
                 cmd_layout: data.StructLayout, embed_config_layout: data.StructLayout,
                 refusal_params: dict | None = None, chunk_buffer: bool = False):
        self.capacity, self.tile, self.max_dim, self.k = capacity, tile, max_dim, k
        self.refusal_params = dict(refusal_params or {"capacity": capacity, "max_dim": max_dim})
        self.chunk_buffer = bool(chunk_buffer)
        self.index_width = max(1, ceil_log2(capacity))
        self.count_width = bits_for(capacity)
        self.cmd_layout = cmd_layout
        self.embed_config_layout = embed_config_layout
        super().__init__({
            "start": In(1),
            "config": In(config_layout()),
            "job": Out(config_layout()),
            "busy": Out(1),
            "done": Out(1),
            "error": Out(1),
            "cause": Out(regmap.CAUSE_BITS),
            "cmd": Out(stream.Signature(cmd_layout)),
            "fetch_cmd": Out(stream.Signature(cmd_layout)),
            "tile_base": Out(stream.Signature(unsigned(self.index_width))),
            "embed_config": Out(stream.Signature(embed_config_layout)),
            "finish": In(1),
            "issued": Out(1),
            "tiles": Out(self.count_width),
            "accepted": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        C, T, K = self.capacity, self.tile, self.k
        cfg, job = self.config, self.job
        cw = self.count_width

        # ---- configuration check, on the latched job (so a bad job never starts), in
        # registered steps; on the incoming configuration in the start cycle, and later with the
        # chunk-buffer product inside one step, it was the whole datapath's critical path
        refusal, check_states = refusal_check(
            m, {key: getattr(job, key) for key, _ in regmap.job_layout()}, self.refusal_params)
        bad = refusal != 0

        base = Signal(self.index_width)      # first query of the current tile
        left = Signal(cw)                    # N - base
        q = Signal(cw)                       # queries of this tile: min(T, left)
        m.d.comb += q.eq(Mux(left < T, left, T))
        n = job.n[:cw]

        # ---- the embedding's configuration beat (offered once per job) -----------------------
        ec = self.embed_config.payload
        m.d.comb += [
            ec.n.eq(n), ec.kk.eq(Mux(n - 1 < K, n - 1, K)),
            ec.n_iter.eq(job.n_iter), ec.exaggeration_iters.eq(job.exaggeration_iters),
            ec.exaggeration_shift.eq(job.exaggeration_shift),
            ec.momentum_early.eq(job.momentum_early), ec.momentum_late.eq(job.momentum_late),
            ec.momentum_switch.eq(job.momentum_switch), ec.learning_rate.eq(job.learning_rate),
            ec.seed.eq(job.seed),
        ]
        with m.If(self.embed_config.ready):
            m.d.sync += self.embed_config.valid.eq(0)

        m.d.comb += self.tile_base.payload.eq(base)
        cmd = self.cmd.payload

        # a start while busy is refused: it only flags the misuse (the first cause is kept; a
        # refusal decided in the same cycle wins, assigned below)
        with m.If(self.start & self.busy):
            m.d.sync += self.error.eq(1)
            with m.If(self.cause == 0):
                m.d.sync += self.cause.eq(regmap.CAUSE["START_WHILE_BUSY"].code)

        with m.FSM(name="ctrl"):
            with m.State("IDLE"):
                with m.If(self.start):
                    m.d.sync += [job.eq(cfg), self.done.eq(0), self.error.eq(0),
                                 self.cause.eq(0), self.issued.eq(0), self.tiles.eq(0),
                                 self.busy.eq(1)]
                    m.next = check_states[0]
            # DERIVEi: the step's terms are registered; CHECK: cond_r takes the conditions;
            # FIRST: refusal takes the first cause of cond_r
            for state, following in zip(check_states, check_states[1:] + ["DECIDE"]):
                with m.State(state):
                    m.next = following
            with m.State("DECIDE"):
                with m.If(bad):
                    m.d.sync += [self.busy.eq(0), self.done.eq(1), self.error.eq(1),
                                 self.cause.eq(refusal)]
                    m.next = "IDLE"
                with m.Else():
                    m.d.comb += self.accepted.eq(1)
                    m.d.sync += [self.embed_config.valid.eq(1), base.eq(0), left.eq(n)]
                    m.next = "FETCH" if self.chunk_buffer else "TILE"
            if self.chunk_buffer:
                with m.State("FETCH"):
                    fc = self.fetch_cmd.payload
                    m.d.comb += [self.fetch_cmd.valid.eq(1), fc.first.eq(0), fc.count.eq(n),
                                 fc.dest.eq(DEST_QUERY), fc.pad.eq(0)]
                    with m.If(self.fetch_cmd.ready):
                        m.next = "TILE"
            with m.State("TILE"):
                m.d.comb += self.tile_base.valid.eq(1)
                with m.If(self.tile_base.ready):
                    m.next = "QUERY"
            with m.State("QUERY"):
                m.d.comb += [self.cmd.valid.eq(1), cmd.first.eq(base), cmd.count.eq(q),
                             cmd.dest.eq(DEST_QUERY), cmd.pad.eq(0)]
                with m.If(self.cmd.ready):
                    m.next = "PAD" if T > 1 else "CAND"
            if T > 1:
                with m.State("PAD"):
                    m.d.comb += [self.cmd.valid.eq(q != T), cmd.first.eq(0), cmd.count.eq(T - q),
                                 cmd.dest.eq(DEST_QUERY), cmd.pad.eq(1)]
                    with m.If((q == T) | self.cmd.ready):
                        m.next = "CAND"
            with m.State("CAND"):
                m.d.comb += [self.cmd.valid.eq(1), cmd.first.eq(0), cmd.count.eq(n),
                             cmd.dest.eq(DEST_CANDIDATE), cmd.pad.eq(0)]
                with m.If(self.cmd.ready):
                    m.d.sync += [base.eq(base + T), left.eq(left - q), self.tiles.eq(self.tiles + 1)]
                    with m.If(left <= T):
                        m.d.sync += self.issued.eq(1)
                        m.next = "WAIT"
                    with m.Else():
                        m.next = "TILE"
            with m.State("WAIT"):
                with m.If(self.finish):
                    m.d.sync += [self.busy.eq(0), self.done.eq(1)]
                    m.next = "IDLE"
        return m


def _check_pow2(name, value, hi):
    check_int(name, value, 1, hi, f"a power of two from 1 to {hi}")
    if value & (value - 1):
        raise ValueError(f"{name}={value} is not a power of two")


class DesneDatapath(wiring.Component):
    """DE-SNE for one on-chip chunk: vectors read from memory -> selected local indices.

    Bit-exact with ``nms.verif.models.desne.run_chunk(X, budget, cfg, seed)["selected"]`` where ``X``
    are the ``N`` vectors the memory port returns, ``budget`` = ``config.budget`` and ``cfg`` has
    ``k``, ``neg_samples`` = the generator parameters, the target entropy ``config.h_target``
    (``fixedpoint.entropy_target(cfg.perplexity)``), ``search`` / ``allocation`` /
    ``n_iter`` / ``exaggeration_*`` / ``momentum_*`` / ``learning_rate`` from ``config``.

    Protocol: set ``config`` and pulse ``start`` while ``busy`` is low. The datapath reads the
    chunk through ``mem`` (``ceil(N / T)`` tiles, each: the tile's queries, then all ``N``
    candidates), and sends the ``budget`` selected indices, ascending, on ``indices`` (``last``
    on the final one). ``busy`` falls and ``done`` rises with the final index's handshake;
    ``perf`` then holds the job's counters. A configuration outside the limits below ends the
    job after its check (``busy`` for ``CHECK_CYCLES + 1`` cycles) with ``error`` (and
    ``done``), no memory read, no index, and the first bad field's code on ``cause``: the
    ranges declared in ``nms.rtl.regmap`` (``docs/registers.md``), e.g.
    ``2 <= n <= capacity``, ``1 <= dim <= max_dim``, ``1 <= budget <= n``.

    Parameters
    ----------
    lanes : int
        L, elements per memory / engine beat, a power of two 1..256. Default 8.
    tile : int
        T, resident queries of the distance engine, 1..64. Default 4.
    elem_width : int
        Element width in bits, 1..16. Default 8.
    max_dim : int
        Largest vector length, 1..65536. Default 1024.
    k : int
        K, neighbours per point, 2..64 (``k < capacity``). Default 16.
    capacity : int
        C, the most points per chunk, 4..65536. Default 1024.
    neg_samples : int
        Negative samples per point and iteration, 1..64. Default 8.
    affinity_lanes : int
        Neighbours the affinity unit evaluates per cycle, 1..k. Default 4.
    pair_units : int
        Embedding pair units, a power of two 1..16. Default 2.
    fetch_depth : int
        Fetch commands queued ahead of their data, 2..64. Default 4.
    buffer_dim : int
        0 (default): the chunk is streamed from DDR once per query tile (no pooling unit;
        ``OPT.pool`` must be 0). ``1..max_dim``: the chosen dataflow of ``docs/energy.md`` §6 —
        the job's N vectors are read from DDR **once**, through the :class:`PoolUnit`
        (``OPT.pool``, ``OPT.img_w``), into a :class:`ChunkBuffer` of
        ``capacity · ceil(buffer_dim / lanes)`` words of ``lanes`` elements, and every tile
        reads its queries and candidates from there. A job needs
        ``N · ceil(D' / lanes) <= buffer_depth`` (D' the pooled length), refused otherwise
        (cause ``BAD_CHUNK_BUFFER``).
    cand_tile : int
        P, candidates per query-memory row read of the distance engine, 1..16 (``> 1`` needs
        the chunk buffer, which serves the candidates in the engine's beat-interleaved groups;
        ``docs/energy.md`` §6.4). Default 1.
    buffer_banks : int
        Most banks of the chunk buffer, 1..64 (:class:`ChunkBuffer` ``banks``: split by word
        address, a read enables only its bank; ``docs/energy.md`` §6.7). Default 1.
    hold_self : bool
        The embedding reads the own point's ``Y[i]`` once per point and iteration instead of
        once per pair (``EmbeddingEngine(hold_self=...)``, ``docs/energy.md`` §6.5; same
        results and cycles). Default ``True``, the chosen dataflow.
    serial_update : bool
        The embedding's update step without multipliers, one point every
        ``SerialUpdate.interval`` cycles (``EmbeddingEngine(serial_update=...)``: for a small
        device; same results, a longer update phase). Default ``False``.
    serial_pairs : bool
        The embedding's pair units without multipliers, a pair every
        ``SerialPairUnit.interval`` cycles per lane (``EmbeddingEngine(serial_pairs=...)``).
        Default ``False``.

    Attributes
    ----------
    start : In(1)
        Start pulse (ignored, flagging ``error``, while ``busy``).
    config : In(config_layout())
        The job configuration, sampled with ``start``.
    mem : Out(MemReadSignature)
        Near-memory read port: ``mem.req`` out ``{first, count}``, ``mem.resp`` in ``{data}``.
    indices : Out(stream.Signature({index, last}))
        The selected local indices, ascending.
    busy, done, error : Out(1)
        Status (``done``/``error`` held until the next start while idle).
    cause : Out(regmap.CAUSE_BITS)
        Error cause (``STATUS.cause``): the refused field's code, ``START_WHILE_BUSY``, or 0.
    perf : Out(perf_layout())
        Cycle and traffic counters of the current / last job.

    Raises
    ------
    TypeError, ValueError
        A parameter of the wrong type or out of range; the message names it and its value.
    """

    def __init__(self, *, lanes: int = 8, tile: int = 4, elem_width: int = 8,
                 max_dim: int = 1024, k: int = 16, capacity: int = 1024, neg_samples: int = 8,
                 affinity_lanes: int = 4, pair_units: int = 2, fetch_depth: int = 4,
                 buffer_dim: int = 0, cand_tile: int = 1, buffer_banks: int = 1,
                 hold_self: bool = True, serial_update: bool = False,
                 serial_pairs: bool = False):
        _check_pow2("lanes", lanes, 256)
        check_int("tile", tile, 1, 64, "1 to 64 resident queries")
        check_int("elem_width", elem_width, 1, 16, "1 to 16 bits per element")
        check_int("max_dim", max_dim, 1, 1 << 16, "1 to 65536 elements per vector")
        check_int("capacity", capacity, 4, 1 << 16, "4 to 65536 points per chunk")
        check_int("k", k, 2, 64, "2 to 64 neighbours per point")
        if k >= capacity:
            raise ValueError(f"k={k} must be smaller than capacity={capacity}")
        check_int("neg_samples", neg_samples, 1, 64, "1 to 64 samples per point")
        check_int("affinity_lanes", affinity_lanes, 1, k, f"1 to k={k} neighbours per cycle")
        _check_pow2("pair_units", pair_units, 16)
        if pair_units > capacity:
            raise ValueError(f"pair_units={pair_units} exceeds capacity={capacity}")
        check_int("fetch_depth", fetch_depth, 2, 64, "2 to 64 queued fetch commands")
        check_int("buffer_dim", buffer_dim, 0, max_dim,
                  f"0 (no chunk buffer) or 1 to max_dim={max_dim} elements per buffered vector")
        self.buffer_dim = buffer_dim
        self.chunk_buffer = buffer_dim > 0
        check_int("cand_tile", cand_tile, 1, 16, "1 to 16 candidates per query-memory read")
        if cand_tile > 1 and not self.chunk_buffer:
            raise ValueError(f"cand_tile={cand_tile} needs the chunk buffer (buffer_dim > 0): "
                             "only it can serve the candidates in interleaved groups")
        self.cand_tile = cand_tile
        check_int("buffer_banks", buffer_banks, 1, 64, "1 to 64 chunk-buffer banks")
        self.buffer_banks = buffer_banks
        self.lane_shift = ceil_log2(lanes)
        self.buffer_depth = capacity * -(-buffer_dim // lanes)
        self.lanes, self.tile, self.elem_width, self.max_dim = lanes, tile, elem_width, max_dim
        self.k, self.capacity, self.neg_samples = k, capacity, neg_samples
        self.affinity_lanes, self.pair_units, self.fetch_depth = affinity_lanes, pair_units, fetch_depth
        self.index_width = max(1, ceil_log2(capacity))
        self.count_width = bits_for(capacity)

        iw, cw = self.index_width, self.count_width
        self.fetcher = VectorFetcher(lanes=lanes, elem_width=elem_width, max_dim=max_dim,
                                     index_width=iw, count_width=cw, depth=fetch_depth)
        self.knn = KnnDatapath(lanes=lanes, tile=tile, elem_width=elem_width, max_dim=max_dim,
                               k=k, index_width=iw, cand_tile=cand_tile)
        self.affinity = AffinityUnit(k=k, dist_width=self.knn.engine.acc_width, index_width=iw,
                                     lanes=affinity_lanes)
        self.embedding = EmbeddingEngine(capacity=capacity, k=k, neg_samples=neg_samples,
                                         pair_units=pair_units, hold_self=hold_self,
                                         serial_update=serial_update, serial_pairs=serial_pairs)
        self.hold_self, self.serial_update = hold_self, serial_update
        self.serial_pairs = serial_pairs
        self.grid = GridSampler(capacity=capacity)
        self.cover = CoverStage(capacity=capacity, k=k, tile=tile,
                                dist_width=self.knn.engine.acc_width,
                                max_cells=self.grid.max_cells,
                                cell_layout=self.grid.cell_layout,
                                index_layout=self.grid.index_layout)
        if self.chunk_buffer:
            self.pool = PoolUnit(lanes=lanes, elem_width=elem_width, max_dim=max_dim)
            self.buffer = ChunkBuffer(lanes=lanes, elem_width=elem_width, depth=self.buffer_depth,
                                      beats_max=self.fetcher.beats_max, index_width=iw,
                                      count_width=cw, cand_tile=cand_tile, banks=buffer_banks)
        self.controller = JobController(capacity=capacity, tile=tile, max_dim=max_dim, k=k,
                                        cmd_layout=self.fetcher.cmd_layout,
                                        embed_config_layout=self.embedding.config_layout,
                                        refusal_params=self.refusal_params,
                                        chunk_buffer=self.chunk_buffer)
        self.mem_signature = MemReadSignature(lanes=lanes, elem_width=elem_width,
                                              index_width=iw, count_width=cw)
        self.index_layout = self.grid.index_layout
        super().__init__({
            "start": In(1),
            "config": In(config_layout()),
            "mem": Out(self.mem_signature),
            "indices": Out(stream.Signature(self.index_layout)),
            "busy": Out(1),
            "done": Out(1),
            "error": Out(1),
            "cause": Out(regmap.CAUSE_BITS),
            "perf": Out(perf_layout()),
        })

    @property
    def parameters(self) -> dict:
        """Generator parameters (for metadata)."""
        return {"lanes": self.lanes, "tile": self.tile, "elem_width": self.elem_width,
                "max_dim": self.max_dim, "k": self.k, "capacity": self.capacity,
                "neg_samples": self.neg_samples, "affinity_lanes": self.affinity_lanes,
                "pair_units": self.pair_units, "fetch_depth": self.fetch_depth,
                "buffer_dim": self.buffer_dim, "cand_tile": self.cand_tile,
                "buffer_banks": self.buffer_banks, "hold_self": self.hold_self,
                "serial_update": self.serial_update, "serial_pairs": self.serial_pairs}

    @property
    def refusal_params(self) -> dict:
        """The generator parameters the declared job ranges refer to (``nms.rtl.regmap``):
        what every backend modelling this datapath passes to ``regmap.refusal``."""
        out = {"capacity": self.capacity, "max_dim": self.max_dim}
        if self.chunk_buffer:
            out.update(lanes=self.lanes, buffer_depth=self.buffer_depth, pool_max=2)
        return out

    @property
    def derived(self) -> dict:
        """Derived sizes of the datapath and its stages (for metadata)."""
        out = {"index_width": self.index_width, "count_width": self.count_width,
               "elem_bytes": self.fetcher.elem_bytes}
        for name, comp in (("knn", self.knn), ("affinity", self.affinity),
                           ("embedding", self.embedding), ("grid", self.grid),
                           ("cover", self.cover.selector)):
            out.update({f"{name}_{k}": v for k, v in comp.derived.items()})
        return out

    def bytes_read(self, n: int, dim: int) -> int:
        """Near-memory bytes one job reads: with the chunk buffer every vector once; streaming,
        every vector once as a query and all N vectors once per tile as candidates (the
        documented dataflows, ``docs/energy.md`` §3)."""
        if self.chunk_buffer:
            return n * dim * self.fetcher.elem_bytes
        tiles = -(-n // self.tile)
        return (n + tiles * n) * dim * self.fetcher.elem_bytes

    def elaborate(self, platform):
        m = Module()
        m.submodules.controller = ctrl = self.controller
        m.submodules.fetcher = fetch = self.fetcher
        m.submodules.knn = knn = self.knn
        m.submodules.affinity = aff = self.affinity
        m.submodules.embedding = emb = self.embedding
        m.submodules.grid = grid = self.grid
        m.submodules.cover = cover = self.cover
        job = ctrl.job
        cw = self.count_width

        m.d.comb += [ctrl.start.eq(self.start), ctrl.config.eq(self.config),
                     self.busy.eq(ctrl.busy), self.done.eq(ctrl.done), self.error.eq(ctrl.error),
                     self.cause.eq(ctrl.cause)]

        new_job = self.start & ~ctrl.busy
        dim_bits = bits_for(self.max_dim)
        # ---- memory: controller commands -> fetcher <-> memory port ---------------------------
        wiring.connect(m, fetch.mem, wiring.flipped(self.mem))
        m.d.comb += fetch.dim.eq(job.dim[:dim_bits])
        kdim = Signal(dim_bits)            # D', the length the engine sees
        if self.chunk_buffer:
            # one DDR command per job -> pooling unit -> chunk buffer; the tile commands read it
            m.submodules.pool = pool = self.pool
            m.submodules.buffer = buf = self.buffer
            wiring.connect(m, ctrl.fetch_cmd, fetch.cmd)
            wiring.connect(m, ctrl.cmd, buf.cmd)
            m.d.comb += [
                pool.inp.payload.data.eq(fetch.beats.payload.data),
                pool.inp.valid.eq(fetch.beats.valid),
                fetch.beats.ready.eq(pool.inp.ready),
                pool.dim.eq(job.dim[:dim_bits]), pool.img_w.eq(job.img_w),
                pool.pool.eq(job.pool), pool.clear.eq(new_job),
            ]
            wiring.connect(m, pool.out, buf.fill)
            # a poolable image (refused otherwise): D' = DIM / w² exactly
            m.d.comb += kdim.eq(Mux(job.pool == 2, job.dim[:dim_bits] >> 4,
                                    Mux(job.pool == 1, job.dim[:dim_bits] >> 2, job.dim[:dim_bits])))
            # per-job constants, registered (vec_beats the cycle after `job` is latched, the
            # product the cycle after): the job register -> multiplier -> buffer issue ->
            # block-RAM enable was the whole datapath's critical path. The buffer needs them
            # from its first command (start + 6 cycles at the earliest, first = 0) and its first
            # fill beat (after the fetch command, the DDR read and the pooling unit)
            vec_beats = Signal(range(self.fetcher.beats_max + 1))
            fill_words = Signal.like(buf.fill_words)
            m.d.sync += [vec_beats.eq(((kdim - 1) >> self.lane_shift) + 1),
                         fill_words.eq(job.n[:cw] * vec_beats)]
            m.d.comb += [buf.vec_beats.eq(vec_beats), buf.fill_words.eq(fill_words),
                         buf.clear.eq(new_job)]
            source = buf.beats
        else:
            wiring.connect(m, ctrl.cmd, fetch.cmd)
            m.d.comb += kdim.eq(job.dim[:dim_bits])
            source = fetch.beats

        # ---- route the framed beats to the engine's query or candidate stream ----------------
        beat = source.payload
        to_cand = beat.dest == DEST_CANDIDATE
        m.d.comb += [
            knn.query.payload.data.eq(beat.data),
            knn.query.payload.dim.eq(kdim),
            knn.query.valid.eq(source.valid & ~to_cand),
            knn.candidate.payload.data.eq(beat.data),
            # the candidate command covers all N vectors: its final beat ends the pass
            knn.candidate.payload.last.eq(beat.last),
            knn.candidate.valid.eq(source.valid & to_cand),
            *([knn.candidate.payload.slot.eq(beat.slot),
               knn.candidate.payload.group_end.eq(beat.group_end)] if self.cand_tile > 1 else []),
            source.ready.eq(Mux(to_cand, knn.candidate.ready, knn.query.ready)),
        ]
        wiring.connect(m, ctrl.tile_base, knn.tile_base)

        # ---- kNN rows -> affinity unit (same row layout) --------------------------------------
        wiring.connect(m, knn.rows, aff.row)
        m.d.comb += [aff.target.eq(job.h_target[:fp.H_BITS]), aff.mode.eq(job.search)]

        # ---- affinities -> embedding's neighbour lists (rows arrive in point order), and to
        # the coverage stage in coverage jobs (a beat moves when both take it) ---------------
        wiring.connect(m, ctrl.embed_config, emb.config)
        cover.fork(m, aff.result, emb.knn)

        # ---- embedding -> grid sampler: the N coordinates, `last` on the final one ------------
        coord_count = Signal(cw)
        final_coord = coord_count == job.n[:cw] - 1
        m.d.comb += [
            grid.points.payload.x.eq(emb.coords.payload.x),
            grid.points.payload.y.eq(emb.coords.payload.y),
            grid.points.payload.last.eq(final_coord),
            grid.points.valid.eq(emb.coords.valid),
            emb.coords.ready.eq(grid.points.ready),
            grid.budget.eq(job.budget[:cw]),
            grid.proportional.eq(job.allocation),
            grid.cover.eq(job.exemplar),
        ]
        with m.If(emb.coords.valid & emb.coords.ready):
            m.d.sync += coord_count.eq(Mux(final_coord, 0, coord_count + 1))

        # ---- stage 4b: coverage exemplars (OPT.exemplar = cover). The job values are taken
        # in the cycle the controller accepts the checked job (`accepted`, never for a refused
        # one: the selector would wait for its rows); the start point comes from
        # the distance results as they pass to the kNN selector (the vectors the kNN sees); the
        # grid hands over its cells and quotas instead of choosing the members ---------------
        engine_result = knn.engine.result
        m.d.comb += [
            cover.clear.eq(ctrl.accepted),
            cover.n.eq(job.n[:cw]), cover.kk.eq(Mux(job.n[:cw] - 1 < self.k, job.n[:cw] - 1, self.k)),
            cover.budget.eq(job.budget[:cw]),
            cover.cover.eq(job.exemplar), cover.use_start.eq(job.cover_start),
            cover.dist.payload.eq(engine_result.payload), cover.dist.valid.eq(engine_result.valid),
            cover.dist_ready.eq(engine_result.ready),
        ]
        wiring.connect(m, grid.cells, cover.cells)

        # ---- grid or coverage -> output; the final index ends the job --------------------------
        wiring.connect(m, grid.indices, cover.grid_indices)
        wiring.connect(m, cover.indices, wiring.flipped(self.indices))
        finish = self.indices.valid & self.indices.ready & self.indices.payload.last
        m.d.comb += ctrl.finish.eq(finish)

        # ---- counters --------------------------------------------------------------------------
        perf = self.perf
        m.d.comb += fetch.clear.eq(new_job)
        if self.chunk_buffer:
            m.d.comb += [perf.buf_read_beats.eq(buf.read_beats),
                         perf.buf_write_beats.eq(buf.write_beats)]
        m.d.comb += [perf.bytes_read.eq(fetch.bytes_read), perf.mem_beats.eq(fetch.beats_read),
                     perf.mem_wait.eq(fetch.wait_cycles),
                     perf.embed_cycles.eq(emb.perf.cycles), perf.pair_cycles.eq(emb.perf.pair_cycles),
                     perf.pair_items.eq(emb.perf.pair_items), perf.rep_cycles.eq(emb.perf.rep_cycles),
                     perf.rep_items.eq(emb.perf.rep_items), perf.y_reads.eq(emb.perf.y_reads)]

        def fire(s):
            return s.valid & s.ready

        counters = []

        def counter(field, inc):
            reg = Signal(perf_layout()[field].shape, name=f"perf_{field}")
            m.d.comb += getattr(perf, field).eq(reg)
            counters.append((reg, inc))

        def window(field, begin, end):
            """Count the cycles from ``begin`` (inclusive) to ``end`` (inclusive) of this job."""
            active = Signal(name=f"{field}_active")
            seen = Signal(name=f"{field}_seen")  # the window opens once per job
            opening = begin & ~seen
            with m.If(new_job):
                m.d.sync += [active.eq(0), seen.eq(0)]
            with m.Else():
                with m.If(opening):
                    m.d.sync += seen.eq(1)
                with m.If(end):
                    m.d.sync += active.eq(0)
                with m.Elif(opening):
                    m.d.sync += active.eq(1)
            counter(field, active | opening)

        engine = knn.engine
        passes = Signal(cw)
        final_pass = ctrl.issued & (passes + 1 == ctrl.tiles)
        cand_last = fire(engine.candidate) & engine.candidate.payload.last
        with m.If(new_job):
            m.d.sync += passes.eq(0)
        with m.Elif(cand_last):
            m.d.sync += passes.eq(passes + 1)

        rows_done = Signal(cw)
        row_end = fire(aff.row) & aff.row.payload.last
        aff_rows = Signal(cw)
        aff_end = fire(aff.result) & aff.result.payload.last
        with m.If(new_job):
            m.d.sync += [rows_done.eq(0), aff_rows.eq(0)]
        with m.Else():
            with m.If(row_end):
                m.d.sync += rows_done.eq(rows_done + 1)
            with m.If(aff_end):
                m.d.sync += aff_rows.eq(aff_rows + 1)
        n = job.n[:cw]

        counter("cycles", ctrl.busy)
        window("dist_cycles", fire(engine.query), cand_last & final_pass)
        counter("dist_beats", fire(engine.query) | fire(engine.candidate))
        # the engine reads one query-memory row per candidate beat it takes
        counter("query_rows_read", fire(engine.candidate) & (
            (engine.candidate.payload.slot == 0) if self.cand_tile > 1 else 1))
        counter("dist_stall", engine.result.valid & ~engine.result.ready)
        window("knn_cycles", fire(engine.result), row_end & (rows_done + 1 == n))
        window("aff_cycles", fire(aff.row), aff_end & (aff_rows + 1 == n))
        window("embed_run_cycles", aff_end & (aff_rows + 1 == n), emb.coords.valid)
        window("grid_cycles", fire(grid.points), finish)
        for reg, inc in counters:
            with m.If(new_job):
                m.d.sync += reg.eq(0)
            with m.Elif(inc):
                m.d.sync += reg.eq(reg + 1)
        return m
