"""Generic cocotb 2.x helpers for Amaranth ``lib.stream`` ports.

Amaranth flattens a stream member ``name`` of a component into the Verilog ports
``<name>__valid``, ``<name>__ready`` and ``<name>__payload``. A ``data.Struct`` /
``data.ArrayLayout`` payload is one packed vector with fields LSB-first in declaration order.

Pieces (driver -> monitor -> model -> in-order checker):

* :func:`pack` / :func:`unpack` / :func:`layout_fields` -- payload ints <-> nested dicts/lists,
  from an Amaranth layout or a plain description (``int`` width, ``dict`` struct,
  :class:`Array`).
* :func:`start_clock` -- clock plus synchronous active-high reset.
* :class:`CycleLoop` -- ONE coroutine per clock that, every cycle, lets all agents drive after the
  falling edge and then sample the settled handshakes in ``ReadOnly``. A handshake seen there is
  exactly the one that happens at the next rising edge (the reliable pattern of
  ``shared/research/toolchain.md``); one coroutine for all agents also keeps the Python cost per
  cycle low. ``loop.cycle`` is the cycle counter.
* :class:`StreamDriver` -- sends a queue of payloads, with a seeded random idle-cycle inserter.
* :class:`StreamMonitor` -- collects accepted beats; as a sink it drives ``ready`` with a seeded
  random back-pressure inserter. It also checks the stream rule that a source keeps ``valid`` and
  ``payload`` stable until the beat is accepted.
* :class:`InOrderChecker` -- scoreboard: expected items (from a model) against observed ones, in
  order; counts mismatches and reports the first ones with context.

Only :mod:`cocotb` is needed at run time; :func:`pack`/:func:`unpack` also work without it.
"""

from __future__ import annotations

import itertools
import random
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

__all__ = [
    "Array",
    "FieldSlot",
    "layout_fields",
    "layout_width",
    "pack",
    "unpack",
    "PayloadCodec",
    "pause_generator",
    "start_clock",
    "CycleLoop",
    "StreamDriver",
    "StreamMonitor",
    "InOrderChecker",
]


# --------------------------------------------------------------------------------------------
# payload layouts
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Array:
    """Plain layout description of ``count`` elements of layout ``elem`` (element 0 at the LSB)."""

    elem: Any
    count: int


@dataclass(frozen=True)
class FieldSlot:
    """One leaf field of a packed payload: path of keys, bit offset, width, signedness."""

    path: tuple
    offset: int
    width: int
    signed: bool = False


def _normalise(layout) -> Any:
    """Turn an Amaranth layout/shape into the plain description (``int``/``dict``/Array/signed)."""
    if isinstance(layout, (Array, dict)):
        return layout
    if isinstance(layout, tuple) and len(layout) == 2 and layout[0] == "signed":
        return layout
    if isinstance(layout, bool):
        raise TypeError(f"layout must be a width, dict, Array or Amaranth shape, not {layout!r}")
    if isinstance(layout, int):
        if layout < 0:
            raise ValueError(f"field width must be >= 0, not {layout}")
        return layout
    try:
        from amaranth.hdl import Shape
        from amaranth.lib import data
    except ImportError as exc:  # pragma: no cover - amaranth is a dependency
        raise TypeError(f"unsupported layout {layout!r}") from exc
    if isinstance(layout, data.ArrayLayout):
        return Array(_normalise(layout.elem_shape), layout.length)
    if isinstance(layout, data.StructLayout):
        return {name: _normalise(field.shape) for name, field in layout}
    if isinstance(layout, data.Layout):
        raise TypeError(f"only struct and array layouts are supported, not {layout!r}")
    shape = Shape.cast(layout)
    return ("signed", shape.width) if shape.signed else shape.width


def layout_fields(layout, *, _path=(), _offset=0) -> list[FieldSlot]:
    """Leaf fields of ``layout`` with their bit offsets, LSB-first (Amaranth packing order).

    ``layout`` is an Amaranth ``StructLayout``/``ArrayLayout``/shape, or a plain description: an
    ``int`` width, ``("signed", width)``, a ``dict`` name -> layout (first entry at the LSB), or
    :class:`Array`.
    """
    layout = _normalise(layout)
    if isinstance(layout, int):
        return [FieldSlot(_path, _offset, layout, False)]
    if isinstance(layout, tuple) and len(layout) == 2 and layout[0] == "signed":
        return [FieldSlot(_path, _offset, layout[1], True)]
    slots: list[FieldSlot] = []
    if isinstance(layout, dict):
        items = layout.items()
    elif isinstance(layout, Array):
        items = ((i, layout.elem) for i in range(layout.count))
    else:
        raise TypeError(f"unsupported layout {layout!r}")
    offset = _offset
    for key, sub in items:
        sub_slots = layout_fields(sub, _path=(*_path, key), _offset=offset)
        slots.extend(sub_slots)
        offset += layout_width(sub)
    return slots


def layout_width(layout) -> int:
    """Total width in bits of ``layout``."""
    layout = _normalise(layout)
    if isinstance(layout, int):
        return layout
    if isinstance(layout, tuple):
        return layout[1]
    if isinstance(layout, dict):
        return sum(layout_width(sub) for sub in layout.values())
    return layout.count * layout_width(layout.elem)


def pack(layout, value) -> int:
    """Pack ``value`` (int, or nested dict/list matching ``layout``) into one payload int.

    Every leaf must be given and must fit its field (signed fields take negative ints); otherwise
    ``ValueError`` names the field, the value and the allowed range.
    """
    return PayloadCodec(layout).pack(value)


def unpack(layout, bits: int):
    """Inverse of :func:`pack`: nested dicts (structs) and lists (arrays) of ints."""
    return PayloadCodec(layout).unpack(bits)


class PayloadCodec:
    """:func:`pack`/:func:`unpack` for one layout, compiled once (drivers and monitors call it
    every beat, so the layout is not re-walked each time)."""

    def __init__(self, layout):
        norm = _normalise(layout)
        self.width = layout_width(norm)
        self.pack = _compile_pack(norm, ())
        self.unpack = _compile_unpack(norm)


def _leaf_range(width: int, signed: bool) -> tuple[int, int]:
    if signed and width:
        return -(1 << (width - 1)), (1 << (width - 1)) - 1
    return 0, (1 << width) - 1


def _compile_pack(norm, path: tuple):
    if isinstance(norm, (int, tuple)):
        signed = isinstance(norm, tuple)
        width = norm[1] if signed else norm
        lo, hi = _leaf_range(width, signed)
        mask = (1 << width) - 1
        name = ".".join(map(str, path)) or "payload"

        def leaf(value):
            value = int(value)
            if not lo <= value <= hi:
                raise ValueError(f"{name}={value} does not fit {width}-bit "
                                 f"{'signed' if signed else 'unsigned'} field ({lo}..{hi})")
            return value & mask
        return leaf
    if isinstance(norm, dict):
        keys, offset = [], 0
        for key, sub in norm.items():
            keys.append((key, offset, _compile_pack(sub, (*path, key))))
            offset += layout_width(sub)
    else:
        width = layout_width(norm.elem)
        keys = [(i, i * width, _compile_pack(norm.elem, (*path, i))) for i in range(norm.count)]

    def node(value):
        bits = 0
        for key, offset, sub in keys:
            try:
                item = value[key]
            except (KeyError, IndexError, TypeError) as exc:
                raise ValueError(
                    f"payload is missing field {'.'.join(map(str, (*path, key)))}") from exc
            bits |= sub(item) << offset
        return bits
    return node


def _compile_unpack(norm):
    if isinstance(norm, int):
        mask = (1 << norm) - 1
        return lambda bits: bits & mask
    if isinstance(norm, tuple):
        width = norm[1]
        mask, sign = (1 << width) - 1, (1 << (width - 1)) if width else 0

        def signed_leaf(bits):
            value = bits & mask
            return value - (1 << width) if width and value & sign else value
        return signed_leaf
    if isinstance(norm, dict):
        items, offset = [], 0
        for key, sub in norm.items():
            items.append((key, offset, _compile_unpack(sub)))
            offset += layout_width(sub)
        return lambda bits: {key: sub(bits >> off) for key, off, sub in items}
    width = layout_width(norm.elem)
    if isinstance(norm.elem, int):  # plain unsigned elements: the common, hot case
        mask, shifts = (1 << width) - 1, [i * width for i in range(norm.count)]
        return lambda bits: [(bits >> s) & mask for s in shifts]
    sub = _compile_unpack(norm.elem)
    return lambda bits: [sub(bits >> (i * width)) for i in range(norm.count)]


# --------------------------------------------------------------------------------------------
# random pause inserters
# --------------------------------------------------------------------------------------------

def pause_generator(spec, rng: random.Random) -> Callable[[], bool]:
    """A callable answering "pause this cycle?".

    ``spec`` is ``None``/``0`` (never), a probability in ``[0, 1]`` (drawn from ``rng``), an
    iterable of truthy values (cycled, like verilog-axi's ``set_pause_generator``) or a callable
    returning a truthy value.
    """
    if spec is None:
        return lambda: False
    if isinstance(spec, bool):
        raise TypeError(f"pause spec must be a probability, iterable or callable, not {spec!r}")
    if isinstance(spec, (int, float)):
        p = float(spec)
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"pause probability must be in [0, 1], not {spec}")
        if p == 0.0:
            return lambda: False
        return lambda: rng.random() < p
    if callable(spec):
        return lambda: bool(spec())
    if isinstance(spec, Iterable):
        it: Iterator = itertools.cycle(spec) if not isinstance(spec, Iterator) else spec
        return lambda: bool(next(it, False))
    raise TypeError(f"pause spec must be a probability, iterable or callable, not {spec!r}")


# --------------------------------------------------------------------------------------------
# clock, reset and the per-cycle loop
# --------------------------------------------------------------------------------------------

async def start_clock(dut, *, clk: str = "clk", rst: str | None = "rst", period_ns: int = 10,
                      reset_cycles: int = 2):
    """Start a clock on ``dut.<clk>`` and hold ``dut.<rst>`` (synchronous, active high) for
    ``reset_cycles`` rising edges; returns after the falling edge that releases reset."""
    from cocotb.clock import Clock
    from cocotb.triggers import FallingEdge, RisingEdge

    clock = getattr(dut, clk)
    reset = getattr(dut, rst) if rst else None
    if reset is not None:
        reset.value = 1
    Clock(clock, period_ns, unit="ns").start()
    for _ in range(reset_cycles):
        await RisingEdge(clock)
    await FallingEdge(clock)
    if reset is not None:
        reset.value = 0
    return clock


class CycleLoop:
    """Run every registered agent once per clock cycle, in two phases.

    Each cycle: after the falling edge every agent's ``drive(cycle)`` writes its inputs, then in
    ``ReadOnly`` every agent's ``sample(cycle)`` reads the settled signals. Drivers must not write
    in ``sample``. ``cycle`` counts falling edges since :meth:`start` (0 for the first).
    """

    def __init__(self, clk):
        self.clk = clk
        self.cycle = 0
        self._agents: list = []
        self._task = None

    def add(self, agent) -> Any:
        self._agents.append(agent)
        return agent

    def start(self) -> "CycleLoop":
        import cocotb

        if self._task is None:
            self._task = cocotb.start_soon(self._run())
        return self

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None

    async def _run(self) -> None:
        from cocotb.triggers import FallingEdge, ReadOnly

        falling, settled = FallingEdge(self.clk), ReadOnly()
        agents = self._agents
        while True:
            await falling
            cycle = self.cycle
            for agent in agents:
                agent.drive(cycle)
            await settled
            for agent in agents:
                agent.sample(cycle)
            self.cycle = cycle + 1

    async def wait_until(self, predicate: Callable[[], bool], *, timeout_cycles: int,
                         what: str = "condition") -> int:
        """Wait (in whole cycles) until ``predicate()`` holds; returns the cycle count then.

        Raises ``TimeoutError`` naming ``what`` after ``timeout_cycles`` cycles.
        """
        from cocotb.triggers import RisingEdge

        start = self.cycle
        edge = RisingEdge(self.clk)
        while not predicate():
            if self.cycle - start > timeout_cycles:
                raise TimeoutError(f"timed out after {timeout_cycles} cycles waiting for {what}")
            await edge
        return self.cycle


# --------------------------------------------------------------------------------------------
# driver and monitor
# --------------------------------------------------------------------------------------------

class StreamDriver:
    """Source for the stream port ``<name>`` of ``dut``: sends queued payloads in order.

    Parameters
    ----------
    dut : cocotb handle of the toplevel.
    name : str
        Stream member name (``<name>__valid`` etc.).
    loop : CycleLoop
        The per-cycle loop this driver joins.
    layout : optional
        Payload layout; when given, :meth:`send` accepts nested dicts/lists (packed by
        :func:`pack`), otherwise payload ints.
    idle : float, iterable or callable, optional
        Random idle-cycle inserter (see :func:`pause_generator`), consulted only between beats:
        once ``valid`` is raised it stays high until the beat is accepted, as the stream rules
        require.
    seed : int
        Seed of the idle inserter's private ``random.Random``.

    Attributes
    ----------
    accepted : int
        Beats accepted so far.
    accept_cycles : list of int
        ``loop.cycle`` of every accepted beat (for throughput measurements).
    """

    def __init__(self, dut, name: str, *, loop: CycleLoop, layout=None, idle=None, seed: int = 0):
        self.name = name
        self.valid = getattr(dut, f"{name}__valid")
        self.ready = getattr(dut, f"{name}__ready")
        self.payload = getattr(dut, f"{name}__payload")
        self.layout = layout
        self._codec = PayloadCodec(layout) if layout is not None else None
        self._pause = pause_generator(idle, random.Random(seed))
        self._queue: deque[int] = deque()
        self._current: int | None = None
        self._valid_level = 0
        self.accepted = 0
        self.accept_cycles: list[int] = []
        self.valid.value = 0
        loop.add(self)
        self.loop = loop

    def send(self, beat) -> None:
        """Queue one beat (payload int, or nested value when a layout was given)."""
        self._queue.append(self._codec.pack(beat) if self._codec is not None else int(beat))

    def extend(self, beats: Iterable) -> None:
        for beat in beats:
            self.send(beat)

    @property
    def pending(self) -> int:
        """Beats queued or presented but not yet accepted."""
        return len(self._queue) + (self._current is not None)

    def drive(self, cycle: int) -> None:
        if self._current is None and self._queue and not self._pause():
            self._current = self._queue.popleft()
            self.payload.value = self._current
        level = int(self._current is not None)
        if level != self._valid_level:
            self.valid.value = level
            self._valid_level = level

    def sample(self, cycle: int) -> None:
        if self._current is not None and self.ready.value:
            self._current = None
            self.accepted += 1
            self.accept_cycles.append(cycle)

    async def wait_done(self, *, timeout_cycles: int) -> int:
        """Wait until every queued beat has been accepted."""
        return await self.loop.wait_until(lambda: self.pending == 0, timeout_cycles=timeout_cycles,
                                          what=f"{self.name}: {self.pending} beats not accepted")


class StreamMonitor:
    """Observer (or sink, with ``sink=True``) of the stream port ``<name>`` of ``dut``.

    Every beat with ``valid`` and ``ready`` both high is unpacked (when ``layout`` is given),
    appended to :attr:`beats` and passed to each callback in :attr:`callbacks`.

    Parameters
    ----------
    dut, name, loop, layout : as for :class:`StreamDriver`.
    sink : bool
        Drive ``<name>__ready`` (the monitor is the consumer). Otherwise only observe.
    backpressure : float, iterable or callable, optional
        When ``sink``: random back-pressure inserter (``ready`` low on cycles it answers true).
    seed : int
        Seed of the back-pressure inserter.
    callback : callable, optional
        Called with each accepted beat (e.g. a model's input or a checker's ``observe``).
    check_protocol : bool
        Record violations of "``valid`` and ``payload`` stay stable until accepted" in
        :attr:`protocol_errors`.
    """

    def __init__(self, dut, name: str, *, loop: CycleLoop, layout=None, sink: bool = False,
                 backpressure=None, seed: int = 0, callback: Callable | None = None,
                 check_protocol: bool = True):
        self.name = name
        self.valid = getattr(dut, f"{name}__valid")
        self.ready = getattr(dut, f"{name}__ready")
        self.payload = getattr(dut, f"{name}__payload")
        self.layout = layout
        self._codec = PayloadCodec(layout) if layout is not None else None
        self.sink = sink
        self._pause = pause_generator(backpressure, random.Random(seed))
        self._ready_level = None
        self.callbacks: list[Callable] = [callback] if callback else []
        self.check_protocol = check_protocol
        self._held: int | None = None  # payload of a beat offered but not yet taken
        self.beats: list = []
        self.accept_cycles: list[int] = []
        self.protocol_errors: list[str] = []
        if sink:
            self.ready.value = 0
            self._ready_level = 0
        loop.add(self)
        self.loop = loop

    def drive(self, cycle: int) -> None:
        if self.sink:
            level = 0 if self._pause() else 1
            if level != self._ready_level:
                self.ready.value = level
                self._ready_level = level

    def sample(self, cycle: int) -> None:
        valid = bool(self.valid.value)
        if self.check_protocol and self._held is not None:
            if not valid:
                self.protocol_errors.append(f"cycle {cycle}: {self.name} dropped valid before ready")
            elif self.payload.value.to_unsigned() != self._held:
                self.protocol_errors.append(f"cycle {cycle}: {self.name} changed payload before ready")
        if not valid:
            self._held = None
            return
        if self.ready.value:
            self._held = None
            bits = self.payload.value.to_unsigned()
            beat = self._codec.unpack(bits) if self._codec is not None else bits
            self.beats.append(beat)
            self.accept_cycles.append(cycle)
            for cb in self.callbacks:
                cb(beat)
        elif self.check_protocol:
            self._held = self.payload.value.to_unsigned()

    async def wait_count(self, count: int, *, timeout_cycles: int) -> int:
        """Wait until ``count`` beats have been accepted in total."""
        return await self.loop.wait_until(
            lambda: len(self.beats) >= count, timeout_cycles=timeout_cycles,
            what=f"{self.name}: {count} beats (got {len(self.beats)})")


# --------------------------------------------------------------------------------------------
# scoreboard
# --------------------------------------------------------------------------------------------

def _diff(expected, observed, path=()) -> list[str]:
    """Readable list of the leaves where two nested dict/list values differ."""
    if isinstance(expected, dict) and isinstance(observed, dict):
        out = []
        for key in expected.keys() | observed.keys():
            out += _diff(expected.get(key), observed.get(key), (*path, key))
        return out
    if (isinstance(expected, (list, tuple)) and isinstance(observed, (list, tuple))
            and len(expected) == len(observed)):
        out = []
        for i, (e, o) in enumerate(zip(expected, observed)):
            out += _diff(e, o, (*path, i))
        return out
    if expected != observed:
        return [f"{'.'.join(map(str, path)) or 'value'}: expected {expected!r}, got {observed!r}"]
    return []


class InOrderChecker:
    """Scoreboard for an in-order stream: expected items (from a model) vs observed items.

    Feed :meth:`expect` from the model and :meth:`observe` from the output monitor (in either
    order in time; observed items that arrive before their expectation wait in a queue). Call
    :meth:`assert_done` at the end.

    Parameters
    ----------
    name : str
        Used in the report.
    max_reports : int
        How many mismatches are kept with context (the count covers all).
    """

    def __init__(self, name: str, *, max_reports: int = 5):
        self.name = name
        self.max_reports = max_reports
        self.expected: deque = deque()
        self.observed_early: deque = deque()
        self.matched = 0
        self.errors = 0
        self.index = 0
        self.reports: list[str] = []
        self._recent: deque = deque(maxlen=2)

    def expect(self, item) -> None:
        if self.observed_early:
            self._compare(item, self.observed_early.popleft())
        else:
            self.expected.append(item)

    def expect_all(self, items: Iterable) -> None:
        for item in items:
            self.expect(item)

    def observe(self, item) -> None:
        if self.expected:
            self._compare(self.expected.popleft(), item)
        else:
            self.observed_early.append(item)

    def _compare(self, expected, observed) -> None:
        if expected == observed:
            self.matched += 1
        else:
            self.errors += 1
            if len(self.reports) < self.max_reports:
                context = "; ".join(f"#{i}: {v!r}" for i, v in self._recent)
                self.reports.append(
                    f"item #{self.index}: " + "; ".join(_diff(expected, observed))
                    + (f" (previous: {context})" if context else ""))
        self._recent.append((self.index, observed))
        self.index += 1

    def report(self) -> str:
        lines = [f"{self.name}: {self.matched} matched, {self.errors} mismatched, "
                 f"{len(self.expected)} expected but not seen, "
                 f"{len(self.observed_early)} seen but not expected"]
        lines += [f"  {r}" for r in self.reports]
        if self.expected:
            lines.append(f"  first missing: {self.expected[0]!r}")
        if self.observed_early:
            lines.append(f"  first unexpected: {self.observed_early[0]!r}")
        return "\n".join(lines)

    def assert_done(self) -> None:
        """Raise ``AssertionError`` with :meth:`report` unless every item matched (and at least
        one item was checked: a scoreboard that saw nothing proves nothing)."""
        if self.errors or self.expected or self.observed_early or self.matched == 0:
            raise AssertionError(self.report())
