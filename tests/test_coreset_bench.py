"""nms bench coreset: the shared-embedding DE-SNE path equals the model's select, and the
final-table goal checks compute margins the way the report states."""

import json

import numpy as np
import pytest

from nms.bench import BENCHMARKS
from nms.bench import coreset as cb
from nms.sw.datasets import load_digits
from nms.verif.models import desne as dm


def test_registered():
    assert BENCHMARKS["coreset"] == "nms.bench.coreset"


def test_shared_embedding_path_equals_select():
    d = load_digits()
    keep = d.y_train < 3
    X, y = d.train_flat()[keep], d.y_train[keep]
    cache = {}
    for name in ("300", "nms", "v0"):
        cfg = dm.PRESETS[name]
        for ratio in (0.05, 0.2):
            got = cb.desne_shared(X, y, ratio, cfg, seed=4, cache=cache)["indices"]
            assert np.array_equal(got, dm.select(X, y, ratio, cfg, seed=4)["indices"])
    assert len(cache) == 3  # one embedding per chunk (3 classes), shared by 3 configs x 2 ratios
    pooled = dm.PRESETS["desne"].replace(pool="pool2")   # the 50-iteration default, pooled
    for ratio in (0.05, 0.2):
        got = cb.desne_shared(X, y, ratio, pooled, seed=4, cache=cache)["indices"]
        assert np.array_equal(got, dm.select(X, y, ratio, pooled, seed=4)["indices"])
    assert len(cache) == 6  # the pooled job has embeddings of its own


def test_final_rows_are_what_the_device_runs():
    """``desne`` = PRESETS["desne"] (CHOSEN_SCHEDULE) pooled by default_pool, as
    Driver.select / nms eval run it; ``desne-300`` = the previous default, unpooled."""
    from nms.sw.baselines import SELECTORS
    from nms.sw.dataflow import CHOSEN_SCHEDULE
    new = cb._desne_config("desne", 784)
    assert new == dm.PRESETS["desne"].replace(pool="pool4")
    assert {k: getattr(new, k) for k in CHOSEN_SCHEDULE} == CHOSEN_SCHEDULE
    assert cb._desne_config("desne", 64).pool == "none"
    old = cb._desne_config("desne-300", 784)
    assert (old.n_iter, old.exaggeration_iters, old.momentum_switch, old.pool) == (300, 100, 100,
                                                                                   "none")
    # same stage 4; the previous default keeps the C = 1024 it was measured with
    assert old.capacity == 1024 and dm.PRESETS["desne"].capacity == dm.DesneConfig().capacity
    assert old.replace(capacity=dm.DesneConfig().capacity,
                       **CHOSEN_SCHEDULE) == dm.PRESETS["desne"]
    assert set(cb.FINAL_METHODS) >= {"desne", "desne-300"} and "desne-300" in SELECTORS


def test_relabel_runs(tmp_path):
    (tmp_path / "coreset_parts").mkdir()
    f = tmp_path / "coreset_parts" / "toy_mlp_x.json"
    f.write_text(json.dumps({"dataset": {"name": "toy"}, "trainer": "mlp",
                             "runs": [{"method": "desne"}, {"method": "random"}]}))
    assert cb.relabel_runs(tmp_path, "toy", "mlp", "desne", "desne-300", log=lambda s: None) == 1
    assert [r["method"] for r in json.loads(f.read_text())["runs"]] == ["desne-300", "random"]
    with pytest.raises(ValueError, match="already has recorded runs"):
        cb.relabel_runs(tmp_path, "toy", "mlp", "random", "desne-300", log=lambda s: None)


def test_default_check_rule():
    runs = []
    for seed, (a, b) in enumerate([(0.80, 0.79), (0.82, 0.80)]):
        for m, acc in (("cover, 300 it, no pool", a), ("cover, 50 it, default_pool", b)):
            for q in cb.RATIOS:
                runs.append({"dataset": "toy", "method": m, "ratio": q, "seed": seed,
                             "val_accuracy": acc})
    cfgs = {"toy": {"cover, 300 it, no pool": "x", "cover, 50 it, default_pool": "y"}}
    res = cb._default_result(runs, cfgs, (0, 1))
    c = res["checks"][0]   # means 0.81 vs 0.795, larger std 0.01: 0.795 < 0.80 -> not kept
    assert c["tolerance"] == pytest.approx(0.01) and not c["ok"] and not res["candidate_kept"]
    assert "does not keep" in cb._default_markdown(res)
    configs = cb.default_check_configs(784)
    assert configs["cover, 50 it, default_pool"].pool == "pool4"
    assert configs["cover, 50 it, default_pool"].exaggeration_iters == 17
    assert cb.default_check_configs(64)["cover, 50 it, default_pool"].pool == "none"


def test_assemble_goal_checks(tmp_path):
    runs = []
    for seed in range(3):
        for m, acc in (("desne", 0.80), ("random", 0.78), ("herding", 0.81 + 0.01 * seed)):
            runs.append({"method": m, "ratio": 0.01, "seed": seed, "deterministic": m == "herding",
                         "coreset_size": 10, "select_seconds": 0.1, "selection_cached": False,
                         "train_seconds": 1.0, "val_accuracy": acc, "test_accuracy": acc})
    (tmp_path / "coreset_parts").mkdir()
    (tmp_path / "coreset_parts" / "toy_mlp.json").write_text(json.dumps(
        {"dataset": {"name": "toy", "n_pool": 100, "n_val": 20, "n_test": 30},
         "trainer": "mlp", "runs": runs}))
    res = cb.assemble(tmp_path)
    g = next(g for g in res["tables"][0]["goals"] if g["split"] == "test")
    assert g["best_peer"] == "herding" and not g["met"]
    assert g["margin"] == pytest.approx(0.80 - 0.82)
    assert g["margin_vs_random"] == pytest.approx(0.02)
    assert g["one_std"] == pytest.approx(np.std([0.81, 0.82, 0.83]))
    md = (tmp_path / "coreset.md").read_text()
    assert "| desne | 80.00 ± 0.00 (n=3) |" in md and "herding" in md
    # a second part file holding one of the same runs again counts it once; a disagreeing copy
    # is an error, not a silent extra seed
    part2 = tmp_path / "coreset_parts" / "toy_mlp_s2.json"
    part2.write_text(json.dumps({"dataset": {"name": "toy"}, "trainer": "mlp",
                                 "runs": [runs[-1]]}))
    again = cb.assemble(tmp_path)
    herding = next(r for r in again["tables"][0]["rows"] if r["method"] == "herding")
    assert herding["seeds"] == [0, 1, 2]
    part2.write_text(json.dumps({"dataset": {"name": "toy"}, "trainer": "mlp",
                                 "runs": [{**runs[-1], "val_accuracy": 0.5}]}))
    with pytest.raises(ValueError, match="disagree"):
        cb.assemble(tmp_path)


def test_final_redo_reruns_only_the_named_methods(tmp_path):
    fake = {"ratio": 0.05, "seed": 0, "deterministic": False, "coreset_size": 57,
            "select_seconds": 0.0, "selection_cached": False, "train_seconds": 0.0,
            "val_accuracy": 0.01, "test_accuracy": 0.01}
    (tmp_path / "coreset_parts").mkdir()
    part = tmp_path / "coreset_parts" / "digits_mlp.json"
    part.write_text(json.dumps({"dataset": {"name": "digits"}, "trainer": "mlp",
                                "runs": [{**fake, "method": "random"}, {**fake, "method": "herding"}]}))
    cb.run_final_piece(tmp_path, "digits", "mlp", methods=("random",), seeds=(0,), ratios=(0.05,),
                       cache_dir=tmp_path / "cache", redo=True, log=lambda s: None)
    runs = {r["method"]: r for r in json.loads(part.read_text())["runs"]}
    assert runs["herding"]["val_accuracy"] == 0.01          # kept as recorded
    assert runs["random"]["val_accuracy"] > 0.5              # re-measured
