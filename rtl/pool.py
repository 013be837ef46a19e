"""Pooling unit in front of the kNN: w×w floor-mean pooling of square images, stream in/out.

Sits between the :class:`~nms.rtl.memport.VectorFetcher` and the chunk buffer
(``docs/energy.md`` §6.1, ``docs/rtl-datapath.md``). Bit-exact with
:func:`nms.verif.models.pool.pool_vectors`.
"""

from __future__ import annotations

import math

from amaranth import Array, Cat, Module, Mux, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from nms.rtl.params import check_int

__all__ = ["PoolUnit"]


class PoolUnit(wiring.Component):
    """Reduces each vector (an ``img_w × img_w`` image, row-major) by w×w floor-mean pooling.

    Input and output are vector beats in the memory port's order: ``ceil(len / lanes)`` beats
    per vector, element ``i`` in lane ``i % lanes`` of beat ``i // lanes``, each vector starting
    on a new beat. The unused lanes of an input vector's final beat may carry any value (they
    are skipped); those of an output vector's final beat are zero.

    ``pool`` selects the window (``OPT.pool``: 0 none, 1 = 2×2, 2 = 4×4):

    * ``pool = 0``: the beats pass through unchanged (no register, no added cycle);
    * ``pool = 1, 2``: one raw element per cycle (so ``lanes`` cycles per input beat) adds into
      the partial sum of its column window — ``img_w / w`` sums of ``elem_width + 2·log2 w``
      bits, so nothing saturates. The sum of a window is reset by its first element (first row
      of the window row, first column of the window); after its last element (last row, last
      column) ``sum >> 2·log2 w`` is the pooled element, packed into output beats in raster
      order. An output beat leaves when it is full or the vector ends. The output has one beat
      of buffering; a refused output beat holds the input.

    ``dim``, ``img_w`` and ``pool`` must be held while vectors flow and must describe a
    poolable image (``img_w² = dim``, ``w`` divides ``img_w``): the job interface refuses every
    other job before it starts (``nms.rtl.regmap``), so the unit does not check them.

    Parameters
    ----------
    lanes : int
        Elements per beat, a power of two 1..256. Default 8.
    elem_width : int
        Element width in bits, 1..16. Default 8.
    max_dim : int
        Largest raw vector length, 1..65536; the image side is at most ``isqrt(max_dim)``.
        Default 1024.

    Attributes
    ----------
    inp : In(stream.Signature(beat_layout))
        Raw vector beats, ``{data: ArrayLayout(unsigned(elem_width), lanes)}``.
    out : Out(stream.Signature(beat_layout))
        Pooled vector beats (the same layout).
    dim : In(range(max_dim + 1))
        Raw vector length.
    img_w : In(range(max_side + 1))
        Image side (``OPT.img_w``).
    pool : In(2)
        Window code (``OPT.pool``).
    clear : In(1)
        Returns the pooled path to the start of a vector (a new job); drops a held beat.
    max_side : int
        ``isqrt(max_dim)``.
    sums : int
        Partial sums kept, ``max(1, max_side // 2)``.
    sum_width : int
        ``elem_width + 4`` (a 4×4 window's sum).

    Raises
    ------
    TypeError, ValueError
        A parameter of the wrong type or out of range; the message names it and its value.
    """

    def __init__(self, *, lanes: int = 8, elem_width: int = 8, max_dim: int = 1024):
        check_int("lanes", lanes, 1, 256, "a power of two from 1 to 256")
        if lanes & (lanes - 1):
            raise ValueError(f"lanes={lanes} is not a power of two")
        check_int("elem_width", elem_width, 1, 16, "1 to 16 bits per element")
        check_int("max_dim", max_dim, 1, 1 << 16, "1 to 65536 elements per vector")
        self.lanes, self.elem_width, self.max_dim = lanes, elem_width, max_dim
        self.max_side = math.isqrt(max_dim)
        self.sums = max(1, self.max_side // 2)
        self.sum_width = elem_width + 4
        self.beat_layout = data.StructLayout({
            "data": data.ArrayLayout(unsigned(elem_width), lanes)})
        super().__init__({
            "inp": In(stream.Signature(self.beat_layout)),
            "out": Out(stream.Signature(self.beat_layout)),
            "dim": In(range(max_dim + 1)),
            "img_w": In(range(self.max_side + 1)),
            "pool": In(2),
            "clear": In(1),
        })

    @property
    def parameters(self) -> dict:
        """Generator parameters (for metadata)."""
        return {"lanes": self.lanes, "elem_width": self.elem_width, "max_dim": self.max_dim}

    @property
    def derived(self) -> dict:
        """Derived sizes (for metadata)."""
        return {"max_side": self.max_side, "sums": self.sums, "sum_width": self.sum_width}

    def elaborate(self, platform):
        m = Module()
        L, ew = self.lanes, self.elem_width
        inp, out = self.inp, self.out
        pooled = self.pool != 0

        # ---- the held input beat and the element walk ----------------------------------------
        have = Signal()
        cur = Signal(L * ew)
        li = Signal(range(max(L, 2)))                  # lane of the current element
        e = Signal(range(max(self.max_dim, 2)))        # element of the vector
        c = Signal(range(max(self.max_side, 2)))       # column in the image
        rw = Signal(2)                                 # row inside the window row
        mask = Signal(2)                               # w - 1
        m.d.comb += mask.eq(Mux(self.pool == 2, 3, Mux(self.pool == 1, 1, 0)))

        x = Signal(ew)
        m.d.comb += x.eq(cur.word_select(li, ew))
        sums = Array(Signal(self.sum_width, name=f"sum{i}") for i in range(self.sums))
        wc = Signal(range(max(self.sums, 2)))          # the element's column window
        m.d.comb += wc.eq(Mux(self.pool == 2, c >> 2, c >> 1))
        first = (rw == 0) & ((c & mask) == 0)
        emit = (rw == mask) & ((c & mask) == mask)
        total = Signal(self.sum_width)
        m.d.comb += total.eq(Mux(first, 0, sums[wc]) + x)
        value = Signal(ew)
        m.d.comb += value.eq(Mux(self.pool == 2, total >> 4, total >> 2))
        vec_end = e == self.dim - 1
        beat_end = (li == L - 1) | vec_end

        # ---- output packing: one beat of buffering ---------------------------------------------
        out_valid = Signal()
        out_data = Signal(L * ew)
        pack = Array(Signal(ew, name=f"pack{i}") for i in range(L))
        opos = Signal(range(max(L, 2)))
        step = Signal()
        m.d.comb += step.eq(pooled & have & (~out_valid | out.ready))
        with m.If(out.ready):
            m.d.sync += out_valid.eq(0)

        m.d.comb += [
            out.valid.eq(Mux(pooled, out_valid, inp.valid)),
            out.payload.eq(Mux(pooled, out_data, inp.payload.as_value())),
            inp.ready.eq(Mux(pooled, ~have | (step & beat_end), out.ready)),
        ]

        with m.If(pooled & inp.valid & inp.ready):
            m.d.sync += [have.eq(1), cur.eq(inp.payload.as_value())]
        with m.Elif(step & beat_end):
            m.d.sync += have.eq(0)

        with m.If(step):
            m.d.sync += [li.eq(Mux(beat_end, 0, li + 1)), e.eq(e + 1), sums[wc].eq(total)]
            last_col = c == self.img_w - 1
            with m.If(last_col):
                m.d.sync += [c.eq(0), rw.eq(Mux(rw == mask, 0, rw + 1))]
            with m.Else():
                m.d.sync += c.eq(c + 1)
            with m.If(vec_end):
                m.d.sync += [e.eq(0), c.eq(0), rw.eq(0)]
            # the beat that leaves: the packed elements, this one at opos if it completes a window
            lanes_out = [Mux(emit & (opos == i), value, pack[i]) for i in range(L)]
            flush = (emit & (opos == L - 1)) | vec_end
            with m.If(flush):
                m.d.sync += [out_valid.eq(1), out_data.eq(Cat(*lanes_out)), opos.eq(0)]
                m.d.sync += [pack[i].eq(0) for i in range(L)]
            with m.Elif(emit):
                m.d.sync += [pack[opos].eq(value), opos.eq(opos + 1)]

        with m.If(self.clear):
            m.d.sync += [have.eq(0), li.eq(0), e.eq(0), c.eq(0), rw.eq(0), opos.eq(0),
                         out_valid.eq(0)]
            m.d.sync += [pack[i].eq(0) for i in range(L)]
        return m
