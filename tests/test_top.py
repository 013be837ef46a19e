"""The accelerator as a device (``NmsAccelerator``): parameters, ``nms generate --block top``
(ports, metadata, C header, register table, strict lint), and the cocotb testbench
``nms.verif.tb.top`` under Verilator (one build): whole chunk jobs through AXI4 + AXI4-Lite equal
to the bit-exact model with random back-pressure, burst rules, irq, refusals, start while busy,
injected SLVERR/DECERR, abort and reset mid-job."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from amaranth.back import verilog

from nms.rtl import regmap
from nms.rtl.top import NmsAccelerator, effective_registers
from nms.verif.sim.build import run_cocotb

#: the simulated build: small on-chip state, a 64-bit bus and 16-beat bursts (many bursts,
#: 4 KiB crossings with the unaligned chunk address the testbench uses)
HW = {"lanes": 8, "tile": 4, "elem_width": 8, "max_dim": 64, "k": 4, "capacity": 64,
      "neg_samples": 2, "affinity_lanes": 2, "pair_units": 1, "data_width": 64, "max_burst": 16}
SCHEDULE = {"n_iter": 12, "exaggeration_iters": 4, "momentum_switch": 4, "perplexity": 3.0}
_VERILOG: dict = {}


def _run(testcase, params):
    if "v" not in _VERILOG:
        _VERILOG["v"] = verilog.convert(NmsAccelerator(**HW), name="top", emit_src=False)
    run_cocotb("top_c64", _VERILOG["v"], "nms.verif.tb.top", {"hw": HW, **params},
               testcase=testcase)


def _jobs():
    rng = np.random.default_rng(3)
    X1 = rng.integers(0, 256, size=(29, 45))      # dim not a multiple of the lanes or the bus
    X2 = rng.integers(0, 256, size=(12, 64))
    return [
        {"X": X1.tolist(), "budget": 7, "seed": 5, "cfg": SCHEDULE},
        {"X": X2.tolist(), "budget": 3, "seed": 6, "while_busy": True,
         "cfg": {**SCHEDULE, "search": "bisect", "allocation": "proportional"}},
        {"X": X2.tolist(), "budget": 3, "seed": 6, "cfg": SCHEDULE,
         "refuse": {"registers": {"BUDGET": 13}, "cause": "BAD_BUDGET"}},
        {"X": X2.tolist(), "budget": 3, "seed": 6, "cfg": SCHEDULE,
         "refuse": {"registers": {"N": 65}, "cause": "BAD_N"}},
        {"X": X2[:6].tolist(), "budget": 6, "seed": 9, "cfg": SCHEDULE, "dst": 0x40FF8},
    ]


# ------------------------------------------------------------------------------------------------
# parameters, generator


@pytest.mark.parametrize("kwargs, match", [
    ({"data_width": 48}, "data_width=48"),
    ({"data_width": 256}, "data_width=256"),
    ({"max_burst": 12}, "max_burst=12 is not a power of two"),
    ({"max_burst": 512}, "max_burst=512"),
    ({"bus": "apb"}, "bus='apb'"),
    ({"addr_width": 8}, "addr_width=8"),
    ({"read_fifo": 4, "max_burst": 16}, "fifo_depth=4"),
    ({"buffer_dim": 65}, "buffer_dim=65 exceeds max_dim=64"),
    ({"buffer_dim": -1}, "buffer_dim=-1"),
    ({"buffer_dim": 0, "cand_tile": 4}, "cand_tile=4 needs the chunk buffer"),
    ({"cand_tile": 17}, "cand_tile=17"),
])
def test_bad_parameters_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        NmsAccelerator(**{**HW, **kwargs})


def test_default_dataflow_is_the_chosen_one():
    """What a user gets by default (the top, ``nms generate --block top`` / ``datapath`` and the
    RTL backend's build) is the chosen dataflow of ``nms.sw.dataflow.CHOSEN``: the chunk buffer
    for 4x4-pooled 28x28 images, P candidates per query-memory read; its limits are in the
    generator metadata and follow from the parameters on the host side."""
    import inspect

    from nms.gen.generate import get_block
    from nms.sw.dataflow import CHOSEN, reduced_dim
    from nms.sw.transport_rtl import DEFAULT_HW

    from nms.sw.driver import ModelDevice
    from nms.verif.models.desne import DesneConfig

    assert CHOSEN.buffer and reduced_dim(28 * 28, CHOSEN.reduce) == 49
    want = {"buffer_dim": 49, "cand_tile": CHOSEN.cand_tile, "capacity": CHOSEN.capacity,
            "tile": CHOSEN.tile, "lanes": CHOSEN.lanes, "k": CHOSEN.k,
            "neg_samples": CHOSEN.neg_samples, "pair_units": CHOSEN.pair_units,
            "buffer_banks": CHOSEN.buffer_banks}
    sig = inspect.signature(NmsAccelerator).parameters
    for block in ("top", "datapath"):
        params = {p.name: p.default for p in get_block(block).params}
        assert {k: params[k] for k in want} == want, block
    assert {k: sig[k].default for k in want} == want
    assert {k: DEFAULT_HW[k] for k in want} == want
    # the model's and the host's defaults are the same chunk capacity
    assert DesneConfig().capacity == CHOSEN.capacity
    assert ModelDevice().capacity == CHOSEN.capacity
    top = NmsAccelerator(**HW)                        # the test build takes the default too
    assert top.datapath.chunk_buffer and top.datapath.cand_tile == CHOSEN.cand_tile
    caps = regmap.capabilities(capacity=64, lanes=8, buffer_dim=49)
    assert caps == {"lanes": 8, "buffer_depth": 64 * 7, "pool_max": 2}
    assert top.derived["capabilities"] == caps
    assert {k: top.datapath.refusal_params[k] for k in caps} == caps
    stream = NmsAccelerator(**HW, buffer_dim=0, cand_tile=1)
    assert not stream.datapath.chunk_buffer and stream.derived["capabilities"] == {}


def test_register_map_is_the_one_declaration():
    """The device registers (interrupt, AXI and datapath counters) are part of the declaration,
    at the addresses they had when the top appended them (0x4C on)."""
    regs = effective_registers()
    assert regs is regmap.REGISTERS
    assert NmsAccelerator(**HW).registers == regmap.REGISTERS
    names = [r.name for r in regs]
    assert len(names) == len(set(names))
    assert regmap.ADDR["IRQ_ENABLE"] == 0x4C and regmap.ADDR["IRQ_STATUS"] == 0x50
    assert regmap.ADDR["AXI_BYTES_READ_LO"] == 0x54 and regmap.ADDR["PERF_MEM_BEATS"] == 0x60
    # every datapath counter is reported by one register (or the CYCLES / BYTES_READ pair)
    perf = [c for c in regmap.PERF_COUNTERS if c.register is not None]
    assert [f"PERF_{c.name.upper()}" for c in perf] == [n for n in names if n.startswith("PERF_")]
    assert {c.name for c in regmap.PERF_COUNTERS if c.register is None} == {"cycles", "bytes_read"}
    from nms.rtl.datapath import perf_layout
    assert list(perf_layout().members) == [c.name for c in regmap.PERF_COUNTERS]


def test_generate_top_block(tmp_path):
    params = {k: str(v) for k, v in HW.items()} | {"bus": "wishbone"}
    out = tmp_path / "gen"
    proc = subprocess.run([sys.executable, "-m", "nms.sw.cli", "generate", "--block", "top",
                           "--out", str(out), *sum((["--param", f"{k}={v}"] for k, v in params.items()), [])],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    meta = json.loads((out / "top.json").read_text())
    names = {p["name"] for p in meta["ports"]}
    assert {"m_axi_araddr", "m_axi_arlen", "m_axi_rdata", "m_axi_awaddr", "m_axi_wstrb",
            "m_axi_bresp", "wb_adr", "wb_dat_r", "wb_ack", "irq"} <= names
    assert not any(n.startswith("s_axil_") for n in names)
    regs = meta["derived"]["registers"]
    assert [r["name"] for r in regs] == [r.name for r in effective_registers()]
    assert [r["name"] for r in regs if r["timed"]] == list(regmap.TIMED_REGISTERS)
    assert meta["derived"]["error_causes"]["ABORTED"] == regmap.CAUSE["ABORTED"].code
    header = (out / "top_regs.h").read_text()
    assert f"#define NMS_STATUS_ADDR 0x{regmap.ADDR['STATUS']:02X}u" in header
    assert header == regmap.host_constants("c")
    assert f"#define NMS_IRQ_STATUS_ADDR 0x{regmap.ADDR['IRQ_STATUS']:02X}u" in header
    assert (out / "top_registers.md").read_text() == regmap.markdown()
    assert "| `IRQ_STATUS` | w1c |" in regmap.markdown()
    from nms.gen.lint import lint_verilog
    lint_verilog(out / "top.v", "top")
    # integration: a plain Verilog SoC shell instantiates the generated module by the
    # conventional port names listed in the metadata (a wrong or missing name is a Verilator
    # error, not a warning)
    decls, pins = [], []
    for port in meta["ports"]:
        rng = f"[{port['width'] - 1}:0] " if port["width"] > 1 else ""
        decls.append(f"  wire {rng}{port['name']};")
        pins.append(f"    .{port['name']}({port['name']})")
    shell = ("module soc_shell;\n" + "\n".join(decls) + "\n  top u_nms (\n" + ",\n".join(pins)
             + "\n  );\nendmodule\n")
    (out / "soc_shell.v").write_text(shell)
    # strict: the shell's nets are deliberately left undriven / unread (UNDRIVEN, UNUSEDSIGNAL);
    # any other warning, and every pin error, fails
    lint_verilog(out / "soc_shell.v", "soc_shell", extra_sources=[out / "top.v"],
                 extra_waivers=["UNDRIVEN"])


# ------------------------------------------------------------------------------------------------
# cocotb + Verilator: one build, three test cases


def test_jobs_bit_exact_irq_refusals_start_while_busy():
    _run("test_jobs", {"jobs": _jobs(), "seed": 21, "stall": 0.3})


def test_injected_slverr_decerr_end_the_job():
    _run("test_faults", {"jobs": _jobs()[1:2], "seed": 22, "stall": 0.2})


def test_abort_and_reset_mid_job_then_bit_exact():
    """Aborts and a reset while the chunk is read and the kNN / affinity stages run (the first
    ~3000 of the job's ~23000 cycles) and one at once after the start (in the configuration
    check or just after it), each followed by a clean job; plus the abort bound."""
    job = _jobs()[0]
    aborts = [("abort", 0), ("abort", 150), ("abort", 900), ("reset", 500), ("abort", 2500)]
    _run("test_abort", {"jobs": [job], "aborts": aborts, "seed": 23, "stall": 0.3})


def test_abort_in_embedding_and_grid_then_bit_exact():
    """Aborts and a reset in the embedding and grid stages, each followed by a clean job (the
    stages clear their memories themselves: embedding sweep from the config beat, grid cell map
    on leaving reset, picked bits as points load)."""
    job = _jobs()[0]
    aborts = [("abort", 12000), ("reset", 17000), ("abort", 21500)]
    _run("test_abort", {"jobs": [job], "aborts": aborts, "seed": 24, "stall": 0.3})
