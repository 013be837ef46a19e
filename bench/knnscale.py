"""``nms bench knnscale``: how the kNN stage's ECP5 cost scales with T, L and P.

The dataflow sweep (``bench/dataflow.py``, ``dataflow.md``) picks a query tile T, lanes L and
candidate group P with a guessed fit rule. This benchmark measures the real thing: the block
``knn_datapath`` (:class:`nms.rtl.knn.KnnDatapath` = distance engine + kNN selector + tile-base
FIFO; **not** the chunk buffer or pooling unit, which live in
:class:`nms.rtl.datapath.DesneDatapath`) is built exactly as ``nms bench timing`` builds it —
:func:`nms.fpga.build.build` on the ULX3S-85F (LFE5U-85F, speed 6) inside the registered board
top, YoWASP Yosys + nextpnr, one run at the default seed — at each (T, L, P) of :data:`ROWS`,
every other generator parameter at its default (``max_dim`` 1024, K 16, 8-bit elements,
``index_width`` 16). Each row gives post-route LUT / FF / DSP (MULT18) / BRAM (DP16KD), Fmax and
build time; the report fits ``LUT ~ a + b*T`` and checks ``DSP == T*L`` where the rows allow it,
then adds the other datapath stages' figures from ``timing.json`` to say which rows leave room for
the whole datapath on the 85F.

Builds run one at a time (two shared cores), each in its own process group with a wall-time limit
(:data:`LIMIT_S`, default 30 min): a build over it is killed and recorded as not finished. A
parameter set the generator refuses, or a build that fails (e.g. does not fit), is recorded with
its message. Every finished row is cached in ``<out>/knn_scale_parts/<label>.json`` together with
the revision it was built from, so an interrupted run keeps its rows and a re-run builds only the
missing ones (delete a part to re-build it). ``--quick`` builds only the first two rows. Builds go
to ``build/knnscale/<label>`` (not tracked).
"""

from __future__ import annotations

import json
import os
import platform
import signal
import subprocess
import sys
import time
from pathlib import Path

from nms.bench import _report
from nms.bench.timing import BOARD, GOAL_MHZ, _revision, critical_path

__all__ = ["run", "ROWS", "LIMIT_S", "DEVICE"]

#: (label, T, L, P) in build order: the device default first, then the sweep's candidates
ROWS = (
    ("A", 4, 8, 4),     # today's device default tile (reference)
    ("C", 16, 2, 4),
    ("B", 16, 8, 4),    # the dataflow sweep's chosen row
    ("D", 16, 4, 4),
    ("E", 32, 2, 4),
    ("F", 16, 2, 8),
    ("G", 4, 8, 8),     # P = 8 at the default tile (accumulator queue)
    ("H", 8, 4, 4),
)
#: wall-time limit of one build (seconds)
LIMIT_S = 30 * 60
#: the LFE5U-85F's resources (nextpnr's "available" figures, checked against each report)
DEVICE = {"lut": 83640, "ff": 83640, "dsp": 156, "bram": 208}
#: the other datapath stages, as ``timing.json`` names their blocks
OTHER_STAGES = ("affinity", "embedding", "grid")
#: allowance for the top (CSR, AXI master, fetcher, controller) on top of the stages' sum
TOP_ALLOWANCE = 0.15
#: the chosen dataflow's buffered vector length and the datapath's capacity (chunk-buffer size)
BUFFER_DIM, CAPACITY = 49, 1024

_CHILD = r"""
import json, sys, time, traceback
from nms.fpga.build import build, BuildError
params, out = json.loads(sys.argv[1]), sys.argv[2]
t0 = time.perf_counter()
try:
    rep = build(board=sys.argv[3], block="knn_datapath", params=params, out_dir=out)
    res = {"status": "ok", "report": {k: rep[k] for k in ("params", "utilisation", "fmax_mhz",
           "timing_met", "build_seconds", "elaborate_seconds", "tools")}}
except (ValueError, TypeError) as exc:
    res = {"status": "refused", "error": f"{type(exc).__name__}: {exc}"}
except BuildError as exc:
    res = {"status": "failed", "error": str(exc),
           "overused": {k: list(v) for k, v in exc.overused.items()}}
res["wall_seconds"] = round(time.perf_counter() - t0, 1)
print("@@RESULT@@" + json.dumps(res))
"""


def _partial(out: Path) -> dict | None:
    """What a build that did not finish got to: the packed utilisation (the same figures a
    finished build reports) and nextpnr's last timing estimate, from the partial ``top.tim``."""
    import re

    from nms.fpga.report import LogParseError, parse_nextpnr_log, summarise_utilisation

    tim = out / "top.tim"
    if not tim.exists():
        return None
    text = tim.read_text(errors="replace")
    try:
        pnr = parse_nextpnr_log(text)
    except LogParseError:
        return None
    router = [ln for ln in text.splitlines() if re.match(r"Info:\s+\d+ \|", ln)]
    return {"utilisation": summarise_utilisation("ecp5", pnr, {"cells": {}}),
            "routing_started": "Routing.." in text or "Router1" in text,
            # nextpnr router1's last progress line: iterations | arcs | overused | time (s)
            "last_router_line": router[-1][5:].strip() if router else None}


def _fmax_pre_route(out: Path) -> float | None:
    """nextpnr's first (pre-route) Fmax estimate of the board clock in ``top.tim``."""
    import re

    tim = out / "top.tim"
    if not tim.exists():
        return None
    m = re.search(r"Max frequency for clock '[^']*cd_sync[^']*': ([\d.]+) MHz",
                  tim.read_text(errors="replace"))
    return float(m.group(1)) if m else None


def _build_row(label: str, T: int, L: int, P: int, root: Path, limit_s: float) -> dict:
    """One build in a child process (own session, so a timeout kills the whole tool chain)."""
    out = root / label
    out.mkdir(parents=True, exist_ok=True)
    params = {"tile": T, "lanes": L, "cand_tile": P}
    t0 = time.perf_counter()
    with open(out / "child.log", "w") as log:
        proc = subprocess.Popen([sys.executable, "-c", _CHILD, json.dumps(params), str(out), BOARD],
                                stdout=subprocess.PIPE, stderr=log, text=True,
                                start_new_session=True)
        try:
            stdout, _ = proc.communicate(timeout=limit_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            return {"status": "timeout", "wall_seconds": round(time.perf_counter() - t0, 1),
                    "error": f"did not finish in {limit_s / 60:.0f} min (killed)",
                    "packed": _partial(out), "fmax_pre_route_mhz": _fmax_pre_route(out)}
    line = next((ln for ln in stdout.splitlines() if ln.startswith("@@RESULT@@")), None)
    if line is None:
        return {"status": "crashed", "wall_seconds": round(time.perf_counter() - t0, 1),
                "error": f"build process exited {proc.returncode} without a result "
                         f"(see {out / 'child.log'})"}
    res = json.loads(line[len("@@RESULT@@"):])
    if res["status"] != "ok":
        res["packed"] = _partial(out)
    res["fmax_pre_route_mhz"] = _fmax_pre_route(out)
    tim = out / "top.tim"
    if res["status"] == "ok" and tim.exists():
        crit = critical_path(tim.read_text(errors="replace"))
        res["critical_path"] = {k: v for k, v in crit.items() if k not in ("cells", "nets", "lines")}
    return res


def _used(row: dict, key: str):
    """Post-route utilisation; for a build that did not finish, the packed figures."""
    util = row.get("report", {}).get("utilisation") or (row.get("packed") or {}).get("utilisation")
    u = (util or {}).get(key)
    return u["used"] if isinstance(u, dict) else None


def _fit_lut(rows: list[dict]) -> dict:
    """Least squares ``LUT = a + b*T`` over the finished rows, with each row's residual."""
    pts = [(r["T"], _used(r, "lut"), r["label"]) for r in rows if _used(r, "lut") is not None]
    if len({t for t, _, _ in pts}) < 2:
        return {"fitted": False, "why": "fewer than two distinct T among the finished rows"}
    n = len(pts)
    mt = sum(t for t, _, _ in pts) / n
    my = sum(y for _, y, _ in pts) / n
    b = sum((t - mt) * (y - my) for t, y, _ in pts) / sum((t - mt) ** 2 for t, _, _ in pts)
    a = my - b * mt
    resid = {lab: round(y - (a + b * t)) for t, y, lab in pts}
    worst = max(abs(v) / y for (t, y, lab), v in zip(pts, resid.values()))
    return {"fitted": True, "a": round(a, 1), "b": round(b, 1), "points": n,
            "residuals": resid, "worst_relative_residual": round(worst, 3)}


def _other_stages(out_dir: Path) -> dict:
    """The other stages' utilisation as ``timing.json`` (beside this report) recorded it."""
    path = Path(out_dir) / "timing.json"
    if not path.exists():
        path = Path(__file__).resolve().parent / "results" / "timing.json"
    if not path.exists():
        return {}
    stages = {s["block"]: s for s in json.loads(path.read_text())["stages"]}
    return {b: {"params": stages[b]["params"], "fmax_mhz": stages[b]["fmax_mhz"],
                "revision": stages[b].get("revision"),
                **{k: stages[b]["utilisation"][k]["used"] for k in DEVICE
                   if isinstance(stages[b]["utilisation"].get(k), dict)}}
            for b in OTHER_STAGES if b in stages}


def _chunk_buffer_bram(L: int) -> int:
    """Lower bound on DP16KD blocks of the chunk buffer (not in this block): its bits / 16 Kbit."""
    bits = CAPACITY * -(-BUFFER_DIM // L) * L * 8
    return -(-bits // 16384)


def _whole(row: dict, others: dict) -> dict | None:
    if _used(row, "lut") is None or not others:
        return None
    out = {}
    for k in DEVICE:
        stages = (_used(row, k) or 0) + sum(o.get(k, 0) for o in others.values())
        if k == "bram":
            stages += _chunk_buffer_bram(row["L"])
        total = stages * (1 + TOP_ALLOWANCE)
        out[k] = {"stages": stages, "with_top": round(total), "fraction": round(total / DEVICE[k], 3)}
    out["fits"] = all(out[k]["fraction"] <= 1.0 for k in DEVICE)
    return out


def run(out_dir: Path, quick: bool, rows=None, limit_s: float = LIMIT_S) -> dict:
    """Build the missing rows (cached in ``<out>/knn_scale_parts``) and write the report."""
    out_dir = Path(out_dir)
    parts = out_dir / "knn_scale_parts"
    parts.mkdir(parents=True, exist_ok=True)
    todo = tuple(rows) if rows is not None else (ROWS[:2] if quick else ROWS)
    root = Path("build") / "knnscale"
    for label, T, L, P in todo:
        part = parts / f"{label}.json"
        if part.exists():
            continue
        revision = _revision()          # before the build: the tree it elaborates
        print(f"[knnscale] {label}: T={T} L={L} P={P} ...", flush=True)
        res = _build_row(label, T, L, P, root, limit_s)
        res.update(label=label, T=T, L=L, P=P, revision=revision,
                   loadavg_1min_after=round(os.getloadavg()[0], 2))
        part.write_text(json.dumps(res, indent=2, sort_keys=True) + "\n")
        f = res.get("report", {}).get("fmax_mhz")
        print(f"[knnscale] {label}: {res['status']}"
              + (f", {f:.1f} MHz" if f else f" ({res.get('error', '')[:200]})")
              + f" ({res['wall_seconds']:.0f} s)", flush=True)
    order = [r[0] for r in ROWS]
    done = sorted((json.loads(p.read_text()) for p in parts.glob("*.json")),
                  key=lambda r: order.index(r["label"]) if r["label"] in order else 99)
    others = _other_stages(out_dir)
    for r in done:
        r["dsp_is_T_times_L"] = (_used(r, "dsp") == r["T"] * r["L"]) if _used(r, "dsp") is not None \
            else None
        r["whole_datapath_estimate"] = _whole(r, others)
    result = {"benchmark": "knn_scale", "board": BOARD, "block": "knn_datapath",
              "goal_mhz": GOAL_MHZ, "device": DEVICE, "limit_s": limit_s,
              "rows": done, "missing": [r[0] for r in ROWS if r[0] not in {d["label"] for d in done}],
              "lut_fit": _fit_lut(done), "other_stages": others, "top_allowance": TOP_ALLOWANCE,
              "chunk_buffer": {"buffer_dim": BUFFER_DIM, "capacity": CAPACITY,
                               "bram_lower_bound_by_lanes": {L: _chunk_buffer_bram(L)
                                                             for L in sorted({r[2] for r in ROWS})}},
              "host": {**_report.host(), "platform": platform.platform()}}
    _report.write(out_dir, "knn_scale", result, _markdown(result))
    return result


def _fmt(v) -> str:
    return "-" if v is None else str(v)


def _markdown(r: dict) -> str:
    d = r["device"]
    lines = [
        "# kNN stage vs T, L, P on ECP5-85F (speed 6, post-route)",
        "",
        "Block `knn_datapath` (distance engine + kNN selector + tile-base FIFO; the chunk buffer "
        "and pooling unit are **not** in it) built like `nms bench timing` builds it: registered "
        "board top, YoWASP Yosys + nextpnr, one run at the default seed (expect a few % of seed "
        "noise on Fmax). Every other parameter at its default: `max_dim` 1024, K 16, 8-bit "
        "elements, `index_width` 16. T = tile (resident queries), L = lanes, P = `cand_tile`. "
        f"Device: {d['lut']} LUT, {d['ff']} FF, {d['dsp']} DSP (MULT18), {d['bram']} DP16KD. "
        f"Goal {r['goal_mhz']:.0f} MHz. Builds one at a time, limit {r['limit_s'] / 60:.0f} min "
        "each; build s = the Yosys + nextpnr + pack wall time (the machine is shared: the load "
        "after each build is in the JSON). *pre-route est.* is nextpnr's first timing estimate "
        "(before placement is refined and routing): the only speed figure of a build that did not "
        "finish; compare it with the post-route Fmax of the rows that did.",
        "",
        "| row | T | L | P | T·L | LUT | FF | DSP | DSP = T·L | BRAM | Fmax (MHz) | pre-route est. "
        "(MHz) | critical path (post-route) | logic / routing (ns) | build s | status | revision |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---|---|---:|---|---|",
    ]
    for row in r["rows"]:
        rep = row.get("report", {})
        f = rep.get("fmax_mhz")
        status = row["status"] if row["status"] == "ok" else f"{row['status']}: {row.get('error', '')}"
        if row["status"] != "ok" and row.get("packed"):
            status += "; LUT / FF / DSP / BRAM are the packed figures"
        est = row.get("fmax_pre_route_mhz")
        c = row.get("critical_path") or {}
        path = (f"`{str(c.get('source')).removeprefix('exerciser.block.')}` → "
                f"`{str(c.get('sink')).removeprefix('exerciser.block.')}`") if c else "-"
        split = (f"{c['logic_ns']:.1f} / {c['routing_ns']:.1f}"
                 if c.get("logic_ns") is not None else "-")
        secs = rep.get("build_seconds")
        lines.append(
            f"| {row['label']} | {row['T']} | {row['L']} | {row['P']} | {row['T'] * row['L']} | "
            f"{_fmt(_used(row, 'lut'))} | {_fmt(_used(row, 'ff'))} | {_fmt(_used(row, 'dsp'))} | "
            f"{ {True: 'yes', False: 'no', None: '-'}[row['dsp_is_T_times_L']] } | "
            f"{_fmt(_used(row, 'bram'))} | {'-' if f is None else f'{f:.1f}'} | "
            f"{'-' if est is None else f'{est:.1f}'} | {path} | {split} | "
            f"{'-' if secs is None else f'{secs:.0f}'} | {status} | {row.get('revision') or '-'} |")
    if r["missing"]:
        lines += ["", f"Not built yet (run again to resume): {', '.join(r['missing'])}."]
    fit = r["lut_fit"]
    lines += ["", "## LUT vs T", ""]
    if fit["fitted"]:
        lines.append(
            f"Least squares over {fit['points']} rows: **LUT ≈ {fit['a']:.0f} + {fit['b']:.0f}·T** "
            f"(worst residual {100 * fit['worst_relative_residual']:.1f} % of the row; residuals "
            + ", ".join(f"{k} {v:+d}" for k, v in fit["residuals"].items())
            + "). A residual that grows with L at equal T says the L term is not negligible."
            + (" **Two distinct T only: the line goes through them exactly, nothing checks it.**"
               if len({row["T"] for row in r["rows"] if _used(row, "lut") is not None}) < 3
               else ""))
    else:
        lines.append(f"No fit: {fit['why']}.")
    o = r["other_stages"]
    if o:
        lines += [
            "", "## Whole datapath on the 85F (estimate)", "",
            "kNN row + the other stages as `timing.json` recorded them ("
            + "; ".join(f"{b}: {v.get('lut')} LUT / {v.get('dsp')} DSP / {v.get('bram')} BRAM at "
                        f"{json.dumps(v['params'], sort_keys=True)}" for b, v in o.items())
            + ") + a lower bound on the chunk buffer's DP16KD (C = "
            f"{r['chunk_buffer']['capacity']} vectors of ceil({r['chunk_buffer']['buffer_dim']}/L) "
            "words of 8L bits, / 16 Kbit; not built here), then "
            f"+{100 * r['top_allowance']:.0f} % for the top (CSR, AXI, fetcher, controller). The "
            "stage rows were built at the blocks' own defaults, which are not all the datapath's "
            "(the datapath uses `affinity_lanes` 4 and `pair_units` 2): read these as lower "
            "bounds.", "",
            "| row | T | L | P | LUT | DSP | BRAM | FF | fits | slowest stage: Fmax (MHz) |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---|---:|",
        ]
        for row in r["rows"]:
            w = row.get("whole_datapath_estimate")
            if not w:
                continue
            if row["status"] != "ok":
                lines.append(f"| {row['label']} | {row['T']} | {row['L']} | {row['P']} | "
                             + " | ".join(f"{w[k]['with_top']} ({100 * w[k]['fraction']:.0f} %)"
                                          for k in ("lut", "dsp", "bram", "ff"))
                             + f" | {'yes' if w['fits'] else '**no**'} (packed kNN figures) "
                               "| kNN not routed |")
                continue
            slow = min([("knn", row["report"]["fmax_mhz"])]
                       + [(b, v["fmax_mhz"]) for b, v in o.items()], key=lambda x: x[1])
            cells = " | ".join(f"{w[k]['with_top']} ({100 * w[k]['fraction']:.0f} %)"
                               for k in ("lut", "dsp", "bram", "ff"))
            lines.append(f"| {row['label']} | {row['T']} | {row['L']} | {row['P']} | {cells} | "
                         f"{'yes' if w['fits'] else '**no**'} | {slow[0]}: {slow[1]:.1f} |")
    h = r["host"]
    lines += ["", f"Host: {h['machine']}, {h['cpus']} CPUs, Python {h['python']}, "
                  f"load {h['loadavg_1min_after']} at the end of the run."]
    return "\n".join(lines) + "\n"
