"""``nms eval``: the coreset-quality harness (DE-SNE against the DNN-free baselines).

Protocol. A stratified **validation split** (``--val-fraction`` of every class, default 15 %,
drawn with the fixed seed :data:`VALIDATION_SEED`) is carved out of the training split; the rest
is the **selection pool**. For every method × ratio × seed the harness selects a coreset from
the pool (timed), trains one of the fixed classifiers of :mod:`nms.sw.classifier`
(``--trainer mlp|cnn``) on the coreset only, and scores it on the validation split *and* on the
test split. Every algorithm choice and hyper-parameter of this project is made on the
validation accuracy; the test accuracy is for the final table only. A "full" row trains on the
whole pool with the same step budget, as the reference. With ``--use-weights`` the trainer
receives a selector's ``weights`` (the DeepCore contract) as per-sample loss weights.

Outputs in ``--out`` (``<name>`` = dataset name):

* ``eval_<name>.json`` — configuration, dataset summary, every run, the aggregated table;
* ``eval_<name>.md`` — accuracy mean ± std per method and ratio, coreset sizes, selection time;
* ``eval_<name>_embedding.png`` — DE-SNE embeddings of a few classes with the chosen exemplars
  marked (when ``desne`` is among the methods);
* ``eval_<name>.partial.json`` — finished runs so far, rewritten after every run while the
  harness works and removed when it completes.

Runs go seed by seed (all ratios and methods for the first seed, then the next seed), so an
interrupted run still has a complete first-seed table in the partial file.

Selectors that do not use the seed (``herding``, ``kcenter``, ``typiclust``, ``maxherding``) are
**deterministic**: they run once per ratio and their selection is reused for every seed, so their
spread over seeds is the classifier's alone; the JSON marks those runs
``"selection_reused": true`` and the report lists them.
"""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path

import numpy as np

from nms.sw.baselines import SELECTORS
from nms.sw.classifier import TRAINERS, train_and_score_many
from nms.sw.datasets import Dataset, load_dataset
from nms.sw.cliargs import ratio_arg, seed_arg
from nms.verif.models.budget import validate_ratio

__all__ = ["add_arguments", "main", "run_eval", "write_reports", "validation_split",
           "EvalData", "prepare", "score_coreset", "DEFAULT_METHODS", "DEFAULT_RATIOS",
           "DEFAULT_SEEDS", "VALIDATION_FRACTION", "VALIDATION_SEED"]

DEFAULT_METHODS = ("desne", "random", "herding", "kcenter", "facility", "typiclust", "maxherding")
DEFAULT_RATIOS = (0.01, 0.05, 0.1, 0.2)
DEFAULT_SEEDS = (0, 1, 2, 3, 4)
#: share of every class held out of the selection pool for validation, and its fixed seed
VALIDATION_FRACTION = 0.15
VALIDATION_SEED = 20240601
#: embedding plot: ratio used for the DE-SNE run whose chunks are drawn (closest listed ratio)
PLOT_RATIO = 0.1


def add_arguments(parser) -> None:
    parser.add_argument("--dataset", default="digits",
                        help="'digits' (bundled, default), a directory of IDX files "
                             "(e.g. Fashion-MNIST), a .npz file or a .npy image array")
    parser.add_argument("--labels", default=None,
                        help=".npy label array (only with a .npy --dataset)")
    parser.add_argument("--methods", nargs="+", default=list(DEFAULT_METHODS),
                        help=f"selectors to compare, from {', '.join(SELECTORS)} "
                             f"(default: {' '.join(DEFAULT_METHODS)})")
    parser.add_argument("--ratios", nargs="+", type=ratio_arg, default=list(DEFAULT_RATIOS),
                        help="coreset ratios in (0, 1] (default: 0.01 0.05 0.1 0.2)")
    parser.add_argument("--seeds", nargs="+", type=seed_arg, default=list(DEFAULT_SEEDS),
                        help="seeds for selection and classifier (default: 0 1 2)")
    parser.add_argument("--trainer", choices=sorted(TRAINERS), default="mlp",
                        help="scoring classifier: the fixed MLP (default) or the small CNN")
    parser.add_argument("--steps", type=int, default=1000,
                        help="classifier gradient steps, the same for every ratio (default: 1000)")
    parser.add_argument("--val-fraction", type=float, default=VALIDATION_FRACTION,
                        help=f"share of every class held out for validation "
                             f"(default: {VALIDATION_FRACTION})")
    parser.add_argument("--use-weights", action="store_true",
                        help="train with the selectors' per-sample weights (when they give any)")
    parser.add_argument("--plot-classes", type=int, default=3,
                        help="classes drawn in the DE-SNE embedding plot (default: 3; 0 = none)")
    parser.add_argument("--no-full", action="store_true",
                        help="skip the full-training-set reference row")
    parser.add_argument("--out", type=Path, default=Path("reports/eval"),
                        help="output folder (default: reports/eval)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def _closest(values, target):
    return min(values, key=lambda v: (abs(v - target), v))


def validation_split(y, *, fraction: float = VALIDATION_FRACTION, seed: int = VALIDATION_SEED):
    """Stratified split of a training split into (selection pool, validation) indices.

    Every class gives ``round(fraction · n_c)`` members (at least 1, and at least 2 stay in the
    pool, which DE-SNE needs), drawn with a generator of the fixed ``seed``. Both index arrays
    are sorted ascending.
    """
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) \
            or not np.isfinite(fraction) or not 0 < fraction < 1:
        raise ValueError(f"validation fraction must be a number in (0, 1), got {fraction!r}")
    y = np.asarray(y)
    rng = np.random.default_rng(seed)
    val = []
    for label in np.unique(y):
        members = np.flatnonzero(y == label)
        take = min(max(1, int(round(fraction * members.size))), members.size - 2)
        if take < 1:
            raise ValueError(f"class {label!r} has {members.size} training samples; a validation "
                             "split needs at least 3 (2 stay in the selection pool)")
        val.append(rng.choice(members, size=take, replace=False))
    val = np.sort(np.concatenate(val)).astype(np.int64)
    pool = np.setdiff1d(np.arange(y.size), val).astype(np.int64)
    return pool, val


class EvalData:
    """The arrays of one protocol: selection pool (flat for selectors, image-shaped for the
    trainer), validation and test splits, pixel scale and the full label set."""

    def __init__(self, ds: Dataset, *, val_fraction: float = VALIDATION_FRACTION):
        if not isinstance(ds, Dataset):
            raise TypeError(f"EvalData needs a Dataset, got {type(ds).__name__}")
        if not ds.has_test:
            raise ValueError(f"dataset {ds.name!r} ({ds.source}) has no test split; the harness "
                             "scores coresets on it (give t10k-* IDX files or X_test/y_test)")
        self.name = ds.name
        self.summary = ds.summary()
        self.pool, self.val = validation_split(ds.y_train, fraction=val_fraction)
        self.val_fraction = float(val_fraction)
        self.X = ds.train_flat()[self.pool]            # what selectors see
        self.y = ds.y_train[self.pool]
        self.images = ds.X_train[self.pool]            # what the trainer sees
        self.evals = {"val": (ds.X_train[self.val], ds.y_train[self.val]),
                      "test": (ds.X_test, ds.y_test)}
        self.max_value = ds.max_value
        self.classes = ds.classes
        self.summary.update({"n_pool": int(self.pool.size), "n_val": int(self.val.size),
                             "val_fraction": self.val_fraction, "val_seed": VALIDATION_SEED})


def prepare(ds: Dataset, *, val_fraction: float = VALIDATION_FRACTION) -> EvalData:
    """Split ``ds`` into selection pool / validation / test (see :class:`EvalData`)."""
    return EvalData(ds, val_fraction=val_fraction)


def _trainer_config(trainer: str, steps: int):
    if trainer not in TRAINERS:
        raise ValueError(f"trainer must be one of {sorted(TRAINERS)}, not {trainer!r}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an integer >= 1, got {steps!r}")
    return TRAINERS[trainer][1](steps=steps)


def score_coreset(data: EvalData, indices, *, trainer: str = "mlp", steps: int = 1000,
                  seed: int = 0, weights=None, splits=("val", "test")) -> dict:
    """Train the fixed ``trainer`` on the pool rows ``indices`` (optionally weighted) and return
    its accuracy on each of ``splits`` (``"val"``, ``"test"``)."""
    cfg = _trainer_config(trainer, steps)
    idx = np.asarray(indices, dtype=np.int64)
    evals = {s: data.evals[s] for s in splits}
    return train_and_score_many(data.images[idx], data.y[idx], evals, max_value=data.max_value,
                                classes=data.classes, config=cfg, seed=seed,
                                sample_weight=weights)


def run_eval(ds: Dataset, *, methods=DEFAULT_METHODS, ratios=DEFAULT_RATIOS,
             seeds=DEFAULT_SEEDS, trainer: str = "mlp", steps: int = 1000,
             val_fraction: float = VALIDATION_FRACTION, use_weights: bool = False,
             full: bool = True, plot_classes: int = 3, progress: bool = True,
             checkpoint=None) -> dict:
    """Run the evaluation grid and return the JSON-able result (see module docstring).

    Parameters
    ----------
    ds : Dataset
        Must have a test split.
    methods : sequence of str
        Keys of :data:`nms.sw.baselines.SELECTORS`.
    ratios : sequence of float
        Coreset ratios in (0, 1] (of the selection pool).
    seeds : sequence of int
        Each seed drives both the selection and the classifier.
    trainer : {"mlp", "cnn"}
        Scoring classifier.
    steps : int
        Gradient steps, the same at every ratio.
    val_fraction : float
        Share of every class held out of the pool for validation.
    use_weights : bool
        Pass selectors' ``weights`` to the trainer as loss weights.
    full : bool
        Also train on the whole pool (reference row, method ``"full"``).
    plot_classes : int
        Number of classes whose DE-SNE chunk embeddings are kept for the plot.
    progress : bool
        Show a tqdm progress bar.
    checkpoint : callable, optional
        Called with the list of finished runs after each one (for partial results).
    """
    from tqdm import tqdm

    if not isinstance(ds, Dataset):
        raise TypeError(f"run_eval needs a Dataset, got {type(ds).__name__}")
    if not ds.has_test:
        raise ValueError(f"dataset {ds.name!r} ({ds.source}) has no test split; the harness "
                         "scores coresets on it (give t10k-* IDX files or X_test/y_test)")
    methods, seeds = list(methods), [int(s) for s in seeds]
    ratios = [validate_ratio(r) for r in ratios]
    unknown = [m for m in methods if m not in SELECTORS]
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; choose from {sorted(SELECTORS)}")
    if "desne" in methods:
        try:
            import nms.verif.models.desne  # noqa: F401  (fail before hours of baseline runs)
        except ModuleNotFoundError as exc:
            raise ValueError(f"method 'desne' needs nms.verif.models.desne, which is not available "
                             f"({exc}); leave it out of --methods") from None
    for name, vals in (("methods", methods), ("ratios", ratios), ("seeds", seeds)):
        if not vals:
            raise ValueError(f"{name} is empty; give at least one")
        if len(set(vals)) != len(vals):
            raise ValueError(f"{name} {vals} contain duplicates")
    if isinstance(plot_classes, bool) or not isinstance(plot_classes, int) or plot_classes < 0:
        raise ValueError(f"plot_classes must be an integer >= 0, got {plot_classes!r}")
    cfg = _trainer_config(trainer, steps)
    data = prepare(ds, val_fraction=val_fraction)

    X, y = data.X, data.y
    classes = data.classes
    plot_ratio = _closest(ratios, PLOT_RATIO)
    plot_labels = [int(c) for c in classes[:plot_classes]]

    runs, embedding, cache = [], None, {}
    total = len(methods) * len(ratios) * len(seeds) + (len(seeds) if full else 0)
    bar = tqdm(total=total, desc=f"nms eval {ds.name}", unit="run", disable=not progress)
    # seed-major order: an interrupted run still covers every method and ratio for seed 0
    for seed in seeds:
        for ratio in ratios:
            for method in methods:
                fn = SELECTORS[method]
                bar.set_postfix_str(f"{method} r={ratio:g} s={seed}")
                key = (method, ratio)
                reused = bool(getattr(fn, "seed_independent", False)) and key in cache
                if reused:
                    result, t_sel = cache[key]
                else:
                    want_details = (method.startswith("desne") and ratio == plot_ratio
                                    and seed == seeds[0] and plot_labels)
                    t0 = time.perf_counter()
                    if want_details:
                        result = fn(X, y, ratio, seed=seed, details=True)
                    else:
                        result = fn(X, y, ratio, seed=seed)
                    t_sel = time.perf_counter() - t0
                    if want_details:
                        embedding = _embedding_record(result["chunks"], plot_labels, ratio, seed)
                    # keep only what later seeds reuse (DE-SNE details can be large)
                    cache[key] = ({k: result[k] for k in ("indices", "weights") if k in result},
                                  t_sel)
                idx = np.asarray(result["indices"], dtype=np.int64)
                w = result.get("weights") if use_weights else None
                t0 = time.perf_counter()
                acc = score_coreset(data, idx, trainer=trainer, steps=steps, seed=seed, weights=w)
                runs.append({
                    "method": method, "ratio": ratio, "seed": seed,
                    "coreset_size": int(idx.size),
                    "classes_in_coreset": int(np.unique(y[idx]).size),
                    "select_seconds": round(t_sel, 4), "selection_reused": reused,
                    "deterministic": bool(getattr(fn, "seed_independent", False)),
                    "weighted": w is not None,
                    "train_seconds": round(time.perf_counter() - t0, 4),
                    "val_accuracy": acc["val"], "test_accuracy": acc["test"],
                })
                if checkpoint is not None:
                    checkpoint(runs)
                bar.update(1)
    if full:
        for seed in seeds:
            bar.set_postfix_str(f"full s={seed}")
            t0 = time.perf_counter()
            acc = score_coreset(data, np.arange(y.size), trainer=trainer, steps=steps, seed=seed)
            runs.append({"method": "full", "ratio": 1.0, "seed": seed,
                         "coreset_size": int(len(y)), "classes_in_coreset": int(classes.size),
                         "select_seconds": 0.0, "selection_reused": False,
                         "deterministic": True, "weighted": False,
                         "train_seconds": round(time.perf_counter() - t0, 4),
                         "val_accuracy": acc["val"], "test_accuracy": acc["test"]})
            bar.update(1)
    bar.close()
    return {
        "dataset": data.summary,
        "config": {"methods": methods, "ratios": ratios, "seeds": seeds,
                   "trainer": trainer, "classifier": {"model": trainer.upper(), **vars(cfg)},
                   "use_weights": bool(use_weights), "val_fraction": data.val_fraction,
                   "val_seed": VALIDATION_SEED, "plot_ratio": plot_ratio,
                   "plot_classes": plot_labels,
                   "deterministic_methods": [m for m in methods
                                             if getattr(SELECTORS[m], "seed_independent", False)]},
        "machine": {"python": platform.python_version(), "numpy": np.__version__,
                    "processor": platform.machine()},
        "runs": runs,
        "summary": summarise(runs),
        "embedding": embedding,
    }


def _embedding_record(chunks, labels, ratio, seed):
    """First chunk of each plotted class: points in float (Q.16 → /65536) and exemplar marks."""
    out = []
    for label in labels:
        chunk = next((c for c in chunks if int(c["label"]) == label), None)
        if chunk is None:
            continue
        members = np.asarray(chunk["members"])
        chosen = np.isin(members, np.asarray(chunk["selected"]))
        out.append({"label": label, "n": int(members.size), "n_selected": int(chosen.sum()),
                    "xy": (np.asarray(chunk["embedding"]) / 65536.0).tolist(),
                    "selected": chosen.tolist()})
    return {"ratio": ratio, "seed": seed, "classes": out}


def summarise(runs) -> list[dict]:
    """Mean ± std (population, over seeds) of validation/test accuracy and timing per method
    and ratio."""
    groups = {}
    for r in runs:
        groups.setdefault((r["method"], r["ratio"]), []).append(r)
    rows = []
    for (method, ratio), rs in groups.items():
        fresh = [r["select_seconds"] for r in rs if not r["selection_reused"]]
        row = {"method": method, "ratio": ratio, "n_seeds": len(rs),
               "deterministic": bool(rs[0].get("deterministic", False)),
               "coreset_size": int(np.mean([r["coreset_size"] for r in rs])),
               "select_seconds_mean": float(np.mean(fresh)) if fresh else 0.0,
               "train_seconds_mean": float(np.mean([r["train_seconds"] for r in rs]))}
        for split in ("val", "test"):
            acc = np.array([r[f"{split}_accuracy"] for r in rs])
            row[f"{split}_mean"] = float(acc.mean())
            row[f"{split}_std"] = float(acc.std())
        rows.append(row)
    return rows


def _markdown(result: dict) -> str:
    ds, cfg = result["dataset"], result["config"]
    rows = {(r["method"], r["ratio"]): r for r in result["summary"]}
    ratios, methods = cfg["ratios"], cfg["methods"]
    clf = cfg["classifier"]
    arch = (f"MLP {clf['hidden']} ReLU" if cfg["trainer"] == "mlp" else
            f"CNN conv3×3·{clf['channels1']} → pool → conv3×3·{clf['channels2']} → pool → dense")
    det = ", ".join(cfg["deterministic_methods"]) or "none"
    lines = [
        f"# Coreset quality on {ds['name']} ({cfg['trainer'].upper()})",
        "",
        f"Training split {ds['n_train']} images {tuple(ds['image_shape'])} = selection pool "
        f"{ds['n_pool']} + stratified validation {ds['n_val']} ({100 * cfg['val_fraction']:g} % "
        f"per class, fixed seed {cfg['val_seed']}); test split {ds['n_test']}; source "
        f"`{ds['source']}`. Classifier: {arch}, Adam lr {clf['learning_rate']}, {clf['steps']} "
        f"steps of batch {clf['batch_size']} for every ratio; seeds {cfg['seeds']}"
        f"{'; trained with the selectors weights' if cfg['use_weights'] else ''}. Accuracy "
        "mean ± std over seeds (%). Deterministic selectors (one selection reused for every "
        f"seed, so their spread is the classifier's alone): {det}.",
    ]
    for split, title in (("test", "Test split (final table)"),
                         ("val", "Validation split (what choices are made on)")):
        lines += ["", f"**{title}**", "",
                  "| method | " + " | ".join(f"{100 * r:g} %" for r in ratios) + " |",
                  "|---|" + "---:|" * len(ratios)]
        for m in methods:
            cells = [f"{100 * rows[(m, r)][f'{split}_mean']:.2f} ± "
                     f"{100 * rows[(m, r)][f'{split}_std']:.2f}" for r in ratios]
            lines.append(f"| {m} | " + " | ".join(cells) + " |")
    if ("full", 1.0) in rows:
        f = rows[("full", 1.0)]
        lines += ["", f"Full selection pool ({f['coreset_size']} images, same step budget): "
                  f"test {100 * f['test_mean']:.2f} ± {100 * f['test_std']:.2f} %, validation "
                  f"{100 * f['val_mean']:.2f} ± {100 * f['val_std']:.2f} %."]
    lines += ["", "Coreset size (images) and selection time (s, mean over fresh selections):", "",
              "| method | " + " | ".join(f"{100 * r:g} %" for r in ratios) + " |",
              "|---|" + "---:|" * len(ratios)]
    for m in methods:
        cells = [f"{rows[(m, r)]['coreset_size']} / {rows[(m, r)]['select_seconds_mean']:.2f} s"
                 for r in ratios]
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    lines += ["", "Timings are wall-clock on a shared machine; they are measurements, not limits."]
    return "\n".join(lines) + "\n"


def _plot(result: dict, path: Path) -> bool:
    emb = result.get("embedding")
    if not emb or not emb["classes"]:
        return False
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cls = emb["classes"]
    fig, axes = plt.subplots(1, len(cls), figsize=(4 * len(cls), 4), squeeze=False)
    for ax, c in zip(axes[0], cls):
        xy = np.asarray(c["xy"], dtype=float)
        sel = np.asarray(c["selected"], dtype=bool)
        ax.scatter(xy[~sel, 0], xy[~sel, 1], s=4, c="0.6", label="class members")
        ax.scatter(xy[sel, 0], xy[sel, 1], s=28, c="crimson", marker="x", label="exemplars")
        ax.set_title(f"class {c['label']}: {c['n_selected']} of {c['n']}")
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0][0].legend(loc="lower left", fontsize=8)
    fig.suptitle(f"DE-SNE embedding ({result['dataset']['name']}, ratio "
                 f"{100 * emb['ratio']:g} %, seed {emb['seed']}, first chunk per class)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def write_reports(result: dict, out: Path) -> dict[str, Path]:
    """Write JSON, Markdown and (if there is an embedding) PNG; return their paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"eval_{result['dataset']['name']}" + (
        "" if result["config"].get("trainer", "mlp") == "mlp" else f"_{result['config']['trainer']}")
    paths = {"json": out / f"{stem}.json", "md": out / f"{stem}.md"}
    paths["json"].write_text(json.dumps(result, indent=1) + "\n")
    paths["md"].write_text(_markdown(result))
    png = out / f"{stem}_embedding.png"
    if _plot(result, png):
        paths["png"] = png
    return paths


def main(args) -> int:
    if args.steps < 1:
        raise ValueError(f"--steps must be >= 1, got {args.steps}")
    if args.plot_classes < 0:
        raise ValueError(f"--plot-classes must be >= 0, got {args.plot_classes}")
    ds = load_dataset(args.dataset, labels=args.labels)
    args.out.mkdir(parents=True, exist_ok=True)
    suffix = "" if args.trainer == "mlp" else f"_{args.trainer}"
    partial = args.out / f"eval_{ds.name}{suffix}.partial.json"

    def checkpoint(runs):  # partial results survive an interrupted long run
        partial.write_text(json.dumps({"runs": runs, "summary": summarise(runs)}, indent=1))

    result = run_eval(ds, methods=args.methods, ratios=args.ratios, seeds=args.seeds,
                      trainer=args.trainer, steps=args.steps, val_fraction=args.val_fraction,
                      use_weights=args.use_weights, full=not args.no_full,
                      plot_classes=args.plot_classes, progress=not args.no_progress,
                      checkpoint=checkpoint)
    paths = write_reports(result, args.out)
    partial.unlink(missing_ok=True)
    print(paths["md"].read_text())
    for kind, p in paths.items():
        print(f"[eval] {kind}: {p}")
    if "png" not in paths and "desne" in args.methods and args.plot_classes:
        print("[eval] no embedding plot (DE-SNE produced no chunk for the plotted classes)")
    return 0
