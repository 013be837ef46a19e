"""``nms adapt`` — online adaptation of a pre-trained quantised CNN under shift and weight drift.

The protocol of Gural et al. (research notes ``lrt.md`` section 6), scaled to a CPU:

1. **Pre-train offline** (:func:`nms.sw.pretrain.pretrain`) the paper's CNN shape
   (``lrt-cnn``: 4 valid 3x3 convs, 2 max-pools with ReLU + streaming BN, 2 dense layers; one
   conv block for 8x8 digits) on a pre-training part of the training split.
2. **Deploy** a copy per method and stream the scenario's online samples one at a time
   (batch size 1): predict, then learn from the label. Scenarios (:mod:`nms.sw.streams`,
   :mod:`nms.sw.drift`): ``control``, ``shift`` (10 blocks of augmentations), ``analog-drift``,
   ``digital-drift``.
3. **Methods**: ``inference`` (nothing learns), ``bias-only`` (biases + BN gamma/beta), ``sgd``
   (per-sample quantised SGD), ``sgd-maxnorm`` (a and dz max-normed), ``sks-nonorm``,
   ``sks-maxnorm`` (rank-4 SKS, B = 10 conv / 100 dense), ``batched`` (the exact gradient
   summed over the same B, one write per flush: what batching alone buys).
4. **Hyperparameters** (the weight learning rate of every learning method) are chosen on a
   VALIDATION stream: the same scenario built from a disjoint part of the training split with
   a different seed; the evaluation stream is never used for a choice. The sweep is recorded
   in the report.
5. **Metrics**: online accuracy = bias-corrected EMA (0.999) of per-sample predict-then-learn
   correctness (the paper's metric), the mean correctness of the last 10 % of the stream, and
   per shift block; worst-case (max over cells) and mean writes per weight cell by the paper's
   count and by the changed-cells count (:class:`nms.sw.lrt._Trainer`).

The pools: the training split is permuted once (seed 0) and cut into pre-training / validation
pool / evaluation pool; the test split scores the pre-trained model offline.
"""

from __future__ import annotations

import copy
import json
import platform
import time
from pathlib import Path

import numpy as np

from nms.sw.cliargs import positive_int_arg, seed_arg
from nms.sw.drift import WeightDrift
from nms.sw.lrt import (BatchedTrainer, BiasOnlyTrainer, InferenceTrainer, SGDTrainer,
                        SKSTrainer)
from nms.sw.nn import QuantConfig, build_model
from nms.sw.pretrain import pretrain
from nms.sw.streams import SCENARIOS, make_stream

__all__ = ["METHODS", "LR_GRID", "DOMAINS", "add_arguments", "main", "prepare_domain",
           "run_method", "run_scenario", "write_reports"]

METHODS = ("inference", "bias-only", "sgd", "sgd-maxnorm", "sks-nonorm", "sks-maxnorm", "batched")

#: learning-rate candidates swept on the validation stream (methods without one: a single run)
#: (grids centred after a first digits validation run, where 0.03 / 0.003 were edge choices)
LR_GRID = {"sgd": (0.01, 0.1, 1.0), "sgd-maxnorm": (0.01, 0.03, 0.1),
           "sks-nonorm": (0.001, 0.003, 0.01), "sks-maxnorm": (0.01, 0.03, 0.1),
           "batched": (0.01, 0.03, 0.1)}

#: network and split per dataset kind (channels scaled down from the paper's 128 for a CPU)
DOMAINS = {
    "digits": {"channels": (8,), "hidden": (32,), "n_pretrain": 700, "n_val_pool": 300,
               "pretrain_epochs": 20},
    "image28": {"channels": (8,), "hidden": (64,), "n_pretrain": 30000, "n_val_pool": 10000,
                "pretrain_epochs": 3},
}

_PRETRAINED: dict = {}


def add_arguments(parser) -> None:
    parser.add_argument("--scenario", required=True, choices=SCENARIOS,
                        help="control | shift | analog-drift | digital-drift")
    parser.add_argument("--dataset", default="digits",
                        help="'digits' (default; quick) or an IDX directory such as "
                             "../shared/datasets/fashion-mnist, or a .npz file")
    parser.add_argument("--samples", type=positive_int_arg, default=None,
                        help="evaluation stream length (default: 3000 for digits, 20000 otherwise)")
    parser.add_argument("--val-samples", type=positive_int_arg, default=None,
                        help="validation stream length for the learning-rate sweep "
                             "(default: a quarter of --samples, at least 1000)")
    parser.add_argument("--methods", default=",".join(METHODS),
                        help=f"comma-separated subset of {','.join(METHODS)} (default: all)")
    parser.add_argument("--seed", type=seed_arg, default=0, help="stream/drift/trainer seed (default 0)")
    parser.add_argument("--out", type=Path, default=Path("reports/adapt"),
                        help="output folder (default reports/adapt)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def parse_methods(text: str) -> list[str]:
    """``"sgd,sks-maxnorm"`` -> list, rejecting unknown or repeated names."""
    names = [t.strip() for t in str(text).split(",") if t.strip()]
    if not names:
        raise ValueError("--methods is empty; name at least one of " + ", ".join(METHODS))
    bad = [n for n in names if n not in METHODS]
    if bad:
        raise ValueError(f"unknown method(s) {bad}; choose from {', '.join(METHODS)}")
    if len(set(names)) != len(names):
        raise ValueError(f"--methods names a method twice: {names}")
    return names


# --- data and the pre-trained model ------------------------------------------------------------
def prepare_domain(dataset: str = "digits", *, seed: int = 0, progress: bool = False) -> dict:
    """Load ``dataset``, split it, and pre-train the deployed network (cached per process).

    Returns
    -------
    dict
        ``net`` (the pre-trained network, never trained further: copy it), ``pools``
        (``val``/``eval`` raw images and labels), ``max_value``, ``pretrain`` (its report incl.
        offline test accuracy), ``config``.
    """
    from nms.sw.datasets import load_dataset

    key = (str(dataset), int(seed))
    if key in _PRETRAINED:
        return _PRETRAINED[key]
    ds = load_dataset(dataset)
    if ds.X_train.ndim != 3:
        raise ValueError(f"dataset {ds.name!r} is flat {ds.X_train.shape}; nms adapt needs images")
    if ds.X_test is None:
        raise ValueError(f"dataset {ds.name!r} has no test split (needed to score the pre-training)")
    h = ds.X_train.shape[1]
    kind = "image28" if h >= 16 else "digits"
    cfg = dict(DOMAINS[kind])
    n = len(ds.y_train)
    n_pre = min(cfg["n_pretrain"], n // 2)
    n_val = min(cfg["n_val_pool"], (n - n_pre) // 2)
    order = np.random.default_rng(0).permutation(n)
    parts = {"pretrain": order[:n_pre], "val": order[n_pre:n_pre + n_val],
             "eval": order[n_pre + n_val:]}
    quant = QuantConfig()
    qin = quant.quantizers()["in"]

    def prep(X):
        return qin(X.astype(np.float64) / ds.max_value)[:, None]

    net = build_model("lrt-cnn", input_shape=ds.X_train.shape[1:], n_classes=int(ds.y_train.max()) + 1,
                      quant=quant, rng=np.random.default_rng([seed, 1]), channels=cfg["channels"],
                      hidden=cfg["hidden"])
    pre = parts["pretrain"]
    rep = pretrain(net, prep(ds.X_train[pre]), ds.y_train[pre], epochs=cfg["pretrain_epochs"],
                   seed=seed, progress=progress)
    rep["test_accuracy"] = float(np.mean(net.predict(prep(ds.X_test)) == ds.y_test))
    rep["n_pretrain"] = int(len(pre))
    out = {"net": net, "name": ds.name, "max_value": int(ds.max_value), "pretrain": rep,
           "config": {**cfg, "kind": kind, "n_val_pool": int(n_val),
                      "n_eval_pool": int(len(parts["eval"])), "n_pretrain": int(n_pre)},
           "pools": {k: (ds.X_train[v], ds.y_train[v]) for k, v in parts.items() if k != "pretrain"},
           "layers": [{"name": l.name, "shape": list(l.W.shape)} for l in net.weight_layers]}
    _PRETRAINED[key] = out
    return out


# --- one method on one stream -------------------------------------------------------------------
def make_trainer(method: str, net, *, lr: float | None, seed: int):
    """The trainer of ``method`` on ``net`` (``lr``: the weight learning rate, where it has one)."""
    if method == "inference":
        return InferenceTrainer(net, seed=seed)
    if method == "bias-only":
        # the authors' bias-only runs are "bias-only/no-norm" (lrt-02Xb: norm_b = False)
        return BiasOnlyTrainer(net, maxnorm=False, seed=seed)
    if method in ("sgd", "sgd-maxnorm"):
        return SGDTrainer(net, lr=lr, maxnorm=method == "sgd-maxnorm", seed=seed)
    if method in ("sks-nonorm", "sks-maxnorm"):
        return SKSTrainer(net, rank=4, batch_fc=100, batch_conv=10, lr=lr,
                          maxnorm=method == "sks-maxnorm", seed=seed)
    if method == "batched":
        return BatchedTrainer(net, batch_fc=100, batch_conv=10, lr=lr, maxnorm=True, seed=seed)
    raise ValueError(f"unknown method {method!r}; choose from {', '.join(METHODS)}")


class _Run:
    """One method deployed on a copy of the network, stepped one stream sample at a time.

    Every run owns its network copy, trainer and drift generator, so runs over the same
    stream are independent: stepping several in lockstep gives exactly the results of
    running them one after the other.
    """

    def __init__(self, net0, method, stream, *, lr, scenario, seed, points):
        self.method, self.lr, self.stream = method, lr, stream
        self.net = copy.deepcopy(net0)
        self.tr = make_trainer(method, self.net, lr=lr, seed=seed)
        self.drift = None
        if scenario.endswith("-drift"):
            self.drift = WeightDrift(scenario.split("-")[0], rng=np.random.default_rng([seed, 3]))
        self.n = len(stream)
        self.every = max(1, self.n // points)
        self.correct = np.zeros(self.n, dtype=bool)
        self.ema, self.curve, self.seconds = 0.0, [], 0.0

    def step(self, i: int) -> None:
        t0 = time.perf_counter()
        c = self.tr.step(self.stream.x(i), int(self.stream.y[i]))
        self.correct[i] = c
        self.ema = 0.999 * self.ema + 0.001 * c
        if self.drift is not None:
            self.drift.after_sample(self.net, i + 1)
        if (i + 1) % self.every == 0 or i + 1 == self.n:
            self._point(i + 1)
        self.seconds += time.perf_counter() - t0

    def _point(self, k: int) -> None:
        tr = self.tr
        w, wc = tr.write_stats(), tr.write_stats(tr.writes_changed)
        self.curve.append({"samples": k, "accuracy": self.ema / (1 - 0.999 ** k),
                           "writes_max": w["max"], "writes_changed_max": wc["max"],
                           "writes_mean": w["mean"]})

    def result(self, n: int) -> dict:
        """Totals after the first ``n`` samples (``n`` < the stream length if stopped early)."""
        if not self.curve or self.curve[-1]["samples"] != n:
            self._point(n)
        tr, correct = self.tr, self.correct[:n]
        tail = max(1, n // 10)
        blocks = [{"name": name, "start": a, "stop": min(b, n),
                   "accuracy": float(correct[max(a, min(b, n) - max(1, (b - a) // 5)):min(b, n)].mean())
                   if a < n else None}
                  for a, b, name in self.stream.blocks]
        return {"method": self.method, "lr": self.lr, "samples": n,
                "final_accuracy": self.curve[-1]["accuracy"],
                "last10_accuracy": float(correct[-tail:].mean()),
                "second_half_accuracy": float(correct[n // 2:].mean()),
                "blocks": blocks, "writes": tr.write_stats(),
                "writes_changed": tr.write_stats(tr.writes_changed), "layers": tr.layer_stats(),
                "curve": self.curve, "seconds": self.seconds,
                "us_per_sample": 1e6 * self.seconds / n}


def run_method(net0, method: str, stream, *, lr: float | None, scenario: str, seed: int,
               points: int = 100, progress: bool = False, desc: str | None = None) -> dict:
    """Deploy a copy of ``net0`` and run ``method`` over ``stream``; return the curves and totals."""
    runs, n = run_lockstep(net0, [(method, lr)], stream, scenario=scenario, seed=seed,
                           points=points, progress=progress, desc=desc)
    return runs[0]


def run_lockstep(net0, jobs, stream, *, scenario: str, seed: int, points: int = 100,
                 progress: bool = False, desc: str | None = None, deadline: float | None = None,
                 check_every: int = 500) -> tuple[list[dict], int]:
    """Run several ``(method, lr)`` jobs over ``stream`` in lockstep, sample by sample.

    Parameters
    ----------
    deadline : float or None
        A :func:`time.time` value: when it has passed (checked every ``check_every`` samples),
        every job stops at the same sample count, so a run that the machine cannot finish in
        time still reports all methods over the longest common stream it reached.

    Returns
    -------
    results : list of dict
        One :func:`run_method`-style result per job.
    n : int
        Samples streamed (the stream length unless the deadline stopped it).
    """
    runs = [_Run(net0, m, stream, lr=lr, scenario=scenario, seed=seed, points=points)
            for m, lr in jobs]
    n = len(stream)
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=n, desc=desc or ",".join(m for m, _ in jobs), unit="sample", leave=False)
    done = n
    for i in range(n):
        for r in runs:
            r.step(i)
        if bar is not None and (i + 1) % 50 == 0:
            bar.update(50)
        if deadline is not None and (i + 1) % check_every == 0 and i + 1 < n \
                and time.time() > deadline:
            done = i + 1
            break
    if bar is not None:
        bar.close()
    return [r.result(done) for r in runs], done


def _select(net0, method, scenario, val_stream, seed, progress) -> tuple[float | None, list]:
    grid = LR_GRID.get(method)
    if grid is None:
        return None, []
    sweep = []
    for lr in grid:
        r = run_method(net0, method, val_stream, lr=lr, scenario=scenario, seed=seed + 1000,
                       points=10, progress=progress, desc=f"val {method} lr={lr:g}")
        sweep.append({"lr": lr, "score": r["second_half_accuracy"],
                      "final_accuracy": r["final_accuracy"], "writes_max": r["writes"]["max"]})
    best = max(sweep, key=lambda s: (s["score"], -s["writes_max"]))
    return best["lr"], sweep


def run_scenario(scenario: str, *, dataset: str = "digits", samples: int | None = None,
                 val_samples: int | None = None, methods=METHODS, seed: int = 0,
                 progress: bool = False, log=None, deadline: float | None = None) -> dict:
    """Sweep learning rates on the validation stream, then run every method on the evaluation stream."""
    if scenario not in SCENARIOS:
        raise ValueError(f"unknown scenario {scenario!r}; choose one of {', '.join(SCENARIOS)}")
    methods = parse_methods(",".join(methods)) if not isinstance(methods, str) else parse_methods(methods)
    dom = prepare_domain(dataset, seed=seed, progress=progress)
    default_n = 3000 if dom["config"]["kind"] == "digits" else 20000
    n = int(samples or default_n)
    n_val = int(val_samples or max(1000, n // 4))
    Xv, yv = dom["pools"]["val"]
    Xe, ye = dom["pools"]["eval"]
    val_stream = make_stream(Xv, yv, scenario=scenario, n_samples=n_val,
                             max_value=dom["max_value"], seed=seed + 1000)
    eval_stream = make_stream(Xe, ye, scenario=scenario, n_samples=n,
                              max_value=dom["max_value"], seed=seed)
    t0 = time.perf_counter()
    selection = {}
    for m in methods:
        lr, sweep = _select(dom["net"], m, scenario, val_stream, seed, progress)
        selection[m] = {"lr": lr, "sweep": sweep}
        if log is not None:
            log(f"{scenario} {m}: lr {lr} chosen on validation, {time.perf_counter() - t0:.0f} s")
    # every method in lockstep over the evaluation stream (identical results to one after the
    # other); a deadline stops them all at the same sample count
    res, n_done = run_lockstep(dom["net"], [(m, selection[m]["lr"]) for m in methods], eval_stream,
                               scenario=scenario, seed=seed, progress=progress,
                               desc=f"{scenario}", deadline=deadline)
    results = {m: r for m, r in zip(methods, res)}
    if log is not None:
        log(f"{scenario}: {n_done} of {n} samples, " + ", ".join(
            f"{m} {100 * r['final_accuracy']:.1f}" for m, r in results.items()))
    rep = {"scenario": scenario, "dataset": dom["name"], "samples": n_done, "samples_planned": n,
           "stopped_by_deadline": n_done < n, "val_samples": n_val,
           "seed": seed, "methods": list(methods), "pretrain": dom["pretrain"],
           "domain": dom["config"], "layers": dom["layers"],
           "blocks": [list(b) for b in eval_stream.blocks], "selection": selection,
           "results": results, "seconds": time.perf_counter() - t0,
           "environment": {"python": platform.python_version(), "numpy": np.__version__}}
    rep["summary"] = summarise(rep)
    return rep


def sgd_increment_survival(X: np.ndarray, y: np.ndarray, *, widths=(8, 32, 128), lr: float = 0.01,
                           deployed=None, seed: int = 0) -> list[dict]:
    """How many cells a per-sample SGD step ``Qw(lr * grad_W)`` actually changes, by width.

    The mechanism behind the paper's SGD collapse under drift (lrt.md section 5): updates
    under half an LSB of the 8-bit weight grid round to zero, so per-sample SGD cannot undo
    the drift, while SKS accumulates B samples (and ``lr * sqrt(mult)``) before rounding. Its
    strength depends on the per-cell gradient size, which falls with the layer width (and the
    power-of-two scale alpha with the fan-in). For each width this builds ``lrt-cnn`` with
    ``channels = w`` and ``hidden = 4 w`` (the paper: 128 / 512), freshly initialised (seeded,
    U(-1, 1) on the grid: no pre-training exists for the wide ones), streams the samples
    through forward + backward WITHOUT applying updates, and records, per weight layer, the
    fraction of cells with a nonzero quantised increment. ``deployed`` (optional) adds the same
    measurement on the deployed, pre-trained network.

    Parameters
    ----------
    X : ndarray, shape (N, 1, H, W)
        Network inputs (on the input grid).
    y : ndarray, shape (N,)
        Labels.
    widths : tuple of int, keyword-only
        Conv channel counts to compare.
    lr : float, keyword-only
        SGD learning rate (the paper's 0.01).
    deployed : Network or None, keyword-only
        The pre-trained network (copied, not modified).
    seed : int, keyword-only
        Initialisation seed.

    Returns
    -------
    list of dict
        One row per network: ``network``, ``channels``, ``hidden``, ``layers`` (name, shape,
        alpha, ``nonzero_frac``: mean over samples of the fraction of cells with a nonzero
        increment), ``nonzero_frac`` (over all cells).
    """
    nets = []
    if deployed is not None:
        d = copy.deepcopy(deployed)
        nets.append(("deployed (pre-trained)", d))
    for w in widths:
        net = build_model("lrt-cnn", input_shape=X.shape[2:], n_classes=int(np.max(y)) + 1,
                          quant=QuantConfig(), rng=np.random.default_rng([seed, 21, int(w)]),
                          channels=(int(w),), hidden=(4 * int(w),))
        nets.append((f"fresh, {w} channels", net))
    rows = []
    for label, net in nets:
        qw = net.q["w"]
        frac = np.zeros(len(net.weight_layers))
        for i in range(len(X)):
            logits = net.forward(X[i:i + 1], train=True)
            net.backward(logits, np.asarray(y[i:i + 1]))
            for j, l in enumerate(net.weight_layers):
                frac[j] += np.count_nonzero(qw(lr * l.grad_W())) / l.W.size
        frac /= len(X)
        sizes = np.array([l.W.size for l in net.weight_layers])
        rows.append({"network": label,
                     "channels": int(net.weight_layers[0].W.shape[0]),
                     "hidden": int(net.weight_layers[-1].W.shape[1]),
                     "samples": int(len(X)), "lr": lr,
                     "layers": [{"name": l.name, "shape": list(l.W.shape), "alpha": l.alpha,
                                 "nonzero_frac": float(f)}
                                for l, f in zip(net.weight_layers, frac)],
                     "nonzero_frac": float((frac * sizes).sum() / sizes.sum())})
    return rows


def summarise(rep: dict) -> dict:
    """Ratios against SGD (worst-case writes, both counts) and the issue's goals."""
    res = rep["results"]
    out = {}
    ref = res.get("sgd")
    for m, r in res.items():
        row = {"final_accuracy": r["final_accuracy"], "last10_accuracy": r["last10_accuracy"],
               "writes_max": r["writes"]["max"], "writes_changed_max": r["writes_changed"]["max"],
               "writes_mean": r["writes"]["mean"]}
        if ref is not None:
            row["accuracy_vs_sgd_points"] = 100 * (r["final_accuracy"] - ref["final_accuracy"])
            if r["writes"]["max"] > 0:
                row["writes_max_ratio_vs_sgd"] = ref["writes"]["max"] / r["writes"]["max"]
            if r["writes_changed"]["max"] > 0:
                row["writes_changed_max_ratio_vs_sgd"] = (ref["writes_changed"]["max"]
                                                          / r["writes_changed"]["max"])
        out[m] = row
    goal = None
    if "sgd" in out and "sks-maxnorm" in out:
        s = out["sks-maxnorm"]
        ratio = s.get("writes_max_ratio_vs_sgd", float("inf"))
        if rep["scenario"].endswith("-drift"):
            goal = {"rule": "SKS/max-norm accuracy >= SGD + 20 points and >= 500x fewer worst-case "
                            "writes (paper's count)",
                    "met": bool(s["accuracy_vs_sgd_points"] >= 20 and ratio >= 500)}
        elif rep["scenario"] == "control":
            goal = {"rule": "SKS/max-norm within 2 points of SGD",
                    "met": bool(s["accuracy_vs_sgd_points"] >= -2)}
    return {"methods": out, "goal": goal}


# --- reports -------------------------------------------------------------------------------------
NAMES = {"inference": "Inference only", "bias-only": "Bias-only", "sgd": "SGD/No-Norm",
         "sgd-maxnorm": "SGD/Max-Norm", "sks-nonorm": "SKS/No-Norm", "sks-maxnorm": "SKS/Max-Norm",
         "batched": "Full-rank batched"}


def _fmt_ratio(v):
    return "—" if v is None else f"{v:,.0f}×" if v >= 10 else f"{v:.2f}×"


def markdown(rep: dict) -> str:
    s = rep["summary"]["methods"]
    pre = rep["pretrain"]
    lines = [f"# nms adapt — {rep['scenario']} on {rep['dataset']}", "",
             f"Online stream of {rep['samples']} samples (batch size 1, predict then learn), seed "
             f"{rep['seed']}. Pre-trained offline on {pre['n_pretrain']} samples "
             f"({pre['epochs']} epochs, Adam lr {pre['lr']}, batch {pre['batch']}): offline test "
             f"accuracy {100 * pre['test_accuracy']:.1f} %. Network: lrt-cnn "
             + ", ".join(f"{l['name']} {l['shape'][0]}x{l['shape'][1]}" for l in rep["layers"])
             + ". Learning rates chosen on a validation stream of "
             f"{rep['val_samples']} samples (other pool, other seed)."
             + (f" **Stopped by the time budget after {rep['samples']:,} of the planned "
                f"{rep['samples_planned']:,} samples** (all methods in lockstep, so every row "
                "covers the same samples)." if rep.get("stopped_by_deadline") else ""), "",
             "| method | lr | accuracy (EMA) | last 10 % | vs SGD (pts) | max writes (paper) | "
             "ratio | max writes (changed cells) | ratio | mean writes | µs/sample |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for m, r in rep["results"].items():
        row = s[m]
        lr = "—" if r["lr"] is None else f"{r['lr']:g}"
        lines.append(
            f"| {NAMES[m]} | {lr} | "
            f"{100 * r['final_accuracy']:.1f} | {100 * r['last10_accuracy']:.1f} | "
            f"{row.get('accuracy_vs_sgd_points', 0):+.1f} | {r['writes']['max']:,} | "
            f"{_fmt_ratio(row.get('writes_max_ratio_vs_sgd'))} | {r['writes_changed']['max']:,} | "
            f"{_fmt_ratio(row.get('writes_changed_max_ratio_vs_sgd'))} | "
            f"{r['writes']['mean']:.1f} | {r['us_per_sample']:.0f} |")
    if rep["scenario"] == "shift":
        lines += ["", "Accuracy over the last 20 % of each shift block:", "",
                  "| block | " + " | ".join(NAMES[m] for m in rep["results"]) + " |",
                  "|---|" + "---|" * len(rep["results"])]
        for j, (a, b, name) in enumerate(rep["blocks"]):
            lines.append(f"| {j + 1} {name} | " + " | ".join(
                "—" if r["blocks"][j]["accuracy"] is None else f"{100 * r['blocks'][j]['accuracy']:.1f}"
                for r in rep["results"].values()) + " |")
    g = rep["summary"]["goal"]
    if g is not None:
        lines += ["", f"Goal ({g['rule']}): **{'met' if g['met'] else 'not met'}**."]
    lines += ["", "## Learning-rate selection (validation stream)", "",
              "Score: mean online correctness over the second half of the validation stream.", "",
              "| method | lr | score | final EMA | max writes |", "|---|---|---|---|---|"]
    for m, sel in rep["selection"].items():
        for sw in sel["sweep"]:
            mark = " **(chosen)**" if sw["lr"] == sel["lr"] else ""
            lines.append(f"| {NAMES[m]} | {sw['lr']:g}{mark} | {100 * sw['score']:.1f} | "
                         f"{100 * sw['final_accuracy']:.1f} | {sw['writes_max']:,} |")
    lines += ["", "Writes: paper's count = cells with a nonzero quantised increment per applied "
              "update (SGD conv layers: one per output pixel whose input and error are both "
              "nonzero, the authors' count_version 2); changed cells = cells whose stored value "
              "changed. Biases and BN parameters are not counted.", ""]
    return "\n".join(lines)


def plot(rep: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4))
    for m, r in rep["results"].items():
        xs = [p["samples"] for p in r["curve"]]
        colour = f"C{METHODS.index(m)}"  # one colour per method in both panels
        a1.plot(xs, [p["accuracy"] for p in r["curve"]], label=NAMES[m], color=colour)
        if r["writes"]["max"] > 0:
            a2.plot(xs, [max(p["writes_max"], 0.5) for p in r["curve"]], label=NAMES[m],
                    color=colour)
    if rep["scenario"] == "shift":
        for a, b, name in rep["blocks"][1:]:
            a1.axvline(a, color="0.85", lw=0.8)
    a1.set_xlabel("online samples seen")
    a1.set_ylabel("online accuracy (EMA 0.999)")
    a1.set_ylim(0, 1)
    a2.set_xlabel("online samples seen")
    a2.set_ylabel("max writes per weight cell (paper's count)")
    a2.set_yscale("log")
    for a in (a1, a2):
        a.grid(alpha=0.3)
        a.legend(fontsize=7)
    fig.suptitle(f"{rep['scenario']} — {rep['dataset']} ({rep['samples']} samples)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _jsonable(o):
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    raise TypeError(f"not JSON-serialisable: {type(o).__name__}")


def write_reports(rep: dict, out: Path, stem: str = "adapt") -> list[str]:
    """Write ``<stem>.json``, ``<stem>.md`` and ``<stem>.png`` into ``out``; return the file names."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stem}.json").write_text(json.dumps(rep, indent=1, default=_jsonable) + "\n")
    (out / f"{stem}.md").write_text(markdown(rep))
    plot(rep, out / f"{stem}.png")
    return [f"{stem}.json", f"{stem}.md", f"{stem}.png"]


def main(args) -> int:
    methods = parse_methods(args.methods)
    t0 = time.perf_counter()
    rep = run_scenario(args.scenario, dataset=args.dataset, samples=args.samples,
                       val_samples=args.val_samples, methods=methods, seed=args.seed,
                       progress=not args.no_progress)
    rep["seconds_total"] = time.perf_counter() - t0
    files = write_reports(rep, args.out, stem=f"adapt_{args.scenario}")
    print(markdown(rep))
    print(f"[nms adapt] reports in {args.out}/ ({', '.join(files)})")
    return 0
