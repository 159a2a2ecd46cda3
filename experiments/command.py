"""``advjax reproduce NAME [--scale paper|cpu] [--quick] [--list] [--out results/] [--seed N]
[--distributed [--coordinator-address H:P --num-processes N --process-id I]]``.

With ``--distributed`` every process runs the same command (README, Multi-host): the experiment's
computations span all processes' devices, the runs it trains checkpoint into the shared ``--out``
directory from every process, and only process 0 writes results.md, results.json, plots and
caches and prints them."""
from __future__ import annotations

import argparse
import sys


def configure_parser(parser: argparse.ArgumentParser) -> None:
    from advjax.train.command import add_distributed_flags

    parser.add_argument("name", nargs="?", help="experiment to run (see --list)")
    parser.add_argument("--scale", default="cpu",
                        help="cpu (default): sized for 2 CPU cores; paper: the paper's settings; some experiments "
                             "have more (sdi-k and sdi-overfitting: cifar-cpu), shown by --list")
    parser.add_argument("--quick", action="store_true", help="a shorter run (fewer epochs) for smoke tests and the README")
    parser.add_argument("--list", action="store_true", help="list every experiment with its expected run time")
    parser.add_argument("--out", default="results", help="results root; writes OUT/NAME/ (with --distributed: a "
                        "directory every process sees)")
    parser.add_argument("--seed", type=int, default=0, help="PRNG seed")
    add_distributed_flags(parser)


def run(args: argparse.Namespace) -> int:
    from experiments import runner

    if args.list or not args.name:
        print(runner.list_text())
        if not args.list and not args.name:
            print("\nusage: advjax reproduce NAME [--scale cpu|paper] [--quick] [--out results]", file=sys.stderr)
            return 2
        return 0
    from advjax.train.command import start_distributed

    try:
        start_distributed(args, "reproduce")
    except ValueError as e:
        print(f"advjax reproduce: error: {e}", file=sys.stderr)
        return 2
    from advjax.train.distributed import DistributedError, is_main

    try:
        out_dir, _, wall = runner.run_experiment(args.name, scale=args.scale, quick=args.quick, out=args.out,
                                                 seed=args.seed)
    except DistributedError as e:  # the processes disagree (process 0's message names the settings)
        print(f"advjax reproduce: error: {e}", file=sys.stderr)
        return 2
    if is_main():  # one report per run, not one per process
        print((out_dir / "results.md").read_text())
        print(f"wrote {out_dir}/results.md, results.json and plots in {wall:.1f} s")
    return 0
