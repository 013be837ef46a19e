"""Statistics of one :func:`~nms.verif.models.desne.grid_select` run that the grid sampler's
cycle formula (:meth:`nms.rtl.grid.GridSampler.run_cycles`) takes: which cells each level pass
sees, the largest quota and the last chosen index. Pure model arithmetic, no cycles.
"""

from __future__ import annotations

import numpy as np

from nms.rtl import fixedpoint as fp
from nms.verif.models.desne import ALLOCATIONS, grid_cells, grid_select

__all__ = ["grid_run_statistics"]


def grid_run_statistics(Y, budget: int, allocation: str) -> dict:
    """Keyword arguments of ``GridSampler.run_cycles`` for selecting ``budget`` points of ``Y``.

    Parameters
    ----------
    Y : array_like (N, 2) of int
        Q8.16 embedding coordinates.
    budget : int
        M, 1..N.
    allocation : {"adaptive", "proportional"}

    Returns
    -------
    dict
        ``level_cells`` (per level from ``GRID_BITS_MAX`` down to the chosen one: every point's
        row-major cell index), ``budget``, ``proportional``, ``max_quota``, ``last_index``.
    """
    if allocation not in ALLOCATIONS:
        raise ValueError(f"allocation must be one of {ALLOCATIONS}, not {allocation!r}")
    Y = np.asarray(Y, dtype=np.int64)
    chosen, det = grid_select(Y, int(budget), allocation, details=True)
    level_cells = []
    for g in range(fp.GRID_BITS_MAX, det["g"] - 1, -1):
        c, _, _ = grid_cells(Y, g)
        level_cells.append((c[:, 1] * (1 << g) + c[:, 0]).tolist())
    return {"level_cells": level_cells, "budget": int(budget),
            "proportional": allocation == "proportional", "max_quota": int(det["quota"].max()),
            "last_index": int(chosen[-1])}
