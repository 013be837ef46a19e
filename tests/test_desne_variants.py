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
             (dv.Variant(exemplar="cover", allocation="proportional", first="mean"), dm.PRESETS["desne"]),
             (dv.Variant(selector="cover"), dm.DesneConfig(exemplar="cover-nogrid", cover_start="gain"))]
    for v, cfg in pairs:
        got = dv.variant_select(X, y, 0.1, v, seed=1, cache=cache)["indices"]
        assert np.array_equal(got, dm.select(X, y, 0.1, cfg, seed=1)["indices"]), v


@pytest.mark.parametrize("v", [dv.Variant(exemplar="mass", weights="sqrt"),
                               dv.Variant(hard="ccs"), dv.Variant(selector="cover", weights="cell"),
                               dv.Variant(exemplar="indeg", hard="demote", allocation="auto")])
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
               dict(weights="x"), dict(perplexities=()), dict(first="x")):
        with pytest.raises(ValueError, match="Variant"):
            dv.Variant(**kw)
