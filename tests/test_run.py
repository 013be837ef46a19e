"""``nms run``: the main job end to end on the embedded digits, and its argument errors."""

import json

import numpy as np
import pytest

from nms.sw.cli import main as cli
from nms.sw.datasets import load_dataset
from nms.sw.run import run_job, shift_domain
from nms.verif.models import desne

FAST = desne.DesneConfig(n_iter=40, exaggeration_iters=15, momentum_switch=15)


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def test_run_job_report(digits):
    rep = run_job(digits, ratio=0.1, capacity=256, config=FAST, epochs=3, skip_full=True,
                  progress=False)
    sel, d = rep["selection"], rep["dataset"]
    # the DDR data is the shifted 80 % of the training split; 20 % is the validation split
    assert (d["n_train"], d["n_val"], d["n_test"], d["shift"]) == (1078, 269, 450, "BG+WN")
    ddr = shift_domain(digits.X_train, max_value=16, shift="BG+WN", seed=0)
    perm = np.random.default_rng([0, 24]).permutation(1347)
    ddr_idx = np.sort(perm[269:])
    # the driver's selection is the bit-exact model's selection on the new-domain data
    ref = desne.select(ddr[ddr_idx].reshape(1078, -1), digits.y_train[ddr_idx], 0.1,
                       FAST.replace(capacity=256), seed=0)
    assert sel["indices"] == ref["indices"].tolist()
    assert sel["n_selected"] == len(sel["indices"]) == 108
    # the default device (chunk buffer): digits keep their default pooling (none), chunks fit
    assert sel["pool"] == "none" and sel["chunk_capacity"] == 224     # 256 * 7 words / 8
    assert sel["hardware"]["buffer_dim"] == 49 and sel["hardware"]["cand_tile"] == 4
    assert set(rep["runs"]) == {"sks_desne", "sks_random", "sgd_desne"}
    assert set(rep["accuracy"]) == {"none", "sks_desne", "sks_random", "sgd_desne"}
    for r in rep["runs"].values():
        assert 0.0 <= r["test_accuracy"] <= 1.0 and r["n_train"] == 108
    # the shift hurts the deployed model; adapting on the coreset recovers part of it
    assert rep["pretrain"]["test_accuracy_source"] >= 0.8
    assert rep["accuracy"]["none"] <= rep["pretrain"]["test_accuracy_source"] - 0.2
    assert rep["accuracy"]["sgd_desne"] >= rep["accuracy"]["none"] + 0.05
    # SKS writes each weight far less often than per-sample SGD on the same coreset, by both
    # counts; the changed-cell count never exceeds the paper's count
    assert rep["writes"]["sks_desne"]["max"] * 50 <= rep["writes"]["sgd_desne"]["max"]
    for k in rep["runs"]:
        assert rep["writes_changed"][k]["total"] <= rep["writes"][k]["total"]
    assert rep["write_reduction"]["max_changed_cells"] > 1
    t = rep["traffic"]
    assert t["nms"]["near_bytes"] == sel["counters"]["near_bytes_read"] > 0
    assert t["full"]["pcb_bytes"] == 3 * 1078 * 64
    assert t["nms"]["pcb_bytes"] == 3 * 108 * 64 + 4 * 108
    # the break-even epoch count is where NMS's link energy drops to full-data training's
    import math

    from nms.sw.energy import compare_training

    def saving(epochs):
        return compare_training(n_samples=1078, bytes_per_sample=64, epochs=epochs, n_selected=108,
                                near_bytes=t["nms"]["near_bytes"])["saving_ratio"]

    # the model backend's counters: bytes and items, no cycles (it says so)
    dev = sel["device"]
    assert dev["backend"] == "model" and not dev["cycle_accurate"] and "cycles" not in dev
    assert "cycles" in dev["missing"] and "embed_cycles" in dev["missing"]
    assert dev["near_bytes_read"] == sel["counters"]["near_bytes_read"]
    assert dev["ddr_bytes_read"] >= dev["near_bytes_read"]
    assert dev["ddr_bytes_written"] == 4 * 108 and dev["perf"]["pair_items"] > 0
    assert "embed_cycles" not in dev["perf"]
    be = rep["breakeven_epochs"]
    assert be > 0
    assert saving(math.ceil(be) + 1) >= 1.0
    if be > 2:
        assert saving(math.floor(be) - 1) < 1.0


def test_cli_writes_reports(tmp_path, capsys):
    out = tmp_path / "run"
    assert cli(["run", "--no-progress", "--epochs", "1", "--iterations", "30", "--skip-full",
                "--ratio", "0.05", "--out", str(out)]) == 0
    rep = json.loads((out / "report.json").read_text())
    assert rep["selection"]["ratio"] == 0.05 and rep["plots"] == ["embedding.png", "training.png"]
    for f in ("report.md", "embedding.png", "training.png"):
        assert (out / f).stat().st_size > 500
    md = (out / "report.md").read_text()
    assert "fewer worst-case writes" in md
    assert "## The selection on the `model` backend" in md and "No cycle counts" in md
    assert "| DDR (AXI) bytes read |" in md and "| `pair_items` |" in md


@pytest.mark.parametrize("args, message", [
    (["--ratio", "1.5"], "ratio"),
    (["--ratio", "0"], "ratio"),
    (["--epochs", "0"], "must be >= 1"),
    (["--backend", "gpu"], "invalid choice"),
    (["--shift", "XX"], "invalid choice"),
    (["--model", "resnet"], "invalid choice"),
    (["--clock-mhz", "0"], "clock 0 MHz must be > 0"),
    (["--clock-mhz", "fast"], "clock 'fast' is not a number of MHz"),
    (["--pool", "pool3"], "pool 'pool3' is not one of none, pool2, pool4"),
])
def test_cli_rejects_bad_options(tmp_path, capsys, args, message):
    with pytest.raises(SystemExit) as exc:  # argparse: usage error, exit status 2
        cli(["run", "--no-progress", "--out", str(tmp_path / "x"), *args])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_cli_reports_missing_dataset(tmp_path, capsys):
    assert cli(["run", "--no-progress", "--dataset", "no/such/dir", "--out", str(tmp_path / "x")]) == 2
    assert "no/such/dir" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
