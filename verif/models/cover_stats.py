"""Statistics of one coverage-exemplar run that the cover unit's cycle formula
(:func:`nms.rtl.cover.cover_cycles`) takes: per pick its reverse-kNN in-degree and the rows
whose cover rose, from the bit-exact model's pick order. Pure model arithmetic, no cycles.
"""

from __future__ import annotations

import numpy as np

from nms.verif.models.desne import cover_select, grid_cover_select

__all__ = ["cover_run_statistics", "grid_cover_run_statistics", "slots_and_quotas"]


def cover_run_statistics(nbr, P, cell, quota, start, budget: int) -> dict:
    """Keyword arguments of ``cover_cycles`` for :func:`cover_select` with these cells/quotas.

    ``start`` is the offered start point (or None); one in a cell of quota 0 is offered but not
    taken, as the hardware checks it.
    """
    nbr = np.asarray(nbr, dtype=np.int64)
    P = np.asarray(P, dtype=np.int64)
    cell, quota = np.asarray(cell, dtype=np.int64), np.asarray(quota, dtype=np.int64)
    n, kk = nbr.shape
    checked = start is not None
    if start is not None and quota[cell[start]] == 0:
        start = None
    chosen, info = cover_select(nbr, P, int(budget), cell=cell, quota=quota, start=start,
                                details=True)
    indeg = np.bincount(nbr.ravel(), minlength=n)
    cover = np.zeros(n, dtype=np.int64)
    covered = []
    for p in info["order"]:
        rows = [(int(p), 1 << 16)] + [(int(i), int(P[i, t])) for i, t in zip(*np.nonzero(nbr == p))]
        covered.append(sum(int(v > cover[i]) for i, v in rows))
        for i, v in rows:
            cover[i] = max(cover[i], v)
    return {"n": n, "kk": kk, "start_checked": checked, "start_taken": start is not None,
            "in_degree": [int(indeg[p]) for p in info["order"]], "covered_rows": covered,
            "last_index": int(chosen.max())}


def slots_and_quotas(cell, quota_by_cell):
    """The grid sampler's view: cells renumbered in order of first occurrence (slots) and the
    quota of each slot."""
    cell = np.asarray(cell, dtype=np.int64)
    _, first, inv = np.unique(cell, return_index=True, return_inverse=True)
    rank = np.empty(first.size, dtype=np.int64)
    rank[np.argsort(first)] = np.arange(first.size)
    return rank[inv], np.asarray(quota_by_cell)[cell[np.sort(first)]]


def grid_cover_run_statistics(Y, nbr, P, budget: int, allocation: str, start) -> dict:
    """:func:`cover_run_statistics` for :func:`grid_cover_select` (the grid's cells/quotas)."""
    _, info = grid_cover_select(Y, nbr, P, int(budget), allocation, details=True)
    slot, quota = slots_and_quotas(info["cell"], info["quota"])
    return cover_run_statistics(nbr, P, slot, quota, start, budget)
