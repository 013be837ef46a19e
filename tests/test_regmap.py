"""The one declaration of the job interface and everything derived from it: addresses, packing,
ranges and causes, the datapath's configuration layout, the embedding's counter width, the C
header (compiled and run), the Python constants, and the committed register table."""

import shutil
import subprocess
from pathlib import Path

import pytest

from nms.rtl import fixedpoint as fp
from nms.rtl import regmap
from nms.sw.cli import main as cli

ROOT = Path(__file__).resolve().parents[1]


def test_addresses_and_fields_are_derived_and_consistent():
    addrs = list(regmap.ADDR.values())
    assert addrs == list(range(0, 4 * len(regmap.REGISTERS), 4))
    for r in regmap.REGISTERS:
        spans = sorted((f.lsb, f.lsb + f.width) for f in r.fields)
        assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:])) and spans[-1][1] <= 32
    opt = regmap.REGMAP["OPT"]
    word = opt.pack(learning_rate=32, exaggeration_shift=2, allocation=1, search=0)
    assert word == 32 | 2 << 12 | 1 << 15
    assert opt.unpack(word) == {"learning_rate": 32, "exaggeration_shift": 2, "allocation": 1,
                                "search": 0, "exemplar": 0, "cover_start": 0, "pool": 0, "img_w": 0}
    assert opt.pack(exemplar=1, cover_start=1) == 1 << 17 | 1 << 18
    with pytest.raises(ValueError, match="does not fit"):
        opt.pack(learning_rate=5000)
    with pytest.raises(ValueError, match="has no field 'shift'"):
        opt.pack(shift=1)
    assert regmap.REGMAP["STATUS"].pack(error=1, cause=0x15) == 0x1504


def test_access_modes_and_bad_declarations_are_named():
    assert regmap.Register("IRQ_STATUS", "w1c", "interrupt status", (regmap.Field("done", 1),),
                           role="status").access == "w1c"
    with pytest.raises(ValueError, match="access must be one of"):
        regmap.Register("X", "wo", "x")
    with pytest.raises(ValueError, match="fields exceed 32 bits"):
        regmap.Register("X", "rw", "x", (regmap.Field("a", 20), regmap.Field("b", 13)))
    with pytest.raises(ValueError, match="overlaps"):
        regmap.Register("X", "rw", "x", (regmap.Field("a", 8), regmap.Field("b", 4, lsb=4)))


def test_job_round_trips_through_the_registers():
    job = {f.key: (i * 7919 + 3) % (1 << f.width) for i, f in enumerate(regmap.JOB_FIELDS)}
    words = regmap.pack_job(job)
    assert set(words) == {"N", "DIM", "BUDGET", "H_TARGET", "ITER", "OPT", "MOMENTUM", "SEED"}
    assert regmap.unpack_job(words) == job
    with pytest.raises(ValueError, match="missing"):
        regmap.pack_job({"n": 3})


def test_refusal_order_bounds_and_messages():
    params = {"capacity": 100, "max_dim": 50}
    ok = {"n": 10, "dim": 5, "budget": 10, "h_target": (1 << 24) - 1, "n_iter": 0,
          "exaggeration_iters": 0, "learning_rate": 4095, "exaggeration_shift": 4,
          "allocation": 1, "search": 1, "momentum_early": 0, "momentum_late": 255,
          "momentum_switch": 65535, "seed": 0, "pool": 0, "img_w": 0}
    assert regmap.refusal(ok, params) is None
    r = regmap.refusal({**ok, "budget": 11}, params)
    assert r.cause.name == "BAD_BUDGET" and r.message() == \
        "BUDGET must be <= N (= 10), not 11 (cause 0x12 BAD_BUDGET)"
    r = regmap.refusal({**ok, "n": 1, "budget": 0}, params)   # the first field wins
    assert r.cause.name == "BAD_N" and r.message().startswith("N must be in [2, capacity (= 100)]")
    assert regmap.refusal({**ok, "dim": 51}, params).cause.name == "BAD_DIM"
    assert regmap.refusal({**ok, "h_target": 1 << 24}, params).cause.name == "BAD_H_TARGET"
    # explain() turns a device's code back into the message, with the host's job
    assert regmap.explain(0x12, {**ok, "budget": 11}, params).startswith("BUDGET must be <= N")
    assert "START_WHILE_BUSY" in regmap.explain(0x01, ok, params)
    assert regmap.explain(0x7F, ok, params) == "unknown cause 0x7F"


def test_validate_types_partial_checks_and_parameters():
    with pytest.raises(TypeError, match=r"cfg.n_iter must be an integer, not True"):
        regmap.validate({"n_iter": True}, owner="cfg", partial=True)
    with pytest.raises(ValueError, match=r"cfg.momentum_late must be in \[0, 255\], not 256"):
        regmap.validate({"momentum_late": 256}, owner="cfg", partial=True)
    with pytest.raises(regmap.JobRefused, match="cfg.learning_rate must be in"):
        regmap.validate({"learning_rate": 5000}, owner="cfg", partial=True)
    regmap.validate({"budget": 10**6}, owner="cfg", partial=True)   # N unknown: bound skipped
    with pytest.raises(ValueError, match="missing job fields"):
        regmap.validate({"n": 3}, {"capacity": 8, "max_dim": 8})
    with pytest.raises(ValueError, match="unknown job fields"):
        regmap.validate({"nn": 3}, partial=True)
    assert regmap.check_params({"capacity": 16, "k": 15}, owner="p") == {"capacity": 16, "k": 15}
    with pytest.raises(ValueError, match=r"p.k must be < capacity \(= 16\), not 16"):
        regmap.check_params({"capacity": 16, "k": 16}, owner="p")
    with pytest.raises(ValueError, match=r"p.max_dim must be in \[1, 65536\], not 0"):
        regmap.check_params({"max_dim": 0}, owner="p")
    assert regmap.check_code("OPT.search", "bisect", owner="c") == 1
    with pytest.raises(ValueError, match=r"c.search must be one of \('robust', 'bisect'\)"):
        regmap.check_code("OPT.search", "golden", owner="c")


def test_causes_are_unique_and_fit_the_status_field():
    codes = [c.code for c in regmap.CAUSES]
    assert len(set(codes)) == len(codes) and max(codes) < 1 << regmap.CAUSE_BITS
    assert regmap.REGMAP["STATUS"].field("cause").width == regmap.CAUSE_BITS
    # every backend reports every cause (the model too: AXI errors for memory it lacks, abort)
    assert not any(c.reserved for c in regmap.CAUSES)
    assert [f.qualname for f in regmap.ADDRESS_FIELDS] == ["DST_ADDR"]
    assert regmap.CAUSE["BAD_DST_ADDR"].code == regmap.ADDRESS_CAUSE_BASE == 0x08
    assert [f.qualname for f in regmap.REFUSAL_FIELDS][0] == "DST_ADDR"   # declared first
    ranged = [f.qualname for f in regmap.JOB_FIELDS if f.ranged]
    assert ranged == ["N", "DIM", "BUDGET", "H_TARGET", "OPT.learning_rate",
                      "OPT.exaggeration_shift", "OPT.pool"]
    assert [regmap.FIELDS[q].cause.code for q in ranged] == list(range(0x10, 0x17))
    # the job rules (pooled image shape, chunk-buffer fit) have their own codes
    assert [(c.name, c.code) for c in regmap.CAUSES if c.rule] == [("BAD_IMAGE", 0x1C),
                                                                  ("BAD_CHUNK_BUFFER", 0x1D)]


def test_hardware_widths_come_from_the_declaration():
    from amaranth.hdl import Shape

    from nms.rtl import affinity, embedding
    from nms.rtl.datapath import DesneDatapath, config_layout

    layout = config_layout()
    assert [(name, fld.width) for name, fld in layout] == regmap.job_layout()
    assert embedding.ITER_BITS == regmap.ITER_BITS == regmap.FIELDS["ITER.n_iter"].width \
        == regmap.FIELDS["MOMENTUM.switch"].width
    assert affinity.H_BITS == fp.H_BITS
    assert regmap.FIELDS["H_TARGET"].static_range() == (0, (1 << fp.H_BITS) - 1)
    dp = DesneDatapath(capacity=8, k=2, max_dim=4, lanes=1, tile=1, neg_samples=1,
                       affinity_lanes=1, pair_units=1)
    assert Shape.cast(dp.signature.members["cause"].shape).width == regmap.CAUSE_BITS


def test_c_header_compiles_and_holds_the_declared_values(tmp_path):
    cc = shutil.which("cc") or shutil.which("gcc")
    assert cc, "a C compiler is needed to check the generated header"
    (tmp_path / "nms_regmap.h").write_text(regmap.host_constants("c"))
    (tmp_path / "t.c").write_text(
        '#include <stdio.h>\n#include "nms_regmap.h"\nint main(void) {\n'
        '  printf("%u %u %u %u %u %u %u\\n", NMS_STATUS_ADDR, NMS_OPT_SEARCH_SHIFT,\n'
        '         NMS_STATUS_CAUSE_MASK, NMS_CAUSE_BAD_OPT_EXAGGERATION_SHIFT,\n'
        '         NMS_OPT_EXAGGERATION_SHIFT_MAX, NMS_N_MIN, NMS_H_TARGET_MAX);\n'
        '  return 0;\n}\n')
    subprocess.run([cc, "-Wall", "-Werror", "-o", str(tmp_path / "t"), str(tmp_path / "t.c")],
                   check=True, capture_output=True)
    out = subprocess.run([str(tmp_path / "t")], check=True, capture_output=True, text=True).stdout
    assert out.split() == [str(v) for v in (
        regmap.ADDR["STATUS"], 16, 0xFF00, regmap.CAUSE["BAD_OPT_EXAGGERATION_SHIFT"].code, 4, 2,
        (1 << 24) - 1)]


def test_python_constants_match_the_declaration():
    ns: dict = {}
    exec(regmap.host_constants("py"), ns)
    for name, addr in regmap.ADDR.items():
        assert ns[f"{name}_ADDR"] == addr
    for cause in regmap.CAUSES:
        assert ns[f"CAUSE_{cause.name}"] == cause.code
    assert ns["OPT_LEARNING_RATE_MIN"] == 1 and ns["BUDGET_MIN"] == 1
    assert "BUDGET_MAX" not in ns      # relative to N: no constant to pretend otherwise
    with pytest.raises(ValueError, match="lang"):
        regmap.host_constants("rust")


def test_committed_register_table_is_current():
    committed = (ROOT / "docs" / "registers.md").read_text()
    assert committed == regmap.markdown(), \
        "docs/registers.md is stale: run `nms generate --regmap-doc docs/registers.md`"


def test_generate_writes_the_host_files(tmp_path):
    assert cli(["generate", "--regmap", "--out", str(tmp_path)]) == 0
    assert (tmp_path / "nms_regmap.h").read_text() == regmap.host_constants("c")
    assert (tmp_path / "nms_regmap.py").read_text() == regmap.host_constants("py")
    assert (tmp_path / "registers.md").read_text() == regmap.markdown()
    doc = tmp_path / "doc.md"
    assert cli(["generate", "--regmap-doc", str(doc)]) == 0
    assert doc.read_text() == regmap.markdown()
    assert cli(["generate", "--regmap"]) != 0      # no --out: an error, nothing written


def test_datapath_generator_checks_agree_with_the_declared_parameters():
    """The RTL constructor keeps its own check_int messages; its limits must be the declared
    ones (accepts each bound, refuses one past it)."""
    from nms.rtl.datapath import DesneDatapath

    base = {"capacity": 8, "max_dim": 4, "k": 2, "neg_samples": 1, "tile": 1, "lanes": 1,
            "affinity_lanes": 1, "pair_units": 1}
    for p in regmap.PARAMS:
        lo, hi = p.static_range()
        for value, ok in ((lo, True), (hi, True), (lo - 1, False), (hi + 1, False)):
            kw = {**base, p.name: value}
            if p.name == "k":
                kw["capacity"] = 128      # k's static range, clear of k < capacity
            if ok:
                DesneDatapath(**kw)
            else:
                with pytest.raises(ValueError, match=f"{p.name}={value}"):
                    DesneDatapath(**kw)
    with pytest.raises(ValueError, match="k=16 must be smaller than capacity=16"):
        DesneDatapath(**{**base, "k": 16, "capacity": 16})
    with pytest.raises(ValueError, match=r"k must be < capacity \(= 16\), not 16"):
        regmap.check_params({"capacity": 16, "k": 16}, owner="DesneDatapath")
