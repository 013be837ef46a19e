"""Energy / traffic model: what crossing the PCB costs vs reading the dataset near memory.

Training on the full dataset moves every image over the off-chip (PCB) link once per epoch. With
NMS the near-memory engine reads the dataset ``passes`` times beside the DRAM (no board traces),
and only the selected coreset (plus its indices) crosses the link, once per epoch::

    E_full = epochs * N * bytes * 8 * e_pcb
    E_nms  = passes * N * bytes * 8 * e_near + (epochs * M * bytes + M * index_bytes) * 8 * e_pcb

On the training side, NVM weight cells cost ``e_nvm_write`` per bit written and ``e_nvm_read`` per
bit read, so the write counts from :mod:`nms.sw.lrt` convert to energy with :func:`nvm_energy_pj`.
Measured hardware counters (near-memory bytes read) can replace the modelled near bytes.

The **selection** itself (issue 11) is priced term by term by :func:`selection_energy` from the
counts of :func:`nms.sw.dataflow.chunk_counts` / ``dataset_counts``: near-memory DDR bytes,
bits read and written in every on-chip memory (per memory, at a per-bit energy that grows with
the memory's size), multiplies and adds by operand width per stage (the 8-bit distance MACs,
the affinity and embedding arithmetic), and :func:`training_comparison` adds the PCB traffic
of the epochs and the break-even epoch. Every figure is an :class:`EnergyParams` field with its
source; ``--energy-param NAME=VALUE`` (:func:`parse_energy_params`) overrides any of them.
See ``docs/energy.md``.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import asdict, dataclass

from nms.verif.models.budget import budget as selection_budget
from nms.verif.models.budget import validate_ratio

__all__ = ["EnergyParams", "Traffic", "full_training_traffic", "nms_traffic", "link_energy_pj",
           "nvm_energy_pj", "compare_training", "sram_pj_per_bit", "mult_pj", "add_pj",
           "selection_energy", "training_comparison", "cumulative_energy", "selection_report",
           "selection_markdown",
           "parse_energy_params", "add_energy_arguments"]


@dataclass(frozen=True)
class EnergyParams:
    """Energy per bit of each kind of access, in pJ/bit.

    Parameters
    ----------
    e_pcb : float
        Off-chip DRAM access over the PCB link. Default 20 pJ/bit: Horowitz, "Computing's energy
        problem", ISSCC 2014 (45 nm), ~640 pJ per 32-bit DRAM access; commonly cited DDR3/4
        interface costs are 15-20 pJ/bit (research notes nms.md section 4.3). A literature
        figure, not the NMS paper's (whose full text is not available).
    e_near : float
        Reading DRAM into logic placed beside it, without driving the board traces. Default
        4 pJ/bit, the HBM2-class short-reach figure (I/O plus core, nms.md section 4.3) used as a
        stand-in. PLACEHOLDER: the real fraction of e_pcb depends on the design and is unknown.
    e_nvm_write : float
        NVM (RRAM) weight write. Default 10.9 pJ/bit, the 18 KB RRAM macro quoted by Gural et al.
        (research notes lrt.md section 1).
    e_nvm_read : float
        NVM (RRAM) weight read. Default 1.76 pJ/bit, same source.
    weight_bits : int
        Bits per weight cell (8, the NVM weight format of the trainers).
    e_sram_8k : float
        On-chip SRAM access per bit for memories up to 8 KB: 0.156 pJ/bit = 5 pJ per 32-bit
        read of an 8 kB SRAM (Horowitz 2014; research note soc-and-sim.md section 6).
    e_sram_32k, e_sram_1m : float
        The same for 32 KB and 1 MB: 20 pJ and 100 pJ per 64-bit access = 0.3125 and
        1.5625 pJ/bit (Horowitz 2014, the same table's cache rows; not in the research note).
        Between the points the per-bit energy is interpolated linearly in log2(size);
        beyond 1 MB it is extrapolated on the 32 KB-1 MB slope; below 8 KB it is the 8 KB figure
        (no cheaper register-file figure is assumed).
    sram_write_factor : float
        Energy of a written bit relative to a read bit (1.0: no separate figure is quoted).
    e_add8, e_add32 : float
        8-bit and 32-bit integer add, 0.03 and 0.1 pJ (Horowitz 2014, research note). An add of
        w bits costs the straight line through these two points.
    e_mult8, e_mult32 : float
        8x8 and 32x32 integer multiply, 0.2 pJ (research note) and 3.1 pJ (Horowitz 2014, not
        in the research note). An a x b multiply costs the straight line through these two
        points in the product a*b (array multipliers grow with the partial-product count).
    """

    e_pcb: float = 20.0
    e_near: float = 4.0
    e_nvm_write: float = 10.9
    e_nvm_read: float = 1.76
    weight_bits: int = 8
    e_sram_8k: float = 5.0 / 32
    e_sram_32k: float = 20.0 / 64
    e_sram_1m: float = 100.0 / 64
    sram_write_factor: float = 1.0
    e_add8: float = 0.03
    e_add32: float = 0.1
    e_mult8: float = 0.2
    e_mult32: float = 3.1

    #: which defaults are placeholders rather than quoted measurements
    PLACEHOLDERS = ("e_near", "sram_write_factor")

    def __post_init__(self):
        for name in ("e_pcb", "e_near", "e_nvm_write", "e_nvm_read", "e_sram_8k", "e_sram_32k",
                     "e_sram_1m", "sram_write_factor", "e_add8", "e_add32", "e_mult8",
                     "e_mult32"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, numbers.Real) or not v >= 0 \
                    or not math.isfinite(v):
                raise ValueError(f"EnergyParams.{name} must be a finite number >= 0 pJ/bit, got {v!r}")
        if not self.e_sram_8k <= self.e_sram_32k <= self.e_sram_1m:
            raise ValueError("EnergyParams: e_sram_8k <= e_sram_32k <= e_sram_1m is required, got "
                             f"{self.e_sram_8k}, {self.e_sram_32k}, {self.e_sram_1m}")
        if isinstance(self.weight_bits, bool) or not isinstance(self.weight_bits, numbers.Integral) \
                or self.weight_bits < 1:
            raise ValueError(f"EnergyParams.weight_bits must be an integer >= 1, got {self.weight_bits!r}")

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Traffic:
    """Bytes moved near memory and over the off-chip (PCB) link."""

    near_bytes: int
    pcb_bytes: int

    def energy_pj(self, params: EnergyParams | None = None) -> float:
        """Link energy of this traffic in pJ (see :func:`link_energy_pj`)."""
        return link_energy_pj(near_bytes=self.near_bytes, pcb_bytes=self.pcb_bytes, params=params)


def _count(name: str, value, lo: int = 0) -> int:
    # numbers.Integral admits NumPy integers (hardware counters often arrive as np.int64).
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < lo:
        raise ValueError(f"{name} must be an integer >= {lo}, got {value!r}")
    return int(value)


def link_energy_pj(*, near_bytes: int, pcb_bytes: int, params: EnergyParams | None = None) -> float:
    """``near_bytes * 8 * e_near + pcb_bytes * 8 * e_pcb`` in pJ.

    Parameters
    ----------
    near_bytes, pcb_bytes : int
        Bytes read near memory (a hardware counter where the backend has one) and bytes that
        cross the PCB link.
    params : EnergyParams, optional
        Per-bit energies (defaults documented in :class:`EnergyParams`).
    """
    p = params or EnergyParams()
    near_bytes = _count("near_bytes", near_bytes)
    pcb_bytes = _count("pcb_bytes", pcb_bytes)
    return 8.0 * (near_bytes * p.e_near + pcb_bytes * p.e_pcb)


def full_training_traffic(*, n_samples: int, bytes_per_sample: int, epochs: int) -> Traffic:
    """Baseline: every sample crosses the PCB once per epoch; nothing is read near memory."""
    n = _count("n_samples", n_samples, 1)
    b = _count("bytes_per_sample", bytes_per_sample, 1)
    e = _count("epochs", epochs, 1)
    return Traffic(near_bytes=0, pcb_bytes=e * n * b)


def _budget(n: int, ratio, n_selected) -> int:
    if n_selected is not None:
        m = _count("n_selected", n_selected, 1)
        if m > n:
            raise ValueError(f"n_selected must be <= n_samples={n}, got {m}")
        return m
    if ratio is None:
        raise ValueError("give either ratio (0 < ratio <= 1) or n_selected")
    # the same exact half-up rule (and ratio validation) as the selection budgets
    return selection_budget(n, validate_ratio(ratio))


def nms_traffic(*, n_samples: int, bytes_per_sample: int, epochs: int, ratio: float | None = None,
                n_selected: int | None = None, passes: int = 1, index_bytes: int = 4,
                near_bytes: int | None = None) -> Traffic:
    """NMS: ``passes`` near-memory reads of the dataset, then ``epochs`` over the coreset only.

    Parameters
    ----------
    n_samples, bytes_per_sample, epochs : int
        Dataset size, bytes per sample (e.g. 784 for a 28 x 28 uint8 image), training epochs.
    ratio : float, optional
        Coreset fraction; ``M = floor(ratio * N + 0.5)``. Or give ``n_selected`` exactly.
    n_selected : int, optional
        Exact coreset size M (overrides ``ratio``).
    passes : int
        Near-memory passes over the dataset (the distance engine may stream it more than once).
    index_bytes : int
        Bytes per selected index sent to the host once (default 4).
    near_bytes : int, optional
        Measured near-memory bytes (hardware counter); replaces ``passes * N * bytes``.
    """
    n = _count("n_samples", n_samples, 1)
    b = _count("bytes_per_sample", bytes_per_sample, 1)
    e = _count("epochs", epochs, 1)
    passes = _count("passes", passes, 1)
    index_bytes = _count("index_bytes", index_bytes, 0)
    m = _budget(n, ratio, n_selected)
    near = passes * n * b if near_bytes is None else _count("near_bytes", near_bytes)
    return Traffic(near_bytes=near, pcb_bytes=e * m * b + m * index_bytes)


def nvm_energy_pj(*, weight_writes: int, weight_reads: int = 0,
                  params: EnergyParams | None = None) -> float:
    """NVM energy of ``weight_writes`` cell writes and ``weight_reads`` cell reads, in pJ.

    Each cell is ``weight_bits`` wide: ``(writes * e_nvm_write + reads * e_nvm_read) * bits``.
    ``weight_writes`` is e.g. the ``writes["total"]`` of :func:`nms.sw.lrt.train_sks`.
    """
    p = params or EnergyParams()
    w = _count("weight_writes", weight_writes)
    r = _count("weight_reads", weight_reads)
    return p.weight_bits * (w * p.e_nvm_write + r * p.e_nvm_read)


def compare_training(*, n_samples: int, bytes_per_sample: int, epochs: int,
                     ratio: float | None = None, n_selected: int | None = None, passes: int = 1,
                     index_bytes: int = 4, near_bytes: int | None = None,
                     params: EnergyParams | None = None) -> dict:
    """Traffic and link energy of full-dataset training vs NMS, and the saving.

    Returns
    -------
    dict
        ``full`` and ``nms`` (near/pcb bytes, energy in pJ), ``saving_ratio`` = E_full / E_nms,
        ``saving_fraction`` = 1 - E_nms / E_full, ``pcb_bytes_ratio``, and the parameters used.
    """
    p = params or EnergyParams()
    full = full_training_traffic(n_samples=n_samples, bytes_per_sample=bytes_per_sample,
                                 epochs=epochs)
    nms = nms_traffic(n_samples=n_samples, bytes_per_sample=bytes_per_sample, epochs=epochs,
                      ratio=ratio, n_selected=n_selected, passes=passes,
                      index_bytes=index_bytes, near_bytes=near_bytes)
    e_full, e_nms = full.energy_pj(p), nms.energy_pj(p)
    return {
        "full": {"near_bytes": full.near_bytes, "pcb_bytes": full.pcb_bytes, "energy_pj": e_full},
        "nms": {"near_bytes": nms.near_bytes, "pcb_bytes": nms.pcb_bytes, "energy_pj": e_nms},
        "saving_ratio": e_full / e_nms if e_nms > 0 else math.inf,
        "saving_fraction": 1.0 - e_nms / e_full,
        "pcb_bytes_ratio": full.pcb_bytes / nms.pcb_bytes,
        "params": p.as_dict(),
        "placeholders": list(EnergyParams.PLACEHOLDERS),
    }


# ------------------------------------------------------------------------------------------------
# the selection, term by term (issue 11)


def sram_pj_per_bit(size_bytes: int, params: EnergyParams | None = None) -> float:
    """Per-bit access energy of an on-chip memory of ``size_bytes`` (see :class:`EnergyParams`)."""
    p = params or EnergyParams()
    size = _count("size_bytes", size_bytes, 1)
    x = math.log2(size / 8192)
    if x <= 0:
        return p.e_sram_8k
    if x <= 2:   # 8 KB .. 32 KB
        return p.e_sram_8k + (p.e_sram_32k - p.e_sram_8k) * x / 2
    return p.e_sram_32k + (p.e_sram_1m - p.e_sram_32k) * (x - 2) / 5   # 32 KB .. 1 MB (5 octaves)


def add_pj(width: int, params: EnergyParams | None = None) -> float:
    """One ``width``-bit add: the line through (8, e_add8) and (32, e_add32)."""
    p = params or EnergyParams()
    w = _count("width", width, 1)
    return max(0.0, p.e_add8 + (p.e_add32 - p.e_add8) * (w - 8) / 24)


def mult_pj(a: int, b: int, params: EnergyParams | None = None) -> float:
    """One ``a x b``-bit multiply: the line through (64, e_mult8) and (1024, e_mult32) in a*b."""
    p = params or EnergyParams()
    ab = _count("a", a, 1) * _count("b", b, 1)
    return max(0.0, p.e_mult8 + (p.e_mult32 - p.e_mult8) * (ab - 64) / 960)


def selection_energy(counts: dict, params: EnergyParams | None = None) -> dict:
    """Energy of a selection in pJ, per term, from :func:`nms.sw.dataflow.chunk_counts` or
    ``dataset_counts``.

    Returns
    -------
    dict
        ``terms``: ``ddr_read``, ``ddr_write``, ``sram:<memory>`` (reads + writes of that
        memory), ``ops:<stage>`` (that stage's multiplies and adds); ``groups``: ``ddr``,
        ``onchip_memory``, ``compute``; ``total``.
    """
    p = params or EnergyParams()
    terms = {"ddr_read": 8.0 * p.e_near * counts["ddr"]["read_bytes"],
             "ddr_write": 8.0 * p.e_near * counts["ddr"]["write_bytes"]}
    for name, m in sorted(counts["sram"].items()):
        e = sram_pj_per_bit(m["size_bytes"], p)
        terms[f"sram:{name}"] = e * (m["read_bits"] + p.sram_write_factor * m["write_bits"])
    for stage, o in counts["ops"].items():
        e = sum(cnt * mult_pj(*map(int, k.split("x")), p) for k, cnt in o["mult"].items())
        e += sum(cnt * add_pj(int(w), p) for w, cnt in o["add"].items())
        terms[f"ops:{stage}"] = e
    groups = {"ddr": terms["ddr_read"] + terms["ddr_write"],
              "onchip_memory": sum(v for k, v in terms.items() if k.startswith("sram:")),
              "compute": sum(v for k, v in terms.items() if k.startswith("ops:"))}
    return {"terms": terms, "groups": groups, "total": sum(groups.values())}


def training_comparison(*, n_samples: int, n_selected: int, bytes_per_sample: int,
                        selection_pj: float, epochs: int, index_bytes: int = 4,
                        params: EnergyParams | None = None) -> dict:
    """Full-data training vs NMS, with the selection's whole energy (not only its link bytes).

    ``E_full(e) = e·N·B·8·e_pcb``; ``E_nms(e) = selection + (e·M·B + M·index_bytes)·8·e_pcb``.
    Returns both at ``epochs``, the saving, the selection in units of one full-data epoch of
    PCB traffic, and the break-even epoch ``(selection + M·index_bytes·8·e_pcb) /
    ((N - M)·B·8·e_pcb)``.
    """
    p = params or EnergyParams()
    n = _count("n_samples", n_samples, 1)
    m = _count("n_selected", n_selected, 1)
    if m > n:
        raise ValueError(f"n_selected must be <= n_samples={n}, got {m}")
    b = _count("bytes_per_sample", bytes_per_sample, 1)
    e = _count("epochs", epochs, 1)
    ib = _count("index_bytes", index_bytes, 0)
    if not (isinstance(selection_pj, numbers.Real) and selection_pj >= 0 and math.isfinite(selection_pj)):
        raise ValueError(f"selection_pj must be a finite number >= 0, got {selection_pj!r}")
    epoch_pj = 8.0 * p.e_pcb * n * b
    once = float(selection_pj) + 8.0 * p.e_pcb * m * ib
    per_epoch_saving = 8.0 * p.e_pcb * (n - m) * b
    e_full = e * epoch_pj
    e_nms = once + e * 8.0 * p.e_pcb * m * b
    return {"epochs": e, "full_pj": e_full, "nms_pj": e_nms,
            "saving_fraction": 1.0 - e_nms / e_full,
            "selection_pj": float(selection_pj), "full_epoch_pj": epoch_pj,
            "selection_in_epochs": float(selection_pj) / epoch_pj,
            "breakeven_epoch": once / per_epoch_saving if per_epoch_saving > 0 else math.inf}


def cumulative_energy(*, n_samples: int, n_selected: int, bytes_per_sample: int,
                      selection_pj: float, epochs: int, index_bytes: int = 4,
                      params: EnergyParams | None = None) -> dict:
    """Cumulative energy after 0..epochs epochs for full-data training and NMS (lists, pJ)."""
    rows = [training_comparison(n_samples=n_samples, n_selected=n_selected,
                                bytes_per_sample=bytes_per_sample, selection_pj=selection_pj,
                                epochs=e, index_bytes=index_bytes, params=params)
            for e in range(1, _count("epochs", epochs, 1) + 1)]
    once = rows[0]["nms_pj"] - rows[0]["full_epoch_pj"] * n_selected / n_samples
    return {"epoch": list(range(0, epochs + 1)),
            "full_pj": [0.0] + [r["full_pj"] for r in rows],
            "nms_pj": [once] + [r["nms_pj"] for r in rows]}


def parse_energy_params(items, base: EnergyParams | None = None) -> EnergyParams:
    """``["NAME=VALUE", ...]`` -> :class:`EnergyParams` with those fields overridden; an unknown
    name or a bad value raises ``ValueError`` naming it."""
    base = base or EnergyParams()
    fields = base.as_dict()
    changes = {}
    for item in items or ():
        name, sep, value = str(item).partition("=")
        name = name.strip()
        if not sep or name not in fields:
            raise ValueError(f"--energy-param {item!r}: expected NAME=VALUE with NAME one of "
                             f"{sorted(fields)}")
        try:
            changes[name] = int(value) if name == "weight_bits" else float(value)
        except ValueError:
            raise ValueError(f"--energy-param {name}: {value!r} is not a number") from None
    return EnergyParams(**{**fields, **changes})


def add_energy_arguments(parser) -> None:
    """``--energy-param NAME=VALUE`` (repeatable) on an argparse parser."""
    parser.add_argument("--energy-param", action="append", default=[], metavar="NAME=VALUE",
                        help="override an energy figure of nms.sw.energy.EnergyParams "
                             "(pJ/bit or pJ/op), e.g. e_near=2.5; repeatable")


def selection_report(y, *, dim: int, ratio: float, config, hardware=None, flow=None,
                     epochs: int, measured_near_bytes: int | None = None,
                     params: EnergyParams | None = None, chunk_capacity: int | None = None) -> dict:
    """The selection's energy per term and the comparison with full-data training, for a
    selection of labels ``y`` at ``ratio`` run with ``config`` (a ``DesneConfig``).

    ``flow`` is the :class:`nms.sw.dataflow.Dataflow` the device implements; by default the
    current RTL's (stream, ``BASELINE``) with the generator parameters of ``hardware`` (a
    transport: ``tile``, ``k``, ``neg_samples``, ``capacity``, ``max_dim``, ``lanes``), or the
    chunk-buffer flow pooled by ``config.pool`` if ``hardware.buffer_dim > 0``, with the
    hardware's ``cand_tile`` and ``hold_self`` (default ``True``, the generated embedding's).
    ``chunk_capacity`` (the driver's planned chunk size, at most the buffer's points) replaces
    ``capacity`` when given. ``measured_near_bytes`` (the job counters' sum) is recorded beside
    the formula and must equal it.
    """
    from nms.sw import dataflow as dfl

    p = params or EnergyParams()
    if flow is None:
        hw = {name: getattr(hardware, name) for name in ("tile", "k", "neg_samples", "capacity",
                                                         "max_dim", "lanes")
              if hardware is not None and hasattr(hardware, name)}
        hw.setdefault("max_dim", max(dim, dfl.BASELINE.max_dim))
        if hardware is not None:
            # the RTL's embedding holds Y[i] (DesneDatapath(hold_self=True), the only front end
            # a generated device has); P candidates per query-memory read as generated
            hw["hold_self"] = bool(getattr(hardware, "hold_self", True))
            hw["cand_tile"] = int(getattr(hardware, "cand_tile", 1))
            hw["buffer_banks"] = int(getattr(hardware, "buffer_banks", 1))
        if chunk_capacity is not None:
            hw["capacity"] = int(chunk_capacity)   # the chunks the driver planned (buffer limit)
        # a device with the chunk buffer (buffer_dim > 0) runs the buffered dataflow, pooled as
        # the job asks (OPT.pool = config.pool)
        buffer_dim = getattr(hardware, "buffer_dim", 0)
        if buffer_dim:
            reduce = getattr(config, "pool", "none")
            try:
                dfl.reduced_dim(hw["max_dim"], reduce)
            except ValueError:
                hw["max_dim"] = dim          # the sizes then follow the job's images
            if reduce == "none":
                # an unpooled job fills the buffer with its own vectors (at most buffer_dim
                # words' worth per point of capacity): size the memories by the job's dim
                hw["max_dim"] = max(dim, min(hw["max_dim"], int(buffer_dim)))
            hw.update(buffer=True, reduce=reduce)
        flow = dfl.BASELINE.replace(**hw)
    counts = dfl.dataset_counts(y, dim=dim, ratio=ratio, flow=flow, n_iter=config.n_iter,
                                search=config.search)
    if measured_near_bytes is not None and int(measured_near_bytes) != counts["ddr"]["read_bytes"]:
        raise ValueError(f"measured near-memory bytes {measured_near_bytes} differ from the "
                         f"dataflow formula {counts['ddr']['read_bytes']} ({flow.label})")
    e = selection_energy(counts, p)
    m = counts["rtl"]["bytes_written"] // 4
    cmp = training_comparison(n_samples=len(y), n_selected=int(m), bytes_per_sample=dim,
                              selection_pj=e["total"], epochs=epochs, params=p)
    return {"flow": flow.as_dict(), "flow_label": flow.label, "n_iter": config.n_iter,
            "chunks": counts["chunks"], "ddr_read_bytes": counts["ddr"]["read_bytes"],
            "measured_near_bytes": measured_near_bytes, "energy": e, "comparison": cmp,
            "params": p.as_dict()}


def selection_markdown(rep: dict | None) -> list[str]:
    """Markdown lines (a section) of a :func:`selection_report`."""
    if not rep:
        return []
    e, c = rep["energy"], rep["comparison"]
    lines = ["## Selection energy, term by term (nms.sw.energy.selection_energy)", "",
             f"Dataflow {rep['flow_label']}, {rep['n_iter']} iterations, {rep['chunks']} chunks; "
             f"DDR bytes read {rep['ddr_read_bytes']} (equal to the job counters). Selection = "
             f"{e['total'] / 1e6:.1f} µJ = {c['selection_in_epochs']:.2f} full-data epochs of PCB "
             f"traffic; at {c['epochs']} epochs NMS saves {100 * c['saving_fraction']:.1f} % of "
             f"link + selection energy; break-even after {c['breakeven_epoch']:.2f} epochs.", "",
             "| term | µJ |", "|---|---:|"]
    for name, v in sorted(e["terms"].items(), key=lambda kv: -kv[1]):
        lines.append(f"| {name} | {v / 1e6:.2f} |")
    for g, v in e["groups"].items():
        lines.append(f"| **{g}** | {v / 1e6:.2f} |")
    lines += ["", "Figures and formulas: docs/energy.md.", ""]
    return lines
