"""SAT's greedy lambda search (Jin et al., ICCV 2023, §6.1 "Hyperparameter Settings").

The paper: start at lambda = 0 and move it greedily with step 0.01; on a PGD-AT model take the
distributions of the shift size at the SAT layers (Fig. 4) under OLA (PGD-100), ILA (LAFEAT-100)
and eq. 7 (the L_Gen attack with weight lambda), vectorize them and compare inner products:
"if the inner product of OLA and eq. 7 is larger than that of ILA and eq. 7, we reduce lambda;
otherwise we increase it".

As printed the rule moves the wrong way at the start: at lambda = 0 eq. 7 *is* PGD (OLA), so the
OLA product is the larger and lambda would go negative, away from ILA, where no search can end
(a negative weight rewards shifts, pushing eq. 7 further from ILA). The evidently intended rule,
which we implement: **eq. 7 closer to OLA than to ILA (OLA product larger) -> increase lambda**
(the shift penalty pulls eq. 7 towards ILA's smaller shifts, §4); closer to ILA -> decrease it.
The search stops when the direction reverses (the products cross: lambda then sits between the
two, where Fig. 5 says SAT's shifts "resemble the average of ILA and OLA"), when lambda would leave
[0, lambda_max], or after ``max_steps``; it returns the visited lambda whose two products are
closest, and the whole path.

Distributions: histograms of the pooled shift sizes (all SAT layers) on shared bins spanning the
OLA and ILA sizes (eq. 7's sizes outside are clipped into the end bins), each normalized to sum
1, then the plain dot product (the paper's "vectorize ... inner product"; the bin count is not
given, ``bins`` = 50 here).
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import numpy as np

__all__ = ["LambdaStep", "LambdaSearch", "shift_distribution", "greedy_lambda_search", "plot_lambda_path"]


@dataclasses.dataclass(frozen=True)
class LambdaStep:
    lam: float
    ip_ola: float  # <p_OLA, p_eq7>
    ip_ila: float  # <p_ILA, p_eq7>
    move: int  # +1 (increase), -1 (decrease) as the rule says at this lambda


@dataclasses.dataclass(frozen=True)
class LambdaSearch:
    lam: float  # the chosen lambda
    path: tuple[LambdaStep, ...]
    stopped: str  # why the search ended
    edges: np.ndarray

    def to_markdown(self) -> str:
        lines = ["| step | lambda | <OLA, eq.7> | <ILA, eq.7> | rule says |", "|---|---|---|---|---|"]
        for i, s in enumerate(self.path):
            mark = " **(chosen)**" if s.lam == self.lam else ""
            lines.append(f"| {i} | {s.lam:.3f}{mark} | {s.ip_ola:.4f} | {s.ip_ila:.4f} | "
                         f"{'increase' if s.move > 0 else 'decrease'} |")
        return "\n".join(lines) + f"\n\nStopped: {self.stopped}."


def shift_distribution(sizes, edges) -> np.ndarray:
    """The histogram of ``sizes`` on ``edges`` (values outside go to the end bins), summing to 1."""
    v = np.clip(np.asarray(sizes, np.float64).ravel(), edges[0], edges[-1])
    h, _ = np.histogram(v, bins=edges)
    return h / max(1, h.sum())


def greedy_lambda_search(eq7_sizes: Callable[[float], Sequence[float]], ola_sizes, ila_sizes, *,
                         step: float = 0.01, lam0: float = 0.0, lam_max: float = 10.0, max_steps: int = 100,
                         bins: int = 50) -> LambdaSearch:
    """The search of §6.1 with the intended rule (module docstring).

    Args:
      eq7_sizes: ``lam -> shift sizes`` of the eq. 7 attack with weight ``lam`` (e.g. ``LGen(lam=lam,
        lambda_draw="fixed")`` and ``advjax.analysis.clustering.shift_sizes``), pooled over layers.
      ola_sizes, ila_sizes: the shift sizes under PGD-100 and LAFEAT-100.
      step: the fixed step (0.01, the paper's); lam0: the start (0, the paper's).
    """
    if not step > 0:
        raise ValueError(f"lambda search: step must be > 0, got {step!r}")
    if not 0 <= lam0 <= lam_max:
        raise ValueError(f"lambda search: need 0 <= lam0 <= lam_max, got lam0={lam0!r}, lam_max={lam_max!r}")
    ola = np.asarray(ola_sizes, np.float64).ravel()
    ila = np.asarray(ila_sizes, np.float64).ravel()
    if ola.size == 0 or ila.size == 0:
        raise ValueError("lambda search: the OLA and ILA shift sizes must be non-empty")
    lo, hi = float(min(ola.min(), ila.min())), float(max(ola.max(), ila.max()))
    edges = np.linspace(lo, hi if hi > lo else lo + 1e-12, bins + 1)
    p_ola, p_ila = shift_distribution(ola, edges), shift_distribution(ila, edges)
    path: list[LambdaStep] = []
    lam, stopped = float(lam0), f"max_steps = {max_steps} reached"
    for _ in range(max_steps + 1):
        p = shift_distribution(eq7_sizes(lam), edges)
        a, b = float(p @ p_ola), float(p @ p_ila)
        move = 1 if a > b else -1  # the intended rule: closer to OLA -> more shift penalty
        path.append(LambdaStep(round(lam, 10), a, b, move))
        if len(path) >= 2 and move != path[-2].move:
            stopped = f"the rule reversed direction at lambda = {lam:.3f} (the products crossed)"
            break
        nxt = lam + move * step
        if nxt < -1e-12 or nxt > lam_max + 1e-12:
            stopped = f"lambda would leave [0, {lam_max}] (at lambda = {lam:.3f})"
            break
        if len(path) > max_steps:
            break
        lam = max(0.0, nxt)
    best = min(path, key=lambda s: abs(s.ip_ola - s.ip_ila))
    return LambdaSearch(best.lam, tuple(path), stopped, edges)


def plot_lambda_path(path, search: LambdaSearch):
    """The two inner products against lambda along the search, the chosen lambda marked."""
    import pathlib

    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    lam = [s.lam for s in search.path]
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    ax.plot(lam, [s.ip_ola for s in search.path], "-o", ms=3, label="<OLA, eq. 7>")
    ax.plot(lam, [s.ip_ila for s in search.path], "-s", ms=3, label="<ILA, eq. 7>")
    ax.axvline(search.lam, color="k", ls="--", lw=0.8, label=f"chosen {search.lam:.3f}")
    ax.set_xlabel("lambda")
    ax.set_ylabel("inner product of distributions")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return pathlib.Path(path)
