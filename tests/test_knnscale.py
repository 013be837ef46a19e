"""``nms bench knnscale``: the LUT fit and the resumable row cache (no FPGA build runs here)."""

from __future__ import annotations

import json

from nms.bench import knnscale


def _ok(T, L, lut):
    return {"status": "ok", "wall_seconds": 1.0,
            "report": {"fmax_mhz": 100.0 - T, "build_seconds": 1.0, "params": {},
                       "utilisation": {"lut": {"used": lut, "available": 83640},
                                       "ff": {"used": 10 * T, "available": 83640},
                                       "dsp": {"used": T * L, "available": 156},
                                       "bram": {"used": T, "available": 208}}}}


def test_fit_recovers_a_line_and_reports_residuals():
    rows = [{"label": x, "T": T, **_ok(T, 8, 1000 + 500 * T)} for x, T in (("a", 4), ("b", 16),
                                                                             ("c", 32))]
    fit = knnscale._fit_lut(rows)
    assert fit["fitted"] and fit["a"] == 1000 and fit["b"] == 500
    assert fit["residuals"] == {"a": 0, "b": 0, "c": 0}
    rows[1]["report"]["utilisation"]["lut"]["used"] += 300
    assert knnscale._fit_lut(rows)["worst_relative_residual"] > 0
    assert not knnscale._fit_lut(rows[:1])["fitted"]


def test_run_builds_only_missing_rows_and_keeps_failures(tmp_path, monkeypatch):
    built = []

    def fake(label, T, L, P, root, limit_s):
        built.append(label)
        if label == "Y":
            return {"status": "timeout", "wall_seconds": 9.0, "error": "did not finish in 1 min"}
        return _ok(T, L, 2000 + 600 * T)

    monkeypatch.setattr(knnscale, "_build_row", fake)
    monkeypatch.setattr(knnscale, "ROWS", (("X", 4, 8, 4), ("Y", 16, 2, 4), ("Z", 16, 8, 4)))
    knnscale.run(tmp_path, False, rows=knnscale.ROWS[:2])
    assert built == ["X", "Y"]
    res = knnscale.run(tmp_path, False)
    assert built == ["X", "Y", "Z"]                      # X, Y came from the parts cache
    assert [r["label"] for r in res["rows"]] == ["X", "Y", "Z"] and res["missing"] == []
    assert [r["dsp_is_T_times_L"] for r in res["rows"]] == [True, None, True]
    md = (tmp_path / "knn_scale.md").read_text()
    assert "timeout: did not finish in 1 min" in md
    assert json.loads((tmp_path / "knn_scale_parts" / "Y.json").read_text())["status"] == "timeout"
