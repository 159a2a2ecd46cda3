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

Several processes (``advjax reproduce --distributed``, after ``advjax.train.distributed.initialize``):
every process calls :func:`run_experiment` with the same arguments (checked first: process 0's
error names the settings that differ) and runs the same experiment, so every computation spans all
processes' devices and the runs it trains (``advjax.train.fit``) checkpoint from every process into
the shared output directory. Only process 0 writes files meant to exist once: results.md and
results.json here, and, during the experiment, every file the experiment itself writes under
``out`` through ``pathlib.Path.write_text`` / ``write_bytes`` / ``replace`` / ``rename`` or
matplotlib's ``savefig`` (plots, evaluation caches, partial results): on the other processes
those calls are skipped (:func:`main_writes_only`), and on process 0 ``write_text`` /
``write_bytes`` there are atomic (a temporary file renamed into place), so another process reading
a cache never sees half a file. Not covered: files an experiment writes with the builtin ``open``
(the training loop's own files already are process-0-only) or with other libraries.
"""
from __future__ import annotations

import contextlib
import importlib
import importlib.metadata
import json
import os
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
    ``ADVJAX_COMPILATION_CACHE=0`` turns it off), so a rerun skips most compilation. With several
    processes every one of them calls this with the same arguments (module docstring); a difference
    is a ``DistributedError`` on every process before anything runs."""
    from advjax.cli import enable_compilation_cache
    from advjax.train import distributed as dist

    enable_compilation_cache()
    exp = get_experiment(name)
    if scale not in exp.scales:
        raise ValueError(f"experiment {name!r} supports scales {exp.scales}, not {scale!r}")
    out_dir = pathlib.Path(out) / name
    dist.check_same_config({"experiment": name, "scale": scale, "quick": bool(quick), "seed": seed,
                            "out": os.path.abspath(out)}, "reproduction configuration")  # (several processes only)
    main = dist.is_main()
    out_dir.mkdir(parents=True, exist_ok=True)
    from experiments.base import CACHE_STATS, reset_cache_stats

    reset_cache_stats()
    t0 = time.perf_counter()
    with main_writes_only(out, main=main):
        result = exp.run(scale=scale, quick=quick, out_dir=out_dir, seed=seed)
    wall = time.perf_counter() - t0
    if not isinstance(result, ExperimentResult):
        raise TypeError(f"experiment {name!r} returned {type(result).__name__}, not ExperimentResult")
    versions = package_versions()
    if main:
        _write_results(exp, out_dir, result, scale, quick, seed, wall, versions, dist.process_count(),
                       dict(CACHE_STATS))
    dist.barrier(f"advjax-reproduce-{name}-written")  # every process returns once the results exist
    return out_dir, result, wall


def _reuse_note(cache: dict | None) -> str:
    """' (this invocation; 7 results reused from cache.json, computed earlier in 2.3 h)' or ''."""
    if not cache or not cache.get("reused"):
        return ""
    n, s, untimed = cache["reused"], cache["reused_compute_s"], cache["reused_untimed"]
    took = f"{s / 3600:.1f} h" if s >= 3600 else f"{s / 60:.1f} min" if s >= 60 else f"{s:.1f} s"
    when = (f"computed earlier in {took}" + (f" (+ {untimed} untimed)" if untimed else "")) if untimed < n \
        else "computed earlier, untimed"
    return f" (this invocation; {n} result{'s' if n != 1 else ''} reused from cache.json, {when})"


def _write_results(exp, out_dir, result, scale, quick, seed, wall, versions, processes: int,
                   cache: dict | None = None) -> None:
    where = versions.get("devices", "?") + (f" in {processes} processes" if processes > 1 else "")
    header = (f"# {exp.name}: {exp.description}\n\n"
              f"Paper: {exp.paper}\n\n"
              f"Scale: `{scale}`{' (quick)' if quick else ''} · seed {seed} · wall time {wall:.1f} s{_reuse_note(cache)} · "
              f"jax {versions.get('jax')} on {where}\n\n")
    plots = "".join(f"\n![{p}]({p})\n" for p in result.plots)
    (out_dir / "results.md").write_text(header + result.markdown.rstrip() + "\n" + plots)
    record = {"experiment": exp.name, "paper": exp.paper, "scale": scale, "quick": quick, "seed": seed,
              "wall_time_s": round(wall, 3), "cache": _jsonable(dict(cache or {})), "versions": versions, "processes": processes,
              "config": _jsonable(dict(result.config)),
              "metrics": _jsonable(dict(result.metrics)), "plots": list(result.plots),
              "paper_values": _jsonable(dict(exp.paper_values)),
              "finished_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    (out_dir / "results.json").write_text(json.dumps(record, indent=2))


def _inside(path, root: str) -> bool:
    try:
        p = os.path.realpath(os.fspath(path))
    except TypeError:  # a file object (e.g. savefig into a buffer): not a file under root
        return False
    return p == root or p.startswith(root.rstrip(os.sep) + os.sep)


@contextlib.contextmanager
def main_writes_only(root, *, main: bool, processes: int | None = None):
    """While active, and only when several processes run (``processes``, default
    ``jax.process_count()``): on the non-main processes ``pathlib.Path.write_text``,
    ``write_bytes``, ``replace``, ``rename`` and matplotlib's ``Figure.savefig`` of a path under
    ``root`` do nothing (process 0 writes the one copy); on the main process ``write_text`` /
    ``write_bytes`` under ``root`` write a temporary file and rename it into place (readers on other
    processes see the old or the new file, never half of one). Paths outside ``root`` are untouched.
    Process-wide (the class methods are patched), restored on exit."""
    if processes is None:
        import jax

        processes = jax.process_count()
    if processes <= 1:
        yield
        return
    root_s = os.path.realpath(os.fspath(root))
    P = pathlib.Path
    orig = {n: getattr(P, n) for n in ("write_text", "write_bytes", "replace", "rename")}
    patched: list[tuple[object, str, object]] = []

    def patch(owner, name, fn):
        patched.append((owner, name, getattr(owner, name)))
        setattr(owner, name, fn)

    if main:
        def atomic(kind):
            def write(self, data, *a, **kw):
                if not _inside(self, root_s):
                    return orig[kind](self, data, *a, **kw)
                tmp = self.with_name(f".{self.name}.{os.getpid()}.part")
                n = orig[kind](tmp, data, *a, **kw)
                os.replace(tmp, self)
                return n
            return write
        patch(P, "write_text", atomic("write_text"))
        patch(P, "write_bytes", atomic("write_bytes"))
    else:
        def skip(kind):
            def op(self, target, *a, **kw):
                if not _inside(self, root_s):
                    return orig[kind](self, target, *a, **kw)
                if kind in ("replace", "rename"):
                    return P(target)
                return len(target)  # what write_text / write_bytes return: the amount written
            return op
        for n in orig:
            patch(P, n, skip(n))
        try:
            from matplotlib.figure import Figure
        except ImportError:  # pragma: no cover - matplotlib is a dependency
            Figure = None
        if Figure is not None:
            savefig = Figure.savefig

            def skip_savefig(self, fname, *a, **kw):
                if isinstance(fname, (str, os.PathLike)) and _inside(fname, root_s):
                    return None
                return savefig(self, fname, *a, **kw)
            patch(Figure, "savefig", skip_savefig)
    try:
        yield
    finally:
        for owner, name, fn in reversed(patched):
            setattr(owner, name, fn)


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
