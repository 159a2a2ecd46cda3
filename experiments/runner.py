"""The reproduction runner: discovers experiments and writes ``results/NAME/``.

Discovery: every module of the ``experiments`` package (except private ``_*`` ones and the
runner's own modules) is imported and, if it defines ``EXPERIMENT`` (an
:class:`experiments.base.Experiment`), registered under ``EXPERIMENT.name``. Dropping a new file
``experiments/foo.py`` with an ``EXPERIMENT`` is all it takes to add an experiment.

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

_SKIP = {"base", "runner", "command"}


def discover() -> dict[str, Experiment]:
    """name -> Experiment for every experiment module in the package (sorted by name).

    A module that fails to import is skipped with a warning, so one broken file cannot hide the
    others."""
    import experiments

    found: dict[str, Experiment] = {}
    for info in pkgutil.iter_modules(experiments.__path__):
        if info.name.startswith("_") or info.name in _SKIP or info.ispkg:
            continue
        try:
            mod = importlib.import_module(f"experiments.{info.name}")
        except Exception as e:  # noqa: BLE001 -- report and go on
            warnings.warn(f"experiments.{info.name} failed to import and is skipped: "
                          f"{type(e).__name__}: {e}", stacklevel=2)
            continue
        exp = getattr(mod, "EXPERIMENT", None)
        if exp is None:
            continue
        if not isinstance(exp, Experiment):
            warnings.warn(f"experiments.{info.name}.EXPERIMENT is not an Experiment; skipped", stacklevel=2)
            continue
        if exp.name in found:
            raise ValueError(f"two experiments are named {exp.name!r} (experiments.{info.name} and another)")
        found[exp.name] = exp
    return dict(sorted(found.items()))


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
    """Run one experiment and write its results directory. Returns (directory, result, seconds)."""
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
    exps = discover()
    if not exps:
        return "no experiments found"
    w = max(len(n) for n in exps)
    lines = []
    for name, e in exps.items():
        rt = "; ".join(f"{k}: {v}" for k, v in e.expected_runtime.items())
        lines.append(f"{name:<{w}}  {e.description}\n{'':<{w}}  scales: {', '.join(e.scales)} · expected: {rt}")
    return "\n".join(lines)


def format_exception(e: BaseException) -> str:
    return "".join(traceback.format_exception_only(type(e), e)).strip()
