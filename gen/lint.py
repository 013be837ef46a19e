"""Strict Verilator lint of generated Verilog, with one documented list of waivers.

Every block that ``nms generate`` can write is linted with ``verilator --lint-only -Wall``. The
waivers below are the warnings Amaranth's Verilog backend (via Yosys) emits for *every* design;
none of them is a design bug. Any other warning is a finding and fails the lint.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

__all__ = ["AMARANTH_LINT_WAIVERS", "LintError", "lint_verilog"]

#: warning -> why it is waived (what the backend does that trips it)
AMARANTH_LINT_WAIVERS = {
    "WIDTHEXPAND": "Yosys relies on Verilog's implicit zero-extension of narrower operands",
    "WIDTHTRUNC": "Yosys relies on Verilog's implicit truncation to the assigned width",
    "UNUSEDSIGNAL": "upper bits of intermediate wires (e.g. a square truncated to its known "
                    "width) and payload fields read only on some beats",
    "PROCASSINIT": "every reg gets an initialiser (its reset value) and is assigned in a process",
    "DECLFILENAME": "submodules share the top module's file",
    "ASCRANGE": "zero-width signals (e.g. a lane index when there is one lane) are written as "
                "[-1:0]",
    "CASEINCOMPLETE": "one process per signal whose case (FSM state, Array index) lists only the "
                      "values that assign it, after a default assignment (no latch is inferred)",
}


class LintError(RuntimeError):
    """Verilator reported a warning outside the waiver list (or failed)."""


def lint_verilog(path: Path, top: str, *, extra_sources=(), extra_waivers=(),
                 timeout: float = 600) -> None:
    """Lint ``path`` (and ``extra_sources``) with ``-Wall`` minus :data:`AMARANTH_LINT_WAIVERS`
    and the caller's ``extra_waivers``; raise on any warning."""
    from nms.gen.toolchain import setup_simulation_env

    bindir = setup_simulation_env()
    waivers = [f"-Wno-{w}" for w in (*AMARANTH_LINT_WAIVERS, *extra_waivers)]
    proc = subprocess.run([str(bindir / "verilator"), "--lint-only", "-Wall", *waivers,
                           "--top-module", top, str(path), *map(str, extra_sources)],
                          capture_output=True, text=True, timeout=timeout)
    found = sorted(set(re.findall(r"%(?:Warning|Error)-?(\w*)", proc.stderr)))
    if proc.returncode != 0 or found:
        raise LintError(f"verilator lint of {top} ({path.name}): {found or 'failed'}\n"
                        f"{proc.stderr[-3000:]}")
