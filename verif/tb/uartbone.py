"""cocotb testbench of :class:`nms.rtl.uartbone.UartboneBridge` against an independent frame
encoder and a Python model of the bus.

The DUT (:class:`UartboneDut`) is the bridge on a small Wishbone slave with random wait states:
256 words of RAM, a *counter* word that answers 0, 1, 2 ... on successive reads (so a fixed-address
read is seen to read the same address ``length`` times, not once) and an *accumulator* word that
adds every word written to it (so a fixed-address write is seen to write ``length`` times).
Bytes enter on the ``rx`` stream with random idle cycles and replies leave on ``tx`` under
random back-pressure. Frames are built here from the protocol's description (LiteX
``Stream2Wishbone``), not with the serial transport's encoder.
"""

from __future__ import annotations

import random

import cocotb
from cocotb.triggers import ClockCycles
from amaranth import Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from nms.rtl.uartbone import UartboneBridge
from nms.verif.sim.build import tb_params
from nms.verif.sim.streams import CycleLoop, StreamDriver, StreamMonitor, start_clock

#: word addresses of the test slave's special words
COUNTER_WORD = 0x1000
ACCUMULATOR_WORD = 0x1001
RAM_WORDS = 256


class UartboneDut(wiring.Component):
    """The bridge on the test slave (see the module doc); ``wait_seed`` seeds the wait states."""

    def __init__(self, *, idle_timeout: int, wait_seed: int = 0xACE1):
        self.bridge = UartboneBridge(idle_timeout=idle_timeout)
        self.wait_seed = wait_seed
        super().__init__({"rx": In(stream.Signature(8)), "tx": Out(stream.Signature(8)),
                          "idle": Out(1), "timeouts": Out(16), "accesses": Out(32)})

    def elaborate(self, platform):
        m = Module()
        m.submodules.bridge = br = self.bridge
        wiring.connect(m, wiring.flipped(self.rx), br.rx)
        wiring.connect(m, br.tx, wiring.flipped(self.tx))
        m.d.comb += [self.idle.eq(br.idle), self.timeouts.eq(br.timeouts)]
        m.submodules.ram = ram = Memory(shape=32, depth=RAM_WORDS, init=[])
        rd = ram.read_port(domain="comb")
        wr = ram.write_port(granularity=8)
        bus = br.bus
        lfsr = Signal(16, init=self.wait_seed)
        m.d.sync += lfsr.eq((lfsr << 1) | (lfsr[15] ^ lfsr[13] ^ lfsr[12] ^ lfsr[10]))
        counter, acc = Signal(32), Signal(32)
        wait = Signal(2)
        is_ram = (bus.adr >> 8) == 0
        m.d.comb += [rd.addr.eq(bus.adr[:8]), wr.addr.eq(bus.adr[:8]), wr.data.eq(bus.dat_w)]
        with m.If(bus.adr == COUNTER_WORD):
            m.d.comb += bus.dat_r.eq(counter)
        with m.Elif(bus.adr == ACCUMULATOR_WORD):
            m.d.comb += bus.dat_r.eq(acc)
        with m.Elif(is_ram):
            m.d.comb += bus.dat_r.eq(rd.data)
        with m.FSM():
            with m.State("IDLE"):
                with m.If(bus.cyc & bus.stb):
                    m.d.sync += wait.eq(lfsr[:2])
                    m.next = "WAIT"
            with m.State("WAIT"):
                with m.If(wait != 0):
                    m.d.sync += wait.eq(wait - 1)
                with m.Else():
                    m.d.comb += bus.ack.eq(1)
                    m.d.sync += self.accesses.eq(self.accesses + 1)
                    with m.If(bus.we):
                        with m.If(bus.adr == ACCUMULATOR_WORD):
                            m.d.sync += acc.eq(acc + bus.dat_w)
                        with m.Elif(is_ram):
                            m.d.comb += wr.en.eq(bus.sel)
                    with m.Elif(bus.adr == COUNTER_WORD):
                        m.d.sync += counter.eq(counter + 1)
                    m.next = "GAP"
            with m.State("GAP"):
                m.next = "IDLE"
        return m


# ---- an independent encoder of the frames ------------------------------------------------------

def write_frame(word_addr: int, words, *, fixed: bool = False) -> bytes:
    cmd = 0x03 if fixed else 0x01
    out = bytes([cmd, len(words)]) + word_addr.to_bytes(4, "big")
    for w in words:
        out += int(w).to_bytes(4, "big")
    return out


def read_frame(word_addr: int, length: int, *, fixed: bool = False) -> bytes:
    return bytes([0x04 if fixed else 0x02, length]) + word_addr.to_bytes(4, "big")


def words_of(reply: list[int]) -> list[int]:
    return [int.from_bytes(bytes(reply[i:i + 4]), "big") for i in range(0, len(reply), 4)]


class Bench:
    def __init__(self, dut):
        self.dut = dut
        self.params = tb_params()
        self.timeout = self.params["idle_timeout"]
        seed = self.params.get("seed", 1)
        self.rng = random.Random(seed)
        self.loop = CycleLoop(dut.clk)
        self.rx = StreamDriver(dut, "rx", loop=self.loop, idle=self.params.get("idle"), seed=seed)
        self.tx = StreamMonitor(dut, "tx", loop=self.loop, sink=True,
                                backpressure=self.params.get("backpressure"), seed=seed + 1)
        self.ram = {}   # word address -> value: the model of the slave's RAM

    async def start(self):
        await start_clock(self.dut)
        self.loop.start()

    def send(self, data: bytes) -> None:
        self.rx.extend(data)

    async def reply(self, nbytes: int) -> list[int]:
        """Wait for ``nbytes`` more reply bytes; return them."""
        have = len(self.tx.beats)
        await self.tx.wait_count(have + nbytes, timeout_cycles=200 * (nbytes + 64))
        return self.tx.beats[have:have + nbytes]

    async def settle(self) -> None:
        """Wait until every byte was taken and the bridge is between frames."""
        await self.rx.wait_done(timeout_cycles=100_000)
        await self.loop.wait_until(lambda: int(self.dut.idle.value) == 1, timeout_cycles=10_000,
                                   what="bridge idle")
        await ClockCycles(self.dut.clk, 8)

    def check(self) -> None:
        assert not self.tx.protocol_errors, self.tx.protocol_errors[:3]


async def _bench(dut) -> Bench:
    b = Bench(dut)
    await b.start()
    return b


@cocotb.test()
async def write_then_read_incr(dut):
    """Random writes (1..8 words per frame, back to back) read back in one and in many frames."""
    b = await _bench(dut)
    for _ in range(20):
        n = b.rng.randrange(1, 9)
        addr = b.rng.randrange(0, RAM_WORDS - n + 1)
        words = [b.rng.getrandbits(32) for _ in range(n)]
        b.send(write_frame(addr, words))
        b.ram.update({addr + i: w for i, w in enumerate(words)})
    await b.settle()
    addrs = sorted(b.ram)
    lo, hi = addrs[0], addrs[-1]
    b.send(read_frame(lo, hi - lo + 1))
    got = words_of(await b.reply(4 * (hi - lo + 1)))
    for a in addrs:
        assert got[a - lo] == b.ram[a], f"word 0x{a:x}: got 0x{got[a - lo]:08x}, wrote 0x{b.ram[a]:08x}"
    for a in b.rng.sample(addrs, 10):
        b.send(read_frame(a, 1))
        assert words_of(await b.reply(4)) == [b.ram[a]]
    b.check()


@cocotb.test()
async def fixed_address(dut):
    """Fixed-address frames access the same word ``length`` times; incrementing ones do not."""
    b = await _bench(dut)
    b.send(read_frame(COUNTER_WORD, 7, fixed=True))
    assert words_of(await b.reply(28)) == list(range(7))
    words = [b.rng.getrandbits(32) for _ in range(8)]
    b.send(write_frame(ACCUMULATOR_WORD, words, fixed=True))
    b.send(read_frame(ACCUMULATOR_WORD, 1, fixed=True))
    assert words_of(await b.reply(4)) == [sum(words) & 0xFFFF_FFFF]
    # into RAM: the last word stays, the neighbours are untouched
    b.send(write_frame(10, [1, 2, 3, 4]))
    b.send(write_frame(11, [0xA, 0xB, 0xC], fixed=True))
    b.send(read_frame(10, 4))
    assert words_of(await b.reply(16)) == [1, 0xC, 3, 4]
    b.check()


@cocotb.test()
async def max_length_frames(dut):
    """255 words (the length byte's maximum) written, read back incrementing and fixed."""
    b = await _bench(dut)
    words = [b.rng.getrandbits(32) for _ in range(255)]
    b.send(write_frame(0, words))
    b.send(read_frame(0, 255))
    assert words_of(await b.reply(1020)) == words
    b.send(read_frame(COUNTER_WORD, 255, fixed=True))
    assert words_of(await b.reply(1020)) == list(range(255))
    b.check()


@cocotb.test()
async def resync_after_idle(dut):
    """A frame cut short is dropped after ``idle_timeout`` cycles without a byte; a pause
    shorter than that does not break a frame."""
    b = await _bench(dut)
    t = b.timeout
    b.send(write_frame(5, [0, 0]))                           # known contents (RAM persists)
    await b.settle()
    before = int(dut.timeouts.value)
    b.send(write_frame(5, [0x11111111, 0x22222222])[:9])    # cmd, len, address, 3 data bytes
    await b.rx.wait_done(timeout_cycles=10_000)
    await ClockCycles(dut.clk, t + 20)
    assert int(dut.timeouts.value) == before + 1
    assert int(dut.idle.value) == 1
    b.send(write_frame(5, [0x33333333]))
    b.send(read_frame(5, 2))
    assert words_of(await b.reply(8)) == [0x33333333, 0]
    # a pause of t - 20 cycles mid-frame: the frame completes
    frame = write_frame(6, [0x44444444, 0x55555555])
    b.send(frame[:8])
    await b.rx.wait_done(timeout_cycles=10_000)
    await ClockCycles(dut.clk, t - 20)
    b.send(frame[8:])
    b.send(read_frame(5, 3))
    assert words_of(await b.reply(12)) == [0x33333333, 0x44444444, 0x55555555]
    assert int(dut.timeouts.value) == before + 1
    b.check()


@cocotb.test()
async def back_to_back_and_ignored_frames(dut):
    """Many frames queued at once, reads interleaved with writes, an unknown command and an
    empty frame in between: every reply in order, every ignored frame without effect."""
    b = await _bench(dut)
    expected = []
    accesses0 = int(dut.accesses.value)
    accesses = 0
    for i in range(30):
        kind = b.rng.randrange(4)
        if kind == 0:
            b.send(bytes([0x07, 3]) + (40).to_bytes(4, "big"))      # unknown: ignored
        elif kind == 1:
            b.send(read_frame(41, 0))                               # empty: nothing
        elif kind == 2 or not b.ram:
            n = b.rng.randrange(1, 9)
            addr = b.rng.randrange(100, 200)
            words = [b.rng.getrandbits(32) for _ in range(n)]
            b.send(write_frame(addr, words))
            b.ram.update({addr + j: w for j, w in enumerate(words)})
            accesses += n
        else:
            addr = b.rng.choice(sorted(b.ram))
            n = 1
            while addr + n in b.ram and n < 5:
                n += 1
            b.send(read_frame(addr, n))
            expected += [b.ram[addr + j] for j in range(n)]
            accesses += n
    got = words_of(await b.reply(4 * len(expected)))
    assert got == expected
    await b.settle()
    assert int(dut.accesses.value) - accesses0 == accesses
    b.check()
