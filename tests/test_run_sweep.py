"""``nms run --sweep``: the validation sweep's seeds, scoring and write budget (tiny grid)."""

import numpy as np
import pytest

from nms.sw.datasets import load_dataset
from nms.sw.nn import QuantConfig, build_model
from nms.sw.run import LR_GRID, TRAIN_OPTS, select_learning_rates

GRID = {"sks": [{"lr": 0.01, "batch_conv": 1, "batch_fc": 1},
                {"lr": 0.01, "batch_conv": 10, "batch_fc": 10}],
        "sgd": [{"lr": 0.1}]}


@pytest.fixture(scope="module")
def setup():
    ds = load_dataset("digits")
    q = QuantConfig()
    X = q.quantizers()["in"](ds.X_train[:240].astype(np.float64) / ds.max_value)[:, None]
    y = ds.y_train[:240]
    net = build_model("lrt-cnn", input_shape=(8, 8), n_classes=10, quant=q,
                      rng=np.random.default_rng(1), channels=(8,), hidden=(32,))
    return net, X[:200], y[:200], X[200:], y[200:]


def test_sweep_write_budget_and_seeds(setup):
    net, X, y, Xv, yv = setup
    W0 = [l.W.copy() for l in net.weight_layers]
    out = select_learning_rates(net, X, y, Xv, yv, epochs=1, seed=0, rank=2, ratio=0.1,
                                grid=GRID, n_seeds=2, write_ratio=100)
    assert list(out) == ["sks", "sgd"]                     # the grid's order, SGD swept first
    sgd, sks = out["sgd"], out["sks"]
    assert sgd["chosen"] == {"lr": 0.1} and sgd["write_budget"] is None
    assert sks["write_budget"] == pytest.approx(sgd["chosen_writes_max"] / 100)
    b1, b10 = sks["sweep"]
    # 20 samples x 1 epoch: B = 1 writes its busiest cell ~20 times, B = 10 at most twice, and
    # per-sample SGD's conv count (one per pixel) is in the hundreds
    assert b1["writes_max"] > sks["write_budget"] >= b10["writes_max"]
    assert (b1["eligible"], b10["eligible"]) == (False, True)
    assert sks["chosen"] == {"lr": 0.01, "batch_conv": 10, "batch_fc": 10} and sks["within_budget"]
    for row in sks["sweep"] + sgd["sweep"]:
        assert len(row["val_accuracies"]) == 2
        assert row["val_accuracy"] == pytest.approx(np.mean(row["val_accuracies"]))
    # the deployed network is never trained in place
    assert all(np.array_equal(a, l.W) for a, l in zip(W0, net.weight_layers))
    # no budget: every candidate is eligible
    free = select_learning_rates(net, X, y, Xv, yv, epochs=1, seed=0, rank=2, ratio=0.1,
                                 grid=GRID, n_seeds=1, write_ratio=0)
    assert all(r["eligible"] for r in free["sks"]["sweep"]) and free["sks"]["write_budget"] is None


def test_sweep_rejects_bad_arguments(setup):
    net, X, y, Xv, yv = setup
    with pytest.raises(ValueError, match="n_seeds"):
        select_learning_rates(net, X, y, Xv, yv, epochs=1, seed=0, rank=2, ratio=0.1,
                              grid=GRID, n_seeds=0)
    with pytest.raises(ValueError, match="unknown method"):
        select_learning_rates(net, X, y, Xv, yv, epochs=1, seed=0, rank=2, ratio=0.1,
                              grid={"adam": [{"lr": 1.0}]})


def test_default_options_are_grid_candidates():
    # nms run without --sweep uses options the sweep can choose
    for kind, opts in TRAIN_OPTS.items():
        keys = LR_GRID[kind][0].keys()
        assert {k: opts[k] for k in keys} in LR_GRID[kind]
