"""The fast simulation's reset flop (``fastsim._reset_flop``, ``REG_RST`` in ``fastsim_dut.h``).

The Verilated top is built with its ``rst`` input rewritten into a flop loaded from ``rst_d`` on
an ``rst_clk`` edge (so Verilator stops re-running all next-state logic on every ``eval()``).
Here: the rewrite itself on a small Verilog text (and its refusal of unexpected shapes), and on
the real top (the small build of ``tests/test_rtl_backend.py``) a reset in the middle of a job
through ``FastSim.reset``: the device is idle with its registers at their reset values, and the
next job is bit-exact. ``tests/test_fastsim_cxxrtl.py`` compares every register after every job
with the CXXRTL engine, whose reset is the plain input.
"""

from __future__ import annotations

import numpy as np
import pytest

from nms.rtl import regmap
from nms.verif.sim.fastsim import _reset_flop

HW = {"lanes": 8, "tile": 4, "elem_width": 8, "max_dim": 64, "k": 4, "capacity": 64,
      "neg_samples": 2, "affinity_lanes": 2, "pair_units": 1, "data_width": 64, "max_burst": 16}
SCHEDULE = {"n_iter": 30, "exaggeration_iters": 10, "momentum_switch": 10, "perplexity": 3.0}

TINY = """module sub(clk, rst, q);
  input clk;
  wire clk;
  input rst;
  wire rst;
  output reg q = 1'h0;
  always @(posedge clk)
    if (rst) q <= 1'h0; else q <= ~q;
endmodule
module top(clk, rst, q);
  input clk;
  wire clk;
  output q;
  wire q;
  input rst;
  wire rst;
  sub s (.clk(clk), .rst(rst), .q(q));
endmodule
"""


def test_rewrite_puts_rst_behind_a_flop():
    out = _reset_flop(TINY)
    assert out is not None
    top = out[out.index("module top("):]
    assert top.startswith("module top(clk, rst_d, rst_clk, q);\n")
    assert "  input rst_d;\n" in top and "  input rst_clk;\n" in top
    assert "  reg rst = 1'h0;\n" in top
    assert "always @(posedge rst_clk or negedge rst_clk) rst <= rst_d;" in top
    assert "input rst;" not in top
    # the submodule and the instance are untouched
    assert out[:out.index("module top(")] == TINY[:TINY.index("module top(")]
    assert "sub s (.clk(clk), .rst(rst), .q(q));" in top


@pytest.mark.parametrize("text", [
    TINY.replace("module top(clk, rst, q)", "module top(clk, reset, q)"),  # no rst port
    TINY.replace("  input rst;\n  wire rst;\n  sub", "  input rst;\n  sub"),  # unknown shape
    TINY.replace("output q;", "output q; wire rst_d;"),                      # name taken
])
def test_rewrite_refuses_unexpected_text(text):
    assert _reset_flop(text) is None


def test_reset_mid_job_then_clean_job():
    from nms.sw.driver import Driver
    from nms.sw.transport_rtl import RtlTransport
    from nms.verif.models import desne

    t = RtlTransport(hw=HW, latency=12)
    try:
        assert t.sim.build_info.get("reset_flop", True)
        cfg = desne.DesneConfig(k=HW["k"], neg_samples=HW["neg_samples"],
                                capacity=HW["capacity"], **SCHEDULE)
        drv = Driver(t, cfg)
        X = np.random.default_rng(5).integers(0, 256, size=(40, 33))
        t.write_mem(0x3001, X.astype(np.uint8).tobytes())
        job = drv.job_values(40, 33, 5, 4)
        drv.program(job, 0x3001, 0x20000)
        drv.start()
        t.sim.run(1500)
        assert regmap.REGMAP["STATUS"].unpack(t.read_reg("STATUS"))["busy"] == 1
        t.sim.reset(3)
        st = regmap.REGMAP["STATUS"].unpack(t.read_reg("STATUS"))
        assert st["busy"] == 0 and st["done"] == 0 and st["error"] == 0
        for name in ("SRC_ADDR", "DST_ADDR", "N", "IRQ_ENABLE"):
            assert t.read_reg(name) == 0, name
        t.write_reg("IRQ_ENABLE", regmap.REGMAP["IRQ_ENABLE"].pack(done=1, error=1))
        drv.run_job(job, 0x3001, 0x20000)
        got = np.frombuffer(t.read_mem(0x20000, 20), dtype="<u4").tolist()
        assert got == desne.run_chunk(X, 5, cfg, 4)["selected"].tolist()
        assert t.sim.counters()["violations"] == 0
    finally:
        t.close()
