"""Command line: ``python -m clipnb list``, ``run [STUDY ...]`` and ``bench pretrain``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from clipnb import runner
from clipnb.core import executor
from clipnb.core.profiles import DEFAULT_PROFILE, PROFILES
from clipnb.registry import STUDIES


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


def _bench(profile: str, steps: int) -> int:
    from clipnb.methods.pretrain import PEAK_MATRIX_SIZE, PRETRAIN_CONFIGS, benchmark

    config = PRETRAIN_CONFIGS[profile]
    result = benchmark(config, steps=steps)
    shares = ", ".join(
        f"{k.removeprefix('share_').replace('_', ' + ')} {100 * v:.0f} %"
        for k, v in result.items()
        if k.startswith("share_")
    )
    print(
        f"pretraining {config.model} ({profile}), batch {config.batch_size}, "
        f"{result['threads']} threads, {steps} steps\n"
        f"  throughput        {result['images_per_second']:.0f} images/s "
        f"({result['seconds_per_step']:.3f} s/step, {result['cpu_seconds_per_step']:.3f} CPU-s/step)\n"
        f"  step time         {shares}\n"
        f"  training FLOPs    {result['flops_per_image'] / 1e6:.1f} MFLOP per image (forward + backward)\n"
        f"  achieved          {result['achieved_flops'] / 1e9:.1f} GFLOP/s\n"
        f"  fp32 matmul peak  {result['peak_flops'] / 1e9:.1f} GFLOP/s (torch.mm {PEAK_MATRIX_SIZE}², all threads)\n"
        f"  fraction of peak  {100 * result['peak_fraction']:.1f} %"
    )
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
    run_p.add_argument(
        "--executor",
        choices=executor.EXECUTORS,
        default=None,
        help=f"where sweeps' trials run (default: ${executor.ENV_EXECUTOR} or local)",
    )
    run_p.add_argument(
        "--ray-address",
        default=None,
        help=f"Ray cluster to join (default: ${executor.ENV_RAY_ADDRESS}, else a local Ray "
        "on 127.0.0.1)",
    )
    run_p.add_argument(
        "--concurrent-studies",
        action="store_true",
        help="with Ray: run the studies' notebooks at the same time, one per worker",
    )
    bench_p = sub.add_parser("bench", help="benchmarks: `bench pretrain` (throughput, FLOPs, peak)")
    bench_p.add_argument("what", choices=["pretrain"])
    bench_p.add_argument("--profile", default=DEFAULT_PROFILE, choices=("embedded", "smoke"))
    bench_p.add_argument("--steps", type=int, default=30, help="training steps to time")
    args = parser.parse_args(argv)

    if args.command == "list":
        return _list()
    if args.command == "bench":
        return _bench(args.profile, args.steps)
    try:
        if args.executor or args.ray_address:
            current = executor.choice()
            executor.use(args.executor or current.name, args.ray_address or current.address)
        overrides = dict(runner.parse_assignment(a) for a in args.assignments)
        outcomes = runner.run(
            args.studies or None,
            args.profile,
            overrides,
            args.out,
            args.kernel,
            args.force,
            concurrent=args.concurrent_studies,
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
