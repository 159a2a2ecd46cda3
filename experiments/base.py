"""What an experiment is, and the table helpers every experiment shares.

An experiment module of this package or of a family subpackage (``experiments/lsa/``,
``experiments/sdi/``, ...) defines ``EXPERIMENT = Experiment(...)``; the runner
(:mod:`experiments.runner`) finds it by itself, so adding ``experiments/sdi/table5.py`` needs no
change anywhere else. A family keeps its paper's numbers, as printed, in ``paper_values.py`` and
decides the paper's claims with :mod:`experiments.claims`; a results.md starts with the scale it
ran at and what differs from the paper's setting, and shows ``ours (paper)`` per cell.
"""
from __future__ import annotations

import dataclasses
import json
import pathlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

SCALES = ("cpu", "paper")


@dataclasses.dataclass(frozen=True)
class ExperimentResult:
    """What ``Experiment.run`` returns; the runner adds the header, versions and wall time.

    markdown: the body of results.md (tables of our numbers beside the paper's, notes).
    config: every setting the run used (goes to results.json).
    metrics: the numbers (JSON-serialisable) -- e.g. {"table": {method: {eps: acc}}, "rg": {...}}.
    plots: file names (relative to the output directory) of the figures written.
    """
    markdown: str
    config: Mapping[str, Any]
    metrics: Mapping[str, Any]
    plots: Sequence[str] = ()


@dataclasses.dataclass(frozen=True)
class Experiment:
    """One paper table or figure.

    name: the CLI name (``advjax reproduce NAME``), e.g. "lsa-moons".
    description: one line (shown by ``--list``).
    paper: the paper, e.g. 'Khalooei et al., "Layer-wise Regularized AT ...", Table 2'.
    expected_runtime: per scale (and "quick"), a human string, e.g. {"cpu": "3 min on 2 cores"}.
    paper_values: the paper's numbers as printed, {table name: values} (or {} when not available --
      never invented); ``--list`` shows which tables are attached.
    run: ``run(scale, quick, out_dir, seed) -> ExperimentResult``.
    scales: the scales this experiment supports.
    """
    name: str
    description: str
    paper: str
    expected_runtime: Mapping[str, str]
    paper_values: Mapping[str, Any]
    run: Callable[..., ExperimentResult]
    scales: tuple[str, ...] = SCALES


def pick_scale(scales: Mapping[str, Any], scale: str, quick: bool):
    """``scales[scale]`` (``scales["quick"]`` when ``quick``); an unknown name is a ValueError that
    lists the known ones."""
    key = "quick" if quick else scale
    if key not in scales:
        raise ValueError(f"unknown scale {scale!r}; use one of {sorted(set(scales) - {'quick'})} (or --quick)")
    return scales[key]


def fmt(v, digits: int = 2) -> str:
    return "–" if v is None else f"{v:.{digits}f}"


def accuracy_table(ours: Mapping[str, Sequence[float]], eps: Sequence[float],
                   paper: Mapping[str, Sequence[float]] | None = None, rg: bool = True,
                   ) -> str:
    """Markdown table: one row per method, accuracy (%) per eps and the R&G score.

    When ``paper`` has a row for a method, the cell shows ``ours (paper)``; a missing paper value
    shows ``ours (–)``; without ``paper`` only our numbers are shown.
    """
    head = ["method"] + [f"eps={e:g}" for e in eps] + (["R&G"] if rg else [])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, accs in ours.items():
        accs = list(accs)
        if len(accs) != len(eps):
            raise ValueError(f"accuracy_table: row {name!r} has {len(accs)} values for {len(eps)} eps")
        cells = [fmt(a) for a in accs] + ([fmt(sum(accs))] if rg else [])
        if paper is not None:
            p = paper.get(name)
            pcells = ([None] * len(eps) + [None]) if p is None else list(p) + [sum(p)]
            cells = [f"{c} ({fmt(q)})" for c, q in zip(cells, pcells)]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


# How this process used ``cached`` (the runner resets it per experiment and reports it beside the
# wall time: a rerun that reuses hours of evaluations takes seconds, and its header says so).
CACHE_STATS = {"reused": 0, "reused_compute_s": 0.0, "reused_untimed": 0, "computed": 0, "computed_s": 0.0}
_SECONDS = "__seconds__"  # cache.json's map from an entry's key to the seconds it took to compute


def reset_cache_stats() -> None:
    CACHE_STATS.update(reused=0, reused_compute_s=0.0, reused_untimed=0, computed=0, computed_s=0.0)


def cached(out_dir, name: str, key: dict, fn):
    """``fn()`` cached in ``out_dir/cache.json`` under (name, key): evaluations of finished runs
    are not repeated when an experiment is resumed or rerun. ``fn`` returns JSON-able values.
    The seconds ``fn`` took are stored beside the value (``CACHE_STATS`` adds them up for the
    results header).

    Safe for several experiments writing the same ``out_dir`` at once (the SAT family's): the
    store is re-read and updated under ``out_dir``'s lock and replaced atomically, so an entry
    another process wrote while ``fn`` ran is kept."""
    import os
    import time

    from advjax.train.lock import run_dir_lock

    path = pathlib.Path(out_dir) / "cache.json"
    k = name + " " + json.dumps(key, sort_keys=True)
    store = json.loads(path.read_text()) if path.exists() else {}
    if k in store:
        secs = store.get(_SECONDS, {}).get(k)
        CACHE_STATS["reused"] += 1
        if secs is None:
            CACHE_STATS["reused_untimed"] += 1
        else:
            CACHE_STATS["reused_compute_s"] += secs
        return store[k]
    t0 = time.perf_counter()
    value = fn()
    secs = time.perf_counter() - t0
    CACHE_STATS["computed"] += 1
    CACHE_STATS["computed_s"] += secs
    with run_dir_lock(path.parent, what="results directory (cache.json)"):
        store = json.loads(path.read_text()) if path.exists() else {}
        store[k] = value
        store.setdefault(_SECONDS, {})[k] = round(secs, 3)
        tmp = path.with_name(f".cache.json.{os.getpid()}")
        tmp.write_text(json.dumps(store, indent=1))
        os.replace(tmp, path)
    return value
