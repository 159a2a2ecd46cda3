"""The reproduction runner: discovers experiments and writes ``results/NAME/``.

Discovery: every module of the ``experiments`` package and of its subpackages, recursively (one
subpackage per paper family: ``experiments/lsa/``, ``experiments/sdi/``, ...; private ``_*``
modules and packages and the runner's own modules are skipped), is imported and, if it defines
``EXPERIMENT`` (an :class:`experiments.base.Experiment`), registered under ``EXPERIMENT.name``.
Dropping a new file ``experiments/lsa/foo.py`` with an ``EXPERIMENT`` is all it takes to add an
experiment.

Output of :func:`run_experiment`: ``out/NAME/results.md`` (header + the experiment's tables, our
numbers beside the paper's), ``out/NAME/results.json`` (config, seed, scale, package versions,
wall time, metrics) and the experiment's plots.
"""
from __future__ import annotations

import importlib
import importlib.metadata
import json
import pathlib
import pkgutil
import platform
import time
import traceback
import warnings

from experiments.base import Experiment, ExperimentResult

_SKIP = {"base", "runner", "command", "claims"}


def discover() -> dict[str, Experiment]:
    """name -> Experiment for every experiment module in the package (sorted by name).

    A module that fails to import is skipped with a warning, so one broken file cannot hide the
    others."""
    import experiments

    found: dict[str, Experiment] = {}
    _discover_in(list(experiments.__path__), "experiments", found)
    return dict(sorted(found.items()))


def _discover_in(paths, prefix: str, found: dict[str, Experiment]) -> None:
    for info in pkgutil.iter_modules(paths):
        if info.name.startswith("_") or (prefix == "experiments" and info.name in _SKIP):
            continue
        modname = f"{prefix}.{info.name}"
        try:
            mod = importlib.import_module(modname)
        except Exception as e:  # noqa: BLE001 -- report and go on
            warnings.warn(f"{modname} failed to import and is skipped: {type(e).__name__}: {e}", stacklevel=3)
            continue
        if info.ispkg:
            _discover_in(list(mod.__path__), modname, found)
            continue
        exp = getattr(mod, "EXPERIMENT", None)
        if exp is None:
            continue
        if not isinstance(exp, Experiment):
            warnings.warn(f"{modname}.EXPERIMENT is not an Experiment; skipped", stacklevel=3)
            continue
        if exp.name in found:
            raise ValueError(f"two experiments are named {exp.name!r} ({modname} and another)")
        found[exp.name] = exp


def get_experiment(name: str) -> Experiment:
    exps = discover()
    if name not in exps:
        raise ValueError(f"unknown experiment {name!r}; known: {', '.join(exps) or '(none)'} "
                         f"(see `advjax reproduce --list`)")
    return exps[name]


def package_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for pkg in ("advjax", "jax", "jaxlib", "flax", "optax", "numpy", "scikit-learn", "matplotlib"):
        try:
            out[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            out[pkg] = "not installed"
    try:
        import jax

        out["devices"] = f"{jax.device_count()} x {jax.devices()[0].platform}"
    except Exception:  # noqa: BLE001
        pass
    return out


def _jsonable(o):
    try:
        json.dumps(o)
        return o
    except TypeError:
        if isinstance(o, dict):
            return {str(k): _jsonable(v) for k, v in o.items()}
        if isinstance(o, (list, tuple)):
            return [_jsonable(v) for v in o]
        if hasattr(o, "tolist"):
            return o.tolist()
        return repr(o)


def run_experiment(name: str, scale: str = "cpu", quick: bool = False, out: str | pathlib.Path = "results",
                   seed: int = 0) -> tuple[pathlib.Path, ExperimentResult, float]:
    """Run one experiment and write its results directory. Returns (directory, result, seconds).

    Compiled programs are kept in JAX's persistent cache (``advjax.cli.enable_compilation_cache``;
    ``ADVJAX_COMPILATION_CACHE=0`` turns it off), so a rerun skips most compilation."""
    from advjax.cli import enable_compilation_cache

    enable_compilation_cache()
    exp = get_experiment(name)
    if scale not in exp.scales:
        raise ValueError(f"experiment {name!r} supports scales {exp.scales}, not {scale!r}")
    out_dir = pathlib.Path(out) / name
    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    result = exp.run(scale=scale, quick=quick, out_dir=out_dir, seed=seed)
    wall = time.perf_counter() - t0
    if not isinstance(result, ExperimentResult):
        raise TypeError(f"experiment {name!r} returned {type(result).__name__}, not ExperimentResult")
    versions = package_versions()
    header = (f"# {exp.name}: {exp.description}\n\n"
              f"Paper: {exp.paper}\n\n"
              f"Scale: `{scale}`{' (quick)' if quick else ''} · seed {seed} · wall time {wall:.1f} s · "
              f"jax {versions.get('jax')} on {versions.get('devices', '?')}\n\n")
    plots = "".join(f"\n![{p}]({p})\n" for p in result.plots)
    (out_dir / "results.md").write_text(header + result.markdown.rstrip() + "\n" + plots)
    record = {"experiment": exp.name, "paper": exp.paper, "scale": scale, "quick": quick, "seed": seed,
              "wall_time_s": round(wall, 3), "versions": versions, "config": _jsonable(dict(result.config)),
              "metrics": _jsonable(dict(result.metrics)), "plots": list(result.plots),
              "paper_values": _jsonable(dict(exp.paper_values)),
              "finished_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    (out_dir / "results.json").write_text(json.dumps(record, indent=2))
    return out_dir, result, wall


def list_text() -> str:
    """One entry per experiment: description, scales, whether the paper's numbers are attached
    (and which tables), and the expected run time per scale (CPU first)."""
    exps = discover()
    if not exps:
        return "no experiments found"
    w = max(len(n) for n in exps)
    lines = []
    for name, e in exps.items():
        order = sorted(e.expected_runtime, key=lambda k: (k != "cpu", k != "quick", k))
        rt = "; ".join(f"{k}: {e.expected_runtime[k]}" for k in order)
        pv = (f"paper values: attached ({', '.join(str(k) for k in e.paper_values)})" if e.paper_values
              else "paper values: none")
        lines.append(f"{name:<{w}}  {e.description}\n{'':<{w}}  scales: {', '.join(e.scales)} · {pv}\n"
                     f"{'':<{w}}  expected: {rt}")
    return "\n".join(lines)


def format_exception(e: BaseException) -> str:
    return "".join(traceback.format_exception_only(type(e), e)).strip()
