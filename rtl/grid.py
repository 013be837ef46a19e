"""Grid sampler: exact-budget exemplar choice over the 2-D embedding (DE-SNE stage 4).

Bit-exact with :func:`nms.verif.models.desne.grid_select` (see ``docs/rtl-grid.md`` for the phases
and the cycle formula). Everything is a sequence of passes over on-chip memories with synchronous
read ports (block-RAM friendly): one pass over the points or over the occupied cells ("slots")
at a time, so no read-modify-write hazard can arise and no memory needs a second read port.

Structure (one component per concern; each has its own simulator test in
``tests/test_grid_units.py``):

* :class:`GridController` — accepts the points (point memory, job values), then starts the phases
  one after the other;
* :class:`BoundingBox` — min/max per axis while the points load, then the power-of-two extent;
* :class:`LevelSearch` — the finest-first level passes that build the cell map, and the slot
  sweep that copies the counts out of it (with :class:`CentreDistance`, the write-behind pipeline
  of each point's squared distance to its cell centre);
* :class:`Allocation` — the quotas: :class:`WaterLevel` (adaptive) or a divider
  (proportional), then :class:`ExtraUnits` for what is left of the budget;
* :class:`SelectionRounds` — rounds of "nearest unpicked member per cell with quota left";
* :class:`Emitter` — the picked bitmap in index order onto ``indices``, clearing it behind;
* :class:`GridSampler` — the memories shared between phases, their port multiplexers, wiring.

Every phase unit has the same handshake (:data:`PHASE`): ``start`` (a one-cycle pulse while the
unit is idle) moves it into its first state on the next cycle, and ``done`` is high in its last
cycle, in which the controller starts the next unit, so the phases follow each other with no
cycle in between (the cycle formula of :meth:`GridSampler.run_cycles` counts every state).
A unit's ``busy`` (not idle) selects it on the multiplexed memory ports.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from amaranth import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import ReadPort, WritePort
from amaranth.lib.wiring import In, Out
from amaranth.utils import bits_for, ceil_log2

from nms.rtl import fixedpoint as fp
from nms.rtl.bram import block_ram
from nms.rtl.divider import Divider
from nms.rtl.params import check_int

__all__ = ["GridGeometry", "GridController", "BoundingBox", "CentreDistance", "LevelSearch",
           "WaterLevel", "ExtraUnits", "Allocation", "SelectionRounds", "Emitter", "CellExport",
           "GridSampler",
           "PHASE"]

#: signed width of one embedding coordinate (Q8.16 in [-2**23, 2**23 - 1])
COORD_BITS = 24
#: per-axis squared distance to the cell centre is < 2**50 in total (|offset| < 2**25)
DIST_BITS = 50

#: phase handshake, the controller's view: ``start`` pulse out, ``done`` (last cycle) back
PHASE = wiring.Signature({"start": Out(1), "done": In(1)})


@dataclass(frozen=True)
class GridGeometry:
    """Widths and depths of a sampler for ``capacity`` points (shared by all its units).

    Attributes
    ----------
    capacity : int
        C, 2..65536.
    grid_bits : int
        Finest grid level G (:data:`nms.rtl.fixedpoint.GRID_BITS_MAX`, the model's limit).
    index_bits, count_bits, slot_bits : int
        Widths of a point index, of a count 0..C and of a slot (occupied-cell) index.
    max_cells : int
        ``min(C, 4**G)``: most occupied cells a run can have.
    divider_width : int
        ``2 * count_bits``: the proportional dividend ``budget * count``.
    key_bits : int
        ``count_bits + 2 * G``: the extra-unit key ``(primary, ~cell)``.
    """

    capacity: int

    def __post_init__(self):
        check_int("capacity", self.capacity, 2, 1 << 16, "2 to 65536 points held on chip")

    grid_bits = fp.GRID_BITS_MAX

    @property
    def index_bits(self) -> int:
        return max(1, ceil_log2(self.capacity))

    @property
    def count_bits(self) -> int:
        return bits_for(self.capacity)

    @property
    def max_cells(self) -> int:
        return min(self.capacity, 1 << (2 * self.grid_bits))

    @property
    def slot_bits(self) -> int:
        return max(1, ceil_log2(self.max_cells))

    @property
    def cell_bits(self) -> int:
        """Cell address ``Cat(cx, cy)``, ``grid_bits`` per axis."""
        return 2 * self.grid_bits

    @property
    def divider_width(self) -> int:
        return 2 * self.count_bits

    @property
    def key_bits(self) -> int:
        return self.count_bits + 2 * self.grid_bits

    @property
    def best_bits(self) -> int:
        """Per-slot best candidate ``{index, dist, valid}``."""
        return self.index_bits + DIST_BITS + 1

    def run_cycles(self, *, level_cells: Sequence[Sequence[int]], budget: int,
                   proportional: bool, max_quota: int, last_index: int,
                   cover: bool = False) -> int:
        """Cycles from the final point's acceptance to the final index's handshake, no stalls.

        The formula of ``docs/rtl-grid.md``, phase by phase, for one run's statistics:

        Parameters
        ----------
        level_cells : sequence of sequences of int
            For each level tried, finest (``grid_bits``) first down to the chosen one, the cell
            of every point in index order (any one-to-one cell numbering).
        budget : int
            M (after the clamp to ``1..N``).
        proportional : bool
            Allocation mode.
        max_quota : int
            R, the largest quota of the chosen level.
        last_index : int
            The largest chosen index.
        cover : bool
            Coverage mode: the rounds and the emission are replaced by the cell export
            (``1 + N + 1 + K`` cycles to the final ``cells`` beat; ``max_quota`` and
            ``last_index`` are then unused).

        Returns
        -------
        int
            ``1`` (box) ``+ sum over levels (10 + 2 * points read + cells)`` ``+`` water
            level (adaptive: one cycle per bit, ``K + 3`` more per tested bit) ``+`` quotas
            (``1 + 2K`` adaptive, ``1 + K * (count_bits + 3)`` proportional) ``+ 2 +`` extra
            units (``key_bits * (K + 4) + K + 5`` if any) ``+ R * (N + K + 10)`` (rounds)
            ``+ 2 + last_index + 1`` (emit).
        """
        if not level_cells or len(level_cells) > self.grid_bits + 1:
            raise ValueError(f"level_cells must list 1 to {self.grid_bits + 1} levels, "
                             f"not {len(level_cells)}")
        n = len(level_cells[0])
        if not 1 <= budget <= n:
            raise ValueError(f"budget must be in [1, {n}], not {budget}")
        cycles = 1                                            # box
        for cells in level_cells:                             # level passes, finest first
            seen, read = set(), 0
            for cell in cells:
                read += 1
                if cell not in seen and len(seen) == budget:
                    break                                     # the (M+1)-th cell: abort
                seen.add(cell)
            cycles += 10 + 2 * read + len(seen)
        final = list(level_cells[-1])
        counts = [final.count(c) for c in dict.fromkeys(final)]
        K = len(counts)
        if K > budget:
            raise ValueError(f"the last level has {K} cells, more than budget={budget}")
        if proportional:
            cycles += 1 + K * (self.count_bits + 3)
            extra = budget - sum(budget * c // n for c in counts)
        else:
            lvl = 0                                           # water level, bit by bit
            for b in range(self.count_bits - 1, -1, -1):
                cycles += 1
                cand = lvl | (1 << b)
                if cand <= max(counts):
                    cycles += K + 3
                    if sum(min(c, cand) for c in counts) <= budget:
                        lvl = cand
            cycles += 1 + 2 * K
            extra = budget - sum(min(c, lvl) for c in counts)
        cycles += 2 + (self.key_bits * (K + 4) + K + 5 if extra else 0)
        if cover:
            return cycles + 1 + n + 1 + K                     # cell export
        cycles += max_quota * (n + K + 10)                    # rounds
        cycles += 2 + last_index + 1                          # emit
        return cycles


def _block_ram(m, name, width, depth):
    """A ``no_rw_check`` block RAM (:func:`nms.rtl.bram.block_ram`): its registered read port and
    write port. The grid sampler never uses a word read in the cycle its address is written:
    the level pass forwards the previous point's cell-map write, the rounds' pass the best
    entries of the three points ahead, and every other read and write of one memory in the same
    cycle go to different addresses or phases."""
    _, read, write = block_ram(m, name, unsigned(width), depth)
    return read, write


def _read(addr_width, width):
    """A unit's side of a memory read port (it drives ``addr``/``en``, receives ``data``)."""
    return In(ReadPort.Signature(addr_width=addr_width, shape=unsigned(width)))


def _write(addr_width, width):
    """A unit's side of a memory write port (it drives ``en``, ``addr`` and ``data``)."""
    return In(WritePort.Signature(addr_width=addr_width, shape=unsigned(width)))


def _phase_unit(m, unit, first_state):
    """Common entry of a phase unit: IDLE until ``run.start``, then ``first_state``."""
    with m.State("IDLE"):
        with m.If(unit.run.start):
            m.next = first_state


class _SlotScan:
    """Pipelined scan over the ``cells`` slots, one per cycle: the read address is ``s``; the
    data of slot ``s_d`` are on the read ports while ``v_d`` (the user registers them there:
    no logic behind a block-RAM output), and the registered data of slot ``s_dd`` are used
    while ``v_dd``. A scan takes ``cells + 3`` cycles, the finishing one included."""

    def __init__(self, m, geo, cells):
        self.m, self.cells = m, cells
        self.s = Signal(range(geo.max_cells + 1), name="s")
        # "s == cells", a register stepped with s (cells is stable through a scan): the
        # finishing condition reaches the FSMs without a compare (it was the grid's critical
        # path, the slot count -> the end compare -> done -> the controller's next state)
        self.s_end = Signal(name="s_end")
        self.s_d = Signal(geo.slot_bits, name="s_d")
        self.v_d = Signal(name="v_d")
        self.s_dd = Signal(geo.slot_bits, name="s_dd")
        self.v_dd = Signal(name="v_dd")

    def start(self):
        self.m.d.sync += [self.s.eq(0), self.s_end.eq(self.cells == 0), self.v_d.eq(0),
                          self.v_dd.eq(0)]

    def step(self):
        """One scan cycle; returns the 'scan finished' condition of this cycle."""
        s, m = self.s, self.m
        with m.If(~self.s_end):                     # s < cells
            m.d.sync += [s.eq(s + 1), self.s_end.eq(s + 1 == self.cells)]
        m.d.sync += [self.v_d.eq(~self.s_end), self.s_d.eq(s),
                     self.v_dd.eq(self.v_d), self.s_dd.eq(self.s_d)]
        return self.s_end & ~self.v_d & ~self.v_dd


# ------------------------------------------------------------------------------------------------
# controller
# ------------------------------------------------------------------------------------------------

class GridController(wiring.Component):
    """Point loading and phase sequencing.

    LOAD takes one point per cycle into the point memory (and hands it to the bounding box),
    zeroes the point's picked bit (so the bitmap starts every job zeroed, whatever an abort or
    reset left in it), and with the final point (``last``, or the C-th) latches ``N``, ``budget`` clamped to ``1..N``
    and ``proportional``. BOX (1 cycle) finishes the box and starts the level search; then each
    phase's ``done`` starts the next: level search, allocation, rounds, emission, and back to
    LOAD. ``points`` is not ready while ``clearing`` (the level search's cell-map sweep after a
    reset).

    Parameters
    ----------
    capacity : int
        C, 2..65536.

    Attributes
    ----------
    points : In(stream.Signature({x, y, last}))
        The sampler's point stream (ready only in LOAD).
    budget_in, proportional_in, cover_in : In
        The sampler's ``budget`` / ``proportional`` / ``cover``, sampled with the final point.
    clearing : In(1)
        The cell map is being cleared: hold the load off.
    pts_w, picked_w : write ports of the point memory ``Cat(x, y)`` and of the picked bitmap.
    box : Out(stream.Signature({x, y, first}, always_ready=True))
        Every accepted point (``first`` on point 0); ``box_finish`` pulses in BOX.
    n_points, budget, proportional, cover : Out
        The latched job values.
    level, allocation, rounds, emit, export : Out(PHASE)
        Start/done of the phase units (``export`` replaces rounds and emission in coverage
        mode).
    busy : Out(1)
        Everywhere but LOAD.
    """

    def __init__(self, *, capacity: int):
        geo = self.geometry = GridGeometry(capacity)
        self.point_layout = point_layout()
        self.box_layout = data.StructLayout({
            "x": signed(COORD_BITS), "y": signed(COORD_BITS), "first": unsigned(1)})
        super().__init__({
            "points": In(stream.Signature(self.point_layout)),
            "budget_in": In(unsigned(geo.count_bits)),
            "proportional_in": In(1),
            "cover_in": In(1),
            "clearing": In(1),
            "pts_w": _write(geo.index_bits, 2 * COORD_BITS),
            "picked_w": _write(geo.index_bits, 1),
            "box": Out(stream.Signature(self.box_layout, always_ready=True)),
            "box_finish": Out(1),
            "n_points": Out(range(capacity + 1)),
            "budget": Out(unsigned(geo.count_bits)),
            "proportional": Out(1),
            "cover": Out(1),
            "level": Out(PHASE),
            "allocation": Out(PHASE),
            "rounds": Out(PHASE),
            "emit": Out(PHASE),
            "export": Out(PHASE),
            "busy": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        C = self.geometry.capacity
        n = Signal(range(C + 1))        # points loaded so far
        pay = self.points.payload
        m.d.comb += [self.box.payload.x.eq(pay.x), self.box.payload.y.eq(pay.y),
                     self.box.payload.first.eq(n == 0), self.busy.eq(1)]
        with m.FSM(init="LOAD"):
            with m.State("LOAD"):
                m.d.comb += [self.busy.eq(0), self.points.ready.eq(~self.clearing)]
                with m.If(self.points.valid & ~self.clearing):
                    m.d.comb += [self.pts_w.en.eq(1), self.pts_w.addr.eq(n),
                                 self.pts_w.data.eq(Cat(pay.x, pay.y)), self.box.valid.eq(1),
                                 self.picked_w.en.eq(1), self.picked_w.addr.eq(n),
                                 self.picked_w.data.eq(0)]
                    m.d.sync += n.eq(n + 1)
                    with m.If(pay.last | (n == C - 1)):
                        b = self.budget_in
                        m.d.sync += [self.n_points.eq(n + 1), n.eq(0),
                                     self.proportional.eq(self.proportional_in),
                                     self.cover.eq(self.cover_in),
                                     self.budget.eq(Mux(b == 0, 1, Mux(b > n + 1, n + 1, b)))]
                        m.next = "BOX"
            with m.State("BOX"):
                m.d.comb += [self.box_finish.eq(1), self.level.start.eq(1)]
                m.next = "LEVEL"
            for state, phase, nxt, following in (
                    ("LEVEL", self.level, "ALLOCATION", self.allocation),
                    ("ROUNDS", self.rounds, "EMIT", self.emit),
                    ("EMIT", self.emit, "LOAD", None),
                    ("EXPORT", self.export, "LOAD", None)):
                with m.State(state):
                    with m.If(phase.done):
                        if following is not None:
                            m.d.comb += following.start.eq(1)
                        m.next = nxt
            with m.State("ALLOCATION"):
                # coverage mode: the cells and quotas go out to the cover unit instead
                with m.If(self.allocation.done):
                    with m.If(self.cover):
                        m.d.comb += self.export.start.eq(1)
                        m.next = "EXPORT"
                    with m.Else():
                        m.d.comb += self.rounds.start.eq(1)
                        m.next = "ROUNDS"
        return m


# ------------------------------------------------------------------------------------------------
# bounding box
# ------------------------------------------------------------------------------------------------

class BoundingBox(wiring.Component):
    """Per-axis minimum ``lo`` and extent exponent ``e`` of a point set.

    Every ``sample`` beat updates min and max (``first`` restarts them); a ``finish`` pulse
    (the cycle after the final sample, or later) registers ``e = bit_length(max - min)``, so
    ``2**e`` is the smallest power of two >= the span ``max - min + 1``, exactly as
    :func:`~nms.verif.models.desne.grid_cells` draws the box. Samples and ``finish`` are
    registered on entry: ``lo`` is final from the cycle after ``finish``, ``e`` from the
    :attr:`latency`-th.

    Attributes
    ----------
    sample : In(stream.Signature({x, y, first}, always_ready=True))
    finish : In(1)
    lo_x, lo_y : Out(signed(24))
    ex, ey : Out(range(25))
    """

    def __init__(self):
        self.sample_layout = data.StructLayout({
            "x": signed(COORD_BITS), "y": signed(COORD_BITS), "first": unsigned(1)})
        super().__init__({
            "sample": In(stream.Signature(self.sample_layout, always_ready=True)),
            "finish": In(1),
            "lo_x": Out(signed(COORD_BITS)), "lo_y": Out(signed(COORD_BITS)),
            "ex": Out(range(COORD_BITS + 1)), "ey": Out(range(COORD_BITS + 1)),
        })

    #: cycles from the ``finish`` pulse to ``lo``/``e`` of all the samples
    latency = 2

    def elaborate(self, platform):
        m = Module()
        # the sample and the finish pulse are registered first: the comparisons with the
        # running minimum and maximum start from flip-flops
        pay = Signal(self.sample_layout)
        valid, finish = Signal(), Signal()
        m.d.sync += [pay.eq(self.sample.payload), valid.eq(self.sample.valid),
                     finish.eq(self.finish)]
        for axis, v, lo, e in (("x", pay.x, self.lo_x, self.ex), ("y", pay.y, self.lo_y, self.ey)):
            hi = Signal(signed(COORD_BITS), name=f"max{axis}")
            with m.If(valid):
                with m.If(pay.first | (v < lo)):
                    m.d.sync += lo.eq(v)
                with m.If(pay.first | (v > hi)):
                    m.d.sync += hi.eq(v)
            span1 = Signal(COORD_BITS, name=f"span1_{axis}")    # max - min < 2**24
            m.d.comb += span1.eq(hi - lo)
            with m.If(finish):
                m.d.sync += e.eq(0)
                for k in range(COORD_BITS):      # the highest set bit wins
                    with m.If(span1[k]):
                        m.d.sync += e.eq(k + 1)
        return m


# ------------------------------------------------------------------------------------------------
# level search
# ------------------------------------------------------------------------------------------------

class CentreDistance(wiring.Component):
    """Squared distance of a point to its cell centre, written behind the level pass.

    For offsets ``d = y - lo`` (per axis, unsigned), cell ``c`` at level ``g`` and box exponent
    ``e``: ``(dx - ((2cx+1) << ex >> (g+1)))**2 + (dy - ((2cy+1) << ey >> (g+1)))**2``, i.e.
    the distance to ``lo + (((2c+1) << e) >> (g+1))`` of the model. Five stages (input
    registers, centre offsets, magnitudes of the differences, three partial products of each
    square, the squares), then the sum goes straight to the write port: the writes keep their
    order and land :attr:`latency` cycles after the input beat.

    Attributes
    ----------
    i : In(stream.Signature({addr, dx, dy, cx, cy, g}, always_ready=True))
    ex, ey : In(range(25))
        Box exponents (constant during a pass).
    pdist : write port ``addr -> DIST_BITS``.
    """

    latency = 5

    def __init__(self, *, capacity: int):
        geo = self.geometry = GridGeometry(capacity)
        G = geo.grid_bits
        self.in_layout = data.StructLayout({
            "addr": unsigned(geo.index_bits), "dx": unsigned(COORD_BITS),
            "dy": unsigned(COORD_BITS), "cx": unsigned(G), "cy": unsigned(G),
            "g": range(G + 1)})
        super().__init__({
            "i": In(stream.Signature(self.in_layout, always_ready=True)),
            "ex": In(range(COORD_BITS + 1)), "ey": In(range(COORD_BITS + 1)),
            "pdist": _write(geo.index_bits, DIST_BITS),
        })

    def elaborate(self, platform):
        m = Module()
        G = self.geometry.grid_bits
        L = self.latency
        en = [Signal(name=f"en{k}") for k in range(L)]
        addr = [Signal(self.geometry.index_bits, name=f"addr{k}") for k in range(L)]
        x = Signal(self.in_layout)
        m.d.sync += [en[0].eq(self.i.valid), x.eq(self.i.payload)]
        m.d.sync += [en[k + 1].eq(en[k]) for k in range(L - 1)]
        m.d.sync += [addr[1].eq(x.addr)] + [addr[k + 1].eq(addr[k]) for k in range(1, L - 1)]
        LO = 17                         # |diff| < 2**25 = high 8 bits, low 17 bits

        def axis_square(d, c, e, axis):
            # stage 0 (with the input registers): the shift of the centre offset,
            # ((2c+1) << e) >> (g+1) == ((2c+1) << 24) >> (25 + g - e), one shifter, not two;
            # stage 1: the offset registered; stage 2: |d - off| (both differences side by
            # side, no negation behind a subtraction); stage 3: three partial products, one DSP
            # each; stage 4: their sum, the axis' square
            sh = Signal(range(COORD_BITS + G + 2), name=f"sh_{axis}")
            m.d.sync += sh.eq(COORD_BITS + 1 + self.i.payload.g - e)
            off = Signal(COORD_BITS + 1, name=f"off_{axis}")
            d1 = Signal(COORD_BITS, name=f"d1_{axis}")
            m.d.sync += [off.eq(Cat(Const(0, COORD_BITS), Const(1, 1), c) >> sh), d1.eq(d)]
            mag = Signal(COORD_BITS + 1, name=f"mag_{axis}")
            m.d.sync += mag.eq(Mux(d1 >= off, d1 - off, off - d1))
            lo, hi = mag[:LO], mag[LO:]
            p_ll = Signal(2 * LO, name=f"p_ll_{axis}")
            p_lh = Signal(LO + len(hi), name=f"p_lh_{axis}")
            p_hh = Signal(2 * len(hi), name=f"p_hh_{axis}")
            m.d.sync += [p_ll.eq(lo * lo), p_lh.eq(lo * hi), p_hh.eq(hi * hi)]
            sq = Signal(DIST_BITS, name=f"sq_{axis}")
            # p_ll < 2**34 and p_hh << 34 do not overlap: one adder, not two
            m.d.sync += sq.eq(Cat(p_ll, p_hh) + (p_lh << (LO + 1)))
            return sq

        sq_x = axis_square(x.dx, x.cx, self.ex, "x")
        sq_y = axis_square(x.dy, x.cy, self.ey, "y")
        m.d.comb += [self.pdist.en.eq(en[L - 1]), self.pdist.addr.eq(addr[L - 1]),
                     self.pdist.data.eq(sq_x + sq_y)]
        return m


class LevelSearch(wiring.Component):
    """Grid level ``g``: the finest level <= G with at most ``budget`` occupied cells.

    One pass per level, finest first: the cell of every point, ``((y - lo) << g) >> e`` per axis,
    is looked up in the cell map (``{slot + 1, count}`` per cell, all-zero between uses); a new
    cell gets the next slot (its cell id goes to ``cellid``), every point gets its slot
    (``pslot``) and its squared distance to the cell centre (``pdist``, via
    :class:`CentreDistance`). The pass stops at a (``budget`` + 1)-th cell: cells nest, so
    occupancy only grows with g and the first complete level is the answer. A sweep over the
    slots then copies the counts into ``cnt`` (and tracks their maximum) and clears the map
    (also after an aborted pass, before the next coarser level). Cycles per level:
    ``10 + 2 * points read + cells`` (pass priming 5, two cycles per point, the sweep pipeline
    ``cells + 5``).

    A run leaves the cell map all-zero, but a reset in the middle of one does not: so the unit
    leaves reset in CLEAR, a sweep that zeroes all ``4**G`` cell-map entries (one per cycle,
    ``clearing`` high), and only then goes idle. A reset (power-up, or the device's abort) is
    the only way to leave a run unfinished, so the map is zero at every run's start.

    Timing: no logic behind a RAM output or in front of the cell map's address. The pass reads
    each point three ahead and registers its word, then its offsets (``y - lo``), then its
    cell, one right shift of the registered offset by the per-pass constant ``e + G - g``
    (``((d << G) >> (e + G - g)) == (d << g) >> e``); the cell-map entry is registered, or
    forwarded from the previous point's write to the same cell.

    Attributes
    ----------
    run : In(PHASE)
    busy : Out(1)
        In a run (not idle, not clearing).
    clearing : Out(1)
        The cell-map sweep after a reset (``4**G`` cycles); ``run.start`` must wait for its end.
    n_points, budget : In
        N and M of the job.
    lo_x, lo_y, ex, ey : In
        The bounding box.
    level : Out(range(G + 1))
        g (the current level during the search, the result after ``done``).
    cells : Out(range(max_cells + 1))
        K, the occupied cells (slots) of ``level``.
    max_count : Out(count_bits)
        The largest count of the final sweep.
    pts : read port of the point memory; ``pslot``, ``pdist``, ``cellid_w``, ``cnt_w``: write
    ports; ``cellid_r``: read port (the sweep).
    """

    def __init__(self, *, capacity: int):
        geo = self.geometry = GridGeometry(capacity)
        IW, SW, CW = geo.index_bits, geo.slot_bits, geo.count_bits
        super().__init__({
            "run": In(PHASE),
            "busy": Out(1),
            "clearing": Out(1),
            "n_points": In(range(capacity + 1)),
            "budget": In(unsigned(CW)),
            "lo_x": In(signed(COORD_BITS)), "lo_y": In(signed(COORD_BITS)),
            "ex": In(range(COORD_BITS + 1)), "ey": In(range(COORD_BITS + 1)),
            "level": Out(range(geo.grid_bits + 1)),
            "cells": Out(range(geo.max_cells + 1)),
            "max_count": Out(unsigned(CW)),
            "pts": _read(IW, 2 * COORD_BITS),
            "pslot": _write(IW, SW),
            "pdist": _write(IW, DIST_BITS),
            "cellid_r": _read(SW, geo.cell_bits),
            "cellid_w": _write(SW, geo.cell_bits),
            "cnt_w": _write(SW, CW),
        })

    def elaborate(self, platform):
        m = Module()
        geo = self.geometry
        G, CW, CELLW = geo.grid_bits, geo.count_bits, geo.cell_bits
        S1W = bits_for(geo.max_cells)       # slot + 1 (0 = empty) in the cell map
        cmap_r, cmap_wport = _block_ram(m, "cellmap", S1W + CW, 1 << CELLW)
        # the cell-map writes land one cycle late (write-behind registers): the level pass's
        # next read of the same cell comes before the write anyway (forwarded, `hit`), and the
        # sweep's reads and clears never share a cell
        cmap_w = WritePort.Signature(addr_width=CELLW, shape=unsigned(S1W + CW)).flip().create(
            path=("cmap_w",))
        m.d.sync += [cmap_wport.en.eq(cmap_w.en), cmap_wport.addr.eq(cmap_w.addr),
                     cmap_wport.data.eq(cmap_w.data)]
        m.submodules.distance = dist = CentreDistance(capacity=geo.capacity)
        wiring.connect(m, dist.pdist, wiring.flipped(self.pdist))
        m.d.comb += [dist.ex.eq(self.ex), dist.ey.eq(self.ey)]

        g = self.level
        occ, maxcnt = self.cells, self.max_count
        i = Signal(range(geo.capacity + 1))     # point of the pass (in LVL_W / LVL_B)
        i_last = Signal(range(geo.capacity))    # N - 1, registered per pass
        aborted = Signal()
        cid_r = Signal(CELLW)                   # cell of point i
        # the pass reads the point memory three points ahead (i + 3): the word is registered
        # (pts_q, in LVL_W), then its offsets (dxn/dyn, in LVL_B), then its cell (cell_q, in the
        # next LVL_W), which addresses the cell map in the LVL_B after that
        m.d.comb += self.pts.addr.eq(i + 3)
        pts_q = Signal(2 * COORD_BITS)
        capture = Signal()
        with m.If(capture):
            m.d.sync += pts_q.eq(self.pts.data)

        px = pts_q[:COORD_BITS].as_signed()
        py = pts_q[COORD_BITS:].as_signed()
        dxn, dyn = Signal(COORD_BITS), Signal(COORD_BITS)      # offsets of the next point
        rx, ry = Signal(range(COORD_BITS + G + 1)), Signal(range(COORD_BITS + G + 1))
        cx, cy = Signal(G), Signal(G)
        m.d.comb += [cx.eq((dxn << G) >> rx), cy.eq((dyn << G) >> ry)]
        cx_r, cy_r = Signal(G), Signal(G)
        dx_r, dy_r = Signal(COORD_BITS), Signal(COORD_BITS)
        m.d.comb += [dist.i.payload.addr.eq(i), dist.i.payload.dx.eq(dx_r),
                     dist.i.payload.dy.eq(dy_r), dist.i.payload.cx.eq(cx_r),
                     dist.i.payload.cy.eq(cy_r), dist.i.payload.g.eq(g)]

        def take_offsets():
            """Register the offsets of the point in ``pts_q``."""
            m.d.sync += [dxn.eq(px - self.lo_x), dyn.eq(py - self.lo_y)]

        cell_q = Signal(CELLW)                  # the cell of the offsets in dxn/dyn
        sweeping = Signal()
        sw_cid0 = Signal(CELLW, name="sw_cid0")  # the sweep's cell (its pipeline is below)
        # the cell-map read address, from registers only: the sweep's cell, else always the
        # next point's cell (a read is harmless; no decision of the pass sits on the address)
        m.d.comb += cmap_r.addr.eq(Mux(sweeping, sw_cid0, cell_q))

        def take_cell():
            m.d.sync += cell_q.eq(Cat(cx, cy))

        def look_up(first):
            """Take the cell-map read of ``cell_q`` (the next point's cell, its offsets still
            in dxn/dyn) as point i + 1's; ``hit``: the same cell as point i, whose entry is
            written in this cycle."""
            m.d.sync += [cx_r.eq(cell_q[:G]), cy_r.eq(cell_q[G:]), dx_r.eq(dxn), dy_r.eq(dyn),
                         cid_r.eq(cell_q), hit.eq(Const(0) if first else cell_q == cid_r)]

        # the cell-map entry of point i: registered off the RAM (cm_q), or forwarded from the
        # write of point i - 1 to the same cell (that write and this read shared a cycle)
        cm_q = Signal(S1W + CW)
        fwd = Signal(S1W + CW)
        hit = Signal()
        entry = Signal(S1W + CW)
        m.d.comb += entry.eq(Mux(hit, fwd, cm_q))
        cm_slot1, cm_count = entry[:S1W], entry[S1W:]

        # the slot sweep: a 5-stage pipeline, one slot per cycle (no two stages touch the
        # same word): cellid read -> registered -> cell-map read -> registered -> count
        # written, maximum updated, cell-map entry cleared
        s = Signal(range(geo.max_cells + 1))
        m.d.comb += self.cellid_r.addr.eq(s)
        sv = [Signal(name=f"sw_v{k}") for k in range(4)]
        ss = [Signal(geo.slot_bits, name=f"sw_s{k}") for k in range(4)]
        sw_cid = [sw_cid0] + [Signal(CELLW, name=f"sw_cid{k}") for k in range(1, 3)]
        sw_cnt = Signal(CW)

        def sweep_start():
            m.d.sync += [s.eq(0), maxcnt.eq(0)] + [v.eq(0) for v in sv]
            m.next = "SWEEP"

        clr = Signal(CELLW)                     # cell-map entry of the reset sweep
        with m.FSM(init="CLEAR") as fsm:
            with m.State("CLEAR"):
                m.d.comb += [cmap_w.en.eq(1), cmap_w.addr.eq(clr), cmap_w.data.eq(0)]
                m.d.sync += clr.eq(clr + 1)
                with m.If(clr == (1 << CELLW) - 1):
                    m.next = "IDLE"
            with m.State("IDLE"):
                with m.If(self.run.start):
                    m.d.sync += g.eq(G)
                    m.next = "LVL_PRIME"
            with m.State("LVL_PRIME"):
                m.d.comb += self.pts.addr.eq(0)
                m.d.sync += [i.eq(0), occ.eq(0), aborted.eq(0), i_last.eq(self.n_points - 1)]
                m.next = "LVL_P1"
            with m.State("LVL_P1"):
                # the box exponents are valid from here (BoundingBox.latency after BOX)
                m.d.sync += [rx.eq(self.ex + G - g), ry.eq(self.ey + G - g)]
                m.d.comb += [capture.eq(1), self.pts.addr.eq(1)]       # point 0
                m.next = "LVL_P2"
            with m.State("LVL_P2"):
                take_offsets()                                        # point 0
                m.d.comb += [capture.eq(1), self.pts.addr.eq(2)]      # point 1
                m.next = "LVL_P3"
            with m.State("LVL_P3"):
                take_cell()                                           # point 0
                m.d.comb += self.pts.addr.eq(2)
                m.next = "LVL_A"
            with m.State("LVL_A"):
                look_up(first=True)                                   # point 0
                take_offsets()                                        # point 1
                m.d.comb += self.pts.addr.eq(2)
                m.next = "LVL_W"
            with m.State("LVL_W"):
                m.d.sync += cm_q.eq(cmap_r.data)
                take_cell()                                           # point i + 1
                m.d.comb += capture.eq(1)                             # point i + 2
                m.next = "LVL_B"
            with m.State("LVL_B"):
                m.d.comb += [cmap_w.addr.eq(cid_r), self.pslot.addr.eq(i)]
                new_cell = cm_slot1 == 0
                with m.If(new_cell & (occ == self.budget)):
                    m.d.sync += aborted.eq(1)
                    sweep_start()
                with m.Else():
                    m.d.comb += [cmap_w.en.eq(1), self.pslot.en.eq(1), dist.i.valid.eq(1)]
                    with m.If(new_cell):
                        m.d.comb += [cmap_w.data.eq(Cat((occ + 1)[:S1W], Const(1, CW))),
                                     self.cellid_w.en.eq(1), self.cellid_w.addr.eq(occ),
                                     self.cellid_w.data.eq(cid_r), self.pslot.data.eq(occ)]
                        m.d.sync += occ.eq(occ + 1)
                    with m.Else():
                        m.d.comb += [cmap_w.data.eq(Cat(cm_slot1, cm_count + 1)),
                                     self.pslot.data.eq(cm_slot1 - 1)]
                    m.d.sync += fwd.eq(cmap_w.data)
                    with m.If(i == i_last):
                        sweep_start()
                    with m.Else():
                        look_up(first=False)                          # point i + 1
                        take_offsets()                                # point i + 2
                        m.d.sync += i.eq(i + 1)
                        m.next = "LVL_W"
            # sweep over the slots: copy the counts out of the cell map and clear it
            with m.State("SWEEP"):
                with m.If(s < occ):
                    m.d.sync += s.eq(s + 1)
                m.d.sync += [sv[0].eq(s < occ), ss[0].eq(s),
                             sw_cid[0].eq(self.cellid_r.data)]
                m.d.comb += sweeping.eq(1)
                m.d.sync += [sv[1].eq(sv[0]), ss[1].eq(ss[0]), sw_cid[1].eq(sw_cid[0]),
                             sv[2].eq(sv[1]), ss[2].eq(ss[1]), sw_cid[2].eq(sw_cid[1]),
                             sw_cnt.eq(cmap_r.data[S1W:]),
                             sv[3].eq(sv[2]), ss[3].eq(ss[2])]
                with m.If(sv[3]):
                    m.d.comb += [self.cnt_w.en.eq(1), self.cnt_w.addr.eq(ss[3]),
                                 self.cnt_w.data.eq(sw_cnt),
                                 cmap_w.en.eq(1), cmap_w.addr.eq(sw_cid[2]), cmap_w.data.eq(0)]
                    with m.If(sw_cnt > maxcnt):
                        m.d.sync += maxcnt.eq(sw_cnt)
                with m.If((s == occ) & ~Cat(*sv).any()):
                    with m.If(aborted):
                        m.d.sync += g.eq(g - 1)
                        m.next = "LVL_PRIME"
                    with m.Else():
                        m.d.comb += self.run.done.eq(1)
                        m.next = "IDLE"
        m.d.comb += [self.clearing.eq(fsm.ongoing("CLEAR")),
                     self.busy.eq(~fsm.ongoing("IDLE") & ~fsm.ongoing("CLEAR"))]
        return m


# ------------------------------------------------------------------------------------------------
# allocation
# ------------------------------------------------------------------------------------------------

class WaterLevel(wiring.Component):
    """Adaptive allocation's water level: the largest ``L <= max_count`` with
    ``sum(min(count, L)) <= budget``.

    The sum is monotone in L, so L is found bit by bit from the top bit of ``count_bits``: a
    candidate above the largest count is rejected in its cycle; any other costs one pipelined
    scan of the K counts (``K + 3`` cycles: each count is registered off the RAM before the
    sum). Cycles: ``count_bits + sum over scanned bits (K + 3)``.

    Attributes
    ----------
    run : In(PHASE)
    busy : Out(1)
    budget, cells, max_count : In
        M, K and the largest count.
    cnt_r : read port of the per-slot counts.
    level : Out(count_bits)
        L (valid after ``done``).
    """

    def __init__(self, *, capacity: int):
        geo = self.geometry = GridGeometry(capacity)
        CW = geo.count_bits
        super().__init__({
            "run": In(PHASE),
            "busy": Out(1),
            "budget": In(unsigned(CW)),
            "cells": In(range(geo.max_cells + 1)),
            "max_count": In(unsigned(CW)),
            "cnt_r": _read(geo.slot_bits, CW),
            "level": Out(unsigned(CW)),
        })

    def elaborate(self, platform):
        m = Module()
        CW = self.geometry.count_bits
        scan = _SlotScan(m, self.geometry, self.cells)
        m.d.comb += self.cnt_r.addr.eq(scan.s)
        lvl = self.level
        bit = Signal(range(CW))         # bit under test
        cand = Signal(CW)
        acc = Signal(CW + 1)            # sum(min(count, cand)) <= N <= C < 2**CW
        count = Signal(CW)              # the count of slot s_dd, registered off the RAM
        m.d.sync += count.eq(self.cnt_r.data)

        def next_bit():
            with m.If(bit == 0):
                m.d.comb += self.run.done.eq(1)
                m.next = "IDLE"
            with m.Else():
                m.d.sync += bit.eq(bit - 1)
                m.next = "L_BIT"

        with m.FSM() as fsm:
            with m.State("IDLE"):
                with m.If(self.run.start):
                    m.d.sync += [lvl.eq(0), bit.eq(CW - 1)]
                    m.next = "L_BIT"
            with m.State("L_BIT"):
                trial = (lvl | (Const(1, CW) << bit))[:CW]
                m.d.sync += cand.eq(trial)
                with m.If(trial <= self.max_count):
                    scan.start()
                    m.d.sync += acc.eq(0)
                    m.next = "L_SCAN"
                with m.Else():
                    next_bit()
            with m.State("L_SCAN"):
                done = scan.step()
                with m.If(scan.v_dd):
                    m.d.sync += acc.eq(acc + Mux(count < cand, count, cand))
                with m.If(done):
                    with m.If(acc <= self.budget):
                        m.d.sync += lvl.eq(cand)
                    next_bit()
        m.d.comb += self.busy.eq(~fsm.ongoing("IDLE"))
        return m


class ExtraUnits(wiring.Component):
    """The units left after the quotas (``budget - quota_sum``): +1 for the cells with the
    largest keys ``(primary, ~cell)``.

    The threshold T = the extra-th largest key (keys are unique; the complement orders ties to
    the lower row-major cell) is found bit by bit by counting the keys >= each candidate, one
    slot scan per bit; then a last scan adds 1 to every quota whose key is >= T — the model's
    "largest first, ties to the lower cell" (a primary of 0 never qualifies). The slot's RAM
    words are registered before the key is formed and compared, and the +1 pass registers the
    comparison before writing. Cycles (a first one while the allocation's quota sum takes its
    last quota): ``2`` when nothing is left, else ``2 + key_bits * (K + 4) + K + 5``.

    Attributes
    ----------
    run : In(PHASE)
    busy : Out(1)
    budget, quota_sum, cells : In
    cellid_r, prim_r, quota_r : read ports of the slot memories (one shared address);
    quota_w : write port.
    """

    def __init__(self, *, capacity: int):
        geo = self.geometry = GridGeometry(capacity)
        SW, CW = geo.slot_bits, geo.count_bits
        super().__init__({
            "run": In(PHASE),
            "busy": Out(1),
            "budget": In(unsigned(CW)),
            "quota_sum": In(unsigned(CW + 1)),
            "cells": In(range(geo.max_cells + 1)),
            "cellid_r": _read(SW, geo.cell_bits),
            "prim_r": _read(SW, CW),
            "quota_r": _read(SW, CW),
            "quota_w": _write(SW, CW),
        })

    def elaborate(self, platform):
        m = Module()
        geo = self.geometry
        CW, KB = geo.count_bits, geo.key_bits
        cell_mask = (1 << geo.cell_bits) - 1
        scan = _SlotScan(m, geo, self.cells)
        for rp in (self.cellid_r, self.prim_r, self.quota_r):
            m.d.comb += rp.addr.eq(scan.s)
        bit = Signal(range(KB))
        cand = Signal(KB)
        acc = Signal(CW + 1)
        remaining = Signal(CW)         # units to hand out
        thr = Signal(KB)               # threshold key
        # the slot's cell, primary and quota registered straight off the RAMs (slot s_dd);
        # key: primary (remainder or count) first, then the lower cell index wins
        cid_q, prim_q, quota_q = (Signal(geo.cell_bits), Signal(CW), Signal(CW))
        m.d.sync += [cid_q.eq(self.cellid_r.data), prim_q.eq(self.prim_r.data),
                     quota_q.eq(self.quota_r.data)]
        key = Cat(cid_q ^ cell_mask, prim_q)
        v3, s3, plus3, quota3 = Signal(), Signal(geo.slot_bits), Signal(), Signal(CW)

        def scan_start():
            scan.start()
            m.d.sync += acc.eq(0)

        with m.FSM() as fsm:
            _phase_unit(m, self, "X_WAIT")
            with m.State("X_WAIT"):     # the quota sum takes its last quota
                m.next = "X_START"
            with m.State("X_START"):
                m.d.sync += [remaining.eq(self.budget - self.quota_sum), thr.eq(0),
                             bit.eq(KB - 1)]
                with m.If(self.budget == self.quota_sum):
                    m.d.comb += self.run.done.eq(1)
                    m.next = "IDLE"
                with m.Else():
                    m.next = "X_BIT"
            with m.State("X_BIT"):
                m.d.sync += cand.eq(thr | (Const(1, KB) << bit)[:KB])
                scan_start()
                m.next = "X_SCAN"
            with m.State("X_SCAN"):
                done = scan.step()
                # acc + 1 beside the comparison (no adder behind the comparator)
                acc_p1 = Signal(CW + 1)
                m.d.comb += acc_p1.eq(acc + 1)
                with m.If(scan.v_dd & (key >= cand)):
                    m.d.sync += acc.eq(acc_p1)
                with m.If(done):
                    with m.If(acc >= remaining):
                        m.d.sync += thr.eq(cand)
                    with m.If(bit == 0):
                        m.next = "APPLY_PRIME"
                    with m.Else():
                        m.d.sync += bit.eq(bit - 1)
                        m.next = "X_BIT"
            with m.State("APPLY_PRIME"):
                scan_start()
                m.d.sync += v3.eq(0)
                m.next = "APPLY"
            with m.State("APPLY"):
                done = scan.step()
                # one more stage: the comparison is registered, then the quota written
                m.d.sync += [v3.eq(scan.v_dd), s3.eq(scan.s_dd), plus3.eq(key >= thr),
                             quota3.eq(quota_q)]
                with m.If(v3):
                    m.d.comb += [self.quota_w.en.eq(1), self.quota_w.addr.eq(s3),
                                 self.quota_w.data.eq(quota3 + plus3)]
                with m.If(done & ~v3):
                    m.d.comb += self.run.done.eq(1)
                    m.next = "IDLE"
        m.d.comb += self.busy.eq(~fsm.ongoing("IDLE"))
        return m


class Allocation(wiring.Component):
    """Quota per slot: exactly ``budget`` in total, never more than the cell's count.

    * adaptive: the :class:`WaterLevel` L, then quota ``min(count, L)`` and primary key
      ``count`` if ``count > L`` else 0;
    * proportional: quota ``budget * count // N`` and primary key ``budget * count % N`` from a
      restoring :class:`~nms.rtl.divider.Divider` (``count_bits`` cycles per slot).

    The quota pass (``1 + 2K`` cycles adaptive, ``1 + K * (count_bits + 3)`` proportional: each
    count is registered off the RAM, then used) also clears each slot's best candidate for the
    rounds; then :class:`ExtraUnits` hands out what
    is left of the budget.

    Attributes
    ----------
    run : In(PHASE)
    busy : Out(1)
    proportional, budget, n_points : In
        Job values.
    cells, max_count : In
        K and the largest count (from the level search).
    cnt_r, cellid_r, quota_r : read ports of the slot memories; quota_w, best_w : write ports.
    """

    def __init__(self, *, capacity: int):
        geo = self.geometry = GridGeometry(capacity)
        SW, CW = geo.slot_bits, geo.count_bits
        super().__init__({
            "run": In(PHASE),
            "busy": Out(1),
            "proportional": In(1),
            "budget": In(unsigned(CW)),
            "n_points": In(range(capacity + 1)),
            "cells": In(range(geo.max_cells + 1)),
            "max_count": In(unsigned(CW)),
            "cnt_r": _read(SW, CW),
            "cellid_r": _read(SW, geo.cell_bits),
            "quota_r": _read(SW, CW),
            "quota_w": _write(SW, CW),
            "best_w": _write(SW, geo.best_bits),
        })

    def elaborate(self, platform):
        m = Module()
        geo = self.geometry
        CW = geo.count_bits
        budget = self.budget
        prim_r, prim_w = _block_ram(m, "prim", CW, geo.max_cells)
        # budget * count // N <= budget <= C < 2**CW: CW quotient bits, one per cycle
        m.submodules.divider = div = Divider(dividend_width=geo.divider_width,
                                             divisor_width=CW, quotient_width=CW)
        m.submodules.water = water = WaterLevel(capacity=geo.capacity)
        m.submodules.extra = extra = ExtraUnits(capacity=geo.capacity)
        qsum = Signal(CW + 1)
        m.d.comb += [water.budget.eq(budget), water.cells.eq(self.cells),
                     water.max_count.eq(self.max_count),
                     extra.budget.eq(budget), extra.quota_sum.eq(qsum),
                     extra.cells.eq(self.cells)]
        wiring.connect(m, extra.prim_r, prim_r)
        wiring.connect(m, extra.cellid_r, wiring.flipped(self.cellid_r))
        wiring.connect(m, extra.quota_r, wiring.flipped(self.quota_r))

        s = Signal(range(geo.max_cells + 1))    # slot of the quota pass
        s_last = Signal(range(geo.max_cells))   # K - 1, registered in Q_PRIME
        # the count read address is a register: 0 until the pass, then s + 1 from the cycle
        # after slot s's count is taken (Q_LOAD), so no decision of the pass is on it
        slot_addr = Signal(geo.slot_bits)
        m.d.comb += [water.cnt_r.data.eq(self.cnt_r.data),
                     self.cnt_r.addr.eq(Mux(water.busy, water.cnt_r.addr, slot_addr))]
        lvl = water.level
        count = Signal(CW)          # the count of slot s, registered off the RAM in Q_LOAD
        # the pass writes slot s's quota, primary and cleared best a cycle late, from registers
        # (the min(count, L) choice in front of the RAMs' write data was the grid's critical
        # path); the extra units read them no earlier than three cycles after the last write.
        # The quota sum adds the same registered quota in that cycle (no adder behind the
        # choice); the extra units read the sum one cycle after the pass (X_WAIT)
        wq_en, wq_addr = Signal(), Signal(geo.slot_bits)
        wq_quota, wq_prim = Signal(CW), Signal(CW)
        m.d.sync += wq_en.eq(0)
        with m.If(wq_en):
            m.d.comb += [self.quota_w.en.eq(1), self.quota_w.addr.eq(wq_addr),
                         self.quota_w.data.eq(wq_quota),
                         prim_w.en.eq(1), prim_w.addr.eq(wq_addr), prim_w.data.eq(wq_prim),
                         self.best_w.en.eq(1), self.best_w.addr.eq(wq_addr),
                         self.best_w.data.eq(0)]
            m.d.sync += qsum.eq(qsum + wq_quota)

        def write_quota(q, primary):
            m.d.sync += [wq_en.eq(1), wq_addr.eq(s), wq_quota.eq(q), wq_prim.eq(primary)]
            with m.If(s == s_last):
                m.d.comb += extra.run.start.eq(1)
                m.next = "EXTRA"
            with m.Else():
                m.d.sync += s.eq(s + 1)
                m.next = "Q_LOAD"

        with m.FSM() as fsm:
            with m.State("IDLE"):
                m.d.sync += slot_addr.eq(0)
                with m.If(self.run.start):
                    with m.If(self.proportional):
                        m.next = "Q_PRIME"
                    with m.Else():
                        m.d.comb += water.run.start.eq(1)
                        m.next = "WATER"
            with m.State("WATER"):
                with m.If(water.run.done):
                    m.next = "Q_PRIME"
            # quotas: adaptive min(count, L); proportional budget * count // N
            with m.State("Q_PRIME"):
                m.d.sync += [s.eq(0), qsum.eq(0), s_last.eq(self.cells - 1)]
                m.next = "Q_LOAD"
            with m.State("Q_LOAD"):
                m.d.sync += [count.eq(self.cnt_r.data), slot_addr.eq(s + 1)]
                m.next = "Q_DATA"
            with m.State("Q_DATA"):
                with m.If(self.proportional):
                    m.d.comb += [div.operands.valid.eq(1),
                                 div.operands.payload.n.eq(budget * count),
                                 div.operands.payload.d.eq(self.n_points)]
                    with m.If(div.operands.ready):
                        m.next = "Q_DIV"
                with m.Else():
                    write_quota(Mux(count < lvl, count, lvl), Mux(count > lvl, count, 0))
            with m.State("Q_DIV"):
                m.d.comb += div.quotient.ready.eq(1)
                with m.If(div.quotient.valid):
                    write_quota(div.quotient.payload, div.remainder)
            with m.State("EXTRA"):
                with m.If(extra.run.done):
                    m.d.comb += self.run.done.eq(1)
                    m.next = "IDLE"
        # the extra units' +1 pass writes the quotas too (never in a cycle of the quota pass)
        with m.If(extra.quota_w.en):
            m.d.comb += [self.quota_w.en.eq(1), self.quota_w.addr.eq(extra.quota_w.addr),
                         self.quota_w.data.eq(extra.quota_w.data)]
        m.d.comb += self.busy.eq(~fsm.ongoing("IDLE"))
        return m


# ------------------------------------------------------------------------------------------------
# rounds and emission
# ------------------------------------------------------------------------------------------------

class SelectionRounds(wiring.Component):
    """Picks, per slot, its ``quota`` nearest members (ties to the lower index) into ``picked``.

    A round is a pass over the points (2 cycles each) that keeps, per slot with quota left, the
    nearest unpicked member (points come in index order, so an equal distance keeps the lower
    index), then a scan over the slots that marks each winner picked, decrements the quota and
    clears the best entry. Rounds repeat until every quota is 0 — the model's "the quota
    smallest ``(distance, index)`` per cell". Cycles: ``R * (2N + K + 3)`` with R the largest
    quota. Expects every ``best`` entry cleared and ``picked`` all-zero at the start.

    Attributes
    ----------
    run : In(PHASE)
    busy : Out(1)
    n_points : In
    cells : In
        K, the slots to scan.
    pslot_r, pdist_r, picked_r : read ports of the point memories (one shared address);
    picked_w : write port; quota_r, best_r : read ports of the slot memories (one shared
    address); quota_w, best_w : write ports.
    """

    def __init__(self, *, capacity: int):
        geo = self.geometry = GridGeometry(capacity)
        IW, SW, CW = geo.index_bits, geo.slot_bits, geo.count_bits
        super().__init__({
            "run": In(PHASE),
            "busy": Out(1),
            "n_points": In(range(capacity + 1)),
            "cells": In(range(geo.max_cells + 1)),
            "pslot_r": _read(IW, SW),
            "pdist_r": _read(IW, DIST_BITS),
            "picked_r": _read(IW, 1),
            "picked_w": _write(IW, 1),
            "quota_r": _read(SW, CW),
            "quota_w": _write(SW, CW),
            "best_r": _read(SW, geo.best_bits),
            "best_w": _write(SW, geo.best_bits),
        })

    def elaborate(self, platform):
        m = Module()
        geo = self.geometry
        IW = geo.index_bits
        i = Signal(range(geo.capacity + 1))     # next point to read
        scan = _SlotScan(m, geo, self.cells)
        s, s_dd, v_dd = scan.s, scan.s_dd, scan.v_dd
        for rp in (self.pslot_r, self.pdist_r, self.picked_r):
            m.d.comb += rp.addr.eq(i)
        BB = geo.best_bits

        # the point pass: one point per cycle through 6 stages (p1 .. p5 below are the
        # registers of the stage that reads them):
        #   p0: point memories addressed             p1: their words registered
        #   p2: quota/best addressed with the slot    p3: their words registered
        #   p4: compare with the slot's best, which is the RAM word unless one of the three
        #       points ahead (in p5, p6, p7) has the same slot: their best is newer (their
        #       writes land in p5, after this point's read) and the nearest one wins
        #   p5: the new best written
        v = [Signal(name=f"rp_v{k}") for k in range(8)]
        idx = [Signal(IW, name=f"rp_idx{k}") for k in range(5)]
        slot = [Signal(geo.slot_bits, name=f"rp_slot{k}") for k in range(8)]
        dist = [Signal(DIST_BITS, name=f"rp_dist{k}") for k in range(5)]
        pk = [Signal(name=f"rp_pk{k}") for k in range(5)]
        post = [Signal(BB, name=f"rp_post{k}") for k in range(8)]   # best after point k
        same = [Signal(name=f"rp_same{k}") for k in range(3)]        # p4's slot == p5/p6/p7's
        best4, quota4 = Signal(BB), Signal(geo.count_bits)
        wr5 = Signal()
        addr_slot = Signal(geo.slot_bits)
        fsm_rp = Signal()               # in the point pass
        m.d.comb += addr_slot.eq(Mux(fsm_rp, slot[2], s))
        for rp in (self.quota_r, self.best_r):
            m.d.comb += rp.addr.eq(addr_slot)

        feeding = i < self.n_points
        m.d.sync += [v[1].eq(fsm_rp & feeding), idx[1].eq(i)]
        m.d.sync += [v[2].eq(v[1]), idx[2].eq(idx[1]), slot[2].eq(self.pslot_r.data),
                     dist[2].eq(self.pdist_r.data), pk[2].eq(self.picked_r.data)]
        m.d.sync += [v[3].eq(v[2]), idx[3].eq(idx[2]), slot[3].eq(slot[2]), dist[3].eq(dist[2]),
                     pk[3].eq(pk[2])]
        m.d.sync += [v[4].eq(v[3]), idx[4].eq(idx[3]), slot[4].eq(slot[3]), dist[4].eq(dist[3]),
                     pk[4].eq(pk[3]), best4.eq(self.best_r.data), quota4.eq(self.quota_r.data)]
        m.d.sync += [same[k].eq(v[4 + k] & (slot[3] == slot[4 + k])) for k in range(3)]
        current = Signal(BB)            # the slot's best as of this point
        m.d.comb += current.eq(Mux(same[0], post[5], Mux(same[1], post[6],
                                                          Mux(same[2], post[7], best4))))

        def beats(b):
            """The point beats best ``b``: points come in index order, so an equal distance
            keeps the lower index."""
            return ~b[IW + DIST_BITS] | (dist[4] < b[IW:IW + DIST_BITS])

        # the four comparisons side by side (all from registers), then the forwarding choice
        better = Mux(same[0], beats(post[5]), Mux(same[1], beats(post[6]),
                                                  Mux(same[2], beats(post[7]), beats(best4))))
        take = v[4] & ~pk[4] & (quota4 != 0) & better
        m.d.sync += [v[5].eq(v[4]), slot[5].eq(slot[4]), wr5.eq(take),
                     post[5].eq(Mux(take, Cat(idx[4], dist[4], Const(1, 1)), current))]
        m.d.sync += [v[6].eq(v[5]), slot[6].eq(slot[5]), post[6].eq(post[5]),
                     v[7].eq(v[6]), slot[7].eq(slot[6]), post[7].eq(post[6])]
        with m.If(wr5 & v[5]):
            m.d.comb += [self.best_w.en.eq(1), self.best_w.addr.eq(slot[5]),
                         self.best_w.data.eq(post[5])]

        # the slot scan: each winner picked, its quota decremented, its best cleared; the
        # slot's quota and best are registered off the RAMs first (slot s_dd)
        quota_q, best_q = Signal(geo.count_bits), Signal(BB)
        m.d.sync += [quota_q.eq(self.quota_r.data), best_q.eq(self.best_r.data)]
        more = Signal()

        with m.FSM() as fsm:
            _phase_unit(m, self, "RP_PRIME")
            with m.State("RP_PRIME"):
                m.d.sync += [i.eq(0)] + [v[k].eq(0) for k in range(1, 8)]
                m.next = "RP"
            with m.State("RP"):
                m.d.comb += fsm_rp.eq(1)
                with m.If(feeding):
                    m.d.sync += i.eq(i + 1)
                with m.If(~feeding & ~Cat(*v[1:6]).any()):
                    m.d.sync += more.eq(0)
                    scan.start()
                    m.next = "RS"
            with m.State("RS"):
                done = scan.step()
                with m.If(v_dd & best_q[IW + DIST_BITS]):
                    left = quota_q - 1
                    m.d.comb += [self.picked_w.en.eq(1), self.picked_w.addr.eq(best_q[:IW]),
                                 self.picked_w.data.eq(1),
                                 self.quota_w.en.eq(1), self.quota_w.addr.eq(s_dd),
                                 self.quota_w.data.eq(left),
                                 self.best_w.en.eq(1), self.best_w.addr.eq(s_dd),
                                 self.best_w.data.eq(0)]
                    with m.If(left != 0):
                        m.d.sync += more.eq(1)
                with m.If(done):
                    with m.If(more):
                        m.next = "RP_PRIME"
                    with m.Else():
                        m.d.comb += self.run.done.eq(1)
                        m.next = "IDLE"
        m.d.comb += self.busy.eq(~fsm.ongoing("IDLE"))
        return m


class Emitter(wiring.Component):
    """The picked bitmap in index order onto ``indices``, ``last`` on the ``budget``-th index.

    One point per cycle while ``indices`` is ready (a picked point waits for its handshake); each
    bit is cleared once passed, so the bitmap is all-zero again after the run (the points after
    the last picked one are already zero). Ends with the final index's handshake or after point
    ``N - 1``. The bit of the point on offer is a register loaded straight off the RAM (the
    port reads one point ahead). Cycles without back-pressure: ``2 + last index + 1``.

    Attributes
    ----------
    run : In(PHASE)
    busy : Out(1)
    n_points, budget : In
    picked_r, picked_w : the picked bitmap's ports.
    indices : Out(stream.Signature({index, last}))
    """

    def __init__(self, *, capacity: int):
        geo = self.geometry = GridGeometry(capacity)
        IW = geo.index_bits
        self.index_layout = index_layout(geo)
        super().__init__({
            "run": In(PHASE),
            "busy": Out(1),
            "n_points": In(range(capacity + 1)),
            "budget": In(unsigned(geo.count_bits)),
            "picked_r": _read(IW, 1),
            "picked_w": _write(IW, 1),
            "indices": Out(stream.Signature(self.index_layout)),
        })

    def elaborate(self, platform):
        m = Module()
        IW = self.geometry.index_bits
        i = Signal(range(self.geometry.capacity + 1))
        emitted = Signal(self.geometry.count_bits)
        # the bit of point i, registered off the RAM; the read port shows the bit of i + 1
        picked = Signal()
        m_last = Signal(self.geometry.count_bits)     # M - 1 and N - 1, registered in EM_PRIME
        n_last = Signal(range(self.geometry.capacity))
        m.d.comb += self.picked_r.addr.eq(i + 1)
        with m.FSM() as fsm:
            _phase_unit(m, self, "EM_PRIME")
            with m.State("EM_PRIME"):
                m.d.comb += self.picked_r.addr.eq(0)
                m.d.sync += [i.eq(0), emitted.eq(0), m_last.eq(self.budget - 1),
                             n_last.eq(self.n_points - 1)]
                m.next = "EM_LOAD"
            with m.State("EM_LOAD"):
                m.d.sync += picked.eq(self.picked_r.data)       # point 0
                m.next = "EM"
            with m.State("EM"):
                is_last = emitted == m_last
                m.d.comb += [self.indices.valid.eq(picked),
                             self.indices.payload.index.eq(i[:IW]),
                             self.indices.payload.last.eq(is_last)]
                with m.If(~picked | self.indices.ready):
                    m.d.comb += [self.picked_w.en.eq(1), self.picked_w.addr.eq(i),
                                 self.picked_w.data.eq(0), self.picked_r.addr.eq(i + 2)]
                    m.d.sync += [i.eq(i + 1), picked.eq(self.picked_r.data)]   # point i + 1
                    with m.If(picked):
                        m.d.sync += emitted.eq(emitted + 1)
                    with m.If((picked & is_last) | (i == n_last)):
                        m.d.comb += self.run.done.eq(1)
                        m.next = "IDLE"
        m.d.comb += self.busy.eq(~fsm.ongoing("IDLE"))
        return m


class CellExport(wiring.Component):
    """Coverage mode: every point's slot, then every slot's quota, onto ``cells``.

    N beats ``{value: slot of point i}`` in index order, then K beats ``{value: quota of slot
    s}``, ``last`` on the final one — what :class:`nms.rtl.cover.CoverSelector` takes (slots are
    the occupied cells in order of first occurrence, one-to-one with the model's cells). One beat
    per cycle while ``cells`` is ready. Cycles without back-pressure: ``1 + N + 1 + K``.

    Attributes
    ----------
    run : In(PHASE)
    busy : Out(1)
    n_points, cells_n : In
        N and K.
    pslot_r, quota_r : read ports of the point-slot and quota memories.
    cells : Out(stream.Signature({value, last}))
    """

    def __init__(self, *, capacity: int):
        geo = self.geometry = GridGeometry(capacity)
        self.cell_layout = cell_layout(geo)
        super().__init__({
            "run": In(PHASE),
            "busy": Out(1),
            "n_points": In(range(capacity + 1)),
            "cells_n": In(range(geo.max_cells + 1)),
            "pslot_r": _read(geo.index_bits, geo.slot_bits),
            "quota_r": _read(geo.slot_bits, geo.count_bits),
            "cells": Out(stream.Signature(self.cell_layout)),
        })

    def elaborate(self, platform):
        m = Module()
        geo = self.geometry
        i = Signal(range(max(geo.capacity, geo.max_cells) + 1))
        n_last = Signal(range(geo.capacity))        # N - 1 and K - 1, registered in EX_PRIME
        k_last = Signal(range(geo.max_cells))
        m.d.comb += [self.pslot_r.addr.eq(i), self.quota_r.addr.eq(i)]
        with m.FSM() as fsm:
            _phase_unit(m, self, "EX_PRIME")
            with m.State("EX_PRIME"):
                m.d.comb += self.pslot_r.addr.eq(0)
                m.d.sync += [i.eq(0), n_last.eq(self.n_points - 1),
                             k_last.eq(self.cells_n - 1)]
                m.next = "EX_SLOT"
            with m.State("EX_SLOT"):
                m.d.comb += [self.cells.valid.eq(1), self.cells.payload.value.eq(self.pslot_r.data)]
                with m.If(self.cells.ready):
                    m.d.comb += self.pslot_r.addr.eq(i + 1)
                    m.d.sync += i.eq(i + 1)
                    with m.If(i == n_last):
                        m.next = "EX_QPRIME"
            with m.State("EX_QPRIME"):
                m.d.comb += self.quota_r.addr.eq(0)
                m.d.sync += i.eq(0)
                m.next = "EX_QUOTA"
            with m.State("EX_QUOTA"):
                is_last = i == k_last
                m.d.comb += [self.cells.valid.eq(1), self.cells.payload.value.eq(self.quota_r.data),
                             self.cells.payload.last.eq(is_last)]
                with m.If(self.cells.ready):
                    m.d.comb += self.quota_r.addr.eq(i + 1)
                    m.d.sync += i.eq(i + 1)
                    with m.If(is_last):
                        m.d.comb += self.run.done.eq(1)
                        m.next = "IDLE"
        m.d.comb += self.busy.eq(~fsm.ongoing("IDLE"))
        return m


# ------------------------------------------------------------------------------------------------
# the sampler
# ------------------------------------------------------------------------------------------------

def point_layout():
    """One input point: ``{x: signed(24), y: signed(24), last}`` (``x`` at the LSB)."""
    return data.StructLayout({"x": signed(COORD_BITS), "y": signed(COORD_BITS),
                              "last": unsigned(1)})


def index_layout(geo: GridGeometry):
    """One output index: ``{index: unsigned(index_bits), last}``."""
    return data.StructLayout({"index": unsigned(geo.index_bits), "last": unsigned(1)})


def cell_layout(geo: GridGeometry):
    """One exported beat (coverage mode): ``{value: a slot or a quota, last}``."""
    return data.StructLayout({"value": unsigned(max(geo.slot_bits, geo.count_bits)),
                              "last": unsigned(1)})


class GridSampler(wiring.Component):
    """Choose exactly ``budget`` of N embedding points on a grid; emit their indices ascending.

    Equal, bit for bit, to :func:`nms.verif.models.desne.grid_select` (grid level = the finest
    level ``g <= grid_bits`` with at most ``budget`` occupied cells; ``adaptive`` water-filling
    or ``proportional`` largest-remainder allocation; per cell the members nearest the cell
    centre, ties to the lower index).

    Protocol: send the N points (index order) on ``points``, ``last`` on the final one (a point
    that fills the capacity also ends the load). ``budget`` and ``proportional`` are sampled
    together with that final point; ``budget`` is clamped to ``1..N``. The sampler then works
    (``busy`` high, ``points.ready`` low) and emits the selected indices on ``indices``,
    ascending, ``last`` on the final one; after that handshake it accepts the next point set.

    Parameters
    ----------
    capacity : int
        C, the largest N (points held on chip), 2..65536. Default 1024.

    Attributes
    ----------
    points : In(stream.Signature(point_layout))
        Payload ``{x: signed(24), y: signed(24), last: unsigned(1)}`` (``x`` at the LSB):
        Q8.16 coordinates, as produced by the embedding stage.
    budget : In(unsigned(count_bits))
        M, points to select (1..N); sampled with the final point.
    proportional : In(1)
        Allocation mode: 0 = ``adaptive`` (water-filling), 1 = ``proportional``; sampled with
        the final point.
    cover : In(1)
        Exemplar mode, sampled with the final point: 0 = the members nearest the cell centres
        on ``indices``; 1 = coverage (``docs/rtl-cover.md``): no index, the cells and quotas go
        out on ``cells`` for :class:`nms.rtl.cover.CoverSelector`.
    indices : Out(stream.Signature(index_layout))
        Payload ``{index: unsigned(index_bits), last: unsigned(1)}``: the M chosen indices.
    cells : Out(stream.Signature(cell_layout))
        Coverage mode only: N beats ``{value}`` = each point's slot (occupied cell in order of
        first occurrence), then one beat per slot = its quota, ``last`` on the final one.
    busy : Out(1)
        High from the final point's acceptance until the final index's handshake.
    level : Out(range(grid_bits + 1))
        The chosen grid level g of the current (or last) run, valid from the allocation phase on.
    grid_bits : int
        Finest grid level, :data:`nms.rtl.fixedpoint.GRID_BITS_MAX` (the model's limit).
    index_bits, count_bits, slot_bits : int
        Widths of a point index (``ceil_log2(C)``), of a count 0..C (``bits_for(C)``) and of a
        slot (occupied-cell) index.
    max_cells : int
        ``min(C, 4**grid_bits)``: most occupied cells a run can have (depth of the cell
        memories).
    divider_width : int
        Dividend width of the proportional-allocation divider, ``2 * count_bits``
        (budget * count); its quotient and remainder have ``count_bits``.
    key_bits : int
        Width of the extra-unit selection key ``(primary, ~cell)``: ``count_bits + 2 * grid_bits``.

    Raises
    ------
    TypeError, ValueError
        ``capacity`` of the wrong type or out of range; the message names it.
    """

    def __init__(self, *, capacity: int = 1024):
        geo = self.geometry = GridGeometry(capacity)
        self.capacity = capacity
        self.grid_bits = geo.grid_bits
        self.index_bits = geo.index_bits
        self.count_bits = geo.count_bits
        self.max_cells = geo.max_cells
        self.slot_bits = geo.slot_bits
        self.divider_width = geo.divider_width
        self.key_bits = geo.key_bits
        self.point_layout = point_layout()
        self.index_layout = index_layout(geo)
        self.cell_layout = cell_layout(geo)
        super().__init__({
            "points": In(stream.Signature(self.point_layout)),
            "budget": In(unsigned(self.count_bits)),
            "proportional": In(1),
            "cover": In(1),
            "indices": Out(stream.Signature(self.index_layout)),
            "cells": Out(stream.Signature(self.cell_layout)),
            "busy": Out(1),
            "level": Out(range(geo.grid_bits + 1)),
        })

    @property
    def parameters(self) -> dict:
        """Generator parameters (for metadata)."""
        return {"capacity": self.capacity}

    @property
    def derived(self) -> dict:
        """Derived widths and sizes (for metadata)."""
        return {"grid_bits": self.grid_bits, "index_bits": self.index_bits,
                "count_bits": self.count_bits, "max_cells": self.max_cells,
                "slot_bits": self.slot_bits, "divider_width": self.divider_width,
                "key_bits": self.key_bits, "coord_bits": COORD_BITS, "dist_bits": DIST_BITS}

    def run_cycles(self, **statistics) -> int:
        """:meth:`GridGeometry.run_cycles` of this sampler (the cycle formula of a run)."""
        return self.geometry.run_cycles(**statistics)

    def elaborate(self, platform):
        m = Module()
        geo = self.geometry
        C, IW, SW, CW = geo.capacity, geo.index_bits, geo.slot_bits, geo.count_bits

        def mem(name, width, depth):
            return _block_ram(m, name, width, depth)

        # per point: coordinates, slot of its cell, squared distance to the cell centre, picked
        pts_r, pts_w = mem("pts", 2 * COORD_BITS, C)
        pslot_r, pslot_w = mem("pslot", SW, C)
        pdist_r, pdist_w = mem("pdist", DIST_BITS, C)
        picked_r, picked_w = mem("picked", 1, C)
        # per slot (occupied cell, in order of first occurrence)
        cellid_r, cellid_w = mem("cellid", geo.cell_bits, geo.max_cells)
        cnt_r, cnt_w = mem("cnt", CW, geo.max_cells)
        quota_r, quota_w = mem("quota", CW, geo.max_cells)      # remaining quota
        best_r, best_w = mem("best", geo.best_bits, geo.max_cells)  # {idx, dist, valid}

        m.submodules.controller = ctrl = GridController(capacity=C)
        m.submodules.box = box = BoundingBox()
        m.submodules.levels = levels = LevelSearch(capacity=C)
        m.submodules.allocation = alloc = Allocation(capacity=C)
        m.submodules.rounds = rounds = SelectionRounds(capacity=C)
        m.submodules.emitter = emit = Emitter(capacity=C)
        m.submodules.export = export = CellExport(capacity=C)

        wiring.connect(m, wiring.flipped(self.points), ctrl.points)
        wiring.connect(m, ctrl.box, box.sample)
        for phase, unit in ((ctrl.level, levels), (ctrl.allocation, alloc),
                            (ctrl.rounds, rounds), (ctrl.emit, emit), (ctrl.export, export)):
            wiring.connect(m, phase, unit.run)
        wiring.connect(m, emit.indices, wiring.flipped(self.indices))
        wiring.connect(m, export.cells, wiring.flipped(self.cells))
        m.d.comb += [
            ctrl.budget_in.eq(self.budget), ctrl.proportional_in.eq(self.proportional),
            ctrl.cover_in.eq(self.cover), export.cells_n.eq(levels.cells),
            self.busy.eq(ctrl.busy), self.level.eq(levels.level), box.finish.eq(ctrl.box_finish),
            ctrl.clearing.eq(levels.clearing),
            levels.lo_x.eq(box.lo_x), levels.lo_y.eq(box.lo_y),
            levels.ex.eq(box.ex), levels.ey.eq(box.ey),
            alloc.proportional.eq(ctrl.proportional),
            alloc.cells.eq(levels.cells), alloc.max_count.eq(levels.max_count),
            rounds.cells.eq(levels.cells),
        ]
        for unit in (levels, alloc, rounds, emit, export):
            m.d.comb += unit.n_points.eq(ctrl.n_points)
        for unit in (levels, alloc, emit):
            m.d.comb += unit.budget.eq(ctrl.budget)

        # memories with one user per port
        for port, user in ((pts_w, ctrl.pts_w), (pts_r, levels.pts), (pslot_w, levels.pslot),
                           (pdist_w, levels.pdist), (cellid_w, levels.cellid_w),
                           (cnt_w, levels.cnt_w), (cnt_r, alloc.cnt_r),
                           (pdist_r, rounds.pdist_r),
                           (best_r, rounds.best_r)):
            wiring.connect(m, user, port)

        # memories shared between phases: the busy unit addresses the read port (the last
        # listed when none is), and the writers never write in the same cycle
        def share_read(port, users):
            addr = users[-1][1].addr
            for busy, user in reversed(users[:-1]):
                addr = Mux(busy, user.addr, addr)
            m.d.comb += port.addr.eq(addr)
            for _, user in users:
                m.d.comb += user.data.eq(port.data)

        def share_write(port, users):
            m.d.comb += port.en.eq(Cat(*(u.en for u in users)).any())
            addr, wdata = users[-1].addr, users[-1].data
            for user in reversed(users[:-1]):
                addr, wdata = Mux(user.en, user.addr, addr), Mux(user.en, user.data, wdata)
            m.d.comb += [port.addr.eq(addr), port.data.eq(wdata)]

        share_read(cellid_r, [(levels.busy, levels.cellid_r), (alloc.busy, alloc.cellid_r)])
        share_read(quota_r, [(alloc.busy, alloc.quota_r), (export.busy, export.quota_r),
                             (rounds.busy, rounds.quota_r)])
        share_read(pslot_r, [(export.busy, export.pslot_r), (rounds.busy, rounds.pslot_r)])
        share_read(picked_r, [(rounds.busy, rounds.picked_r), (emit.busy, emit.picked_r)])
        share_write(quota_w, [alloc.quota_w, rounds.quota_w])
        share_write(best_w, [alloc.best_w, rounds.best_w])
        share_write(picked_w, [ctrl.picked_w, rounds.picked_w, emit.picked_w])
        return m
