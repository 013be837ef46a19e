"""DNN-free coreset baselines in pixel space, and the registry of all selectors.

Every selector has the signature ``f(X, y, ratio, seed=0) -> dict`` and works per class: class
``c`` gets exactly ``class_budgets(y, ratio)[c]`` exemplars (see :mod:`nms.verif.models.budget`). The
result follows the DeepCore contract ``{"indices": int64 array, sorted ascending, unique}`` plus
optional ``"weights"`` / ``"scores"``. Features are the raw pixels (flattened), as float64: with
integer pixels every squared distance and dot product below is an exact integer in float64
(784 · 255² < 2⁵³), so k-center and the facility-location kernel are platform independent.

Selectors
---------
``random``
    Stratified uniform sampling without replacement (DeepCore ``Uniform`` with ``balance``).
``herding``
    Kernel-herding / iCaRL mean matching: repeatedly add the point that brings the running mean
    of the chosen set closest to the class mean. (DeepCore's ``Herding`` takes the *argmax* of
    that distance, i.e. the worst match; we implement the textbook argmin.)
``kcenter``
    k-Center greedy (Sener & Savarese): start at the point nearest the class mean, then always
    add the point farthest from the chosen set.
``facility``
    Facility location (the submodular objective behind CRAIG / DQ's bins) on the similarity
    ``s_ij = max d² - ||x_i - x_j||²``, maximised by stochastic greedy (Mirzasoleiman et al.
    2015, ε = 0.01); ``weights`` = how many class members each exemplar represents.
``desne``
    The DE-SNE bit-exact model (:mod:`nms.verif.models.desne`), imported lazily.

``herding`` and ``kcenter`` do not use the seed (ties go to the lower index); ``random`` and
``facility`` are deterministic for a given seed.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from nms.verif.models.budget import class_budgets, validate_ratio

__all__ = ["SELECTORS", "random_select", "herding_select", "kcenter_select", "facility_select",
           "desne_select", "check_inputs", "per_class"]

#: stochastic-greedy accuracy parameter: each step scans (n / k) · ln(1 / ε) random candidates
FACILITY_EPSILON = 0.01


def check_inputs(X, y, ratio, seed=0):
    """Validate selector inputs; return ``(X (N, D), y int64, ratio, seed)``.

    ``X`` may be (N, D) or (N, H, W, ...) (flattened); it must be real-valued and finite. ``y``
    must be a 1-D integer vector of the same length.
    """
    X = np.asarray(X)
    y = np.asarray(y)
    if X.ndim < 2:
        raise ValueError(f"X must be (N, D) vectors or (N, H, W) images, got shape {X.shape}")
    if X.size == 0:
        raise ValueError(f"X is empty (shape {X.shape})")
    X = X.reshape(X.shape[0], -1)
    if X.dtype == np.bool_ or not (np.issubdtype(X.dtype, np.integer) or
                                   np.issubdtype(X.dtype, np.floating)):
        raise TypeError(f"X must hold numbers (pixels), got dtype {X.dtype}")
    if np.issubdtype(X.dtype, np.floating) and not np.isfinite(X).all():
        raise ValueError("X contains NaN or infinite values")
    if y.shape != (X.shape[0],):
        raise ValueError(f"y must have shape ({X.shape[0]},) to match X, got {y.shape}")
    ratio = validate_ratio(ratio)
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    return X, y, ratio, int(seed)


def per_class(X, y, ratio, pick, seed=0) -> dict:
    """Run ``pick(Xc float64, budget, rng) -> (local indices, weights or None)`` per class.

    Classes are visited in ascending label order; one ``numpy.random.Generator`` seeded with
    ``seed`` is shared across them, so results depend only on (data, ratio, seed).
    """
    X, y, ratio, seed = check_inputs(X, y, ratio, seed)
    budgets = class_budgets(y, ratio)
    rng = np.random.default_rng(seed)
    chosen, weights = [], []
    for label, m in budgets.items():
        members = np.flatnonzero(y == label)
        local, w = pick(X[members].astype(np.float64), m, rng)
        local = np.asarray(local, dtype=np.int64)
        if local.shape != (m,) or np.unique(local).size != m:
            raise AssertionError(f"selector returned {local.size} picks for class {label}, "
                                 f"expected {m} unique")  # internal invariant, never user error
        chosen.append(members[local])
        weights.append(np.ones(m) if w is None else np.asarray(w, dtype=np.float64))
    idx = np.concatenate(chosen)
    order = np.argsort(idx, kind="stable")
    out = {"indices": idx[order].astype(np.int64)}
    if any(w is not None for w in weights):
        out["weights"] = np.concatenate(weights)[order]
    return out


# ------------------------------------------------------------------------------- selectors

def _random_pick(Xc, m, rng):
    return rng.choice(len(Xc), size=m, replace=False), None


def _herding_pick(Xc, m, rng):
    n = len(Xc)
    mu = Xc.mean(axis=0)
    sq = np.einsum("ij,ij->i", Xc, Xc)
    taken = np.zeros(n, dtype=bool)
    total = np.zeros(Xc.shape[1])
    picks = np.empty(m, dtype=np.int64)
    for t in range(m):
        # next point x minimises ||(t+1)·mu - total - x||² = ||x||² - 2 target·x + const
        target = (t + 1) * mu - total
        score = sq - 2.0 * (Xc @ target)
        score[taken] = np.inf
        p = int(np.argmin(score))
        picks[t] = p
        taken[p] = True
        total += Xc[p]
    return picks, None


def _sq_dist_to(Xc, sq, c):
    """Squared distances of every row to row ``c`` (exact for integer pixels)."""
    return np.maximum(sq - 2.0 * (Xc @ Xc[c]) + sq[c], 0.0)


def _kcenter_pick(Xc, m, rng):
    sq = np.einsum("ij,ij->i", Xc, Xc)
    mu = Xc.mean(axis=0)
    first = int(np.argmin(sq - 2.0 * (Xc @ mu)))  # nearest to the class mean
    picks = np.empty(m, dtype=np.int64)
    picks[0] = first
    mind = _sq_dist_to(Xc, sq, first)
    mind[first] = -1.0
    for t in range(1, m):
        p = int(np.argmax(mind))
        picks[t] = p
        mind = np.minimum(mind, _sq_dist_to(Xc, sq, p))
        mind[picks[: t + 1]] = -1.0
    return picks, None


def _facility_pick(Xc, m, rng):
    n = len(Xc)
    sq = np.einsum("ij,ij->i", Xc, Xc)
    d2 = np.maximum(sq[:, None] + sq[None, :] - 2.0 * (Xc @ Xc.T), 0.0)
    sim = d2.max() - d2
    del d2
    cover = np.zeros(n)  # current max similarity of every point to the chosen set
    taken = np.zeros(n, dtype=bool)
    picks = np.empty(m, dtype=np.int64)
    sample = min(n, max(1, math.ceil(n / m * math.log(1.0 / FACILITY_EPSILON))))
    for t in range(m):
        free = np.flatnonzero(~taken)
        cand = free if free.size <= sample else np.sort(rng.choice(free, sample, replace=False))
        gains = np.maximum(sim[:, cand] - cover[:, None], 0.0).sum(axis=0)
        p = int(cand[int(np.argmax(gains))])
        picks[t] = p
        taken[p] = True
        cover = np.maximum(cover, sim[:, p])
    # weight = number of class members whose most similar exemplar it is (ties to first pick)
    owner = np.argmax(sim[:, picks], axis=1)
    return picks, np.bincount(owner, minlength=m).astype(np.float64)


def random_select(X, y, ratio, seed=0) -> dict:
    """Stratified uniform random selection without replacement."""
    return per_class(X, y, ratio, _random_pick, seed)


def herding_select(X, y, ratio, seed=0) -> dict:
    """Per-class herding (greedy mean matching) in pixel space; seed-independent."""
    return per_class(X, y, ratio, _herding_pick, seed)


def kcenter_select(X, y, ratio, seed=0) -> dict:
    """Per-class k-center greedy from the point nearest the class mean; seed-independent."""
    return per_class(X, y, ratio, _kcenter_pick, seed)


def facility_select(X, y, ratio, seed=0) -> dict:
    """Per-class facility location by stochastic greedy; returns ``weights`` (cluster sizes).

    Memory: one dense n_c × n_c float64 similarity matrix per class (288 MB for 6000 points).
    """
    return per_class(X, y, ratio, _facility_pick, seed)


def desne_select(X, y, ratio, seed=0, *, config=None, details: bool = False) -> dict:
    """DE-SNE (bit-exact model, :func:`nms.verif.models.desne.select`) behind the common signature.

    ``X`` must hold uint8-range integer pixels. ``details=True`` adds the per-chunk embeddings.
    """
    X, y, ratio, seed = check_inputs(X, y, ratio, seed)
    from nms.verif.models.desne import select  # lazy: the model lives in nms.verif
    return select(X, y, ratio, config, seed=seed, details=details)


for _f in (herding_select, kcenter_select):
    _f.seed_independent = True  # lets the harness reuse one selection across seeds
for _f in (random_select, facility_select, desne_select):
    _f.seed_independent = False

#: name -> selector ``f(X, y, ratio, seed=0) -> {"indices", ...}``
SELECTORS = {
    "desne": desne_select,
    "random": random_select,
    "herding": herding_select,
    "kcenter": kcenter_select,
    "facility": facility_select,
}
