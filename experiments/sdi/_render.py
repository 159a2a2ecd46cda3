"""Rendering shared by the FGSM-SDI experiments: ``ours (paper)`` method tables and the thesis'
claims about Tables III / VI, decided from one run's numbers (``experiments.claims``)."""
from __future__ import annotations

from collections.abc import Mapping, Sequence

from experiments import claims as C
from experiments.base import fmt
from experiments.sdi import paper_values as PV

QUICK_NOTE = "**Quick smoke run: these verdicts exercise the machinery; they are not evidence about the paper.**"

COL_NAMES = {"clean": "Clean", "pgd10": "PGD-10", "pgd20": "PGD-20", "pgd50": "PGD-50", "cw20": "C&W (CW-20)",
             "apgd-ce": "APGD (APGD-CE)", "aa": "AA"}


def method_table(rows: Mapping[str, Mapping[str, float]], cols: Sequence[str], paper: Mapping | None,
                 checkpoint: str = "Best", time_col: str | None = None) -> str:
    """One row per method, ``ours (paper)`` per column; ``time_col``: our key of a time column,
    shown beside the thesis' Time(min) (different units and hardware: not comparable)."""
    head = ["method"] + [COL_NAMES.get(c, c) for c in cols] + ([f"{time_col} (paper: Time(min))"] if time_col else [])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, vals in rows.items():
        cells = []
        for c in cols:
            ours = fmt(vals.get(c))
            cells.append(ours if paper is None else f"{ours} ({fmt(PV.cell(paper, name, c, checkpoint))})")
        if time_col:
            t = PV.cell(paper, name, "time") if paper is not None else None
            cells.append(f"{fmt(vals.get(time_col), 1)} ({'–' if t is None else t})")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def paper_only_table(paper: Mapping, title: str) -> str:
    """A thesis table as printed (Best / Last rows, or one row per method)."""
    head = ["method", "checkpoint"] + list(PV.COLUMNS)
    lines = [f"**{title}**", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for m, row in paper.items():
        if isinstance(row, dict):
            for ck in ("Best", "Last"):
                t = row["Time(min)"] if ck == "Best" else ""
                lines.append(f"| {m} | {ck} | " + " | ".join(f"{v:g}" for v in row[ck]) + f" | {t} |")
        else:
            lines.append(f"| {m} | – | " + " | ".join(f"{v:g}" for v in row) + " |")
    return "\n".join(lines)


def numbers(runs: Mapping[str, Mapping[str, Mapping[str, float]]], schedule: str) -> dict[str, float]:
    """Flat numbers of one schedule's runs: ``<ckpt>/<method>/<col>`` and ``time/<method>``."""
    d: dict[str, float] = {}
    for key, r in runs.items():
        sched, method = key.split("/", 1)
        if sched != schedule:
            continue
        for ck in ("best", "last"):
            for c, v in (r.get(ck) or {}).items():
                d[f"{ck}/{method}/{c}"] = float(v)
        if r.get("train_seconds") is not None:
            d[f"time/{method}"] = float(r["train_seconds"])
    return d


def comparison_claims(table: Mapping, table_name: str, *, full_scale: bool, timing_reliable: bool = False,
                      near_tol: float = 2.0) -> list[C.Claim]:
    """The thesis' claims about a comparison table (III or VI) as predicates over :func:`numbers`.

    full_scale: whether the run is at the thesis' scale (110 epochs of ResNet-18 on the 50k
    training images); the claim about the Last checkpoint's collapse needs it. timing_reliable:
    whether the run's training times are a speed measurement."""
    src = f"Table {table_name}"
    p = lambda m, c, ck="Best": PV.cell(table, m, c, ck)  # noqa: E731
    out = [C.Claim("FGSM-SDI's PGD-10 accuracy is near PGD-AT's (within 2 points), best checkpoint", src,
                   C.near("best/FGSM-SDI/pgd10", "best/PGD-AT/pgd10", near_tol),
                   f"{p('FGSM-SDI', 'pgd10')} vs {p('PGD-AT', 'pgd10')}")]
    for other in ("FGSM-RS", "FGSM-GA", "FGSM-CKPT", "Free-AT (m=8)"):
        for col, name in (("pgd10", "PGD-10"), ("aa", "AA")):
            out.append(C.Claim(f"FGSM-SDI's {name} accuracy is above {other}'s (best checkpoint)", src,
                               C.greater(f"best/FGSM-SDI/{col}", f"best/{other}/{col}"),
                               f"{p('FGSM-SDI', col)} vs {p(other, col)}"))
    out.append(C.Claim("FGSM-SDI's AA accuracy is near PGD-AT's (within 2 points), best checkpoint", src,
                       C.near("best/FGSM-SDI/aa", "best/PGD-AT/aa", near_tol),
                       f"{p('FGSM-SDI', 'aa')} vs {p('PGD-AT', 'aa')}"))
    last = PV.cell(PV.TABLE3, "FGSM-RS", "pgd10", "Last")
    out.append(C.Claim("FGSM-RS's Last checkpoint collapses (PGD-10 below 5%)", "Table III",
                       C.below("last/FGSM-RS/pgd10", 5.0), f"Last PGD-10 {last:g} (Table III, piecewise); "
                       f"{PV.TABLE6['FGSM-RS']['Last'][1]:g} with the cyclic schedule (Table VI)",
                       undecidable=None if full_scale else "the collapse comes after about epoch 70 of 110 "
                       "piecewise epochs; this run is shorter"))
    t_sdi, t_pgd = PV.cell(table, "FGSM-SDI", "time"), PV.cell(table, "PGD-AT", "time")
    out.append(C.Claim("FGSM-SDI's training time is about a third of PGD-AT's (ratio 2.5-3.5)", src,
                       lambda d: 0.5 - abs(d["time/PGD-AT"] / d["time/FGSM-SDI"] - 3.0),
                       f"{t_pgd} / {t_sdi} min = {t_pgd / t_sdi:.2f}", unit="(ratio)",
                       undecidable=None if timing_reliable else "this run's times are not a speed measurement "
                       "(shared, paused cores); benchmarks/bench_sdi.py measured PGD-10-AT at 2.76-3.24x "
                       "FGSM-SDI (four runs, mean 2.99; benchmarks/README.md)"))
    return out


def single_run_noise(rows: Mapping[str, Mapping[str, float]], n: int) -> float:
    """The binomial standard error (points) of a difference of two accuracies near the rows'
    PGD-10 level on n test images: the noise level standing in for the seed spread of one run."""
    vals = [r["pgd10"] for r in rows.values() if r.get("pgd10") is not None] or [50.0]
    p = sum(vals) / len(vals)
    return C.accuracy_diff_se(p, p, n)
