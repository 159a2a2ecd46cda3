"""The ``advjax`` command line: ``advjax train | eval | lsa | reproduce | bench | demo``.

Each subcommand lives in its own module, which exposes ``configure_parser(parser)`` and
``run(args) -> int``. Only the module of the chosen subcommand is imported, so ``advjax --help``
is instant and a broken or missing subcommand cannot take the others down.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys

# name -> (module, one-line help). Order is the order shown by --help.
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("advjax.demo", "train Model A on the 2-D Moon data for a few epochs and print a robustness table"),
    "train": ("advjax.train.command", "train any model x dataset x method; writes a run directory"),
    "eval": ("advjax.eval.command", "robust accuracy of a checkpoint over attacks x eps (table, JSON, R&G score)"),
    "lsa": ("advjax.analysis.command", "Layer Sustainability Analysis of a checkpoint: CM per layer and the MVL list"),
    "reproduce": ("experiments.command", "run a paper table/figure reproduction (see `advjax reproduce --list`)"),
    "bench": ("advjax.bench", "speed benchmarks against the PyTorch peers (needs the [bench] extra)"),
}

EPILOG = """\
Pixels are in [0, 1] everywhere; eps values are in pixel units (e.g. 8/255 = 0.0314), except for
the 2-D Moon features, whose eps (0.1-0.5) are in feature units as in the LSA paper.
Run `advjax COMMAND --help` for the flags of one command.
"""


def _cpu_defaults() -> None:
    """XLA:CPU settings measured to help on these machines (DESIGN.md, 'Measured on these machines').

    YNNPACK fusion off: +16% on a standard step, and no throughput drop at batch 512. Only applied
    when the user has not set the flag and jax has not initialised a backend yet.
    """
    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_cpu_experimental_ynn_fusion_type" not in flags and "jax" not in sys.modules:
        os.environ["XLA_FLAGS"] = (flags + " --xla_cpu_experimental_ynn_fusion_type=").strip()


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows a flag's default only when it says something (not None, False or an empty list)."""

    def _get_help_string(self, action):
        if action.default in (None, False, [], argparse.SUPPRESS) or "%(default)" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


def _top_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="advjax",
        description="advjax: adversarial robustness in JAX/Flax (attacks, adversarial training, paper reproductions).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    from advjax import __version__

    p.add_argument("--version", action="version", version=f"advjax {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, help_) in COMMANDS.items():
        sub.add_parser(name, help=help_, add_help=False)
    return p


def _command_parser(name: str) -> tuple[argparse.ArgumentParser, object | None]:
    module_name, help_ = COMMANDS[name]
    parser = argparse.ArgumentParser(prog=f"advjax {name}", description=help_,
                                     formatter_class=_HelpFormatter)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name and (e.name == module_name or module_name.startswith(e.name + ".")):
            return parser, None
        raise
    if not (hasattr(module, "configure_parser") and hasattr(module, "run")):
        return parser, None
    module.configure_parser(parser)
    return parser, module


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0].startswith("-") or argv[0] not in COMMANDS:
        parser = _top_parser()
        if argv and not argv[0].startswith("-"):
            parser.error(f"unknown command {argv[0]!r}; known commands: {', '.join(COMMANDS)}")
        args = parser.parse_args(argv)
        parser.print_help()
        return 0
    _cpu_defaults()
    name, rest = argv[0], argv[1:]
    parser, module = _command_parser(name)
    if module is None:
        parser.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
        parser.parse_args(rest)
        print(f"advjax {name}: not yet available in this version.", file=sys.stderr)
        return 2
    args = parser.parse_args(rest)
    try:
        return int(module.run(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError) as e:
        # Errors the library raises for bad input already say what to do: show them plainly,
        # not as a traceback. ADVJAX_TRACEBACK=1 shows the full trace.
        if os.environ.get("ADVJAX_TRACEBACK"):
            raise
        print(f"advjax {name}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
