"""Affinity unit: per kNN row, the bounded precision search and the normalised affinities.

Bit-exact with :func:`nms.verif.models.desne.affinities` (``robust`` and ``bisect`` searches). See
``docs/rtl-affinity.md`` for the protocol, timing and the cycle count formula in one page.
"""

from __future__ import annotations

from amaranth import Array, Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out
from amaranth.utils import bits_for

from nms.rtl import fixedpoint as fp
from nms.rtl.divider import Radix4Divider
from nms.rtl.log2 import Log2Unit
from nms.rtl.params import check_int
# the search sequences are defined once, by the bit-exact model

__all__ = ["AffinityUnit", "MODE_ROBUST", "MODE_BISECT", "ROBUST_EVALS", "BISECT_EVALS"]

#: values of the ``mode`` input
MODE_ROBUST = 0
MODE_BISECT = 1
#: robust coarse codes 32, 96, ..., 992 (the model's); bisection starts from the middle code
COARSE_CODES = tuple(range(fp.ROBUST_COARSE_STEP // 2, fp.BETA_CODES, fp.ROBUST_COARSE_STEP))
BISECT_START = fp.BETA_CODES // 2
#: entropy evaluations per row: robust = 16 coarse + 6 rounds x 2; bisect = 9 steps + the final code
ROBUST_EVALS = len(COARSE_CODES) + 2 * len(fp.ROBUST_REFINE_STEPS)
BISECT_EVALS = len(fp.BISECT_STEPS) + 1

#: entropy / target width: Q8.16
H_BITS = fp.H_BITS
#: quotient bits per cycle of the entropy and normalisation dividers (radix 4 halves the
#: division time that dominates each evaluation; see :class:`~nms.rtl.divider.Radix4Divider`)
DIV_BITS_PER_CYCLE = 2
#: pipeline registers between a row-buffer read address and the weights w (read, partial
#: products, product, shift+saturate, exp2 table+shift); the output pass takes w there
_PIPE_W = 5
#: ... and the accumulators (one more: the registered w*a product)
_PIPE = _PIPE_W + 1
#: registered stages after the entropy division (timing closure): ``H - target`` and
#: ``target - H`` (two adds from the quotient and registers), then ``|H - target|`` with the
#: ``(error, code)`` comparison with the best so far; the next code is chosen in the cycle after
_TAIL = 2


class AffinityUnit(wiring.Component):
    """Precision search to a target entropy and Q1.16 conditional affinities, one kNN row at a time.

    A row (``k' <= k`` neighbours in ascending distance order, as the kNN selector emits them)
    is stored in an on-chip row buffer as gaps ``delta_j = d_j - d_0``. The unit then evaluates
    the row entropy ``H(c)`` for a sequence of precision codes ``c`` (``lanes`` neighbours per
    cycle through the beta-mantissa multiply, shift, saturation at ``A_MAX``, exp2 table + shift;
    row sums ``S = sum w`` and ``T = sum w*a``; ``log2 S`` by leading-one detection +
    ``LOG2_LUT``; exact ``(T << 8) // S`` by a sequential divider), keeps the code with the
    smallest ``(|H - target|, code)`` key, and finally emits ``P_j = (w_j << 16) // S`` per
    neighbour (``lanes`` sequential radix-4 dividers in parallel). Every operation is the one of
    :func:`nms.verif.models.desne.affinity_eval`, with widths sized so that nothing but the model's own
    saturation of ``a`` can clip.

    Searches (``mode`` input): ``robust`` (0) = 16 coarse codes 32, 96, ..., 992 then rounds with
    steps 32, 16, 8, 4, 2, 1 evaluating ``best - step`` and ``best + step`` (clamped to
    [0, 1023]) around the round's starting best, ties to the lower code; ``bisect`` (1) = the
    NMS-style 9-step bisection from code 512 (for comparison).

    Parameters
    ----------
    k : int
        Maximum row length (neighbours per row), 1..64. Default 16.
    dist_width : int
        Width of the squared distances, 1..40. Default 26 (784-D uint8: ``784 * 255**2 < 2**26``).
    index_width : int
        Width of the neighbour indices, 1..32 (passed through). Default 16.
    lanes : int
        Neighbours evaluated per cycle (parallel exp lanes and output dividers), 1..k.
        Default 1.

    Attributes
    ----------
    row : In(stream.Signature(row_layout))
        One beat per neighbour: ``{index: unsigned(index_width), dist: unsigned(dist_width),
        last: unsigned(1)}`` (``index`` at the LSB). ``last`` ends the row; so does the ``k``-th
        beat. Distances must be ascending within a row (a smaller one than the row's first is
        taken as gap 0). Accepted only while the unit is idle (between rows).
    target : In(24)
        Target entropy ``log2(perplexity)``, unsigned Q8.16 (``fixedpoint.entropy_target``).
        Sampled with the first beat of a row and held internally for the whole row.
    mode : In(1)
        ``0`` robust search, ``1`` bisection; sampled with the first beat of a row.
    result : Out(stream.Signature(result_layout))
        One beat per input neighbour, same order: ``{index: unsigned(index_width), p:
        unsigned(17) (Q1.16), code: unsigned(10), err: unsigned(24) (Q8.16), last:
        unsigned(1)}``. ``code`` is the row's chosen precision code and ``err`` its entropy error
        ``|H - target|`` (the same on every beat of a row, for the outlier metric); ``last``
        marks the row's final neighbour.
    sum_width, tsum_width, prod_width : int
        Widths of ``S``, ``T`` and the ``delta * BETA_MANT`` products (never overflow).
    groups : int
        ``ceil(k / lanes)``, depth of each row-buffer bank.

    Raises
    ------
    TypeError, ValueError
        A parameter of the wrong type or out of range; the message names it and its value.
    """

    def __init__(self, *, k: int = 16, dist_width: int = 26, index_width: int = 16, lanes: int = 1):
        check_int("k", k, 1, 64, "1 to 64 neighbours per row")
        check_int("dist_width", dist_width, 1, 40, "1 to 40 bits per squared distance")
        check_int("index_width", index_width, 1, 32, "1 to 32 bits per neighbour index")
        check_int("lanes", lanes, 1, k, f"1 to k={k} neighbours per cycle")
        self.k = k
        self.dist_width = dist_width
        self.index_width = index_width
        self.lanes = lanes
        self.groups = -(-k // lanes)
        self.prod_width = dist_width + fp.BETA_MANT_BITS
        self.sum_width = bits_for(k << fp.W_FRAC_BITS)
        self.wa_width = bits_for(((1 << fp.W_FRAC_BITS) * fp.A_MAX))
        self.tsum_width = bits_for(k * (1 << fp.W_FRAC_BITS) * fp.A_MAX)
        # (T << 8) // S <= A_MAX << 8 because T <= A_MAX * S (a is saturated at A_MAX)
        self.hq_width = bits_for(fp.A_MAX << fp.A_FRAC_BITS)
        # an odd quotient's top bit comes with the operand hand-off (Radix4Divider)
        self.h_div_cycles = self.hq_width // DIV_BITS_PER_CYCLE
        self.p_div_cycles = fp.P_BITS // DIV_BITS_PER_CYCLE
        self.row_layout = data.StructLayout({
            "index": unsigned(index_width),
            "dist": unsigned(dist_width),
            "last": unsigned(1),
        })
        self.result_layout = data.StructLayout({
            "index": unsigned(index_width),
            "p": unsigned(fp.P_BITS),
            "code": unsigned(fp.BETA_CODE_BITS),
            "err": unsigned(H_BITS),
            "last": unsigned(1),
        })
        super().__init__({
            "row": In(stream.Signature(self.row_layout)),
            "target": In(H_BITS),
            "mode": In(1),
            "result": Out(stream.Signature(self.result_layout)),
        })

    @property
    def parameters(self) -> dict:
        """Generator parameters (for metadata)."""
        return {"k": self.k, "dist_width": self.dist_width, "index_width": self.index_width,
                "lanes": self.lanes}

    @property
    def derived(self) -> dict:
        """Derived widths and the no-stall cycle formula (for metadata)."""
        return {"groups": self.groups, "prod_width": self.prod_width,
                "sum_width": self.sum_width, "tsum_width": self.tsum_width,
                "h_quotient_width": self.hq_width, "p_quotient_width": fp.P_BITS,
                "h_div_cycles": self.h_div_cycles, "p_div_cycles": self.p_div_cycles,
                "robust_evals": ROBUST_EVALS, "bisect_evals": BISECT_EVALS,
                "cycles_per_row_robust_full": self.cycles_per_row(self.k)}

    def cycles_per_row(self, n: int, mode: int = MODE_ROBUST) -> int:
        """Cycles per row of ``n`` neighbours with no stalls (first beat accepted to the first
        beat of the next row accepted), see ``docs/rtl-affinity.md``."""
        g = -(-n // self.lanes)
        evals = ROBUST_EVALS if mode == MODE_ROBUST else BISECT_EVALS
        # issue g groups, drain the lane pipeline, hand S/T to the divider, divide, take the
        # quotient, then H - target and the comparison one registered stage each
        eval_cycles = g + _PIPE + 1 + (self.h_div_cycles + 1) + _TAIL
        # per group: issue, pipeline, hand w to the dividers, divide, collect, then the beats
        out_cycles = g * (1 + _PIPE_W + 1 + (self.p_div_cycles + 1) + 1) + n
        return n + evals * eval_cycles + out_cycles

    def elaborate(self, platform):
        m = Module()
        L, G = self.lanes, self.groups
        dw, iw = self.dist_width, self.index_width
        code_max = fp.BETA_CODES - 1

        # ---- row buffer: neighbour j lives in bank j % L at address j // L ----------------------
        entry = data.StructLayout({"delta": unsigned(dw), "index": unsigned(iw)})
        banks, wports, rports = [], [], []
        for lane in range(L):
            mem = Memory(shape=entry, depth=max(G, 2), init=[])
            m.submodules[f"bank{lane}"] = mem
            banks.append(mem)
            wports.append(mem.write_port())
            rports.append(mem.read_port())

        # ---- state of the row -------------------------------------------------------------------
        d0 = Signal(dw)                     # the row's first (smallest) distance
        wr_bank = Signal(range(L))          # where the next input beat goes
        wr_addr = Signal(range(G))
        count = Signal(range(self.k + 1))   # beats of the row so far
        last_addr = Signal(range(G))        # group and lane of the row's final neighbour
        last_lane = Signal(range(L))
        target = Signal(H_BITS)
        mode = Signal()

        # ---- search state -----------------------------------------------------------------------
        code = Signal(fp.BETA_CODE_BITS)    # code being evaluated
        coarse = Signal(range(len(COARSE_CODES)))  # robust: coarse index 0..15
        rnd = Signal(range(len(fp.ROBUST_REFINE_STEPS)))  # robust: refinement round 0..5
        side = Signal()                     # robust: 0 = best - step, 1 = best + step
        refining = Signal()
        base = Signal(fp.BETA_CODE_BITS)    # robust: best code at the start of the round
        bstep = Signal(range(len(fp.BISECT_STEPS)))  # bisect: step index 0..8
        final = Signal()                    # bisect: evaluating the final code
        first_eval = Signal()
        best_code = Signal(fp.BETA_CODE_BITS)
        best_err = Signal(H_BITS)
        best_sum = Signal(self.sum_width)

        # per-evaluation constants: beta mantissa and shift of the code in use
        m.submodules.bmant = bmant = Memory(shape=fp.BETA_MANT_BITS, depth=len(fp.BETA_MANT),
                                            init=fp.BETA_MANT)
        bmant_rd = bmant.read_port(domain="comb")
        mant = Signal(fp.BETA_MANT_BITS)
        shift_min = fp.a_shift(code_max)
        shift = Signal(range(fp.a_shift(0) - shift_min + 1))    # a_shift(code) - shift_min
        # product bits at or above a_shift(code) + A_BITS: any set means a > A_MAX (saturate);
        # a per-code mask, so saturation is an AND-OR beside the shifter, not a compare behind it
        sat_mask = Signal(self.prod_width)
        # loaded every cycle from the `code` register (set by start_eval / start_output), so
        # they are valid from a pass's first issue cycle on: the product (second pipeline
        # cycle) is the first to use `mant`, the shift (third) the first to use `shift`. The
        # table read stays off the next-code logic's path.
        m.d.comb += bmant_rd.addr.eq(code[:fp.BETA_FRAC_BITS])
        # a_shift(c) = 37 - (c >> 5): a plain right shift, >= 6
        octave = code[fp.BETA_FRAC_BITS:]
        m.d.sync += [mant.eq(bmant_rd.data),
                     shift.eq(fp.a_shift(0) - shift_min - octave),
                     sat_mask.eq(Cat(*[octave >= fp.a_shift(0) + fp.A_BITS - i
                                       for i in range(self.prod_width)]))]

        # ---- lane pipeline: read -> product -> shift/saturate -> exp2 -> w*a -------------------
        issue = Signal()                    # present address `rd_addr` this cycle
        rd_addr = Signal(range(G))
        for rp in rports:
            m.d.comb += rp.addr.eq(rd_addr)

        def lane_mask(addr):
            # lane 0 of the last word is always valid: no constant-true compare (lint: UNSIGNED)
            return Cat(*[(addr < last_addr)
                         | ((addr == last_addr) & (Const(1) if lane == 0 else lane <= last_lane))
                         for lane in range(L)])

        # stage i's registers carry suffix i: 1 word read, 2 partial products, 3 product,
        # 4 shift + saturation, 5 exp2 table + shift (w), 6 w*a; the sums take stage 6
        v = [None] + [Signal(name=f"v{i}") for i in range(1, _PIPE + 1)]
        mk = [None] + [Signal(L, name=f"mask{i}") for i in range(1, 4)]
        m.d.sync += [v[1].eq(issue), mk[1].eq(lane_mask(rd_addr))]
        m.d.sync += [v[i].eq(v[i - 1]) for i in range(2, _PIPE + 1)]
        m.d.sync += [mk[i].eq(mk[i - 1]) for i in range(2, 4)]
        idx5 = []
        m.submodules.exp2 = exp2 = Memory(shape=fp.W_BITS, depth=len(fp.EXP2_LUT),
                                          init=fp.EXP2_LUT)
        split = min(dw, 18)                 # one 18 x 18 multiplier block per partial product
        w5 = [Signal(fp.W_BITS, name=f"w5_{i}") for i in range(L)]      # 0 on masked lanes
        a5 = [Signal(fp.A_BITS, name=f"a5_{i}") for i in range(L)]
        for lane in range(L):
            delta = rports[lane].data.delta
            # delta * mant as two registered partial products (a DSP output straight into a
            # register), added in the next stage
            pp_lo = Signal(split + fp.BETA_MANT_BITS, name=f"pp_lo2_{lane}")
            m.d.sync += pp_lo.eq(delta[:split] * mant)
            prod = Signal(self.prod_width, name=f"prod3_{lane}")
            if dw > split:
                pp_hi = Signal(dw - split + fp.BETA_MANT_BITS, name=f"pp_hi2_{lane}")
                m.d.sync += [pp_hi.eq(delta[split:] * mant),
                             prod.eq(Cat(pp_lo[:split], pp_lo[split:] + pp_hi))]
            else:
                m.d.sync += prod.eq(pp_lo)
            idx = rports[lane].data.index
            for i in range(2, _PIPE_W + 1):
                nxt = Signal(iw, name=f"idx{i}_{lane}")
                m.d.sync += nxt.eq(idx)
                idx = nxt
            idx5.append(idx)
            # a = min(delta * mant >> a_shift, A_MAX): saturate, never wrap; only the A_BITS
            # low bits of the shift are built
            raw = Signal(fp.A_BITS, name=f"araw_{lane}")
            m.d.comb += raw.eq(prod[shift_min:] >> shift)
            # a lane past the row's end gets a = A_MAX, whose w (>> 31) is 0: the mask costs the
            # exp2 stage nothing
            sat = (prod & sat_mask).any() | ~mk[3][lane]
            a4 = Signal(fp.A_BITS, name=f"a4_{lane}")
            m.d.sync += a4.eq(raw | sat.replicate(fp.A_BITS))
            erd = exp2.read_port(domain="comb")
            m.d.comb += erd.addr.eq(a4[:fp.EXP2_LUT_BITS])
            m.d.sync += [w5[lane].eq(erd.data >> a4[fp.A_FRAC_BITS:]), a5[lane].eq(a4)]

        # ---- accumulators S = sum w, T = sum w * a over the masked lanes ----------------------
        acc_s = Signal(self.sum_width)
        acc_t = Signal(self.tsum_width)
        clear_acc = Signal()
        # w*a registered behind its multiplier (DSP), so the adders start from registers
        lane_w = [Signal(fp.W_BITS, name=f"w6_{lane}") for lane in range(L)]
        lane_wa = [Signal(self.wa_width, name=f"wa6_{lane}") for lane in range(L)]
        for lane in range(L):
            m.d.sync += [lane_w[lane].eq(w5[lane]), lane_wa[lane].eq(w5[lane] * a5[lane])]
        with m.If(clear_acc):
            m.d.sync += [acc_s.eq(0), acc_t.eq(0)]
        with m.Elif(v[_PIPE]):
            m.d.sync += [acc_s.eq(acc_s + sum(lane_w)), acc_t.eq(acc_t + sum(lane_wa))]

        # ---- entropy: H = log2(S) + (T << 8) // S ---------------------------------------------
        # log2 S in two registered steps: S is final for the whole division (>= 12 cycles), so
        # they cost no cycle
        m.submodules.log2 = log2 = Log2Unit(value_width=self.sum_width)
        m.d.comb += log2.value.eq(acc_s)
        log2_r = log2.log2
        m.submodules.hdiv = hdiv = Radix4Divider(
            dividend_width=self.tsum_width + fp.A_FRAC_BITS, divisor_width=self.sum_width,
            quotient_width=self.hq_width)
        m.d.comb += [hdiv.operands.payload.n.eq(acc_t << fp.A_FRAC_BITS),
                     hdiv.operands.payload.d.eq(acc_s)]
        # H = log2 S + quotient < 2**22, so H - target is exact in H_BITS + 1 signed bits;
        # log2 S - target and target - log2 S are registered while the division runs
        dw_h = H_BITS + 2
        lt_pos = Signal(signed(dw_h))       # log2 S - target
        lt_neg = Signal(signed(dw_h))       # target - log2 S
        m.d.sync += [lt_pos.eq(log2_r - target), lt_neg.eq(target - log2_r)]
        # EVAL_RESULT -> EVAL_CMP -> EVAL_NEXT, one registered stage each
        h_pos = Signal(signed(dw_h))        # H - target, registered in EVAL_RESULT
        h_neg = Signal(signed(dw_h))        # target - H, idem (no negation behind h_pos)
        err = Signal(H_BITS)                # |H - target|, registered in EVAL_CMP
        h_above = Signal()                  # H > target (bisection direction), idem
        better = Signal()                   # the (error, code) key beats the best, idem
        with m.If(hdiv.quotient.valid & hdiv.quotient.ready):
            m.d.sync += [h_pos.eq(lt_pos + hdiv.quotient.payload),
                         h_neg.eq(lt_neg - hdiv.quotient.payload)]
        nb_code = Signal(fp.BETA_CODE_BITS)
        m.d.comb += nb_code.eq(Mux(better, code, best_code))

        # ---- normalisation: P_j = (w_j << 16) // S, one divider per lane ------------------------
        pdivs = []
        for lane in range(L):
            d = Radix4Divider(dividend_width=fp.W_BITS + fp.P_FRAC_BITS,
                               divisor_width=self.sum_width, quotient_width=fp.P_BITS)
            m.submodules[f"pdiv{lane}"] = d
            pdivs.append(d)
        w_hold = [Signal(fp.W_BITS, name=f"w_hold_{i}") for i in range(L)]
        idx_hold = [Signal(iw, name=f"idx_hold_{i}") for i in range(L)]
        p_hold = [Signal(fp.P_BITS, name=f"p_hold_{i}") for i in range(L)]
        sent = Signal(L)
        got = Signal(L)
        for lane, d in enumerate(pdivs):
            m.d.comb += [d.operands.payload.n.eq(w_hold[lane] << fp.P_FRAC_BITS),
                         d.operands.payload.d.eq(best_sum)]
        emit_lane = Signal(range(L))
        out_addr = Signal(range(G))

        # ---- output beat (registered fields only, so the payload is stable while waiting) ----
        res = self.result.payload
        m.d.comb += [
            res.index.eq(Array(idx_hold)[emit_lane]),
            res.p.eq(Array(p_hold)[emit_lane]),
            res.code.eq(best_code),
            res.err.eq(best_err),
            res.last.eq((out_addr == last_addr) & (emit_lane == last_lane)),
        ]

        def start_eval(next_code):
            """Begin an evaluation pass (the code's constants load in its first cycle)."""
            m.d.comb += clear_acc.eq(1)
            m.d.sync += [code.eq(next_code), rd_addr.eq(0)]
            m.next = "EVAL_ISSUE"

        final_code_sel = Signal(fp.BETA_CODE_BITS)  # the row's chosen code, when output starts

        def start_output():
            """Begin the output passes at the chosen code (its constants load from `code`)."""
            m.d.sync += [code.eq(final_code_sel), out_addr.eq(0), rd_addr.eq(0)]
            m.next = "OUT_ISSUE"

        drain = Signal(range(_PIPE + 2))

        with m.FSM(name="ctrl"):
            # -- receive one row into the buffer --------------------------------------------------
            with m.State("LOAD"):
                m.d.comb += self.row.ready.eq(1)
                p = self.row.payload
                first = count == 0
                gap = Mux(first | (p.dist < d0), 0, p.dist - d0)
                for lane in range(L):
                    m.d.comb += [wports[lane].addr.eq(wr_addr),
                                 wports[lane].data.delta.eq(gap),
                                 wports[lane].data.index.eq(p.index)]
                with m.If(self.row.valid):
                    for lane in range(L):
                        m.d.comb += wports[lane].en.eq(wr_bank == lane)
                    with m.If(first):
                        m.d.sync += [d0.eq(p.dist), target.eq(self.target), mode.eq(self.mode)]
                    end = p.last | (count == self.k - 1)
                    with m.If(end):
                        m.d.sync += [last_addr.eq(wr_addr), last_lane.eq(wr_bank),
                                     count.eq(0), wr_addr.eq(0), wr_bank.eq(0),
                                     first_eval.eq(1), coarse.eq(0), rnd.eq(0), side.eq(0),
                                     refining.eq(0), bstep.eq(0), final.eq(0)]
                        # first code: robust coarse 32, bisect 512
                        start_eval(Mux(Mux(first, self.mode, mode), BISECT_START, COARSE_CODES[0]))
                    with m.Else():
                        m.d.sync += count.eq(count + 1)
                        with m.If(wr_bank == L - 1):
                            m.d.sync += [wr_bank.eq(0), wr_addr.eq(wr_addr + 1)]
                        with m.Else():
                            m.d.sync += wr_bank.eq(wr_bank + 1)

            # -- one entropy evaluation: stream the row's groups through the lanes ----------------
            with m.State("EVAL_ISSUE"):
                m.d.comb += issue.eq(1)
                with m.If(rd_addr == last_addr):
                    m.d.sync += drain.eq(_PIPE - 1)
                    m.next = "EVAL_DRAIN"
                with m.Else():
                    m.d.sync += rd_addr.eq(rd_addr + 1)

            with m.State("EVAL_DRAIN"):
                m.d.sync += drain.eq(drain - 1)
                with m.If(drain == 0):
                    m.next = "EVAL_DIV"

            with m.State("EVAL_DIV"):
                m.d.comb += hdiv.operands.valid.eq(1)
                with m.If(hdiv.operands.ready):
                    m.next = "EVAL_RESULT"

            with m.State("EVAL_RESULT"):
                m.d.comb += hdiv.quotient.ready.eq(1)
                with m.If(hdiv.quotient.valid):
                    m.next = "EVAL_CMP"

            with m.State("EVAL_CMP"):
                # the (error, code) key: ties go to the lower code
                e = Signal(H_BITS)
                m.d.comb += e.eq(Mux(h_pos[-1], h_neg, h_pos))
                m.d.sync += [err.eq(e), h_above.eq(h_neg[-1]),
                             better.eq(first_eval | (e < best_err)
                                       | ((e == best_err) & (code < best_code)))]
                m.next = "EVAL_NEXT"

            with m.State("EVAL_NEXT"):
                m.d.sync += first_eval.eq(0)
                with m.If(better):
                    m.d.sync += [best_code.eq(code), best_err.eq(err), best_sum.eq(acc_s)]
                with m.If(mode == MODE_ROBUST):
                    self._robust_next(m, start_eval, start_output, final_code_sel,
                                      coarse, rnd, side, refining, base, nb_code, code_max)
                with m.Else():
                    self._bisect_next(m, start_eval, start_output, final_code_sel,
                                      bstep, final, code, h_above, err, acc_s,
                                      best_code, best_err, best_sum)

            # -- output: w at the chosen code through the lanes, then L dividers, then beats ------
            with m.State("OUT_ISSUE"):
                m.d.comb += issue.eq(1)
                m.next = "OUT_WAIT"

            with m.State("OUT_WAIT"):
                with m.If(v[_PIPE_W]):          # w: no need to wait for w*a
                    m.d.sync += [sent.eq(0), got.eq(0)]
                    for lane in range(L):
                        m.d.sync += [w_hold[lane].eq(w5[lane]), idx_hold[lane].eq(idx5[lane])]
                    m.next = "OUT_DIV"

            with m.State("OUT_DIV"):
                for lane, d in enumerate(pdivs):
                    m.d.comb += [d.operands.valid.eq(~sent[lane]),
                                 d.quotient.ready.eq(sent[lane] & ~got[lane])]
                    with m.If(d.operands.valid & d.operands.ready):
                        m.d.sync += sent[lane].eq(1)
                    with m.If(d.quotient.valid & d.quotient.ready):
                        m.d.sync += [got[lane].eq(1), p_hold[lane].eq(d.quotient.payload)]
                with m.If(got == (1 << L) - 1):
                    m.d.sync += emit_lane.eq(0)
                    m.next = "OUT_EMIT"

            with m.State("OUT_EMIT"):
                m.d.comb += self.result.valid.eq(1)
                with m.If(self.result.ready):
                    with m.If(res.last):
                        m.next = "LOAD"
                    with m.Elif(emit_lane == L - 1):
                        m.d.sync += [out_addr.eq(out_addr + 1), rd_addr.eq(rd_addr + 1)]
                        m.next = "OUT_ISSUE"
                    with m.Else():
                        m.d.sync += emit_lane.eq(emit_lane + 1)
        return m

    @staticmethod
    def _robust_next(m, start_eval, start_output, final_code_sel, coarse, rnd, side, refining,
                     base, nb_code, code_max):
        """Next code of the robust search, from the (already compared) evaluation result."""
        steps = Array([Const(s, fp.BETA_CODE_BITS) for s in fp.ROBUST_REFINE_STEPS])
        first = fp.ROBUST_REFINE_STEPS[0]
        coarse_codes = Array([Const(c, fp.BETA_CODE_BITS) for c in COARSE_CODES])
        with m.If(~refining):
            with m.If(coarse == len(COARSE_CODES) - 1):
                # first refinement round around the coarse winner: best - 32 (clamped at 0)
                m.d.sync += [refining.eq(1), rnd.eq(0), side.eq(0), base.eq(nb_code)]
                start_eval(Mux(nb_code >= first, nb_code - first, 0))
            with m.Else():
                m.d.sync += coarse.eq(coarse + 1)
                start_eval(coarse_codes[coarse + 1])
        with m.Elif(~side):
            m.d.sync += side.eq(1)
            up = base + steps[rnd]
            start_eval(Mux(up > code_max, code_max, up))
        with m.Elif(rnd == len(fp.ROBUST_REFINE_STEPS) - 1):
            m.d.comb += final_code_sel.eq(nb_code)
            start_output()
        with m.Else():
            nxt = steps[rnd + 1]
            m.d.sync += [rnd.eq(rnd + 1), side.eq(0), base.eq(nb_code)]
            start_eval(Mux(nb_code >= nxt, nb_code - nxt, 0))

    @staticmethod
    def _bisect_next(m, start_eval, start_output, final_code_sel, bstep, final, code, h_above,
                     err, acc_s, best_code, best_err, best_sum):
        """NMS bisection: step up when H > target (precision too low), else down; the row's
        result is the code after the 9th step, evaluated once more for its S and error."""
        steps = Array([Const(s, fp.BETA_CODE_BITS) for s in fp.BISECT_STEPS])
        with m.If(final):
            # the final code's own values, whatever the comparison said
            m.d.sync += [best_code.eq(code), best_err.eq(err), best_sum.eq(acc_s)]
            m.d.comb += final_code_sel.eq(code)
            start_output()
        with m.Else():
            step = steps[bstep]
            nxt = Mux(h_above, code + step, code - step)
            with m.If(bstep == len(fp.BISECT_STEPS) - 1):
                m.d.sync += final.eq(1)
            with m.Else():
                m.d.sync += bstep.eq(bstep + 1)
            start_eval(nxt[:fp.BETA_CODE_BITS])
