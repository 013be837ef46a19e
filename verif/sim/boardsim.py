"""The simulated board: the Verilated :class:`~nms.rtl.board.BoardCore` with a bit-level UART line
model (``boardsim_harness.cpp`` beside this file), optionally served on a TCP port.

:class:`BoardSim` moves bytes to and from the board's UART pins and runs batches of cycles; it is
the board minus its PLL and pads. :class:`BoardServer` bridges it to a TCP socket on
``127.0.0.1``: what a client sends is shifted into ``uart_rx`` at the line rate, what the board
transmits is sent back — so pyserial's ``socket://127.0.0.1:PORT``, the serial transport and
LiteX's ``litex_server --uart --uart-port socket://...`` talk to it exactly as to a board.

Simulated time advances only while there is something to do (bytes to shift in or out, or a
job running: ``STATUS.busy``); a quiescent board waits for its host without spending cycles, so
the bridge's idle timer (cycles) never drops a frame because the host was slow.

Builds are cached by a content hash of the Verilog, the harness and the flags under
``$NMS_BUILD_DIR/boardsim/<hash>/`` (same rules as :mod:`nms.verif.sim.fastsim`).
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import os
import select
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

from nms.gen.toolchain import setup_simulation_env, verilator_bin
from nms.verif.sim.build import build_dir_root
from nms.verif.sim.fastsim import CXX_FLAGS, VERILATOR_FLAGS, FastSimError

__all__ = ["HARNESS", "build", "BoardSim", "BoardServer"]

HARNESS = Path(__file__).with_name("boardsim_harness.cpp")
TOP = "board"


def _verilog(core_params: dict) -> str:
    from amaranth.back import verilog

    from nms.rtl.board import BoardCore

    return verilog.convert(BoardCore(**core_params), name=TOP, emit_src=False)


def build(core_params: dict, *, log=None) -> tuple[Path, dict]:
    """Build (or find in the cache) the board library for ``BoardCore(**core_params)``."""
    setup_simulation_env()
    text = _verilog(core_params)
    key = hashlib.sha256("\0".join([text, HARNESS.read_text(), *VERILATOR_FLAGS,
                                    *CXX_FLAGS]).encode()).hexdigest()[:16]
    out = build_dir_root() / "boardsim" / key
    lib = out / "libnmsboard.so"
    info = {"hash": key, "dir": os.path.relpath(out), "cached": lib.exists(), "build_seconds": 0.0}
    if lib.exists():
        return lib, info
    tmp = out.with_name(key + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    (tmp / f"{TOP}.v").write_text(text)
    t0 = time.perf_counter()
    verilator = str(verilator_bin() / "verilator")
    proc = subprocess.run([verilator, *VERILATOR_FLAGS, "--Mdir", str(tmp / "obj"),
                           "--top-module", TOP, str(tmp / f"{TOP}.v")],
                          capture_output=True, text=True, cwd=tmp)
    if proc.returncode:
        raise FastSimError(f"verilator failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    root = subprocess.run([verilator, "--getenv", "VERILATOR_ROOT"], capture_output=True,
                          text=True, check=True).stdout.strip()
    inc, obj = Path(root) / "include", tmp / "obj"
    cxx = shutil.which("c++") or shutil.which("g++")
    if cxx is None:
        raise FastSimError("no C++ compiler (c++/g++) on PATH")
    proc = subprocess.run([cxx, *CXX_FLAGS, f"-I{obj}", f"-I{inc}", f"-I{inc / 'vltstd'}",
                           str(HARNESS), str(obj / f"V{TOP}__ALL.a"), str(obj / "libverilated.a"),
                           "-o", str(tmp / lib.name)], capture_output=True, text=True)
    if proc.returncode:
        raise FastSimError(f"C++ build of the board harness failed:\n{proc.stderr[-4000:]}")
    info["build_seconds"] = time.perf_counter() - t0
    (tmp / "build.json").write_text(json.dumps({**info, "core": core_params}, indent=1,
                                               default=str))
    shutil.rmtree(obj, ignore_errors=True)
    if out.exists():
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        tmp.rename(out)
    if log:
        log(f"boardsim: built {lib} in {info['build_seconds']:.1f} s")
    return lib, info


class BoardSim:
    """One simulated board.

    Parameters
    ----------
    core : dict
        ``BoardCore`` parameters (``hw``, ``mem_size``, ``mem_backend``, ``divisor``,
        ``idle_timeout``).
    divisor : int, optional
        Cycles per UART bit in this run (default: ``core["divisor"]``); changing it needs no
        rebuild.
    """

    def __init__(self, core: dict, *, divisor: int | None = None, log=None):
        self.core = dict(core)
        self.lib_path, self.build_info = build(self.core, log=log)
        lib = ctypes.CDLL(str(self.lib_path))
        vp, u32, u64 = ctypes.c_void_p, ctypes.c_uint32, ctypes.c_uint64
        lib.board_new.restype = vp
        lib.board_new.argtypes = [u32]
        lib.board_free.argtypes = [vp]
        lib.board_feed.argtypes = [vp, ctypes.c_char_p, u64]
        lib.board_take.restype = u64
        lib.board_take.argtypes = [vp, ctypes.c_char_p, u64]
        lib.board_pending_out.restype = u64
        lib.board_pending_out.argtypes = [vp]
        lib.board_run.restype = u64
        lib.board_run.argtypes = [vp, u64]
        lib.board_set_divisor.argtypes = [vp, u32]
        lib.board_counter.restype = u64
        lib.board_counter.argtypes = [vp, ctypes.c_int]
        self._lib = lib
        self.divisor = int(core["divisor"] if divisor is None else divisor)
        if self.divisor < 4 or self.divisor >= 1 << 16:
            raise ValueError(f"divisor={self.divisor} must be in 4..65535 cycles per bit")
        self._h = lib.board_new(self.divisor)

    def close(self) -> None:
        if getattr(self, "_h", None):
            self._lib.board_free(self._h)
            self._h = None

    def __del__(self):
        self.close()

    def feed(self, data: bytes) -> None:
        """Queue bytes for the board's ``uart_rx`` (shifted in while :meth:`run` steps)."""
        self._lib.board_feed(self._h, bytes(data), len(data))

    def take(self) -> bytes:
        """Bytes the board has transmitted since the last call."""
        n = self._lib.board_pending_out(self._h)
        buf = ctypes.create_string_buffer(max(1, n))
        got = self._lib.board_take(self._h, buf, n)
        return buf.raw[:got]

    def run(self, max_cycles: int) -> int:
        """Step until quiescent or ``max_cycles``; returns the cycles stepped."""
        return self._lib.board_run(self._h, max_cycles)

    def exchange(self, data: bytes, reply_bytes: int = 0, *, max_cycles: int = 10**9) -> bytes:
        """Send ``data``, run until quiescent, return what came back (at least ``reply_bytes``)."""
        self.feed(data)
        out = b""
        spent = 0
        while True:
            n = self.run(max_cycles - spent)
            spent += n
            out += self.take()
            if n == 0 or spent >= max_cycles:
                break
        if len(out) < reply_bytes:
            raise FastSimError(f"board answered {len(out)} of {reply_bytes} bytes")
        return out

    @property
    def cycle(self) -> int:
        return self._lib.board_counter(self._h, 0)

    @property
    def last_active(self) -> int:
        """The last cycle a bit was on either line (or ``STATUS.busy`` was high)."""
        return self._lib.board_counter(self._h, 7)

    def counters(self) -> dict:
        names = ("cycle", "bytes_in", "bytes_out", "frame_errors", "busy", "done", "error",
                 "last_active")
        return {n: self._lib.board_counter(self._h, i) for i, n in enumerate(names)}


class BoardServer:
    """Serve a :class:`BoardSim`'s UART on ``127.0.0.1:port`` (one client at a time; the board
    keeps its state between clients, like a board that stays powered).

    Parameters
    ----------
    board : BoardSim
    port : int
        TCP port; 0 picks a free one (see :attr:`port`).
    batch : int
        Most cycles simulated between two looks at the socket.
    """

    def __init__(self, board: BoardSim, *, port: int = 0, batch: int = 200_000):
        if not 0 <= port < 65536:
            raise ValueError(f"port={port} is not a TCP port (0..65535)")
        self.board = board
        self.batch = batch
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", port))
        self._listener.listen(1)
        self.port = self._listener.getsockname()[1]
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.clients = 0

    @property
    def url(self) -> str:
        return f"socket://127.0.0.1:{self.port}"

    def start(self) -> "BoardServer":
        """Serve in a background thread (returns at once)."""
        self._thread = threading.Thread(target=self.serve_forever, name="board-server",
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._listener.close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def serve_forever(self) -> None:
        while not self._stop.is_set():
            ready, _, _ = select.select([self._listener], [], [], 0.1)
            if not ready:
                continue
            conn, _ = self._listener.accept()
            self.clients += 1
            with conn:
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                self._serve_client(conn)

    def _serve_client(self, conn: socket.socket) -> None:
        board = self.board
        active = False
        while not self._stop.is_set():
            # a quiescent board waits for the host; an active one only peeks at the socket
            ready, _, _ = select.select([conn], [], [], 0 if active else 0.05)
            if ready:
                data = conn.recv(65536)
                if not data:
                    return
                board.feed(data)
            stepped = board.run(self.batch)
            out = board.take()
            if out:
                try:
                    conn.sendall(out)
                except OSError:
                    return
            active = stepped > 0
