"""``nms run`` — the main job: a deployed model adapts to a new domain on a near-memory coreset.

1. **A device holds a pre-trained model.** The network (default ``lrt-cnn``, the paper's CNN
   shape with streaming BN) is pre-trained offline on the data set's clean training images
   (:func:`nms.sw.pretrain.pretrain`) and deployed with 8-bit NVM weights.
2. **A new domain's data set sits in DDR**: the training images under a fixed domain shift
   (``--shift``, default ``BG+WN``: contrast/offset/gradient background plus white noise, the
   augmentations of :mod:`nms.sw.streams`), 80 % as the DDR data, 20 % held out as the
   validation split for any learning-rate choice; the test images under the same shift score
   the result.
3. **Select near memory.** The host driver runs DE-SNE on the accelerator backend (default: the
   bit-exact model behind the register interface) over the DDR data and gets the coreset
   indices plus the job's counters (near-memory bytes read, ...).
4. **Adapt the NVM weights on the coreset** with SKS low-rank updates (per-cell write counters),
   and for comparison: no adaptation, SKS on the full new-domain data, SKS on a random coreset
   of the same size, and per-sample SGD on the DE-SNE coreset.
5. **Report** accuracy on the new domain, worst-case and mean NVM writes (paper's count and
   changed cells), energy (PCB link vs near memory, NVM writes) from :mod:`nms.sw.energy`, as
   JSON + Markdown + plots.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import platform
import time
from pathlib import Path

import numpy as np

from nms.rtl.params import CAPACITY
from nms.sw import energy
from nms.sw.baselines import random_select
from nms.sw.datasets import load_dataset
from nms.sw.driver import TRANSPORTS, Driver
from nms.sw.lrt import SGDTrainer, SKSTrainer
from nms.sw.nn import QuantConfig, build_model
from nms.sw.pretrain import pretrain
from nms.sw.cliargs import pool_arg, positive_int_arg, ratio_arg, seed_arg
from nms.sw.streams import background, spatial_transform, white_noise
from nms.verif.models.budget import validate_ratio
from nms.verif.models import desne

__all__ = ["add_arguments", "main", "run_job", "write_reports", "TRAIN_OPTS", "SHIFTS",
           "LR_GRID", "select_learning_rates", "device_report", "DEFAULT_CLOCK_HZ"]

#: clock the device's cycle counts are converted to job time at, unless ``--clock-mhz`` or the
#: backend (a board's PLL clock) says otherwise: the RTL transport's default
DEFAULT_CLOCK_HZ = 100e6

#: options of the adaptation, chosen on the validation split by ``nms run --sweep`` on digits
#: (recorded in bench/results/run_digits.md; the same for every coreset). Fixed, not swept:
#: max-norm (the paper's best SKS variant), the bias/BN learning rate (the paper's 1e-2, both
#: methods), the rank (``--rank``: the size of the device's SKS state) and the epochs
#: (``--epochs``: the same budget for SKS and SGD)
TRAIN_OPTS = {
    "sks": {"lr": 0.03, "maxnorm": True, "batch_fc": 5, "batch_conv": 10},
    "sgd": {"lr": 0.1},
}
#: candidates of ``--sweep`` (every combination). SKS: the learning rate, and B per layer kind,
#: which sets the worst-case writes (at most samples x epochs / B per cell; B = 3 is where the
#: write budget :data:`SWEEP_WRITE_RATIO` cuts off on digits)
LR_GRID = {"sgd": [{"lr": lr} for lr in (0.01, 0.03, 0.1, 0.3, 1.0)],
           "sks": [{"lr": lr, "batch_conv": bc, "batch_fc": bf}
                   for bc in (3, 5, 10, 20) for bf in (5, 10, 100)
                   for lr in (0.001, 0.003, 0.01, 0.03, 0.1)]}
#: validation runs per candidate (each on its own random coreset and training seed; scored by
#: the mean validation accuracy): one 108-sample run moves by several points between seeds
SWEEP_SEEDS = 2
#: write budget of the SKS choice: only candidates whose validation worst-case writes are at
#: most 1 / SWEEP_WRITE_RATIO of the chosen SGD's are eligible (the main job's goal, >= 100x)
SWEEP_WRITE_RATIO = 100

#: domain shifts (combinations of the stream augmentations ST, BG, WN)
SHIFTS = ("BG+WN", "ST", "BG", "WN", "ST+BG", "ST+WN", "ST+BG+WN")

_NETS = {"lrt-cnn": {"channels": (8,), "hidden": (32,)}, "cnn": {}, "mlp": {}}


def add_arguments(parser) -> None:
    parser.add_argument("--dataset", default="digits",
                        help="'digits' (default, scikit-learn's bundled set), an IDX directory "
                             "(MNIST/Fashion-MNIST format) or a .npz file")
    parser.add_argument("--shift", choices=SHIFTS, default="BG+WN",
                        help="domain shift of the new domain (default BG+WN)")
    parser.add_argument("--n-train", type=positive_int_arg, default=None,
                        help="use a stratified subset of this many training images (default: all)")
    parser.add_argument("--ratio", type=ratio_arg, default=0.1, help="coreset fraction in (0, 1] (default 0.1)")
    parser.add_argument("--backend", choices=sorted(TRANSPORTS), default="model",
                        help="accelerator backend (default: model = the bit-exact model)")
    parser.add_argument("--port", default=None,
                        help="--backend fpga: serial device or pyserial URL of the board "
                             "(/dev/ttyUSB0, socket://127.0.0.1:5555 for nms serve --sim)")
    parser.add_argument("--clock-mhz", type=_clock_mhz_arg, default=None,
                        help="clock for the job time in the report, from the device's cycle "
                             "counters (default: the board's clock for --backend fpga, else "
                             f"{DEFAULT_CLOCK_HZ / 1e6:g} MHz)")
    parser.add_argument("--capacity", type=positive_int_arg, default=CAPACITY,
                        help="on-chip capacity C of the accelerator (points per chunk, default "
                             f"{CAPACITY}: the chosen dataflow's)")
    parser.add_argument("--pool", type=pool_arg, default=None,
                        help="pooling in front of the kNN: none, pool2 (2x2) or pool4 (4x4); "
                             "default: the data set's (Fashion-MNIST 28x28 -> pool4, digits -> "
                             "none) on a device with the pooling unit, else none")
    parser.add_argument("--perplexity", type=float, default=None,
                        help=f"target perplexity (default {desne.DesneConfig.perplexity})")
    parser.add_argument("--iterations", type=positive_int_arg, default=None,
                        help=f"embedding iterations (default {desne.DesneConfig.n_iter})")
    parser.add_argument("--allocation", choices=desne.ALLOCATIONS, default=None,
                        help=f"grid budget allocation: proportional (as the NMS plain grid) or "
                             f"adaptive (water-filling); default {desne.DesneConfig.allocation}")
    parser.add_argument("--model", choices=tuple(_NETS), default="lrt-cnn",
                        help="network (default lrt-cnn, the paper's CNN shape with streaming BN)")
    parser.add_argument("--rank", type=positive_int_arg, default=4, help="SKS rank (default 4)")
    parser.add_argument("--epochs", type=positive_int_arg, default=10,
                        help="adaptation epochs over the coreset / data (default 10)")
    parser.add_argument("--pretrain-epochs", type=positive_int_arg, default=None,
                        help="offline pre-training epochs (default 20 for <= 16 px images, else 3)")
    parser.add_argument("--seed", type=seed_arg, default=0, help="seed of selection and training (default 0)")
    parser.add_argument("--skip-full", action="store_true",
                        help="skip adapting on the full new-domain data (its traffic is still reported)")
    parser.add_argument("--sweep", action="store_true",
                        help="choose the SKS and SGD learning rates on the validation split first "
                             "(trains on a random coreset, scores the validation split)")
    parser.add_argument("--out", type=Path, default=Path("reports/run"),
                        help="output folder (default reports/run)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def _flat(X: np.ndarray) -> np.ndarray:
    return X.reshape(len(X), -1)


def shift_domain(X: np.ndarray, *, max_value: int, shift: str, seed: int) -> np.ndarray:
    """Apply the domain shift to raw images; returns uint8 images (0..255)."""
    if shift not in SHIFTS:
        raise ValueError(f"unknown shift {shift!r}; choose one of {', '.join(SHIFTS)}")
    rng = np.random.default_rng([seed, 21])
    img = X.astype(np.float64) / float(max_value)
    parts = shift.split("+")
    if "ST" in parts:
        img = spatial_transform(img, rng)
    if "BG" in parts:
        img = background(img, rng)
    if "WN" in parts:
        img = white_noise(img, rng)
    return np.clip(np.floor(img * 255.0 + 0.5), 0, 255).astype(np.uint8)


def _prep(X: np.ndarray, max_value: int, model: str, qin) -> np.ndarray:
    Xf = qin(X.astype(np.float64) / float(max_value))
    return Xf.reshape(len(Xf), -1) if model == "mlp" else Xf[:, None]


def _stratified(X, y, n, seed):
    rng = np.random.default_rng([seed, 22])
    idx = []
    for c in np.unique(y):
        members = np.flatnonzero(y == c)
        take = int(round(n * len(members) / len(y)))
        idx.append(rng.choice(members, size=min(take, len(members)), replace=False))
    idx = np.sort(np.concatenate(idx))
    return X[idx], y[idx]


def _adapt(kind, net0, X, y, Xeval, yeval, *, epochs, seed, rank, opts, progress, label,
           history=True):
    """Copy the deployed network, adapt it on (X, y), score it; the trainer's result dict.

    ``history``: score (Xeval, yeval) at 20 points during training (else only at the end)."""
    net = copy.deepcopy(net0)
    if kind == "sks":
        tr = SKSTrainer(net, rank=rank, seed=seed, **opts)
    else:
        tr = SGDTrainer(net, seed=seed, **opts)
    if progress:
        print(f"[nms run] adapting with {kind.upper()} on {label} ({len(y)} samples)")
    tr.fit(X, y, epochs=epochs, X_eval=Xeval if history else None,
           y_eval=yeval if history else None, progress=progress)
    return {"method": kind, "n_train": int(len(y)), "epochs": epochs, "options": dict(opts),
            "test_accuracy": tr.score(Xeval, yeval), "writes": tr.write_stats(),
            "writes_changed": tr.write_stats(tr.writes_changed), "layers": tr.layer_stats(),
            "history": tr.history, "seconds": tr.seconds}


def select_learning_rates(net0, X, y, Xval, yval, *, epochs, seed, rank, ratio, progress=False,
                          grid: dict | None = None, n_seeds: int = SWEEP_SEEDS,
                          write_ratio: float = SWEEP_WRITE_RATIO) -> dict:
    """Sweep ``grid`` (default :data:`LR_GRID`) on random coresets of (X, y), scored on the
    validation split (never the test split).

    Every candidate is trained ``n_seeds`` times, each on its own random coreset of the size
    ``ratio`` gives and with its own training seed, and scored by the mean validation accuracy
    (ties: fewer worst-case writes). SGD is swept first; an SKS candidate is eligible only if
    its worst-case writes (max over the seeds) are at most ``1 / write_ratio`` of the chosen
    SGD candidate's (the job's write budget; if none is, the best one is taken and the result
    says ``within_budget: False``).

    Returns ``{kind: {"chosen": options, "sweep": rows, ...}}`` (rows: the candidate's
    options, ``val_accuracy`` (mean), ``val_accuracies`` (per seed), ``writes_max``,
    ``eligible``).
    """
    grid = LR_GRID if grid is None else grid
    n_seeds = int(n_seeds)
    if n_seeds < 1:
        raise ValueError(f"n_seeds must be >= 1, not {n_seeds}")
    unknown = set(grid) - set(TRAIN_OPTS)
    if unknown:
        raise ValueError(f"grid names unknown method(s) {sorted(unknown)}; choose from {sorted(TRAIN_OPTS)}")
    n_sub = max(1, int(round(ratio * len(y))))
    subsets = [np.random.default_rng([seed, 23, s]).permutation(len(y))[:n_sub] for s in range(n_seeds)]
    out = {}
    for kind in sorted(grid, key=lambda k: k != "sgd"):   # SGD first: it sets the write budget
        budget = None
        if kind != "sgd" and "sgd" in out and write_ratio:
            budget = out["sgd"]["chosen_writes_max"] / float(write_ratio)
        rows = []
        for cand in grid[kind]:
            opts = {**TRAIN_OPTS[kind], **cand}
            accs, wmax = [], 0
            for s, rnd in enumerate(subsets):
                r = _adapt(kind, net0, X[rnd], y[rnd], Xval, yval, epochs=epochs,
                           seed=seed + 100 + s, rank=rank, opts=opts, progress=False,
                           label="validation sweep", history=False)
                accs.append(r["test_accuracy"])
                wmax = max(wmax, r["writes"]["max"])
            row = {**cand, "val_accuracy": float(np.mean(accs)), "val_accuracies": accs,
                   "writes_max": int(wmax), "eligible": budget is None or wmax <= budget}
            rows.append(row)
            if progress:
                print(f"[nms run] sweep {kind} {cand}: validation accuracy {row['val_accuracy']:.4f}"
                      f", worst-case writes {wmax}{'' if row['eligible'] else ' (over budget)'}")
        pool = [t for t in rows if t["eligible"]] or rows
        best = max(pool, key=lambda t: (t["val_accuracy"], -t["writes_max"]))
        out[kind] = {"chosen": {k: best[k] for k in grid[kind][0]}, "sweep": rows,
                     "chosen_writes_max": best["writes_max"], "seeds": n_seeds,
                     "write_budget": budget, "write_ratio": write_ratio if budget is not None else None,
                     "within_budget": bool(best["eligible"])}
    return {k: out[k] for k in grid}


def _clock_mhz_arg(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"clock {text!r} is not a number of MHz") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"clock {value:g} MHz must be > 0")
    return value


def _clock(transport, clock_hz):
    """``(clock in Hz, where it comes from)`` for the report's job time."""
    if clock_hz is not None:
        if not clock_hz > 0:
            raise ValueError(f"clock_hz must be > 0, not {clock_hz!r}")
        return float(clock_hz), "given"
    board = getattr(getattr(transport, "config", None), "clock_hz", None)
    if board:
        return float(board), f"the {getattr(transport, 'board', 'board')} job top's clock"
    return DEFAULT_CLOCK_HZ, "default"


def device_report(counters: dict, transport, *, clock_hz: float | None = None) -> dict:
    """The backend's counters of the whole selection (every chunk job summed): what a
    cycle-accurate backend has (cycles, job time at the clock, per-stage busy cycles) and what
    every backend has (near-memory and DDR bytes, items), named by the declaration."""
    from nms.rtl import regmap

    regs = counters["registers"]
    timed = bool(counters["timed"])
    out = {"backend": transport.name, "jobs": counters["chunks"], "cycle_accurate": timed,
           "near_bytes_read": regs["BYTES_READ"], "near_bytes_written": regs["BYTES_WRITTEN"],
           "ddr_bytes_read": regs["AXI_BYTES_READ"], "ddr_bytes_written": regs["AXI_BYTES_WRITTEN"],
           "perf": {c.name: regs[c.register] for c in regmap.PERF_COUNTERS
                    if c.register is not None and c.register in regs},
           "perf_docs": {c.name: c.doc for c in regmap.PERF_COUNTERS if c.register is not None}}
    if timed:
        hz, source = _clock(transport, clock_hz)
        out.update({"cycles": regs["CYCLES"], "clock_hz": hz, "clock_source": source,
                    "job_seconds": regs["CYCLES"] / hz})
    else:
        out["missing"] = [c.name for c in regmap.PERF_COUNTERS if c.timed and c.register] + ["cycles"]
        out["missing_reason"] = ("the model backend is not cycle-accurate: counters that depend "
                                 "on clock-cycle timing (memory latency, back-pressure, stage "
                                 "overlap) exist only on the RTL and FPGA backends")
    if getattr(transport, "sim_cycles", None) is not None:
        sim = {"cycles": int(transport.sim_cycles), "wall_seconds": float(transport.sim_seconds)}
        sim["cycles_per_second"] = sim["cycles"] / sim["wall_seconds"] if sim["wall_seconds"] else None
        out["simulation"] = sim
    return out


def run_job(ds, *, ratio=0.1, backend="model", capacity=CAPACITY, config: desne.DesneConfig | None = None,
            model="lrt-cnn", rank=4, epochs=10, seed=0, skip_full=False, progress=True,
            shift="BG+WN", n_train=None, pretrain_epochs=None, sweep=False, port=None,
            clock_hz: float | None = None, transport_options: dict | None = None,
            pool: str | None = None) -> dict:
    """The whole job on a loaded :class:`~nms.sw.datasets.Dataset`; returns the report dict.

    ``pool``: the jobs' pooling (``Driver.resolve_pool``; default: the data set's default
    pooling where the device has the pooling unit — every backend's default device has it).

    ``clock_hz``: clock of the report's job time (see :func:`device_report`);
    ``transport_options``: further keyword arguments of the backend (e.g. the RTL build ``hw``).
    """
    ratio = validate_ratio(ratio)
    if clock_hz is not None and not 0 < clock_hz < float("inf"):
        raise ValueError(f"clock_hz must be > 0, not {clock_hz!r}")
    if model not in _NETS:
        raise ValueError(f"unknown model {model!r}; choose one of {', '.join(_NETS)}")
    if ds.X_test is None:
        raise ValueError(f"dataset {ds.name!r} has no test split; nms run needs one to report accuracy")
    if ds.X_train.ndim != 3:
        raise ValueError(f"dataset {ds.name!r} is flat {ds.X_train.shape}; nms run needs images "
                         "(the domain shift and the CNN are image operations)")
    Xsrc, ysrc, Xte_raw, yte = ds.X_train, ds.y_train, ds.X_test, ds.y_test
    if n_train is not None and n_train < len(ysrc):
        Xsrc, ysrc = _stratified(Xsrc, ysrc, n_train, seed)
    h = Xsrc.shape[1]
    quant = QuantConfig()
    qin = quant.quantizers()["in"]
    t_pre = time.perf_counter()

    # 1. the deployed model: pre-trained offline on the clean source domain
    net0 = build_model(model, input_shape=Xsrc.shape[1:] if model != "mlp" else (Xsrc[0].size,),
                       n_classes=int(ysrc.max()) + 1, quant=quant,
                       rng=np.random.default_rng([seed, 1]), **_NETS[model])
    pe = pretrain_epochs or (20 if h <= 16 else 3)
    pre = pretrain(net0, _prep(Xsrc, ds.max_value, model, qin), ysrc, epochs=pe, seed=seed,
                   progress=progress)
    pre["seconds"] = time.perf_counter() - t_pre

    # 2. the new domain in DDR: shifted training images (80 %), validation (20 %), shifted test
    Xnew = shift_domain(Xsrc, max_value=ds.max_value, shift=shift, seed=seed)
    Xte_new = shift_domain(Xte_raw, max_value=ds.max_value, shift=shift, seed=seed + 1)
    perm = np.random.default_rng([seed, 24]).permutation(len(ysrc))
    n_val = max(1, len(ysrc) // 5)
    ddr, val = np.sort(perm[n_val:]), np.sort(perm[:n_val])
    Xtr, ytr = Xnew[ddr], ysrc[ddr]
    P = lambda X: _prep(X, 255, model, qin)  # noqa: E731
    Xtr_p, Xval_p, Xte_p = P(Xtr), P(Xnew[val]), P(Xte_new)
    pre["test_accuracy_source"] = float(np.mean(net0.predict(_prep(Xte_raw, ds.max_value, model, qin)) == yte))

    bar = None
    if progress:
        from tqdm import tqdm
        bar = lambda jobs: tqdm(jobs, desc="DE-SNE chunks", unit="chunk")  # noqa: E731

    # 3. near-memory selection through the driver
    transport = TRANSPORTS[backend](capacity=capacity, **({"port": port} if port else {}),
                                    **(transport_options or {}))
    cfg = (config or desne.DesneConfig()).replace(capacity=capacity, k=transport.k,
                                                  neg_samples=transport.neg_samples)
    drv = Driver(transport, cfg)
    sel = drv.select(_flat(Xtr), ytr, ratio, seed=seed, pool=pool, progress=bar)
    cfg = cfg.replace(pool=sel["pool"])     # what the jobs ran (OPT.pool), for the energy report
    idx = sel["indices"]
    rnd = random_select(_flat(Xtr), ytr, ratio, seed=seed)["indices"]

    # learning rates: fixed (chosen earlier on the validation split) or swept now on it
    opts = {k: dict(v) for k, v in TRAIN_OPTS.items()}
    sweep_rep = None
    if sweep:
        sweep_rep = select_learning_rates(net0, Xtr_p, ytr, Xval_p, ysrc[val], epochs=epochs,
                                          seed=seed, rank=rank, ratio=ratio, progress=progress)
        for k in opts:
            opts[k].update(sweep_rep[k]["chosen"])

    # 4. adaptation: SKS on DE-SNE / random / full, SGD on DE-SNE; and no adaptation
    def adapt(kind, sub, label):
        return _adapt(kind, net0, Xtr_p[sub], ytr[sub], Xte_p, yte, epochs=epochs, seed=seed,
                      rank=rank, opts=opts[kind], progress=progress, label=label)

    runs = {"sks_desne": adapt("sks", idx, "the DE-SNE coreset"),
            "sks_random": adapt("sks", rnd, "a random coreset"),
            "sgd_desne": adapt("sgd", idx, "the DE-SNE coreset")}
    if not skip_full:
        runs["sks_full"] = adapt("sks", np.arange(len(ytr)), "the full new-domain data")
    acc_none = float(np.mean(net0.predict(Xte_p) == yte))

    # 5. traffic and energy: the near-memory bytes come from the job's counters
    bytes_per_sample = int(np.prod(Xtr.shape[1:]))
    traffic = energy.compare_training(n_samples=len(ytr), bytes_per_sample=bytes_per_sample,
                                      epochs=epochs, n_selected=int(idx.size),
                                      near_bytes=int(sel["counters"]["near_bytes_read"]))
    params = energy.EnergyParams()
    selection_energy = energy.selection_report(  # every term of the selection, docs/energy.md
        ytr, dim=bytes_per_sample, ratio=ratio, config=cfg, hardware=transport, epochs=epochs,
        measured_near_bytes=int(sel["counters"]["near_bytes_read"]), params=params,
        chunk_capacity=sel["chunk_capacity"])
    writes = {k: r["writes"] for k, r in runs.items()}
    nvm = {k: energy.nvm_energy_pj(weight_writes=int(w["total"]), params=params) for k, w in writes.items()}
    sks_w, sgd_w = writes["sks_desne"], writes["sgd_desne"]
    sks_c, sgd_c = runs["sks_desne"]["writes_changed"], runs["sgd_desne"]["writes_changed"]
    # epochs after which the one-off near-memory reads are repaid by the smaller PCB traffic
    per_epoch_saving = 8 * params.e_pcb * (len(ytr) - idx.size) * bytes_per_sample
    near_once = traffic["nms"]["energy_pj"] - 8 * params.e_pcb * traffic["nms"]["pcb_bytes"]
    acc = {"none": acc_none, **{k: r["test_accuracy"] for k, r in runs.items()}}
    goal_ratio = sgd_w["max"] / max(sks_w["max"], 1)
    return {
        "breakeven_epochs": near_once / per_epoch_saving if per_epoch_saving > 0 else float("inf"),
        "dataset": {"name": ds.name, "n_train": int(len(ytr)), "n_test": int(len(yte)),
                    "n_val": int(n_val), "shape": list(Xtr.shape[1:]),
                    "classes": int(np.unique(ytr).size), "shift": shift},
        "pretrain": {**pre, "model": model, "n_samples": int(len(ysrc))},
        "selection": {"ratio": ratio, "n_selected": int(idx.size), "backend": sel["backend"],
                      "counters": sel["counters"], "config": dataclasses.asdict(cfg),
                      "pool": sel["pool"], "chunk_capacity": sel["chunk_capacity"],
                      "hardware": {"buffer_dim": transport.buffer_dim,
                                   "cand_tile": transport.cand_tile, "tile": transport.tile,
                                   "lanes": transport.lanes},
                      "device": device_report(sel["counters"], transport, clock_hz=clock_hz),
                      "indices": idx.tolist()},
        "training": {"model": model, "rank": rank, "epochs": epochs, "seed": seed,
                     "options": opts, "sweep": sweep_rep},
        "runs": {k: {kk: v for kk, v in r.items() if kk not in ("layers",)} for k, r in runs.items()},
        "layers": {k: r["layers"] for k, r in runs.items()},
        "accuracy": acc,
        "writes": writes,
        "writes_changed": {k: r["writes_changed"] for k, r in runs.items()},
        "write_reduction": {"max": goal_ratio,
                            "mean": sgd_w["mean"] / max(sks_w["mean"], 1e-12),
                            "max_changed_cells": sgd_c["max"] / max(sks_c["max"], 1)},
        "goal": {"rule": "SKS on the DE-SNE coreset within 1 point of SGD on it, with >= 100x "
                         "fewer worst-case writes (paper's count)",
                 "met": bool(acc["sks_desne"] >= acc["sgd_desne"] - 0.01 and goal_ratio >= 100)},
        "nvm_write_energy_pj": nvm,
        "traffic": traffic,
        "selection_energy": selection_energy,
        "environment": {"python": platform.python_version(), "numpy": np.__version__},
        "_ddr_X": Xtr, "_ddr_y": ytr,  # for the embedding plot; not written to the JSON
    }


def _lr_bias(opts: dict) -> str:
    """The bias/BN learning rates of the options (the trainers' default 1e-2 where unset)."""
    rates = {k: float(o.get("lr_bias", 1e-2)) for k, o in opts.items()}
    if len(set(rates.values())) == 1:
        return f"{next(iter(rates.values())):g} for both"
    return ", ".join(f"{k.upper()} {v:g}" for k, v in rates.items())


def _markdown(rep: dict) -> str:
    d, s, t = rep["dataset"], rep["selection"], rep["traffic"]
    acc, w, wc = rep["accuracy"], rep["writes"], rep["writes_changed"]
    pre = rep["pretrain"]
    names = {"sks_desne": "SKS on DE-SNE coreset", "sks_random": "SKS on random coreset",
             "sks_full": "SKS on full new-domain data", "sgd_desne": "SGD on DE-SNE coreset"}
    lines = [f"# nms run — {d['name']}, new domain {d['shift']}", "",
             f"Deployed model: {pre['model']} pre-trained offline on {pre['n_samples']} clean "
             f"training images ({pre['epochs']} epochs, Adam lr {pre['lr']}): "
             f"{100 * pre['test_accuracy_source']:.1f} % on the clean test set. New domain "
             f"({d['shift']}): {d['n_train']} images in DDR, {d['n_val']} held out for validation, "
             f"{d['n_test']} test images, shape {d['shape']}. Coreset: {s['n_selected']} samples "
             f"({100 * s['ratio']:g} %) selected near memory by DE-SNE on the `{s['backend']}` "
             f"backend ({s['counters']['chunks']} chunks of at most {s['chunk_capacity']}, "
             f"{s['counters']['seconds']:.1f} s; kNN pooling {s['pool']}; device "
             f"{'chunk buffer ' + str(s['hardware']['buffer_dim']) if s['hardware']['buffer_dim'] else 'streamed'}"
             f", T = {s['hardware']['tile']}, P = {s['hardware']['cand_tile']}).", "",
             "## Accuracy on the new domain and NVM weight writes", "",
             "| adaptation | samples | test accuracy | writes / weight (mean) | worst case (paper) "
             "| worst case (changed cells) | NVM write energy (µJ) | train time (s) |",
             "|---|---|---|---|---|---|---|---|",
             f"| none (deployed model) | 0 | {100 * acc['none']:.2f} % | 0 | 0 | 0 | 0 | 0 |"]
    for k in ("sks_desne", "sks_random", "sks_full", "sgd_desne"):
        if k in rep["runs"]:
            r = rep["runs"][k]
            lines.append(f"| {names[k]} | {r['n_train']} | {100 * acc[k]:.2f} % | {w[k]['mean']:.2f} | "
                         f"{w[k]['max']:,} | {wc[k]['max']:,} | "
                         f"{rep['nvm_write_energy_pj'][k] / 1e6:.3f} | {r['seconds']:.1f} |")
    red = rep["write_reduction"]
    opts = rep["training"]["options"]
    lines += ["", f"SKS vs SGD on the same coreset: **{red['max']:.0f}× fewer worst-case writes** "
                  f"(paper's count; {red['max_changed_cells']:.1f}× by changed cells), "
                  f"{red['mean']:.0f}× fewer mean writes per weight, accuracy "
                  f"{100 * (acc['sks_desne'] - acc['sgd_desne']):+.2f} points. Goal "
                  f"({rep['goal']['rule']}): **{'met' if rep['goal']['met'] else 'not met'}**.", "",
              f"Options: SKS lr {opts['sks']['lr']:g} (max-norm, B = {opts['sks']['batch_conv']} "
              f"conv / {opts['sks']['batch_fc']} dense, rank {rep['training']['rank']}), SGD lr "
              f"{opts['sgd']['lr']:g}; bias/BN lr {_lr_bias(opts)}; {rep['training']['epochs']} epochs "
              "for both. "
              + ("Chosen in this run on the validation split (never the test split):"
                 if rep["training"]["sweep"] else
                 "Fixed (chosen on the validation split by `nms run --sweep`)."), ""]
    sweep = rep["training"]["sweep"]
    if sweep:
        n_seeds = max(sw.get("seeds", 1) for sw in sweep.values())
        lines += [f"Each candidate trains on {n_seeds} random coreset(s) of the DDR data (own "
                  "seeds) and is scored by the mean validation accuracy; SGD is swept first, and "
                  "an SKS candidate is eligible only if its worst-case writes (max over the "
                  "seeds) are within the write budget, 1 / "
                  f"{sweep.get('sks', {}).get('write_ratio') or SWEEP_WRITE_RATIO:g} of the chosen SGD's"
                  + (f" ({sweep['sks']['write_budget']:,.0f} writes)"
                     if sweep.get("sks", {}).get("write_budget") else "")
                  + (". No SKS candidate met it: the best one is shown."
                     if not sweep.get("sks", {}).get("within_budget", True) else "."), "",
                  "| method | options | validation accuracy (mean) | per seed | worst-case writes |",
                  "|---|---|---|---|---|"]
        for kind, sw in sweep.items():
            for row in sw["sweep"]:
                cand = {k: row[k] for k in sw["chosen"]}
                mark = " **(chosen)**" if cand == sw["chosen"] else ""
                label = ", ".join(f"{k} {v:g}" for k, v in cand.items())
                per = " / ".join(f"{100 * a:.1f}" for a in row.get("val_accuracies", [row["val_accuracy"]]))
                over = "" if row.get("eligible", True) else " (over budget)"
                lines.append(f"| {kind.upper()} | {label}{mark} | "
                             f"{100 * row['val_accuracy']:.2f} % | {per} | {row['writes_max']:,}{over} |")
        lines.append("")
    lines += _device_markdown(s.get("device"))
    lines += ["## Off-chip traffic and link energy (adaptation epochs + selection)", "",
              "| | near-memory bytes | PCB bytes | link energy (µJ) |", "|---|---|---|---|",
              f"| full-data adaptation | {t['full']['near_bytes']} | {t['full']['pcb_bytes']} | "
              f"{t['full']['energy_pj'] / 1e6:.2f} |",
              f"| NMS (select near memory, adapt on coreset) | {t['nms']['near_bytes']} | "
              f"{t['nms']['pcb_bytes']} | {t['nms']['energy_pj'] / 1e6:.2f} |", "",
              f"PCB bytes: {t['pcb_bytes_ratio']:.1f}× fewer; link energy: "
              + (f"{t['saving_ratio']:.2f}× lower ({100 * t['saving_fraction']:.1f} % saved)"
                 if t["saving_ratio"] >= 1 else
                 f"{1 / t['saving_ratio']:.2f}× HIGHER with NMS at {rep['training']['epochs']} epochs")
              + f". NMS breaks even on link energy after {rep['breakeven_epochs']:.1f} epochs: the "
              "one-off near-memory reads ("
              + ("each image read once into the chunk buffer"
                 if rep["selection"].get("hardware", {}).get("buffer_dim") else
                 "each chunk streamed once per query tile of T vectors, so they scale with N/T")
              + ") are repaid by the smaller per-epoch PCB traffic. "
              "Near-memory bytes are the job's counter. NVM write energy = total writes (paper's "
              "count) x 8 bit x e_nvm_write. "
              f"Energy parameters (pJ/bit): e_pcb {t['params']['e_pcb']}, e_near {t['params']['e_near']}, "
              f"e_nvm_write {t['params']['e_nvm_write']} "
              f"— placeholders: {', '.join(t['placeholders'])} (see `nms.sw.energy.EnergyParams`). "
              "The selection's own energy (DDR, on-chip memory, compute): next section.", ""]
    lines += energy.selection_markdown(rep.get("selection_energy"))
    return "\n".join(lines)


def _device_markdown(dev: dict | None) -> list[str]:
    """The section of the backend's counters (:func:`device_report`)."""
    if not dev:
        return []
    lines = [f"## The selection on the `{dev['backend']}` backend ({dev['jobs']} chunk jobs)", ""]
    if dev["cycle_accurate"]:
        lines.append(f"**{dev['cycles']:,} clock cycles** = **{1e3 * dev['job_seconds']:.2f} ms** "
                     f"of device time at {dev['clock_hz'] / 1e6:g} MHz ({dev['clock_source']} "
                     "clock; start of each job to its last result write, summed).")
    else:
        lines.append(f"No cycle counts: {dev['missing_reason']}. Not reported here: "
                     + ", ".join(f"`{n}`" for n in dev["missing"]) + ".")
    if dev.get("simulation"):
        sim = dev["simulation"]
        rate = f", {sim['cycles_per_second'] / 1e3:.0f} k cycles/s" if sim["cycles_per_second"] else ""
        lines.append(f"Simulation: {sim['cycles']:,} cycles in {sim['wall_seconds']:.1f} s of wall "
                     f"time{rate}.")
    lines += ["", "| counter | value | counts |", "|---|---|---|",
              f"| near-memory bytes read | {dev['near_bytes_read']:,} | vector bytes the datapath read |",
              f"| near-memory bytes written | {dev['near_bytes_written']:,} | result bytes |",
              f"| DDR (AXI) bytes read | {dev['ddr_bytes_read']:,} | whole bus beats |",
              f"| DDR (AXI) bytes written | {dev['ddr_bytes_written']:,} | strobed bytes |"]
    for name, value in dev["perf"].items():
        lines.append(f"| `{name}` | {value:,} | {dev['perf_docs'][name]} |")
    lines.append("")
    return lines


def _plots(rep: dict, ds, out: Path, seed: int) -> list[str]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    # embedding of the first classes (the hardware returns only indices; the bit-exact model,
    # which it equals, provides the coordinates for the picture)
    X, y = _flat(rep["_ddr_X"]), rep["_ddr_y"]
    labels = np.unique(y)[:4]
    cfg = desne.DesneConfig(**rep["selection"]["config"])
    keep = np.isin(y, labels)
    res = desne.select(X[keep], y[keep], rep["selection"]["ratio"], cfg, seed=seed, details=True)
    firsts = {}
    for c in res["chunks"]:
        firsts.setdefault(int(c["label"]), c)
    fig, axes = plt.subplots(1, len(firsts), figsize=(4 * len(firsts), 4), squeeze=False)
    for ax, (lab, c) in zip(axes[0], sorted(firsts.items())):
        xy = np.asarray(c["embedding"]) / 65536.0
        chosen = np.isin(c["members"], c["selected"])
        ax.scatter(xy[~chosen, 0], xy[~chosen, 1], s=4, c="0.6", label="class members")
        ax.scatter(xy[chosen, 0], xy[chosen, 1], s=30, c="crimson", marker="x", label="exemplars")
        ax.set_title(f"class {lab}: {int(chosen.sum())} of {len(chosen)}")
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0][0].legend(loc="lower left", fontsize=8)
    fig.suptitle(f"DE-SNE embedding and exemplars ({rep['dataset']['name']}, first chunk per class)")
    fig.tight_layout()
    fig.savefig(out / "embedding.png", dpi=110)
    plt.close(fig)
    written.append("embedding.png")

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
    for k, r in rep["runs"].items():
        h = r["history"]
        if not h:
            continue
        s = [p["samples"] for p in h]
        a1.plot(s, [p.get("test_accuracy", np.nan) for p in h], label=k)
        a2.plot(s, [max(p["writes_max"], 0.5) for p in h], label=k)
    a1.set_xlabel("training samples seen")
    a1.set_ylabel("new-domain test accuracy")
    a2.set_xlabel("training samples seen")
    a2.set_ylabel("worst-case writes per weight cell")
    a2.set_yscale("log")
    for a in (a1, a2):
        a.legend(fontsize=8)
        a.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "training.png", dpi=110)
    plt.close(fig)
    written.append("training.png")
    return written


def write_reports(rep: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    clean = {k: v for k, v in rep.items() if not k.startswith("_")}
    (out / "report.json").write_text(json.dumps(clean, indent=1, default=float) + "\n")
    (out / "report.md").write_text(_markdown(rep))


def main(args) -> int:
    ds = load_dataset(args.dataset)
    cfg = desne.DesneConfig()
    if args.allocation is not None:
        cfg = cfg.replace(allocation=args.allocation)
    if args.perplexity is not None:
        cfg = cfg.replace(perplexity=args.perplexity)
    if args.iterations is not None:
        cfg = cfg.replace(n_iter=args.iterations)
    t0 = time.perf_counter()
    rep = run_job(ds, ratio=args.ratio, backend=args.backend, capacity=args.capacity, config=cfg,
                  model=args.model, rank=args.rank, epochs=args.epochs, seed=args.seed,
                  skip_full=args.skip_full, progress=not args.no_progress, shift=args.shift,
                  n_train=args.n_train, pretrain_epochs=args.pretrain_epochs, sweep=args.sweep,
                  port=args.port, clock_hz=None if args.clock_mhz is None else 1e6 * args.clock_mhz,
                  pool=args.pool)
    rep["seconds_total"] = time.perf_counter() - t0
    write_reports(rep, args.out)
    rep["plots"] = _plots(rep, ds, args.out, args.seed)
    write_reports(rep, args.out)
    print((args.out / "report.md").read_text())
    print(f"[nms run] reports in {args.out}/ (report.json, report.md, {', '.join(rep['plots'])})")
    return 0
