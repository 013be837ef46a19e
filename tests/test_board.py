"""The simulated board (``nms.verif.sim.boardsim``: Verilated BoardCore = accelerator + on-board
memory + UART + uartbone bridge, with a bit-level UART line) served on a loopback TCP port, and
the serial transport (``Driver(backend="fpga")``) against it: digits jobs equal to the bit-exact
model, an AXI error from a job reading outside the memory window, the window refusal, unaligned
memory access, raw frames, LiteX's ``litex_server`` + ``RemoteClient`` running a whole job
(optional extra ``litex``), and ``nms serve`` on the real ULX3S configuration (slow).

One small build of the board core serves every fast test (same accelerator shape as
``tests/test_rtl_backend.py``); every server runs in a thread of this process, stops at the end
of its test, and every socket read has a timeout, so nothing here can hang.
"""

from __future__ import annotations

import os
import re
import socket
import struct
import subprocess
import sys
import time

import numpy as np
import pytest

from nms.fpga.board_top import BOARD_CONFIGS, BoardConfig, core_params
from nms.rtl import regmap
from nms.rtl.board import CSR_BASE
from nms.sw.driver import TRANSPORTS, DeviceError, Driver, ModelDevice
from nms.sw.transport_serial import SerialTransport
from nms.verif.models import desne
from nms.verif.sim.boardsim import BoardServer, BoardSim

#: the boards' dataflow (nms.fpga.board_top: the streamed datapath, buffer_dim = 0): the one
#: streamed top build of the suite (the other whole-top tests build the default chunk buffer)
HW = {"lanes": 8, "tile": 4, "elem_width": 8, "max_dim": 64, "k": 4, "capacity": 64,
      "neg_samples": 2, "affinity_lanes": 2, "pair_units": 1, "buffer_dim": 0, "cand_tile": 1,
      "data_width": 64, "max_burst": 16}
MEM = 1 << 16
CORE = {"hw": HW, "mem_size": MEM, "divisor": 8, "idle_timeout": 5000}
CONFIG = BoardConfig(board="sim-small", hw={**HW, "bus": "wishbone"}, clock_hz=50e6,
                     mem_size=MEM, mem_backend="bram")
SCHEDULE = dict(n_iter=12, exaggeration_iters=4, momentum_switch=4, perplexity=3.0)


@pytest.fixture(scope="module")
def board():
    sim = BoardSim(CORE, divisor=8)
    with BoardServer(sim) as server:
        yield server
    sim.close()


@pytest.fixture
def serial(board):
    t = SerialTransport(port=board.url, config=CONFIG, timeout=60)
    yield t
    t.close()


def _digits(n):
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    return (X[:n] * 16).clip(0, 255).astype(np.uint8), y[:n]


def _config(**kw):
    return desne.DesneConfig(k=HW["k"], neg_samples=HW["neg_samples"], capacity=HW["capacity"],
                             **{**SCHEDULE, **kw})


def _model():
    return ModelDevice.from_hw(HW)


def test_fpga_backend_is_registered():
    assert "fpga" in TRANSPORTS


def test_digits_job_equals_model(serial):
    """150 digits, 10 class chunks, through UART frames only: the same coreset as the model."""
    X, y = _digits(150)
    got = Driver(serial, _config()).select(X, y, 0.1, seed=1)
    ref = Driver(_model(), _config()).select(X, y, 0.1, seed=1)
    np.testing.assert_array_equal(got["indices"], ref["indices"])
    assert got["counters"]["chunks"] == ref["counters"]["chunks"] == 10
    assert got["counters"]["near_bytes_read"] == ref["counters"]["near_bytes_read"]
    assert got["counters"]["cycles"] > 0
    assert serial.bytes_sent > X.size          # the data set went over the line


def test_second_job_other_schedule(serial):
    X, y = _digits(200)
    cfg = _config(search="bisect", allocation="proportional")
    got = Driver(serial, cfg).select(X, y, 0.2, seed=4)
    ref = Driver(_model(), cfg).select(X, y, 0.2, seed=4)
    np.testing.assert_array_equal(got["indices"], ref["indices"])


def test_job_outside_memory_ends_with_axi_error(serial):
    """SRC_ADDR past the block-RAM window: the memory answers DECERR, the job ends with
    AXI_READ_ERROR (it does not hang), and the next job runs normally."""
    drv = Driver(serial, _config())
    job = drv.job_values(16, 32, 4, seed=3)
    with pytest.raises(DeviceError, match="AXI|axi"):
        drv.run_job(job, MEM + 4096, 0x8000)
    st = regmap.REGMAP["STATUS"].unpack(serial.read_reg("STATUS"))
    assert regmap.CAUSE_BY_CODE[st["cause"]].name == "AXI_READ_ERROR"
    X, y = _digits(40)
    got = drv.select(X, y, 0.25, seed=2)
    ref = Driver(_model(), _config()).select(X, y, 0.25, seed=2)
    np.testing.assert_array_equal(got["indices"], ref["indices"])


def test_window_refusal_names_the_address(serial):
    with pytest.raises(DeviceError, match=r"0xfff0 .*outside the board memory \[0, 0x10000\)"):
        serial.write_mem(0xFFF0, bytes(32))
    with pytest.raises(DeviceError, match="outside the board memory"):
        serial.read_mem(MEM - 2, 4)


def test_unaligned_memory_round_trip(serial):
    rng = np.random.default_rng(5)
    base = bytes(rng.integers(0, 256, 64, dtype=np.uint8))
    serial.write_mem(0x2000, base)
    patch = b"\x01\x02\x03\x04\x05\x06\x07"
    serial.write_mem(0x2003, patch)
    expected = bytearray(base)
    expected[3:10] = patch
    assert serial.read_mem(0x2000, 64) == bytes(expected)
    assert serial.read_mem(0x2005, 3) == bytes(expected[5:8])
    long = bytes(rng.integers(0, 256, 4 * 300, dtype=np.uint8))   # > one 255-word read frame
    serial.write_mem(0x3000, long)
    assert serial.read_mem(0x3000, len(long)) == long


def test_raw_frames_and_null_region(board):
    """Frames built by hand on a plain socket: the ID register, a fixed-address read of it,
    and an address past the register map that reads 0 (acknowledged, never hangs)."""
    with socket.create_connection(("127.0.0.1", board.port), timeout=30) as s:
        def read(word_addr, n, cmd=0x02):
            s.sendall(bytes([cmd, n]) + word_addr.to_bytes(4, "big"))
            data = b""
            while len(data) < 4 * n:
                data += s.recv(4 * n - len(data))
            return list(struct.unpack(f">{n}I", data))
        assert read(CSR_BASE // 4, 1) == [regmap.ID_MAGIC]
        assert read(CSR_BASE // 4, 3, cmd=0x04) == [regmap.ID_MAGIC] * 3
        assert read((CSR_BASE + 0x1000_0000) // 4, 2) == [0, 0]


def test_transport_argument_errors():
    with pytest.raises(ValueError, match="capacity=512, not 64"):
        SerialTransport(port="socket://127.0.0.1:1", board="ulx3s-85f", capacity=64)
    with pytest.raises(ValueError, match="capacity=100"):
        SerialTransport(port="socket://127.0.0.1:1", capacity=100)
    with pytest.raises(ValueError, match="port must be"):
        SerialTransport(port="")
    with pytest.raises(DeviceError, match="cannot open"):
        SerialTransport(port="socket://127.0.0.1:1", board="ulx3s-85f")


class _LiteXTransport(SerialTransport):
    """The driver's transport on LiteX's RemoteClient (etherbone to litex_server): every
    register and memory access goes through LiteX's own host code."""

    def __init__(self, client, config):   # noqa: D107 - reuse the register map and checks only
        self.client = client
        self.config = config
        hw = config.hw
        self.board = config.board
        self.capacity, self.max_dim, self.k = hw["capacity"], hw["max_dim"], hw["k"]
        self.neg_samples, self.tile = hw["neg_samples"], hw["tile"]
        self.mem_size = config.mem_size
        self.job_timeout_s = 600.0
        self.read_frames = self.poll_frames = 0
        from nms.rtl.top import effective_registers

        regs = effective_registers()
        self._regs = {r.name: r for r in regs}
        self._addr = {r.name: CSR_BASE + 4 * i for i, r in enumerate(regs)}

    def write_words(self, addr, words):
        words = [int(w) for w in words]
        for i in range(0, len(words), 64):
            self.client.write(addr + 4 * i, words[i:i + 64])

    def read_words(self, addr, count):
        out = []
        for i in range(0, count, 255):
            n = min(255, count - i)
            self.read_frames += 1
            got = self.client.read(addr + 4 * i, length=n)
            out += list(got)
        return out

    def close(self):
        self.client.close()


def test_litex_remote_client_runs_a_job(board):
    """litex_server --uart on the simulated board's socket, RemoteClient in this process: the ID
    register, a memory round trip and a whole digits job equal to the model. LiteX comes with
    the ``dev`` extra; CI (``CI`` set) must have it, elsewhere the test is skipped without it."""
    if os.environ.get("CI"):
        import litex.tools.litex_client as litex_client
    else:
        litex_client = pytest.importorskip("litex.tools.litex_client")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        bind_port = probe.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "litex.tools.litex_server", "--uart", "--uart-port", board.url,
         "--bind-ip", "127.0.0.1", "--bind-port", str(bind_port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        client = None
        deadline = time.monotonic() + 60
        while client is None:
            try:
                client = litex_client.RemoteClient(host="127.0.0.1", port=bind_port)
                client.open()
            except OSError:
                client = None
                if time.monotonic() > deadline or server.poll() is not None:
                    raise
                time.sleep(0.2)
        assert client.read(CSR_BASE) == regmap.ID_MAGIC
        client.write(0x4000, [0x01020304, 0xCAFEF00D])
        assert client.read(0x4000, length=2) == [0x01020304, 0xCAFEF00D]
        t = _LiteXTransport(client, CONFIG)
        X, y = _digits(60)
        got = Driver(t, _config()).select(X, y, 0.2, seed=6)
        ref = Driver(_model(), _config()).select(X, y, 0.2, seed=6)
        np.testing.assert_array_equal(got["indices"], ref["indices"])
        client.close()
    finally:
        server.terminate()
        server.wait(timeout=30)


@pytest.mark.slow
def test_nms_serve_ulx3s_configuration():
    """``nms serve --board ulx3s-85f --sim`` (the real board configuration: generator-default
    accelerator, 128 KiB block RAM) in a subprocess that stops by itself; the serial transport
    with the board's own configuration runs a digits job on it equal to the model."""
    proc = subprocess.Popen([sys.executable, "-m", "nms.sw.cli", "serve", "--board", "ulx3s-85f",
                             "--sim", "--port", "0", "--seconds", "1500"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        url = None
        for line in proc.stdout:
            found = re.search(r"(socket://127\.0\.0\.1:\d+)", line)
            if found:
                url = found.group(1)
                break
        assert url, "nms serve printed no URL"
        t = SerialTransport(port=url, board="ulx3s-85f", timeout=120)
        cfg = desne.DesneConfig(**SCHEDULE).replace(k=t.k, neg_samples=t.neg_samples,
                                                    capacity=t.capacity)
        X, y = _digits(120)
        got = Driver(t, cfg).select(X, y, 0.1, seed=3)
        hw = BOARD_CONFIGS["ulx3s-85f"].hw
        ref = Driver(ModelDevice.from_hw(hw), cfg).select(X, y, 0.1, seed=3)
        np.testing.assert_array_equal(got["indices"], ref["indices"])
        t.close()
        assert core_params("ulx3s-85f")["mem_size"] == 128 * 1024
    finally:
        proc.terminate()
        proc.wait(timeout=60)
        proc.stdout.close()


def test_serve_refuses_icebreaker_sim():
    proc = subprocess.run([sys.executable, "-m", "nms.sw.cli", "serve", "--board", "icebreaker",
                           "--sim", "--port", "0", "--seconds", "1"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "SPRAM" in proc.stderr


def test_spram_backend_instantiates_four_sprams():
    """The iCEBreaker memory: 128 KiB = 2 banks x 2 halves of SB_SPRAM256KA, no inferred RAM."""
    from amaranth.back import rtlil

    from nms.rtl.boardmem import SPRAM_BYTES, BoardMemory

    text = rtlil.convert(BoardMemory(size=SPRAM_BYTES, data_width=32, backend="spram"))
    assert text.count("cell \\SB_SPRAM256KA") == 4
    assert "$mem" not in text
    half = rtlil.convert(BoardMemory(size=SPRAM_BYTES // 2, data_width=32, backend="spram"))
    assert half.count("cell \\SB_SPRAM256KA") == 2


@pytest.mark.parametrize("kwargs, match", [
    ({"size": 3000}, "not a power of two"),
    ({"size": 16}, "size=16 is out of range"),
    ({"size": 4096, "data_width": 128}, "not 32 or 64"),
    ({"size": 4096, "backend": "sdram"}, "backend='sdram'"),
    ({"size": 4096, "backend": "spram"}, "takes size="),
    ({"size": 65536, "data_width": 64, "backend": "spram"}, "data_width=32"),
])
def test_board_memory_parameter_checks(kwargs, match):
    from nms.rtl.boardmem import BoardMemory

    with pytest.raises(ValueError, match=match):
        BoardMemory(**kwargs)


def test_build_top_checks_parameters_before_any_tool(tmp_path):
    """``nms build --block top`` builds the job top; a bad accelerator parameter is refused
    while the top is constructed, before Yosys runs."""
    from nms.fpga.build import build

    with pytest.raises(TypeError, match="bogus"):
        build(board="icebreaker", block="top", params={"bogus": 1}, out_dir=tmp_path)
    with pytest.raises(ValueError, match="capacity=2"):
        build(board="icebreaker", block="top", params={"capacity": 2}, out_dir=tmp_path)
    assert not any(tmp_path.iterdir())
