"""``Driver(backend="fpga")``: a board running :class:`~nms.fpga.board_top.BoardJobTop`, reached over
a serial line with LiteX uartbone frames (:mod:`nms.rtl.uartbone` documents the wire format).

The port is anything pyserial opens: a device (``/dev/ttyUSB0``, ``COM3``) or a URL such as
``socket://127.0.0.1:5555`` — the simulated board of ``nms serve --board ... --sim`` — so the
same code runs against the board and against its simulation.

* Registers are at ``CSR_BASE + 4 * index`` of the effective map (``nms.rtl.top``).
* Memory writes are split into frames of at most 8 words, as LiteX's host does, and sent in
  bursts of many frames per write call (writes have no reply, so nothing waits between frames);
  reads use frames of up to 255 words. Unaligned edges are read-modify-written.
* A transfer outside the board's memory window is refused with :class:`DeviceError` naming the
  address and the window before anything is sent (the bridge itself has no error reply).
* A read that does not get all its bytes back within ``timeout`` raises :class:`DeviceError`.
"""

from __future__ import annotations

import struct
import time

from nms.fpga.board_top import BOARD_CONFIGS, CSR_BASE, BoardConfig, get_config
from nms.rtl.params import BUFFER_BANKS, BUFFER_DIM, CAND_TILE
from nms.rtl.top import effective_registers
from nms.rtl.uartbone import CMD_READ_INCR, CMD_WRITE_INCR, MAX_WORDS
from nms.sw.transport import DeviceError, Transport

__all__ = ["SerialTransport", "encode_write", "encode_read", "WRITE_FRAME_WORDS"]

#: LiteX's host (``comm_uart.py``) splits writes into frames of at most 8 words
WRITE_FRAME_WORDS = 8
#: frames per write call (one burst on the wire)
FRAMES_PER_BURST = 64


def encode_write(word_addr: int, words, *, cmd: int = CMD_WRITE_INCR) -> bytes:
    """One write frame: cmd, length, big-endian word address, big-endian words."""
    words = list(words)
    if not 1 <= len(words) <= MAX_WORDS:
        raise ValueError(f"a frame carries 1..{MAX_WORDS} words, not {len(words)}")
    return (bytes([cmd, len(words)]) + struct.pack(">I", word_addr)
            + struct.pack(f">{len(words)}I", *words))


def encode_read(word_addr: int, length: int, *, cmd: int = CMD_READ_INCR) -> bytes:
    """One read frame (the board answers ``4 * length`` bytes)."""
    if not 1 <= length <= MAX_WORDS:
        raise ValueError(f"a frame reads 1..{MAX_WORDS} words, not {length}")
    return bytes([cmd, length]) + struct.pack(">I", word_addr)


def _board_for(capacity):
    matches = [name for name, cfg in BOARD_CONFIGS.items() if cfg.hw["capacity"] == capacity]
    if len(matches) != 1:
        known = ", ".join(f"{n}: {c.hw['capacity']}" for n, c in BOARD_CONFIGS.items())
        raise ValueError(f"fpga: no single board configuration has capacity={capacity} "
                         f"({known}); name the board")
    return matches[0]


class SerialTransport(Transport):
    """A job board over a serial line.

    Parameters
    ----------
    port : str
        pyserial port name or URL (``/dev/ttyUSB0``, ``socket://127.0.0.1:5555``).
    board : str, optional
        Board configuration (``nms.fpga.board_top.BOARD_CONFIGS``); default: the one whose
        ``capacity`` equals ``capacity``, else ``ulx3s-85f``.
    capacity : int, optional
        Checked against the board's (``nms run --capacity``).
    baud : int, optional
        Line rate (default: the board's; ignored by ``socket://``).
    timeout : float
        Seconds a read may wait for its reply bytes.
    config : BoardConfig, optional
        A board configuration not in the table (e.g. a small simulated build); wins over
        ``board``.
    job_timeout_s : float
        Longest wait for one job (polling ``STATUS``).
    """

    name = "fpga"
    has_cycle_counter = True

    def __init__(self, *, port: str, board: str | None = None, capacity: int | None = None,
                 baud: int | None = None, timeout: float = 10.0, job_timeout_s: float = 3600.0,
                 config: BoardConfig | None = None):
        import serial

        if not isinstance(port, str) or not port:
            raise ValueError(f"fpga: port must be a device path or pyserial URL, not {port!r}")
        if config is not None:
            board = config.board
        elif board is None:
            board = _board_for(capacity) if capacity is not None else "ulx3s-85f"
        self.config = cfg = config if config is not None else get_config(board)
        hw = cfg.hw
        if capacity is not None and capacity != hw["capacity"]:
            raise ValueError(f"fpga: board {board} has capacity={hw['capacity']}, not {capacity}")
        self.board = board
        self.capacity, self.max_dim, self.k = hw["capacity"], hw["max_dim"], hw["k"]
        self.neg_samples, self.tile = hw["neg_samples"], hw["tile"]
        # the chunk buffer (and its limits, :attr:`params`): the board's, else the top's defaults
        self.lanes = hw.get("lanes", 8)
        self.buffer_dim = hw.get("buffer_dim", BUFFER_DIM)
        self.cand_tile = hw.get("cand_tile", CAND_TILE)
        self.buffer_banks = hw.get("buffer_banks", BUFFER_BANKS)
        self.mem_size = cfg.mem_size
        self.job_timeout_s = float(job_timeout_s)
        self.timeout = float(timeout)
        regs = effective_registers()
        self._regs = {r.name: r for r in regs}
        self._addr = {r.name: CSR_BASE + 4 * i for i, r in enumerate(regs)}
        try:
            self.serial = serial.serial_for_url(port, baudrate=baud or cfg.baud,
                                                timeout=self.timeout)
        except (serial.SerialException, ValueError) as exc:
            raise DeviceError(f"fpga: cannot open {port!r}: {exc}") from None
        self.port = port
        #: bytes sent / received on the line so far
        self.bytes_sent = 0
        self.bytes_received = 0
        #: read frames so far (each one a round trip: the host waits for its reply), and those
        #: of them that were STATUS polls inside :meth:`wait`
        self.read_frames = 0
        self.poll_frames = 0

    # -- the wire ---------------------------------------------------------------------------------
    def _send(self, data: bytes) -> None:
        self.serial.write(data)
        self.bytes_sent += len(data)

    def _receive(self, n: int) -> bytes:
        out = bytearray()
        deadline = time.monotonic() + self.timeout
        while len(out) < n:
            chunk = self.serial.read(n - len(out))
            out += chunk
            if len(out) < n and time.monotonic() > deadline:
                raise DeviceError(f"fpga: {self.port}: got {len(out)} of {n} reply bytes within "
                                  f"{self.timeout:g} s (board not answering?)")
        self.bytes_received += n
        return bytes(out)

    def write_words(self, addr: int, words) -> None:
        """Write 32-bit words from byte address ``addr`` (word-aligned), 8-word frames, bursts."""
        words = list(words)
        frames = [encode_write((addr >> 2) + i, words[i:i + WRITE_FRAME_WORDS])
                  for i in range(0, len(words), WRITE_FRAME_WORDS)]
        for i in range(0, len(frames), FRAMES_PER_BURST):
            self._send(b"".join(frames[i:i + FRAMES_PER_BURST]))

    def read_words(self, addr: int, count: int) -> list[int]:
        """Read ``count`` 32-bit words from byte address ``addr`` (word-aligned)."""
        out = []
        for i in range(0, count, MAX_WORDS):
            n = min(MAX_WORDS, count - i)
            self._send(encode_read((addr >> 2) + i, n))
            self.read_frames += 1
            out += struct.unpack(f">{n}I", self._receive(4 * n))
        return out

    # -- Transport ------------------------------------------------------------------------------
    def _reg(self, name):
        if name not in self._regs:
            raise DeviceError(f"fpga: no register {name!r} in the device's map")
        return self._regs[name]

    def read_reg(self, name: str) -> int:
        self._reg(name)
        return self.read_words(self._addr[name], 1)[0]

    def write_reg(self, name: str, value: int) -> None:
        reg = self._reg(name)
        if reg.access == "r":
            raise DeviceError(f"register {name} is read-only")
        if not 0 <= value < (1 << 32):
            raise ValueError(f"register {name}: value {value} does not fit in 32 bits")
        self.write_words(self._addr[name], [value])

    def _check_window(self, addr: int, size: int, what: str) -> None:
        if addr < 0 or size < 0 or addr + size > self.mem_size:
            raise DeviceError(f"fpga: {what} of {size} bytes at 0x{addr:x} is outside the board "
                              f"memory [0, 0x{self.mem_size:x}) of {self.board} "
                              f"({self.mem_size // 1024} KiB)")

    def write_mem(self, addr: int, data: bytes) -> None:
        data = bytes(data)
        self._check_window(addr, len(data), "write")
        if not data:
            return
        start, end = addr & ~3, (addr + len(data) + 3) & ~3
        buf = bytearray(end - start)
        if addr != start or (addr + len(data)) != end:   # partial edge words: read them first
            buf[:4] = struct.pack("<I", self.read_words(start, 1)[0])
            buf[-4:] = struct.pack("<I", self.read_words(end - 4, 1)[0])
        buf[addr - start:addr - start + len(data)] = data
        # memory is little-endian bytes within a word; the frame carries words big-endian
        self.write_words(start, struct.unpack(f"<{len(buf) // 4}I", bytes(buf)))

    def read_mem(self, addr: int, size: int) -> bytes:
        self._check_window(addr, size, "read")
        if size == 0:
            return b""
        start, end = addr & ~3, (addr + size + 3) & ~3
        words = self.read_words(start, (end - start) // 4)
        raw = struct.pack(f"<{len(words)}I", *words)
        return raw[addr - start:addr - start + size]

    def wait(self, timeout_s: float | None = None) -> None:
        """Poll STATUS until the job ends (counting the polls in :attr:`poll_frames`)."""
        before = self.read_frames
        try:
            super().wait(timeout_s)
        finally:
            self.poll_frames += self.read_frames - before

    def close(self) -> None:
        self.serial.close()
