"""A byte-stream to Wishbone bridge speaking the LiteX "uartbone" wire protocol.

With it ``litex_server --uart``, LiteX's ``RemoteClient`` and ``wishbone-tool`` talk to the
board unchanged (protocol read in LiteX ``soc/cores/uart.py`` ``Stream2Wishbone`` and
``tools/remote/comm_uart.py``; see ``shared/research/soc-and-sim.md`` §3). One frame::

    cmd (1 byte) | length (1 byte, 32-bit words) | word address (4 bytes, big-endian) | data

======  ==================================  =========================================
cmd     meaning                             data
======  ==================================  =========================================
0x01    write, address increments           ``length`` words, big-endian, no reply
0x02    read, address increments            none; the reply is ``length`` x 4 bytes
0x03    write, fixed address                as 0x01
0x04    read, fixed address                 as 0x02
======  ==================================  =========================================

Other command bytes: the length and address are consumed and the frame is ignored (as LiteX
does). ``length = 0`` is an empty frame: nothing is accessed and nothing is answered (LiteX's
own gateware would wrap it to 256 words; its host never sends it).

Resynchronisation: a frame that stops arriving part-way (a host that crashed, line noise) is
dropped after ``idle_timeout`` clock cycles without a byte (``~100 ms`` on a board), and the next
byte is taken as a command again. The timer runs only while the bridge waits for a byte of an
unfinished frame — never while it waits for the bus or for the transmitter.

The bus side is a Wishbone classic master, 32-bit data, 30-bit word addresses
(:func:`wishbone_signature`); the 32-bit word address of a frame keeps its low 30 bits. Every
access is one single cycle of ``cyc``/``stb`` held until ``ack``.
"""

from __future__ import annotations

from amaranth import C, Cat, Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from nms.rtl.params import check_int

__all__ = ["CMD_WRITE_INCR", "CMD_READ_INCR", "CMD_WRITE_FIXED", "CMD_READ_FIXED",
           "MAX_WORDS", "wishbone_signature", "UartboneBridge"]

CMD_WRITE_INCR, CMD_READ_INCR, CMD_WRITE_FIXED, CMD_READ_FIXED = 0x01, 0x02, 0x03, 0x04
#: the longest frame: the length is one byte
MAX_WORDS = 255


def wishbone_signature(*, addr_width: int = 30) -> wiring.Signature:
    """Wishbone classic master (``Out`` = master drives): 32-bit data, word addresses."""
    check_int("addr_width", addr_width, 1, 30, "1 to 30 word-address bits")
    return wiring.Signature({
        "adr": Out(addr_width), "dat_w": Out(32), "dat_r": In(32), "sel": Out(4),
        "cyc": Out(1), "stb": Out(1), "we": Out(1), "ack": In(1)})


class UartboneBridge(wiring.Component):
    """uartbone frames in on ``rx``, replies out on ``tx``, accesses on the Wishbone ``bus``.

    Parameters
    ----------
    idle_timeout : int
        Clock cycles without a byte after which an unfinished frame is dropped (LiteX: 100 ms of
        the system clock).

    Attributes
    ----------
    rx : In(stream.Signature(8))
        Bytes from the host.
    tx : Out(stream.Signature(8))
        Read replies to the host.
    bus : Out(wishbone_signature())
    idle : Out(1)
        Waiting for a command byte (between frames).
    timeouts : Out(16)
        Frames dropped by the idle timer (wraps).
    """

    def __init__(self, *, idle_timeout: int):
        check_int("idle_timeout", idle_timeout, 2, (1 << 32) - 1, "2 to 2**32-1 cycles")
        self.idle_timeout = idle_timeout
        super().__init__({"rx": In(stream.Signature(8)), "tx": Out(stream.Signature(8)),
                          "bus": Out(wishbone_signature()), "idle": Out(1),
                          "timeouts": Out(16)})

    def elaborate(self, platform):
        m = Module()
        rx, tx, bus = self.rx, self.tx, self.bus
        cmd = Signal(8)
        length = Signal(8)
        address = Signal(32)
        word = Signal(32)
        nbyte = Signal(2)             # byte of the address / data word being shifted
        nword = Signal(8)             # words of this frame done
        incr = Signal()
        timer = Signal(range(self.idle_timeout + 1))
        last_word = nword == length - 1
        is_write = (cmd == CMD_WRITE_INCR) | (cmd == CMD_WRITE_FIXED)
        is_read = (cmd == CMD_READ_INCR) | (cmd == CMD_READ_FIXED)
        take = rx.valid & rx.ready

        m.d.comb += [bus.adr.eq(address[:30]), bus.dat_w.eq(word), bus.sel.eq(0b1111),
                     tx.payload.eq(word[24:32])]
        waiting = Signal()            # inside a frame, waiting for the host's next byte
        with m.If(~waiting | take):
            m.d.sync += timer.eq(0)
        with m.Else():
            m.d.sync += timer.eq(timer + 1)
        expired = waiting & ~rx.valid & (timer == self.idle_timeout - 1)
        with m.If(expired):
            m.d.sync += self.timeouts.eq(self.timeouts + 1)

        with m.FSM(name="uartbone"):
            with m.State("CMD"):
                m.d.comb += [rx.ready.eq(1), self.idle.eq(1)]
                with m.If(rx.valid):
                    m.d.sync += [cmd.eq(rx.payload), nbyte.eq(0), nword.eq(0)]
                    m.next = "LENGTH"
            with m.State("LENGTH"):
                m.d.comb += [rx.ready.eq(1), waiting.eq(1)]
                with m.If(rx.valid):
                    m.d.sync += length.eq(rx.payload)
                    m.next = "ADDRESS"
                with m.Elif(expired):
                    m.next = "CMD"
            with m.State("ADDRESS"):
                m.d.comb += [rx.ready.eq(1), waiting.eq(1)]
                with m.If(rx.valid):
                    m.d.sync += [address.eq(Cat(rx.payload, address[:24])), nbyte.eq(nbyte + 1)]
                    with m.If(nbyte == 3):
                        m.d.sync += incr.eq((cmd == CMD_WRITE_INCR) | (cmd == CMD_READ_INCR))
                        with m.If(length == 0):
                            m.next = "CMD"
                        with m.Elif(is_write):
                            m.next = "WRITE_DATA"
                        with m.Elif(is_read):
                            m.next = "READ_BUS"
                        with m.Else():
                            m.next = "CMD"
                with m.Elif(expired):
                    m.next = "CMD"
            with m.State("WRITE_DATA"):
                m.d.comb += [rx.ready.eq(1), waiting.eq(1)]
                with m.If(rx.valid):
                    m.d.sync += [word.eq(Cat(rx.payload, word[:24])), nbyte.eq(nbyte + 1)]
                    with m.If(nbyte == 3):
                        m.next = "WRITE_BUS"
                with m.Elif(expired):
                    m.next = "CMD"
            with m.State("WRITE_BUS"):
                m.d.comb += [bus.cyc.eq(1), bus.stb.eq(1), bus.we.eq(1)]
                with m.If(bus.ack):
                    m.d.sync += [nword.eq(nword + 1), address.eq(address + incr)]
                    m.next = "WRITE_NEXT"
            with m.State("WRITE_NEXT"):
                # one cycle between accesses: Wishbone classic slaves see cyc drop after ack
                with m.If(nword == length):
                    m.next = "CMD"
                with m.Else():
                    m.next = "WRITE_DATA"
            with m.State("READ_BUS"):
                m.d.comb += [bus.cyc.eq(1), bus.stb.eq(1)]
                with m.If(bus.ack):
                    m.d.sync += [word.eq(bus.dat_r), nbyte.eq(0)]
                    m.next = "READ_SEND"
            with m.State("READ_SEND"):
                m.d.comb += tx.valid.eq(1)
                with m.If(tx.ready):
                    m.d.sync += [word.eq(Cat(C(0, 8), word[:24])), nbyte.eq(nbyte + 1)]
                    with m.If(nbyte == 3):
                        m.d.sync += [nword.eq(nword + 1), address.eq(address + incr)]
                        with m.If(last_word):
                            m.next = "CMD"
                        with m.Else():
                            m.next = "READ_BUS"
        return m
