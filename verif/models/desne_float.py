"""Float64 reference of DE-SNE — the readable definition (``docs/algorithm.md``).

This module follows the document literally and keeps the *discrete structure* of the bit-exact
model (:mod:`nms.verif.models.desne`) unchanged, so that any difference between the two is arithmetic
only:

* the same kNN lists (exact integer distances, ties to the lower index), on the same vectors:
  with ``cfg.pool`` the bit-exact pooled ones (:func:`nms.verif.models.pool.pool_vectors`;
  the kNN's integer lists are the shared discrete structure, so its input is shared too);
* the same precision-code grid beta' = 2**(c/32 - 30), c = 0..1023, and the same robust search
  (16-code coarse scan, 6 refinement rounds, ties to the lower code) or NMS-style bisection — but
  the entropy of each candidate is computed exactly, ``w = 2**(-beta' * delta)``,
  ``H = log2(sum w) + sum(p * beta' * delta)``;
* the same hashed initial coordinates and negative-sample partners;
* float forces with the exact Student-t kernel 1 / (1 + d2), float momentum and learning rate,
  no saturation;
* the same grid sampler (power-of-two bounding box, finest level with <= budget occupied cells,
  the same allocation, members nearest the cell centre, ties to the lower index) on float
  coordinates;
* the same per-class chunking and per-chunk seeds.

Speed is not a goal here; clarity is. The budget allocation over cells and the chunking are
integer bookkeeping with no arithmetic to approximate, so they are shared with the bit-exact
model rather than copied.
"""

from __future__ import annotations

import math

import numpy as np

from nms.rtl import fixedpoint as fp
from nms.verif.models.pool import pool_vectors
from nms.verif.models.desne import (
    BISECT_STEPS, ROBUST_COARSE_STEP, ROBUST_REFINE_STEPS, SEARCHES, DesneConfig, allocate,
    grid_level as _grid_level, init_embedding, knn, mean_nearest, negative_samples, select_with,
)

__all__ = ["beta_of_code", "entropy_eval", "affinities", "embed", "grid_cells", "grid_level",
           "grid_select", "cover_select", "grid_cover_select", "run_chunk", "select"]


# --- stage 2: affinities -------------------------------------------------------------------------

def beta_of_code(code) -> np.ndarray:
    """Precision beta' (per squared-distance unit, base 2) of a 10-bit precision code."""
    code = np.asarray(code, dtype=np.float64)
    return 2.0 ** (code / fp.BETA_STEPS_PER_OCTAVE - fp.BETA_EXP_OFFSET)


def entropy_eval(delta: np.ndarray, code: np.ndarray):
    """Exact entropy (bits) of each row's affinities for its precision code.

    ``delta`` (N, k) are the distance gaps d_j - d_0 >= 0. The weights are
    ``w_j = 2**(-beta' * delta_j)`` (so the nearest neighbour has w = 1) and
    ``H = log2(S) + sum_j p_j * beta' * delta_j`` with ``S = sum_j w_j``, ``p_j = w_j / S`` —
    the Shannon entropy of p in bits, written so that no logarithm of a tiny p is needed.

    Returns ``(H, p)``.
    """
    a = beta_of_code(code)[:, None] * np.asarray(delta, dtype=np.float64)
    w = np.exp2(-a)
    S = w.sum(1)
    p = w / S[:, None]
    H = np.log2(S) + (p * a).sum(1)
    return H, p


def affinities(dist: np.ndarray, perplexity: float, search: str = "robust"):
    """Per-row precision-code search on exact float entropies; same control flow as the model.

    Returns a dict with ``P`` (N, k) float conditional affinities (rows sum to 1), ``code`` (N,),
    ``H`` (N,) entropies in bits and ``err`` (N,) = |H - log2(perplexity)| in bits.
    """
    delta = np.asarray(dist, dtype=np.float64)
    delta = delta - delta[:, :1]
    n = delta.shape[0]
    target = math.log2(perplexity)

    def err_of(codes):
        return np.abs(entropy_eval(delta, codes)[0] - target)

    def pick(cands, errs):
        # smallest error; among equal errors the lower code (lexsort: last key is primary)
        cands, errs = np.stack(cands, 1), np.stack(errs, 1)
        emin = errs.min(1)
        code = np.where(errs == emin[:, None], cands, fp.BETA_CODES).min(1)
        return code, emin

    if search == "robust":
        coarse = range(ROBUST_COARSE_STEP // 2, fp.BETA_CODES, ROBUST_COARSE_STEP)
        code, err = pick([np.full(n, c) for c in coarse], [err_of(np.full(n, c)) for c in coarse])
        for step in ROBUST_REFINE_STEPS:
            lo = np.maximum(code - step, 0)
            hi = np.minimum(code + step, fp.BETA_CODES - 1)
            code, err = pick([code, lo, hi], [err, err_of(lo), err_of(hi)])
    elif search == "bisect":
        # NMS-style: assumes H falls monotonically as the precision code grows
        code = np.full(n, fp.BETA_CODES // 2, dtype=np.int64)
        for step in BISECT_STEPS:
            H, _ = entropy_eval(delta, code)
            code = np.where(H > target, code + step, code - step)
    else:
        raise ValueError(f"search must be one of {SEARCHES}, not {search!r}")
    H, P = entropy_eval(delta, code)
    return {"P": P, "code": code, "H": H, "err": np.abs(H - target)}


# --- stage 3: embedding --------------------------------------------------------------------------

def embed(nbr: np.ndarray, P: np.ndarray, cfg: DesneConfig, seed: int = 0) -> np.ndarray:
    """2-D embedding by the document's update rule in float64; returns Y (N, 2).

    Per iteration t, for every point i:

    * attraction ``A_i = sum over directed kNN edges (i->j) of p_{j|i} q_ij (y_j - y_i)``, each
      edge also applied with the opposite sign to j (symmetrised P), times ``2**shift`` during
      early exaggeration, then halved;
    * repulsion ``R_i = N / W * sum_m q_im**2 (y_i - y_m)`` over the s hashed negative samples m of
      i, with ``W`` the sum of q over all N*s sampled pairs;
    * ``v = momentum * v + lr * (A + R)``, ``y = y + v``;

    where ``q = 1 / (1 + |y_i - y_j|**2)``; momentum and lr are the Q0.8 / Q4.8 config values / 256.
    """
    nbr = np.asarray(nbr, dtype=np.int64)
    P = np.asarray(P, dtype=np.float64)
    n, kk = nbr.shape
    Y = init_embedding(n, seed) / 2.0 ** fp.Y_FRAC_BITS
    V = np.zeros_like(Y)
    src = np.repeat(np.arange(n), kk)
    dst = nbr.ravel()
    p = P.ravel()
    lr = cfg.learning_rate / 2.0 ** fp.LR_FRAC_BITS
    for t in range(cfg.n_iter):
        d = Y[dst] - Y[src]
        q = 1.0 / (1.0 + (d * d).sum(1))
        f = (p * q)[:, None] * d
        Fa = np.stack([np.bincount(src, f[:, a], n) - np.bincount(dst, f[:, a], n)
                       for a in range(2)], 1)
        if t < cfg.exaggeration_iters:
            Fa = Fa * 2.0 ** cfg.exaggeration_shift
        j = negative_samples(n, cfg.neg_samples, t, seed)
        r = Y[:, None, :] - Y[j]
        qr = 1.0 / (1.0 + (r * r).sum(2))
        Fr = ((qr * qr)[..., None] * r).sum(1)
        rep = Fr * (n / qr.sum())
        mom = (cfg.momentum_early if t < cfg.momentum_switch else cfg.momentum_late) \
            / 2.0 ** fp.MOMENTUM_FRAC_BITS
        V = mom * V + lr * (Fa / 2.0 + rep)
        Y = Y + V
    return Y


# --- stage 4: grid sampling ----------------------------------------------------------------------

def grid_cells(Y: np.ndarray, g: int):
    """Cells of the 2**g x 2**g grid over the power-of-two box [lo, lo + side) per axis.

    ``side`` is the smallest power of two >= the span (max - min) of the axis, as in the model;
    a point on the upper edge of a box whose span is exactly a power of two goes to the last cell.
    """
    Y = np.asarray(Y, dtype=np.float64)
    lo = Y.min(0)
    span = Y.max(0) - lo
    side = np.where(span > 0, 2.0 ** np.ceil(np.log2(np.where(span > 0, span, 1.0))), 1.0)
    c = np.minimum(np.floor((Y - lo) / side * 2 ** g), 2 ** g - 1).astype(np.int64)
    return c, lo, side


def grid_level(Y: np.ndarray, budget: int) -> int:
    """Finest grid level g <= GRID_BITS_MAX whose number of occupied cells is <= budget."""
    return _grid_level(Y, budget, cells=grid_cells)


def grid_select(Y: np.ndarray, budget: int, allocation: str = "adaptive", *, details: bool = False):
    """Choose ``budget`` points of the float embedding Y: their indices, ascending.

    Per cell the ``quota`` members nearest the cell centre are taken (ties to the lower index).
    """
    Y = np.asarray(Y, dtype=np.float64)
    n = Y.shape[0]
    if not 1 <= budget <= n:
        raise ValueError(f"budget must be in [1, {n}], not {budget}")
    g = grid_level(Y, budget)
    c, lo, side = grid_cells(Y, g)
    cell = c[:, 1] * (1 << g) + c[:, 0]
    counts = np.bincount(cell, minlength=1 << (2 * g))
    quota = allocate(counts, budget, allocation)
    centre = lo + (c + 0.5) * side / 2 ** g
    dd = ((Y - centre) ** 2).sum(1)
    chosen = []
    for k in np.flatnonzero(quota):
        members = np.flatnonzero(cell == k)
        order = np.lexsort((members, dd[members]))  # distance, then index
        chosen.extend(members[order[:quota[k]]])
    chosen = np.sort(np.array(chosen, dtype=np.int64))
    if details:
        return chosen, {"g": g, "cell": cell, "counts": counts, "quota": quota, "dist": dd}
    return chosen


# --- stage 4b: greedy kNN-graph coverage --------------------------------------------------------

def cover_select(nbr: np.ndarray, P: np.ndarray, budget: int, *, cell=None, quota=None,
                 start: int | None = None) -> np.ndarray:
    """Float greedy coverage: maximise Σ_i max_{j ∈ S} K_ij with K_ii = 1 and K_ij = p_{j|i}
    on the kNN lists; largest gain first, ties to the lower index; optional cell quotas and a
    fixed first pick — the bit-exact model's rule with real-valued affinities."""
    n, kk = nbr.shape
    if not 1 <= budget <= n:
        raise ValueError(f"budget must be in [1, {n}], not {budget}")
    rows = np.concatenate([np.arange(n), np.repeat(np.arange(n), kk)])  # covered point i
    cols = np.concatenate([np.arange(n), np.asarray(nbr).ravel()])      # candidate j
    vals = np.concatenate([np.ones(n), np.asarray(P, dtype=np.float64).ravel()])  # K_ij
    cover = np.zeros(n)
    free = np.ones(n, dtype=bool)
    left = None if quota is None else np.array(quota, dtype=np.int64)
    chosen = []
    for t in range(budget):
        gain = np.bincount(cols, weights=np.maximum(vals - cover[rows], 0.0), minlength=n)
        ok = free if left is None else free & (left[cell] > 0)
        best = int(start) if t == 0 and start is not None else int(np.argmax(np.where(ok, gain, -1.0)))
        chosen.append(best)
        free[best] = False
        if left is not None:
            left[cell[best]] -= 1
        hit = cols == best
        np.maximum.at(cover, rows[hit], vals[hit])
    return np.sort(np.array(chosen, dtype=np.int64))


def grid_cover_select(Y, nbr, P, budget: int, allocation: str = "adaptive", *,
                      start: int | None = None) -> np.ndarray:
    """Float grid (as :func:`grid_select`) + coverage exemplars inside the cell quotas."""
    Y = np.asarray(Y, dtype=np.float64)
    g = grid_level(Y, budget)
    c, _, _ = grid_cells(Y, g)
    cell = c[:, 1] * (1 << g) + c[:, 0]
    quota = allocate(np.bincount(cell, minlength=1 << (2 * g)), budget, allocation)
    if start is not None and quota[cell[start]] == 0:
        start = None
    return cover_select(nbr, P, budget, cell=cell, quota=quota, start=start)


# --- the whole job -------------------------------------------------------------------------------

def run_chunk(X: np.ndarray, budget: int, cfg: DesneConfig, seed: int = 0) -> dict:
    """All four stages on one chunk in float64; ``selected`` are local indices, ascending."""
    X = pool_vectors(X, cfg.pool)       # what the kNN (and the coverage start) sees
    nbr, dist = knn(X, cfg.k)
    aff = affinities(dist, cfg.perplexity, cfg.search)
    Y = embed(nbr, aff["P"], cfg, seed)
    if cfg.exemplar == "centre":
        selected = grid_select(Y, budget, cfg.allocation)
    else:
        start = mean_nearest(X) if cfg.cover_start == "mean" else None
        selected = (grid_cover_select(Y, nbr, aff["P"], budget, cfg.allocation, start=start)
                    if cfg.exemplar == "cover" else cover_select(nbr, aff["P"], budget, start=start))
    return {"nbr": nbr, "dist": dist, **aff, "Y": Y, "selected": selected}


def select(X, y, ratio, config: DesneConfig | None = None, *, seed: int = 0, details: bool = False) -> dict:
    """Float-reference DE-SNE selection; same contract as :func:`nms.verif.models.desne.select`.

    Returns ``{"indices": sorted int64 array}`` and, with ``details``, a ``"chunks"`` list
    (label, members, float embedding, selected, code, err in bits). Chunk number c (counted over
    classes in sorted order, including chunks whose budget is 0) uses seed ``seed + c``.
    """
    return select_with(run_chunk, X, y, ratio, config, seed=seed, details=details)
