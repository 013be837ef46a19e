"""Generic board top: put any accelerator block on a board so that none of it is optimised away.

A block built alone has no pins: synthesis would remove all of it. :class:`PortExerciser` wraps an
arbitrary :class:`amaranth.lib.wiring.Component` so that

* every input port bit is a flip-flop of a shift chain fed by a maximal-length LFSR, so each bit
  carries its own pseudo-random sequence (stream ``valid``/``ready`` toggle at random too, so the
  handshake logic is exercised);
* every output port bit is captured in a flip-flop and the captured bits are XOR-folded, through
  a pipelined tree of at most ``fold_fan_in`` inputs per stage, into one registered bit.

Both boundaries are registered and the glue between flip-flops is at most one LUT deep, so the
Fmax nextpnr reports is that of the block itself, not of the wrapper. :class:`BoardTop` then drives
a board LED from that bit. The same top serves every block of the project.
"""

# No `from __future__ import annotations`: wiring.Component reads its ports from real annotations.
from amaranth.hdl import Cat, Elaboratable, Module, Signal, Value
from amaranth.lib import io, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["PortExerciser", "BoardTop", "LFSR_WIDTH", "LFSR_TAPS"]

#: Width and taps (1-based bit positions, x^32 + x^22 + x^2 + x + 1) of the stimulus LFSR; the
#: polynomial is primitive, so the sequence has period 2**32 - 1.
LFSR_WIDTH = 32
LFSR_TAPS = (32, 22, 2, 1)


def _port_bits(block: wiring.Component):
    """Split the block's port members into (inputs, outputs) as lists of ``(path, Value)``."""
    inputs, outputs = [], []
    for path, member, value in block.signature.flatten(block):
        bits = Value.cast(value)
        if len(bits) == 0:
            continue
        name = ".".join(str(p) for p in path)
        (inputs if member.flow == In else outputs).append((name, bits))
    return inputs, outputs


class PortExerciser(wiring.Component):
    """Drive a block's inputs with pseudo-random bits and fold its outputs into one bit.

    Parameters
    ----------
    block : wiring.Component
        The block under test. It becomes the ``block`` submodule and runs in the ``sync`` domain.
    fold_fan_in : int
        Number of bits XOR-ed per register stage of the output fold (2..6). 4 matches the 4-input
        LUTs of iCE40 and ECP5, so every stage is one LUT deep.

    Attributes
    ----------
    input_width : int
        Number of block input bits driven from the LFSR chain.
    output_width : int
        Number of block output bits folded into ``observed``.
    fold_stages : int
        Register stages of the XOR fold after the output capture register.
    input_names, output_names : list of str
        Dotted paths of the block's input and output port members, in bit order.

    Members
    -------
    observed : Out(1)
        Registered XOR of all block output bits (delayed by ``fold_stages + 1`` cycles).

    Raises
    ------
    TypeError
        If ``block`` is not a ``wiring.Component`` or ``fold_fan_in`` is not an int.
    ValueError
        If the block has no output bits (nothing would be observable) or ``fold_fan_in`` is out of
        range.
    """

    observed: Out(1)

    def __init__(self, block, *, fold_fan_in: int = 4):
        if not isinstance(block, wiring.Component):
            raise TypeError(f"block must be an amaranth.lib.wiring.Component, not {block!r}")
        if not isinstance(fold_fan_in, int) or isinstance(fold_fan_in, bool):
            raise TypeError(f"fold_fan_in must be an int, not {fold_fan_in!r}")
        if not 2 <= fold_fan_in <= 6:
            raise ValueError(f"fold_fan_in must be between 2 and 6, not {fold_fan_in}")
        inputs, outputs = _port_bits(block)
        if not outputs:
            raise ValueError(
                f"block {type(block).__name__} has no output port bits; a board top needs at "
                "least one output to keep the block from being optimised away"
            )
        self.block = block
        self.fold_fan_in = fold_fan_in
        self._inputs = inputs
        self._outputs = outputs
        self.input_names = [name for name, _ in inputs]
        self.output_names = [name for name, _ in outputs]
        self.input_width = sum(len(bits) for _, bits in inputs)
        self.output_width = sum(len(bits) for _, bits in outputs)
        stages, width = 0, self.output_width
        while width > 1:
            width = -(-width // fold_fan_in)
            stages += 1
        self.fold_stages = stages
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        m.submodules.block = self.block

        if self.input_width:
            lfsr = Signal(LFSR_WIDTH, init=1)
            feedback = 0
            for tap in LFSR_TAPS:
                feedback ^= lfsr[tap - 1]
            m.d.sync += lfsr.eq(Cat(feedback, lfsr[:-1]))
            # A shift chain, not copies of LFSR bits: every input bit is its own flop, so the
            # synthesiser cannot merge inputs and simplify e.g. (a - a) in the block.
            stimulus = Signal(self.input_width, init=1)
            m.d.sync += stimulus.eq(Cat(lfsr[-1], stimulus[:-1]))
            offset = 0
            for _, bits in self._inputs:
                m.d.comb += bits.eq(stimulus[offset:offset + len(bits)])
                offset += len(bits)

        captured = Signal(self.output_width)
        m.d.sync += captured.eq(Cat(*(bits for _, bits in self._outputs)))
        level = captured
        stage = 0
        while len(level) > 1:
            groups = [level[i:i + self.fold_fan_in]
                      for i in range(0, len(level), self.fold_fan_in)]
            folded = Signal(len(groups), name=f"fold{stage}")
            m.d.sync += folded.eq(Cat(*(group.xor() for group in groups)))
            level = folded
            stage += 1
        m.d.comb += self.observed.eq(level[0])
        return m


class BoardTop(Elaboratable):
    """Board top: a :class:`PortExerciser` around ``block`` driving LED 0 of the board.

    A plain ``Elaboratable``, not a ``Component``: a top has no ports, only platform resources.

    Parameters
    ----------
    block : wiring.Component
        The block to build.
    led : str
        Name of the LED resource to drive (index 0), e.g. ``"led"``.
    """

    def __init__(self, block, *, led: str = "led"):
        if not isinstance(led, str):
            raise TypeError(f"led must be a resource name string, not {led!r}")
        self.exerciser = PortExerciser(block)
        self.led = led

    def elaborate(self, platform):
        m = Module()
        m.submodules.exerciser = self.exerciser
        if platform is None:
            raise TypeError("BoardTop needs a platform (it drives a board LED); "
                            "simulate PortExerciser instead")
        m.submodules.led = led = io.Buffer("o", platform.request(self.led, 0, dir="-"))
        m.d.comb += led.o.eq(self.exerciser.observed)
        return m
