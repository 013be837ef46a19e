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
``typiclust``
    TypiClust (Hacohen et al., ICML 2022) without a network: k-means in pixel space with as many
    clusters as the class budget (k-means++ start from the seed, at most
    :data:`TYPICLUST_KMEANS_ITERS` Lloyd iterations), then per cluster the member of highest
    *typicality* = 1 / mean L2 distance to its ``min(20, size - 1)`` nearest cluster mates
    (a singleton cluster gives its only member). ``weights`` = cluster sizes.
``maxherding``
    MaxHerding (Bae et al., ECCV 2024) on the sparse pixel-space kNN graph: greedy maximisation
    of Σ_i max_{j ∈ S} K(x_i, x_j) with the Gaussian kernel K = exp(-d² / (2 σ²)) kept on each
    point's :data:`GRAPH_K` nearest neighbours and itself, σ² = the median squared kNN distance
    of the class (a data rule, nothing tuned). ``weights`` = 1 + the members it covers best.
``desne``
    The DE-SNE bit-exact model (:mod:`nms.verif.models.desne`), imported lazily, as the device
    runs it by default (``PRESETS["desne"]``, pooling by ``default_pool``); ``desne-300``,
    ``desne-nms``, ``desne-v0`` are the comparison presets.

``herding``, ``kcenter`` and ``maxherding`` do not use the seed (ties go to the lower index):
they are *deterministic*. ``random``, ``facility``, ``typiclust`` and ``desne`` are
deterministic for a given seed.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from nms.verif.models.budget import class_budgets, validate_ratio

__all__ = ["SELECTORS", "random_select", "herding_select", "kcenter_select", "facility_select",
           "typiclust_select", "maxherding_select", "desne_select", "desne_300_select",
           "desne_nms_select", "desne_v0_select", "check_inputs", "per_class",
           "pixel_knn"]

#: stochastic-greedy accuracy parameter: each step scans (n / k) · ln(1 / ε) random candidates
FACILITY_EPSILON = 0.01
#: neighbours per point of the pixel-space kNN graph (MaxHerding) and of TypiClust's typicality
GRAPH_K = 20
#: Lloyd iterations of TypiClust's k-means (after k-means++ seeding)
TYPICLUST_KMEANS_ITERS = 20


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


def pixel_knn(Xc, k, *, block: int = 1024):
    """Exact kNN of every row among the other rows (squared L2, float64 exact for integer pixels).

    Returns ``(nbr, d2)`` (n, k') sorted by (distance, index), k' = min(k, n - 1).
    """
    n = len(Xc)
    kk = min(k, n - 1)
    sq = np.einsum("ij,ij->i", Xc, Xc)
    nbr = np.empty((n, kk), dtype=np.int64)
    d2 = np.empty((n, kk))
    cols = np.arange(n)
    for a in range(0, n, block):
        rows = slice(a, min(n, a + block))
        d = np.maximum(sq[rows, None] + sq[None, :] - 2.0 * (Xc[rows] @ Xc.T), 0.0)
        d = np.rint(d)  # exact integers (pixels are integers)
        r = np.arange(d.shape[0])
        d[r, a + r] = np.inf  # never its own neighbour
        # composite key (distance, index) for ties to the lower index
        key = d * n + cols[None, :]
        part = np.argpartition(key, kk - 1, axis=1)[:, :kk] if kk < n - 1 else \
            np.argsort(key, axis=1)[:, :kk]
        order = np.argsort(np.take_along_axis(key, part, 1), axis=1)
        nbr[rows] = np.take_along_axis(part, order, 1)
        d2[rows] = np.take_along_axis(d, nbr[rows], 1)
    return nbr, d2


def _typiclust_pick(Xc, m, rng):
    n = len(Xc)
    if m >= n:
        return np.arange(n), None
    from sklearn.cluster import KMeans
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        km = KMeans(n_clusters=m, n_init=1, max_iter=TYPICLUST_KMEANS_ITERS,
                    random_state=int(rng.integers(2**31)), algorithm="lloyd").fit(Xc)
    labels = km.labels_
    picks, sizes = [], []
    for c in range(m):
        members = np.flatnonzero(labels == c)
        if members.size == 0:
            continue
        if members.size == 1:
            picks.append(int(members[0]))
        else:
            nbr, d2 = pixel_knn(Xc[members], GRAPH_K)
            typicality = 1.0 / (np.sqrt(d2).mean(axis=1) + 1e-12)
            picks.append(int(members[int(np.argmax(typicality))]))  # ties: lower index
        sizes.append(members.size)
    picks = np.array(picks, dtype=np.int64)
    sizes = np.array(sizes, dtype=np.float64)
    if picks.size < m:  # empty clusters (possible in k-means): fill with the most typical rest
        nbr, d2 = pixel_knn(Xc, GRAPH_K)
        typ = 1.0 / (np.sqrt(d2).mean(axis=1) + 1e-12)
        typ[picks] = -np.inf
        extra = np.argsort(-typ, kind="stable")[: m - picks.size]
        picks = np.concatenate([picks, extra])
        sizes = np.concatenate([sizes, np.ones(extra.size)])
    return picks, sizes


def graph_coverage_greedy(rows, cols, vals, n, m):
    """Greedy maximisation of Σ_i max_{j ∈ S} K_ij over a sparse kernel given as triples
    (row i = covered point, col j = candidate, value K_ij > 0); ``m`` picks, ties to the lower
    index, already-chosen points never again. Returns ``(picks, owner)`` with ``owner[i]`` the
    pick covering i best (-1 if none reaches it)."""
    cover = np.zeros(n)
    taken = np.zeros(n, dtype=bool)
    picks = np.empty(m, dtype=np.int64)
    for t in range(m):
        gains = np.bincount(cols, weights=np.maximum(vals - cover[rows], 0.0), minlength=n)
        gains[taken] = -1.0
        p = int(np.argmax(gains))
        picks[t] = p
        taken[p] = True
        hit = cols == p
        np.maximum.at(cover, rows[hit], vals[hit])
    best = np.full(n, -1.0)
    owner = np.full(n, -1, dtype=np.int64)
    where = np.full(n, -1, dtype=np.int64)
    where[picks] = np.arange(m)
    sel = where[cols] >= 0
    for i, j, v in zip(rows[sel], cols[sel], vals[sel]):
        if v > best[i] or (v == best[i] and where[j] < owner[i]):
            best[i], owner[i] = v, where[j]
    return picks, owner


def _maxherding_pick(Xc, m, rng):
    n = len(Xc)
    nbr, d2 = pixel_knn(Xc, GRAPH_K)
    sigma2 = max(float(np.median(d2)), 1.0)
    kk = nbr.shape[1]
    rows = np.concatenate([np.arange(n), np.repeat(np.arange(n), kk)])
    cols = np.concatenate([np.arange(n), nbr.ravel()])
    vals = np.concatenate([np.ones(n), np.exp(-d2.ravel() / (2.0 * sigma2))])
    picks, owner = graph_coverage_greedy(rows, cols, vals, n, m)
    counts = np.bincount(owner[owner >= 0], minlength=m).astype(np.float64)
    return picks, 1.0 + counts


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


def typiclust_select(X, y, ratio, seed=0) -> dict:
    """Per-class TypiClust (budget-many k-means clusters, most typical member each); returns
    ``weights`` (cluster sizes)."""
    return per_class(X, y, ratio, _typiclust_pick, seed)


def maxherding_select(X, y, ratio, seed=0) -> dict:
    """Per-class MaxHerding on the sparse pixel-space kNN graph; seed-independent; returns
    ``weights`` (1 + members covered best)."""
    return per_class(X, y, ratio, _maxherding_pick, seed)


def desne_select(X, y, ratio, seed=0, *, config=None, details: bool = False) -> dict:
    """DE-SNE (bit-exact model, :func:`nms.verif.models.desne.select`) behind the common signature.

    ``config`` defaults to what the device runs by default: the model's ``PRESETS["desne"]``
    (the validation search's stage 4 of issue 9 with the energy issue's 50-iteration schedule)
    with the kNN on the vectors pooled by :func:`nms.verif.models.pool.default_pool` of the
    vector length (Fashion-MNIST 28x28 -> 4x4, digits none), as ``nms run`` / ``Driver.select``
    apply it. ``X`` must hold uint8-range integer pixels. ``details=True`` adds the per-chunk
    embeddings.
    """
    X, y, ratio, seed = check_inputs(X, y, ratio, seed)
    from nms.verif.models.desne import PRESETS, select  # lazy: the model lives in nms.verif
    from nms.verif.models.pool import default_pool
    if config is None:
        config = PRESETS["desne"].replace(pool=default_pool(X.shape[1]))
    return select(X, y, ratio, config, seed=seed, details=details)


def desne_300_select(X, y, ratio, seed=0, *, details: bool = False) -> dict:
    """The previous DE-SNE default (``PRESETS["300"]``: the same stage 4, 300 iterations, no
    pooling), kept for comparison (docs/algorithm.md §11a.6)."""
    from nms.verif.models.desne import PRESETS
    return desne_select(X, y, ratio, seed, config=PRESETS["300"], details=details)


def desne_50_select(X, y, ratio, seed=0, *, details: bool = False) -> dict:
    """The DE-SNE default before the second dataflow round (``PRESETS["50"]``: the same job,
    50 iterations, pooled by ``default_pool`` like ``desne``), kept for comparison."""
    from nms.verif.models.desne import PRESETS
    from nms.verif.models.pool import default_pool
    return desne_select(X, y, ratio, seed, details=details,
                        config=PRESETS["50"].replace(pool=default_pool(X.shape[1])))


def desne_nms_select(X, y, ratio, seed=0, *, details: bool = False) -> dict:
    """DE-SNE with the NMS-style plain grid (``PRESETS["nms"]``: nearest cell centre,
    proportional quotas, 300 iterations, no pooling), kept for comparison."""
    from nms.verif.models.desne import PRESETS
    return desne_select(X, y, ratio, seed, config=PRESETS["nms"], details=details)


def desne_v0_select(X, y, ratio, seed=0, *, details: bool = False) -> dict:
    """DE-SNE's first default (``PRESETS["v0"]``: nearest cell centre, water-filling, 300
    iterations, no pooling), kept for comparison."""
    from nms.verif.models.desne import PRESETS
    return desne_select(X, y, ratio, seed, config=PRESETS["v0"], details=details)


for _f in (herding_select, kcenter_select, maxherding_select):
    _f.seed_independent = True  # lets the harness reuse one selection across seeds
for _f in (random_select, facility_select, typiclust_select, desne_select, desne_300_select,
           desne_50_select, desne_nms_select, desne_v0_select):
    _f.seed_independent = False

#: name -> selector ``f(X, y, ratio, seed=0) -> {"indices", ...}``
SELECTORS = {
    "desne": desne_select,
    "desne-300": desne_300_select,
    "desne-50": desne_50_select,
    "desne-nms": desne_nms_select,
    "desne-v0": desne_v0_select,
    "random": random_select,
    "herding": herding_select,
    "kcenter": kcenter_select,
    "facility": facility_select,
    "typiclust": typiclust_select,
    "maxherding": maxherding_select,
}
