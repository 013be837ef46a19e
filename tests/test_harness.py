"""The scoring classifier and ``nms eval`` end to end on digits (tiny configuration)."""

import json

import numpy as np
import pytest

from nms.sw import cli
from nms.sw.classifier import (CNNClassifier, CNNConfig, MLPClassifier, MLPConfig,
                               train_and_score)
from nms.sw.datasets import load_digits
from nms.sw.harness import prepare, score_coreset, validation_split


@pytest.fixture(scope="module")
def digits():
    return load_digits()


def test_classifier_accuracy_floor_and_determinism(digits):
    X, y = digits.train_flat(), digits.y_train
    a = MLPClassifier(MLPConfig(steps=300), seed=1).fit(X, y, max_value=16)
    b = MLPClassifier(MLPConfig(steps=300), seed=1).fit(X, y, max_value=16)
    assert a.score(digits.test_flat(), digits.y_test) > 0.93
    assert np.array_equal(a.decision_function(X[:50]), b.decision_function(X[:50]))
    c = MLPClassifier(MLPConfig(steps=300), seed=2).fit(X, y, max_value=16)
    assert not np.array_equal(a.decision_function(X[:50]), c.decision_function(X[:50]))


def test_classifier_fixed_step_budget_and_label_set(digits):
    # 2 samples per class: the same number of steps still trains (sees each sample many times)
    X, y = digits.train_flat(), digits.y_train
    few = np.concatenate([np.flatnonzero(y == c)[:2] for c in range(10)])
    acc = train_and_score(X[few], y[few], digits.test_flat(), digits.y_test, max_value=16,
                          config=MLPConfig(steps=200), seed=0)
    assert 0.4 < acc < 0.98
    # a coreset missing classes still predicts over the full label set
    m = MLPClassifier(MLPConfig(steps=5)).fit(X[y < 5], y[y < 5], max_value=16, classes=range(10))
    assert m.decision_function(X[:3]).shape == (3, 10)
    with pytest.raises(ValueError, match="not listed"):
        MLPClassifier().fit(X, y, max_value=16, classes=[0, 1])


@pytest.mark.parametrize("kw,words", [(dict(steps=0), "steps"), (dict(hidden=True), "hidden"),
                                      (dict(learning_rate=float("nan")), "learning_rate")])
def test_classifier_config_errors(kw, words):
    with pytest.raises(ValueError, match=words):
        MLPConfig(**kw)


def test_nms_eval_on_digits(tmp_path, capsys):
    out = tmp_path / "eval"
    rc = cli.main(["eval", "--methods", "desne", "random", "kcenter", "--ratios", "0.1",
                   "--seeds", "0", "1", "--steps", "150", "--plot-classes", "2",
                   "--out", str(out), "--no-progress"])
    assert rc == 0
    res = json.loads((out / "eval_digits.json").read_text())
    assert res["dataset"]["n_train"] == 1347 and res["config"]["seeds"] == [0, 1]
    pool = res["dataset"]["n_pool"]
    assert pool + res["dataset"]["n_val"] == 1347 and res["dataset"]["n_val"] == 201
    runs = res["runs"]
    assert len(runs) == 3 * 1 * 2 + 2  # methods x ratios x seeds + full reference per seed
    for r in runs:
        assert r["coreset_size"] == (pool if r["method"] == "full" else 116)
        assert r["classes_in_coreset"] == 10 and r["select_seconds"] >= 0
    kc = [r for r in runs if r["method"] == "kcenter"]
    assert [r["selection_reused"] for r in kc] == [False, True]
    assert res["config"]["deterministic_methods"] == ["kcenter"]
    summary = {(s["method"], s["ratio"]): s for s in res["summary"]}
    # stable floors with fixed seeds: 10 % coresets of digits, 150 steps
    for m in ("desne", "random", "kcenter"):
        assert summary[(m, 0.1)]["test_mean"] > 0.75 and summary[(m, 0.1)]["val_mean"] > 0.75
    assert summary[("full", 1.0)]["test_mean"] > 0.9
    md = (out / "eval_digits.md").read_text()
    for m in ("desne", "random", "kcenter"):
        assert md.count(f"| {m} | ") == 3  # test table, validation table, sizes table
    assert "| method | 10 % |" in md and "Validation split" in md
    emb = res["embedding"]
    assert [c["label"] for c in emb["classes"]] == [0, 1]
    assert all(sum(c["selected"]) == c["n_selected"] > 0 for c in emb["classes"])
    png = (out / "eval_digits_embedding.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    assert not (out / "eval_digits.partial.json").exists()  # removed once complete
    assert "eval_digits.md" in capsys.readouterr().out


@pytest.mark.parametrize("argv,words", [
    (["--dataset", "no/such/dir"], "not found"),
    (["--methods", "bogus"], "unknown method"),
    (["--ratios", "0.1", "0.1"], "duplicates"),
    (["--steps", "0"], "--steps"),
])
def test_nms_eval_user_errors(tmp_path, capsys, argv, words):
    rc = cli.main(["eval", "--out", str(tmp_path), "--no-progress", *argv])
    assert rc == 2
    assert words in capsys.readouterr().err


def test_nms_eval_needs_a_test_split(tmp_path, capsys):
    X = np.random.default_rng(0).integers(0, 255, (20, 4))
    np.savez(tmp_path / "notest.npz", X_train=X, y_train=np.arange(20) % 2)
    rc = cli.main(["eval", "--dataset", str(tmp_path / "notest.npz"), "--out", str(tmp_path)])
    assert rc == 2 and "no test split" in capsys.readouterr().err


def test_nms_eval_rejects_bad_ratio(capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["eval", "--ratios", "1.5"])
    assert info.value.code == 2
    assert "outside (0, 1]" in capsys.readouterr().err


def _naive_conv3_same(x, K):
    """Direct 3×3 'same' convolution (explicit sums, zero padding) of x (n, H, W, C) with
    K (9·C, C_out) in (row offset, column offset, channel) order — independent of im2col."""
    n, h, w, c = x.shape
    Kr = K.reshape(3, 3, c, -1)
    xp = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    out = np.zeros((n, h, w, K.shape[1]))
    for a in range(3):
        for b in range(3):
            out += np.einsum("nhwc,co->nhwo", xp[:, a:a + h, b:b + w, :], Kr[a, b])
    return out


def test_cnn_building_blocks_equal_direct_definitions():
    from nms.sw.classifier import _im2col3, _pool2
    rng = np.random.default_rng(3)
    for c in (1, 3, 8):
        x = rng.standard_normal((2, 7, 6, c))
        K = rng.standard_normal((9 * c, 4))
        assert np.allclose(_im2col3(x) @ K, _naive_conv3_same(x, K).reshape(-1, 4))
    x = rng.standard_normal((2, 7, 6, 3))
    out, mask = _pool2(x)
    ref = np.array([[[[x[i, 2 * r:2 * r + 2, 2 * q:2 * q + 2, ch].max() for ch in range(3)]
                      for q in range(3)] for r in range(3)] for i in range(2)])
    assert np.array_equal(out, ref)
    assert mask.sum() == out.size  # continuous random values: one maximum per window


def test_cnn_gradient_matches_finite_differences():
    rng = np.random.default_rng(4)
    m = CNNClassifier(CNNConfig(channels1=3, channels2=4))
    A = rng.random((5, 8, 8, 1))
    t = rng.integers(0, 3, 5)
    wn = np.full(5, 0.2)
    params = [p.astype(np.float64) for p in m._init(rng, A, 3)]
    params = [p + 0.1 * rng.standard_normal(p.shape) for p in params]  # nonzero biases too

    def loss(ps):
        z = m._forward(ps, A)[0]
        z = z - z.max(1, keepdims=True)
        return float(np.sum(wn * (np.log(np.exp(z).sum(1)) - z[np.arange(5), t])))

    grads = m._grads(params, A, t, wn)
    for j in range(len(params)):
        d = [np.zeros_like(p) for p in params]
        d[j] = rng.standard_normal(params[j].shape)
        eps = 1e-5
        num = (loss([p + eps * e for p, e in zip(params, d)])
               - loss([p - eps * e for p, e in zip(params, d)])) / (2 * eps)
        assert np.isclose(num, np.sum(grads[j] * d[j]), rtol=1e-4, atol=1e-6), j


def test_cnn_trains_on_digits_above_floor(digits):
    m = CNNClassifier(CNNConfig(steps=300), seed=0).fit(digits.X_train, digits.y_train,
                                                        max_value=16)
    assert m.score(digits.X_test, digits.y_test) > 0.9
