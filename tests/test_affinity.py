"""AffinityUnit: parameter validation, sub-units, and the cocotb scoreboard testbench under
Verilator (two builds shared by all cocotb tests) bit-exact against ``nms.verif.models.desne``."""

import functools
import json

import pytest

from nms.rtl.affinity import AffinityUnit
from nms.verif.sim.build import build_dir_root, run_cocotb

# ---------------------------------------------------------------------------------------------
# parameter validation


@pytest.mark.parametrize("kwargs, exc, message", [
    ({"k": 0}, ValueError, "k=0 is out of range"),
    ({"k": 65}, ValueError, "k=65 is out of range"),
    ({"k": 16.0}, TypeError, "k must be an int"),
    ({"dist_width": 0}, ValueError, "dist_width=0 is out of range"),
    ({"dist_width": 41}, ValueError, "dist_width=41 is out of range"),
    ({"index_width": 33}, ValueError, "index_width=33 is out of range"),
    ({"index_width": True}, TypeError, "index_width must be an int"),
    ({"lanes": 0}, ValueError, "lanes=0 is out of range"),
    ({"k": 4, "lanes": 5}, ValueError, "lanes=5 is out of range: 1 to k=4"),
    ({"lanes": "2"}, TypeError, "lanes must be an int"),
])
def test_unit_rejects_bad_parameters(kwargs, exc, message):
    with pytest.raises(exc, match=message):
        AffinityUnit(**kwargs)


def test_unit_parameters_are_keyword_only():
    with pytest.raises(TypeError):
        AffinityUnit(16, 26)


def test_derived_widths_cover_the_worst_case():
    from nms.rtl import fixedpoint as fp

    u = AffinityUnit(k=64, dist_width=40, lanes=8)
    assert 64 * 65536 < 2 ** u.sum_width
    assert 64 * 65536 * fp.A_MAX < 2 ** u.tsum_width
    assert (fp.A_MAX << 8) < 2 ** u.hq_width
    assert ((1 << 40) - 1) * max(fp.BETA_MANT) < 2 ** u.prod_width
    # the formula: robust, k=16, one lane
    one = AffinityUnit(k=16)
    assert one.derived["cycles_per_row_robust_full"] == one.cycles_per_row(16)
    assert one.cycles_per_row(16) == 16 + 28 * (16 + 20) + 16 * 17 + 16


# ---------------------------------------------------------------------------------------------
# cocotb + Verilator: two builds, every cocotb test shares them

BUILDS = {
    # the default kNN row length with 4 exp lanes (full groups)
    "affinity_k16_l4": {"k": 16, "dist_width": 26, "index_width": 16, "lanes": 4},
    # odd sizes: 3 lanes over k = 7 (partial last group, non-power-of-two banks), narrow index
    "affinity_k7_l3": {"k": 7, "dist_width": 26, "index_width": 8, "lanes": 3},
}


@functools.lru_cache(maxsize=None)
def _verilog(name: str) -> str:
    from amaranth.back import verilog

    return verilog.convert(AffinityUnit(**BUILDS[name]), name="top", emit_src=False)


def _run(name, testcase, **params):
    run_cocotb(name, _verilog(name), "nms.verif.tb.affinity",
               {"unit": BUILDS[name], "seed": 7, **params}, testcase=testcase)


@pytest.mark.parametrize("name", list(BUILDS))
def test_scoreboard_random_sweep_digits_edges(name):
    """Random rows, the seeded sweep, real digits kNN rows and edge cases, under random idle
    cycles and back-pressure; every output field compared with the bit-exact model."""
    from nms.verif.tb.affinity import digits_knn_rows

    digits = digits_knn_rows(BUILDS[name]["k"], seed=3)
    _run(name, ["random_rows", "sweep", "digits_rows", "edge_rows"], digits=digits)


@pytest.mark.parametrize("name", list(BUILDS))
def test_no_stall_cycles_match_formula(name):
    report = build_dir_root() / name / "cycles.json"
    _run(name, "no_stall_cycles", report=str(report))
    data = json.loads(report.read_text())
    k = BUILDS[name]["k"]
    unit = AffinityUnit(**BUILDS[name])
    assert int(data["cycles_per_row"]["robust"][str(k)]) == unit.cycles_per_row(k)


# ---------------------------------------------------------------------------------------------
# nms generate


def test_generate_affinity_block_lints(tmp_path):
    from nms.gen.generate import generate
    from nms.gen.lint import lint_verilog

    text, meta = generate("affinity", {"k": "8", "lanes": "2"})
    assert meta["parameters"]["k"] == 8 and meta["derived"]["groups"] == 4
    names = {p["name"] for p in meta["ports"]}
    assert {"row__payload", "result__payload", "target", "mode"} <= names
    vfile = tmp_path / "affinity.v"
    vfile.write_text(text)
    lint_verilog(vfile, "affinity")  # strict: -Wall minus the documented backend waivers
