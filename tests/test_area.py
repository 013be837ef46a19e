"""The per-module area breakdown (nms.fpga.area) against Yosys' own hierarchy totals."""

import os
import re
import subprocess

import pytest

from amaranth import Module, Signal
from amaranth.back import rtlil
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from nms.fpga.area import inclusive, parse_stat
from nms.gen.toolchain import setup_fpga_env


class _Accumulate(wiring.Component):
    x: In(16)
    y: Out(24)

    def elaborate(self, platform):
        m = Module()
        m.d.sync += self.y.eq(self.y + self.x * self.x)
        return m


class _Pair(wiring.Component):
    x: In(16)
    y: Out(24)

    def elaborate(self, platform):
        m = Module()
        m.submodules.first = first = _Accumulate()
        m.submodules.second = second = _Accumulate()
        m.d.comb += [first.x.eq(self.x), second.x.eq(first.y[:16]),
                     self.y.eq(second.y ^ first.y)]
        return m


def _hierarchy_total(text, cell):
    block = text.split("=== design hierarchy ===", 1)[1]
    return int(re.search(rf"^\s+(\d+)\s+{cell}\s*$", block, re.MULTILINE).group(1))


def test_breakdown_sums_to_yosys_hierarchy_totals(tmp_path):
    setup_fpga_env()
    (tmp_path / "top.il").write_text(rtlil.convert(_Pair(), name="top"))
    subprocess.run([os.environ["YOSYS"], "-q", "-p",
                    "read_rtlil top.il; synth_ice40 -dsp -noflatten -top top; "
                    "tee -q -o stat.txt stat"], cwd=tmp_path, check=True)
    text = (tmp_path / "stat.txt").read_text()
    own = parse_stat(text, "ice40")
    assert set(own) == {"top", "top.first", "top.second"}
    inc = inclusive(own)
    assert inc["top"]["lut"] == _hierarchy_total(text, "SB_LUT4")
    assert inc["top"]["dsp"] == _hierarchy_total(text, "SB_MAC16") == 2
    # each accumulator owns its multiplier; the parent only the XOR
    assert own["top.first"]["dsp"] == own["top.second"]["dsp"] == 1
    assert own["top"]["dsp"] == 0 and own["top"]["lut"] > 0
    assert inc["top.first"] == own["top.first"]


def test_unknown_family_and_empty_text_are_refused():
    with pytest.raises(ValueError, match="family 'gowin'"):
        parse_stat("=== top ===\n", "gowin")
    with pytest.raises(ValueError, match="no '=== module ===' blocks"):
        parse_stat("nothing here", "ice40")
