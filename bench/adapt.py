"""``nms bench adapt``: every adaptation scenario of ``nms adapt`` on Fashion-MNIST.

For each scenario (control, shift, analog-drift, digital-drift) the seven methods run on the
same evaluation stream after a learning-rate sweep on a validation stream (see
:mod:`nms.sw.adapt`). Writes ``adapt.json`` + ``adapt.md`` (all scenarios, with the comparison
to the paper's Fig. 1) and ``adapt_<scenario>.png`` (accuracy and worst-case writes against
samples seen); each scenario also gets its own ``adapt_<scenario>.json/.md`` as soon as it is
done. The model is pre-trained once, then the four scenarios run in four forked worker
processes (single-threaded BLAS each).

Full run: Fashion-MNIST, 6,000-sample evaluation streams and 1,500-sample validation streams
(the paper streams 1e5 samples; a NumPy CNN at batch size 1 on this 2-core machine does a few
hundred samples per second, so 1e5 x 7 methods x 4 scenarios plus the sweeps does not fit in
the benchmark's ~40 min budget). Quick run: digits, 1,500 / 500 samples.
"""

from __future__ import annotations

import json
import os
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


def _one(args) -> dict:
    scenario, dataset, samples, val_samples = args
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):
        return adapt.run_scenario(scenario, dataset=dataset, samples=samples,
                                  val_samples=val_samples, seed=0, progress=False)


def run(out_dir: Path, quick: bool = False) -> dict:
    """Run every scenario; write ``adapt.json``, ``adapt.md`` and one PNG per scenario."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    fashion = _repo_root() / FASHION_REL
    if quick or not (fashion / "train-images-idx3-ubyte.gz").exists():
        dataset, samples, val_samples = "digits", 1500, 500
    else:
        dataset, samples, val_samples = str(fashion), 6000, 1500
    t0 = time.perf_counter()
    # Pre-train once here; the forked workers inherit the cached deployed model.
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):
        adapt.prepare_domain(dataset, seed=0)
    jobs = {s: (s, dataset, samples, val_samples) for s in SCENARIOS}
    reps = {}
    ctx = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(max_workers=len(jobs), mp_context=ctx) as pool:
        futures = {pool.submit(_one, job): s for s, job in jobs.items()}
        for fut in as_completed(futures):
            rep = fut.result()
            reps[rep["scenario"]] = rep
            # each scenario's own report as soon as it is done
            adapt.write_reports(rep, out_dir, stem=f"adapt_{rep['scenario']}")
    reps = [reps[s] for s in SCENARIOS]
    plots = [f"adapt_{rep['scenario']}.png" for rep in reps]
    result = {"benchmark": "adapt", "quick": quick, "dataset": reps[0]["dataset"],
              "samples": samples, "val_samples": val_samples, "seconds": time.perf_counter() - t0,
              "paper_fig1": PAPER_FIG1, "scenarios": {r["scenario"]: r for r in reps},
              "plots": plots}
    (out_dir / "adapt.json").write_text(json.dumps(result, indent=1, default=adapt._jsonable) + "\n")
    (out_dir / "adapt.md").write_text(markdown(result))
    return result


def markdown(res: dict) -> str:
    lines = [f"# Online adaptation benchmark (`nms bench adapt`{' --quick' if res['quick'] else ''})",
             "", f"Dataset {res['dataset']}, evaluation streams of {res['samples']} samples, "
             f"validation streams of {res['val_samples']} samples, seed 0; total "
             f"{res['seconds'] / 60:.1f} min (one worker process per scenario, shared machine).", "",
             "## Headline: final online accuracy (EMA 0.999) and worst-case writes", "",
             "| scenario | " + " | ".join(adapt.NAMES[m] for m in adapt.METHODS)
             + " | SGD max writes (paper / changed) | SKS/MN max writes (paper / changed) | "
               "SGD ÷ SKS/MN (paper / changed) | batched max writes | goal |",
             "|---|" + "---|" * (len(adapt.METHODS) + 5)]
    for sc, rep in res["scenarios"].items():
        r = rep["results"]
        g, k = r["sgd"], r["sks-maxnorm"]
        ratio_p = g["writes"]["max"] / max(k["writes"]["max"], 1)
        ratio_c = g["writes_changed"]["max"] / max(k["writes_changed"]["max"], 1)
        goal = rep["summary"]["goal"]
        lines.append(
            f"| {sc} | " + " | ".join(f"{100 * r[m]['final_accuracy']:.1f}" for m in adapt.METHODS)
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
    for sc, rep in res["scenarios"].items():
        body = adapt.markdown(rep).split("\n", 1)[1]
        lines += ["", f"## Scenario {sc}", "", f"![{sc}](adapt_{sc}.png)", body]
    return "\n".join(lines) + "\n"
