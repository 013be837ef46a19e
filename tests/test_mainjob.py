"""The multi-seed main-job benchmark: its schedules come from the model's one definition, and
its summary is computed from the per-seed rows (one real seed of the job, digits)."""

from pathlib import Path

import pytest

from nms.bench import BENCHMARKS, mainjob
from nms.verif.models import desne as dm


def test_schedules_are_the_models():
    s = list(mainjob.schedules().values())
    assert s == [dm.DEFAULT_SCHEDULE, dm.SCHEDULE_50]
    assert BENCHMARKS["mainjob"] == "nms.bench.mainjob"


def test_one_seed_report(tmp_path: Path, monkeypatch):
    monkeypatch.setattr(mainjob, "SEEDS", (3,))
    default = dict(list(mainjob.schedules().items())[:1])   # one schedule keeps the test short
    monkeypatch.setattr(mainjob, "schedules", lambda: default)
    r = mainjob.run(tmp_path, quick=True)
    assert list(r["schedules"]) == list(default)
    for s in r["schedules"].values():
        (row,) = s["rows"]
        assert row["seed"] == 3 and 97 <= row["n_selected"] <= 119   # 10 % of 1 078, per class
        for k, st in s["summary"].items():
            assert st["n"] == 1 and st["mean"] == pytest.approx(100 * row["accuracy"][k])
        assert s["sks_minus_sgd_mean"] == pytest.approx(
            100 * (row["accuracy"]["sks_desne"] - row["accuracy"]["sgd_desne"]))
        assert row["write_reduction_max"] >= 100   # SKS's write budget holds on any seed
    md = (tmp_path / "mainjob.md").read_text()
    assert "| 20 iterations (default) | 3 |" in md
