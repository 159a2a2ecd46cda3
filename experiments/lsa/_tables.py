"""Rendering shared by the LSA tables: ``ours (paper)`` cells with mean ± std over seeds, the
"how much FGSM overstates robustness" line, and the base-vs-LR claims."""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from advjax.losses.lsa import at_lr_name
from experiments import claims as C
from experiments.base import fmt


def mean_std(runs: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """runs [S, ...] -> (mean, sample std or None when S == 1)."""
    runs = np.asarray(runs, np.float64)
    if runs.shape[0] < 2:
        return runs[0], None
    return runs.mean(0), runs.std(0, ddof=1)


def _cell(m, s, p) -> str:
    ours = fmt(m) if s is None else f"{m:.2f} ± {s:.2f}"
    return ours if p is False else f"{ours} ({fmt(p)})"


def seed_table(acc: Mapping[str, np.ndarray], eps: Sequence[float], paper: Mapping | None = None,
               label: str = "Training type") -> str:
    """One row per training type: accuracy (%) per eps and R&G, each ``mean ± std (paper)``.

    acc: {row: [S, len(eps)]} (S seeds). paper: {row: ([accs], R&G as printed)} or None (no
    paper column, e.g. for attacks the paper did not run); a row the paper lacks shows ``(–)``."""
    head = [label] + [f"{e:g}" for e in eps] + ["R&G"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, runs in acc.items():
        runs = np.asarray(runs, np.float64)
        if runs.ndim == 1:
            runs = runs[None]
        if runs.shape[1] != len(eps):
            raise ValueError(f"seed_table: row {name!r} has {runs.shape[1]} values for {len(eps)} eps")
        m, s = mean_std(runs)
        rm, rs = mean_std(runs.sum(1))
        if paper is None:
            pv = [False] * (len(eps) + 1)
        else:
            p = paper.get(name)
            pv = [None] * (len(eps) + 1) if p is None else list(p[0]) + [p[1]]
        cells = [_cell(m[i], None if s is None else s[i], pv[i]) for i in range(len(eps))]
        cells.append(_cell(float(rm), None if rs is None else float(rs), pv[-1]))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def overstatement(headline: Mapping[str, np.ndarray], stronger: Mapping[str, Mapping[str, np.ndarray]],
                  eps: Sequence[float], headline_name: str = "FGSM") -> str:
    """One line: how many points the headline attack's accuracy exceeds the strongest of the other
    attacks (per cell the minimum over them), averaged over rows, seeds and eps > 0, and the
    largest such gap (seed mean)."""
    if not stronger:
        return ""
    cols = [i for i, e in enumerate(eps) if e > 0]
    gaps = {}
    for row, h in headline.items():
        h = np.asarray(h, np.float64)
        strongest = np.min(np.stack([np.asarray(a[row], np.float64) for a in stronger.values() if row in a]), 0)
        gaps[row] = (h - strongest)[..., cols]
    allg = np.concatenate([g.reshape(-1) for g in gaps.values()])
    means = {r: g.mean(0) if g.ndim == 2 else g for r, g in gaps.items()}
    worst_row, worst_col = max(((r, j) for r in means for j in range(len(cols))), key=lambda t: means[t[0]][t[1]])
    return (f"**{headline_name} overstates robustness** against the strongest of "
            f"{', '.join(stronger)} by {allg.mean():.2f} points on average over rows, seeds and eps > 0 "
            f"(largest: {means[worst_row][worst_col]:.2f} points, {worst_row} at eps {eps[cols[worst_col]]:g}).")


def lr_claims(bases: Sequence[str], layers: Sequence[int], paper_rg: Mapping[str, float], source: str,
              key=lambda row: f"rg/{row}") -> list[C.Claim]:
    """'<base>-LR-L<l> beats <base> on R&G' for every base and layer, with the paper's own margin."""
    out = []
    for b in bases:
        for l in layers:
            n = at_lr_name(b, l)
            pap = ""
            if n in paper_rg and b in paper_rg:
                pap = f"{paper_rg[n]:.2f} vs {paper_rg[b]:.2f} ({paper_rg[n] - paper_rg[b]:+.2f})"
            out.append(C.Claim(f"{n} beats {b} on R&G", source, C.greater(key(n), key(b)), pap))
    return out


def numbers_per_seed(acc: Mapping[str, np.ndarray], eps: Sequence[float]) -> list[dict[str, float]]:
    """{row: [S, E]} -> one flat dict per seed: ``rg/<row>`` and ``acc/<row>/<eps>``."""
    rows = list(acc)
    s = np.asarray(acc[rows[0]]).reshape(-1, len(eps)).shape[0]
    out = []
    for i in range(s):
        d = {}
        for r in rows:
            a = np.asarray(acc[r], np.float64).reshape(-1, len(eps))[i]
            d[f"rg/{r}"] = float(a.sum())
            for e, v in zip(eps, a):
                d[f"acc/{r}/{e:g}"] = float(v)
        out.append(d)
    return out
