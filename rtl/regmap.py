"""The accelerator's job interface — declared once.

Everything a host, a transport, a golden model or the RTL needs to agree on is declared here:

* every register with its fields, widths and access mode (addresses are *derived*, in
  declaration order, 4 bytes apart; fields are packed LSB-first unless a field gives its ``lsb``);
* each field's **allowed range**: static bounds, or bounds relative to a generator parameter
  (``N <= capacity``) or to another field of the same job (``BUDGET <= N``);
* one **error cause** per refusal — every field that has a range gets its own code, plus
  start-while-busy, the result address's alignment, AXI error responses and abort; the
  code is reported in ``STATUS.cause``;
* the generator parameters the ranges refer to, with their own ranges.

From this one declaration come the datapath's configuration layout (:func:`job_layout`), the
RTL job controller's refusal logic (:func:`refusal_conditions`, the same walk as the Python
check), the one validation function used by ``DesneConfig``, the driver and the model device
(:func:`refusal`, :func:`validate`, :func:`check_params`), the host constants
(:func:`host_constants`: C header and Python) and the Markdown register table
(:func:`markdown`, committed as ``docs/registers.md``; ``nms generate --regmap-doc``).

Pure Python (no hardware tool needed). The walk that finds a refusal only compares and adds, so
it runs on ints (host, model) and on Amaranth values (RTL) alike: the refusal order — the first
bad field in declaration order wins — is the same everywhere by construction.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass, replace
from typing import Any, Iterator, Mapping

from nms.rtl import fixedpoint as fp

__all__ = [
    "DATA_WIDTH", "CAUSE_BITS", "ITER_BITS", "ID_MAGIC", "Ref", "Field", "Register", "Param",
    "Cause", "Refusal", "JobRefused", "Capability", "CAPABILITIES", "capabilities",
    "buffer_points", "JobRule", "JOB_RULES", "DERIVED_STEPS", "derive", "PerfCounter",
    "PERF_COUNTERS", "REGISTERS", "REGMAP",
    "CONTRACT_REGISTERS", "TIMED_REGISTERS", "ADDR", "FIELDS", "JOB_FIELDS", "ADDRESS_FIELDS",
    "REFUSAL_FIELDS",
    "PARAMS", "CAUSES", "CAUSE", "CAUSE_BY_CODE", "SEARCH_CODES", "ALLOCATION_CODES",
    "EXEMPLAR_CODES", "COVER_START_CODES",
    "job_layout", "pack_job", "unpack_job", "refusal", "refusal_conditions", "validate",
    "check_params", "check_code", "explain", "host_constants", "markdown",
]

DATA_WIDTH = 32
#: width of ``STATUS.cause`` (and of the RTL controller's ``cause`` output)
CAUSE_BITS = 8
#: width of the iteration counters ``ITER.n_iter``, ``ITER.exaggeration_iters``, ``MOMENTUM.switch``
ITER_BITS = 16
ID_MAGIC = 0x4E4D5331  # 'NMS1'
#: register access modes (see :class:`Register`)
ACCESS_MODES = ("rw", "r", "w1s", "w1c")


# --- bounds ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Ref:
    """A bound relative to a generator parameter or to another field of the same job:
    ``env[name] + offset`` (``name`` is a parameter name or a job field's key)."""

    name: str
    offset: int = 0

    def evaluate(self, env: Mapping[str, Any]):
        # plain + so it works on ints and on Amaranth values alike
        # a device capability the caller does not pass takes its declared default (a device
        # without the chunk buffer / pooling unit passes none of them)
        value = env[self.name] if self.name in env else _CAPABILITY_DEFAULT[self.name]
        return value if self.offset == 0 else value + self.offset

    def text(self) -> str:
        name = _display_name(self.name)
        if self.offset:
            return f"{name} {'-' if self.offset < 0 else '+'} {abs(self.offset)}"
        return name


def _bounds(spec) -> tuple:
    """Normalise a bound spec (int, field key / parameter name, Ref, or a tuple of them)."""
    if spec is None:
        return ()
    items = spec if isinstance(spec, tuple) else (spec,)
    out = []
    for b in items:
        if isinstance(b, str):
            b = Ref(b)
        if not isinstance(b, (int, Ref)) or isinstance(b, bool):
            raise TypeError(f"a bound must be an int, a name or a Ref, not {b!r}")
        out.append(b)
    return tuple(out)


class _Ranged:
    """Shared range logic of :class:`Field` and :class:`Param` (``lo``/``hi`` bound tuples)."""

    name: str
    lo: tuple
    hi: tuple

    def static_range(self) -> tuple[int, int]:
        """The static interval (the tightest constant bounds, width limits included)."""
        lo = max([b for b in self.lo if isinstance(b, int)], default=0)
        his = [b for b in self.hi if isinstance(b, int)]
        if getattr(self, "width", None) is not None:
            his.append((1 << self.width) - 1)
        return lo, min(his)

    def checks(self) -> Iterator[tuple[str, Any]]:
        """The bounds that can be violated by a value that fits the field: ``(side, bound)``;
        side ``"lo"``, ``"hi"`` or ``"align"`` (the value must be a multiple of the bound)."""
        width_max = (1 << self.width) - 1 if getattr(self, "width", None) is not None else None
        for b in self.lo:
            if isinstance(b, Ref) or b > 0:
                yield "lo", b
        for b in self.hi:
            if isinstance(b, Ref) or width_max is None or b < width_max:
                yield "hi", b
        if getattr(self, "align", 1) > 1:
            yield "align", self.align

    def violations(self, value, env: Mapping[str, Any], *,
                   partial: bool = False) -> Iterator[tuple[str, Any, Any]]:
        """``(side, bound, violated)`` per check; ``violated`` is a bool for ints and an
        Amaranth value for Amaranth values. No truthiness is taken here. ``partial``: skip
        bounds that name something absent from ``env``."""
        for side, b in self.checks():
            if partial and isinstance(b, Ref) and b.name not in env:
                continue
            bound = b.evaluate(env) if isinstance(b, Ref) else b
            if side == "align":   # & and != work on ints and Amaranth values alike
                yield side, b, (value & (bound - 1)) != 0
            else:
                yield side, b, (value < bound) if side == "lo" else (value > bound)

    def range_text(self) -> str:
        """The allowed range as documentation, e.g. ``1 <= BUDGET <= N``."""
        lo_s, hi_s = self.static_range()
        lows = [str(lo_s)] + [b.text() for b in self.lo if isinstance(b, Ref)]
        highs = [str(hi_s)] + [b.text() for b in self.hi if isinstance(b, Ref)]
        lo_t = lows[0] if len(lows) == 1 else f"max({', '.join(lows)})"
        if any(isinstance(b, Ref) for b in self.hi) and not any(isinstance(b, int) for b in self.hi) \
                and getattr(self, "width", None) is not None:
            highs = highs[1:]   # a relational bound alone: the width limit is implied
        hi_t = highs[0] if len(highs) == 1 else f"min({', '.join(highs)})"
        text = f"{lo_t} <= {self.qualname} <= {hi_t}"
        if getattr(self, "align", 1) > 1:
            aligned = f"{self.qualname} % {self.align} == 0"
            bounded = any(side != "align" for side, _ in self.checks())
            text = f"{text}, {aligned}" if bounded else aligned
        return text


def _violation_text(item: _Ranged, side: str, bound, env: Mapping[str, Any]) -> str:
    """What the violated bound requires, for an error message."""
    if side == "align":
        return f"a multiple of {bound}"
    if isinstance(bound, int):
        lo, hi = item.static_range()
        relational = [b for b in item.hi if isinstance(b, Ref)]
        if relational and not any(isinstance(b, int) for b in item.hi):
            # e.g. N in [2, capacity (= 128)]: the width limit is not the interesting one
            hi = ", ".join(f"{b.text()} (= {b.evaluate(env)})" if b.name in env else b.text()
                           for b in relational)
        return f"in [{lo}, {hi}]"
    val = bound.evaluate(env)
    if side == "hi" and bound.offset == -1:
        return f"< {Ref(bound.name).text()} (= {val + 1})"
    return f"{'>=' if side == 'lo' else '<='} {bound.text()} (= {val})"


# --- registers and fields ----------------------------------------------------------------------

@dataclass(frozen=True)
class Field(_Ranged):
    """One register field.

    ``lo``/``hi``: allowed range (an int, a generator-parameter name, another job field's key,
    a :class:`Ref`, or a tuple of them; default: anything the width holds). ``codes``: named
    values (enumerations). ``key``: the field's name in the job configuration (default: its
    name; a whole-register field is keyed by the register name in lower case). Set by the
    register: ``qualname`` (``OPT.learning_rate``, or ``N`` for a whole-register field),
    ``register``, ``lsb``.
    """

    name: str
    width: int
    doc: str = ""
    lo: Any = ()
    hi: Any = ()
    codes: tuple[tuple[str, int], ...] = ()
    key: str | None = None
    lsb: int | None = None
    register: str = ""
    qualname: str = ""
    #: the value must be a multiple of this power of two (1: no alignment rule)
    align: int = 1

    def __post_init__(self):
        object.__setattr__(self, "lo", _bounds(self.lo))
        object.__setattr__(self, "hi", _bounds(self.hi))
        if isinstance(self.align, bool) or not isinstance(self.align, int) or self.align < 1 \
                or self.align & (self.align - 1):
            raise ValueError(f"field {self.name}: align must be a power of two, not {self.align!r}")
        if self.key is None:
            object.__setattr__(self, "key", self.name)
        if not 1 <= self.width <= DATA_WIDTH:
            raise ValueError(f"field {self.name}: width {self.width} is not 1..{DATA_WIDTH}")
        for cname, code in self.codes:
            if not 0 <= code < (1 << self.width):
                raise ValueError(f"field {self.name}: code {cname}={code} does not fit")

    @property
    def code_map(self) -> dict[str, int]:
        return dict(self.codes)

    @property
    def ranged(self) -> bool:
        """True if some value that fits the field is refused (the field has a cause code)."""
        return any(True for _ in self.checks())

    @property
    def cause(self) -> "Cause | None":
        return _FIELD_CAUSE.get(self.qualname)


@dataclass(frozen=True)
class Register:
    """One 32-bit register.

    ``access``: ``rw`` (host writes, device reads), ``r`` (device status / counters), ``w1s``
    (write 1 to trigger; reads as 0) or ``w1c`` (the device sets bits, the host writes 1 to
    clear them; e.g. interrupt status). ``role``: ``id``, ``control``, ``status``, ``address``
    (the memory master's), ``job`` (the datapath's job configuration: :func:`job_layout`),
    ``result`` or ``counter``. Without ``fields`` the register is one 32-bit field keyed by the
    register name in lower case, with the range ``lo``/``hi``.
    """

    name: str
    access: str
    doc: str
    fields: tuple[Field, ...] = ()
    role: str = "job"
    lo: Any = ()
    hi: Any = ()
    align: int = 1
    #: a counter that depends on clock-cycle timing (memory latency, back-pressure, stage
    #: overlap): only a cycle-accurate backend (RTL simulation, FPGA) has it; the model backend
    #: reads it as 0. Every other readable register must agree exactly between backends.
    timed: bool = False

    def __post_init__(self):
        if self.timed and self.role != "counter":
            raise ValueError(f"register {self.name}: only a counter can be timed")
        if self.access not in ACCESS_MODES:
            raise ValueError(f"register {self.name}: access must be one of {ACCESS_MODES}, "
                             f"not {self.access!r}")
        if self.role not in ("id", "control", "status", "address", "job", "result", "counter"):
            raise ValueError(f"register {self.name}: unknown role {self.role!r}")
        whole = not self.fields
        fields = self.fields or (Field(self.name.lower(), DATA_WIDTH, self.doc, lo=self.lo,
                                       hi=self.hi, align=self.align),)
        placed, lsb = [], 0
        for f in fields:
            at = lsb if f.lsb is None else f.lsb
            if at < lsb:
                raise ValueError(f"register {self.name}: field {f.name} overlaps the one before")
            if at + f.width > DATA_WIDTH:
                raise ValueError(f"register {self.name}: fields exceed {DATA_WIDTH} bits")
            placed.append(replace(f, lsb=at, register=self.name,
                                  qualname=self.name if whole else f"{self.name}.{f.name}"))
            lsb = at + f.width
        object.__setattr__(self, "fields", tuple(placed))

    @property
    def whole(self) -> bool:
        return len(self.fields) == 1 and self.fields[0].qualname == self.name

    def field(self, name: str) -> Field:
        for f in self.fields:
            if f.name == name:
                return f
        raise ValueError(f"register {self.name} has no field {name!r}; fields: "
                         f"{[f.name for f in self.fields]}")

    def offsets(self) -> dict[str, tuple[int, int]]:
        """field name -> (lsb, width)."""
        return {f.name: (f.lsb, f.width) for f in self.fields}

    def pack(self, **values) -> int:
        word = 0
        for name, v in values.items():
            f = self.field(name)
            if not 0 <= int(v) < (1 << f.width):
                raise ValueError(f"{self.name}.{name} = {v} does not fit in {f.width} bits")
            word |= int(v) << f.lsb
        return word

    def unpack(self, word: int) -> dict[str, int]:
        return {f.name: (word >> f.lsb) & ((1 << f.width) - 1) for f in self.fields}


@dataclass(frozen=True)
class PerfCounter:
    """One counter of the datapath's ``perf`` output (``nms.rtl.datapath.perf_layout`` is
    derived from :data:`PERF_COUNTERS`; meanings in ``docs/rtl-datapath.md``).

    ``timed``: depends on clock-cycle timing (see :attr:`Register.timed`). ``register``: the
    device register(s) that expose it — default ``PERF_<NAME>`` (``_LO``/``_HI`` if wider than
    32 bits); ``None`` if another register already reports it.
    """

    name: str
    width: int
    doc: str
    timed: bool = False
    register: str | None = ""

    def __post_init__(self):
        if self.register == "":
            object.__setattr__(self, "register", f"PERF_{self.name.upper()}")
        if not 1 <= self.width <= 2 * DATA_WIDTH:
            raise ValueError(f"counter {self.name}: width {self.width} is not 1..{2 * DATA_WIDTH}")


#: the datapath's counters, in ``perf`` order. Untimed ones are exact functions of the job and
#: the generator parameters (the model backend computes them by the formulas of
#: ``docs/rtl-datapath.md``); timed ones exist only on cycle-accurate backends.
PERF_COUNTERS: tuple[PerfCounter, ...] = (
    PerfCounter("cycles", 48, "datapath busy: start accepted -> final index handshake",
                timed=True, register=None),      # the device reports its own CYCLES_*
    PerfCounter("bytes_read", 48, "near-memory bytes (vector elements) read",
                register=None),                  # = BYTES_READ_*
    PerfCounter("mem_beats", 32, "memory response beats taken (lane beats)"),
    PerfCounter("mem_wait", 32, "cycles with a memory command at the fetch queue's head and no "
                "beat offered", timed=True),
    PerfCounter("dist_cycles", 32, "first query beat -> final candidate beat taken", timed=True),
    PerfCounter("dist_beats", 32, "query + candidate beats taken by the distance engine"),
    PerfCounter("dist_stall", 32, "distance result offered but refused (kNN back-pressure)",
                timed=True),
    PerfCounter("knn_cycles", 32, "first distance result -> final kNN row beat taken",
                timed=True),
    PerfCounter("aff_cycles", 32, "first kNN row beat -> final affinity beat taken", timed=True),
    PerfCounter("embed_cycles", 32, "embedding busy (load, init, iterations, output)",
                timed=True),
    PerfCounter("embed_run_cycles", 32, "final affinity beat taken -> first coordinate out",
                timed=True),
    PerfCounter("pair_cycles", 32, "embedding pair-phase cycles", timed=True),
    PerfCounter("pair_items", 32, "embedding pairs issued, all units (attractive + repulsive)"),
    PerfCounter("rep_cycles", 32, "cycles with a repulsive pair issued", timed=True),
    PerfCounter("rep_items", 32, "repulsive pairs issued, all units"),
    PerfCounter("grid_cycles", 32, "grid sampler: first point -> final index taken",
                timed=True),
    # the chosen dataflow's on-chip traffic (docs/energy.md §6.6)
    PerfCounter("buf_read_beats", 32, "chunk-buffer words read for the engine (0 when streamed)"),
    PerfCounter("buf_write_beats", 32, "chunk-buffer words written (0 when streamed)"),
    PerfCounter("query_rows_read", 32, "query-memory rows read by the distance engine (one per "
                "candidate beat)"),
    PerfCounter("y_reads", 32, "embedding Y-memory words read (pair front ends, update, "
                "output; docs/energy.md §6.5)"),
)


def _counter_registers(name: str, width: int, doc: str, *, timed: bool) -> tuple[Register, ...]:
    """One 32-bit counter register, or a ``_LO``/``_HI`` pair for a wider counter."""
    if width <= DATA_WIDTH:
        return (Register(name, "r", doc, role="counter", timed=timed),)
    return (Register(f"{name}_LO", "r", f"{doc}, low word", role="counter", timed=timed),
            Register(f"{name}_HI", "r", f"{doc}, high word", role="counter", timed=timed))


_IRQ_FIELDS = (Field("done", 1, "the last job ended cleanly"),
               Field("error", 1, "the last job was refused, failed or aborted"))
_ITER = Field("n_iter", ITER_BITS, "embedding iterations")
REGISTERS: tuple[Register, ...] = (
    Register("ID", "r", "magic 0x4E4D5331 ('NMS1')", role="id"),
    Register("CTRL", "w1s", "job control", (
        Field("start", 1, "start the job on the programmed registers"),
        Field("abort", 1, "abort the running job: it ends with ABORTED (ignored while idle)"),
        Field("clear_error", 1, "clear STATUS.error and STATUS.cause"),
    ), role="control"),
    Register("STATUS", "r", "job status", (
        Field("busy", 1, "a job runs"),
        Field("done", 1, "the last job ended (accepted and finished, or refused)"),
        Field("error", 1, "sticky: a refusal or an error happened (STATUS.cause says which)"),
        Field("cause", CAUSE_BITS, "sticky: the first error cause since the last clear "
              "(see the cause table)", lsb=8),
    ), role="status"),
    Register("SRC_ADDR", "rw", "DDR byte address of the chunk's first vector (row-major uint8)",
             role="address"),
    Register("DST_ADDR", "rw", "DDR byte address where selected local indices (u32) are written; "
             "whole u32 words, whatever the AXI data width", role="address", align=4),
    Register("N", "rw", "points in the chunk", lo=2, hi="capacity"),
    Register("DIM", "rw", "elements per vector", lo=1, hi="max_dim"),
    Register("BUDGET", "rw", "exemplars to select", lo=1, hi="n"),
    Register("H_TARGET", "rw", "target entropy log2(perplexity), unsigned Q8.16",
             hi=(1 << fp.H_BITS) - 1),
    Register("ITER", "rw", "embedding schedule", (
        _ITER,
        Field("exaggeration_iters", ITER_BITS, "iterations with exaggerated attraction"),
    )),
    Register("OPT", "rw", "optimiser", (
        Field("learning_rate", 12, "step size, unsigned Q4.8 (256 = 1.0)", lo=1),
        Field("exaggeration_shift", 3, "attraction x 2**shift while exaggerating", hi=4),
        Field("allocation", 1, "budget allocation over grid cells",
              codes=(("adaptive", 0), ("proportional", 1))),
        Field("search", 1, "precision search", codes=(("robust", 0), ("bisect", 1))),
        Field("exemplar", 1, "exemplars per grid cell: nearest the cell centre, or greedy "
              "kNN-graph coverage inside the cell quotas (docs/rtl-cover.md)",
              codes=(("centre", 0), ("cover", 1))),
        Field("cover_start", 1, "coverage only: first pick by largest gain, or the member "
              "nearest the chunk mean", codes=(("gain", 0), ("mean", 1))),
        Field("pool", 2, "pooling in front of the kNN: 2x2 / 4x4 floor mean of the square "
              "image (docs/energy.md §6.1); only a device with the pooling unit accepts != 0",
              hi="pool_max", codes=(("none", 0), ("pool2", 1), ("pool4", 2))),
        Field("img_w", 9, "image side of a pooled job (its vectors are img_w x img_w images, "
              "row-major); ignored when OPT.pool = 0"),
    )),
    Register("MOMENTUM", "rw", "momentum", (
        Field("early", 8, "momentum before the switch, unsigned Q0.8", key="momentum_early"),
        Field("late", 8, "momentum from the switch on, unsigned Q0.8", key="momentum_late"),
        Field("switch", ITER_BITS, "iteration of the change", key="momentum_switch"),
    )),
    Register("SEED", "rw", "seed of the initialisation and negative-sampling hash"),
    Register("RESULT_COUNT", "r", "indices written by the last job", role="result"),
    Register("CYCLES_LO", "r", "clock cycles of the last job (start to the last write "
             "response), low word", role="counter", timed=True),
    Register("CYCLES_HI", "r", "clock cycles of the last job, high word", role="counter",
             timed=True),
    Register("BYTES_READ_LO", "r", "near-memory bytes read by the last job (vector elements, "
             "the documented dataflow), low word", role="counter"),
    Register("BYTES_READ_HI", "r", "near-memory bytes read by the last job, high word",
             role="counter"),
    Register("BYTES_WRITTEN", "r", "near-memory bytes written by the last job", role="counter"),
    Register("IRQ_ENABLE", "rw", "interrupt enables: irq = |(IRQ_STATUS & IRQ_ENABLE)",
             _IRQ_FIELDS, role="control"),
    Register("IRQ_STATUS", "w1c", "interrupt status: set when a job ends (done: cleanly, "
             "error: refused, failed or aborted); write 1 to clear", _IRQ_FIELDS, role="status"),
    Register("AXI_BYTES_READ_LO", "r", "AXI bytes read (whole bus beats), low word",
             role="counter"),
    Register("AXI_BYTES_READ_HI", "r", "AXI bytes read (whole bus beats), high word",
             role="counter"),
    Register("AXI_BYTES_WRITTEN", "r", "AXI bytes written (strobed bytes)", role="counter"),
) + tuple(reg for c in PERF_COUNTERS if c.register is not None
          for reg in _counter_registers(c.register, c.width, f"datapath counter perf.{c.name}: "
                                        f"{c.doc}", timed=c.timed))

#: name -> Register; ADDR: name -> byte address (derived)
REGMAP = {r.name: r for r in REGISTERS}
#: readable registers every backend reports alike (exactly); the rest of the counters are timed
CONTRACT_REGISTERS = tuple(r.name for r in REGISTERS
                           if r.access in ("r", "rw", "w1c") and not r.timed)
#: counters only a cycle-accurate backend has
TIMED_REGISTERS = tuple(r.name for r in REGISTERS if r.timed)
ADDR = {r.name: 4 * i for i, r in enumerate(REGISTERS)}
#: qualified field name -> Field
FIELDS = {f.qualname: f for r in REGISTERS for f in r.fields}
#: the job configuration, in declaration order (= the datapath's config layout and the order in
#: which refusals are looked for)
JOB_FIELDS: tuple[Field, ...] = tuple(f for r in REGISTERS if r.role == "job" for f in r.fields)
_JOB_BY_KEY = {f.key: f for f in JOB_FIELDS}
#: memory-master address fields that have a rule (alignment): checked at start when given
ADDRESS_FIELDS: tuple[Field, ...] = tuple(f for r in REGISTERS if r.role == "address"
                                          for f in r.fields if f.ranged)
_ADDRESS_BY_KEY = {f.key: f for f in ADDRESS_FIELDS}
#: every field a start checks, in declaration order (= refusal order: the first bad one wins)
REFUSAL_FIELDS: tuple[Field, ...] = tuple(f for r in REGISTERS if r.role in ("address", "job")
                                          for f in r.fields if f.ranged)
SEARCH_CODES = FIELDS["OPT.search"].code_map
ALLOCATION_CODES = FIELDS["OPT.allocation"].code_map
EXEMPLAR_CODES = FIELDS["OPT.exemplar"].code_map
COVER_START_CODES = FIELDS["OPT.cover_start"].code_map


# --- generator parameters the ranges refer to ----------------------------------------------------

@dataclass(frozen=True)
class Param(_Ranged):
    """A generator parameter (fixed when the hardware is generated) that job ranges refer to."""

    name: str
    lo: Any
    hi: Any
    doc: str = ""

    def __post_init__(self):
        object.__setattr__(self, "lo", _bounds(self.lo))
        object.__setattr__(self, "hi", _bounds(self.hi))

    @property
    def qualname(self) -> str:
        return self.name


PARAMS: tuple[Param, ...] = (
    Param("capacity", 4, 1 << 16, "C, the most points per chunk (on-chip state)"),
    Param("max_dim", 1, 1 << 16, "the longest vector, in elements"),
    Param("k", 2, (64, Ref("capacity", -1)), "K, neighbours per point"),
    Param("neg_samples", 1, 64, "negative samples per point and iteration"),
    Param("tile", 1, 64, "T, resident queries of the distance engine"),
)
_PARAM_BY_NAME = {p.name: p for p in PARAMS}


@dataclass(frozen=True)
class Capability:
    """A device capability the job ranges refer to, derived from the generator parameters
    (``DesneDatapath.refusal_params``); a device that does not pass it has ``default``."""

    name: str
    default: int
    doc: str


CAPABILITIES: tuple[Capability, ...] = (
    Capability("pool_max", 0, "the largest OPT.pool the device implements (0: no pooling unit)"),
    Capability("buffer_depth", 0, "words of the chunk buffer, each `lanes` elements "
               "(0: no chunk buffer, the chunk is streamed from DDR once per query tile)"),
    Capability("lanes", 8, "L, elements per chunk-buffer word"),
)
_CAPABILITY_DEFAULT = {c.name: c.default for c in CAPABILITIES}


def capabilities(*, capacity: int, lanes: int, buffer_dim: int) -> dict[str, int]:
    """The :data:`CAPABILITIES` of a datapath generated with these parameters (what
    ``DesneDatapath.refusal_params`` adds, and what a host that knows the device's generator
    parameters passes to :func:`refusal` / :func:`explain`): none without the chunk buffer
    (``buffer_dim = 0``), else ``lanes``, ``buffer_depth = capacity · ceil(buffer_dim / lanes)``
    and ``pool_max = 2`` (the pooling unit comes with the buffer)."""
    if not buffer_dim:
        return {}
    return {"lanes": lanes, "buffer_depth": capacity * -(-buffer_dim // lanes), "pool_max": 2}


def buffer_points(params: Mapping[str, int], dim: int, pool: int) -> int | None:
    """The most points of a job of ``dim``-element vectors pooled by ``pool`` (an ``OPT.pool``
    code) that the device's chunk buffer holds (the ``BAD_CHUNK_BUFFER`` rule); ``None`` for a
    device without one (only ``capacity`` limits N then)."""
    depth = params.get("buffer_depth", 0)
    if not depth:
        return None
    return depth // _buffer_words({"lanes": params.get("lanes", _CAPABILITY_DEFAULT["lanes"]),
                                   "dim": dim, "pool": pool})


def _window_mask(pool):
    """w - 1 of an ``OPT.pool`` code: 0, 1, 3 (adds and shifts only: ints and Amaranth values)."""
    return pool + (pool >> 1)


def _bad_image(env):
    pool, side, dim = env["pool"], env["img_w"], env["dim"]
    return (pool != 0) & ((env["img_w_sq"] != dim) | ((side & _window_mask(pool)) != 0))


def _image_text(env) -> str:
    w = 1 << env["pool"]
    return (f"the side of the square image of DIM = {env['dim']} elements (OPT.img_w² = DIM) "
            f"and a multiple of {w} (OPT.pool = {env['pool']}: {w}x{w} pooling)")


def _buffer_words(env):
    lanes = env.get("lanes", _CAPABILITY_DEFAULT["lanes"])
    pooled = env["dim"] >> (env["pool"] + env["pool"])   # D' (the image rule holds by then)
    return (pooled + (lanes - 1)) >> (lanes.bit_length() - 1)


def _bad_buffer(env):
    depth = env.get("buffer_depth", 0)   # a generator parameter: an int, also in the RTL
    if not depth:
        return False                     # no chunk buffer: nothing to overflow
    return env["buffer_need"] > depth


def _within(value, bound):
    """An Amaranth ``value`` cut to the bits of its declared upper ``bound`` (an int); an int
    is returned whole. A job rule reads a field this way only where the field's own range
    check comes first in the walk: while that check passes, the cut loses nothing, and once it
    fails its cause wins, whatever the rule computes."""
    if isinstance(value, int) or bound is None:
        return value
    return value[:max(1, int(bound).bit_length())]


def _tree_sum(terms):
    """Balanced sum (adder depth log2 of the terms, not their count)."""
    terms = list(terms)
    if not terms:
        return 0
    while len(terms) > 1:
        terms = [terms[i] + terms[i + 1] if i + 1 < len(terms) else terms[i]
                 for i in range(0, len(terms), 2)]
    return terms[0]


def _partial_product(a, b, lo, hi=None):
    """``a`` times bits ``lo .. hi - 1`` of ``b`` (``hi=None``: every bit from ``lo`` up), as
    a shift-add: ints exactly, Amaranth values as a tree of multiplexed shifts of ``a`` — no
    DSP, whose unregistered ports capped the whole datapath's clock (a multiply in one step)."""
    if isinstance(a, int) and isinstance(b, int):
        bits = b >> lo if hi is None else (b >> lo) & ((1 << (hi - lo)) - 1)
        return (a * bits) << lo
    top = len(b) if hi is None else min(hi, len(b))
    return _tree_sum((a << i) & b[i].replicate(len(a) + i) for i in range(lo, top))


def _split(width):
    """Where a ``width``-bit multiplier is cut into two halves (one registered step each)."""
    return (width + 1) // 2


def _img_w_split(env):
    return _split(_JOB_BY_KEY["img_w"].width)


def _need_split(env):
    lanes = env.get("lanes", _CAPABILITY_DEFAULT["lanes"])
    return _split((-(-env.get("max_dim", 1) // lanes)).bit_length())


def _need_factors(env):
    """N and ceil(D'/L) cut to their in-range widths (N <= capacity, D' <= DIM <= max_dim)."""
    lanes = env.get("lanes", _CAPABILITY_DEFAULT["lanes"])
    max_dim = env.get("max_dim")
    return (_within(env["n"], env.get("capacity")),
            _within(env["buffer_words"], None if max_dim is None else -(-max_dim // lanes)))


#: The terms the job rules compute from the job and the generator parameters, in steps: a
#: step's terms read the job, the parameters and the earlier steps' terms only. The host
#: computes them at once (:func:`derive`); the datapath's job controller registers each step,
#: so no more than one half of a product (a shift-add tree) or one add lies between registers
#: (on the whole datapath the latched job -> product chain was the critical path, first as a
#: shift-add chain, then as a DSP without its registers).
DERIVED_STEPS: tuple[dict[str, Any], ...] = (
    {"img_w_sq_lo": lambda env: _partial_product(env["img_w"], env["img_w"], 0, _img_w_split(env)),
     "img_w_sq_hi": lambda env: _partial_product(env["img_w"], env["img_w"], _img_w_split(env)),
     "buffer_words": _buffer_words},                         # ceil(D'/L): words per vector
    {"img_w_sq": lambda env: env["img_w_sq_lo"] + env["img_w_sq_hi"],   # the image rule's img_w²
     "buffer_need_lo": lambda env: _partial_product(*_need_factors(env), 0, _need_split(env)),
     "buffer_need_hi": lambda env: _partial_product(*_need_factors(env), _need_split(env))},
    {"buffer_need": lambda env: env["buffer_need_lo"] + env["buffer_need_hi"]},   # N · ceil(D'/L)
)


def derive(env: Mapping[str, Any]) -> dict[str, Any]:
    """``env`` with every :data:`DERIVED_STEPS` term added (ints or Amaranth values, computed
    at once); a term already in ``env`` (the RTL's registered one) is kept, one whose inputs
    are absent (a partial job) is left out."""
    out = dict(env)
    for step in DERIVED_STEPS:
        for name, term in step.items():
            if name in out:
                continue
            try:
                out[name] = term(out)
            except KeyError:
                pass
    return out


def _buffer_text(env) -> str:
    words, depth = _buffer_words(env), env.get("buffer_depth", 0)
    return (f"at most {depth // words} (N · ceil(D'/L) = N · {words} words must fit the "
            f"{depth}-word chunk buffer)")


@dataclass(frozen=True)
class JobRule:
    """A refusal that is not one field's range: a condition on several job fields and the
    device capabilities, with its own cause (walked after the fields, in declaration order).

    ``check(env)`` is true (an int/bool or an Amaranth value) when the job is refused;
    ``requirement(env)`` says, for an int job, what the reported field ``key`` must be;
    ``needs`` are the job keys it reads.
    """

    name: str
    key: str
    doc: str
    check: Any
    requirement: Any
    needs: tuple[str, ...]

    @property
    def qualname(self) -> str:
        return _JOB_BY_KEY[self.key].qualname

    @property
    def field(self) -> "Field":
        return _JOB_BY_KEY[self.key]

    @property
    def cause(self) -> "Cause":
        return CAUSE["BAD_" + self.name]


JOB_RULES: tuple[JobRule, ...] = (
    JobRule("IMAGE", "img_w", "a pooled job (OPT.pool != 0) needs OPT.img_w² = DIM and a side "
            "the window divides", _bad_image, _image_text, ("pool", "img_w", "dim")),
    JobRule("CHUNK_BUFFER", "n", "with a chunk buffer, N · ceil(D'/L) <= buffer_depth "
            "(D' = DIM / w², the pooled length)", _bad_buffer, _buffer_text, ("n", "dim", "pool")),
)
_RULE_BY_NAME = {r.name: r for r in JOB_RULES}
#: the first code of the job-rule refusals (below the reserved 0x20 codes)
RULE_CAUSE_BASE = 0x1C


def _display_name(name: str) -> str:
    """A bound's name as the documentation shows it: the qualified field name or the parameter."""
    f = _JOB_BY_KEY.get(name)
    return f.qualname if f is not None else name


# --- error causes --------------------------------------------------------------------------------

@dataclass(frozen=True)
class Cause:
    """One error cause reported in ``STATUS.cause``; ``field`` is the refused field, if any."""

    code: int
    name: str
    doc: str
    field: str | None = None
    reserved: bool = False
    #: the :data:`JOB_RULES` entry behind this cause, if any
    rule: str | None = None


#: the first code of the per-field refusals (derived in declaration order, like addresses)
FIELD_CAUSE_BASE = 0x10
#: the first code of the address refusals (kept apart, so the job fields' codes do not move)
ADDRESS_CAUSE_BASE = 0x08


def _causes() -> tuple[Cause, ...]:
    out = [Cause(0x00, "NONE", "no error since the last clear"),
           Cause(0x01, "START_WHILE_BUSY", "CTRL.start while a job runs: ignored, the running "
                 "job is not disturbed")]
    for i, f in enumerate(ADDRESS_FIELDS):
        out.append(Cause(ADDRESS_CAUSE_BASE + i, "BAD_" + f.qualname.replace(".", "_").upper(),
                         f"refused at start: {f.range_text()} does not hold", field=f.qualname))
    ranged = [f for f in JOB_FIELDS if f.ranged]
    for i, f in enumerate(ranged):
        out.append(Cause(FIELD_CAUSE_BASE + i, "BAD_" + f.qualname.replace(".", "_").upper(),
                         f"refused at start: {f.range_text()} does not hold", field=f.qualname))
    for i, rule in enumerate(JOB_RULES):
        out.append(Cause(RULE_CAUSE_BASE + i, "BAD_" + rule.name,
                         f"refused at start: {rule.doc}", rule=rule.name))
    out += [Cause(0x20, "AXI_READ_ERROR", "a memory read ended with an error response "
                  "(SLVERR/DECERR; on the model backend: outside its memory); the job is ended"),
            Cause(0x21, "AXI_WRITE_ERROR", "a result write ended with an error response "
                  "(SLVERR/DECERR; on the model backend: outside its memory); the job is ended"),
            Cause(0x30, "ABORTED", "the job was stopped by CTRL.abort")]
    return tuple(out)


CAUSES: tuple[Cause, ...] = _causes()
CAUSE = {c.name: c for c in CAUSES}
CAUSE_BY_CODE = {c.code: c for c in CAUSES}
_FIELD_CAUSE = {c.field: c for c in CAUSES if c.field}


def _check_declaration() -> None:
    codes = [c.code for c in CAUSES]
    if len(set(codes)) != len(codes) or max(codes) >= (1 << CAUSE_BITS):
        raise AssertionError("error cause codes collide or do not fit STATUS.cause")
    if len({f.key for f in JOB_FIELDS}) != len(JOB_FIELDS):
        raise AssertionError("two job fields share a key")
    if len(ADDRESS_FIELDS) > FIELD_CAUSE_BASE - ADDRESS_CAUSE_BASE or \
            len({f.key for f in REFUSAL_FIELDS}) != len(REFUSAL_FIELDS):
        raise AssertionError("address refusal codes overflow, or two checked fields share a key")
    for f in REFUSAL_FIELDS:
        for b in (*f.lo, *f.hi):
            if isinstance(b, Ref) and b.name not in _JOB_BY_KEY and b.name not in _PARAM_BY_NAME \
                    and b.name not in _CAPABILITY_DEFAULT:
                raise AssertionError(f"{f.qualname}: bound {b} names nothing declared")


_check_declaration()


# --- the job as one dict ------------------------------------------------------------------------

def job_layout() -> list[tuple[str, int]]:
    """The job configuration as ``(key, width)`` in declaration order (the datapath's config)."""
    return [(f.key, f.width) for f in JOB_FIELDS]


def pack_job(job: Mapping[str, int]) -> dict[str, int]:
    """Register words (name -> 32-bit value) of a complete job (key -> field value)."""
    missing = [f.key for f in JOB_FIELDS if f.key not in job]
    unknown = sorted(set(job) - set(_JOB_BY_KEY))
    if missing or unknown:
        raise ValueError(f"a job needs exactly the fields {[f.key for f in JOB_FIELDS]}; "
                         f"missing {missing}, unknown {unknown}")
    words = {}
    for r in REGISTERS:
        if r.role == "job":
            words[r.name] = r.pack(**{f.name: job[f.key] for f in r.fields})
    return words


def unpack_job(words: Mapping[str, int]) -> dict[str, int]:
    """The job (key -> field value) held by the register words (name -> value)."""
    out = {}
    for r in REGISTERS:
        if r.role == "job":
            vals = r.unpack(words[r.name])
            out.update({f.key: vals[f.name] for f in r.fields})
    return out


# --- refusal: one walk for ints and for Amaranth values ------------------------------------------

def _walk(job: Mapping[str, Any], params: Mapping[str, Any], *, partial: bool = False):
    """``(field, side, bound, violated)`` for every check, in declaration order — THE walk
    behind every backend's refusal. ``partial``: skip fields absent from ``job`` and bounds
    naming something absent. Terms of :data:`DERIVED_STEPS` already in ``job`` (the RTL's
    registered steps) are used as they are."""
    env = derive({**params, **job})
    for f in REFUSAL_FIELDS:
        if f.key not in job and (partial or f.key in _ADDRESS_BY_KEY):
            continue   # an address is checked when the caller gives it (the device always does)
        for side, bound, violated in f.violations(job[f.key], env, partial=partial):
            yield f, side, bound, violated
    for rule in JOB_RULES:
        if partial and any(k not in job for k in rule.needs):
            continue
        yield rule, "rule", rule, rule.check(env)


@dataclass(frozen=True)
class Refusal:
    """Why a job is refused: its cause, the field, its value and what the bound requires."""

    cause: Cause
    field: Field
    value: int
    requirement: str

    def message(self, name: str | None = None) -> str:
        return (f"{name or self.field.qualname} must be {self.requirement}, not {self.value} "
                f"(cause 0x{self.cause.code:02X} {self.cause.name})")


class JobRefused(ValueError):
    """A job value outside its declared range; ``refusal`` says which field and why."""

    def __init__(self, refusal: Refusal, name: str | None = None):
        super().__init__(refusal.message(name))
        self.refusal = refusal


def refusal(job: Mapping[str, int], params: Mapping[str, int], *,
            partial: bool = False) -> Refusal | None:
    """The first refusal of a job (key -> int), or ``None`` if the job is accepted.

    ``params`` holds the generator parameters the ranges refer to (``capacity``, ``max_dim``).
    This is what the model device uses (and :func:`validate`, for the host and
    ``DesneConfig``); the RTL computes the same walk with :func:`refusal_conditions`.
    ``partial``: check only the fields present (and the bounds they can evaluate).
    """
    env = {**params, **job}
    for f, side, bound, violated in _walk(job, params, partial=partial):
        if violated:
            text = f.requirement(env) if side == "rule" else _violation_text(f, side, bound, env)
            field = f.field if side == "rule" else f
            return Refusal(f.cause, field, int(job[f.key]), text)
    return None


def refusal_conditions(job: Mapping[str, Any], params: Mapping[str, int]) -> list[tuple[Any, int]]:
    """``(condition, cause code)`` for every check in refusal order — the same walk as
    :func:`refusal`, on Amaranth values: the RTL's cause is the code of the first condition
    that holds (a priority chain built from this list). ``job`` may hold the
    :data:`DERIVED_STEPS` terms (registered); the absent ones are computed here."""
    return [(violated, f.cause.code) for f, _side, _bound, violated in _walk(job, params)]


def explain(code: int, job: Mapping[str, int], params: Mapping[str, int]) -> str:
    """A cause code reported by a device, explained with the job the host programmed."""
    cause = CAUSE_BY_CODE.get(code)
    if cause is None:
        return f"unknown cause 0x{code:02X}"
    if cause.rule is not None:
        rule = _RULE_BY_NAME[cause.rule]
        env = derive({**params, **job})
        if all(k in job for k in rule.needs) and rule.check(env):
            return Refusal(cause, rule.field, int(job[rule.key]), rule.requirement(env)).message()
        return f"cause 0x{code:02X} {cause.name}: {cause.doc}"
    if cause.field is not None and FIELDS[cause.field].key not in job:
        return f"cause 0x{code:02X} {cause.name}: {cause.doc}"
    if cause.field is not None:
        f = FIELDS[cause.field]
        env = {**params, **job}
        for side, bound, violated in f.violations(job[f.key], env):
            if violated:
                return Refusal(cause, f, int(job[f.key]),
                               _violation_text(f, side, bound, env)).message()
        return (f"cause 0x{code:02X} {cause.name}, but {f.qualname} = {job[f.key]} satisfies "
                f"{f.range_text()} (the device and the declaration disagree)")
    return f"cause 0x{code:02X} {cause.name}: {cause.doc}"


def _need_int(owner: str, name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{owner}.{name} must be an integer, not {value!r}")
    return int(value)


def validate(values: Mapping[str, Any], params: Mapping[str, int] | None = None, *,
             owner: str = "job", partial: bool = False) -> None:
    """The one validation of job values (key -> value) on the host side.

    Checks that each value is an integer that fits its field and lies inside its declared range
    (bounds naming a parameter or field absent from ``params``/``values`` are skipped when
    ``partial``). Raises ``TypeError`` (not an integer), :class:`JobRefused` (a ``ValueError``
    with the cause a device would report) or ``ValueError`` (does not fit the field); every
    message names ``owner.key`` and the value.
    """
    params = dict(params or {})
    unknown = sorted(set(values) - set(_JOB_BY_KEY) - set(_ADDRESS_BY_KEY))
    if unknown:
        raise ValueError(f"{owner}: unknown job fields {unknown}")
    if not partial:
        missing = [f.key for f in JOB_FIELDS if f.key not in values]
        if missing:
            raise ValueError(f"{owner}: missing job fields {missing}")
    ints = {k: _need_int(owner, k, v) for k, v in values.items()}
    for f in (*ADDRESS_FIELDS, *JOB_FIELDS):   # a value the field cannot hold never reaches a device
        v = ints.get(f.key, 0)
        if not 0 <= v < (1 << f.width):
            lo, hi = f.static_range()
            if f.ranged:
                raise JobRefused(Refusal(f.cause, f, v, f"in [{lo}, {hi}]"), f"{owner}.{f.key}")
            raise ValueError(f"{owner}.{f.key} must be in [{lo}, {hi}], not {v}")
    refused = refusal(ints, params, partial=partial)
    if refused is not None:
        raise JobRefused(refused, f"{owner}.{refused.field.key}")


def check_params(values: Mapping[str, Any], *, owner: str) -> dict[str, int]:
    """Check generator parameters (name -> value) against :data:`PARAMS`; returns them as ints.

    Parameters are checked in declaration order, so a bound naming an earlier parameter sees
    its checked value; bounds naming a parameter absent from ``values`` are skipped.
    """
    unknown = sorted(set(values) - set(_PARAM_BY_NAME))
    if unknown:
        raise ValueError(f"{owner}: unknown generator parameters {unknown}")
    out: dict[str, int] = {}
    for p in PARAMS:
        if p.name not in values:
            continue
        v = _need_int(owner, p.name, values[p.name])
        env = out   # earlier parameters, already checked
        for side, bound in p.checks():
            if isinstance(bound, Ref) and bound.name not in env:
                continue
            b = bound.evaluate(env) if isinstance(bound, Ref) else bound
            if (v < b) if side == "lo" else (v > b):
                raise ValueError(f"{owner}.{p.name} must be "
                                 f"{_violation_text(p, side, bound, env)}, not {v}")
        out[p.name] = v
    return out


def check_code(qualname: str, value, *, owner: str, name: str | None = None) -> int:
    """The code of a named value of an enumerated field (``OPT.search``: ``"robust"`` -> 0)."""
    codes = FIELDS[qualname].code_map
    if not isinstance(value, str) or value not in codes:
        raise ValueError(f"{owner}.{name or FIELDS[qualname].key} must be one of "
                         f"{tuple(codes)}, not {value!r}")
    return codes[value]


# --- renderings: host constants and the register table -------------------------------------------

_GENERATED = "Generated from nms.rtl.regmap (nms generate --regmap / --regmap-doc); do not edit."


def _cname(f: Field) -> str:
    return f.qualname.replace(".", "_").upper()


def host_constants(lang: str = "c") -> str:
    """The declaration as a C header (``lang="c"``) or Python constants (``lang="py"``):
    addresses, field shifts/masks, static range limits (relational ones as comments), named
    field values, error cause codes."""
    if lang not in ("c", "py"):
        raise ValueError(f"lang must be 'c' or 'py', not {lang!r}")
    c = lang == "c"
    lines: list[str] = []

    def const(name, value, comment="", hexwidth=0):
        text = f"0x{value:0{hexwidth}X}" if hexwidth else str(value)
        if c:
            lines.append(f"#define NMS_{name} {text}u" + (f"  /* {comment} */" if comment else ""))
        else:
            lines.append(f"{name} = {text}" + (f"  # {comment}" if comment else ""))

    def comment(text):
        lines.append(f"/* {text} */" if c else f"# {text}")

    if c:
        lines += [f"/* {_GENERATED} */", "#ifndef NMS_REGMAP_H", "#define NMS_REGMAP_H", ""]
    else:
        lines += [f'"""{_GENERATED}"""', ""]
    const("ID_MAGIC", ID_MAGIC, hexwidth=8)
    const("CAUSE_BITS", CAUSE_BITS)
    for r in REGISTERS:
        lines.append("")
        const(f"{r.name}_ADDR", ADDR[r.name], f"{r.access}: {r.doc}", hexwidth=2)
        for f in r.fields:
            n = _cname(f)
            if not r.whole:
                const(f"{n}_SHIFT", f.lsb)
                const(f"{n}_MASK", ((1 << f.width) - 1) << f.lsb, hexwidth=8)
            if any(side != "align" for side, _ in f.checks()):
                lo, hi = f.static_range()
                const(f"{n}_MIN", lo)
                if not any(isinstance(b, Ref) for b in f.hi):
                    const(f"{n}_MAX", hi)
            if f.align > 1:
                const(f"{n}_ALIGN", f.align)
                if any(isinstance(b, Ref) for b in (*f.lo, *f.hi)):
                    comment(f"allowed: {f.range_text()}")
            for cname, code in f.codes:
                const(f"{n}_{cname.upper()}", code)
    lines.append("")
    comment("error causes (STATUS.cause)")
    for cause in CAUSES:
        const(f"CAUSE_{cause.name}", cause.code, cause.doc, hexwidth=2)
    if c:
        lines += ["", "#endif  /* NMS_REGMAP_H */"]
    return "\n".join(lines) + "\n"


def markdown() -> str:
    """The register table, error causes and the rules, as committed in ``docs/registers.md``."""
    out = ["# Register map", "",
           f"<!-- {_GENERATED} -->",
           "Generated from the one declaration in `rtl/regmap.py` by "
           "`nms generate --regmap-doc docs/registers.md` (a test checks that this file is "
           "current). 32-bit registers, 4 bytes apart; fields LSB-first.", "",
           "## Registers", "",
           "| address | register | access | bits | field | allowed values | description |",
           "|---|---|---|---|---|---|---|"]
    for r in REGISTERS:
        for i, f in enumerate(r.fields):
            bits = f"{f.lsb + f.width - 1}:{f.lsb}" if f.width > 1 else f"{f.lsb}"
            if f.ranged:
                allowed = f"`{f.range_text()}`"
            elif f.codes:
                allowed = ", ".join(f"{code} = {name}" for name, code in f.codes)
            else:
                allowed = "any" if r.access == "rw" else "—"
            doc = r.doc if r.whole else f.doc
            if r.timed:
                doc += " — *timed: cycle-accurate backends only*"
            head = (f"0x{ADDR[r.name]:02X}", f"`{r.name}`", r.access) if i == 0 else ("", "", "")
            out.append(f"| {head[0]} | {head[1]} | {head[2]} | {bits} | "
                       f"{'—' if r.whole else f'`{f.name}`'} | {allowed} | {doc} |")
    out += ["", "## Error causes (`STATUS.cause`)", "",
            "| code | name | meaning |", "|---|---|---|"]
    for cause in CAUSES:
        note = " (reserved for the device top)" if cause.reserved else ""
        out.append(f"| 0x{cause.code:02X} | `{cause.name}` | {cause.doc}{note} |")
    out += ["", "## Generator parameters the ranges refer to", "",
            "| parameter | allowed | meaning |", "|---|---|---|"]
    for p in PARAMS:
        out.append(f"| `{p.name}` | `{p.range_text()}` | {p.doc} |")
    out += ["", "## Device capabilities the ranges refer to", "",
            "Derived from the generator parameters (`DesneDatapath.refusal_params`); a device "
            "that does not report one has the default.", "",
            "| capability | default | meaning |", "|---|---|---|"]
    for c in CAPABILITIES:
        out.append(f"| `{c.name}` | {c.default} | {c.doc} |")
    out += ["", "## Job rules (checked after the fields, in this order)", "",
            "| cause | reported field | rule |", "|---|---|---|"]
    for rule in JOB_RULES:
        out.append(f"| `{rule.cause.name}` | `{rule.qualname}` | {rule.doc} |")
    out += ["", "## Rules", "",
            "- **Refusal at start.** `CTRL.start` while idle checks the programmed job against "
            "the ranges above, field by field in table order; the first field out of range "
            "refuses the job: `STATUS.done` and `STATUS.error` set, `STATUS.busy` low again, "
            "no memory access, and that field's cause in `STATUS.cause`. The RTL checks the "
            "latched job in a few registered steps (`STATUS.busy` is high until the decision, "
            "`CHECK_CYCLES + 2` edges after the start at the device top, "
            "`nms.rtl.datapath`; the model device refuses at once), so a host waits for "
            "`STATUS.busy` low after every start. Every backend (RTL job controller, model "
            "device, host-side `validate`) walks the same declaration, so they report the "
            "same cause.",
            "- **Start while busy** is ignored (the running job is not disturbed) and sets "
            "`STATUS.error` with `START_WHILE_BUSY` (unless a cause is already recorded).",
            "- **Sticky error.** `STATUS.error` and `STATUS.cause` hold the first error since "
            "they were last cleared, by `CTRL.clear_error` or by the next start while idle "
            "(each job starts with a clean status).",
            "- **Parameter registers** are latched at an accepted start: writing them while a "
            "job runs changes only the next job.",
            "- Values are never truncated: a whole-register field (`N`, `DIM`, `BUDGET`, "
            "`H_TARGET`) is compared with all 32 bits.",
            "- **Interrupt.** When a job ends, `IRQ_STATUS.done` (clean end) or "
            "`IRQ_STATUS.error` (refused, failed or aborted) is set; the host clears a bit by "
            "writing 1 to it. The level `irq` output is `|(IRQ_STATUS & IRQ_ENABLE)`.",
            "- **Counters** are cleared by a start while idle and hold the last job's values. "
            "Every readable register not marked *timed* is an exact function of the job and the "
            "generator parameters and reads the same on every backend (model, RTL simulation, "
            "FPGA); *timed* counters depend on clock-cycle timing (memory latency, "
            "back-pressure) and exist only on cycle-accurate backends (the model backend reads "
            "them as 0).", ""]
    return "\n".join(out)
