"""The search's DE-SNE variants reuse the model's stages: the default variant is the model, the
coverage variants equal the model's new exemplar stage, and the cross-class scores are exact."""

import numpy as np
import pytest

from nms.sw import desne_variants as dv
from nms.sw.datasets import load_digits
from nms.verif.models import desne as dm


@pytest.fixture(scope="module")
def small():
    d = load_digits()
    keep = d.y_train < 3
    return d.train_flat()[keep], d.y_train[keep]


def test_variants_equal_the_model(small):
    X, y = small
    cache = {}
    pairs = [(dv.Variant(), dm.PRESETS["v0"]), (dv.Variant(allocation="proportional"), dm.PRESETS["nms"]),
             (dv.Variant(exemplar="cover", allocation="proportional", first="mean"), dm.PRESETS["300"]),
             (dv.Variant(selector="cover"), dm.DesneConfig(exemplar="cover-nogrid", cover_start="gain",
                                                           **dm.SCHEDULE_300)),
             (dv.Variant(exemplar="cover", allocation="proportional", first="mean", pool="pool2"),
              dm.PRESETS["300"].replace(pool="pool2"))]
    for v, cfg in pairs:
        got = dv.variant_select(X, y, 0.1, v, seed=1, cache=cache)["indices"]
        assert np.array_equal(got, dm.select(X, y, 0.1, cfg, seed=1)["indices"]), v


@pytest.mark.parametrize("v", [dv.Variant(exemplar="mass", weights="sqrt"),
                               dv.Variant(hard="ccs"), dv.Variant(selector="cover", weights="cell"),
                               dv.Variant(exemplar="indeg", hard="demote", allocation="auto"),
                               dv.Variant(exemplar="cover", allocation="proportional", first="mean",
                                          floor=0.25, cover_weight="indeg"),
                               dv.Variant(exemplar="cover", allocation="proportional", mix=0.5),
                               dv.Variant(exemplar="cover", allocation="proportional", mix=0.0),
                               dv.Variant(exemplar="cover", allocation="proportional", first="mean",
                                          second=3)])
def test_variant_contract(small, v):
    X, y = small
    res = dv.variant_select(X, y, 0.05, v, seed=0)
    idx = res["indices"]
    assert np.all(np.diff(idx) > 0)
    counts = dict(zip(*np.unique(y[idx], return_counts=True)))
    assert counts == {c: m for c, m in dm.class_budgets(y, 0.05).items()}
    if v.weights != "none":
        assert res["weights"].shape == idx.shape and np.all(res["weights"] > 0)
        assert res["weights"].mean() == pytest.approx(1.0, rel=0.2)


def test_hard_scores_brute_force():
    rng = np.random.default_rng(0)
    Xc = rng.integers(0, 256, (30, 5))
    Xr = rng.integers(0, 256, (25, 5))
    nbr, dist = dm.knn(Xc, 6)
    amb, cnt = dv.hard_scores(Xc, dist, Xr, 4)
    d_ref = ((Xc[:, None] - Xr[None]) ** 2).sum(-1)
    for i in range(30):
        merged = sorted([(d, 0) for d in dist[i, :4]] + [(d, 1) for d in d_ref[i]])[:4]
        assert cnt[i] == sum(t for _, t in merged)
        assert amb[i] == int(d_ref[i].min() < dist[i, 3])


def test_reference_is_bounded_and_other_class():
    y = np.repeat(np.arange(4), 500)
    ref = dv.cross_class_reference(None, y, None, 2, 3, 256)
    assert ref.size <= 256 and np.all(y[ref] != 2)


def test_variant_errors():
    for kw in (dict(exemplar="x"), dict(allocation="x"), dict(selector="x"), dict(hard="x"),
               dict(weights="x"), dict(perplexities=()), dict(first="x"), dict(floor=1.0),
               dict(exemplar="cover", cover_weight="x"), dict(exemplar="cover", mix=1.5),
               dict(second=1), dict(second=True), dict(floor=0.1), dict(pool="pool3")):
        with pytest.raises(ValueError, match="Variant"):
            dv.Variant(**kw)


def test_third_round_rules(small):
    """floor: the least typical members are never picked when a cell has others; mix: the
    coverage share is the default's first picks, the rest fills the same cell quotas; a second
    pass with one chunk per class keeps the first pick nearest the class mean."""
    X, y = small
    Xc = X[y == 0]
    nbr, dist = dm.knn(Xc, 16)
    P = dm.affinities(dist, 10.0)["P"]
    Y = dm.embed(nbr, P, dm.PRESETS["desne"], 3)
    state = {"nbr": nbr, "dist": dist, "X": Xc, "seed": 3, "per": {10.0: {"P": P, "Y": Y}}}
    base = dict(exemplar="cover", allocation="proportional", first="mean")
    b = 12
    sel0, _, _ = dv.select_on_state(state, b, dv.Variant(**base))
    assert np.array_equal(sel0, dm.run_chunk(Xc, b, dm.PRESETS["desne"], 3)["selected"])
    dsum = dist.sum(1)
    worst = np.argsort(-dsum, kind="stable")[:int(0.3 * len(dsum))]
    selF, _, _ = dv.select_on_state(state, b, dv.Variant(**base, floor=0.3))
    g, cell, counts, _ = dv._grid(Y, b)
    quota = dm.allocate(counts, b, "proportional")
    for c in np.unique(cell[selF]):   # a floored member only where its cell has no other choice
        inside = np.flatnonzero(cell == c)
        if np.isin(selF[cell[selF] == c], worst).any():
            assert (~np.isin(inside, worst)).sum() < quota[c]
    selM, _, _ = dv.select_on_state(state, b, dv.Variant(**base, mix=0.5))
    assert np.array_equal(np.bincount(cell[selM], minlength=quota.size), quota)
    picks, _ = dv.cover_greedy(nbr, P, 6, cell=cell, quota=quota, first=dm.mean_nearest(Xc))
    assert np.isin(picks, selM).all()
    one = dv.variant_select(X, y, 0.01, dv.Variant(**base, second=4), seed=0)["indices"]
    ref = dm.select(X, y, 0.01, dm.PRESETS["300"], seed=0)["indices"]
    assert np.array_equal(one, ref)   # one exemplar per class: the member nearest the class mean
