"""Where the area goes: a per-module cell breakdown of a board top from Yosys' hierarchical ``stat``.

A bitstream build flattens the design, so its utilisation says *that* a top does not fit but not
*which* block to shrink. :func:`module_area` synthesises the same top for the board's family with
``-noflatten`` and reads Yosys' ``stat`` per module. Cells are the family's primitives (iCE40:
``SB_LUT4``, ``SB_CARRY``, ``SB_DFF*``, ``SB_MAC16``, ``SB_RAM40_4K``, ``SB_SPRAM256KA``; ECP5:
``LUT4``, ``CCU2C``, ``TRELLIS_FF``, ``MULT18X18D``, ``DP16KD``). Without flattening, constants
are not propagated across module boundaries, so the totals are somewhat larger than the
flattened build's; the breakdown is for finding the big blocks, not for the fit verdict.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from pathlib import Path

__all__ = ["CLASSES", "parse_stat", "inclusive", "module_area"]

#: per family: resource class -> regular expression of the primitive cell names counted in it
CLASSES = {
    "ice40": {"lut": r"SB_LUT4", "carry": r"SB_CARRY", "ff": r"SB_DFF\w*", "dsp": r"SB_MAC16",
              "bram": r"SB_RAM40_4K", "spram": r"SB_SPRAM256KA"},
    "ecp5": {"lut": r"LUT4", "carry": r"CCU2C", "ff": r"TRELLIS_FF", "dsp": r"MULT18X18D",
             "bram": r"DP16KD"},
}

_MODULE = re.compile(r"^=== (?P<name>.+?) ===\s*$", re.MULTILINE)
_SUBMODULES = re.compile(r"^\s+\d+ submodules\s*$")
_CELL = re.compile(r"^\s+(?P<count>\d+)\s+(?P<cell>[$A-Za-z_][\w$.\\]*)\s*$")


def parse_stat(text: str, family: str) -> dict[str, dict[str, int]]:
    """Own (sub-module-exclusive) cell counts per module from Yosys ``stat`` output.

    Parameters
    ----------
    text : str
        The output of ``stat`` on a design that was not flattened.
    family : str
        A key of :data:`CLASSES`.

    Returns
    -------
    dict
        module name -> {resource class -> count}; classes without cells are 0. The pseudo-module
        ``design hierarchy`` (Yosys' totals) is left out.
    """
    if family not in CLASSES:
        raise ValueError(f"family {family!r} unknown; choose from {sorted(CLASSES)}")
    classes = {k: re.compile(rf"^{v}$") for k, v in CLASSES[family].items()}
    heads = list(_MODULE.finditer(text))
    if not heads:
        raise ValueError("no '=== module ===' blocks in the Yosys stat output")
    modules = {}
    for head, nxt in zip(heads, heads[1:] + [None]):
        name = head.group("name")
        if name == "design hierarchy":   # Yosys' totals, not a module
            continue
        body = text[head.end(): nxt.start() if nxt else len(text)]
        counts = dict.fromkeys(classes, 0)
        for line in body.splitlines():
            if _SUBMODULES.match(line):  # what follows are instances, not primitives
                break
            m = _CELL.match(line)
            if not m:
                continue
            for cls, pattern in classes.items():
                if pattern.match(m.group("cell")):
                    counts[cls] += int(m.group("count"))
        modules[name] = counts
    return modules


def inclusive(modules: dict[str, dict[str, int]]) -> dict[str, dict[str, int]]:
    """Counts including every sub-module (Amaranth names sub-modules ``parent.child``)."""
    out = {}
    for name in modules:
        total = dict.fromkeys(next(iter(modules.values())), 0)
        for other, counts in modules.items():
            if other == name or other.startswith(name + "."):
                for cls, n in counts.items():
                    total[cls] += n
        out[name] = total
    return out


def module_area(board: str, *, out_dir: Path | str, hw: dict | None = None,
                timeout: float = 1800) -> dict:
    """Synthesise ``board``'s job top with ``-noflatten`` and return the per-module breakdown.

    Parameters
    ----------
    board : str
        A key of :data:`nms.fpga.board_top.BOARD_CONFIGS`.
    out_dir : path
        Folder for the generated design, the Yosys script and its log (replaced).
    hw : dict, optional
        Accelerator parameter overrides (default: the board configuration's).
    timeout : float
        Seconds Yosys may take before the run is abandoned with :class:`TimeoutError`.

    Returns
    -------
    dict
        ``family``, ``seconds`` (synthesis), ``own`` and ``inclusive`` (module -> class ->
        count) and ``total`` (class -> count, the sum of ``own``).
    """
    from nms.fpga.board_top import BoardJobTop
    from nms.fpga.boards import get_board
    from nms.gen.toolchain import setup_fpga_env

    spec = get_board(board)
    top = BoardJobTop(board, hw=hw)
    setup_fpga_env()
    options = dict(spec.build_options)
    options["synth_opts"] = (options.get("synth_opts", "") + " -noflatten").strip()
    plan = spec.platform().prepare(top, name="top", **options)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    plan.extract(out_dir)
    script = (out_dir / "top.ys").read_text()
    # only the synthesis and the statistics: no netlist is written, no place and route runs
    script = "\n".join(line for line in script.splitlines() if not line.startswith("write_"))
    (out_dir / "area.ys").write_text(script + "\ntee -q -o area.txt stat\n")
    started = time.perf_counter()
    with open(out_dir / "area.log", "w") as log:
        try:
            proc = subprocess.run([os.environ["YOSYS"], "-q", "area.ys"], cwd=out_dir,
                                  stdout=log, stderr=subprocess.STDOUT, timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            raise TimeoutError(f"Yosys area synthesis of {board} took over {timeout:.0f} s; "
                               f"see {out_dir / 'area.log'}") from exc
    if proc.returncode != 0:
        raise RuntimeError(f"Yosys area synthesis of {board} failed (exit {proc.returncode}); "
                           f"see {out_dir / 'area.log'}")
    own = parse_stat((out_dir / "area.txt").read_text(), spec.family)
    total = dict.fromkeys(CLASSES[spec.family], 0)
    for counts in own.values():
        for cls, n in counts.items():
            total[cls] += n
    return {"family": spec.family, "seconds": time.perf_counter() - started, "own": own,
            "inclusive": inclusive(own), "total": total}
