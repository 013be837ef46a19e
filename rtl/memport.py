"""Near-memory read port: the datapath's view of DDR, and the vector fetcher that drives it.

The datapath never sees addresses or bursts. It asks for *vectors* of the chunk by index and gets
*element beats* back, in order. An AXI4 read master (or the testbench's memory model) sits on the
other side of :class:`MemReadSignature`; it knows the chunk's base address and the vector length
from the CSRs, so ``first``/``count`` are all it needs. See ``docs/rtl-datapath.md``.
"""

from __future__ import annotations

from amaranth import C, Cat, Module, Mux, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.hdl import ResetInserter
from amaranth.lib.fifo import SyncFIFO, SyncFIFOBuffered
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from nms.rtl.axi import AxiBurstReader, axi4_signature, check_data_width
from nms.rtl.params import bank_geometry, check_int

__all__ = ["MemReadSignature", "VectorFetcher", "ChunkBuffer", "DEST_QUERY", "DEST_CANDIDATE",
           "AxiVectorPort",
           "ResultPacker"]

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



#: entries of the chunk buffer's output FIFO: one beat per cycle with the read issue decided
#: from registers (FIFO level + the word in the read stage)
OUT_FIFO_DEPTH = 3


class ChunkBuffer(wiring.Component):
    """The on-chip chunk buffer: the chunk read from DDR once, then served to the engine per tile.

    ``docs/energy.md`` §6.2–6.3. The write side takes the (pooled) vector beats of the job's one
    DDR fetch, one word of ``lanes`` elements per beat, vector after vector from address 0
    (``vec_beats`` words per vector). Once ``fill_words`` words are written the buffer is
    *filled* and the read side serves fetch commands exactly as :class:`VectorFetcher` does —
    ``{first, count, dest, pad}`` in, framed beats ``{data, dest, last}`` out, padding commands
    as all-zero vectors — but from the buffer instead of memory. Commands may arrive before the
    buffer is filled; their beats wait for it.

    The read side sustains one beat per cycle with one idle cycle between commands: a read
    stage, then an output FIFO of :data:`OUT_FIFO_DEPTH` beats; a read is issued only while
    the FIFO has room for it, so ``beats.ready`` reaches only the FIFO. A command is taken into
    a holding register while the one before it runs (its first word address is registered
    there); an idle buffer's first beat is offered five cycles after the command is taken.

    With ``cand_tile`` P > 1 a candidate command is served in the distance engine's group order
    (:class:`~nms.rtl.distance.DistanceEngine`): groups of P vectors, beat-interleaved (beat 0
    of each vector of the group, then beat 1, ...), each beat tagged with its ``slot`` and
    ``group_end``; queries and padding stay vector after vector.

    Parameters
    ----------
    lanes : int
        Elements per word, a power of two 1..256.
    elem_width : int
        Element width in bits, 1..16.
    depth : int
        Words, 1..2**22 (``capacity · ceil(buffer_dim / lanes)`` in the datapath).
    beats_max : int
        Most words per vector, 1..65536.
    index_width, count_width : int
        Widths of a command's ``first`` and ``count`` (1..32).
    cand_tile : int
        P, the engine's candidate group, 1..16. Default 1.
    banks : int
        Most banks, 1..64. Default 1. The words are split by address into
        ``banks_used`` banks of ``bank_words`` words (:func:`nms.rtl.params.bank_geometry`: a
        power of two, so the bank is the address's high bits), each its own memory; a read
        enables only the bank it addresses and a registered bank index selects the word behind
        them, so an access touches one bank (``docs/energy.md`` §6.7 prices it so). Same beats,
        same cycles as one bank.

    Attributes
    ----------
    fill : In(stream.Signature({data}))
        Vector beats to store; always ready (the job interface refuses a chunk that does not
        fit, so no write goes past ``depth``).
    cmd : In(stream.Signature(cmd_layout))
        ``{first, count, dest, pad}`` (the fetcher's command layout).
    beats : Out(stream.Signature(beat_layout))
        ``{data, dest, last}`` (the fetcher's beat layout): ``last`` on a command's final beat.
    vec_beats : In(range(beats_max + 1))
        Words per vector, ``1..beats_max``; held during a job.
    fill_words : In(range(depth + 1))
        Words of the job (``N · vec_beats``); held during a job, set before its first fill
        beat (a write compares against it).
    clear : In(1)
        A new job: empties the buffer (write pointer 0), drops the command in progress, clears
        the counters.
    read_beats, write_beats : Out(32)
        Words read for the engine (padding beats not counted) and words written.
    """

    def __init__(self, *, lanes: int = 8, elem_width: int = 8, depth: int = 1024,
                 beats_max: int = 128, index_width: int = 10, count_width: int = 11,
                 cand_tile: int = 1, banks: int = 1):
        check_int("lanes", lanes, 1, 256, "a power of two from 1 to 256")
        if lanes & (lanes - 1):
            raise ValueError(f"lanes={lanes} is not a power of two")
        check_int("elem_width", elem_width, 1, 16, "1 to 16 bits per element")
        check_int("depth", depth, 1, 1 << 22, "1 to 4194304 words")
        check_int("banks", banks, 1, 64, "1 to 64 banks")
        self.banks = banks
        self.bank_words, self.banks_used = bank_geometry(depth, banks)
        #: the banks' read enables (not a port; for tests and energy accounting): with banks
        #: one bit per bank, at most one set, set only for a word served to the engine
        self.bank_reads = Signal(self.banks_used, name="bank_reads")
        check_int("beats_max", beats_max, 1, 1 << 16, "1 to 65536 words per vector")
        check_int("index_width", index_width, 1, 32, "1 to 32 bits")
        check_int("count_width", count_width, 1, 32, "1 to 32 bits")
        check_int("cand_tile", cand_tile, 1, 16, "1 to 16 candidates per group")
        self.cand_tile = cand_tile
        self.lanes, self.elem_width, self.depth, self.beats_max = lanes, elem_width, depth, beats_max
        self.index_width, self.count_width = index_width, count_width
        self.word_layout = data.StructLayout({
            "data": data.ArrayLayout(unsigned(elem_width), lanes)})
        self.cmd_layout = data.StructLayout({
            "first": unsigned(index_width), "count": unsigned(count_width),
            "dest": unsigned(1), "pad": unsigned(1)})
        beat_fields = {"data": data.ArrayLayout(unsigned(elem_width), lanes),
                       "dest": unsigned(1), "last": unsigned(1)}
        if cand_tile > 1:
            beat_fields.update(slot=unsigned(ceil_log2(cand_tile)), group_end=unsigned(1))
        self.beat_layout = data.StructLayout(beat_fields)
        super().__init__({
            "fill": In(stream.Signature(self.word_layout)),
            "cmd": In(stream.Signature(self.cmd_layout)),
            "beats": Out(stream.Signature(self.beat_layout)),
            "vec_beats": In(range(beats_max + 1)),
            "fill_words": In(range(depth + 1)),
            "clear": In(1),
            "read_beats": Out(32),
            "write_beats": Out(32),
        })

    def elaborate(self, platform):
        m = Module()
        L, ew = self.lanes, self.elem_width
        B, bw = self.banks_used, self.bank_words
        shift = bw.bit_length() - 1
        mems = []
        for b in range(B):
            depth_b = min(bw, self.depth - b * bw)
            mem = Memory(shape=unsigned(L * ew), depth=depth_b, init=[])
            m.submodules[f"mem{b}" if B > 1 else "mem"] = mem
            mems.append((mem.write_port(), mem.read_port()))

        # ---- write side: the job's vectors, in order from word 0 -------------------------------
        wptr = Signal(range(self.depth + 1))
        filled = Signal()
        wr_en = Signal()
        m.d.comb += [self.fill.ready.eq(1),
                     wr_en.eq(self.fill.valid & (wptr != self.depth))]
        # filled = (wptr == fill_words != 0), kept as a register stepped with wptr: the compare
        # stays off the read side's issue -> block-RAM enable path (fill_words is a per-job
        # constant, set before the first fill beat)
        for b, (wr, _) in enumerate(mems):
            m.d.comb += [wr.addr.eq(wptr if B == 1 else wptr[:shift]),
                         wr.data.eq(self.fill.payload.data.as_value()),
                         wr.en.eq(wr_en if B == 1 else wr_en & (wptr[shift:] == b))]
        with m.If(self.fill.valid):
            m.d.sync += [wptr.eq(wptr + 1), self.write_beats.eq(self.write_beats + 1),
                         filled.eq((wptr + 1 == self.fill_words) & (self.fill_words != 0))]

        # ---- read side: one command at a time, one word per cycle ------------------------------
        # a command walks groups of `group` vectors (P for candidates, else 1), beat-interleaved:
        # word = gbase + slot * vec_beats + beat (`raddr`, stepped as a register)
        P = self.cand_tile
        active = Signal()
        gbase = Signal(range(self.depth + 1))          # first word of the group
        beat = Signal(range(max(self.beats_max, 2)))
        slot = Signal(range(max(P, 2)))
        left = Signal(self.count_width)                # vectors from the group's first on
        group = Signal(range(P + 1))
        dest, pad = Signal(), Signal()
        gsize = Signal(range(P + 1))
        m.d.comb += gsize.eq(Mux(left < group, left, group))
        slot_last = slot == gsize - 1
        final_beat = beat == self.vec_beats - 1
        cmd_end = slot_last & final_beat & (left == gsize)
        issue = active & (filled | pad)
        q = Signal(self.cmd_layout)                    # the held command (see below)
        q_valid, q_ready_words = Signal(), Signal()
        q_words = Signal(range(self.depth + 1))

        # the read stage holds the word read in the previous cycle (r_valid) and its tags; it goes
        # into an output FIFO. A read is issued only while the FIFO has room for it counting
        # the word in the read stage (registers only), so the engine's ready reaches the FIFO's
        # read side and nothing else: not the read issue, not the enables and addresses of the
        # buffer's block RAMs, which span much of the device
        out = self.beats
        fifo = ResetInserter(self.clear)(SyncFIFO(width=self.beat_layout.size, depth=OUT_FIFO_DEPTH))
        m.submodules.out_fifo = fifo
        r_valid, r_dest, r_last, r_pad = Signal(), Signal(), Signal(), Signal()
        r_slot, r_gend = Signal(range(max(P, 2))), Signal()
        go = Signal()
        m.d.comb += go.eq(issue & (fifo.level + r_valid < OUT_FIFO_DEPTH))
        # the read address gbase + slot * vec_beats + beat, a register stepped with them: no
        # adder between the counters and the block RAMs' address and enable pins (the buffer
        # spans most of the device's block RAMs, so those nets are long)
        raddr = Signal(range(self.depth + 1))
        word = Signal(self.beat_layout)                # the read stage's beat, into the FIFO
        m.d.comb += [
            self.cmd.ready.eq(~q_valid),
            word.dest.eq(r_dest), word.last.eq(r_last),
            fifo.w_en.eq(r_valid), fifo.w_data.eq(word.as_value()),
            out.valid.eq(fifo.r_rdy), out.payload.eq(fifo.r_data), fifo.r_en.eq(out.ready),
        ]
        if B == 1:
            rd = mems[0][1]
            m.d.comb += [rd.addr.eq(raddr), rd.en.eq(go & ~pad), self.bank_reads.eq(rd.en),
                         word.data.eq(Mux(r_pad, 0, rd.data))]
        else:
            # only the addressed bank reads (and only for a real beat); the bank index of the
            # word now in the read stage selects among the banks' held outputs
            rd_bank = Signal(range(B))
            rdata = Signal(L * ew)
            for b, (_, rd) in enumerate(mems):
                m.d.comb += [rd.addr.eq(raddr[:shift]),
                             rd.en.eq(go & ~pad & (raddr[shift:] == b)),
                             self.bank_reads[b].eq(rd.en)]
            with m.If(go):
                m.d.sync += rd_bank.eq(raddr[shift:])
            with m.Switch(rd_bank):
                for b, (_, rd) in enumerate(mems):
                    with m.Case(b):
                        m.d.comb += rdata.eq(rd.data)
            m.d.comb += word.data.eq(Mux(r_pad, 0, rdata))
        if P > 1:
            m.d.comb += [word.slot.eq(r_slot), word.group_end.eq(r_gend)]
        # a command waits in a holding register while the one before it runs; its first word
        # first · vec_beats (a multiplier) is registered from there, so neither the
        # controller's command logic nor the multiplier lies before the read address register
        m.d.sync += q_words.eq(q.first * self.vec_beats)
        with m.If(self.cmd.valid & ~q_valid):
            m.d.sync += [q.eq(self.cmd.payload), q_valid.eq(1), q_ready_words.eq(0)]
        with m.Elif(q_valid):
            m.d.sync += q_ready_words.eq(1)
        with m.If(q_valid & q_ready_words & ~active):
            grouped = (q.dest == DEST_CANDIDATE) & ~q.pad
            m.d.sync += [active.eq(1), gbase.eq(q_words), raddr.eq(q_words), q_valid.eq(0),
                         left.eq(q.count), group.eq(Mux(grouped, P, 1)),
                         dest.eq(q.dest), pad.eq(q.pad), beat.eq(0), slot.eq(0)]
        m.d.sync += [r_valid.eq(go), r_dest.eq(dest), r_last.eq(cmd_end), r_pad.eq(pad),
                     r_slot.eq(slot), r_gend.eq(slot_last)]
        with m.If(go):
            with m.If(~slot_last):
                m.d.sync += [slot.eq(slot + 1), raddr.eq(raddr + self.vec_beats)]
            with m.Else():
                m.d.sync += slot.eq(0)
                with m.If(~final_beat):
                    m.d.sync += [beat.eq(beat + 1), raddr.eq(gbase + beat + 1)]
                with m.Else():
                    # beat = vec_beats - 1: the next group starts at the word after this
                    m.d.sync += [beat.eq(0), gbase.eq(raddr + 1), raddr.eq(raddr + 1),
                                 left.eq(left - gsize)]
            with m.If(~pad):
                m.d.sync += self.read_beats.eq(self.read_beats + 1)
            with m.If(cmd_end):
                m.d.sync += active.eq(0)

        with m.If(self.clear):
            m.d.sync += [wptr.eq(0), filled.eq(0), active.eq(0), r_valid.eq(0), q_valid.eq(0),
                         self.read_beats.eq(0), self.write_beats.eq(0)]
        return m



class AxiVectorPort(wiring.Component):
    """The memory side of :class:`MemReadSignature` over AXI4: vectors packed contiguously in DDR.

    Vector ``i`` of the chunk is the ``dim * elem_bytes`` bytes at ``src_addr + i * dim *
    elem_bytes`` (little-endian elements, no padding, any byte alignment). A request ``{first,
    count}`` becomes one :class:`~nms.rtl.axi.AxiBurstReader` transfer over the beat-aligned
    byte range; the AXI beats are re-cut into lane beats: each vector restarts at lane 0,
    ``ceil(dim / lanes)`` beats per vector, the unused lanes of its final beat carry the next
    bytes (the datapath masks them).

    The re-cutting keeps up to ``bytes_per_beat + lanes * elem_bytes`` bytes and takes an AXI
    beat whenever at most ``lanes * elem_bytes`` are held, so it sustains one lane beat per cycle
    whenever the bus does (``data_width >= 8 * lanes * elem_bytes``) and one AXI beat per cycle
    otherwise.

    Parameters
    ----------
    lanes, elem_width, max_dim, index_width, count_width : int
        As :class:`MemReadSignature` / :class:`VectorFetcher`.
    addr_width, data_width, max_burst, fifo_depth : int
        AXI parameters (see :class:`~nms.rtl.axi.AxiBurstReader`).
    depth : int
        Requests whose data is in flight, 2..64. Default 4.

    Attributes
    ----------
    mem : In(MemReadSignature) — the datapath's port.
    bus : Out(axi4_signature) — AR/R only.
    src_addr : In(addr_width), dim : In(range(max_dim + 1)) — held during a job.
    abort, idle, error, resp, beats_read, clear — as the reader's.
    """

    def __init__(self, *, lanes: int = 8, elem_width: int = 8, max_dim: int = 1024,
                 index_width: int = 10, count_width: int = 11, addr_width: int = 32,
                 data_width: int = 64, max_burst: int = 256, fifo_depth: int | None = None,
                 depth: int = 4):
        check_data_width(data_width)
        check_int("depth", depth, 2, 64, "2 to 64 requests in flight")
        self.lanes, self.elem_width, self.max_dim = lanes, elem_width, max_dim
        self.elem_bytes = -(-elem_width // 8)
        self.index_width, self.count_width = index_width, count_width
        self.addr_width, self.data_width, self.depth = addr_width, data_width, depth
        self.reader = AxiBurstReader(addr_width=addr_width, data_width=data_width,
                                     max_burst=max_burst, fifo_depth=fifo_depth)
        self.mem_signature = MemReadSignature(lanes=lanes, elem_width=elem_width,
                                              index_width=index_width, count_width=count_width)
        super().__init__({
            "mem": In(self.mem_signature),
            "bus": Out(axi4_signature(addr_width=addr_width, data_width=data_width)),
            "src_addr": In(addr_width),
            "dim": In(range(max_dim + 1)),
            "abort": In(1),
            "idle": Out(1),
            "error": Out(1),
            "resp": Out(2),
            "beats_read": Out(32),
            "clear": In(1),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.reader = rd = self.reader
        # the port is the reader's bus (AR/R); AW/W/B idle here, the top merges the writer's
        for name in self.bus.signature.members:
            port, inner = getattr(self.bus, name), getattr(rd.bus, name)
            if self.bus.signature.members[name].flow == Out:
                m.d.comb += port.eq(inner)
            else:
                m.d.comb += inner.eq(port)
        m.d.comb += [rd.abort.eq(self.abort), rd.clear.eq(self.clear), self.error.eq(rd.error),
                     self.resp.eq(rd.resp), self.beats_read.eq(rd.beats_read)]
        W = self.data_width // 8                  # bytes per AXI beat
        wlog = ceil_log2(W)
        Lb = self.lanes * self.elem_bytes          # bytes per lane beat
        B = W + Lb
        vec_bytes = Signal(range(self.max_dim * self.elem_bytes + 1))
        m.d.comb += vec_bytes.eq(self.dim * self.elem_bytes)

        # ---- request -> (AXI transfer, re-cutting descriptor) ----------------------------------
        desc_layout = data.StructLayout({"skip": unsigned(max(wlog, 1)),
                                         "beats": unsigned(rd.beats_width),
                                         "count": unsigned(self.count_width)})
        m.submodules.descs = descs = SyncFIFOBuffered(width=desc_layout.size, depth=self.depth)
        req = self.mem.req
        offset = Signal(self.addr_width)
        total = Signal(rd.beats_width + wlog)
        count = Signal(self.count_width)
        start = Signal(self.addr_width)
        skip = Signal(max(wlog, 1))
        beats = Signal(rd.beats_width)
        with m.FSM(name="request"):
            with m.State("IDLE"):
                m.d.comb += req.ready.eq(~self.abort)
                with m.If(req.valid & ~self.abort):
                    m.d.sync += [offset.eq(req.payload.first * vec_bytes),
                                 total.eq(req.payload.count * vec_bytes),
                                 count.eq(req.payload.count)]
                    m.next = "ADDR"
            with m.State("ADDR"):
                m.d.sync += start.eq(self.src_addr + offset)
                m.next = "SIZE"
            with m.State("SIZE"):
                m.d.sync += [skip.eq(start[:wlog] if wlog else 0),
                             beats.eq((start[:wlog] + total + (W - 1)) >> wlog)]
                m.next = "PUSH"
            with m.State("PUSH"):
                d = Signal(desc_layout)
                m.d.comb += [d.skip.eq(skip), d.beats.eq(beats), d.count.eq(count),
                             descs.w_data.eq(d),
                             rd.cmd.payload.addr.eq(Cat(C(0, wlog), start[wlog:])),
                             rd.cmd.payload.beats.eq(beats)]
                with m.If(self.abort):
                    m.next = "IDLE"
                with m.Elif(rd.cmd.ready & descs.w_rdy):
                    m.d.comb += [rd.cmd.valid.eq(1), descs.w_en.eq(1)]
                    m.next = "IDLE"

        # ---- AXI beats -> lane beats -----------------------------------------------------------
        head = Signal(desc_layout)
        m.d.comb += head.eq(descs.r_data)
        buf = Signal(8 * B)
        have = Signal(range(B + 1))
        active = Signal()
        skipping = Signal()
        beats_left = Signal(rd.beats_width)
        vec_rem = Signal(range(self.max_dim * self.elem_bytes + 1))
        vecs_left = Signal(self.count_width)
        skip_bytes = Signal(max(wlog, 1))
        with m.If(~active & descs.r_rdy & ~self.abort):
            m.d.comb += descs.r_en.eq(1)
            m.d.sync += [active.eq(1), skipping.eq(1), beats_left.eq(head.beats),
                         skip_bytes.eq(head.skip),
                         vec_rem.eq(vec_bytes), vecs_left.eq(head.count), have.eq(0)]
        need = Signal(range(max(Lb, W) + 1))
        m.d.comb += need.eq(Mux(vec_rem < Lb, vec_rem, Lb))
        skip_now = active & skipping & (have >= skip_bytes)
        resp = self.mem.resp
        m.d.comb += resp.valid.eq(active & ~skipping & (have >= need) & ~self.abort)
        for i in range(self.lanes):
            m.d.comb += resp.payload.data[i].eq(
                buf[8 * self.elem_bytes * i:][:self.elem_width])
        out_fire = resp.valid & resp.ready
        take = Signal(range(max(Lb, W) + 1))
        m.d.comb += take.eq(Mux(skip_now, skip_bytes, Mux(out_fire, need, 0)))
        with m.If(skip_now):
            m.d.sync += skipping.eq(0)
        m.d.comb += [rd.data.ready.eq(active & (beats_left != 0) & (have <= Lb))]
        in_fire = rd.data.valid & rd.data.ready
        after = Signal(range(B + 1))
        m.d.comb += after.eq(have - take)
        shifted = Signal(8 * B)
        m.d.comb += shifted.eq(buf >> (take << 3))
        with m.If(in_fire):
            m.d.sync += [buf.eq(shifted | (rd.data.payload << (after << 3))),
                         have.eq(after + W), beats_left.eq(beats_left - 1)]
        with m.Else():
            m.d.sync += [buf.eq(shifted), have.eq(after)]
        with m.If(out_fire):
            with m.If(vec_rem == need):
                m.d.sync += [vec_rem.eq(vec_bytes), vecs_left.eq(vecs_left - 1)]
                with m.If(vecs_left == 1):
                    # the request's last byte: what is left of its final AXI beat is padding;
                    # the buffer is zeroed too (new beats are OR-ed in above the held bytes)
                    m.d.sync += [active.eq(0), have.eq(0), buf.eq(0)]
            with m.Else():
                m.d.sync += vec_rem.eq(vec_rem - need)
        with m.If(self.abort):
            m.d.sync += [active.eq(0), have.eq(0), buf.eq(0)]
        m.d.comb += self.idle.eq(rd.idle)
        return m


class ResultPacker(wiring.Component):
    """Selected indices -> u32 words packed into AXI write beats at ``dst_addr`` (4-byte aligned).

    Index ``i`` of the job goes to bytes ``dst_addr + 4 i .. + 3`` (little-endian u32). The
    beats start at ``dst_addr`` rounded down to the bus width; ``wstrb`` covers exactly the
    words written, so nothing outside ``dst_addr .. dst_addr + 4 * count - 1`` is touched.
    :meth:`transfer` gives the matching :class:`~nms.rtl.axi.AxiBurstWriter` command.

    Attributes
    ----------
    indices : In(stream.Signature({index, last}))
    beats : Out(stream.Signature({data, strb}))
    dst_addr : In(addr_width) — held during a job (bits 1..0 must be 0).
    start : In(1) — pulse at the job's start: the first index goes to ``dst_addr``.
    """

    def __init__(self, *, index_layout, addr_width: int = 32, data_width: int = 64):
        check_data_width(data_width)
        self.addr_width, self.data_width = addr_width, data_width
        self.words = data_width // 32
        self.index_layout = index_layout
        self.beat_layout = data.StructLayout({"data": unsigned(data_width),
                                              "strb": unsigned(data_width // 8)})
        super().__init__({
            "indices": In(stream.Signature(index_layout)),
            "beats": Out(stream.Signature(self.beat_layout)),
            "dst_addr": In(addr_width),
            "start": In(1),
        })

    def transfer(self, m, count):
        """``(addr, beats)`` Values of the write transfer for ``count`` indices."""
        wlog = ceil_log2(self.data_width // 8)
        first_word = self.dst_addr[2:wlog] if self.words > 1 else C(0, 1)
        addr = Cat(C(0, wlog), self.dst_addr[wlog:])
        beats = Signal(24)
        m.d.comb += beats.eq((first_word + count + self.words - 1) >> max(ceil_log2(self.words), 0))
        return addr, beats

    def elaborate(self, platform):
        m = Module()
        n = self.words
        lane = Signal(range(max(n, 2)))
        acc = Signal(self.data_width)
        strb = Signal(self.data_width // 8)
        out = self.beats
        with m.If(out.ready):
            m.d.sync += out.valid.eq(0)
        m.d.comb += self.indices.ready.eq(~out.valid | out.ready)
        word = Signal(32)
        m.d.comb += word.eq(self.indices.payload.index)
        new_acc = Signal(self.data_width)
        new_strb = Signal(self.data_width // 8)
        m.d.comb += [new_acc.eq(acc | (word << (lane * 32))),
                     new_strb.eq(strb | (C(0xF, 4) << (lane * 4)))]
        with m.If(self.indices.valid & self.indices.ready):
            with m.If((lane == n - 1) | self.indices.payload.last):
                m.d.sync += [out.valid.eq(1), out.payload.data.eq(new_acc),
                             out.payload.strb.eq(new_strb), acc.eq(0), strb.eq(0), lane.eq(0)]
            with m.Else():
                m.d.sync += [acc.eq(new_acc), strb.eq(new_strb), lane.eq(lane + 1)]
        with m.If(self.start):
            m.d.sync += [acc.eq(0), strb.eq(0),
                         lane.eq(self.dst_addr[2:ceil_log2(self.data_width // 8)] if n > 1 else 0)]
        return m
