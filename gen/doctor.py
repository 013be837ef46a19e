"""``nms doctor``: report which toolchain parts were found and how to fix the missing ones."""

from __future__ import annotations

from nms.gen.toolchain import doctor


def add_arguments(parser) -> None:
    parser.add_argument("--quiet", action="store_true", help="print only problems")


def main(args) -> int:
    checks = doctor()
    bad = [c for c in checks if not c.ok]
    for c in checks:
        if c.ok and args.quiet:
            continue
        mark = "ok  " if c.ok else "MISSING"
        print(f"[{mark}] {c.name:24s} {c.detail}")
        if not c.ok and c.fix:
            print(f"         fix: {c.fix}")
    print(f"{len(checks) - len(bad)}/{len(checks)} checks passed")
    return 1 if bad else 0
