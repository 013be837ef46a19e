"""AXI4 toward DDR: the signature, a burst read master and a burst write master.

There is no pip-installable Amaranth AXI4 library, so the protocol lives here (structure after
LiteX ``axi_full.py`` / LiteDRAM ``frontend/dma.py``, see ``shared/research/soc-and-sim.md``):

* :func:`axi4_signature` — the five channels as flat members named like the AXI spec
  (``awaddr``, ``rvalid`` ...), so a prefix ``m_axi_`` gives the conventional Verilog port names
  Vivado / LiteX / cocotbext-axi expect.
* :class:`AxiBurstReader` — a transfer ``{addr, beats}`` becomes INCR bursts of at most
  ``max_burst`` beats that never cross a 4 KiB boundary; an AR is issued only when the data FIFO
  has room for the whole burst (credits), so R is never back-pressured; RRESP is checked.
* :class:`AxiBurstWriter` — a transfer ``{addr, beats}`` fed with ``{data, strb}`` beats becomes
  INCR bursts under the same two rules; an AW is issued only when its whole burst is buffered,
  so W never stalls the interconnect; BRESP is checked.

One ID (0) for everything: responses come back in order. Both masters take ``abort``: nothing
new is issued, what was issued completes (AXI has no way to cancel a burst), read data of an
aborted transfer is dropped; ``idle`` says when nothing is outstanding.
"""

from __future__ import annotations

from amaranth import Cat, Module, Mux, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2, exact_log2

from nms.rtl.params import check_int

__all__ = ["RESP_OKAY", "RESP_EXOKAY", "RESP_SLVERR", "RESP_DECERR", "axi4_signature",
           "axi4_lite_signature", "AxiBurstReader", "AxiBurstWriter", "check_data_width"]

RESP_OKAY, RESP_EXOKAY, RESP_SLVERR, RESP_DECERR = 0, 1, 2, 3
#: AXI4 rule: a burst never crosses a 4 KiB address boundary
BOUNDARY = 4096
BURST_INCR = 1
#: ARCACHE/AWCACHE "normal non-cacheable bufferable": what a DMA master conventionally drives
CACHE_NORMAL = 0b0011


def check_data_width(data_width: int) -> int:
    check_int("data_width", data_width, 32, 128, "32, 64 or 128 bits")
    if data_width not in (32, 64, 128):
        raise ValueError(f"data_width={data_width} is not one of 32, 64, 128")
    return data_width


def axi4_signature(*, addr_width: int = 32, data_width: int = 64, id_width: int = 1):
    """AXI4 master-side signature (flat members, AXI spec names; ``Out`` = master drives)."""
    check_int("addr_width", addr_width, 13, 64, "13 to 64 bits")
    check_data_width(data_width)
    check_int("id_width", id_width, 1, 16, "1 to 16 bits")
    nbytes = data_width // 8
    members = {}
    for ch in ("aw", "ar"):
        members.update({
            f"{ch}id": Out(id_width), f"{ch}addr": Out(addr_width), f"{ch}len": Out(8),
            f"{ch}size": Out(3), f"{ch}burst": Out(2), f"{ch}lock": Out(1), f"{ch}cache": Out(4),
            f"{ch}prot": Out(3), f"{ch}valid": Out(1), f"{ch}ready": In(1)})
    members.update({
        "wdata": Out(data_width), "wstrb": Out(nbytes), "wlast": Out(1), "wvalid": Out(1),
        "wready": In(1),
        "bid": In(id_width), "bresp": In(2), "bvalid": In(1), "bready": Out(1),
        "rid": In(id_width), "rdata": In(data_width), "rresp": In(2), "rlast": In(1),
        "rvalid": In(1), "rready": Out(1)})
    return wiring.Signature(members)


def axi4_lite_signature(*, addr_width: int = 16, data_width: int = 32):
    """AXI4-Lite master-side signature (flat members, AXI spec names)."""
    check_int("addr_width", addr_width, 2, 64, "2 to 64 bits")
    check_int("data_width", data_width, 32, 32, "32 bits")
    return wiring.Signature({
        "awaddr": Out(addr_width), "awprot": Out(3), "awvalid": Out(1), "awready": In(1),
        "wdata": Out(data_width), "wstrb": Out(data_width // 8), "wvalid": Out(1),
        "wready": In(1),
        "bresp": In(2), "bvalid": In(1), "bready": Out(1),
        "araddr": Out(addr_width), "arprot": Out(3), "arvalid": Out(1), "arready": In(1),
        "rdata": In(data_width), "rresp": In(2), "rvalid": In(1), "rready": Out(1)})


def _check_burst(max_burst, data_width):
    check_int("max_burst", max_burst, 1, 256, "1 to 256 beats per burst")
    if max_burst & (max_burst - 1):
        raise ValueError(f"max_burst={max_burst} is not a power of two")
    per_page = BOUNDARY // (data_width // 8)
    return min(max_burst, per_page)


def _burst_len(m, addr, left, max_burst, size_log2, beats_width):
    """Beats of the next burst: min(left, max_burst, beats to the next 4 KiB boundary)."""
    page_bits = ceil_log2(BOUNDARY)
    to_page = Signal(page_bits - size_log2 + 1)
    m.d.comb += to_page.eq((BOUNDARY - addr[:page_bits]) >> size_log2)
    length = Signal(beats_width)
    cap = Signal(beats_width)
    m.d.comb += cap.eq(Mux(to_page < max_burst, to_page, max_burst))
    m.d.comb += length.eq(Mux(left < cap, left, cap))
    return length


class AxiBurstReader(wiring.Component):
    """AXI4 burst read master: transfers of whole data beats -> a stream of ``rdata`` beats.

    A transfer ``cmd = {addr, beats}`` (``addr`` aligned to the data width, ``beats >= 1``) is
    split into INCR bursts of ``min(max_burst, 4096 / bytes_per_beat)`` beats at most, cut at
    every 4 KiB boundary. A burst's AR is issued only when the free slots of the data FIFO
    (``fifo_depth`` minus the beats issued and not yet taken from :attr:`data`) cover the whole
    burst, so ``rready`` is always high. The next transfer is accepted once the previous one's
    bursts are all issued (its data may still be in flight).

    Parameters
    ----------
    addr_width : int
        Address bits, 13..64.
    data_width : int
        32, 64 or 128.
    max_burst : int
        Longest burst in beats, a power of two 1..256. Default 256.
    fifo_depth : int
        Data FIFO depth in beats, ``>= max_burst``. Default ``2 * max_burst``.
    beats_width : int
        Width of ``cmd.beats``. Default 24.

    Attributes
    ----------
    bus : Out(axi4_signature) — the AR and R channels are driven (AW/W/B are left idle).
    cmd : In(stream.Signature({addr, beats}))
    data : Out(stream.Signature(data_width)) — read data, in transfer order.
    abort : In(1)
        While high: no transfer is accepted, no AR issued; R beats still arriving are taken and
        dropped, the FIFO is emptied. Hold it until :attr:`idle`.
    idle : Out(1)
        No AR issued whose last R beat has not arrived, no transfer being split.
    error : Out(1)
        Pulse: an R beat with RRESP != OKAY; :attr:`resp` holds that RRESP.
    resp : Out(2)
    beats_read : Out(32)
        R beats accepted (cleared by :attr:`clear`).
    clear : In(1)
    """

    def __init__(self, *, addr_width: int = 32, data_width: int = 64, max_burst: int = 256,
                 fifo_depth: int | None = None, beats_width: int = 24):
        check_data_width(data_width)
        self.max_burst = _check_burst(max_burst, data_width)
        fifo_depth = 2 * self.max_burst if fifo_depth is None else fifo_depth
        check_int("fifo_depth", fifo_depth, self.max_burst, 4096,
                  f"max_burst={self.max_burst} to 4096 beats")
        check_int("beats_width", beats_width, 1, 40, "1 to 40 bits")
        self.addr_width, self.data_width = addr_width, data_width
        self.fifo_depth, self.beats_width = fifo_depth, beats_width
        self.size_log2 = exact_log2(data_width // 8)
        self.cmd_layout = data.StructLayout({"addr": unsigned(addr_width),
                                             "beats": unsigned(beats_width)})
        super().__init__({
            "bus": Out(axi4_signature(addr_width=addr_width, data_width=data_width)),
            "cmd": In(stream.Signature(self.cmd_layout)),
            "data": Out(stream.Signature(data_width)),
            "abort": In(1),
            "idle": Out(1),
            "error": Out(1),
            "resp": Out(2),
            "beats_read": Out(32),
            "clear": In(1),
        })

    def elaborate(self, platform):
        m = Module()
        bus = self.bus
        m.submodules.fifo = fifo = SyncFIFOBuffered(width=self.data_width, depth=self.fifo_depth)
        bw = self.beats_width
        reserved = Signal(range(self.fifo_depth + 1))   # issued and not yet taken from `data`
        outstanding = Signal(range(self.fifo_depth + 1))  # bursts issued, last beat not seen
        addr = Signal(self.addr_width)
        left = Signal(bw)
        splitting = Signal()

        m.d.comb += [bus.arid.eq(0), bus.arsize.eq(self.size_log2), bus.arburst.eq(BURST_INCR),
                     bus.arcache.eq(CACHE_NORMAL), bus.arprot.eq(0), bus.arlock.eq(0),
                     bus.awvalid.eq(0), bus.wvalid.eq(0), bus.bready.eq(0)]
        length = _burst_len(m, addr, left, self.max_burst, self.size_log2, bw)
        free = Signal(range(self.fifo_depth + 1))
        m.d.comb += free.eq(self.fifo_depth - reserved)

        m.d.comb += self.cmd.ready.eq(~splitting & ~self.abort)
        with m.If(self.cmd.valid & self.cmd.ready):
            m.d.sync += [addr.eq(self.cmd.payload.addr), left.eq(self.cmd.payload.beats),
                         splitting.eq(self.cmd.payload.beats != 0)]

        issue = Signal()
        ar_fire = bus.arvalid & bus.arready
        with m.If(ar_fire):
            m.d.sync += bus.arvalid.eq(0)
        # a new AR once the previous one is taken: length/credits are computed on registers
        m.d.comb += issue.eq(splitting & ~bus.arvalid & ~self.abort & (length <= free))
        with m.If(issue):
            m.d.sync += [bus.arvalid.eq(1), bus.araddr.eq(addr), bus.arlen.eq(length - 1),
                         addr.eq(addr + (length << self.size_log2)), left.eq(left - length)]
            with m.If(left == length):
                m.d.sync += splitting.eq(0)
        with m.If(self.abort):
            # the rest of the transfer is dropped; an AR already offered stays until taken
            m.d.sync += splitting.eq(0)

        # ---- R: always ready (credits); data into the FIFO, dropped while aborting -----------
        m.d.comb += bus.rready.eq(1)
        r_fire = bus.rvalid
        m.d.comb += [fifo.w_data.eq(bus.rdata), fifo.w_en.eq(r_fire & ~self.abort)]
        m.d.comb += [self.data.payload.eq(fifo.r_data), self.data.valid.eq(fifo.r_rdy & ~self.abort),
                     fifo.r_en.eq(Mux(self.abort, fifo.r_rdy, self.data.ready))]
        taken = (fifo.r_rdy & fifo.r_en) | (r_fire & self.abort)
        m.d.sync += reserved.eq(reserved + Mux(issue, length, 0) - taken)
        m.d.sync += outstanding.eq(outstanding + issue - (r_fire & bus.rlast))
        m.d.comb += self.idle.eq(~splitting & ~bus.arvalid & (outstanding == 0) & ~issue)

        m.d.comb += self.error.eq(r_fire & (bus.rresp != RESP_OKAY) & (bus.rresp != RESP_EXOKAY))
        with m.If(self.error):
            m.d.sync += self.resp.eq(bus.rresp)
        with m.If(self.clear):
            m.d.sync += self.beats_read.eq(0)
        with m.Elif(r_fire):
            m.d.sync += self.beats_read.eq(self.beats_read + 1)
        return m


class AxiBurstWriter(wiring.Component):
    """AXI4 burst write master: a transfer ``{addr, beats}`` plus its ``{data, strb}`` beats.

    The transfer is split like :class:`AxiBurstReader`'s; a burst's AW is issued only when all of
    its beats sit in the data FIFO, so W is sent back to back. BRESP is checked on every burst.

    Parameters
    ----------
    addr_width, data_width, max_burst, beats_width
        As for :class:`AxiBurstReader`. The data FIFO holds ``max_burst`` beats.

    Attributes
    ----------
    bus : Out(axi4_signature) — AW, W and B are driven (AR/R left idle).
    cmd : In(stream.Signature({addr, beats}))
    data : In(stream.Signature({data, strb}))
    abort : In(1)
        While high: no new AW; a burst whose AW was issued still gets its W beats (AXI cannot
        cancel it); beats offered on :attr:`data` are taken and dropped. Hold until :attr:`idle`.
    idle : Out(1)
        Every issued burst has its B response; no transfer is being split.
    error, resp : Out(1), Out(2)
        Pulse on a B response with BRESP != OKAY, and that BRESP.
    beats_written : Out(32)
    clear : In(1)
    """

    def __init__(self, *, addr_width: int = 32, data_width: int = 64, max_burst: int = 256,
                 beats_width: int = 24):
        check_data_width(data_width)
        self.max_burst = _check_burst(max_burst, data_width)
        check_int("beats_width", beats_width, 1, 40, "1 to 40 bits")
        self.addr_width, self.data_width, self.beats_width = addr_width, data_width, beats_width
        self.size_log2 = exact_log2(data_width // 8)
        self.cmd_layout = data.StructLayout({"addr": unsigned(addr_width),
                                             "beats": unsigned(beats_width)})
        self.beat_layout = data.StructLayout({"data": unsigned(data_width),
                                              "strb": unsigned(data_width // 8)})
        super().__init__({
            "bus": Out(axi4_signature(addr_width=addr_width, data_width=data_width)),
            "cmd": In(stream.Signature(self.cmd_layout)),
            "data": In(stream.Signature(self.beat_layout)),
            "abort": In(1),
            "idle": Out(1),
            "error": Out(1),
            "resp": Out(2),
            "beats_written": Out(32),
            "clear": In(1),
        })

    def elaborate(self, platform):
        m = Module()
        bus = self.bus
        depth = self.max_burst
        m.submodules.fifo = fifo = SyncFIFOBuffered(width=self.beat_layout.size, depth=depth)
        bw = self.beats_width
        m.d.comb += [bus.awid.eq(0), bus.awsize.eq(self.size_log2), bus.awburst.eq(BURST_INCR),
                     bus.awcache.eq(CACHE_NORMAL), bus.awprot.eq(0), bus.awlock.eq(0),
                     bus.arvalid.eq(0), bus.rready.eq(0)]
        addr = Signal(self.addr_width)
        left = Signal(bw)
        splitting = Signal()
        m.d.comb += self.cmd.ready.eq(~splitting & ~self.abort)
        with m.If(self.cmd.valid & self.cmd.ready):
            m.d.sync += [addr.eq(self.cmd.payload.addr), left.eq(self.cmd.payload.beats),
                         splitting.eq(self.cmd.payload.beats != 0)]

        # buffered beats not yet claimed by an issued AW
        unclaimed = Signal(range(depth + 1))
        w_lens = SyncFIFOBuffered(width=9, depth=4)   # lengths of issued bursts, for wlast
        m.submodules.w_lens = w_lens
        outstanding = Signal(range(64))          # bursts whose B has not arrived
        length = _burst_len(m, addr, left, self.max_burst, self.size_log2, bw)

        # data in: into the FIFO (dropped while aborting)
        m.d.comb += [fifo.w_data.eq(self.data.payload.as_value()),
                     fifo.w_en.eq(self.data.valid & ~self.abort),
                     self.data.ready.eq(fifo.w_rdy | self.abort)]
        pushed = fifo.w_en & fifo.w_rdy

        issue = Signal()
        with m.If(bus.awvalid & bus.awready):
            m.d.sync += bus.awvalid.eq(0)
        m.d.comb += issue.eq(splitting & ~bus.awvalid & ~self.abort & (length <= unclaimed)
                             & w_lens.w_rdy & (outstanding < 60))
        with m.If(issue):
            m.d.sync += [bus.awvalid.eq(1), bus.awaddr.eq(addr), bus.awlen.eq(length - 1),
                         addr.eq(addr + (length << self.size_log2)), left.eq(left - length)]
            with m.If(left == length):
                m.d.sync += splitting.eq(0)
        with m.If(self.abort):
            m.d.sync += splitting.eq(0)     # bursts not yet issued are dropped
        m.d.comb += [w_lens.w_data.eq(length), w_lens.w_en.eq(issue)]
        m.d.sync += unclaimed.eq(unclaimed + pushed - Mux(issue, length, 0))

        # W: beats of the oldest issued burst (its data is all buffered)
        beat = Signal(9)
        head = w_lens.r_data
        beat_payload = Signal(self.beat_layout)
        m.d.comb += beat_payload.eq(fifo.r_data)
        m.d.comb += [bus.wdata.eq(beat_payload.data), bus.wstrb.eq(beat_payload.strb),
                     bus.wvalid.eq(w_lens.r_rdy & fifo.r_rdy),
                     bus.wlast.eq(beat + 1 == head)]
        w_fire = bus.wvalid & bus.wready
        m.d.comb += fifo.r_en.eq(w_fire)
        with m.If(w_fire):
            m.d.sync += beat.eq(Mux(bus.wlast, 0, beat + 1))
            m.d.comb += w_lens.r_en.eq(bus.wlast)

        m.d.comb += bus.bready.eq(1)
        b_fire = bus.bvalid
        m.d.sync += outstanding.eq(outstanding + issue - b_fire)
        m.d.comb += self.idle.eq(~splitting & ~bus.awvalid & ~issue & (outstanding == 0)
                                 & ~w_lens.r_rdy)
        m.d.comb += self.error.eq(b_fire & (bus.bresp != RESP_OKAY) & (bus.bresp != RESP_EXOKAY))
        with m.If(self.error):
            m.d.sync += self.resp.eq(bus.bresp)
        with m.If(self.clear):
            m.d.sync += self.beats_written.eq(0)
        with m.Elif(w_fire):
            m.d.sync += self.beats_written.eq(self.beats_written + 1)
        return m
