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
VARIANT_DIRECTION = {
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


def _datasets(search: bool, quick: bool):
    """(name, EvalData) pairs; the search uses a stratified Fashion-MNIST pool subset."""
    out = [("digits", prepare(load_dataset("digits")))]
    fdir = _fashion_dir()
    if fdir is not None:
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
        out.append(("fashion-mnist", data))
    return out


def _agg(vals):
    a = np.asarray(vals, dtype=np.float64)
    return {"mean": float(a.mean()), "std": float(a.std()), "n": int(a.size)}


# --- stage 1: search ---------------------------------------------------------------------------

def run_search(out_dir: Path, quick: bool = False, *, log=print) -> dict:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ratios = QUICK_RATIOS if quick else RATIOS
    seeds = (0,) if quick else SEARCH_SEEDS
    variants = dict(list(VARIANTS.items())[:4]) if quick else VARIANTS
    runs = []
    t_start = time.time()
    for ds_name, data in _datasets(True, quick):
        cache = {}
        for seed in seeds:
            for ratio in ratios:
                entries = [(m, None) for m in PEERS] + [(n, v) for n, v in variants.items()]
                for name, v in entries:
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
                    (out_dir / "coreset_search.partial.json").write_text(json.dumps(runs))
    result = _search_result(runs, ratios, seeds, quick)
    (out_dir / "coreset_search.json").write_text(json.dumps(result, indent=1) + "\n")
    (out_dir / "coreset_search.md").write_text(_search_markdown(result))
    (out_dir / "coreset_search.partial.json").unlink(missing_ok=True)
    return result


def _search_result(runs, ratios, seeds, quick):
    table = {}
    for r in runs:
        table.setdefault((r["dataset"], r["method"], r["kind"], r["ratio"]), []).append(
            r["val_accuracy"])
    rows = [{"dataset": d, "method": m, "kind": k, "ratio": q, **_agg(v)}
            for (d, m, k, q), v in table.items()]
    cells = sorted({(r["dataset"], r["ratio"]) for r in rows})
    best_peer = {}
    for d, q in cells:
        peers = [r for r in rows if r["dataset"] == d and r["ratio"] == q and r["kind"] == "peer"]
        b = max(peers, key=lambda r: r["mean"])
        best_peer[(d, q)] = b
    scores = []
    for m in dict.fromkeys(r["method"] for r in rows if r["kind"] == "variant"):
        margins = []
        for d, q in cells:
            row = next(r for r in rows if r["dataset"] == d and r["ratio"] == q and r["method"] == m)
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
                         for n, v in VARIANTS.items()},
            "rows": rows,
            "best_peer": [{"dataset": d, "ratio": q, "method": b["method"], "mean": b["mean"]}
                          for (d, q), b in best_peer.items()],
            "ranking": scores, "winner": scores[0]["method"] if scores else None,
            "machine": {"python": platform.python_version(), "numpy": np.__version__}}


def _search_markdown(res) -> str:
    rows = {(r["dataset"], r["method"], r["ratio"]): r for r in res["rows"]}
    dsets = list(dict.fromkeys(r["dataset"] for r in res["rows"]))
    ratios = res["ratios"]
    lines = ["# DE-SNE variant search (validation accuracy, MLP)", "",
             f"Seeds {res['seeds']}; Fashion-MNIST pool subset {res['fashion_pool_per_class']} "
             "images per class, whole validation split; digits whole pool. Validation accuracy "
             "mean ± std over seeds (%); the test split is not read. Winner = largest worst-case "
             "margin to the best peer over every (data set, ratio).", "",
             "| variant | direction | min margin | mean margin | cells ≥ best peer |",
             "|---|---|---:|---:|---:|"]
    for s in res["ranking"]:
        lines.append(f"| {s['method']} | {s['direction']} | {100 * s['min_margin']:+.2f} | "
                     f"{100 * s['mean_margin']:+.2f} | {s['cells_at_or_above_best_peer']} |")
    for d in dsets:
        lines += ["", f"**{d}**", "",
                  "| method | " + " | ".join(f"{100 * q:g} %" for q in ratios) + " |",
                  "|---|" + "---:|" * len(ratios)]
        methods = list(dict.fromkeys(r["method"] for r in res["rows"] if r["dataset"] == d))
        for m in methods:
            cells = [f"{100 * rows[(d, m, q)]['mean']:.2f} ± {100 * rows[(d, m, q)]['std']:.2f}"
                     if (d, m, q) in rows else "—" for q in ratios]
            lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m nms.bench.coreset")
    p.add_argument("stage", choices=["search", "final", "report"])
    p.add_argument("--out", type=Path, default=Path("bench/results"))
    p.add_argument("--quick", action="store_true")
    p.add_argument("--dataset", default=None)
    p.add_argument("--trainer", default=None)
    p.add_argument("--seeds", nargs="+", type=int, default=None)
    a = p.parse_args(argv)
    if a.stage == "search":
        run_search(a.out, a.quick)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
