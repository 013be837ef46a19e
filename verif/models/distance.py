"""Bit-exact golden model of :class:`nms.rtl.distance.DistanceEngine` (no simulator needed).

Two levels, checked against each other in the tests:

* :class:`DistanceEngineModel` -- beat level, mirrors the engine's protocol: feed it the query and
  candidate beats as they are accepted and it returns the result beats the engine must emit
  (``dim`` latched from a tile's first query beat and clamped to ``1..max_dim``, unused lanes of a
  final beat masked, ``last`` ending a pass). This is the model a cocotb scoreboard drives.
* :func:`reference_distances` / :func:`expected_results` -- vector level: NumPy int64 squared L2
  distances of whole vectors, and the result beat sequence they imply for a list of passes.

Beats are plain dicts matching the engine's payload layouts:
query ``{"data": [L ints], "dim": int}``, candidate ``{"data": [L ints], "last": 0/1}``,
result ``{"dist": [T ints], "last": 0/1}``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "DistanceParams",
    "DistanceEngineModel",
    "reference_distances",
    "query_beats",
    "candidate_beats",
    "expected_results",
    "Pass",
]


@dataclass(frozen=True)
class DistanceParams:
    """Engine parameters as the model needs them; validated like the RTL's."""

    lanes: int = 8
    tile: int = 4
    elem_width: int = 8
    max_dim: int = 1024

    def __post_init__(self):
        for name, lo in (("lanes", 1), ("tile", 1), ("elem_width", 1), ("max_dim", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"{name} must be an int, not {value!r}")
            if value < lo:
                raise ValueError(f"{name}={value} must be >= {lo}")

    @property
    def elem_max(self) -> int:
        return (1 << self.elem_width) - 1

    @property
    def acc_width(self) -> int:
        return (self.max_dim * self.elem_max ** 2).bit_length()

    def beats(self, dim: int) -> int:
        return -(-dim // self.lanes)

    def check_dim(self, dim) -> int:
        if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)):
            raise TypeError(f"dim must be an int, not {dim!r}")
        if not 1 <= dim <= self.max_dim:
            raise ValueError(f"dim={dim} is out of range: 1..max_dim={self.max_dim}")
        return int(dim)

    def check_vectors(self, name: str, vectors) -> np.ndarray:
        arr = np.asarray(vectors)
        if arr.ndim != 2:
            raise ValueError(f"{name} must be a 2-D array (vectors x dim), got shape {arr.shape}")
        if arr.size and not np.issubdtype(arr.dtype, np.integer):
            raise TypeError(f"{name} must hold integers, not {arr.dtype}")
        arr = arr.astype(np.int64)
        if arr.size and (arr.min() < 0 or arr.max() > self.elem_max):
            bad = arr.min() if arr.min() < 0 else arr.max()
            raise ValueError(f"{name} holds {bad}, outside 0..{self.elem_max} "
                             f"(elem_width={self.elem_width})")
        self.check_dim(arr.shape[1])
        return arr


class DistanceEngineModel:
    """Beat-level model: feed accepted input beats, collect the result beats they cause.

    Like the engine, it alternates between loading a tile (``tile`` queries) and streaming
    candidates until one whose final beat has ``last`` set. Beats arriving for the wrong phase
    raise ``RuntimeError`` (the engine would not accept them).
    """

    def __init__(self, params: DistanceParams):
        self.p = params
        self.loading = True
        self._tile_rows: list[list[int]] = []   # queries of the tile, element lists
        self._row: list[int] = []
        self.dim = 1
        self._cand: list[int] = []
        self._cand_beats = 0

    def _clamped_dim(self, raw: int) -> int:
        # The engine clamps instead of hanging on an out-of-range dim.
        return 1 if raw == 0 else min(int(raw), self.p.max_dim)

    def _lanes_used(self, beat_index: int) -> int:
        return min(self.p.lanes, self.dim - beat_index * self.p.lanes)

    def query_beat(self, beat: dict) -> None:
        if not self.loading:
            raise RuntimeError("query beat while streaming candidates")
        if not self._tile_rows and not self._row:
            self.dim = self._clamped_dim(beat["dim"])
        used = self._lanes_used(len(self._row) // self.p.lanes)
        self._row += list(beat["data"][:used]) + [0] * (self.p.lanes - used)
        if len(self._row) == self.p.beats(self.dim) * self.p.lanes:
            self._tile_rows.append(self._row[:self.dim])
            self._row = []
            if len(self._tile_rows) == self.p.tile:
                self.loading = False

    def candidate_beat(self, beat: dict) -> list[dict]:
        if self.loading:
            raise RuntimeError("candidate beat while loading queries")
        used = self._lanes_used(self._cand_beats)
        self._cand += list(beat["data"][:used])
        self._cand_beats += 1
        if self._cand_beats < self.p.beats(self.dim):
            return []
        cand, self._cand, self._cand_beats = self._cand, [], 0
        dist = [sum((q - c) * (q - c) for q, c in zip(row, cand)) for row in self._tile_rows]
        last = int(beat["last"]) & 1
        if last:
            self.loading = True
            self._tile_rows = []
        return [{"dist": dist, "last": last}]


def reference_distances(queries, candidates) -> np.ndarray:
    """Squared L2 distances, shape ``(len(queries), len(candidates))``, int64 (exact).

    Fits int64 for any vectors the engine accepts (``max_dim * (2**16 - 1)**2 < 2**63``).
    """
    q = np.asarray(queries, dtype=np.int64)
    c = np.asarray(candidates, dtype=np.int64)
    diff = q[:, None, :] - c[None, :, :]
    return np.einsum("qcd,qcd->qc", diff, diff)


def _split(vector: Sequence[int], lanes: int, fill: Iterable[int] | None) -> list[list[int]]:
    beats = []
    fill_it = iter(fill) if fill is not None else None
    for start in range(0, len(vector), lanes):
        chunk = [int(x) for x in vector[start:start + lanes]]
        while len(chunk) < lanes:
            chunk.append(next(fill_it) if fill_it is not None else 0)
        beats.append(chunk)
    return beats


def query_beats(params: DistanceParams, queries, *, fill: Iterable[int] | None = None) -> list[dict]:
    """Query-load beats for one tile: exactly ``tile`` vectors of equal length ``dim``.

    ``fill`` supplies the values of unused lanes (default zeros); tests pass random values to show
    they are ignored.
    """
    q = params.check_vectors("queries", queries)
    if len(q) != params.tile:
        raise ValueError(f"a tile holds exactly tile={params.tile} queries, got {len(q)}")
    dim = q.shape[1]
    return [{"data": chunk, "dim": dim} for row in q for chunk in _split(row, params.lanes, fill)]


def candidate_beats(params: DistanceParams, candidates, *,
                    fill: Iterable[int] | None = None) -> list[dict]:
    """Candidate beats for one pass; ``last`` is set on the final beat of the final candidate."""
    c = params.check_vectors("candidates", candidates)
    if len(c) == 0:
        raise ValueError("a pass needs at least one candidate")
    beats = [{"data": chunk, "last": 0} for row in c for chunk in _split(row, params.lanes, fill)]
    beats[-1]["last"] = 1
    return beats


@dataclass
class Pass:
    """One query tile and the candidates streamed against it."""

    queries: np.ndarray
    candidates: np.ndarray


def expected_results(params: DistanceParams, passes: Iterable[Pass]) -> list[dict]:
    """The engine's result beat sequence for ``passes`` run back to back (vector level)."""
    out: list[dict] = []
    for p in passes:
        q = params.check_vectors("queries", p.queries)
        c = params.check_vectors("candidates", p.candidates)
        if len(q) != params.tile:
            raise ValueError(f"a tile holds exactly tile={params.tile} queries, got {len(q)}")
        if q.shape[1] != c.shape[1]:
            raise ValueError(f"queries have dim={q.shape[1]} but candidates dim={c.shape[1]}")
        if len(c) == 0:
            raise ValueError("a pass needs at least one candidate")
        d = reference_distances(q, c)
        for j in range(len(c)):
            out.append({"dist": [int(x) for x in d[:, j]], "last": int(j == len(c) - 1)})
    return out
