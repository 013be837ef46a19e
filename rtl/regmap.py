"""The accelerator's control/status register map — declared once.

Every register is declared here with its fields and access mode; addresses are *derived* (in
declaration order, 4 bytes apart), never hand-numbered. The host driver (``nms.sw.driver``) and
every transport use this declaration, and ``host_constants()`` renders the same map as C/Python
constants for firmware, so the map can never disagree between hardware and software.

Pure Python: usable without any hardware tool.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["Field", "Register", "REGISTERS", "REGMAP", "ADDR", "host_constants"]

DATA_WIDTH = 32


@dataclass(frozen=True)
class Field:
    name: str
    width: int
    doc: str = ""


@dataclass(frozen=True)
class Register:
    """One 32-bit register; ``access`` is "rw" (host writes, device reads), "r" (device
    status/counters) or "w1s" (write 1 to trigger; reads as 0)."""

    name: str
    access: str
    doc: str
    fields: tuple[Field, ...] = field(default_factory=tuple)

    def __post_init__(self):
        if self.access not in ("rw", "r", "w1s"):
            raise ValueError(f"register {self.name}: access must be rw, r or w1s, not {self.access!r}")
        fields = self.fields or (Field("value", DATA_WIDTH),)
        object.__setattr__(self, "fields", fields)
        if sum(f.width for f in fields) > DATA_WIDTH:
            raise ValueError(f"register {self.name}: fields exceed {DATA_WIDTH} bits")

    def offsets(self) -> dict[str, tuple[int, int]]:
        """field name -> (lsb, width), fields packed LSB-first in declaration order."""
        out, lsb = {}, 0
        for f in self.fields:
            out[f.name] = (lsb, f.width)
            lsb += f.width
        return out

    def pack(self, **values) -> int:
        word = 0
        offs = self.offsets()
        for name, v in values.items():
            if name not in offs:
                raise ValueError(f"register {self.name} has no field {name!r}; fields: {list(offs)}")
            lsb, width = offs[name]
            if not 0 <= int(v) < (1 << width):
                raise ValueError(f"{self.name}.{name} = {v} does not fit in {width} bits")
            word |= int(v) << lsb
        return word

    def unpack(self, word: int) -> dict[str, int]:
        return {n: (word >> lsb) & ((1 << w) - 1) for n, (lsb, w) in self.offsets().items()}


REGISTERS: tuple[Register, ...] = (
    Register("ID", "r", "magic 0x4E4D5331 ('NMS1')"),
    Register("CTRL", "w1s", "job control", (Field("start", 1, "start the job on the loaded chunk"),
                                            Field("abort", 1, "abort the running job"))),
    Register("STATUS", "r", "job status", (Field("busy", 1), Field("done", 1),
                                           Field("error", 1, "misuse: start while busy, bad params"))),
    Register("SRC_ADDR", "rw", "DDR byte address of the chunk's first vector (row-major uint8)"),
    Register("DST_ADDR", "rw", "DDR byte address where selected local indices (u32) are written"),
    Register("N", "rw", "points in the chunk (2..capacity)"),
    Register("DIM", "rw", "elements per vector (1..max_dim)"),
    Register("BUDGET", "rw", "exemplars to select (1..N)"),
    Register("H_TARGET", "rw", "target entropy log2(perplexity), Q8.16"),
    Register("ITER", "rw", "embedding schedule", (Field("n_iter", 16), Field("exaggeration_iters", 16))),
    Register("OPT", "rw", "optimiser", (Field("learning_rate", 12, "Q4.8"),
                                        Field("exaggeration_shift", 3),
                                        Field("allocation", 1, "0 adaptive, 1 proportional"),
                                        Field("search", 1, "0 robust, 1 bisect"))),
    Register("MOMENTUM", "rw", "momentum", (Field("early", 8, "Q0.8"), Field("late", 8, "Q0.8"),
                                            Field("switch", 16, "iteration of the change"))),
    Register("SEED", "rw", "seed of the initialisation and negative-sampling hash"),
    Register("RESULT_COUNT", "r", "indices written by the last job"),
    Register("CYCLES_LO", "r", "clock cycles of the last job, low word"),
    Register("CYCLES_HI", "r", "clock cycles of the last job, high word"),
    Register("BYTES_READ_LO", "r", "near-memory bytes read by the last job, low word"),
    Register("BYTES_READ_HI", "r", "near-memory bytes read by the last job, high word"),
    Register("BYTES_WRITTEN", "r", "near-memory bytes written by the last job"),
)

ID_MAGIC = 0x4E4D5331
#: name -> Register; ADDR: name -> byte address (derived)
REGMAP = {r.name: r for r in REGISTERS}
ADDR = {r.name: 4 * i for i, r in enumerate(REGISTERS)}
SEARCH_CODES = {"robust": 0, "bisect": 1}
ALLOCATION_CODES = {"adaptive": 0, "proportional": 1}


def host_constants(lang: str = "c") -> str:
    """Render the register map as C header or Python constants (addresses, field shifts/masks)."""
    lines = []
    for r in REGISTERS:
        if lang == "c":
            lines.append(f"#define NMS_{r.name}_ADDR 0x{ADDR[r.name]:02X}u  /* {r.access}: {r.doc} */")
        else:
            lines.append(f"{r.name}_ADDR = 0x{ADDR[r.name]:02X}  # {r.access}: {r.doc}")
        if len(r.fields) > 1:
            for name, (lsb, width) in r.offsets().items():
                mask = ((1 << width) - 1) << lsb
                if lang == "c":
                    lines.append(f"#define NMS_{r.name}_{name.upper()}_SHIFT {lsb}u")
                    lines.append(f"#define NMS_{r.name}_{name.upper()}_MASK 0x{mask:08X}u")
                else:
                    lines.append(f"{r.name}_{name.upper()}_SHIFT = {lsb}")
                    lines.append(f"{r.name}_{name.upper()}_MASK = 0x{mask:08X}")
    return "\n".join(lines) + "\n"
