"""``advjax bench``: run the speed benchmarks in the repository's ``benchmarks/`` folder.

Benchmarks are scripts (one per question, each printing ratios against a baseline measured in the
same run); this command finds and runs them. They need a source checkout (benchmarks are not
installed with the package) and, for the PyTorch peers, the ``[bench]`` extra:
``pip install torch==2.13.0 && pip install torchattacks --no-deps``.
"""
from __future__ import annotations

import argparse
import pathlib
import subprocess
import sys


def _bench_dirs() -> list[pathlib.Path]:
    here = pathlib.Path(__file__).resolve().parents[1] / "benchmarks"
    return [pathlib.Path.cwd() / "benchmarks", here]


def find_benchmarks() -> dict[str, pathlib.Path]:
    found: dict[str, pathlib.Path] = {}
    for d in _bench_dirs():
        if d.is_dir():
            for f in sorted(d.glob("bench_*.py")):
                found.setdefault(f.stem.removeprefix("bench_"), f)
    return found


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", nargs="?", help="benchmark to run (omit, or --list, to list them)")
    parser.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    parser.add_argument("args", nargs=argparse.REMAINDER,
                        help="flags passed on to the benchmark script (see `advjax bench NAME --help`)")


def run(args: argparse.Namespace) -> int:
    benches = find_benchmarks()
    if not benches:
        searched = ", ".join(str(d) for d in _bench_dirs())
        raise FileNotFoundError(f"no benchmarks/bench_*.py found (looked in {searched}); "
                                "run from a source checkout of advjax")
    if args.list or not args.name:
        for name, path in benches.items():
            doc = path.read_text().split('"""')[1].strip().splitlines()[0] if '"""' in path.read_text() else ""
            print(f"{name:24s} {doc}")
        return 0
    if args.name not in benches:
        raise ValueError(f"unknown benchmark {args.name!r}; known: {', '.join(benches)}")
    return subprocess.call([sys.executable, str(benches[args.name]), *args.args])
