"""``nms bench energy``: the selection's energy term by term and cumulative energy against
epochs, full-data training vs NMS, Fashion-MNIST at 10 % (issue 11).

Two dataflows: the current RTL (``nms.sw.dataflow.BASELINE`` with the default DE-SNE schedule)
and the default chosen by ``nms bench dataflow`` (``nms.sw.dataflow.CHOSEN``). For each, every
term of :func:`nms.sw.energy.selection_energy` over :func:`nms.sw.dataflow.dataset_counts` of
the whole Fashion-MNIST training split (labels only are needed: the counts are closed formulas
of the chunk sizes), the goal checks of the issue, and the curve
``E(epochs)`` for full-data training (every image over the PCB once per epoch) and NMS
(selection + the coreset over the PCB once per epoch + the indices once), with the break-even
epoch. The plot goes to ``<out>/energy.png``.

``--energy-param NAME=VALUE`` (``python -m nms.bench.energy``) overrides any energy figure.
"""

from __future__ import annotations

import json
import platform
from pathlib import Path

import numpy as np

EPOCHS = 20
GOAL_EPOCHS = 10
RATIO = 0.1


def _labels(quick: bool):
    """Fashion-MNIST training labels (the counts depend on the class sizes only)."""
    from nms.bench.dataflow import _fashion

    ds = _fashion()
    return ds.y_train, int(np.prod(ds.X_train.shape[1:])), ds.name


def evaluate(flow, n_iter: int, y, dim: int, params, *, search: str = "robust") -> dict:
    """Counts, energy terms, goal checks and the cumulative curve of one dataflow."""
    from nms.sw.dataflow import dataset_counts, memory_plan
    from nms.sw.energy import cumulative_energy, selection_energy, training_comparison

    counts = dataset_counts(y, dim=dim, ratio=RATIO, flow=flow, n_iter=n_iter, search=search)
    e = selection_energy(counts, params)
    m = counts["rtl"]["bytes_written"] // 4
    kw = dict(n_samples=len(y), n_selected=int(m), bytes_per_sample=dim,
              selection_pj=e["total"], params=params)
    at10 = training_comparison(epochs=GOAL_EPOCHS, **kw)
    curve = cumulative_energy(epochs=EPOCHS, **kw)
    data_bytes = len(y) * dim
    return {
        "flow": flow.as_dict(), "label": flow.label, "n_iter": n_iter, "chunks": counts["chunks"],
        "n_selected": int(m), "counts": {"rtl": counts["rtl"], "ddr": counts["ddr"],
                                         "dist_elems": counts["dist_elems"],
                                         "pair_items": counts["pair_items"],
                                         "sram_bits": {k: v["read_bits"] + v["write_bits"]
                                                       for k, v in counts["sram"].items()}},
        "energy": e, "at_10_epochs": at10, "curve": curve,
        "memory_blocks": memory_plan(flow)["blocks"],
        "goals": {
            "selection_le_1_epoch": bool(at10["selection_in_epochs"] <= 1.0),
            "saving_ge_75pct_at_10": bool(at10["saving_fraction"] >= 0.75),
            "ddr_le_1_1x_dataset": bool(counts["ddr"]["read_bytes"] <= 1.1 * data_bytes),
        },
        "ddr_vs_dataset": counts["ddr"]["read_bytes"] / data_bytes,
    }


def _plot(res, path: Path) -> bool:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, ax = plt.subplots(figsize=(7, 4.2))
    first = res["flows"][0]["curve"]
    ax.plot(first["epoch"], np.array(first["full_pj"]) / 1e9, "k-", label="full-data training")
    for f, style in zip(res["flows"], ("r--", "b-")):
        c = f["curve"]
        be = f["at_10_epochs"]["breakeven_epoch"]
        ax.plot(c["epoch"], np.array(c["nms_pj"]) / 1e9, style,
                label=f"NMS, {f['name']} (break-even {be:.2f} epochs)")
    ax.set_xlabel("training epochs")
    ax.set_ylabel("cumulative energy (mJ): PCB link + selection")
    ax.set_title(f"{res['dataset']} at {100 * RATIO:.0f} %")
    ax.set_ylim(0, 1.05 * first["full_pj"][-1] / 1e9)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def run(out_dir: Path, quick: bool = False, *, params=None) -> dict:
    from nms.sw.dataflow import BASELINE, CHOSEN, CHOSEN_SCHEDULE
    from nms.sw.energy import EnergyParams

    out_dir = Path(out_dir)
    params = params or EnergyParams()
    y, dim, name = _labels(quick)
    flows = [("current RTL", BASELINE.replace(max_dim=dim), 300),
             ("chosen default", CHOSEN.replace(max_dim=dim), CHOSEN_SCHEDULE["n_iter"])]
    res = {"benchmark": "energy", "dataset": name, "ratio": RATIO, "n_samples": int(len(y)),
           "bytes_per_sample": dim, "energy_params": params.as_dict(),
           "placeholders": list(EnergyParams.PLACEHOLDERS),
           "flows": [{"name": nm, **evaluate(f, it, y, dim, params)} for nm, f, it in flows],
           "environment": {"python": platform.python_version(), "numpy": np.__version__}}
    res["plot"] = "energy.png" if _plot(res, out_dir / "energy.png") else None
    (out_dir / "energy.json").write_text(json.dumps(res, indent=1))
    (out_dir / "energy.md").write_text(_markdown(res))
    return res


def _markdown(res) -> str:
    p = res["energy_params"]
    flows = res["flows"]
    lines = [f"# Energy of NMS vs full-data training — {res['dataset']} at "
             f"{100 * res['ratio']:.0f} %", "",
             f"{res['n_samples']} images of {res['bytes_per_sample']} bytes; one full-data epoch "
             f"over the PCB = {flows[0]['at_10_epochs']['full_epoch_pj'] / 1e9:.2f} mJ. Counts: "
             "`nms.sw.dataflow.dataset_counts` (the RTL-counted ones equal the Verilated "
             "datapath's counters, tests/test_energy.py); energies: `nms.sw.energy` "
             "(docs/energy.md has every figure and its source). Placeholders (no quoted "
             f"figure): {', '.join(res['placeholders'])}.", "",
             "| dataflow | iterations | chunks | DDR bytes read | DDR / data set | selection (mJ) | "
             "selection / full epoch | saving @10 epochs | break-even epoch | blocks |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for f in flows:
        a = f["at_10_epochs"]
        lines.append(f"| {f['name']}: {f['label']} | {f['n_iter']} | {f['chunks']} | "
                     f"{f['counts']['ddr']['read_bytes']} | {f['ddr_vs_dataset']:.2f} | "
                     f"{f['energy']['total'] / 1e9:.2f} | {a['selection_in_epochs']:.2f} | "
                     f"{100 * a['saving_fraction']:.1f} % | {a['breakeven_epoch']:.2f} | "
                     f"{f['memory_blocks']} |")
    lines += ["", "## Goals (issue 11)", "", "| dataflow | selection <= 1 epoch | >= 75 % saved "
              "@10 | DDR <= 1.1 x data set |", "|---|---|---|---|"]
    for f in flows:
        g = f["goals"]
        lines.append(f"| {f['name']} | {'met' if g['selection_le_1_epoch'] else 'NOT met'} | "
                     f"{'met' if g['saving_ge_75pct_at_10'] else 'NOT met'} | "
                     f"{'met' if g['ddr_le_1_1x_dataset'] else 'NOT met'} |")
    terms = sorted(set().union(*[f["energy"]["terms"] for f in flows]),
                   key=lambda t: -flows[-1]["energy"]["terms"].get(t, 0.0))
    lines += ["", "## Selection energy per term (mJ)", "",
              "| term | " + " | ".join(f["name"] for f in flows) + " |",
              "|---|" + "---:|" * len(flows)]
    for t in terms:
        lines.append(f"| {t} | " + " | ".join(f"{f['energy']['terms'].get(t, 0.0) / 1e9:.3f}"
                                              for f in flows) + " |")
    for g in ("ddr", "onchip_memory", "compute"):
        lines.append(f"| **{g}** | " + " | ".join(f"{f['energy']['groups'][g] / 1e9:.3f}"
                                                  for f in flows) + " |")
    lines.append("| **total** | " + " | ".join(f"{f['energy']['total'] / 1e9:.3f}" for f in flows)
                 + " |")
    lines += ["", "## Cumulative energy (mJ) against epochs", "",
              "| epochs | full data | " + " | ".join(f"NMS, {f['name']}" for f in flows) + " |",
              "|---:|---:|" + "---:|" * len(flows)]
    c0 = flows[0]["curve"]
    for i, e in enumerate(c0["epoch"]):
        if e in (0, 1, 2, 5, 10, 20) or e == c0["epoch"][-1]:
            lines.append(f"| {e} | {c0['full_pj'][i] / 1e9:.2f} | " + " | ".join(
                f"{f['curve']['nms_pj'][i] / 1e9:.2f}" for f in flows) + " |")
    if res.get("plot"):
        lines += ["", f"![cumulative energy]({res['plot']})"]
    lines += ["", "Energy figures used (pJ/bit or pJ/op): " + ", ".join(
        f"{k} {v:g}" for k, v in p.items()), ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    import argparse

    from nms.sw.energy import add_energy_arguments, parse_energy_params

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("bench/results"))
    add_energy_arguments(ap)
    a = ap.parse_args(argv)
    a.out.mkdir(parents=True, exist_ok=True)
    run(a.out, params=parse_energy_params(a.energy_param))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
