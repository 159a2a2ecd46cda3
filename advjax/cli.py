"""The ``advjax`` command line: ``advjax train | eval | lsa | reproduce | bench | demo``.

Each subcommand lives in its own module, which exposes ``configure_parser(parser)`` and
``run(args) -> int``. Before a command runs, JAX's persistent compilation cache is turned on in
``$XDG_CACHE_HOME/advjax/jax`` (:func:`enable_compilation_cache`; ``--no-compile-cache`` or
``ADVJAX_COMPILATION_CACHE=0`` turns it off). Only the module of the chosen subcommand is imported, so ``advjax --help``
is instant and a broken or missing subcommand cannot take the others down.
"""
from __future__ import annotations

import argparse
import importlib
import os
import pathlib
import sys

# name -> (module, one-line help). Order is the order shown by --help.
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("advjax.demo", "train Model A on the 2-D Moon data for a few epochs and print a robustness table"),
    "train": ("advjax.train.command", "train any model x dataset x method; writes a run directory"),
    "eval": ("advjax.eval.command", "robust accuracy of a checkpoint over attacks x eps (table, JSON, R&G score)"),
    "lafeat-heads": ("advjax.attacks.lafeat_heads",
                     "train LAFEAT's intermediate-layer heads for a checkpoint (for `advjax eval --attacks lafeat`)"),
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
    when the user has not set the flag, jax has not initialised a backend yet, and the installed
    jaxlib knows the flag (XLA aborts on unknown flags; :func:`advjax.xla_flags.known`).
    """
    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_cpu_experimental_ynn_fusion_type" not in flags and "jax" not in sys.modules:
        from advjax import xla_flags

        xla_flags.add("--xla_cpu_experimental_ynn_fusion_type=")


_CACHE_OFF = ("0", "false", "off", "no")
_PRECISION_DEFAULTS = {"train": "default", "eval": "highest"}  # advjax.precision.TRAIN/EVAL_DEFAULT
_UNCACHED = {"bench"}  # runs its scripts in a subprocess, and measures compile times: no cache
#: Compilations faster than this are not written to the persistent cache (JAX's default is 1 s, which
#: leaves out most of an evaluation's ~0.2 s attack programs; reading an entry back takes milliseconds).
CACHE_MIN_COMPILE_SECS = 0.1


def compilation_cache_dir() -> pathlib.Path:
    """Where the CLI keeps compiled XLA programs: ``$XDG_CACHE_HOME/advjax/jax`` (default
    ``~/.cache/advjax/jax``)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return pathlib.Path(base) / "advjax" / "jax"


def enable_compilation_cache(cache_dir=None, *, min_compile_time_secs: float = CACHE_MIN_COMPILE_SECS):
    """Turn on JAX's persistent compilation cache, so a repeated command loads its compiled programs
    from disk instead of compiling them again. Returns the cache directory, or None when it is off.

    ``ADVJAX_COMPILATION_CACHE=0`` (or false/off/no) turns it off; any other value that is not
    1/true/on/yes is taken as the directory. A cache directory the user gave JAX itself
    (``JAX_COMPILATION_CACHE_DIR`` / ``jax_compilation_cache_dir``) is kept as it is. Must run
    before the programs it should cover are compiled (the CLI calls it before the command runs).
    """
    env = os.environ.get("ADVJAX_COMPILATION_CACHE", "").strip()
    if env.lower() in _CACHE_OFF:
        return None
    import jax

    current = jax.config.jax_compilation_cache_dir
    if current:
        return current
    if cache_dir is None:
        cache_dir = env if env and env.lower() not in ("1", "true", "on", "yes") else compilation_cache_dir()
    cache_dir = os.path.abspath(os.path.expanduser(os.fspath(cache_dir)))
    try:
        os.makedirs(cache_dir, exist_ok=True)
    except OSError as e:  # a read-only home: run without the cache rather than fail
        print(f"advjax: compilation cache off ({cache_dir} not writable: {e})", file=sys.stderr)
        return None
    jax.config.update("jax_compilation_cache_dir", cache_dir)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", float(min_compile_time_secs))
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return cache_dir


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
    if name in _PRECISION_DEFAULTS:  # advjax.precision: TF32 / bf16 on accelerators unless asked
        parser.add_argument("--precision", choices=("default", "high", "highest"), default=None,
                            help="float32 matmul/conv precision on GPU/TPU (no effect on CPU): 'default' is "
                                 f"TF32 / one bf16 pass there, 'highest' full float32 (default: "
                                 f"{_PRECISION_DEFAULTS[name]})")
    if name == "train":
        parser.add_argument("--deterministic", action="store_true",
                            help="XLA_FLAGS=--xla_gpu_deterministic_ops=true: bit-exact resume on GPU (slower)")
    if name in _UNCACHED:
        return parser, module
    parser.add_argument("--no-compile-cache", action="store_true",
                        help="do not keep compiled programs on disk (default: cached in "
                             "$XDG_CACHE_HOME/advjax/jax; ADVJAX_COMPILATION_CACHE=0 also turns it off)")
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
    if name not in _UNCACHED and not getattr(args, "no_compile_cache", False):
        enable_compilation_cache()
    from advjax import precision

    if getattr(args, "deterministic", False) and not precision.enable_deterministic():
        print("advjax: this jaxlib does not know --xla_gpu_deterministic_ops; running without it", file=sys.stderr)
    chosen = getattr(args, "precision", None)  # a flag wins; then JAX_DEFAULT_MATMUL_PRECISION; then eval's
    if chosen is None and precision.current() is None and name == "eval":
        chosen = precision.EVAL_DEFAULT
    try:
        with precision.use(chosen):
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
