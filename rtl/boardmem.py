"""On-board memory for the board tops: one RAM behind an AXI4 slave (the accelerator's master)
and a Wishbone slave (the host, through the UART bridge).

The RAM has one port, shared by both sides: an access of one side waits while the other side's
burst or access is in progress (the host does not touch memory while a job runs, so nothing waits
in practice; nothing can deadlock either, every burst completes by itself). Two back ends:

* ``"bram"`` — an ``amaranth.lib.memory.Memory`` of ``data_width``-bit words (block RAM on
  ECP5/iCE40, and what simulations use);
* ``"spram"`` — the iCE40 UP5K's ``SB_SPRAM256KA`` (16K x 16 each): two side by side make a
  32-bit word, two such banks give 32K words = 128 KiB. Only ``data_width = 32``.

AXI side: bursts are taken as INCR (the accelerator issues nothing else); one beat per cycle on
R and W; a beat outside the memory answers ``DECERR`` (reads return 0, writes are dropped), so a
job programmed with a bad address ends with ``AXI_READ_ERROR`` / ``AXI_WRITE_ERROR`` instead of
hanging. Wishbone side: 32-bit words at word addresses, byte selects honoured; outside the memory
reads return 0 and writes are dropped (the bridge has no error channel; the host checks
addresses before it sends them).
"""

from __future__ import annotations

from amaranth import Cat, ClockSignal, Const, Instance, Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In
from amaranth.utils import exact_log2

from nms.rtl.axi import RESP_DECERR, RESP_OKAY, axi4_signature, check_data_width
from nms.rtl.params import check_int
from nms.rtl.uartbone import wishbone_signature

__all__ = ["BoardMemory", "BACKENDS", "SPRAM_BYTES"]

BACKENDS = ("bram", "spram")
#: four SB_SPRAM256KA of 32 KiB on the iCE40 UP5K
SPRAM_BYTES = 4 * 32 * 1024


class BoardMemory(wiring.Component):
    """A RAM of ``size`` bytes at address 0 of both buses.

    Parameters
    ----------
    size : int
        Bytes (a power of two, at least 8 data words).
    data_width : int
        AXI data width and RAM word width: 32 or 64 (``"spram"``: 32).
    addr_width : int
        AXI address width (default 32).
    backend : str
        ``"bram"`` or ``"spram"`` (see the module doc).

    Attributes
    ----------
    axi : In(axi4_signature(...))
        AXI4 slave (connect the accelerator's ``m_axi_*`` member by member).
    wb : In(wishbone_signature(addr_width=30))
        Wishbone classic slave, 32-bit words at word addresses.
    """

    def __init__(self, *, size: int, data_width: int = 32, addr_width: int = 32,
                 backend: str = "bram"):
        check_data_width(data_width)
        if data_width not in (32, 64):
            raise ValueError(f"data_width={data_width} is not 32 or 64")
        if backend not in BACKENDS:
            raise ValueError(f"backend={backend!r} is not one of {', '.join(BACKENDS)}")
        nbytes = data_width // 8
        check_int("size", size, 8 * nbytes, 1 << 30, f"{8 * nbytes} bytes to 1 GiB")
        if size & (size - 1):
            raise ValueError(f"size={size} is not a power of two")
        if backend == "spram":
            if data_width != 32:
                raise ValueError(f"backend='spram' takes data_width=32, not {data_width}")
            if size not in (SPRAM_BYTES // 2, SPRAM_BYTES):
                raise ValueError(f"backend='spram' takes size={SPRAM_BYTES // 2} or {SPRAM_BYTES} "
                                 f"(two or four SB_SPRAM256KA), not {size}")
        self.size, self.data_width, self.addr_width, self.backend = size, data_width, addr_width, backend
        self.words = size // nbytes
        super().__init__({"axi": In(axi4_signature(addr_width=addr_width, data_width=data_width)),
                          "wb": In(wishbone_signature(addr_width=30))})

    # ---- the one RAM port: addr, en, byte write mask, write data; read data one cycle later,
    # held while en is low
    def _bram(self, m, addr, en, mask, wdata):
        m.submodules.ram = ram = Memory(shape=self.data_width, depth=self.words, init=[])
        rd = ram.read_port()
        wr = ram.write_port(granularity=8)
        m.d.comb += [rd.addr.eq(addr), rd.en.eq(en), wr.addr.eq(addr), wr.data.eq(wdata),
                     wr.en.eq(Mux(en, mask, 0))]
        return rd.data

    def _spram(self, m, addr, en, mask, wdata):
        banks = self.size // (SPRAM_BYTES // 2)
        outs = []
        bank_q = Signal(range(max(2, banks)))
        bank = addr[14:] if banks > 1 else Const(0, 1)
        with m.If(en):
            m.d.sync += bank_q.eq(bank)
        for b in range(banks):
            halves = []
            for h in range(2):
                dout = Signal(16, name=f"spram{b}{h}_dout")
                nib = Cat(*[mask[2 * h + i].replicate(2) for i in range(2)])
                m.submodules[f"spram{b}{h}"] = Instance(
                    "SB_SPRAM256KA",
                    i_ADDRESS=addr[:14], i_DATAIN=wdata[16 * h:16 * h + 16], i_MASKWREN=nib,
                    i_WREN=mask.any(), i_CHIPSELECT=en & (bank == b), i_CLOCK=ClockSignal("sync"),
                    i_STANDBY=0, i_SLEEP=0, i_POWEROFF=1, o_DATAOUT=dout)
                halves.append(dout)
            outs.append(Cat(*halves))
        return Mux(bank_q, outs[-1], outs[0]) if banks > 1 else outs[0]

    def elaborate(self, platform):
        m = Module()
        axi, wb = self.axi, self.wb
        nbytes = self.data_width // 8
        shift = exact_log2(nbytes)
        lanes32 = self.data_width // 32
        addr_bits = exact_log2(self.words)
        addr = Signal(addr_bits)
        en = Signal()
        mask = Signal(nbytes)
        wdata = Signal(self.data_width)
        port_data = (self._bram if self.backend == "bram" else self._spram)(m, addr, en, mask, wdata)

        def in_range(word_index):
            return (word_index >> addr_bits) == 0

        # ---- Wishbone access: one RAM cycle, ack the next cycle
        wb_word = wb.adr >> exact_log2(lanes32) if lanes32 > 1 else wb.adr
        wb_lane = Signal(max(1, exact_log2(lanes32)))
        wb_ok = Signal()
        m.d.comb += wb.dat_r.eq(Mux(wb_ok, port_data.word_select(wb_lane, 32) if lanes32 > 1
                                    else port_data, 0))

        # ---- AXI read / write state
        raddr = Signal(self.addr_width)
        rleft = Signal(9)
        rv, rlast, rerr = Signal(), Signal(), Signal()
        rid = Signal.like(axi.arid)
        waddr = Signal(self.addr_width)
        werr = Signal()
        wid = Signal.like(axi.awid)
        m.d.comb += [axi.rvalid.eq(rv), axi.rlast.eq(rlast), axi.rid.eq(rid),
                     axi.rresp.eq(Mux(rerr, RESP_DECERR, RESP_OKAY)),
                     axi.rdata.eq(Mux(rerr, 0, port_data)),
                     axi.bid.eq(wid), axi.bresp.eq(Mux(werr, RESP_DECERR, RESP_OKAY))]

        with m.FSM(name="mem"):
            with m.State("IDLE"):
                with m.If(wb.cyc & wb.stb):
                    ok = in_range(wb_word)
                    sel = wb.sel
                    if lanes32 > 1:
                        sel = (wb.sel << (4 * _wb_lane(wb.adr, lanes32)))[:nbytes]
                    m.d.comb += [addr.eq(wb_word), en.eq(1),
                                 mask.eq(Mux(wb.we & ok, sel, 0)),
                                 wdata.eq(wb.dat_w.replicate(lanes32))]
                    m.d.sync += [wb_ok.eq(ok), wb_lane.eq(_wb_lane(wb.adr, lanes32))]
                    m.next = "WB_ACK"
                with m.Elif(axi.arvalid):
                    m.d.comb += axi.arready.eq(1)
                    m.d.sync += [raddr.eq(axi.araddr >> shift), rleft.eq(axi.arlen + 1),
                                 rid.eq(axi.arid)]
                    m.next = "READ"
                with m.Elif(axi.awvalid):
                    m.d.comb += axi.awready.eq(1)
                    m.d.sync += [waddr.eq(axi.awaddr >> shift), werr.eq(0), wid.eq(axi.awid)]
                    m.next = "WRITE"
            with m.State("WB_ACK"):
                m.d.comb += wb.ack.eq(1)
                m.next = "IDLE"
            with m.State("READ"):
                issue = rleft != 0
                advance = ~rv | axi.rready
                m.d.comb += [addr.eq(raddr), en.eq(advance & issue)]
                with m.If(advance):
                    m.d.sync += [rv.eq(issue), rlast.eq(rleft == 1), rerr.eq(~in_range(raddr))]
                    with m.If(issue):
                        m.d.sync += [raddr.eq(raddr + 1), rleft.eq(rleft - 1)]
                    with m.Else():
                        m.next = "IDLE"
            with m.State("WRITE"):
                m.d.comb += [axi.wready.eq(1), addr.eq(waddr)]
                with m.If(axi.wvalid):
                    ok = in_range(waddr)
                    m.d.comb += [en.eq(1), mask.eq(Mux(ok, axi.wstrb, 0)), wdata.eq(axi.wdata)]
                    m.d.sync += [waddr.eq(waddr + 1), werr.eq(werr | ~ok)]
                    with m.If(axi.wlast):
                        m.next = "BRESP"
            with m.State("BRESP"):
                m.d.comb += axi.bvalid.eq(1)
                with m.If(axi.bready):
                    m.next = "IDLE"
        return m


def _wb_lane(adr, lanes32):
    """Which 32-bit lane of a RAM word a Wishbone word address selects."""
    return adr[:exact_log2(lanes32)] if lanes32 > 1 else Const(0, 1)
