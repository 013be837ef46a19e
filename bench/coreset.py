"""``nms bench coreset``: the DE-SNE variant search on validation, and the final coreset table.

Protocol (:mod:`nms.sw.harness`): a stratified validation split (15 % of every class, fixed seed)
is held out of each training split; selectors see only the rest (the *pool*); every choice below
is made on validation accuracy; the test split is read only by the final table.

Stage ``search`` (``coreset_search.json`` / ``.md``): every variant of
:mod:`nms.sw.desne_variants` (the six directions of ``shared/research/coreset-dnn-free.md`` alone
and in combinations) and every DNN-free peer, on digits (whole pool) and a stratified
Fashion-MNIST subset (:data:`SEARCH_FASHION_PER_CLASS` pool images per class, the whole
validation split), MLP, ratios 1/5/10/20 %, seeds :data:`SEARCH_SEEDS`; validation accuracy only.
The winner is the variant with the largest *worst-case margin* over (data set, ratio) against the
best peer there (mean margin breaks ties) — the goal asks for "≥ the best peer at every ratio".

Stage ``final`` (``coreset.json`` / ``.md``): the chosen DE-SNE (the bit-exact model's default
configuration), the NMS-style plain grid, the previous default and all peers on digits and the
full Fashion-MNIST (pool 51 000 / validation 9 000 / test 10 000), MLP and CNN, ratios
1/5/10/20 %, seeds 0–4; validation and test accuracy. Each (data set, trainer) piece is
checkpointed under ``<out>/coreset_parts/`` after every run, so a long run resumes where it
stopped; the report says which pieces and seeds are complete.

Run a stage alone with ``python -m nms.bench.coreset search|final [--dataset ...] [--trainer ...]
--out bench/results``; ``nms bench coreset`` runs whatever is missing and writes both reports.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

from nms.sw import baselines as bl
from nms.sw import desne_variants as dv
from nms.sw.datasets import load_dataset
from nms.sw.harness import prepare, score_coreset, VALIDATION_SEED

RATIOS = (0.01, 0.05, 0.1, 0.2)
SEARCH_SEEDS = (0, 1)
FINAL_SEEDS = (0, 1, 2, 3, 4)
SEARCH_FASHION_PER_CLASS = 2000
PEERS = ("random", "herding", "kcenter", "facility", "typiclust", "maxherding")
QUICK_RATIOS = (0.05,)

V = dv.Variant
#: the variant search space: name -> Variant (directions of the research note, then combinations)
VARIANTS = {
    # 0. references
    "centre/adaptive (old default)": V(),
    "centre/proportional (NMS grid)": V(allocation="proportional"),
    # 1. density-mode exemplar per cell
    "mass/adaptive": V(exemplar="mass"),
    "indeg/adaptive": V(exemplar="indeg"),
    "mass/proportional": V(exemplar="mass", allocation="proportional"),
    # 2. mass- vs area-based allocation chosen by ratio
    "centre/auto(prop<5%<adapt)": V(allocation="auto", low="proportional", high="adaptive"),
    "centre/auto(adapt<5%<prop)": V(allocation="auto", low="adaptive", high="proportional"),
    "mass/auto(adapt<5%<prop)": V(exemplar="mass", allocation="auto", low="adaptive",
                                  high="proportional"),
    "mass/auto(adapt<10%<prop)": V(exemplar="mass", allocation="auto", low="adaptive",
                                   high="proportional", switch=(1, 10)),
    # 3. greedy coverage over the sparse kNN graph
    "cover (kNN graph, no grid)": V(selector="cover"),
    "cover-in-cell/adaptive": V(exemplar="cover"),
    "cover-in-cell/proportional": V(exemplar="cover", allocation="proportional"),
    # 4. cross-class kNN difficulty, CCS strata
    "mass/adaptive + demote ambiguous": V(exemplar="mass", hard="demote"),
    "cover + demote ambiguous": V(selector="cover", hard="demote"),
    "mass/proportional + demote ambiguous": V(exemplar="mass", allocation="proportional",
                                              hard="demote"),
    "CCS strata, centre/adaptive inside": V(hard="ccs"),
    "CCS strata, mass/adaptive inside": V(hard="ccs", exemplar="mass"),
    # 5. population weights through the trainer
    "mass/adaptive + sqrt cell weights": V(exemplar="mass", weights="sqrt"),
    "centre/proportional + cell weights": V(allocation="proportional", weights="cell"),
    "cover + sqrt owner weights": V(selector="cover", weights="sqrt"),
    # 6. adaptive per-chunk perplexity (entropy-guided among 5, 10, 15)
    "centre/adaptive + adaptive perplexity": V(perplexities=(5.0, 10.0, 15.0)),
    "mass/adaptive + adaptive perplexity": V(exemplar="mass", perplexities=(5.0, 10.0, 15.0)),
}
#: second round, suggested by the first round's measurements (appended with ``search --extra``)
EXTRA_VARIANTS = {
    "cover + mean-nearest first": V(selector="cover", first="mean"),
    "cover-in-cell/proportional + mean-nearest first": V(exemplar="cover", allocation="proportional",
                                                         first="mean"),
    "cover-in-cell/adaptive + mean-nearest first": V(exemplar="cover", first="mean"),
    "cover + mean-nearest first + demote ambiguous": V(selector="cover", first="mean", hard="demote"),
}
#: third round (outliers / noise on Fashion-MNIST, see sw/desne_variants.py 7-10): around the
#: default (= "cover-in-cell/proportional + mean-nearest first")
_DEF = dict(exemplar="cover", allocation="proportional", first="mean")
ROUND3_VARIANTS = {
    "default + density floor 10%": V(**_DEF, floor=0.1),
    "default + density floor 25%": V(**_DEF, floor=0.25),
    "default, indeg-weighted coverage": V(**_DEF, cover_weight="indeg"),
    "default, indeg-weighted + floor 10%": V(**_DEF, cover_weight="indeg", floor=0.1),
    "default, cover 75% + random fill in cells": V(**_DEF, mix=0.75),
    "default, cover 50% + random fill in cells": V(**_DEF, mix=0.5),
    "default, cover 25% + random fill in cells": V(**_DEF, mix=0.25),
    "grid-stratified random (cover 0%)": V(**_DEF, mix=0.0),
    "default, 2x oversampling + second pass": V(**_DEF, second=2),
    "default, 4x oversampling + second pass": V(**_DEF, second=4),
    "default, kNN on default_pool vectors": V(**_DEF, pool="auto"),
    "grid-stratified random, kNN on default_pool": V(**_DEF, mix=0.0, pool="auto"),
}
EXTRA_VARIANTS = {**EXTRA_VARIANTS, **ROUND3_VARIANTS}
VARIANTS_ALL = {**VARIANTS, **EXTRA_VARIANTS}
VARIANT_DIRECTION = {
    "default + density floor 10%": "7 density floor", "default + density floor 25%": "7 density floor",
    "default, indeg-weighted coverage": "8 typicality weight",
    "default, indeg-weighted + floor 10%": "7+8",
    "default, cover 75% + random fill in cells": "9 mix",
    "default, cover 50% + random fill in cells": "9 mix",
    "default, cover 25% + random fill in cells": "9 mix",
    "grid-stratified random (cover 0%)": "9 mix (reference)",
    "default, 2x oversampling + second pass": "10 second pass",
    "default, 4x oversampling + second pass": "10 second pass",
    "default, kNN on default_pool vectors": "pooling (energy issue)",
    "grid-stratified random, kNN on default_pool": "9 + pooling",
    "cover + mean-nearest first": "3 + chunk-mean start",
    "cover-in-cell/proportional + mean-nearest first": "2+3 + chunk-mean start",
    "cover-in-cell/adaptive + mean-nearest first": "3 + chunk-mean start",
    "cover + mean-nearest first + demote ambiguous": "3+4 + chunk-mean start",
    "centre/adaptive (old default)": "reference", "centre/proportional (NMS grid)": "reference",
    "mass/adaptive": "1 exemplar", "indeg/adaptive": "1 exemplar",
    "mass/proportional": "1+2", "centre/auto(prop<5%<adapt)": "2 allocation",
    "centre/auto(adapt<5%<prop)": "2 allocation", "mass/auto(adapt<5%<prop)": "1+2",
    "mass/auto(adapt<10%<prop)": "1+2", "cover (kNN graph, no grid)": "3 coverage",
    "cover-in-cell/adaptive": "3 coverage", "cover-in-cell/proportional": "2+3",
    "mass/adaptive + demote ambiguous": "1+4", "cover + demote ambiguous": "3+4",
    "mass/proportional + demote ambiguous": "1+2+4", "CCS strata, centre/adaptive inside": "4 CCS",
    "CCS strata, mass/adaptive inside": "1+4", "mass/adaptive + sqrt cell weights": "1+5",
    "centre/proportional + cell weights": "2+5", "cover + sqrt owner weights": "3+5",
    "centre/adaptive + adaptive perplexity": "6 perplexity",
    "mass/adaptive + adaptive perplexity": "1+6",
}


def _fashion_dir():
    env = os.environ.get("NMS_FASHION_DIR")
    default = Path(__file__).resolve().parent.parent.parent / "shared" / "datasets" / "fashion-mnist"
    for cand in (env, default):
        if cand and (Path(cand) / "train-images-idx3-ubyte.gz").exists():
            return Path(cand)
    return None


#: data sets of the search ranking; ``SHIFTED`` is the main job's new domain (``nms run``'s
#: default shift, ``nms.sw.run.shift_domain``) applied to the same Fashion-MNIST subset (pool
#: with seed 0, validation with seed 1), reported beside the ranking, not in it
RANK_DATASETS = ("digits", "fashion-mnist")
SHIFT = "BG+WN"
SHIFTED = "fashion-mnist " + SHIFT
#: the whole Fashion-MNIST pool (51 000, 5 chunks per class): the final table's per-class
#: budgets, for variants whose effect depends on the number of chunks per class (second pass);
#: reported beside the ranking, not in it
FULL = "fashion-mnist full pool"
SIDE_DATASETS = (SHIFTED, FULL)


def _shifted(data):
    """``data`` (an EvalData) under :data:`SHIFT`: pool and validation images shifted (the
    selectors see the shifted pixels, the trainer trains and is scored on shifted images)."""
    from nms.sw.run import shift_domain

    n, h, w = data.images.shape
    imgs = shift_domain(data.images, max_value=data.max_value, shift=SHIFT, seed=0)
    Xv, yv = data.evals["val"]
    Xv = shift_domain(Xv, max_value=data.max_value, shift=SHIFT, seed=1)
    Xt, yt = data.evals["test"]
    Xt = shift_domain(Xt, max_value=data.max_value, shift=SHIFT, seed=2)
    data.images, data.X = imgs, imgs.reshape(n, h * w)
    data.evals = {"val": (Xv, yv), "test": (Xt, yt)}
    data.max_value = 255
    data.summary = {**data.summary, "name": SHIFTED, "shift": SHIFT}
    return data


def _datasets(search: bool, quick: bool, names=RANK_DATASETS):
    """(name, EvalData) pairs; the search uses a stratified Fashion-MNIST pool subset (and, if
    :data:`SHIFTED` is among ``names``, the same subset under the main job's domain shift)."""
    out = [("digits", prepare(load_dataset("digits")))] if "digits" in names else []
    fdir = _fashion_dir()
    if fdir is not None and FULL in names:
        full = prepare(load_dataset(fdir))
        full.summary = {**full.summary, "name": FULL}
        out.append((FULL, full))
    if fdir is not None and ({"fashion-mnist", SHIFTED} & set(names)):
        data = prepare(load_dataset(fdir))
        if search or quick:
            per = 300 if quick else SEARCH_FASHION_PER_CLASS
            rng = np.random.default_rng(VALIDATION_SEED + 1)
            keep = np.sort(np.concatenate([rng.choice(np.flatnonzero(data.y == c), per, replace=False)
                                           for c in data.classes]))
            data.X, data.y, data.images = data.X[keep], data.y[keep], data.images[keep]
            data.summary = {**data.summary, "n_pool": int(keep.size),
                            "pool_subset_per_class": per}
            if quick:
                Xv, yv = data.evals["val"]
                data.evals = {"val": (Xv[:2000], yv[:2000]), "test": data.evals["test"]}
        if "fashion-mnist" in names:
            out.append(("fashion-mnist", data))
        if SHIFTED in names:
            import copy
            out.append((SHIFTED, _shifted(copy.copy(data))))
    return out


def _agg(vals):
    a = np.asarray(vals, dtype=np.float64)
    return {"mean": float(a.mean()), "std": float(a.std()), "n": int(a.size)}


# --- stage 1: search ---------------------------------------------------------------------------

def run_search(out_dir: Path, quick: bool = False, *, extra: bool = False, fashion_seeds=None,
               only=None, peers=None, datasets=RANK_DATASETS, log=print) -> dict:
    """Evaluate the variants and peers on validation (see the module docstring).

    Resumable: runs recorded in ``coreset_search.partial.json`` are kept. All variants of
    :data:`VARIANTS_ALL` run on digits with :data:`SEARCH_SEEDS`; on the Fashion-MNIST subset
    with ``fashion_seeds`` (default the same). With ``extra`` the recorded search
    (``coreset_search.json``) is extended: its runs are kept and only missing (data set, method,
    ratio, seed) runs are added — of the variants named in ``only`` (default every variant of
    :data:`VARIANTS_ALL` not yet recorded) and of the peers named in ``peers`` (default none),
    so a later round or another seed adds rows through this command.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ratios = QUICK_RATIOS if quick else RATIOS
    seeds = (0,) if quick else SEARCH_SEEDS
    variants = dict(list(VARIANTS.items())[:4]) if quick else VARIANTS_ALL
    partial = out_dir / "coreset_search.partial.json"
    runs = [] if quick or not partial.exists() else json.loads(partial.read_text())
    prior_runs = []
    run_peers = PEERS
    if extra:
        prior = json.loads((out_dir / "coreset_search.json").read_text())
        prior_runs = prior["runs"]
        recorded = {r["method"] for r in prior_runs}
        names = list(only) if only else [n for n in VARIANTS_ALL if n not in recorded]
        unknown = [n for n in names if n not in VARIANTS_ALL]
        if unknown:
            raise ValueError(f"unknown variant(s) {unknown}; known: {list(VARIANTS_ALL)}")
        variants = {n: VARIANTS_ALL[n] for n in names}
        run_peers = tuple(peers or ())
        bad = [m for m in run_peers if m not in PEERS]
        if bad:
            raise ValueError(f"unknown peer(s) {bad}; known: {list(PEERS)}")
        if fashion_seeds is None:
            fashion_seeds = prior.get("fashion_seeds")
    done = {(r["dataset"], r["method"], r["ratio"], r["seed"]) for r in prior_runs + runs}
    t_start = time.time()
    for ds_name, data in _datasets(True, quick, datasets):
        cache = {}
        ds_seeds = seeds if ds_name == "digits" or fashion_seeds is None else tuple(fashion_seeds)
        for seed in ds_seeds:
            for ratio in ratios:
                entries = [(m, None) for m in run_peers] + [(n, v) for n, v in variants.items()]
                for name, v in entries:
                    if (ds_name, name, ratio, seed) in done:
                        continue
                    t0 = time.perf_counter()
                    if v is None:
                        fn = bl.SELECTORS[name]
                        res = fn(data.X, data.y, ratio, seed=seed)
                        w = None
                    else:
                        res = dv.variant_select(data.X, data.y, ratio, v, seed=seed, cache=cache)
                        w = res.get("weights")
                    t_sel = time.perf_counter() - t0
                    acc = score_coreset(data, res["indices"], trainer="mlp", seed=seed,
                                        weights=w, splits=("val",))["val"]
                    runs.append({"dataset": ds_name, "method": name,
                                 "kind": "peer" if v is None else "variant",
                                 "ratio": ratio, "seed": seed, "val_accuracy": acc,
                                 "select_seconds": round(t_sel, 3),
                                 "coreset_size": int(len(res["indices"]))})
                    log(f"[search] {ds_name} r={ratio} s={seed} {name}: {100 * acc:.2f} "
                        f"({t_sel:.1f} s sel, {time.time() - t_start:.0f} s total)")
                    if not quick:
                        partial.write_text(json.dumps(runs))
    all_runs = prior_runs + runs
    result = _search_result(all_runs, ratios, seeds, quick)
    fs = sorted({r["seed"] for r in all_runs if r["dataset"] != "digits"})
    result["fashion_seeds"] = fs or list(fashion_seeds or seeds)
    (out_dir / "coreset_search.json").write_text(json.dumps(result, indent=1) + "\n")
    (out_dir / "coreset_search.md").write_text(_search_markdown(result))
    if not quick:
        partial.unlink(missing_ok=True)
    return result


def _search_result(runs, ratios, seeds, quick):
    table = {}
    for r in runs:
        table.setdefault((r["dataset"], r["method"], r["kind"], r["ratio"]), []).append(
            r["val_accuracy"])
    rows = [{"dataset": d, "method": m, "kind": k, "ratio": q, **_agg(v)}
            for (d, m, k, q), v in table.items()]
    cells = sorted({(r["dataset"], r["ratio"]) for r in rows if r["dataset"] in RANK_DATASETS})
    best_peer = {}
    for d, q in cells:
        peers = [r for r in rows if r["dataset"] == d and r["ratio"] == q and r["kind"] == "peer"]
        b = max(peers, key=lambda r: r["mean"])
        best_peer[(d, q)] = b
    scores, unranked = [], []
    for m in dict.fromkeys(r["method"] for r in rows if r["kind"] == "variant"):
        margins = []
        have = {(r["dataset"], r["ratio"]): r for r in rows if r["method"] == m}
        if any(c not in have for c in cells):  # run on a side data set only
            unranked.append(m)
            continue
        for d, q in cells:
            row = have[(d, q)]
            margins.append(row["mean"] - best_peer[(d, q)]["mean"])
        scores.append({"method": m, "direction": VARIANT_DIRECTION.get(m, ""),
                       "min_margin": float(min(margins)), "mean_margin": float(np.mean(margins)),
                       "cells_at_or_above_best_peer": int(sum(x >= 0 for x in margins))})
    scores.sort(key=lambda s: (-s["min_margin"], -s["mean_margin"]))
    return {"stage": "search", "quick": quick, "ratios": list(ratios), "seeds": list(seeds),
            "trainer": "mlp", "split": "validation",
            "fashion_pool_per_class": SEARCH_FASHION_PER_CLASS,
            "variants": {n: {k: (list(x) if isinstance(x, tuple) else x)
                             for k, x in vars(v).items() if k != "name"}
                         for n, v in VARIANTS_ALL.items()
                         if any(r["method"] == n for r in runs)},
            "rows": rows, "runs": runs,
            "best_peer": [{"dataset": d, "ratio": q, "method": b["method"], "mean": b["mean"]}
                          for (d, q), b in best_peer.items()],
            "ranking": scores, "unranked": unranked,
            "winner": scores[0]["method"] if scores else None,
            "machine": {"python": platform.python_version(), "numpy": np.__version__}}


def _search_markdown(res) -> str:
    rows = {(r["dataset"], r["method"], r["ratio"]): r for r in res["rows"]}
    dsets = list(dict.fromkeys(r["dataset"] for r in res["rows"]))
    ratios = res["ratios"]
    lines = ["# DE-SNE variant search (validation accuracy, MLP)", "",
             f"Seeds: digits {res['seeds']}, Fashion-MNIST {res.get('fashion_seeds', res['seeds'])} "
             f"(the compute budget of the shared 2-core machine); Fashion-MNIST pool subset "
             f"{res['fashion_pool_per_class']} images per class (stratified, fixed seed), whole "
             "validation split (9 000); digits whole pool (1 146), validation 201. Validation "
             "accuracy "
             "mean ± std over seeds (%); the test split is not read. Winner = largest worst-case "
             "margin to the best peer over every (data set, ratio) of digits and Fashion-MNIST; "
             f"`{SHIFTED}` (the same Fashion-MNIST subset under the main job's domain shift, "
             f"`nms.sw.run.shift_domain`) and `{FULL}` (the whole pool of 51 000, 5 chunks per "
             "class, as the final table) are reported beside the ranking, not in it. 'default' "
             "= the model's default stage 4 (= cover-in-cell/proportional + mean-nearest first).",
             "",
             "| variant | direction | min margin | mean margin | cells ≥ best peer |",
             "|---|---|---:|---:|---:|"]
    for s in res["ranking"]:
        lines.append(f"| {s['method']} | {s['direction']} | {100 * s['min_margin']:+.2f} | "
                     f"{100 * s['mean_margin']:+.2f} | {s['cells_at_or_above_best_peer']} |")
    if res.get("unranked"):
        lines += ["", "Not ranked (no runs on every ranked cell): "
                  + ", ".join(f"`{m}`" for m in res["unranked"]) + "."]
    for d in dsets:
        methods = list(dict.fromkeys(r["method"] for r in res["rows"] if r["dataset"] == d))
        n_max = max(r["n"] for r in res["rows"] if r["dataset"] == d)
        lines += ["", f"**{d}** (seeds per row: {n_max} unless marked)", "",
                  "| method | " + " | ".join(f"{100 * q:g} %" for q in ratios) + " |",
                  "|---|" + "---:|" * len(ratios)]
        for m in methods:
            cells = [f"{100 * rows[(d, m, q)]['mean']:.2f} ± {100 * rows[(d, m, q)]['std']:.2f}"
                     + (f" (n={rows[(d, m, q)]['n']})" if rows[(d, m, q)]["n"] != n_max else "")
                     if (d, m, q) in rows else "—" for q in ratios]
            lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


# --- stage 1b: one default (issue 9 x issue 11) ---------------------------------------------

#: seeds of the default check (the dataflow sweep's 4)
DEFAULT_CHECK_SEEDS = (0, 1, 2, 3)
#: the rule, fixed before the run: the candidate becomes the default iff at every (data set,
#: ratio) its validation mean >= the current default's mean - the larger seed std of the two
DEFAULT_CHECK_RULE = ("candidate val mean >= current val mean - max(std current, std candidate) "
                      "at every (data set, ratio); MLP, seeds 0-3")


def default_check_configs(dim):
    """(label -> DesneConfig) of the default check for ``dim``-element vectors: the coverage
    default as measured in the final table (300 iterations, no pooling) and the same stage 4
    with the energy issue's first chosen schedule (``nms.verif.models.desne.SCHEDULE_50``: 50
    iterations, exaggeration and momentum switch at a third = 17) and the pooling of
    ``nms.verif.models.pool.default_pool`` (Fashion-MNIST 4x4, digits none). This is the
    recorded check that made 50 iterations the default; the later move to 20 iterations was
    checked by ``nms.bench.dataflow.run_default_check``."""
    from nms.sw.dataflow import CHOSEN_SCHEDULE
    from nms.verif.models import desne as dm
    from nms.verif.models.pool import default_pool

    stage4 = dict(exemplar="cover", allocation="proportional", cover_start="mean")

    def sched(n, pool):
        third = max(1, round(n / 3))
        return dm.DesneConfig(**stage4, n_iter=n, exaggeration_iters=third, momentum_switch=third,
                              neg_samples=CHOSEN_SCHEDULE["neg_samples"], pool=pool)

    n, pool = dm.SCHEDULE_50["n_iter"], default_pool(dim)
    return {"cover, 300 it, no pool": sched(300, "none"),
            f"cover, {n} it, default_pool": sched(n, pool)}


def default_diagnostic_configs(dim):
    """Diagnostic rows beside the two of :func:`default_check_configs` (not part of the rule):
    which of the two changes (fewer iterations, pooling) costs accuracy, and the dataflow
    sweep's next-cheapest schedule (100 iterations). Configurations equal to one already
    listed (digits: no pooling) are left out."""
    from nms.sw.dataflow import CHOSEN_SCHEDULE
    from nms.verif.models.pool import default_pool

    base = default_check_configs(dim)
    main = base[f"cover, {CHOSEN_SCHEDULE['n_iter']} it, default_pool"]
    cur = base["cover, 300 it, no pool"]
    out = {f"cover, {main.n_iter} it, no pool": main.replace(pool="none"),
           "cover, 300 it, default_pool": cur.replace(pool=default_pool(dim)),
           "cover, 100 it, default_pool": main.replace(n_iter=100, exaggeration_iters=33,
                                                       momentum_switch=33)}
    seen = list(base.values())
    keep = {}
    for k, c in out.items():
        if c not in seen:
            keep[k] = c
            seen.append(c)
    return keep


#: seeds of the diagnostic rows (the compute budget of the shared machine)
DEFAULT_DIAGNOSTIC_SEEDS = (0, 1)


def run_default_check(out_dir: Path, *, seeds=DEFAULT_CHECK_SEEDS, diagnostics=True,
                      diagnostic_seeds=DEFAULT_DIAGNOSTIC_SEEDS, log=print) -> dict:
    """Validation accuracy (MLP) of :func:`default_check_configs` on digits (whole pool) and the
    search's stratified Fashion-MNIST subset, every ratio, ``seeds``; the verdict by
    :data:`DEFAULT_CHECK_RULE` (the first two configurations only), and with ``diagnostics``
    the rows of :func:`default_diagnostic_configs`. Resumable (the recorded
    ``coreset_default.json`` and ``coreset_default.partial.json``); writes
    ``coreset_default.json`` / ``.md``. The test split is not read."""
    out_dir = Path(out_dir)
    partial = out_dir / "coreset_default.partial.json"
    recorded = out_dir / "coreset_default.json"
    runs = json.loads(recorded.read_text())["runs"] if recorded.exists() else []
    runs += json.loads(partial.read_text()) if partial.exists() else []
    runs = list({(r["dataset"], r["method"], r["ratio"], r["seed"]): r for r in runs}.values())
    done = {(r["dataset"], r["method"], r["ratio"], r["seed"]) for r in runs}
    configs = {}
    t_start = time.time()
    for ds_name, data in _datasets(True, False):
        cfgs = default_check_configs(data.X.shape[1])
        configs[ds_name] = {k: repr(v) for k, v in cfgs.items()}
        diag = default_diagnostic_configs(data.X.shape[1]) if diagnostics else {}
        configs[ds_name].update({k: repr(v) for k, v in diag.items()})
        runs = [r for r in runs if not (r["dataset"] == ds_name and r["method"] in diag
                                        and r["seed"] not in diagnostic_seeds)]
        cfgs = {**cfgs, **diag}
        for seed in seeds:
            cache = {}
            for ratio in RATIOS:
                for label, cfg in cfgs.items():
                    if (ds_name, label, ratio, seed) in done or \
                            (label in diag and seed not in diagnostic_seeds):
                        continue
                    t0 = time.perf_counter()
                    res = desne_shared(data.X, data.y, ratio, cfg, seed=seed, cache=cache)
                    t_sel = time.perf_counter() - t0
                    acc = score_coreset(data, res["indices"], trainer="mlp", seed=seed,
                                        splits=("val",))["val"]
                    runs.append({"dataset": ds_name, "method": label, "ratio": ratio,
                                 "seed": seed, "val_accuracy": acc,
                                 "select_seconds": round(t_sel, 3),
                                 "coreset_size": int(res["indices"].size)})
                    log(f"[default] {ds_name} r={ratio} s={seed} {label}: {100 * acc:.2f} "
                        f"({t_sel:.1f} s sel, {time.time() - t_start:.0f} s total)")
                    partial.write_text(json.dumps(runs))
    result = _default_result(runs, configs, seeds)
    result["diagnostic_seeds"] = list(diagnostic_seeds)
    (out_dir / "coreset_default.json").write_text(json.dumps(result, indent=1) + "\n")
    (out_dir / "coreset_default.md").write_text(_default_markdown(result))
    partial.unlink(missing_ok=True)
    return result


def default_rule_check(current: dict, candidate: dict) -> dict:
    """:data:`DEFAULT_CHECK_RULE` for one ratio: ``current`` and ``candidate`` are
    ``{"mean", "std"}`` of validation accuracy over the seeds."""
    tol = max(current["std"], candidate["std"])
    return {"current": current["mean"], "candidate": candidate["mean"],
            "difference": candidate["mean"] - current["mean"], "tolerance": tol,
            "ok": bool(candidate["mean"] >= current["mean"] - tol)}


def _default_result(runs, configs, seeds):
    table = {}
    for r in runs:
        table.setdefault((r["dataset"], r["method"], r["ratio"]), []).append(r["val_accuracy"])
    rows = [{"dataset": d, "method": m, "ratio": q, **_agg(v)} for (d, m, q), v in table.items()]
    checks = []
    for d, labels in configs.items():
        cur, cand = list(labels)[:2]
        for q in RATIOS:
            a = next(r for r in rows if (r["dataset"], r["method"], r["ratio"]) == (d, cur, q))
            b = next(r for r in rows if (r["dataset"], r["method"], r["ratio"]) == (d, cand, q))
            checks.append({"dataset": d, "ratio": q, **default_rule_check(a, b)})
    return {"stage": "default", "rule": DEFAULT_CHECK_RULE, "seeds": list(seeds),
            "ratios": list(RATIOS), "trainer": "mlp", "split": "validation",
            "fashion_pool_per_class": SEARCH_FASHION_PER_CLASS, "configs": configs,
            "rows": rows, "checks": checks, "candidate_kept": all(c["ok"] for c in checks),
            "runs": runs,
            "machine": {"python": platform.python_version(), "numpy": np.__version__}}


def _default_markdown(res) -> str:
    lines = ["# One DE-SNE default: the coverage stage with the energy issue's schedule "
             "(validation, MLP)", "",
             f"Seeds {res['seeds']}; digits whole pool (1 146), validation 201; Fashion-MNIST "
             f"pool subset {res['fashion_pool_per_class']} images per class (stratified, fixed "
             "seed, as the variant search), whole validation split (9 000). Validation accuracy "
             "mean ± std over seeds (%); the test split is not read.", "",
             f"Rule (fixed before the run): {res['rule']}.", ""]
    for d, labels in res["configs"].items():
        lines += [f"**{d}**", ""]
        lines += [f"- `{m}`{' (diagnostic, not part of the rule; seeds ' + str(res.get('diagnostic_seeds')) + ')' if i >= 2 else ''} = `{c}`"
                  for i, (m, c) in enumerate(labels.items())]
        lines += ["", "| configuration | " + " | ".join(f"{100 * q:g} %" for q in res["ratios"])
                  + " |", "|---|" + "---:|" * len(res["ratios"])]
        for m in labels:
            cells = []
            for q in res["ratios"]:
                r = next((r for r in res["rows"] if (r["dataset"], r["method"], r["ratio"])
                          == (d, m, q)), None)
                cells.append("—" if r is None else
                             f"{100 * r['mean']:.2f} ± {100 * r['std']:.2f} (n={r['n']})")
            lines.append(f"| {m} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += ["| data set | ratio | current | candidate | difference | tolerance | ok |",
              "|---|---:|---:|---:|---:|---:|---|"]
    for c in res["checks"]:
        lines.append(f"| {c['dataset']} | {100 * c['ratio']:g} % | {100 * c['current']:.2f} | "
                     f"{100 * c['candidate']:.2f} | {100 * c['difference']:+.2f} | "
                     f"{100 * c['tolerance']:.2f} | {'yes' if c['ok'] else 'no'} |")
    lines += ["", "Verdict: the candidate " + ("keeps" if res["candidate_kept"] else
                                               "does not keep")
              + " validation accuracy at every (data set, ratio) by the rule."]
    return "\n".join(lines) + "\n"


# --- stage 2: the final table -----------------------------------------------------------------

#: methods of the final table: the DE-SNE rows are selectors of :data:`nms.sw.baselines.SELECTORS`
FINAL_METHODS = ("desne", "desne-50", "desne-300", "desne-nms", "desne-v0") + PEERS
FINAL_TRAINERS = ("mlp", "cnn")
FINAL_DATASETS = ("digits", "fashion-mnist")


def _final_data(name):
    if name == "digits":
        return prepare(load_dataset("digits"))
    fdir = _fashion_dir()
    if fdir is None:
        raise ValueError("Fashion-MNIST not found (set NMS_FASHION_DIR)")
    return prepare(load_dataset(fdir))


def _desne_config(method, dim):
    """The bit-exact model configuration behind a DE-SNE row of the final table for
    ``dim``-element vectors: ``desne`` = what the device runs by default
    (``nms.sw.baselines.desne_select``: ``PRESETS["desne"]``, kNN on the vectors pooled by
    ``default_pool(dim)``), the others their presets (unpooled, 300 iterations)."""
    from nms.verif.models import desne as dm
    from nms.verif.models.pool import default_pool
    if method == "desne":
        return dm.PRESETS["desne"].replace(pool=default_pool(dim))
    if method == "desne-50":
        return dm.PRESETS["50"].replace(pool=default_pool(dim))
    return dm.PRESETS[{"desne-300": "300", "desne-nms": "nms", "desne-v0": "v0"}[method]]


def _selection_tag(method, dim):
    """Part of the selection cache key: the DE-SNE rows are tagged with their model
    configuration so a changed configuration never reuses an old selection."""
    return repr(_desne_config(method, dim)) if method.startswith("desne") else ""


def relabel_runs(out_dir: Path, dataset: str, trainer: str, old: str, new: str, *,
                 log=print) -> int:
    """Rename the recorded runs of method ``old`` to ``new`` in every part file of one piece
    (e.g. ``desne`` -> ``desne-300`` after a default change, so the previous default's runs
    stay in the table as its comparison row instead of being re-measured). Refuses if ``new``
    already has runs there. Returns the number of runs renamed."""
    parts = Path(out_dir) / "coreset_parts"
    files = sorted(parts.glob(f"{dataset}_{trainer}*.json"))
    docs = [(f, json.loads(f.read_text())) for f in files]
    if any(r["method"] == new for _, pc in docs for r in pc["runs"]):
        raise ValueError(f"{dataset}/{trainer}: method {new!r} already has recorded runs")
    n = 0
    for f, pc in docs:
        k = sum(r["method"] == old for r in pc["runs"])
        if k:
            for r in pc["runs"]:
                if r["method"] == old:
                    r["method"] = new
            f.write_text(json.dumps(pc, indent=0))
            n += k
    log(f"[relabel] {dataset}/{trainer}: {n} runs {old} -> {new}")
    return n


def desne_shared(X, y, ratio, cfg, *, seed, cache):
    """Exactly :func:`nms.verif.models.desne.select` (same chunk plan, seeds, pooling and stage
    functions), with each chunk's kNN / affinities / embedding kept in ``cache`` so the DE-SNE
    rows that differ only in stage 4 (and every ratio) share them. Checked equal to ``select``
    in ``tests/test_coreset_bench.py``."""
    from nms.verif.models import desne as dm
    from nms.verif.models.pool import check_image, pool_vectors

    X, y = dm._check_data(X, y)
    check_image(X.shape[1], cfg.pool)
    Xk = pool_vectors(X, cfg.pool)
    picked = []
    for ch in dm.plan_chunks(y, ratio, cfg.capacity):
        if ch.budget == 0:
            continue
        s = seed + ch.ordinal
        stage_cfg = (cfg.k, cfg.perplexity, cfg.search, cfg.n_iter, cfg.exaggeration_shift,
                     cfg.exaggeration_iters, cfg.momentum_early, cfg.momentum_late,
                     cfg.momentum_switch, cfg.learning_rate, cfg.neg_samples)
        if cfg.pool != "none":  # unpooled keys stay as recorded in the embedding cache files
            stage_cfg = stage_cfg + (cfg.pool,)
        key = (int(ch.members[0]), int(ch.members.size), s, stage_cfg)
        if key not in cache:
            Xc = Xk[ch.members]
            nbr, dist = dm.knn(Xc, cfg.k)
            P = dm.affinities(dist, cfg.perplexity, cfg.search)["P"]
            cache[key] = (nbr, P, dm.embed(nbr, P, cfg, s))
        nbr, P, Y = cache[key]
        picked.append(ch.members[dm.exemplar_stage(Xk[ch.members], nbr, P, Y, ch.budget, cfg)])
    return {"indices": np.sort(np.concatenate(picked)).astype(np.int64)}


def _emb_file(cache_dir, dataset, seed):
    from nms.verif.models import desne as dm
    import hashlib
    tag = hashlib.sha1(repr(dm.PRESETS["v0"]).encode()).hexdigest()[:12]  # stages 1-3 settings
    return Path(cache_dir) / f"emb_{dataset}_{seed}_{tag}.npz"


def _load_embeddings(cache_dir, dataset, seed):
    """Per-chunk (nbr, P, Y) of one seed saved by an earlier piece (bit-exact model output)."""
    f = _emb_file(cache_dir, dataset, seed)
    if not f.exists():
        return {}
    z = np.load(f, allow_pickle=False)
    keys = z["keys"]
    out = {}
    for i, k in enumerate(keys):
        key = (int(k[0]), int(k[1]), int(k[2]), tuple(json.loads(str(z["stage_cfg"]))))
        out[key] = (z[f"nbr{i}"], z[f"P{i}"], z[f"Y{i}"])
    return out


def _save_embeddings(cache_dir, dataset, seed, emb):
    keys = list(emb)
    if len({k[3] for k in keys}) != 1:
        return  # mixed stage settings: keep in memory only
    arrays = {"keys": np.array([k[:3] for k in keys], dtype=np.int64),
              "stage_cfg": np.array(json.dumps(list(keys[0][3])))}
    for i, k in enumerate(keys):
        nbr, P, Y = emb[k]
        arrays.update({f"nbr{i}": nbr, f"P{i}": P, f"Y{i}": Y})
    f = _emb_file(cache_dir, dataset, seed)
    tmp = f.with_suffix(".tmp.npz")
    np.savez(tmp, **arrays)
    tmp.replace(f)


def run_final_piece(out_dir: Path, dataset: str, trainer: str, *, methods=FINAL_METHODS,
                    seeds=FINAL_SEEDS, ratios=RATIOS, cache_dir: Path | None = None,
                    part_suffix: str = "", redo: bool = False, log=print):
    """One (data set, trainer) piece of the final table, resumable: runs already in
    ``<out>/coreset_parts/<dataset>_<trainer>.json`` are kept, new ones appended after each run.
    With ``redo`` the recorded runs of ``methods`` (every part file of this piece) are dropped
    first, so only those rows are re-measured (e.g. after a default change; the selection cache
    is keyed by the DE-SNE configuration, so a changed one never reuses an old coreset).
    Selections are cached (``cache_dir``, default ``reports/coreset_cache``) so the MLP and
    CNN pieces train on identical coresets."""
    import hashlib

    out_dir = Path(out_dir)
    parts = out_dir / "coreset_parts"
    parts.mkdir(parents=True, exist_ok=True)
    cache_dir = Path(cache_dir or "reports/coreset_cache")
    cache_dir.mkdir(parents=True, exist_ok=True)
    part = parts / f"{dataset}_{trainer}{part_suffix}.json"  # one file per process
    if redo:
        for f in sorted(parts.glob(f"{dataset}_{trainer}*.json")):
            pc = json.loads(f.read_text())
            keep = [r for r in pc["runs"] if r["method"] not in methods]
            if len(keep) != len(pc["runs"]):
                f.write_text(json.dumps({**pc, "runs": keep}, indent=0))
    runs = json.loads(part.read_text())["runs"] if part.exists() else []
    done = {(r["method"], r["ratio"], r["seed"]) for r in runs}
    data = _final_data(dataset)
    dim = int(data.X.shape[1])
    t_start = time.time()
    desne_cache = {}
    for seed in seeds:
        for ratio in ratios:
            for method in methods:
                if (method, ratio, seed) in done:
                    continue
                fn = bl.SELECTORS[method]
                det = bool(getattr(fn, "seed_independent", False))
                sel_seed = 0 if det else seed
                tag = hashlib.sha1(f"{dataset}|{method}|{ratio}|{sel_seed}|"
                                   f"{_selection_tag(method, dim)}".encode()).hexdigest()[:16]
                cfile = cache_dir / f"{dataset}_{method}_{ratio}_{sel_seed}_{tag}.npz"
                if cfile.exists():
                    z = np.load(cfile)
                    res = {k: z[k] for k in z.files if k != "seconds"}
                    t_sel, reused = float(z["seconds"]), True
                else:
                    t0 = time.perf_counter()
                    if method.startswith("desne"):
                        for old in [s for s in desne_cache if s != sel_seed]:
                            del desne_cache[old]  # one seed's embeddings at a time
                        if sel_seed not in desne_cache:
                            desne_cache[sel_seed] = _load_embeddings(cache_dir, dataset, sel_seed)
                        emb = desne_cache[sel_seed]
                        before = len(emb)
                        res = desne_shared(data.X, data.y, ratio, _desne_config(method, dim),
                                           seed=sel_seed, cache=emb)
                        if len(emb) > before:
                            _save_embeddings(cache_dir, dataset, sel_seed, emb)
                    else:
                        res = fn(data.X, data.y, ratio, seed=sel_seed)
                    t_sel, reused = time.perf_counter() - t0, False
                    tmp = cfile.with_suffix(".tmp.npz")
                    np.savez(tmp, seconds=t_sel, **{k: res[k] for k in ("indices", "weights")
                                                    if k in res})
                    tmp.replace(cfile)
                t0 = time.perf_counter()
                acc = score_coreset(data, res["indices"], trainer=trainer, seed=seed)
                runs.append({"method": method, "ratio": ratio, "seed": seed,
                             "deterministic": det, "coreset_size": int(len(res["indices"])),
                             "select_seconds": round(t_sel, 3), "selection_cached": reused,
                             "train_seconds": round(time.perf_counter() - t0, 2),
                             "val_accuracy": acc["val"], "test_accuracy": acc["test"]})
                log(f"[final] {dataset}/{trainer} s={seed} r={ratio} {method}: val "
                    f"{100 * acc['val']:.2f} test {100 * acc['test']:.2f} "
                    f"({time.time() - t_start:.0f} s)")
                part.write_text(json.dumps({"dataset": data.summary, "trainer": trainer,
                                            "runs": runs}, indent=0))
    return runs


def _unique_runs(runs: list) -> list:
    """One run per (method, ratio, seed): part files written by parallel processes may both hold
    a run (the trainer is deterministic, so they agree); runs that disagree are an error."""
    seen, out = {}, []
    for r in runs:
        key = (r["method"], r["ratio"], r["seed"])
        if key in seen:
            a = seen[key]
            if (a["val_accuracy"], a["test_accuracy"]) != (r["val_accuracy"], r["test_accuracy"]):
                raise ValueError(f"two recorded runs of {key} disagree: "
                                 f"{a['val_accuracy']}/{a['test_accuracy']} vs "
                                 f"{r['val_accuracy']}/{r['test_accuracy']}")
            continue
        seen[key] = r
        out.append(r)
    return out


def assemble(out_dir: Path) -> dict:
    """``coreset.json`` / ``coreset.md`` from every finished piece, with the goal checks."""
    out_dir = Path(out_dir)
    merged = {}
    for f in sorted((out_dir / "coreset_parts").glob("*.json")):
        pc = json.loads(f.read_text())
        key = (pc["dataset"]["name"], pc["trainer"])
        if key in merged:
            merged[key]["runs"] += pc["runs"]
        else:
            merged[key] = pc
    for pc in merged.values():
        pc["runs"] = _unique_runs(pc["runs"])
    pieces = [merged[k] for k in sorted(merged)]
    tables = []
    for pc in pieces:
        groups = {}
        for r in pc["runs"]:
            groups.setdefault((r["method"], r["ratio"]), []).append(r)
        rows = []
        for (m, q), rs in groups.items():
            rows.append({"method": m, "ratio": q, "seeds": sorted(r["seed"] for r in rs),
                         "deterministic": rs[0]["deterministic"],
                         "test": _agg([r["test_accuracy"] for r in rs]),
                         "val": _agg([r["val_accuracy"] for r in rs]),
                         "coreset_size": rs[0]["coreset_size"],
                         "select_seconds": float(np.mean([r["select_seconds"] for r in rs]))})
        goals = []
        for q in sorted({r["ratio"] for r in rows}):
            here = {r["method"]: r for r in rows if r["ratio"] == q}
            if "desne" not in here:
                continue
            peers = [here[m] for m in PEERS if m in here]
            if not peers:
                continue
            for split in ("test", "val"):
                best = max(peers, key=lambda r: r[split]["mean"])
                d = here["desne"]
                margin = d[split]["mean"] - best[split]["mean"]
                std = max(d[split]["std"], best[split]["std"])
                g = {"ratio": q, "split": split, "best_peer": best["method"],
                     "best_peer_mean": best[split]["mean"], "desne_mean": d[split]["mean"],
                     "margin": margin, "one_std": std, "met": bool(margin >= 0),
                     "inside_one_std": bool(abs(margin) <= std),
                     "seeds_desne": d["seeds"], "seeds_peer": best["seeds"]}
                if "random" in here:
                    g["margin_vs_random"] = d[split]["mean"] - here["random"][split]["mean"]
                goals.append(g)
        tables.append({"dataset": pc["dataset"], "trainer": pc["trainer"], "rows": rows,
                       "goals": goals})
    timing_file = out_dir / "coreset_timing.json"
    timing = json.loads(timing_file.read_text()) if timing_file.exists() else None
    result = {"stage": "final", "ratios": list(RATIOS), "planned_seeds": list(FINAL_SEEDS),
              "timing": timing,
              "methods": list(FINAL_METHODS), "tables": tables,
              "desne_config": _selection_tag("desne", 64) + " with pool = default_pool(dim) "
                              "(Fashion-MNIST 28x28: 'pool4', digits: 'none')",
              "machine": {"python": platform.python_version(), "numpy": np.__version__}}
    (out_dir / "coreset.json").write_text(json.dumps(result, indent=1) + "\n")
    (out_dir / "coreset.md").write_text(_final_markdown(result))
    return result


def _final_markdown(res) -> str:
    lines = ["# Coreset quality: DE-SNE against DNN-free peers (final table)", "",
             "Pool = training split minus a stratified 15 % validation split (fixed seed); "
             "accuracy mean ± std over the seeds listed (%), test split first, then validation. "
             "`desne` = the bit-exact model's default configuration as the device runs it (20 "
             "iterations, kNN on the vectors pooled by `default_pool`), `desne-50` = the "
             "previous default (the same job, 50 iterations), `desne-300` = the one before "
             "(the same stage 4, 300 iterations, no pooling), `desne-nms` = "
             "NMS-style plain grid (nearest cell centre, proportional allocation), `desne-v0` = "
             "the first default (nearest cell centre, water-filling); the last three unpooled, "
             "300 iterations. Deterministic selectors "
             "(spread = classifier only): herding, kcenter, maxherding.", "",
             f"DE-SNE configuration: `{res['desne_config']}`", ""]
    tm = res.get("timing")
    if tm:
        lines += [f"Bit-exact model, this configuration, {tm['dataset']} {tm['n']} images at "
                  f"{100 * tm['ratio']:g} %: {tm['cpu_seconds']} s CPU ({tm['wall_seconds']} s "
                  f"wall on the shared machine), of which the coverage stage "
                  f"{tm['stage4_cpu_seconds']} s CPU; limit {tm['limit_seconds']} s.", ""]
    for t in res["tables"]:
        ds = t["dataset"]
        ratios = sorted({r["ratio"] for r in t["rows"]})
        rows = {(r["method"], r["ratio"]): r for r in t["rows"]}
        methods = [m for m in res["methods"] if any((m, q) in rows for q in ratios)]
        lines += [f"## {ds['name']} — {t['trainer'].upper()} (pool {ds['n_pool']}, validation "
                  f"{ds['n_val']}, test {ds['n_test']})", ""]
        for split in ("test", "val"):
            lines += [f"**{split}**", "",
                      "| method | " + " | ".join(f"{100 * q:g} %" for q in ratios) + " |",
                      "|---|" + "---:|" * len(ratios)]
            for m in methods:
                cells = []
                for q in ratios:
                    r = rows.get((m, q))
                    cells.append("—" if r is None else
                                 f"{100 * r[split]['mean']:.2f} ± {100 * r[split]['std']:.2f}"
                                 f" (n={r[split]['n']})")
                lines.append(f"| {m} | " + " | ".join(cells) + " |")
            lines.append("")
        lines += ["Goal check (DE-SNE − best peer; 'inside 1 std' = |margin| ≤ the larger std):", "",
                  "| split | ratio | best peer | margin | 1 std | met | vs random |",
                  "|---|---:|---|---:|---:|---|---:|"]
        for g in t["goals"]:
            vr = f"{100 * g['margin_vs_random']:+.2f}" if "margin_vs_random" in g else "—"
            lines.append(f"| {g['split']} | {100 * g['ratio']:g} % | {g['best_peer']} | "
                         f"{100 * g['margin']:+.2f} | {100 * g['one_std']:.2f} | "
                         f"{'yes' if g['met'] else 'no'}{' (inside 1 std)' if g['inside_one_std'] else ''}"
                         f" | {vr} |")
        lines.append("")
    return "\n".join(lines) + "\n"


def run_timing(out_dir: Path, *, log=print) -> dict:
    """Bit-exact model, ``PRESETS["desne"]`` pooled by ``default_pool`` (as the device runs
    it), the whole Fashion-MNIST training split (60 000) at 10 %: wall and CPU time of one :func:`select` call, and the coverage stage's share (timed
    on the same chunks' stage-4 inputs). Writes ``coreset_timing.json``."""
    from nms.verif.models import desne as dm

    fdir = _fashion_dir()
    ds = load_dataset(fdir) if fdir is not None else load_dataset("digits")
    X, y = ds.train_flat(), ds.y_train
    from nms.verif.models.pool import default_pool
    cfg = dm.PRESETS["desne"].replace(pool=default_pool(X.shape[1]))
    stage4 = [0.0]
    real_stage = dm.exemplar_stage

    def timed_stage(*args, **kw):
        t0 = time.process_time()
        out = real_stage(*args, **kw)
        stage4[0] += time.process_time() - t0
        return out

    dm.exemplar_stage = timed_stage  # measure stage 4 inside the real call
    try:
        w0, c0 = time.perf_counter(), time.process_time()
        res = dm.select(X, y, 0.1, cfg, seed=0)
        wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    finally:
        dm.exemplar_stage = real_stage
    out = {"dataset": ds.name, "n": int(len(y)), "ratio": 0.1, "config": repr(cfg),
           "selected": int(res["indices"].size), "wall_seconds": round(wall, 2),
           "cpu_seconds": round(cpu, 2), "stage4_cpu_seconds": round(stage4[0], 2),
           "limit_seconds": 60, "note": "wall time on the shared 2-core machine; CPU time is "
           "this process's alone (single-threaded BLAS)"}
    (Path(out_dir) / "coreset_timing.json").write_text(json.dumps(out, indent=1) + "\n")
    log(f"[timing] {out}")
    return out


def run(out_dir: Path, quick: bool = False) -> dict:
    """``nms bench coreset``: the search (if its report is missing) and every final piece
    (resuming finished runs), then both reports."""
    out_dir = Path(out_dir)
    if quick:
        return run_search(out_dir, quick=True)
    if not (out_dir / "coreset_search.json").exists():
        run_search(out_dir)
    for ds in FINAL_DATASETS:
        for tr in FINAL_TRAINERS:
            run_final_piece(out_dir, ds, tr)
    if not (out_dir / "coreset_timing.json").exists():
        run_timing(out_dir)
    return assemble(out_dir)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m nms.bench.coreset")
    p.add_argument("stage", choices=["search", "default", "final", "timing", "report",
                                      "relabel"])
    p.add_argument("--out", type=Path, default=Path("bench/results"))
    p.add_argument("--quick", action="store_true")
    p.add_argument("--fashion-seeds", nargs="+", type=int, default=None,
                   help="search: seeds on the Fashion-MNIST subset (default: the digits seeds)")
    p.add_argument("--extra", action="store_true",
                   help="search: extend the recorded search (its runs kept) with missing runs")
    p.add_argument("--only", nargs="+", default=None,
                   help="search --extra: the variants to run (default: those not yet recorded)")
    p.add_argument("--datasets", nargs="+", default=list(RANK_DATASETS),
                   choices=list(RANK_DATASETS) + list(SIDE_DATASETS),
                   help=f"search: data sets to run (default: {' '.join(RANK_DATASETS)})")
    p.add_argument("--peers", nargs="+", default=None,
                   help="search --extra: peers to run for missing seeds (default: none)")
    p.add_argument("--dataset", default=None)
    p.add_argument("--trainer", default=None)
    p.add_argument("--seeds", nargs="+", type=int, default=list(FINAL_SEEDS))
    p.add_argument("--methods", nargs="+", default=list(FINAL_METHODS))
    p.add_argument("--ratios", nargs="+", type=float, default=list(RATIOS),
                   help="final: the ratios to run (default: all of the table), so one seed can "
                        "be split between processes")
    p.add_argument("--redo", action="store_true",
                   help="final: drop the recorded runs of --methods in this piece, then run them")
    p.add_argument("--relabel", nargs=2, metavar=("OLD", "NEW"), default=None,
                   help="relabel: rename the recorded runs of method OLD to NEW in the piece")
    p.add_argument("--part-suffix", default="",
                   help="final: checkpoint file suffix, so parallel processes never share one")
    a = p.parse_args(argv)
    if a.stage == "search":
        run_search(a.out, a.quick, extra=a.extra, fashion_seeds=a.fashion_seeds, only=a.only,
                   peers=a.peers, datasets=a.datasets)
    elif a.stage == "default":
        run_default_check(a.out, seeds=DEFAULT_CHECK_SEEDS if a.seeds == list(FINAL_SEEDS)
                          else tuple(a.seeds))
    elif a.stage == "final":
        bad = [r for r in a.ratios if r not in RATIOS]
        if bad:
            p.error(f"--ratios: {bad} not among the table's ratios {list(RATIOS)}")
        run_final_piece(a.out, a.dataset, a.trainer, methods=a.methods, seeds=a.seeds,
                        ratios=tuple(a.ratios), part_suffix=a.part_suffix, redo=a.redo)
        assemble(a.out)
    elif a.stage == "relabel":
        if a.relabel is None or a.dataset is None or a.trainer is None:
            p.error("relabel needs --dataset, --trainer and --relabel OLD NEW")
        relabel_runs(a.out, a.dataset, a.trainer, *a.relabel)
        assemble(a.out)
    elif a.stage == "timing":
        run_timing(a.out)
        assemble(a.out)
    else:
        assemble(a.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
