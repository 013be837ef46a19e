"""Near-memory read port: the datapath's view of DDR, and the vector fetcher that drives it.

The datapath never sees addresses or bursts. It asks for *vectors* of the chunk by index and gets
*element beats* back, in order. An AXI4 read master (or the testbench's memory model) sits on the
other side of :class:`MemReadSignature`; it knows the chunk's base address and the vector length
from the CSRs, so ``first``/``count`` are all it needs. See ``docs/rtl-datapath.md``.
"""

from __future__ import annotations

from amaranth import Module, Mux, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from nms.rtl.params import check_int

__all__ = ["MemReadSignature", "VectorFetcher", "DEST_QUERY", "DEST_CANDIDATE"]

#: ``dest`` values of a fetch command (where the beats go in the datapath)
DEST_QUERY = 0
DEST_CANDIDATE = 1


class MemReadSignature(wiring.Signature):
    """A vector read port, seen from the requester (the datapath).

    Members
    -------
    req : Out(stream.Signature({first, count}))
        One beat per request: vectors ``first .. first + count - 1`` of the chunk (``count >= 1``).
    resp : In(stream.Signature({data}))
        The requested vectors' elements, request after request, vector after vector, in order:
        ``ceil(dim / lanes)`` beats per vector, element ``i`` of a vector in lane ``i % lanes`` of
        beat ``i // lanes``. Lanes past the vector's end on its final beat carry any value (the
        distance engine masks them). Any latency and any gaps are allowed.

    Parameters
    ----------
    lanes, elem_width : int
        Beat width: ``lanes`` elements of ``elem_width`` bits.
    index_width, count_width : int
        Widths of ``first`` and ``count``.
    """

    def __init__(self, *, lanes: int, elem_width: int, index_width: int, count_width: int):
        self.lanes, self.elem_width = lanes, elem_width
        self.index_width, self.count_width = index_width, count_width
        self.req_layout = data.StructLayout({"first": unsigned(index_width),
                                             "count": unsigned(count_width)})
        self.resp_layout = data.StructLayout({
            "data": data.ArrayLayout(unsigned(elem_width), lanes)})
        super().__init__({
            "req": Out(stream.Signature(self.req_layout)),
            "resp": In(stream.Signature(self.resp_layout)),
        })

    def __eq__(self, other):
        return (isinstance(other, MemReadSignature) and self.lanes == other.lanes
                and self.elem_width == other.elem_width and self.index_width == other.index_width
                and self.count_width == other.count_width)

    def __repr__(self):
        return (f"MemReadSignature(lanes={self.lanes}, elem_width={self.elem_width}, "
                f"index_width={self.index_width}, count_width={self.count_width})")


class VectorFetcher(wiring.Component):
    """Turns fetch commands into memory requests and frames the response beats.

    A command ``{first, count, dest, pad}`` asks for ``count`` vectors. With ``pad = 0`` a request
    goes to memory and its response beats are passed on; with ``pad = 1`` no memory is touched and
    the fetcher itself emits ``count`` all-zero vectors (the padding queries of a short final
    tile). Commands are queued (``depth`` outstanding), so requests run ahead of their responses
    and the memory latency is hidden behind the previous command's beats; output order is command
    order. Each output beat carries the command's ``dest`` and ``last`` on the command's final beat.

    Parameters
    ----------
    lanes : int
        Elements per beat, a power of two 1..256.
    elem_width : int
        Element width in bits, 1..16.
    max_dim : int
        Largest vector length.
    index_width, count_width : int
        Widths of ``first`` and ``count`` (1..32).
    depth : int
        Outstanding commands, 2..64. Default 4.

    Attributes
    ----------
    cmd : In(stream.Signature(cmd_layout))
        ``{first, count, dest: 1, pad: 1}``; ``count >= 1``.
    mem : Out(MemReadSignature)
        The memory read port.
    beats : Out(stream.Signature(beat_layout))
        ``{data: ArrayLayout(unsigned(elem_width), lanes), dest: 1, last: 1}``.
    dim : In(range(max_dim + 1))
        Vector length, ``1..max_dim``; must be held while commands are outstanding.
    clear : In(1)
        Clears the counters.
    bytes_read : Out(48)
        Bytes of vector elements received from memory (``dim * ceil(elem_width / 8)`` per vector,
        padding lanes and padding vectors not counted).
    beats_read, wait_cycles : Out(32)
        Response beats received; cycles with a memory command outstanding at the head of the
        queue and no response beat offered (memory latency and gaps).
    """

    def __init__(self, *, lanes: int = 8, elem_width: int = 8, max_dim: int = 1024,
                 index_width: int = 16, count_width: int = 17, depth: int = 4):
        check_int("lanes", lanes, 1, 256, "a power of two from 1 to 256")
        if lanes & (lanes - 1):
            raise ValueError(f"lanes={lanes} is not a power of two")
        check_int("elem_width", elem_width, 1, 16, "1 to 16 bits per element")
        check_int("max_dim", max_dim, 1, 1 << 20, "1 to 1048576 elements per vector")
        check_int("index_width", index_width, 1, 32, "1 to 32 bits")
        check_int("count_width", count_width, 1, 32, "1 to 32 bits")
        check_int("depth", depth, 2, 64, "2 to 64 outstanding commands")
        self.lanes, self.elem_width, self.max_dim = lanes, elem_width, max_dim
        self.index_width, self.count_width, self.depth = index_width, count_width, depth
        self.lane_shift = ceil_log2(lanes)
        self.beats_max = -(-max_dim // lanes)
        self.elem_bytes = -(-elem_width // 8)
        self.mem_signature = MemReadSignature(lanes=lanes, elem_width=elem_width,
                                              index_width=index_width, count_width=count_width)
        self.cmd_layout = data.StructLayout({
            "first": unsigned(index_width), "count": unsigned(count_width),
            "dest": unsigned(1), "pad": unsigned(1)})
        self.beat_layout = data.StructLayout({
            "data": data.ArrayLayout(unsigned(elem_width), lanes),
            "dest": unsigned(1), "last": unsigned(1)})
        super().__init__({
            "cmd": In(stream.Signature(self.cmd_layout)),
            "mem": Out(self.mem_signature),
            "beats": Out(stream.Signature(self.beat_layout)),
            "dim": In(range(max_dim + 1)),
            "clear": In(1),
            "bytes_read": Out(48),
            "beats_read": Out(32),
            "wait_cycles": Out(32),
        })

    def elaborate(self, platform):
        m = Module()
        pending = data.StructLayout({"count": unsigned(self.count_width),
                                     "dest": unsigned(1), "pad": unsigned(1)})
        m.submodules.queue = queue = SyncFIFOBuffered(width=pending.size, depth=self.depth)

        # ---- request side: a command is queued and (unless padding) sent as one request -------
        req = self.mem.req
        entry = Signal(pending)
        m.d.comb += [
            entry.count.eq(self.cmd.payload.count),
            entry.dest.eq(self.cmd.payload.dest),
            entry.pad.eq(self.cmd.payload.pad),
            # one command per two cycles at most (req.valid blocks the next): commands are long
            self.cmd.ready.eq(queue.w_rdy & ~req.valid),
            queue.w_data.eq(entry),
            queue.w_en.eq(self.cmd.valid & self.cmd.ready),
        ]
        with m.If(req.ready):
            m.d.sync += req.valid.eq(0)
        with m.If(self.cmd.valid & self.cmd.ready & ~self.cmd.payload.pad):
            m.d.sync += [req.valid.eq(1), req.payload.first.eq(self.cmd.payload.first),
                         req.payload.count.eq(self.cmd.payload.count)]

        # ---- response side: frame the head command's beats ------------------------------------
        head = Signal(pending)
        m.d.comb += head.eq(queue.r_data)
        # beats per vector - 1, from the runtime dim (held while commands are outstanding)
        final_beat = Signal(range(max(self.beats_max, 2)))
        m.d.comb += final_beat.eq((self.dim - 1) >> self.lane_shift)
        beat = Signal(range(max(self.beats_max, 2)))
        vec = Signal(self.count_width)
        vec_end = beat == final_beat
        cmd_end = vec_end & (vec == head.count - 1)
        resp = self.mem.resp
        out = self.beats
        m.d.comb += [
            out.valid.eq(queue.r_rdy & (head.pad | resp.valid)),
            out.payload.data.eq(Mux(head.pad, 0, resp.payload.data.as_value())),
            out.payload.dest.eq(head.dest),
            out.payload.last.eq(cmd_end),
            resp.ready.eq(queue.r_rdy & ~head.pad & out.ready),
        ]
        moved = out.valid & out.ready
        with m.If(moved):
            m.d.sync += [beat.eq(Mux(vec_end, 0, beat + 1)), vec.eq(vec + vec_end)]
            with m.If(cmd_end):
                m.d.sync += vec.eq(0)
                m.d.comb += queue.r_en.eq(1)

        # ---- counters -------------------------------------------------------------------------
        taken = resp.valid & resp.ready
        with m.If(self.clear):
            m.d.sync += [self.bytes_read.eq(0), self.beats_read.eq(0), self.wait_cycles.eq(0)]
        with m.Else():
            with m.If(taken):
                m.d.sync += self.beats_read.eq(self.beats_read + 1)
                with m.If(vec_end):
                    m.d.sync += self.bytes_read.eq(self.bytes_read + self.dim * self.elem_bytes)
            with m.If(queue.r_rdy & ~head.pad & ~resp.valid):
                m.d.sync += self.wait_cycles.eq(self.wait_cycles + 1)
        return m

