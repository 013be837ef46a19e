"""``nms bench adapt``: every adaptation scenario of ``nms adapt`` on Fashion-MNIST.

For each scenario (control, shift, analog-drift, digital-drift) the seven methods run on the
same evaluation stream after a learning-rate sweep on a validation stream (see
:mod:`nms.sw.adapt`). Writes ``adapt.json`` + ``adapt.md`` (all scenarios, with the comparison
to the paper's Fig. 1) and ``adapt_<scenario>.png`` (accuracy and worst-case writes against
samples seen); each scenario also gets its own ``adapt_<scenario>.json/.md`` as soon as it is
done. The model is pre-trained once, then the four scenarios run in four forked worker
processes (single-threaded BLAS each).

Full run: Fashion-MNIST; every scenario streams 100,000 samples (the paper's length); the
validation streams are 5,000 samples for the drift scenarios and 2,500 for control and shift
(their learning-rate sweeps are the longer ones; see ``FULL``); ``run(..., budget_s=...)``
stops the evaluation streams early (all methods at the same sample) when the machine is too
busy to finish them. ``run(..., scenarios=[...])``
re-runs a subset and takes the other scenarios' results from their recorded
``adapt_<scenario>.json`` in the output folder, so ``adapt.md`` always covers all four. The
report also measures the mechanism behind the paper's SGD collapse: the fraction of cells a
per-sample SGD step changes at all, against the network width
(:func:`nms.sw.adapt.sgd_increment_survival`). Quick run: digits, 1,500 / 500 samples.
"""

from __future__ import annotations

import json
import os
import sys
import time
import multiprocessing
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

from nms.sw import adapt
from nms.sw.streams import SCENARIOS

FASHION_REL = Path("..") / "shared" / "datasets" / "fashion-mnist"

#: the paper's Fig. 1 read off the plots (research notes lrt.md section 7.1), final accuracy
PAPER_FIG1 = {
    "control": {"inference": 0.975, "bias-only": 0.97, "sgd": 0.965, "sks-nonorm": 0.95,
                "sks-maxnorm": 0.945, "writes_sgd": 1.4e6, "writes_sks": 5.5e3},
    "shift": {"inference": 0.98, "bias-only": 0.93, "sgd": 0.95, "sks-nonorm": 0.93,
              "sks-maxnorm": 0.94, "writes_sgd": 1.5e7, "writes_sks": 6e3},
    "analog-drift": {"inference": 0.10, "bias-only": 0.13, "sgd": 0.13, "sks-nonorm": 0.60,
                     "sks-maxnorm": 0.72, "writes_sgd": 1.2e7, "writes_sks": 6.5e3},
    "digital-drift": {"inference": 0.09, "bias-only": 0.17, "sgd": 0.18, "sks-nonorm": 0.79,
                      "sks-maxnorm": 0.86, "writes_sgd": 1.1e7, "writes_sks": 6.5e3},
}


def _repo_root() -> Path:
    return Path(__file__).resolve().parent.parent


#: full-run stream lengths per scenario: (evaluation samples, validation samples)
FULL = {"control": (100000, 2500), "shift": (100000, 2500), "analog-drift": (100000, 5000),
        "digital-drift": (100000, 5000)}
QUICK = {s: (1500, 500) for s in SCENARIOS}


def _log(msg: str) -> None:
    print(f"[bench adapt {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _one(args) -> dict:
    scenario, dataset, samples, val_samples, deadline = args
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):
        return adapt.run_scenario(scenario, dataset=dataset, samples=samples,
                                  val_samples=val_samples, seed=0, progress=False, log=_log,
                                  deadline=deadline)


def _survival(dataset: str) -> dict:
    """SGD increment survival against width, on 40 validation-pool samples (see the module doc)."""
    import numpy as np

    from nms.sw.streams import make_stream

    dom = adapt.prepare_domain(dataset, seed=0)
    Xv, yv = dom["pools"]["val"]
    st = make_stream(Xv, yv, scenario="control", n_samples=40, max_value=dom["max_value"], seed=5)
    X = np.stack([st.x(i) for i in range(len(st))])
    widths = (8, 32, 128) if dom["config"]["kind"] == "image28" else (8, 32)
    out = {"samples": 40, "rows": {}}
    for lr in (0.01, 0.1):
        out["rows"][f"{lr:g}"] = adapt.sgd_increment_survival(X, st.y, widths=widths, lr=lr,
                                                              deployed=dom["net"])
    return out


def run(out_dir: Path, quick: bool = False, *, scenarios=None, budget_s: float | None = None) -> dict:
    """Run ``scenarios`` (default all); write ``adapt.json``, ``adapt.md`` and the PNGs.

    Scenarios not re-run are read from ``out_dir/adapt_<scenario>.json`` when present.
    ``budget_s`` (wall seconds from the start) stops each scenario's evaluation stream early,
    all methods at the same sample count (:func:`nms.sw.adapt.run_lockstep`); the report says
    how far it got.
    """
    deadline = None if budget_s is None else time.time() + float(budget_s)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    fashion = _repo_root() / FASHION_REL
    if quick or not (fashion / "train-images-idx3-ubyte.gz").exists():
        dataset, lengths = "digits", QUICK
    else:
        dataset, lengths = str(fashion), FULL
    todo = list(SCENARIOS if scenarios is None else scenarios)
    bad = [s for s in todo if s not in SCENARIOS]
    if bad:
        raise ValueError(f"unknown scenario(s) {bad}; choose from {', '.join(SCENARIOS)}")
    t0 = time.perf_counter()
    # Pre-train once here; the forked workers inherit the cached deployed model.
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):
        adapt.prepare_domain(dataset, seed=0)
        _log("pre-trained; measuring SGD increment survival")
        survival = _survival(dataset)
    jobs = {s: (s, dataset, *lengths[s], deadline) for s in todo}
    reps = {}
    ctx = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(max_workers=len(jobs), mp_context=ctx) as pool:
        futures = {pool.submit(_one, job): s for s, job in jobs.items()}
        for fut in as_completed(futures):
            rep = fut.result()
            reps[rep["scenario"]] = rep
            # each scenario's own report as soon as it is done
            adapt.write_reports(rep, out_dir, stem=f"adapt_{rep['scenario']}")
            _log(f"{rep['scenario']} done ({rep['seconds'] / 60:.1f} min)")
    for s in SCENARIOS:
        path = out_dir / f"adapt_{s}.json"
        if s not in reps and path.exists():
            rep = json.loads(path.read_text())
            if rep.get("dataset") == adapt.prepare_domain(dataset, seed=0)["name"]:
                reps[s] = rep
    reps = [reps[s] for s in SCENARIOS if s in reps]
    plots = [f"adapt_{rep['scenario']}.png" for rep in reps]
    result = {"benchmark": "adapt", "quick": quick, "dataset": reps[0]["dataset"],
              "lengths": {r["scenario"]: [r["samples"], r["val_samples"]] for r in reps},
              "rerun": todo, "seconds": time.perf_counter() - t0,
              "paper_fig1": PAPER_FIG1, "sgd_increment_survival": survival,
              "scenarios": {r["scenario"]: r for r in reps}, "plots": plots}
    (out_dir / "adapt.json").write_text(json.dumps(result, indent=1, default=adapt._jsonable) + "\n")
    (out_dir / "adapt.md").write_text(markdown(result))
    return result


def markdown(res: dict) -> str:
    lines = [f"# Online adaptation benchmark (`nms bench adapt`{' --quick' if res['quick'] else ''})",
             "", f"Dataset {res['dataset']}, seed 0. Stream lengths (evaluation / validation "
             "samples): " + ", ".join(f"{s} {a:,} / {b:,}" for s, (a, b) in res["lengths"].items())
             + f". This run re-ran {', '.join(res['rerun'])} in "
             f"{res['seconds'] / 60:.1f} min (one worker process per scenario, shared machine); "
             "the others are their recorded reports.", "",
             "## Headline: final online accuracy (EMA 0.999) and worst-case writes", "",
             "| scenario | samples | " + " | ".join(adapt.NAMES[m] for m in adapt.METHODS)
             + " | SGD max writes (paper / changed) | SKS/MN max writes (paper / changed) | "
               "SGD ÷ SKS/MN (paper / changed) | batched max writes | goal |",
             "|---|---|" + "---|" * (len(adapt.METHODS) + 5)]
    for sc, rep in res["scenarios"].items():
        r = rep["results"]
        g, k = r["sgd"], r["sks-maxnorm"]
        ratio_p = g["writes"]["max"] / max(k["writes"]["max"], 1)
        ratio_c = g["writes_changed"]["max"] / max(k["writes_changed"]["max"], 1)
        goal = rep["summary"]["goal"]
        lines.append(
            f"| {sc} | {rep['samples']:,} | "
            + " | ".join(f"{100 * r[m]['final_accuracy']:.1f}" for m in adapt.METHODS)
            + f" | {g['writes']['max']:,} / {g['writes_changed']['max']:,} | "
              f"{k['writes']['max']:,} / {k['writes_changed']['max']:,} | "
              f"{ratio_p:,.0f}× / {ratio_c:,.1f}× | {r['batched']['writes']['max']:,} | "
              f"{'—' if goal is None else ('met' if goal['met'] else 'not met')} |")
    lines += ["", "## Against the paper's Fig. 1 (values read off its plots, 1e5 samples, "
              "128-channel CNN on elastic MNIST)", "",
              "| scenario | method | paper | ours |", "|---|---|---|---|"]
    for sc, rep in res["scenarios"].items():
        p = res["paper_fig1"][sc]
        for m in ("inference", "bias-only", "sgd", "sks-nonorm", "sks-maxnorm"):
            lines.append(f"| {sc} | {adapt.NAMES[m]} | {p[m]:.3f} | "
                         f"{rep['results'][m]['final_accuracy']:.3f} |")
        lines.append(f"| {sc} | max writes SGD / SKS | {p['writes_sgd']:.1e} / {p['writes_sks']:.1e} | "
                     f"{rep['results']['sgd']['writes']['max']:.1e} / "
                     f"{rep['results']['sks-maxnorm']['writes']['max']:.1e} |")
    surv = res.get("sgd_increment_survival")
    if surv:
        lines += ["", "## Why per-sample SGD can or cannot undo drift: the increments that survive "
                  "rounding", "",
                  "Fraction of weight cells whose per-sample SGD increment `Qw(lr * grad_W)` is "
                  f"nonzero, mean over {surv['samples']} validation-pool samples (forward + "
                  "backward only, nothing applied). `fresh` networks are lrt-cnn at that width "
                  "(fc1 = 4 x width, as the paper's 128 / 512), seeded U(-1, 1) init, not trained; "
                  "`deployed` is the pre-trained model every method starts from. Updates under "
                  "half an LSB vanish, so this is the fraction of cells SGD can move at all.", "",
                  "| lr | network | all cells | " + " | ".join(
                      l["name"] for l in next(iter(surv["rows"].values()))[0]["layers"]) + " |",
                  "|---|---|---|" + "---|" * len(next(iter(surv["rows"].values()))[0]["layers"])]
        for lr, rows in surv["rows"].items():
            for r in rows:
                lines.append(f"| {lr} | {r['network']} | {100 * r['nonzero_frac']:.3f} % | "
                             + " | ".join(f"{100 * l['nonzero_frac']:.3f} % (α {l['alpha']:g})"
                                          for l in r["layers"]) + " |")
    for sc, rep in res["scenarios"].items():
        body = adapt.markdown(rep).split("\n", 1)[1]
        lines += ["", f"## Scenario {sc}", "", f"![{sc}](adapt_{sc}.png)", body]
    return "\n".join(lines) + "\n"
