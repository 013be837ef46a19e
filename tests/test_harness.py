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
