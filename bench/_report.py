"""What every simulation benchmark records beside its figures, and how it writes them."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path


def host(load_key: str = "loadavg_1min_after") -> dict:
    """The machine the figures were taken on, with the 1-minute load average at the call.

    The load is recorded because the project's machine is shared: wall times are only comparable
    between runs at similar load.
    """
    return {"machine": platform.machine(), "cpus": os.cpu_count(),
            "python": platform.python_version(), load_key: round(os.getloadavg()[0], 2)}


def write(out_dir: Path, name: str, result: dict, markdown: str) -> None:
    """``<out_dir>/<name>.json`` (sorted keys) and ``<out_dir>/<name>.md``."""
    out_dir = Path(out_dir)
    (out_dir / f"{name}.json").write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    (out_dir / f"{name}.md").write_text(markdown)
