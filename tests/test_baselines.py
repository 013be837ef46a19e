"""Selector invariants (every registered selector, DE-SNE included) and baseline semantics."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nms.sw.baselines import SELECTORS, check_inputs
from nms.sw.datasets import load_digits
from nms.verif.models.budget import class_budgets

FAST = [m for m in SELECTORS if m != "desne"]


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


@pytest.mark.parametrize("ratio", [0.05, 0.3, 1.0])
def test_desne_invariants(ratio):
    X, y = blobs(n_per_class=(30, 41, 12), d=16, seed=1)
    a = SELECTORS["desne"](X, y, ratio, seed=2)
    check_result(a, y, ratio)
    assert np.array_equal(a["indices"], SELECTORS["desne"](X, y, ratio, seed=2)["indices"])


def test_desne_on_digits_subset(digits):
    X, y = digits
    keep = np.flatnonzero(y < 3)
    res = SELECTORS["desne"](X[keep], y[keep], 0.1, seed=0)
    check_result(res, y[keep], 0.1)


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
