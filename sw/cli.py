"""The ``nms`` command line: one entry point, one sub-command per job.

Each sub-command lives in the module of the part it drives and exposes ``add_arguments(parser)``
and ``main(args) -> int``; this file only wires them together and turns user errors (bad
parameters, malformed data, missing tools) into a one-line message and exit status 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from nms.gen.toolchain import ToolchainError

#: sub-command -> (module implementing it, one-line help)
COMMANDS = {
    "doctor": ("nms.gen.doctor", "check the pip-installed toolchain and say how to fix what is missing"),
    "generate": ("nms.gen.generate", "write Verilog + JSON metadata for an accelerator block"),
    "build": ("nms.fpga.build", "build an FPGA bitstream (YoWASP) and a utilisation/Fmax report"),
    "eval": ("nms.sw.harness", "coreset-quality harness: DE-SNE vs DNN-free baselines"),
    "run": ("nms.sw.run", "main job: near-memory DE-SNE selection, then SKS low-rank training"),
    "adapt": ("nms.sw.adapt", "online adaptation of a pre-trained CNN under shift/drift: SKS vs SGD"),
    "bench": ("nms.bench", "benchmarks that write JSON + Markdown reports"),
    "serve": ("nms.sw.serve", "serve the simulated board (Verilated job top) on a TCP port for the fpga backend"),
}


def _parser(modules) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nms", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, (modname, help_) in COMMANDS.items():
        mod = modules.get(name)
        p = sub.add_parser(name, help=help_, description=help_)
        if mod is not None:
            mod.add_arguments(p)
            p.set_defaults(_main=mod.main)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    # Import only the chosen sub-command's module (the others may pull in heavy packages).
    chosen = next((a for a in argv if not a.startswith("-")), None)
    modules = {}
    if chosen in COMMANDS:
        try:
            modules[chosen] = importlib.import_module(COMMANDS[chosen][0])
        except ModuleNotFoundError as exc:
            if exc.name != COMMANDS[chosen][0]:
                raise
            print(f"nms {chosen}: not available in this version", file=sys.stderr)
            return 2
    args = _parser(modules).parse_args(argv)
    try:
        return int(args._main(args) or 0)
    except (ValueError, TypeError, ToolchainError, FileNotFoundError) as exc:
        print(f"nms {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
