"""``nms generate``: files, metadata, Verilator lint, determinism, and no file on bad input."""

import json
import os
import re
import subprocess
import sys

import pytest

from nms.gen.generate import REGISTRY, Block, Param, get_block, register_block, resolve_params
from nms.gen.lint import LintError, lint_verilog
from nms.sw.cli import main as cli

@pytest.fixture(scope="module")
def default_out(tmp_path_factory):
    out = tmp_path_factory.mktemp("gen")
    assert cli(["generate", "--out", str(out)]) == 0
    return out


def _verilog_ports(text: str, top: str) -> dict:
    body = text[text.index(f"module {top}("):]
    body = body[:body.index("endmodule")]
    ports = {}
    for direction, msb, name in re.findall(r"^\s*(input|output)\s+(?:\[(\d+):0\]\s+)?(\w+);",
                                           body, re.M):
        ports[name] = (direction[:-3] if direction == "output" else "in", int(msb or 0) + 1)
    return ports


def test_generate_writes_verilog_and_metadata(default_out):
    meta = json.loads((default_out / "distance.json").read_text())
    text = (default_out / "distance.v").read_text()
    assert meta["block"] == "distance" and meta["top"] == "distance"
    assert meta["parameters"] == {"lanes": 8, "tile": 4, "elem_width": 8, "max_dim": 1024}
    assert meta["derived"]["acc_width"] == (1024 * 255 ** 2).bit_length()
    assert meta["generator"]["nms"] and meta["generator"]["amaranth"].startswith("0.5")
    # the metadata's port table is exactly the Verilog module's port list
    declared = {p["name"]: (p["direction"], p["width"]) for p in meta["ports"]}
    assert declared == _verilog_ports(text, "distance")
    result = next(p for p in meta["ports"] if p["name"] == "result__payload")
    assert result["width"] == 4 * meta["derived"]["acc_width"] + 1
    assert result["fields"][-1] == {"name": "last", "offset": 4 * meta["derived"]["acc_width"],
                                    "width": 1}
    assert "/work/" not in text and "\\src" not in text  # no machine paths


@pytest.mark.parametrize("block", sorted(REGISTRY))
def test_every_block_passes_strict_lint(tmp_path, block):
    """Every block of ``nms generate --list`` at its default parameters: ``verilator -Wall`` with
    only the documented Amaranth-backend waivers (nms.gen.lint); any other warning fails."""
    out = tmp_path / block
    assert cli(["generate", "--block", block, "--out", str(out)]) == 0
    lint_verilog(out / f"{block}.v", block)


def test_lint_fails_on_a_real_warning(tmp_path):
    """The lint is not a formality: a warning outside the waivers (here UNSIGNED, a compare
    that is constant) is reported."""
    bad = tmp_path / "bad.v"
    bad.write_text("module bad(input clk, input [3:0] a, output y);\n"
                   "  assign y = a >= 4'h0;\nendmodule\n")
    with pytest.raises(LintError, match="UNSIGNED"):
        lint_verilog(bad, "bad")


def test_generate_is_deterministic_across_processes(default_out, tmp_path):
    # Another process with another hash seed must write byte-identical files.
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    proc = subprocess.run([sys.executable, "-m", "nms.sw.cli", "generate", "--out", str(tmp_path)],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    for name in ("distance.v", "distance.json"):
        assert (tmp_path / name).read_bytes() == (default_out / name).read_bytes(), name


def test_config_file_params_and_overrides(tmp_path):
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({"block": "distance",
                               "params": {"lanes": 2, "tile": 1, "max_dim": 16}}))
    out = tmp_path / "out"
    assert cli(["generate", "--out", str(out), "--config", str(cfg), "--param", "tile=2",
                "--top", "dist_small"]) == 0
    meta = json.loads((out / "dist_small.json").read_text())
    assert meta["parameters"] == {"lanes": 2, "tile": 2, "elem_width": 8, "max_dim": 16}
    assert "module dist_small(" in (out / "dist_small.v").read_text()


@pytest.mark.parametrize("argv, message", [
    (["--param", "lanes=6"], "lanes=6 is not a power of two"),
    (["--param", "tile=0"], "tile=0 is out of range"),
    (["--param", "max_dim=big"], "max_dim='big' is not a valid int"),
    (["--param", "depth=3"], "has no parameter 'depth'; allowed: lanes, tile, elem_width, max_dim"),
    (["--param", "lanes"], "not of the form NAME=VALUE"),
    (["--block", "nope"], "unknown block 'nope'"),
    (["--top", "9bad"], "not a valid identifier"),
])
def test_bad_parameters_fail_cleanly_and_write_nothing(tmp_path, capsys, argv, message):
    out = tmp_path / "out"
    assert cli(["generate", "--out", str(out), *argv]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_bad_config_fails_cleanly(tmp_path, capsys):
    cfg = tmp_path / "cfg.json"
    out = tmp_path / "out"
    for text, message in [("{", "is not valid JSON"),
                          ('{"block": "distance", "lanes": 4}', '"block": NAME, "params"'),
                          ('{"params": {"lanes": true}}', "lanes=True must be a int")]:
        cfg.write_text(text)
        assert cli(["generate", "--out", str(out), "--config", str(cfg)]) == 2
        assert message in capsys.readouterr().err
    assert cli(["generate", "--out", str(out), "--config", str(tmp_path / "missing.json")]) == 2
    assert not out.exists()


def test_registry_schema():
    block = get_block("distance")
    assert [p.name for p in block.params] == ["lanes", "tile", "elem_width", "max_dim"]
    assert resolve_params(block, {"lanes": "16"})["lanes"] == 16
    with pytest.raises(TypeError, match="lanes=True must be a int"):
        resolve_params(block, {"lanes": True})
    with pytest.raises(ValueError, match="already registered"):
        register_block(Block("distance", "x:Y", (Param("a", int, 1),)))
    assert "distance" in REGISTRY


def test_list_blocks(capsys):
    assert cli(["generate", "--list"]) == 0
    assert "lanes (int, default 8)" in capsys.readouterr().out
