"""Selector invariants (every registered selector, DE-SNE included) and baseline semantics."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nms.sw.baselines import SELECTORS, check_inputs
from nms.sw.datasets import load_digits
from nms.verif.models import desne as dm
from nms.verif.models.budget import class_budgets

FAST = [m for m in SELECTORS if not m.startswith("desne")]


@pytest.fixture(scope="module")
def digits():
    d = load_digits()
    return d.train_flat(), d.y_train


def blobs(n_per_class=(9, 14, 5), d=6, seed=0):
    """Small uint8 data: one Gaussian blob per class, labels not contiguous."""
    rng = np.random.default_rng(seed)
    X, y = [], []
    for label, n in zip((4, 0, 9), n_per_class):
        centre = rng.integers(40, 210, size=d)
        X.append(np.clip(centre + rng.normal(0, 20, size=(n, d)), 0, 255).astype(np.uint8))
        y.append(np.full(n, label))
    perm = rng.permutation(sum(n_per_class))  # classes interleaved in index order
    return np.concatenate(X)[perm], np.concatenate(y)[perm]


def check_result(result, y, ratio):
    idx = result["indices"]
    assert isinstance(idx, np.ndarray) and idx.dtype == np.int64 and idx.ndim == 1
    assert np.all(np.diff(idx) > 0), "indices must be sorted ascending and unique"
    assert idx.min() >= 0 and idx.max() < len(y)
    labels, counts = np.unique(y[idx], return_counts=True)
    assert dict(zip(labels.tolist(), counts.tolist())) == class_budgets(y, ratio)
    if "weights" in result:
        assert result["weights"].shape == idx.shape and np.all(result["weights"] > 0)


@pytest.mark.parametrize("method", FAST)
@pytest.mark.parametrize("ratio", [0.01, 0.05, 0.2, 1.0])
def test_invariants_on_digits(digits, method, ratio):
    X, y = digits
    a = SELECTORS[method](X, y, ratio, seed=3)
    check_result(a, y, ratio)
    b = SELECTORS[method](X, y, ratio, seed=3)
    assert np.array_equal(a["indices"], b["indices"])


@pytest.mark.parametrize("method", FAST)
@settings(max_examples=25, deadline=None)
@given(ratio=st.floats(0.001, 1.0), seed=st.integers(0, 2**31), data_seed=st.integers(0, 50))
def test_invariants_on_synthetic(method, ratio, seed, data_seed):
    X, y = blobs(seed=data_seed)
    check_result(SELECTORS[method](X, y, ratio, seed=seed), y, ratio)


@pytest.mark.parametrize("method", ["desne", "desne-300", "desne-nms", "desne-v0"])
@pytest.mark.parametrize("ratio", [0.05, 0.3, 1.0])
def test_desne_invariants(method, ratio):
    X, y = blobs(n_per_class=(30, 41, 12), d=16, seed=1)
    a = SELECTORS[method](X, y, ratio, seed=2)
    check_result(a, y, ratio)
    assert np.array_equal(a["indices"], SELECTORS[method](X, y, ratio, seed=2)["indices"])


def test_desne_on_digits_subset(digits):
    X, y = digits
    keep = np.flatnonzero(y < 3)
    res = SELECTORS["desne"](X[keep], y[keep], 0.1, seed=0)
    check_result(res, y[keep], 0.1)
    # what the device runs by default: PRESETS["desne"], pooled by default_pool (digits: none)
    assert np.array_equal(res["indices"], dm.select(X[keep], y[keep], 0.1, dm.PRESETS["desne"],
                                                    seed=0)["indices"])


def test_desne_pools_28x28_images_as_the_device():
    rng = np.random.default_rng(3)
    X = rng.integers(0, 256, (60, 784))
    y = np.repeat([0, 1], 30)
    got = SELECTORS["desne"](X, y, 0.2, seed=1)["indices"]
    cfg = dm.PRESETS["desne"].replace(pool="pool4")   # default_pool(784)
    assert np.array_equal(got, dm.select(X, y, 0.2, cfg, seed=1)["indices"])
    assert not np.array_equal(got, dm.select(X, y, 0.2, dm.PRESETS["desne"], seed=1)["indices"])


def test_random_depends_on_seed_only(digits):
    X, y = digits
    sets = {tuple(SELECTORS["random"](X, y, 0.1, seed=s)["indices"]) for s in range(4)}
    assert len(sets) == 4
    assert SELECTORS["herding"].seed_independent and SELECTORS["kcenter"].seed_independent
    for m in ("herding", "kcenter"):
        assert np.array_equal(SELECTORS[m](X, y, 0.1, seed=0)["indices"],
                              SELECTORS[m](X, y, 0.1, seed=9)["indices"])


def _per_class(X, y, idx):
    for c in np.unique(y):
        yield X[y == c].astype(float), X[idx[y[idx] == c]].astype(float)


def test_herding_matches_mean_better_than_random(digits):
    X, y = digits
    herd = SELECTORS["herding"](X, y, 0.05)["indices"]
    err = lambda idx: np.mean([np.linalg.norm(A.mean(0) - S.mean(0)) for A, S in _per_class(X, y, idx)])
    rand = [err(SELECTORS["random"](X, y, 0.05, seed=s)["indices"]) for s in range(5)]
    assert err(herd) < 0.5 * min(rand)


def test_herding_matches_naive_definition():
    X, y = blobs(n_per_class=(12, 12, 12), d=5, seed=4)
    got = SELECTORS["herding"](X, y, 0.25)["indices"]
    want = []
    for c in np.unique(y):
        members = np.flatnonzero(y == c)
        A = X[members].astype(float)
        mu, chosen = A.mean(0), []
        for t in range(class_budgets(y, 0.25)[int(c)]):
            cost = [np.inf if i in chosen else
                    np.sum((mu - (A[chosen].sum(0) + A[i]) / (t + 1)) ** 2) for i in range(len(A))]
            chosen.append(int(np.argmin(cost)))
        want.extend(members[chosen])
    assert np.array_equal(got, np.sort(want))


def test_kcenter_first_pick_and_radius(digits):
    X, y = digits
    one = SELECTORS["kcenter"](X, y, 0.001)["indices"]  # 1 per class: nearest to the mean
    assert len(one) == 10
    for i in one:
        c = y[i]
        A = X[y == c].astype(float)
        members = np.flatnonzero(y == c)
        assert i == members[np.argmin(((A - A.mean(0)) ** 2).sum(1))]

    def radius(idx):
        return max(np.sqrt(((A[:, None] - S[None]) ** 2).sum(-1)).min(1).max()
                   for A, S in _per_class(X, y, idx))
    kc = radius(SELECTORS["kcenter"](X, y, 0.1)["indices"])
    assert all(kc < radius(SELECTORS["random"](X, y, 0.1, seed=s)["indices"]) for s in range(3))


def test_facility_objective_and_weights(digits):
    X, y = digits
    res = SELECTORS["facility"](X, y, 0.05, seed=0)
    # weights: every class member is represented by exactly one exemplar of its class
    for c in np.unique(y):
        assert res["weights"][y[res["indices"]] == c].sum() == np.sum(y == c)

    def mean_cover(idx):  # mean distance to the nearest exemplar (k-medoids cost)
        return np.mean([np.sqrt(((A[:, None] - S[None]) ** 2).sum(-1)).min(1).mean()
                        for A, S in _per_class(X, y, idx)])
    fl = mean_cover(res["indices"])
    assert all(fl < mean_cover(SELECTORS["random"](X, y, 0.05, seed=s)["indices"])
               for s in range(3))


@pytest.mark.parametrize("method", list(SELECTORS))
@pytest.mark.parametrize("ratio,exc", [(0, ValueError), (1.5, ValueError),
                                       (float("nan"), ValueError), (True, TypeError),
                                       ("0.1", TypeError)])
def test_ratio_errors(method, ratio, exc):
    X, y = blobs()
    with pytest.raises(exc, match="ratio"):
        SELECTORS[method](X, y, ratio)


@pytest.mark.parametrize("X,y,seed,words", [
    (np.zeros(5), np.zeros(5, int), 0, "shape"),
    (np.zeros((4, 3)), np.zeros(5, int), 0, "match X"),
    (np.full((4, 3), np.nan), np.zeros(4, int), 0, "NaN"),
    (np.zeros((0, 3)), np.zeros(0, int), 0, "empty"),
    (np.zeros((4, 3)), np.zeros(4, int), -1, "seed"),
])
def test_input_errors(X, y, seed, words):
    with pytest.raises(ValueError, match=words):
        check_inputs(X, y, 0.5, seed)


def sub_blobs(n_sub=3, per=15, d=8, seed=0):
    """One class made of ``n_sub`` tight, far-apart sub-clusters (plus a second class)."""
    rng = np.random.default_rng(seed)
    centres = rng.choice(np.arange(20, 236, 40), size=(n_sub, d))
    X = np.concatenate([np.clip(c + rng.normal(0, 2, (per, d)), 0, 255) for c in centres])
    X = np.concatenate([X, np.clip(128 + rng.normal(0, 30, (per, d)), 0, 255)]).astype(np.uint8)
    y = np.concatenate([np.zeros(n_sub * per, int), np.ones(per, int)])
    return X, y, per


@pytest.mark.parametrize("method", ["typiclust", "maxherding", "facility"])
def test_cluster_and_coverage_peers_hit_every_sub_cluster(method):
    X, y, per = sub_blobs()
    ratio = 3 / 45  # class 0 budget 3 = one exemplar per sub-cluster
    res = SELECTORS[method](X, y, ratio, seed=1)
    check_result(res, y, ratio)
    picks = res["indices"][y[res["indices"]] == 0]
    assert sorted(picks // per) == [0, 1, 2]


def test_typiclust_picks_the_most_typical_member():
    X, y, per = sub_blobs(n_sub=1, per=30)
    got = SELECTORS["typiclust"](X, y, 1 / 30, seed=0)["indices"]
    A = X[:per].astype(float)
    d = np.sqrt(((A[:, None] - A[None]) ** 2).sum(-1))
    np.fill_diagonal(d, np.inf)
    typ = 1 / np.sort(d, 1)[:, :20].mean(1)
    assert got[0] == int(np.argmax(typ))


def test_maxherding_greedy_equals_dense_definition():
    from nms.sw.baselines import GRAPH_K, pixel_knn
    X, y = blobs(n_per_class=(40, 9, 5), d=6, seed=2)
    got = SELECTORS["maxherding"](X, y, 0.1)["indices"]
    assert SELECTORS["maxherding"].seed_independent and SELECTORS["typiclust"].seed_independent is False
    for c, m in class_budgets(y, 0.1).items():
        members = np.flatnonzero(y == c)
        A = X[members].astype(float)
        d2 = ((A[:, None] - A[None]) ** 2).sum(-1)
        nbr, nd2 = pixel_knn(A, GRAPH_K)
        sigma2 = max(np.median(nd2), 1.0)
        K = np.zeros_like(d2)
        for i in range(len(A)):  # kernel kept on the kNN list and the point itself
            K[i, nbr[i]] = np.exp(-d2[i, nbr[i]] / (2 * sigma2))
            K[i, i] = 1.0
        chosen = []
        for _ in range(m):
            base = K[:, chosen].max(1) if chosen else np.zeros(len(A))
            gain = [-1 if j in chosen else np.maximum(K[:, j] - base, 0).sum() for j in range(len(A))]
            chosen.append(int(np.argmax(gain)))
        assert np.array_equal(np.sort(members[chosen]), got[y[got] == c])
