"""``nms bench``: run benchmarks that write JSON + Markdown reports.

Benchmarks measure (speed, utilisation, memory, quality); tests never assert wall-clock limits.
Every benchmark is a module of this package (``nms.bench.<name>``) exposing
``run(out_dir: pathlib.Path, quick: bool) -> dict``; it writes ``<out_dir>/<name>.json`` and
``<out_dir>/<name>.md`` and returns the JSON-able result. This module is only the registry. The
package is the top layer: it may import every other one, and nothing imports it.
"""

from __future__ import annotations

import importlib
import time
from pathlib import Path

#: benchmark name -> module with ``run(out_dir, quick)``
BENCHMARKS = {
    "distance": "nms.bench.distance",
    "fpga": "nms.bench.fpga",
    "desne": "nms.bench.desne",
    "datapath": "nms.bench.datapath",
    "sks": "nms.bench.sks",
    "coreset": "nms.bench.coreset",
    "adapt": "nms.bench.adapt",
    "timing": "nms.bench.timing",
    "sim": "nms.bench.sim",
    "embedding": "nms.bench.embedding",
    "grid": "nms.bench.grid",
    "cover": "nms.bench.cover",
    "link": "nms.bench.link",
    "boardtop": "nms.bench.boardtop",
    "energy": "nms.bench.energy",
    "dataflow": "nms.bench.dataflow",
    "area": "nms.bench.area",
    "elaborate": "nms.bench.elaborate",
    "knnscale": "nms.bench.knnscale",
    "mainjob": "nms.bench.mainjob",
}


def add_arguments(parser) -> None:
    parser.add_argument("names", nargs="*", default=["all"],
                        help=f"benchmarks to run: {', '.join(BENCHMARKS)} or all (default)")
    parser.add_argument("--out", type=Path, default=Path("reports/bench"),
                        help="output folder for the JSON + Markdown reports (default: reports/bench)")
    parser.add_argument("--quick", action="store_true",
                        help="smaller problem sizes (smoke run; figures are not the headline ones)")


def main(args) -> int:
    names = list(BENCHMARKS) if "all" in args.names else args.names
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        raise ValueError(f"unknown benchmark(s) {unknown}; choose from {sorted(BENCHMARKS)} or 'all'")
    args.out.mkdir(parents=True, exist_ok=True)
    for name in names:
        try:
            mod = importlib.import_module(BENCHMARKS[name])
        except ModuleNotFoundError as exc:
            if exc.name != BENCHMARKS[name]:
                raise
            print(f"[bench] {name}: not available in this version, skipped")
            continue
        t0 = time.perf_counter()
        mod.run(args.out, quick=args.quick)
        print(f"[bench] {name}: done in {time.perf_counter() - t0:.1f} s -> {args.out / name}.md")
    return 0
