"""Dataflows of the near-memory engine: what each one reads, writes and computes, per chunk.

A :class:`Dataflow` names the knobs of the design-space sweep of issue 11 (``docs/energy.md``):

* ``buffer`` — ``False``: the current RTL (``nms.rtl.datapath``): every query tile streams the
  whole chunk from DDR again, ``n·D + ceil(n/T)·n·D`` bytes per chunk. ``True``: the chunk is
  read from DDR **once** into an on-chip chunk buffer (``C·D'`` bytes) and the tiles stream it
  from there;
* ``tile`` — T resident queries of the distance engine;
* ``cand_tile`` — P candidates held beside the engine per query-memory read (1 = the current
  engine: one query-memory row read per candidate beat);
* ``capacity`` — C, the most points per chunk;
* ``reduce`` — what the kNN sees: ``"none"`` (the raw D bytes), ``"pool2"`` / ``"pool4"``
  (floor-mean 2×2 / 4×4 pooling of a square image, 8-bit results, done by a pooling unit
  between the DDR reader and the chunk buffer). The embedding and the grid sampler see only the
  kNN graph and so are unchanged.

:func:`chunk_counts` gives every count the energy model (:mod:`nms.sw.energy`) prices, per chunk,
as closed formulas of ``(n, D, budget)`` and the flow. Where the RTL has a counter (``perf`` of
``nms.rtl.datapath.DesneDatapath``: ``bytes_read``, ``mem_beats``, ``dist_beats``,
``pair_items``, ``rep_items``; the top's ``BYTES_READ`` / ``BYTES_WRITTEN`` registers) the
formula here is the one the counter must equal, and ``tests/test_energy.py`` holds them against
the Verilated datapath's recorded counters. The other counts are derived from the RTL's
structure (memory word widths, pipeline operations per pair) and documented in
``docs/energy.md``.

:func:`run_chunk_flow` / :func:`select_flow` run the bit-exact model with the kNN on the reduced
vectors; with ``reduce="none"`` they equal :func:`nms.verif.models.desne.run_chunk` /
``select`` bit for bit.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import asdict, dataclass, replace

import numpy as np

from nms.rtl import fixedpoint as fp
from nms.rtl.params import bank_geometry
from nms.verif.models import desne
# the pooling is part of the bit-exact model (the RTL's pooling unit is checked against it)
from nms.verif.models.pool import pooled_dim, reduce_vectors

__all__ = ["REDUCTIONS", "Dataflow", "BASELINE", "CHOSEN", "CHOSEN_SCHEDULE", "reduced_dim", "reduce_vectors",
           "rtl_counters", "y_reads",
           "chunk_counts", "dataset_counts", "memory_plan", "bram_blocks", "run_chunk_flow",
           "select_flow", "ECP5_85F_BLOCKS"]

#: D-reduction modes before the kNN: name -> pooling window side (1 = none)
REDUCTIONS = {"none": 1, "pool2": 2, "pool4": 4}
#: DP16KD blocks of an ECP5-85F (18 kbit each, ~468 KB)
ECP5_85F_BLOCKS = 208
#: DP16KD aspect ratios (depth, width)
_DP16KD = ((16384, 1), (8192, 2), (4096, 4), (2048, 9), (1024, 18), (512, 36))

# widths from the RTL (nms.rtl.embedding / fixedpoint / grid): coordinates, forces, formats
_COORD = 24                      # Y, V per axis (fixedpoint.Y_LIMIT: 24-bit signed)
_F_WIDTH = 26                    # nms.rtl.embedding.F_WIDTH
_P = fp.P_BITS                   # 17
_W = fp.W_BITS                   # 17
_A = fp.A_BITS                   # 13
_MANT = fp.BETA_MANT_BITS        # 16
_ROBUST_EVALS = 16 + 2 * len(fp.ROBUST_REFINE_STEPS)   # 28 codes per row
_BISECT_EVALS = len(fp.BISECT_STEPS) + 1               # 10
_GRID_LEVELS = fp.GRID_BITS_MAX + 1                    # most level passes of the grid sampler


def _int(name, value, lo, hi=None):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < lo \
            or (hi is not None and value > hi):
        rng = f"[{lo}, {hi}]" if hi is not None else f">= {lo}"
        raise ValueError(f"{name} must be an integer in {rng}, got {value!r}")
    return int(value)


@dataclass(frozen=True)
class Dataflow:
    """One point of the design space (see the module docstring).

    Parameters
    ----------
    buffer : bool
        Read each chunk from DDR once into an on-chip chunk buffer (``True``) or stream it from
        DDR once per query tile (``False``, the current RTL).
    tile : int
        T, resident queries (1..64).
    cand_tile : int
        P, candidates served per query-memory read (1..64; 1 = current engine).
    capacity : int
        C, points per chunk (4..65536).
    reduce : str
        One of :data:`REDUCTIONS`.
    lanes : int
        L, elements per memory / engine beat (power of two).
    k, neg_samples, pair_units : int
        K, S and U of the generator (as ``DesneDatapath``).
    hold_self : bool
        Embedding pair front end: ``False`` (current RTL) reads ``Y[i]`` and ``Y[j]`` for every
        pair; ``True`` reads the own point's ``Y[i]`` once per point and iteration into a
        register (a unit issues all pairs of one point back to back), so a pair reads only its
        partner. Same arithmetic, same results.
    max_dim : int
        Largest raw vector length (sizes the query memory and the chunk buffer).
    buffer_banks : int
        Most banks of the chunk buffer (1..64; ``nms.rtl.params.bank_geometry``): a read
        touches one bank, so its per-bit energy is the bank's size's (``docs/energy.md`` §6.7).
        1 = one memory.
    """

    buffer: bool = False
    tile: int = 4
    cand_tile: int = 1
    capacity: int = 1024
    reduce: str = "none"
    lanes: int = 8
    k: int = 16
    neg_samples: int = 8
    pair_units: int = 2
    max_dim: int = 784
    hold_self: bool = False
    buffer_banks: int = 1

    def __post_init__(self):
        for name in ("buffer", "hold_self"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"Dataflow.{name} must be True or False, got "
                                 f"{getattr(self, name)!r}")
        _int("Dataflow.tile", self.tile, 1, 64)
        _int("Dataflow.cand_tile", self.cand_tile, 1, 64)
        _int("Dataflow.capacity", self.capacity, 4, 1 << 16)
        _int("Dataflow.lanes", self.lanes, 1, 256)
        if self.lanes & (self.lanes - 1):
            raise ValueError(f"Dataflow.lanes must be a power of two, got {self.lanes}")
        _int("Dataflow.k", self.k, 2, 64)
        if self.k >= self.capacity:
            raise ValueError(f"Dataflow.k={self.k} must be smaller than capacity={self.capacity}")
        _int("Dataflow.neg_samples", self.neg_samples, 1, 64)
        _int("Dataflow.pair_units", self.pair_units, 1, 16)
        _int("Dataflow.max_dim", self.max_dim, 1, 1 << 16)
        _int("Dataflow.buffer_banks", self.buffer_banks, 1, 64)
        if self.reduce not in REDUCTIONS:
            raise ValueError(f"Dataflow.reduce must be one of {sorted(REDUCTIONS)}, "
                             f"not {self.reduce!r}")
        reduced_dim(self.max_dim, self.reduce)   # a pooled flow needs a square image

    def replace(self, **changes) -> "Dataflow":
        return replace(self, **changes)

    def as_dict(self) -> dict:
        return asdict(self)

    @property
    def label(self) -> str:
        return (f"{'buffer' if self.buffer else 'stream'} T={self.tile} P={self.cand_tile} "
                f"L={self.lanes} C={self.capacity} {self.reduce}"
                f"{' hold' if self.hold_self else ''}"
                f"{f' B={self.buffer_banks}' if self.buffer_banks > 1 else ''}")

    def buffer_banks_geometry(self) -> tuple[int, int, int]:
        """``(depth, bank_words, banks_used)`` of the chunk buffer at full capacity: ``C ·
        ceil(D'_max / L)`` words of L bytes, split as the RTL splits it."""
        depth = self.capacity * _ceil(reduced_dim(self.max_dim, self.reduce), self.lanes)
        return (depth, *bank_geometry(depth, self.buffer_banks))


def reduced_dim(dim: int, reduce: str) -> int:
    """D' = the vector length the kNN sees (``dim`` must be a square image side² when pooled,
    its side a multiple of the window)."""
    dim = _int("dim", dim, 1)
    if reduce not in REDUCTIONS:
        raise ValueError(f"reduce must be one of {sorted(REDUCTIONS)}, not {reduce!r}")
    w = REDUCTIONS[reduce]
    if w == 1:
        return dim
    side = math.isqrt(dim)
    if side * side != dim or side % w:
        raise ValueError(f"reduce={reduce!r} needs a square image whose side is a multiple of "
                         f"{w}; dim={dim} is not")
    return (side // w) ** 2


#: the current RTL's dataflow at its default generator parameters
BASELINE = Dataflow()
#: the default chosen by the sweep ``nms bench dataflow`` (bench/results/dataflow.md; a test
#: holds these equal to the recorded choice) and the DE-SNE schedule it runs with
CHOSEN = Dataflow(buffer=True, tile=4, cand_tile=4, capacity=1024, reduce="pool4",
                  hold_self=True, buffer_banks=8)
#: (n_iter, exaggeration_iters, momentum_switch, neg_samples): defined once, as the DE-SNE
#: default, in the model layer (``nms.verif.models.desne.DEFAULT_SCHEDULE``)
CHOSEN_SCHEDULE = dict(desne.DEFAULT_SCHEDULE)


# ------------------------------------------------------------------------------------------------
# counts


def _bits_for(v: int) -> int:
    return max(1, int(v).bit_length())


def _ceil(a: int, b: int) -> int:
    return -(-a // b)


def _evals(search: str) -> int:
    if search == "robust":
        return _ROBUST_EVALS
    if search == "bisect":
        return _BISECT_EVALS
    raise ValueError(f"search must be 'robust' or 'bisect', not {search!r}")


def y_reads(*, n: int, n_iter: int, pair_items: int, hold_self: bool) -> int:
    """Y-memory words the embedding engine reads in one job (``perf.y_reads``; ``docs/energy.md``
    §3 Y row): per pair its partner ``Y[j]``, and the own ``Y[i]`` — for every pair, or with
    ``hold_self`` once per point and iteration (all of a point's pairs back to back) — then one
    read per point and iteration by the update and one per point by the output."""
    own = n_iter * n if hold_self else pair_items
    return pair_items + own + n_iter * n + n


def rtl_counters(*, n: int, dim: int, budget: int, n_iter: int, k: int, neg_samples: int,
                 tile: int, lanes: int, buffer: bool, pool=0, cand_tile: int = 1,
                 hold_self: bool = True) -> dict:
    """The counters the RTL datapath reports for one clean job (``perf`` names, and
    ``bytes_written``), by the formulas of ``docs/energy.md`` §3 / §6.6 — the one place they are
    written down: :func:`chunk_counts`, the model device's registers and the tests all use it.

    ``buffer``: the chunk-buffer dataflow (one DDR read of the chunk; ``pool`` the ``OPT.pool``
    code or name, the kNN length ``D'`` of a square image) or the streamed one (``pool`` must
    be none). ``cand_tile``: P, candidates per query-memory row read (1 in the current engine).
    ``hold_self``: the embedding's Y reads (:func:`y_reads`; default ``True``, the engine's
    default ``EmbeddingEngine(hold_self=True)``).
    """
    d2 = pooled_dim(dim, pool)
    if not buffer and d2 != dim:
        raise ValueError(f"pooling (pool={pool!r}) needs the chunk buffer dataflow")
    bpv, bpv_raw = _ceil(d2, lanes), _ceil(dim, lanes)
    tiles = _ceil(n, tile)
    kk = min(k, n - 1)
    vectors = n if buffer else n + tiles * n              # vectors read from DDR
    pair_items = n_iter * n * (kk + neg_samples)
    return {"bytes_read": vectors * dim, "mem_beats": vectors * bpv_raw,
            "dist_beats": tiles * (tile + n) * bpv,       # query loads (incl. padding) + candidates
            "buf_read_beats": (n + tiles * n) * bpv if buffer else 0,
            "buf_write_beats": n * bpv if buffer else 0,
            "query_rows_read": tiles * _ceil(n, cand_tile) * bpv,
            "pair_items": pair_items, "rep_items": n_iter * n * neg_samples,
            "y_reads": y_reads(n=n, n_iter=n_iter, pair_items=pair_items, hold_self=hold_self),
            "bytes_written": 4 * budget}


def chunk_counts(*, n: int, dim: int, budget: int, flow: Dataflow, n_iter: int,
                 search: str = "robust") -> dict:
    """Every count of one chunk job (see ``docs/energy.md`` for each formula).

    Parameters
    ----------
    n, dim, budget : int
        Points of the chunk (2..C), raw vector length D, selected points.
    flow : Dataflow
        The dataflow.
    n_iter : int
        Embedding iterations.
    search : {"robust", "bisect"}
        Precision search (codes evaluated per row).

    Returns
    -------
    dict
        ``rtl`` (the counters the RTL reports, :func:`rtl_counters`: same names as ``perf`` —
        ``bytes_read``, ``mem_beats``, ``dist_beats``, ``buf_read_beats``,
        ``buf_write_beats``, ``query_rows_read``, ``pair_items``, ``rep_items``,
        ``y_reads`` — and
        ``bytes_written``),
        ``ddr`` (bytes read / written near memory), ``sram`` (per memory: ``{"read_bits",
        "write_bits", "size_bytes"}``), ``ops`` (per stage: ``{"mult": {"AxB": count},
        "add": {"width": count}}``), ``dist_elems`` (8-bit squared-difference-accumulate operations), ``pair_items``.
    """
    n = _int("n", n, 2, flow.capacity)
    dim = _int("dim", dim, 1, flow.max_dim)
    budget = _int("budget", budget, 1, n)
    n_iter = _int("n_iter", n_iter, 1)
    evals = _evals(search)
    L, T, P, K, S, U = flow.lanes, flow.tile, flow.cand_tile, flow.k, flow.neg_samples, flow.pair_units
    C = flow.capacity
    d2 = reduced_dim(dim, flow.reduce)
    d2_max = reduced_dim(flow.max_dim, flow.reduce)
    bpv = _ceil(d2, L)                    # engine beats per (reduced) vector
    bpv_raw = _ceil(dim, L)               # DDR beats per raw vector
    tiles = _ceil(n, T)
    kk = min(K, n - 1)
    iw = max(1, (C - 1).bit_length())
    fa = _F_WIDTH + _bits_for(C * K)
    fr = _F_WIDTH + _bits_for(S)
    acc = _bits_for(d2_max * 255 * 255)   # squared-distance width (DistanceEngine.acc_width)

    sram: dict[str, dict] = {}

    def mem(name, size_bytes, read_bits=0, write_bits=0):
        # size_bytes is the size of the one bank an access touches (the per-bit energy grows
        # with it); read/write bits are summed over all banks of that kind
        e = sram.setdefault(name, {"size_bytes": int(size_bytes), "read_bits": 0, "write_bits": 0})
        e["read_bits"] += int(read_bits)
        e["write_bits"] += int(write_bits)

    ops: dict[str, dict] = {}
    stage = ["pooling"]

    def mul(a, b, count):
        key = f"{max(a, b)}x{min(a, b)}"
        m = ops.setdefault(stage[0], {"mult": {}, "add": {}})["mult"]
        m[key] = m.get(key, 0) + int(count)

    def adds(w, count):
        m = ops.setdefault(stage[0], {"mult": {}, "add": {}})["add"]
        m[str(w)] = m.get(str(w), 0) + int(count)

    # ---- stage 1: DDR -> (pooling) -> chunk buffer / engine ------------------------------------
    if flow.buffer:
        ddr_read = n * dim                               # every raw vector once
        mem_beats = n * bpv_raw
        # priced at the size of the one bank a word access touches (the whole buffer, C·b·L
        # bytes, when it is one memory)
        depth, bank_words, _ = flow.buffer_banks_geometry()
        mem("chunk_buffer", min(depth, bank_words) * L, read_bits=8 * (n + tiles * n) * bpv * L,
            write_bits=8 * n * bpv * L)
    else:
        ddr_read = (n + tiles * n) * dim                 # queries once + the chunk per tile
        mem_beats = (n + tiles * n) * bpv_raw
    if flow.reduce != "none":
        # pooling unit: one add per raw element into the window's sum (8 + 2·log2 w bits)
        w = REDUCTIONS[flow.reduce]
        pooled_vectors = n if flow.buffer else n + tiles * n
        adds(8 + 2 * int(math.log2(w)), pooled_vectors * dim)
    stage[0] = "distance"
    dist_beats = tiles * (T + n) * bpv                   # query loads (incl. padding) + candidates
    # query memory: one row (T queries x L lanes) per beat index; one row read per P candidates
    qrow = T * L * 8
    mem("query_memory", T * _ceil(d2_max, L) * L, read_bits=tiles * _ceil(n, P) * bpv * qrow,
        write_bits=tiles * T * bpv * L * 8)
    dist_elems = tiles * T * n * bpv * L                 # every lane of every query, every beat
    adds(8, dist_elems)                                  # difference
    mul(9, 9, dist_elems)                                # square of a 9-bit signed difference
    adds(acc, dist_elems)                                # accumulate (adder tree + accumulator)

    # ---- kNN selector: each of T·n distances per tile against the K-entry sorted list --------
    stage[0] = "knn_select"
    adds(acc + iw, tiles * T * n * K)                    # (distance, index) compares

    # ---- affinity: row buffer, search, output -------------------------------------------------
    mem("affinity_rows", K * (acc + iw) // 8 + 1, write_bits=n * kk * (acc + iw),
        read_bits=n * kk * acc * (evals + 1))
    ev = n * kk * evals
    stage[0] = "affinity"
    mul(acc, _MANT, ev)                                  # delta * BETA_MANT
    mem("exp2_rom", 256 * _W // 8, read_bits=(ev + n * kk) * _W)
    mul(_W, _A, ev)                                      # w * a
    adds(32, 2 * ev)                                     # S += w, T += w*a
    adds(40, n * evals * 21)                             # entropy divider (21 quotient bits)
    adds(40, n * kk * _P)                                # P_j = w_j / S, exact divider
    # ---- kNN lists into the embedding's list memory (stored once, read every iteration) --------
    kw = iw + _P
    mem("knn_lists", C * K * kw // 8, write_bits=n * kk * kw, read_bits=n_iter * n * kk * kw)

    # ---- embedding -------------------------------------------------------------------------
    att, rep = n_iter * n * kk, n_iter * n * S
    pair_items = att + rep
    ybits = 2 * _COORD
    mem("embed_y", C * ybits // 8,
        read_bits=y_reads(n=n, n_iter=n_iter, pair_items=pair_items,
                          hold_self=flow.hold_self) * ybits,
        write_bits=n_iter * n * ybits + n * ybits)
    mem("embed_v", C * ybits // 8, read_bits=n_iter * n * ybits, write_bits=(n_iter + 1) * n * ybits)
    mem("recip_rom", 256 * _P // 8, read_bits=pair_items * _P)
    # scatter bank: read-modify-write of the partner's attraction sum per attractive pair; the
    # update reads and clears every unit's entry of each point
    mem("embed_scatter", C * 2 * fa // 8, read_bits=att * 2 * fa + n_iter * n * U * 2 * fa,
        write_bits=att * 2 * fa + n_iter * n * U * 2 * fa)
    mem("embed_sums", _ceil(C, U) * 2 * fa // 8,
        read_bits=n_iter * n * 2 * (fa + fr), write_bits=n_iter * n * 2 * (fa + fr))
    stage[0] = "embed_pairs"
    adds(_COORD, 2 * pair_items)                         # d = Y_i - Y_j per axis
    mul(_COORD, _COORD, 2 * pair_items)                  # d_x², d_y²
    adds(2 * _COORD, pair_items)                         # d2
    mul(_P, _W, pair_items)                              # p*w (attraction) or w*w (repulsion)
    mul(_W, _COORD, 2 * pair_items)                      # force per axis
    adds(fa, 2 * att * 2)                                # own sum + scatter per axis
    adds(fr, 2 * rep)                                    # repulsion sum per axis
    adds(_bits_for(C * S * 65536), rep)                  # kernel sum Wsum
    mul(32, 32, 2 * rep)                                 # hash32: two multiplies per sample
    # update, per point and iteration: Fa = L + ΣS_u, rep gain, momentum, step, position
    stage[0] = "embed_update"
    adds(fa, n_iter * n * 2 * U)
    mul(32, fr, n_iter * n * 2)                          # Fr * gain
    mul(8, _COORD, n_iter * n * 2)                       # mom * V
    mul(8, 35, n_iter * n * 2)                           # lr * F
    adds(35, n_iter * n * 2 * 3)                         # F, V, Y per axis
    adds(64, n_iter * 33)                                # gain divider
    # ---- grid sampler: point memory, one read pass per level (upper bound) and two per round --
    gw = ybits + 32 + 1
    mem("grid_points", C * gw // 8 + 1, write_bits=n * gw,
        read_bits=(_GRID_LEVELS * 2 * n + 2 * 2 * n) * gw)
    mem("grid_cells", min(C, 1 << (2 * fp.GRID_BITS_MAX)) * 2 * 16 // 8,
        read_bits=_GRID_LEVELS * n * 32, write_bits=_GRID_LEVELS * n * 32)

    bytes_written = 4 * budget
    return {
        "rtl": rtl_counters(n=n, dim=dim, budget=budget, n_iter=n_iter, k=K, neg_samples=S,
                            tile=T, lanes=L, buffer=flow.buffer, pool=flow.reduce, cand_tile=P,
                            hold_self=flow.hold_self)
        if flow.buffer or flow.reduce == "none" else
        {"bytes_read": ddr_read, "mem_beats": mem_beats, "dist_beats": dist_beats,
         "buf_read_beats": 0, "buf_write_beats": 0, "query_rows_read": tiles * _ceil(n, P) * bpv,
         "pair_items": pair_items, "rep_items": rep,
         "y_reads": y_reads(n=n, n_iter=n_iter, pair_items=pair_items, hold_self=flow.hold_self),
         "bytes_written": bytes_written},
        "ddr": {"read_bytes": ddr_read, "write_bytes": bytes_written},
        "sram": sram, "ops": ops, "dist_elems": dist_elems,
        "pair_items": pair_items, "n": n, "dim": dim, "reduced_dim": d2,
    }


def _merge(total: dict, part: dict) -> None:
    for key, val in part.items():
        if isinstance(val, dict):
            _merge(total.setdefault(key, {}), val)
        elif key == "size_bytes":
            total[key] = val
        elif isinstance(val, (int, np.integer)):
            total[key] = total.get(key, 0) + int(val)


def dataset_counts(y, *, dim: int, ratio: float, flow: Dataflow, n_iter: int,
                   search: str = "robust") -> dict:
    """:func:`chunk_counts` summed over the chunks the driver runs for labels ``y`` (the
    ``nms.verif.models.desne.plan_chunks`` plan at ``flow.capacity``; chunks with budget 0
    are not run)."""
    total: dict = {"chunks": 0}
    for ch in desne.plan_chunks(np.asarray(y), ratio, flow.capacity):
        if ch.budget == 0:
            continue
        c = chunk_counts(n=int(ch.members.size), dim=dim, budget=ch.budget, flow=flow,
                         n_iter=n_iter, search=search)
        for key in ("n", "dim", "reduced_dim"):
            c.pop(key)
        _merge(total, c)
        total["chunks"] += 1
    total["dim"], total["reduced_dim"] = dim, reduced_dim(dim, flow.reduce)
    return total


# ------------------------------------------------------------------------------------------------
# on-chip memory


def bram_blocks(depth: int, width_bits: int) -> int:
    """DP16KD blocks of one memory of ``depth`` words of ``width_bits``: the cheapest of the
    block's aspect ratios (16K×1 .. 512×36), blocks side by side and stacked."""
    depth, width_bits = _int("depth", depth, 1), _int("width_bits", width_bits, 1)
    return min(_ceil(width_bits, w) * _ceil(depth, d) for d, w in _DP16KD)


def memory_plan(flow: Dataflow) -> dict:
    """The on-chip memories of the flow at full capacity (depth × width, DP16KD blocks) and
    whether they fit an ECP5-85F (:data:`ECP5_85F_BLOCKS`)."""
    C, K, S, U, L, T = flow.capacity, flow.k, flow.neg_samples, flow.pair_units, flow.lanes, flow.tile
    iw = max(1, (C - 1).bit_length())
    fa = _F_WIDTH + _bits_for(C * K)
    fr = _F_WIDTH + _bits_for(S)
    d2 = reduced_dim(flow.max_dim, flow.reduce)
    mems = {
        "query_memory": (_ceil(d2, L), T * L * 8),
        "embed_y": (C, 48), "embed_v": (C, 48), "knn_lists": (C * K, iw + _P),
        **{f"embed_scatter{u}": (C, 2 * fa) for u in range(U)},
        **{f"embed_lsum{u}": (_ceil(C, U), 2 * fa) for u in range(U)},
        **{f"embed_rsum{u}": (_ceil(C, U), 2 * fr) for u in range(U)},
        "grid_points": (C, 48), "grid_dist": (C, 32),
        "grid_cells": (min(C, 1 << (2 * fp.GRID_BITS_MAX)), 2 * 16),
        "grid_cellmap": (1 << (2 * fp.GRID_BITS_MAX), 16),
    }
    if flow.buffer:
        # L bytes per word, one vector after another: C·ceil(D'/L) words, in banks
        depth, bank_words, banks = flow.buffer_banks_geometry()
        if banks == 1:
            mems["chunk_buffer"] = (depth, 8 * L)
        else:
            for b in range(banks):
                mems[f"chunk_buffer{b}"] = (min(bank_words, depth - b * bank_words), 8 * L)
    rows = {name: {"depth": d, "width": w, "blocks": bram_blocks(d, w)} for name, (d, w) in mems.items()}
    total = sum(r["blocks"] for r in rows.values())
    return {"memories": rows, "blocks": total, "available": ECP5_85F_BLOCKS,
            "fits": total <= ECP5_85F_BLOCKS,
            "chunk_buffer_bytes": C * _ceil(d2, L) * L if flow.buffer else 0}


# ------------------------------------------------------------------------------------------------
# the model with the flow's kNN input


def run_chunk_flow(X, budget: int, cfg: desne.DesneConfig, seed: int = 0, *,
                   reduce: str = "none", target: int | None = None) -> dict:
    """:func:`nms.verif.models.desne.run_chunk` with ``cfg.pool = reduce`` (the kNN and the
    exemplar stage's vector view on :func:`reduce_vectors` of ``X``); ``reduce="none"`` is
    ``run_chunk`` itself."""
    return desne.run_chunk(np.asarray(X), budget, cfg.replace(pool=reduce), seed, target=target)


def select_flow(X, y, ratio, config: desne.DesneConfig | None = None, *, reduce: str = "none",
                seed: int = 0, details: bool = False) -> dict:
    """DE-SNE selection (the same chunk plan and seeds as ``desne.select``) with the kNN on the
    reduced vectors."""
    reduced_dim(np.asarray(X).shape[1], reduce)   # fail before any chunk runs

    def fn(Xc, budget, cfg, s):
        return run_chunk_flow(Xc, budget, cfg, s, reduce=reduce)

    return desne.select_with(fn, X, y, ratio, config, seed=seed, details=details)
