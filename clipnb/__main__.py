"""Command line: ``python -m clipnb list`` and ``python -m clipnb run [STUDY ...]``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import runner
from .studies import DEFAULT_PROFILE, PROFILES, STUDIES


def _list() -> int:
    for study in STUDIES:
        nb = runner.read_notebook(study)
        defaults = runner.notebook_parameters(nb, study.notebook)
        print(f"{study.name}  —  {study.title}  (notebooks/{study.notebook})")
        for profile in PROFILES:
            params = {**defaults, **study.overrides(profile)}
            shown = ", ".join(f"{k}={v!r}" for k, v in params.items())
            print(f"    {profile:9s} {shown}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m clipnb", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="every study with its notebook, title and parameters per profile")
    run_p = sub.add_parser(
        "run", help="execute studies (all by default) into the book's build tree"
    )
    run_p.add_argument("studies", nargs="*", help="study names (default: all)")
    run_p.add_argument("--profile", default=DEFAULT_PROFILE, choices=PROFILES)
    run_p.add_argument(
        "--set", dest="assignments", action="append", default=[], metavar="KEY=VALUE"
    )
    run_p.add_argument(
        "--out", type=Path, default=None, help="output folder (default: book/executed)"
    )
    run_p.add_argument("--kernel", default=runner.KERNEL_NAME)
    run_p.add_argument("--force", action="store_true", help="re-run even if up to date")
    args = parser.parse_args(argv)

    if args.command == "list":
        return _list()
    try:
        overrides = dict(runner.parse_assignment(a) for a in args.assignments)
        outcomes = runner.run(
            args.studies or None, args.profile, overrides, args.out, args.kernel, args.force
        )
    except (ValueError, FileNotFoundError) as err:
        print(f"clipnb: error: {err}", file=sys.stderr)
        return 2
    failed = [o for o in outcomes if o.status == "failed"]
    if failed:
        print(
            "clipnb: failed studies: "
            + ", ".join(f"{o.study} ({o.message})" for o in failed)
            + ". Their executed notebooks show the error; the other studies' outputs are untouched.",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
