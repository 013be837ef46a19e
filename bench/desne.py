"""``nms bench desne``: speed, memory and sampling quality of the DE-SNE models.

Measures, on the Fashion-MNIST training set (``NMS_FASHION_DIR`` or ``../shared/datasets/
fashion-mnist`` beside the repository; the bundled digits set if neither exists) at ratio 0.1:

* wall time and peak traced memory (``tracemalloc``, which sees NumPy's buffers) of the bit-exact
  model and of the float64 reference, each a full :func:`select` call;
* the effect of this project's two answers to AdapSNE's criticisms of NMS — "NMS-like" (bisection
  search + proportional plain-grid allocation) against "DE-SNE" (robust search + water-filling),
  plus the two mixed variants — by:

  - ``row_miss``: fraction of affinity rows whose entropy misses log2(perplexity) by > 0.05 bits
    (also over a perplexity sweep, which only needs the affinity stage);
  - ``outliers``: embedding outlier rate — a point whose 2-D distance to its nearest
    high-dimensional neighbour exceeds 3x the median of that distance in its chunk;
  - ``entropy``: normalised entropy of the selected exemplars over the occupied cells of the
    sampling grid, H(exemplars per cell) / log2(#occupied cells) (1 = every occupied cell gets
    the same number), mean over chunks weighted by budget; ``cells_hit`` = fraction of occupied
    cells that receive an exemplar;
  - ``coverage``: mean pixel-space L2 distance of every image to the nearest exemplar of its class
    (lower is better); stratified uniform random selection is given for scale.

With ``quick`` only the first 6000 training images are used (figures are then not the headline
ones). Writes ``desne.json`` and ``desne.md`` into ``out_dir``.
"""

from __future__ import annotations

import json
import os
import platform
import time
import tracemalloc
from pathlib import Path

import numpy as np

from nms.rtl import fixedpoint as fp
from nms.verif.models import desne as dm
from nms.verif.models import desne_float as df

RATIO = 0.1
MISS_BITS = 0.05
OUTLIER_FACTOR = 3.0
SWEEP_PERPLEXITIES = (4.0, 5.0, 8.0, 10.0, 12.0, 15.0, 16.0)
QUICK_N = 6000


def _dataset():
    from nms.sw.datasets import load_dataset

    env = os.environ.get("NMS_FASHION_DIR")
    default = Path(__file__).resolve().parent.parent.parent / "shared" / "datasets" / "fashion-mnist"
    for cand in (env, default):
        if cand and (Path(cand) / "train-images-idx3-ubyte.gz").exists():
            ds = load_dataset(cand)
            return "fashion-mnist", ds.train_flat(), ds.y_train
    ds = load_dataset("digits")
    return "digits", ds.train_flat(), ds.y_train


def _timed(fn):
    tracemalloc.start()
    t0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return out, (wall, cpu), peak


def coverage(X, y, idx) -> float:
    """Mean pixel-space L2 distance of every point to the nearest selected point of its class."""
    total = 0.0
    for c in np.unique(y):
        m = np.flatnonzero(y == c)
        s = idx[y[idx] == c]
        for a in range(0, m.size, 2048):  # bounded memory
            total += np.sqrt(dm.squared_distances(X[m[a:a + 2048]], X[s]).min(1)).sum()
    return total / len(y)


def _chunk_metrics(chunks, nn_first, allocation, scale, grid=dm):
    """Outlier rate, exemplar entropy and cells hit over all chunks for one allocation."""
    out_n, n_tot, ent_w, hit_w, w_tot, picked = 0, 0, 0.0, 0.0, 0, []
    for ch, nn in zip(chunks, nn_first):
        Y = ch["embedding"]
        m = ch["selected"].size
        e = np.sqrt((((Y - Y[nn]) / scale) ** 2).sum(1))
        out_n += int((e > OUTLIER_FACTOR * np.median(e)).sum())
        n_tot += Y.shape[0]
        sel, info = grid.grid_select(Y, m, allocation, details=True)
        q = info["quota"]
        occ = int((info["counts"] > 0).sum())
        p = q[q > 0] / m
        ent = float(-(p * np.log2(p)).sum() / np.log2(occ)) if occ > 1 else 1.0
        ent_w += ent * m
        hit_w += (q > 0).sum() / occ * m
        w_tot += m
        picked.append(ch["members"][sel])
    return {"outliers": out_n / n_tot, "entropy": ent_w / w_tot, "cells_hit": hit_w / w_tot,
            "indices": np.sort(np.concatenate(picked))}


def _row_errors(chunks):
    err = np.concatenate([ch["err"] for ch in chunks])
    return err


def _err_stats(err_bits):
    return {"row_miss": float((err_bits > MISS_BITS).mean()), "err_max_bits": float(err_bits.max()),
            "err_mean_bits": float(err_bits.mean())}


def run(out_dir, quick: bool = False) -> dict:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    name, X, y = _dataset()
    if quick:
        X, y = X[:QUICK_N], y[:QUICK_N]
    cfg = dm.DesneConfig()
    res = {"dataset": name, "n": int(len(y)), "dim": int(X.shape[1]), "ratio": RATIO,
           "quick": bool(quick), "config": {k: getattr(cfg, k) for k in cfg.__dataclass_fields__},
           "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                       "numpy": np.__version__}}

    # --- speed and memory: one full select() each ---
    runs = {}
    for search in ("robust", "bisect"):
        c = cfg.replace(search=search)
        runs[search], wall, peak = _timed(lambda: dm.select(X, y, RATIO, c, seed=0, details=True))
        if search == "robust":
            res["bit_exact"] = {"wall_s": wall[0], "cpu_s": wall[1], "peak_traced_MB": peak / 2 ** 20,
                                "n_selected": int(runs[search]["indices"].size),
                                "chunks": len(runs[search]["chunks"])}
    flt, wall, peak = _timed(lambda: df.select(X, y, RATIO, cfg, seed=0, details=True))
    res["float_reference"] = {"wall_s": wall[0], "cpu_s": wall[1], "peak_traced_MB": peak / 2 ** 20, "n": int(len(y))}

    # nearest high-dimensional neighbour of every point inside its chunk (same chunks everywhere)
    nn_first = [dm.knn(X[ch["members"]], 1)[0][:, 0] for ch in runs["robust"]["chunks"]]

    # --- NMS-like vs DE-SNE and the mixed variants ---
    variants = {}
    for search in ("bisect", "robust"):
        chunks = runs[search]["chunks"]
        err = _row_errors(chunks) / 2.0 ** fp.H_FRAC_BITS
        for allocation in ("proportional", "adaptive"):
            m = _chunk_metrics(chunks, nn_first, allocation, 2.0 ** fp.Y_FRAC_BITS)
            variants[f"{search}+{allocation}"] = {
                **_err_stats(err), "outliers": m["outliers"], "entropy": m["entropy"],
                "cells_hit": m["cells_hit"], "coverage": coverage(X, y, m["indices"])}
    # the default exemplar stage (coverage inside proportional quotas) fills exactly the
    # proportional quotas, so its outliers / entropy / cells hit are that row's; its picks differ
    if cfg.exemplar == "cover":
        prop = variants["robust+proportional"]
        variants["robust+cover"] = {**prop, "coverage": coverage(X, y, runs["robust"]["indices"])}
    fm = _chunk_metrics(flt["chunks"], nn_first, "adaptive", 1.0, grid=df)
    variants["float robust+adaptive"] = {
        **_err_stats(np.concatenate([ch["err"] for ch in flt["chunks"]])),
        "outliers": fm["outliers"], "entropy": fm["entropy"], "cells_hit": fm["cells_hit"],
        "coverage": coverage(X, y, fm["indices"])}
    rng = np.random.default_rng(0)
    from nms.verif.models.budget import class_budgets

    rand = np.sort(np.concatenate([rng.choice(np.flatnonzero(y == c), b, replace=False)
                                   for c, b in class_budgets(y, RATIO).items()]))
    res["random_coverage"] = coverage(X, y, rand)
    res["variants"] = variants
    same = np.intersect1d(runs["robust"]["indices"], flt["indices"]).size
    res["float_vs_bit_exact_same_exemplars"] = same / runs["robust"]["indices"].size

    # --- perplexity sweep of the search alone (affinity stage only) ---
    dists = []
    for ch in runs["robust"]["chunks"]:
        dists.append(dm.knn(X[ch["members"]], cfg.k)[1])
    sweep = {}
    for p in SWEEP_PERPLEXITIES:
        row = {}
        for search in ("bisect", "robust"):
            err = np.concatenate([dm.affinities(d, p, search)["err"] for d in dists]) / 2.0 ** 16
            row[search] = _err_stats(err)
        sweep[str(p)] = row
    res["perplexity_sweep"] = sweep

    (out_dir / "desne.json").write_text(json.dumps(res, indent=2, default=float))
    (out_dir / "desne.md").write_text(_markdown(res))
    return res


def _markdown(r) -> str:
    be, fr = r["bit_exact"], r["float_reference"]
    lines = [
        "# DE-SNE benchmark",
        "",
        f"Data: {r['dataset']} train, N = {r['n']} ({r['dim']}-D uint8), ratio {r['ratio']}"
        + (" — **quick run (subset)**" if r["quick"] else "") + f"; {r['machine']['cpus']} CPUs, "
        f"NumPy {r['machine']['numpy']}. Default `DesneConfig` (k={r['config']['k']}, perplexity "
        f"{r['config']['perplexity']}, {r['config']['n_iter']} iterations, capacity "
        f"{r['config']['capacity']}).",
        "",
        "## Speed and memory (one `select` call, tracemalloc running)",
        "",
        "| model | N | wall time (s) | process CPU time (s) | peak traced memory (MB) |",
        "|---|---|---|---|---|",
        f"| bit-exact (`nms.verif.models.desne`) | {r['n']} | {be['wall_s']:.1f} | {be['cpu_s']:.1f} | "
        f"{be['peak_traced_MB']:.0f} |",
        f"| float reference (`nms.verif.models.desne_float`) | {fr['n']} | {fr['wall_s']:.1f} | "
        f"{fr['cpu_s']:.1f} | {fr['peak_traced_MB']:.0f} |",
        "",
        "Wall time on a shared machine includes waiting for the CPU; CPU time is the process's own "
        "(all threads).",
        "",
        f"{be['chunks']} chunks, {be['n_selected']} exemplars selected.",
        "",
        "## NMS-like vs DE-SNE (same data, same chunks, seed 0)",
        "",
        f"row miss = rows with |H - log2 perplexity| > {MISS_BITS} bits; outliers = points whose "
        f"2-D distance to their nearest high-D neighbour exceeds {OUTLIER_FACTOR:g}x the chunk "
        "median; entropy = normalised entropy of the exemplars over occupied grid cells; "
        "coverage = mean pixel L2 distance to the nearest same-class exemplar (lower is better).",
        "",
        "| variant | row miss | max err (bits) | mean err (bits) | outliers | entropy | cells hit | coverage |",
        "|---|---|---|---|---|---|---|---|",
    ]
    label = {"bisect+proportional": "bisect + proportional, nearest centre (NMS-like)",
             "bisect+adaptive": "bisect + water-filling, nearest centre",
             "robust+proportional": "robust + proportional, nearest centre",
             "robust+adaptive": "robust + water-filling, nearest centre (v0)",
             "robust+cover": "robust + coverage in proportional quotas (DE-SNE default)",
             "float robust+adaptive": "float reference, robust + water-filling, nearest centre"}
    for k, v in r["variants"].items():
        lines.append(f"| {label.get(k, k)} | {v['row_miss']:.4f} | {v['err_max_bits']:.4f} | "
                     f"{v['err_mean_bits']:.4f} | {v['outliers']:.4f} | {v['entropy']:.4f} | "
                     f"{v['cells_hit']:.4f} | {v['coverage']:.1f} |")
    lines += [
        f"| stratified random (scale) | | | | | | | {r['random_coverage']:.1f} |",
        "",
        "Entropy and cells hit are the grid quotas' (the coverage stage fills the proportional "
        "quotas exactly, so its row repeats them); coverage is of the picks themselves.",
        "",
        f"Float reference and bit-exact model (both the default configuration) pick the same "
        f"image for "
        f"{100 * r['float_vs_bit_exact_same_exemplars']:.1f} % of the exemplars.",
        "",
        "## Precision search alone, by target perplexity (all chunks, k = 16)",
        "",
        "| perplexity | bisect row miss | bisect max err | robust row miss | robust max err |",
        "|---|---|---|---|---|",
    ]
    for p, row in r["perplexity_sweep"].items():
        b, o = row["bisect"], row["robust"]
        lines.append(f"| {p} | {b['row_miss']:.4f} | {b['err_max_bits']:.4f} | {o['row_miss']:.4f} | "
                     f"{o['err_max_bits']:.4f} |")
    return "\n".join(lines) + "\n"
