"""FPGA flow: generic board top, tool-log parser, error paths, and real YoWASP bitstream builds."""

import json
import shutil
from pathlib import Path

import pytest
from amaranth.hdl import Cat, Module
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.sim import Simulator

from nms.fpga.boards import BOARDS, get_board
from nms.fpga.build import BuildError, build, diagnose_failure, parse_params
from nms.fpga.report import (
    LogParseError,
    parse_nextpnr_log,
    parse_yosys_log,
    summarise_utilisation,
)
from nms.fpga.top import PortExerciser
from nms.sw.cli import main as cli_main

# Blocks rejected by the error-path tests are never elaborated; Amaranth warns about each one when
# it is garbage-collected, often during a later test.
pytestmark = pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")

DATA = Path(__file__).resolve().parent / "data" / "fpga"
#: small distance-engine configuration: 4 squares per cycle, 16-element vectors
SMALL = {"lanes": "2", "tile": "2", "elem_width": "8", "max_dim": "16"}


def _read(name):
    return (DATA / name).read_text()


# --- log parser on real logs ----------------------------------------------------------------------

def test_nextpnr_ecp5_log_utilisation_and_post_route_fmax():
    log = parse_nextpnr_log(_read("ecp5_distance_l2t2.tim"))
    util = log["utilisation"]
    assert util["TRELLIS_COMB"] == {"used": 401, "available": 83640, "percent": 0}
    assert util["TRELLIS_FF"]["used"] == 425
    assert util["MULT18X18D"]["used"] == 4
    assert util["DP16KD"] == {"used": 0, "available": 208, "percent": 0}
    assert util["GSR"] == {"used": 1, "available": 1, "percent": 100}
    # the log has a post-placement (147.19) and a post-route (146.03) line: the last one wins
    assert log["clocks"] == {"$glbnet$cd_sync.clk": {"fmax_mhz": 146.03, "target_mhz": 25.0,
                                                     "pass": True}}
    assert log["finished"]


def test_nextpnr_ice40_log_utilisation_and_post_route_fmax():
    log = parse_nextpnr_log(_read("ice40_distance_l2t2.tim"))
    util = log["utilisation"]
    assert util["ICESTORM_LC"] == {"used": 684, "available": 5280, "percent": 12}
    assert util["ICESTORM_DSP"] == {"used": 4, "available": 8, "percent": 50}
    assert util["ICESTORM_RAM"]["used"] == 5
    assert log["clocks"]["cd_sync.clk"]["fmax_mhz"] == 45.46  # not the post-placement 47.47
    assert log["clocks"]["cd_sync.clk"]["target_mhz"] == 12.0


def test_yosys_log_version_and_cells():
    ice40 = parse_yosys_log(_read("ice40_distance_l2t2.rpt"))
    assert ice40["version"] == "0.70 (git 28ba3cb92)"
    assert ice40["cells"]["SB_MAC16"] == 4
    assert ice40["cells"]["SB_LUT4"] == 352
    assert ice40["cells"]["SB_DFFSR"] == 289
    assert "wires" not in ice40["cells"] and "cells" not in ice40["cells"]
    ecp5 = parse_yosys_log(_read("ecp5_distance_l2t2.rpt"))
    assert ecp5["cells"]["TRELLIS_FF"] == 425
    assert ecp5["cells"]["LUT4"] == 137


def test_summary_per_family():
    ice40 = summarise_utilisation("ice40", parse_nextpnr_log(_read("ice40_distance_l2t2.tim")),
                                  parse_yosys_log(_read("ice40_distance_l2t2.rpt")))
    assert list(ice40) == ["lut", "ff", "dsp", "bram", "spram"]
    assert ice40["lut"]["cell"] == "ICESTORM_LC" and ice40["lut"]["used"] == 684
    assert ice40["ff"]["used"] == 82 + 51 + 63 + 289  # all SB_DFF* variants from Yosys
    ecp5 = summarise_utilisation("ecp5", parse_nextpnr_log(_read("ecp5_distance_l2t2.tim")),
                                 parse_yosys_log(_read("ecp5_distance_l2t2.rpt")))
    assert {k: v["used"] for k, v in ecp5.items()} == {"lut": 401, "ff": 425, "dsp": 4, "bram": 0}
    with pytest.raises(ValueError, match="unknown FPGA family 'xilinx7'"):
        summarise_utilisation("xilinx7", {"utilisation": {}}, {"cells": {}})


def test_failed_placement_log_says_what_does_not_fit(tmp_path):
    log = parse_nextpnr_log(_read("ice40_distance_default_overfull.tim"))
    assert log["clocks"] == {} and not log["finished"]
    assert log["utilisation"]["ICESTORM_DSP"] == {"used": 32, "available": 8, "percent": 400}
    shutil.copy(DATA / "ice40_distance_default_overfull.tim", tmp_path / "top.tim")
    error = diagnose_failure(tmp_path)
    assert isinstance(error, BuildError)
    assert error.overused == {"ICESTORM_DSP": (32, 8)}
    assert "does not fit the device: ICESTORM_DSP 32/8" in str(error)
    assert "no BELs remaining to implement cell type 'ICESTORM_DSP'" in str(error)


def test_log_without_utilisation_is_rejected():
    with pytest.raises(LogParseError, match="Device utilisation"):
        parse_nextpnr_log("Info: Program finished normally.\n")


# --- the generic board top ------------------------------------------------------------------------

class Probe(wiring.Component):
    """Tiny block with a stream input (ready flows out), a plain input and a plain output."""

    s: In(stream.Signature(4))
    b: In(3)
    y: Out(7)

    def elaborate(self, platform):
        m = Module()
        m.d.comb += [self.y.eq(Cat(self.s.payload, self.b)),
                     self.s.ready.eq(self.s.valid ^ self.b[0])]
        return m


def test_exerciser_drives_every_input_and_folds_every_output():
    probe = Probe()
    dut = PortExerciser(probe)
    assert dut.input_names == ["s.payload", "s.valid", "b"]
    assert dut.output_names == ["s.ready", "y"]
    assert (dut.input_width, dut.output_width, dut.fold_stages) == (8, 8, 2)
    inputs, outputs, observed = [], [], []

    async def bench(ctx):
        for _ in range(300):
            await ctx.tick()
            inputs.append((ctx.get(probe.s.payload), ctx.get(probe.s.valid), ctx.get(probe.b)))
            outputs.append((ctx.get(probe.s.ready), ctx.get(probe.y)))
            observed.append(ctx.get(dut.observed))

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()

    bits = [payload | valid << 4 | b << 5 for payload, valid, b in inputs[40:]]
    for bit in range(8):
        assert {(word >> bit) & 1 for word in bits} == {0, 1}, f"input bit {bit} never toggles"
    assert len(set(bits)) > 100  # pseudo-random words, not a few repeating patterns
    # observed = XOR of all output bits, captured once and folded in fold_stages registers
    delay = 1 + dut.fold_stages
    parity = [bin(ready | y << 1).count("1") & 1 for ready, y in outputs]
    assert observed[delay:] == parity[:-delay]
    assert observed[delay + 1:] != parity[:-delay - 1]  # the delay is exact, not any shift
    assert 0 in observed[delay:] and 1 in observed[delay:]


def test_exerciser_rejects_bad_blocks():
    class InputsOnly(wiring.Component):
        a: In(4)

        def elaborate(self, platform):
            return Module()

    with pytest.raises(TypeError, match="wiring.Component"):
        PortExerciser(Module())
    with pytest.raises(ValueError, match="InputsOnly has no output port bits"):
        PortExerciser(InputsOnly())
    with pytest.raises(ValueError, match="fold_fan_in must be between 2 and 6, not 1"):
        PortExerciser(Probe(), fold_fan_in=1)
    with pytest.raises(TypeError, match="fold_fan_in must be an int"):
        PortExerciser(Probe(), fold_fan_in="4")


# --- error paths: rejected before any tool runs ---------------------------------------------------

def test_board_table():
    assert set(BOARDS) == {"ulx3s-85f", "icebreaker"}
    assert get_board("icebreaker").build_options == {"synth_opts": "-dsp"}
    assert "openFPGALoader" not in get_board("ulx3s-85f").platform().required_tools
    with pytest.raises(ValueError,
                       match="unknown board 'de10'; choose one of icebreaker, ulx3s-85f"):
        get_board("de10")


@pytest.mark.parametrize("kwargs, error, message", [
    ({"board": "de10"}, ValueError, "unknown board 'de10'"),
    ({"board": "icebreaker", "block": "fft"}, ValueError, "unknown block 'fft'"),
    ({"board": "icebreaker", "params": {"width": "8"}}, ValueError,
     "has no parameter 'width'; allowed: lanes, tile, elem_width, max_dim"),
    ({"board": "icebreaker", "params": {"lanes": "3"}}, ValueError,
     "lanes=3 is not a power of two"),
    ({"board": "icebreaker", "params": {"lanes": "four"}}, ValueError,
     "lanes='four' is not a valid int"),
    ({"board": "icebreaker", "params": {"elem_width": 0}}, ValueError,
     "elem_width=0 is out of range"),
])
def test_bad_requests_fail_before_any_tool_runs(tmp_path, kwargs, error, message):
    out = tmp_path / "out"
    with pytest.raises(error, match=message):
        build(out_dir=out, **kwargs)
    assert not out.exists()


def test_cli_errors_are_one_line_with_status_2(tmp_path, capsys):
    assert cli_main(["build", "--board", "icebreaker", "--param", "lanes",
                     "--out", str(tmp_path / "a")]) == 2
    assert "is not of the form NAME=VALUE" in capsys.readouterr().err
    assert cli_main(["build", "--board", "icebreaker", "--block", "fft",
                     "--out", str(tmp_path / "b")]) == 2
    assert "unknown block 'fft'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        cli_main(["build", "--board", "de10"])
    assert exc.value.code == 2
    assert "invalid choice: 'de10'" in capsys.readouterr().err
    assert parse_params(["lanes=4", "tile=2"]) == {"lanes": "4", "tile": "2"}


# --- real bitstreams ------------------------------------------------------------------------------

def _check_report(out, report, *, suffix, min_bytes):
    assert json.loads((out / "report.json").read_text()) == report
    bitstream = out / report["bitstream"]["file"]
    assert bitstream.suffix == suffix and bitstream.stat().st_size == report["bitstream"]["bytes"]
    assert report["bitstream"]["bytes"] > min_bytes
    assert len(set(bitstream.read_bytes())) > 2  # not a blank image
    assert report["params"] == {"lanes": 2, "tile": 2, "elem_width": 8, "max_dim": 16}
    assert report["fmax_mhz"] > 0
    util = report["utilisation"]
    assert util["lut"]["used"] > 0
    # every squarer survives synthesis: lanes x tile multipliers, so the block is not optimised away
    assert util["dsp"]["used"] == 2 * 2
    assert util["ff"]["used"] >= report["top"]["input_bits"] + report["top"]["output_bits"]
    assert report["tools"]["yosys"].startswith("0.") and report["tools"]["nextpnr"]
    md = (out / "report.md").read_text()
    assert f"{report['fmax_mhz']:.2f} MHz" in md and "| lut |" in md


@pytest.mark.fpga
def test_ulx3s_bitstream_of_small_distance_engine(tmp_path):
    report = build(board="ulx3s-85f", block="distance", params=SMALL, out_dir=tmp_path)
    assert report["target_mhz"] == 25.0
    _check_report(tmp_path, report, suffix=".bit", min_bytes=100_000)
    assert report["utilisation"]["dsp"]["cell"] == "MULT18X18D"


@pytest.mark.fpga
def test_icebreaker_bitstream_through_the_cli(tmp_path, capsys):
    params = [arg for k, v in SMALL.items() for arg in ("--param", f"{k}={v}")]
    assert cli_main(["build", "--board", "icebreaker", *params, "--out", str(tmp_path)]) == 0
    assert "Fmax" in capsys.readouterr().out
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["target_mhz"] == 12.0 and report["board"] == "icebreaker"
    _check_report(tmp_path, report, suffix=".bin", min_bytes=100_000)
    assert report["utilisation"]["dsp"]["cell"] == "ICESTORM_DSP"


def test_report_markdown_of_a_job_top():
    """A job top has no LFSR probe: its report line is the top's own summary (this once crashed
    the writer after a 23-minute build)."""
    from nms.fpga.report import format_markdown
    rep = {"block": "top", "board": "ulx3s-85f", "device": "LFE5U-85F", "params": {"capacity": 512},
           "top": {"kind": "job top", "clock_mhz": 33.3}, "fmax_mhz": 37.4, "target_mhz": 33.3,
           "timing_met": True, "bitstream": {"file": "top.bit", "bytes": 1}, "build_seconds": 1.0,
           "utilisation": {}, "tools": {"yosys": "x"}}
    md = format_markdown(rep)
    assert "- board top: kind=job top, clock_mhz=33.3" in md
