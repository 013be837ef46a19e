"""Grid sampler: exact-budget exemplar choice over the 2-D embedding (DE-SNE stage 4).

Bit-exact with :func:`nms.verif.models.desne.grid_select` (see ``docs/rtl-grid.md`` for the phases and
the cycle formula). Everything is a sequence of passes over on-chip memories with synchronous
read ports (block-RAM friendly): one pass over the points or over the occupied cells ("slots")
at a time, so no read-modify-write hazard can arise and no memory needs a second read port.
"""

from __future__ import annotations

from amaranth import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out
from amaranth.utils import bits_for, ceil_log2

from nms.rtl import fixedpoint as fp
from nms.rtl.divider import Divider
from nms.rtl.params import check_int

__all__ = ["GridSampler"]

#: signed width of one embedding coordinate (Q8.16 in [-2**23, 2**23 - 1])
COORD_BITS = 24
#: per-axis squared distance to the cell centre is < 2**50 in total (|offset| < 2**25)
DIST_BITS = 50


class GridSampler(wiring.Component):
    """Choose exactly ``budget`` of N embedding points on a grid; emit their indices ascending.

    Equal, bit for bit, to :func:`nms.verif.models.desne.grid_select` (grid level = the finest level
    ``g <= grid_bits`` with at most ``budget`` occupied cells; ``adaptive`` water-filling or
    ``proportional`` largest-remainder allocation; per cell the members nearest the cell centre,
    ties to the lower index).

    Protocol: send the N points (index order) on ``points``, ``last`` on the final one (a point
    that fills the capacity also ends the load). ``budget`` and ``proportional`` are sampled
    together with that final point; ``budget`` is clamped to ``1..N``. The sampler then works
    (``busy`` high, ``points.ready`` low) and emits the selected indices on ``indices``, ascending,
    ``last`` on the final one; after that handshake it accepts the next point set.

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
        Allocation mode: 0 = ``adaptive`` (water-filling), 1 = ``proportional``; sampled with the
        final point.
    indices : Out(stream.Signature(index_layout))
        Payload ``{index: unsigned(index_bits), last: unsigned(1)}``: the M chosen indices.
    busy : Out(1)
        High from the final point's acceptance until the final index's handshake.
    level : Out(range(grid_bits + 1))
        The chosen grid level g of the current (or last) run, valid from the allocation phase on.
    grid_bits : int
        Finest grid level, :data:`nms.rtl.fixedpoint.GRID_BITS_MAX` (the model's limit).
    index_bits, count_bits, slot_bits : int
        Widths of a point index (``ceil_log2(C)``), of a count 0..C (``bits_for(C)``) and of a slot
        (occupied-cell) index.
    max_cells : int
        ``min(C, 4**grid_bits)``: most occupied cells a run can have (depth of the cell memories).
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
        check_int("capacity", capacity, 2, 1 << 16, "2 to 65536 points held on chip")
        self.capacity = capacity
        self.grid_bits = fp.GRID_BITS_MAX
        G = self.grid_bits
        self.index_bits = max(1, ceil_log2(capacity))
        self.count_bits = bits_for(capacity)
        self.max_cells = min(capacity, 1 << (2 * G))
        self.slot_bits = max(1, ceil_log2(self.max_cells))
        self.divider_width = 2 * self.count_bits
        self.key_bits = self.count_bits + 2 * G
        self.point_layout = data.StructLayout({
            "x": signed(COORD_BITS), "y": signed(COORD_BITS), "last": unsigned(1)})
        self.index_layout = data.StructLayout({
            "index": unsigned(self.index_bits), "last": unsigned(1)})
        super().__init__({
            "points": In(stream.Signature(self.point_layout)),
            "budget": In(unsigned(self.count_bits)),
            "proportional": In(1),
            "indices": Out(stream.Signature(self.index_layout)),
            "busy": Out(1),
            "level": Out(range(G + 1)),
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

    def elaborate(self, platform):
        m = Module()
        C, G, KM = self.capacity, self.grid_bits, self.max_cells
        IW, CW, SW, KB = self.index_bits, self.count_bits, self.slot_bits, self.key_bits
        CELLW = 2 * G                       # cell address Cat(cx, cy), G bits each
        S1W = bits_for(KM)                  # slot + 1 (0 = empty) in the cell map
        cell_mask = (1 << CELLW) - 1

        def mem(name, width, depth):
            mm = Memory(shape=unsigned(width), depth=depth, init=[])
            m.submodules[name] = mm
            return mm, mm.read_port(), mm.write_port()

        # ---- memories ------------------------------------------------------------------------
        # per point: coordinates, slot of its cell, squared distance to the cell centre, picked
        pts, pts_r, pts_w = mem("pts", 2 * COORD_BITS, C)
        _, pslot_r, pslot_w = mem("pslot", SW, C)
        _, pdist_r, pdist_w = mem("pdist", DIST_BITS, C)
        _, picked_r, picked_w = mem("picked", 1, C)
        # per grid cell of the current level: {slot + 1, count}; all-zero between uses
        _, cmap_r, cmap_w = mem("cellmap", S1W + CW, 1 << CELLW)
        # per slot (occupied cell, in order of first occurrence)
        _, cellid_r, cellid_w = mem("cellid", CELLW, KM)
        _, cnt_r, cnt_w = mem("cnt", CW, KM)
        _, prim_r, prim_w = mem("prim", CW, KM)        # primary key of the extra units
        _, quota_r, quota_w = mem("quota", CW, KM)     # remaining quota during the rounds
        _, best_r, best_w = mem("best", 1 + DIST_BITS + IW, KM)  # {idx, dist, valid}

        p_raddr = Signal(IW)          # shared read address of the per-point memories
        s_raddr = Signal(SW)          # shared read address of the per-slot memories
        for rp in (pts_r, pslot_r, pdist_r, picked_r):
            m.d.comb += rp.addr.eq(p_raddr)
        for rp in (cellid_r, cnt_r, prim_r, quota_r, best_r):
            m.d.comb += rp.addr.eq(s_raddr)

        # budget * count // N <= budget <= C < 2**CW: CW quotient bits, one per cycle
        m.submodules.divider = div = Divider(dividend_width=self.divider_width,
                                             divisor_width=CW, quotient_width=CW)

        # ---- registers ------------------------------------------------------------------------
        n = Signal(range(C + 1))       # points loaded so far
        N = Signal(range(C + 1))
        budget = Signal(CW)
        prop = Signal()
        minx, maxx, miny, maxy = (Signal(signed(COORD_BITS), name=nm)
                                  for nm in ("minx", "maxx", "miny", "maxy"))
        ex = Signal(range(COORD_BITS + 1))
        ey = Signal(range(COORD_BITS + 1))
        g = Signal(range(G + 1))
        i = Signal(range(C + 1))       # point counter of a pass
        s = Signal(range(KM + 1))      # slot counter of a pass
        s_d = Signal(SW)               # slot whose data the read ports show (pipelined scans)
        v_d = Signal()
        occ = Signal(range(KM + 1))    # occupied cells (slots) of the current level
        aborted = Signal()
        maxcnt = Signal(CW)
        lvl = Signal(CW)               # water level L (adaptive)
        bit = Signal(range(KB))        # bit under test in the bitwise searches
        cand = Signal(KB)
        acc = Signal(CW + 1)
        qsum = Signal(CW + 1)
        extra = Signal(CW)
        thr = Signal(KB)               # threshold key of the extra units
        more = Signal()
        emitted = Signal(CW)
        cx_r, cy_r = Signal(G), Signal(G)
        dx_r, dy_r = Signal(COORD_BITS), Signal(COORD_BITS)
        cid_r = Signal(CELLW)
        slot_r = Signal(SW)
        dist_r = Signal(DIST_BITS)
        pk_r = Signal()

        m.d.comb += [p_raddr.eq(i), s_raddr.eq(s), self.level.eq(g)]

        # ---- shared datapath -------------------------------------------------------------------
        px = pts_r.data[:COORD_BITS].as_signed()
        py = pts_r.data[COORD_BITS:].as_signed()
        # offsets from the box origin (0 <= y - lo < 2**24) and the cell: ((y - lo) << g) >> e.
        # Timing closure: the level pass reads each point one point ahead and registers its
        # offsets (dxn, dyn: BRAM -> subtract -> FF); the cell is then one right shift of the
        # registered offset by the per-pass constant r = e + G - g (((d << G) >> r) equals
        # (d << g) >> e), straight into the cell map's read address.
        dxn, dyn = Signal(COORD_BITS), Signal(COORD_BITS)
        rx, ry = Signal(range(COORD_BITS + G + 1)), Signal(range(COORD_BITS + G + 1))
        cx = Signal(G)
        cy = Signal(G)
        m.d.comb += [cx.eq((dxn << G) >> rx), cy.eq((dyn << G) >> ry)]

        def take_offsets():
            """Register the offsets of the point the `pts` read port shows."""
            m.d.sync += [dxn.eq(px - minx), dyn.eq(py - miny)]

        # squared distance of the registered point to its cell centre lo + (((2c+1) << e) >> (g+1)),
        # written to `pdist` behind the level pass (timing closure): LVL_B hands the point's
        # offsets, cells, level and index to a 3-stage write-behind pipeline (diffs, squares,
        # sum + write). The writes keep their order and land 3 cycles after LVL_B, long before
        # the rounds read `pdist` (the slot sweep alone follows a pass for >= 3 cycles), so the
        # memory's contents are those of a direct write: no cycle is added.
        wb_en = [Signal(name=f"pd_en{k}") for k in range(3)]
        wb_addr = [Signal(len(pdist_w.addr), name=f"pd_addr{k}") for k in range(3)]
        wb_dx, wb_dy = Signal(COORD_BITS), Signal(COORD_BITS)
        wb_cx, wb_cy = Signal(G), Signal(G)
        wb_g = Signal(range(G + 1))
        pd_write = Signal()                 # LVL_B: store this point's distance
        m.d.sync += [wb_en[0].eq(pd_write), wb_addr[0].eq(i), wb_dx.eq(dx_r), wb_dy.eq(dy_r),
                     wb_cx.eq(cx_r), wb_cy.eq(cy_r), wb_g.eq(g)]

        def axis_diff(d, c, e):
            off = Signal(COORD_BITS + 1)
            m.d.comb += off.eq((Cat(Const(1, 1), c) << e) >> (wb_g + 1))
            diff = Signal(signed(COORD_BITS + 2))
            m.d.sync += diff.eq(d - off)
            return diff
        diff_x, diff_y = axis_diff(wb_dx, wb_cx, ex), axis_diff(wb_dy, wb_cy, ey)
        sq_x, sq_y = Signal(DIST_BITS), Signal(DIST_BITS)
        m.d.sync += [sq_x.eq(diff_x * diff_x), sq_y.eq(diff_y * diff_y)]
        m.d.sync += [wb_en[1].eq(wb_en[0]), wb_addr[1].eq(wb_addr[0]),
                     wb_en[2].eq(wb_en[1]), wb_addr[2].eq(wb_addr[1])]
        m.d.comb += [pdist_w.en.eq(wb_en[2]), pdist_w.addr.eq(wb_addr[2]),
                     pdist_w.data.eq(sq_x + sq_y)]

        cm_slot1 = cmap_r.data[:S1W]
        cm_count = cmap_r.data[S1W:]
        best_idx = best_r.data[:IW]
        best_dist = best_r.data[IW:IW + DIST_BITS]
        best_valid = best_r.data[IW + DIST_BITS]
        # extra-unit key: primary (remainder or count) first, then the lower cell index wins
        key = Cat(cellid_r.data ^ cell_mask, prim_r.data)
        one_at_bit = (Const(1, KB) << bit)[:KB]

        # pipelined slot scan (1 slot per cycle): read slot s, data of slot s_d valid when v_d
        def scan_step():
            with m.If(s < occ):
                m.d.sync += s.eq(s + 1)
            m.d.sync += [v_d.eq(s < occ), s_d.eq(s)]
            return (s == occ) & ~v_d

        def scan_start():
            m.d.sync += [s.eq(0), v_d.eq(0), acc.eq(0)]

        m.d.comb += self.busy.eq(1)
        with m.FSM(init="LOAD"):
            # ---- load: store the points, track the bounding box ---------------------------
            with m.State("LOAD"):
                m.d.comb += [self.busy.eq(0), self.points.ready.eq(1)]
                pay = self.points.payload
                with m.If(self.points.valid):
                    m.d.comb += [pts_w.en.eq(1), pts_w.addr.eq(n), pts_w.data.eq(Cat(pay.x, pay.y))]
                    with m.If((n == 0) | (pay.x < minx)):
                        m.d.sync += minx.eq(pay.x)
                    with m.If((n == 0) | (pay.x > maxx)):
                        m.d.sync += maxx.eq(pay.x)
                    with m.If((n == 0) | (pay.y < miny)):
                        m.d.sync += miny.eq(pay.y)
                    with m.If((n == 0) | (pay.y > maxy)):
                        m.d.sync += maxy.eq(pay.y)
                    m.d.sync += n.eq(n + 1)
                    with m.If(pay.last | (n == C - 1)):
                        m.d.sync += [N.eq(n + 1), n.eq(0), prop.eq(self.proportional),
                                     budget.eq(Mux(self.budget == 0, 1,
                                                   Mux(self.budget > n + 1, n + 1, self.budget)))]
                        m.next = "BOX"

            # ---- box: 2**e = smallest power of two >= span, i.e. e = bit_length(max - min) ----
            with m.State("BOX"):
                for reg, hi, lo in ((ex, maxx, minx), (ey, maxy, miny)):
                    span1 = Signal(COORD_BITS)
                    m.d.comb += span1.eq(hi - lo)
                    m.d.sync += reg.eq(0)
                    for k in range(COORD_BITS):
                        with m.If(span1[k]):
                            m.d.sync += reg.eq(k + 1)
                m.d.sync += g.eq(G)
                m.next = "LVL_PRIME"

            # ---- level search, finest first: one pass per level builds the cell map; stop as
            #      soon as a (budget+1)-th cell appears (occupancy only grows with g) ---------
            with m.State("LVL_PRIME"):
                m.d.comb += p_raddr.eq(0)
                m.d.sync += [i.eq(0), occ.eq(0), aborted.eq(0),
                             rx.eq(ex + G - g), ry.eq(ey + G - g)]
                m.next = "LVL_PRE"
            with m.State("LVL_PRE"):
                take_offsets()                  # point 0
                m.next = "LVL_A"
            with m.State("LVL_A"):
                m.d.comb += [cmap_r.addr.eq(Cat(cx, cy)), p_raddr.eq(i + 1)]  # read ahead
                m.d.sync += [cx_r.eq(cx), cy_r.eq(cy), dx_r.eq(dxn), dy_r.eq(dyn),
                             cid_r.eq(Cat(cx, cy))]
                m.next = "LVL_B"
            with m.State("LVL_B"):
                m.d.comb += [cmap_w.addr.eq(cid_r), pslot_w.addr.eq(i)]
                new_cell = cm_slot1 == 0
                with m.If(new_cell & (occ == budget)):
                    m.d.sync += aborted.eq(1)
                    m.next = "SW_PRIME"
                with m.Else():
                    m.d.comb += [cmap_w.en.eq(1), pslot_w.en.eq(1), pd_write.eq(1)]
                    with m.If(new_cell):
                        m.d.comb += [cmap_w.data.eq(Cat((occ + 1)[:S1W], Const(1, CW))),
                                     cellid_w.en.eq(1), cellid_w.addr.eq(occ),
                                     cellid_w.data.eq(cid_r), pslot_w.data.eq(occ)]
                        m.d.sync += occ.eq(occ + 1)
                    with m.Else():
                        m.d.comb += [cmap_w.data.eq(Cat(cm_slot1, cm_count + 1)),
                                     pslot_w.data.eq(cm_slot1 - 1)]
                    with m.If(i == N - 1):
                        m.next = "SW_PRIME"
                    with m.Else():
                        take_offsets()          # point i + 1, read in LVL_A
                        m.d.sync += i.eq(i + 1)
                        m.next = "LVL_A"

            # ---- sweep over the slots: copy counts out of the cell map and clear it ----------
            with m.State("SW_PRIME"):
                m.d.comb += s_raddr.eq(0)
                m.d.sync += [s.eq(0), maxcnt.eq(0)]
                m.next = "SW_A"
            with m.State("SW_A"):
                m.d.comb += cmap_r.addr.eq(cellid_r.data)
                m.d.sync += cid_r.eq(cellid_r.data)
                m.next = "SW_B"
            with m.State("SW_B"):
                m.d.comb += [cnt_w.en.eq(1), cnt_w.addr.eq(s), cnt_w.data.eq(cm_count),
                             cmap_w.en.eq(1), cmap_w.addr.eq(cid_r), cmap_w.data.eq(0)]
                with m.If(cm_count > maxcnt):
                    m.d.sync += maxcnt.eq(cm_count)
                with m.If(s == occ - 1):
                    with m.If(aborted):
                        m.d.sync += g.eq(g - 1)
                        m.next = "LVL_PRIME"
                    with m.Elif(prop):
                        m.next = "Q_PRIME"
                    with m.Else():
                        m.d.sync += [lvl.eq(0), bit.eq(CW - 1)]
                        m.next = "L_BIT"
                with m.Else():
                    m.d.comb += s_raddr.eq(s + 1)
                    m.d.sync += s.eq(s + 1)
                    m.next = "SW_A"

            # ---- adaptive: water level L = largest L <= max count with sum(min(count, L))
            #      <= budget, found bit by bit (the sum is monotone in L) ------------------------
            def next_bit(done_state, again_state):
                with m.If(bit == 0):
                    m.next = done_state
                with m.Else():
                    m.d.sync += bit.eq(bit - 1)
                    m.next = again_state

            with m.State("L_BIT"):
                trial = (lvl | one_at_bit)[:CW]
                m.d.sync += cand.eq(trial)
                with m.If(trial <= maxcnt):
                    scan_start()
                    m.next = "L_SCAN"
                with m.Else():
                    next_bit("Q_PRIME", "L_BIT")
            with m.State("L_SCAN"):
                done = scan_step()
                with m.If(v_d):
                    m.d.sync += acc.eq(acc + Mux(cnt_r.data < cand[:CW], cnt_r.data, cand[:CW]))
                with m.If(done):
                    with m.If(acc <= budget):
                        m.d.sync += lvl.eq(cand[:CW])
                    next_bit("Q_PRIME", "L_BIT")

            # ---- quotas: adaptive min(count, L); proportional budget * count // N -----------
            with m.State("Q_PRIME"):
                m.d.comb += s_raddr.eq(0)
                m.d.sync += [s.eq(0), qsum.eq(0)]
                m.next = "Q_DATA"

            def write_quota(q, primary):
                m.d.comb += [quota_w.en.eq(1), quota_w.addr.eq(s), quota_w.data.eq(q),
                             prim_w.en.eq(1), prim_w.addr.eq(s), prim_w.data.eq(primary),
                             best_w.en.eq(1), best_w.addr.eq(s), best_w.data.eq(0)]
                m.d.sync += qsum.eq(qsum + q)
                with m.If(s == occ - 1):
                    m.next = "X_START"
                with m.Else():
                    m.d.comb += s_raddr.eq(s + 1)
                    m.d.sync += s.eq(s + 1)
                    m.next = "Q_DATA"

            with m.State("Q_DATA"):
                c = cnt_r.data
                with m.If(prop):
                    m.d.comb += [div.operands.valid.eq(1),
                                 div.operands.payload.n.eq(budget * c),
                                 div.operands.payload.d.eq(N)]
                    with m.If(div.operands.ready):
                        m.next = "Q_DIV"
                with m.Else():
                    write_quota(Mux(c < lvl, c, lvl), Mux(c > lvl, c, 0))
            with m.State("Q_DIV"):
                m.d.comb += div.quotient.ready.eq(1)
                with m.If(div.quotient.valid):
                    write_quota(div.quotient.payload, div.remainder)

            # ---- extra units: threshold = the extra-th largest key (primary, ~cell), found bit
            #      by bit by counting keys >= candidate; then every key >= threshold gets +1 ----
            with m.State("X_START"):
                m.d.sync += [extra.eq(budget - qsum), thr.eq(0), bit.eq(KB - 1)]
                with m.If(budget == qsum):
                    m.next = "RP_PRIME"
                with m.Else():
                    m.next = "X_BIT"
            with m.State("X_BIT"):
                m.d.sync += cand.eq(thr | one_at_bit)
                scan_start()
                m.next = "X_SCAN"
            with m.State("X_SCAN"):
                done = scan_step()
                with m.If(v_d & (key >= cand)):
                    m.d.sync += acc.eq(acc + 1)
                with m.If(done):
                    with m.If(acc >= extra):
                        m.d.sync += thr.eq(cand)
                    next_bit("APPLY_PRIME", "X_BIT")
            with m.State("APPLY_PRIME"):
                scan_start()
                m.next = "APPLY"
            with m.State("APPLY"):
                done = scan_step()
                with m.If(v_d):
                    m.d.comb += [quota_w.en.eq(1), quota_w.addr.eq(s_d),
                                 quota_w.data.eq(quota_r.data + (key >= thr))]
                with m.If(done):
                    m.next = "RP_PRIME"

            # ---- rounds: every cell with quota left takes its nearest unpicked member ---------
            with m.State("RP_PRIME"):
                m.d.comb += p_raddr.eq(0)
                m.d.sync += i.eq(0)
                m.next = "RP_A"
            with m.State("RP_A"):
                m.d.comb += s_raddr.eq(pslot_r.data)
                m.d.sync += [slot_r.eq(pslot_r.data), dist_r.eq(pdist_r.data),
                             pk_r.eq(picked_r.data)]
                m.next = "RP_B"
            with m.State("RP_B"):
                # points come in index order, so an equal distance keeps the lower index
                with m.If(~pk_r & (quota_r.data != 0) & (~best_valid | (dist_r < best_dist))):
                    m.d.comb += [best_w.en.eq(1), best_w.addr.eq(slot_r),
                                 best_w.data.eq(Cat(i[:IW], dist_r, Const(1, 1)))]
                with m.If(i == N - 1):
                    m.d.sync += more.eq(0)
                    scan_start()
                    m.next = "RS"
                with m.Else():
                    m.d.comb += p_raddr.eq(i + 1)
                    m.d.sync += i.eq(i + 1)
                    m.next = "RP_A"
            with m.State("RS"):
                done = scan_step()
                with m.If(v_d & best_valid):
                    left = quota_r.data - 1
                    m.d.comb += [picked_w.en.eq(1), picked_w.addr.eq(best_idx), picked_w.data.eq(1),
                                 quota_w.en.eq(1), quota_w.addr.eq(s_d), quota_w.data.eq(left),
                                 best_w.en.eq(1), best_w.addr.eq(s_d), best_w.data.eq(0)]
                    with m.If(left != 0):
                        m.d.sync += more.eq(1)
                with m.If(done):
                    with m.If(more):
                        m.next = "RP_PRIME"
                    with m.Else():
                        m.next = "EM_PRIME"

            # ---- emit: scan the picked bitmap in index order (clearing it behind) ---------------
            with m.State("EM_PRIME"):
                m.d.comb += p_raddr.eq(0)
                m.d.sync += [i.eq(0), emitted.eq(0)]
                m.next = "EM"
            with m.State("EM"):
                is_last = emitted == budget - 1
                m.d.comb += [self.indices.valid.eq(picked_r.data),
                             self.indices.payload.index.eq(i[:IW]),
                             self.indices.payload.last.eq(is_last)]
                with m.If(~picked_r.data | self.indices.ready):
                    m.d.comb += [picked_w.en.eq(1), picked_w.addr.eq(i), picked_w.data.eq(0),
                                 p_raddr.eq(i + 1)]
                    m.d.sync += i.eq(i + 1)
                    with m.If(picked_r.data):
                        m.d.sync += emitted.eq(emitted + 1)
                    with m.If((picked_r.data & is_last) | (i == N - 1)):
                        m.next = "LOAD"
        return m
