"""Energy / traffic model: what crossing the PCB costs vs reading the dataset near memory.

Training on the full dataset moves every image over the off-chip (PCB) link once per epoch. With
NMS the near-memory engine reads the dataset ``passes`` times beside the DRAM (no board traces),
and only the selected coreset (plus its indices) crosses the link, once per epoch::

    E_full = epochs * N * bytes * 8 * e_pcb
    E_nms  = passes * N * bytes * 8 * e_near + (epochs * M * bytes + M * index_bytes) * 8 * e_pcb

On the training side, NVM weight cells cost ``e_nvm_write`` per bit written and ``e_nvm_read`` per
bit read, so the write counts from :mod:`nms.sw.lrt` convert to energy with :func:`nvm_energy_pj`.
Measured hardware counters (near-memory bytes read) can replace the modelled near bytes.
Compute energy of the DE-SNE engine itself is NOT modelled here.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import asdict, dataclass

from nms.verif.models.budget import budget as selection_budget
from nms.verif.models.budget import validate_ratio

__all__ = ["EnergyParams", "Traffic", "full_training_traffic", "nms_traffic", "link_energy_pj",
           "nvm_energy_pj", "compare_training"]


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
    """

    e_pcb: float = 20.0
    e_near: float = 4.0
    e_nvm_write: float = 10.9
    e_nvm_read: float = 1.76
    weight_bits: int = 8

    #: which defaults are placeholders rather than quoted measurements
    PLACEHOLDERS = ("e_near",)

    def __post_init__(self):
        for name in ("e_pcb", "e_near", "e_nvm_write", "e_nvm_read"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, numbers.Real) or not v >= 0 \
                    or not math.isfinite(v):
                raise ValueError(f"EnergyParams.{name} must be a finite number >= 0 pJ/bit, got {v!r}")
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
