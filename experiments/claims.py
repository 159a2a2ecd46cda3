"""Papers' claims, decided from our numbers beyond seed noise.

A claim is a sentence of the paper plus a *margin*: a function of one run's numbers (a flat
``{name: float}`` dict, one per seed) that is > 0 exactly when the claim holds on that run. Over
the seeds the margin has a mean m and a sample standard deviation s; the verdict is

* **yes** -- m > s (the claim holds by more than the seed spread),
* **no** -- m < -s (it fails by more than the seed spread),
* **undecided (within seed noise)** -- |m| <= s,
* **not decidable at this scale** -- the claim was marked so (e.g. it is about 110 epochs of
  ResNet-18 and we ran 6 of ResNet-20), or a number it needs is missing.

With a single run the spread is unknown: pass ``noise`` (e.g. the binomial standard error of an
accuracy difference on n test images, :func:`accuracy_diff_se`) to stand in for s, otherwise the
verdict is "undecided (one run, no spread)" unless the claim is exactly decided with no noise
notion at all (``noise=0``).

Helpers build the usual margins: :func:`greater` (a > b), :func:`is_max` (a above every other),
:func:`near` (|a - b| <= tol), :func:`below` (a < threshold) and :func:`ratio_near`.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence

YES = "yes"
NO = "no"
NOISE = "undecided (within seed noise)"
ONE_RUN = "undecided (one run, no spread)"
NOT_DECIDABLE = "not decidable at this scale"

Numbers = Mapping[str, float]


@dataclasses.dataclass(frozen=True)
class Claim:
    """text: the claim in the paper's words (or a faithful paraphrase); source: where (e.g.
    "Table 2"); margin: ``numbers -> float | None`` (> 0 iff it holds; None: a number is missing);
    paper: the paper's own numbers for it (text); undecidable: the reason it cannot be decided at
    this scale, if so; unit: of the margin (e.g. "points")."""
    text: str
    source: str
    margin: Callable[[Numbers], float | None]
    paper: str = ""
    undecidable: str | None = None
    unit: str = "points"


@dataclasses.dataclass(frozen=True)
class Verdict:
    claim: Claim
    verdict: str
    mean: float | None
    std: float | None
    n: int
    note: str = ""


def _margin(claim: Claim, numbers: Numbers) -> float | None:
    try:
        v = claim.margin(numbers)
    except KeyError:
        return None
    return None if v is None or not math.isfinite(v) else float(v)


def decide(claim: Claim, runs: Sequence[Numbers], noise: float | None = None) -> Verdict:
    """The verdict on ``claim`` from one numbers-dict per seed (see the module docstring)."""
    if claim.undecidable:
        return Verdict(claim, NOT_DECIDABLE, None, None, len(runs), claim.undecidable)
    vals = [_margin(claim, r) for r in runs]
    if not vals or any(v is None for v in vals):
        return Verdict(claim, NOT_DECIDABLE, None, None, len(runs), "a number it needs was not measured")
    n = len(vals)
    mean = sum(vals) / n
    if n >= 2:
        std = math.sqrt(sum((v - mean) ** 2 for v in vals) / (n - 1))
        spread, note = std, f"{n} seeds"
    elif noise is not None:
        std, spread, note = None, float(noise), f"one run; noise level {noise:.2f} {claim.unit}"
    else:
        return Verdict(claim, ONE_RUN, mean, None, n, "one run: no seed spread to compare with")
    if mean > spread:
        v = YES
    elif mean < -spread:
        v = NO
    else:
        v = NOISE
    return Verdict(claim, v, mean, std, n, note)


def decide_all(claims: Sequence[Claim], runs: Sequence[Numbers], noise: float | None = None) -> list[Verdict]:
    return [decide(c, runs, noise) for c in claims]


def table(verdicts: Sequence[Verdict]) -> str:
    """Markdown: claim, source, the paper's numbers, our margin (mean ± std), verdict."""
    lines = ["| claim | source | paper | ours: margin (> 0 = holds) | holds? |", "|---|---|---|---|---|"]
    for v in verdicts:
        if v.mean is None:
            ours = "–"
        elif v.std is None:
            ours = f"{v.mean:+.2f} {v.claim.unit}"
        else:
            ours = f"{v.mean:+.2f} ± {v.std:.2f} {v.claim.unit}"
        if v.note:
            ours += f" ({v.note})"
        lines.append(f"| {v.claim.text} | {v.claim.source} | {v.claim.paper or '–'} | {ours} | **{v.verdict}** |")
    return "\n".join(lines)


def summary(verdicts: Sequence[Verdict]) -> str:
    """One line: how many claims hold, fail, are within noise or not decidable."""
    count = {}
    for v in verdicts:
        count[v.verdict] = count.get(v.verdict, 0) + 1
    order = (YES, NO, NOISE, ONE_RUN, NOT_DECIDABLE)
    return ", ".join(f"{count[k]} {k}" for k in order if k in count)


# ------------------------------------------------------------------ margins


def greater(a: str, b: str, by: float = 0.0) -> Callable[[Numbers], float]:
    """a > b + by."""
    return lambda d: d[a] - d[b] - by


def is_max(a: str, among: Sequence[str]) -> Callable[[Numbers], float]:
    """a is above every other name of ``among``: a - max(others)."""
    return lambda d: d[a] - max(d[o] for o in among if o != a)


def near(a: str, b: str, tol: float) -> Callable[[Numbers], float]:
    """|a - b| <= tol: tol - |a - b|."""
    return lambda d: tol - abs(d[a] - d[b])


def below(a: str, threshold: float) -> Callable[[Numbers], float]:
    """a < threshold."""
    return lambda d: threshold - d[a]


def ratio_near(a: str, b: str, target: float, tol: float) -> Callable[[Numbers], float]:
    """a / b within tol of target: tol - |a / b - target|."""
    return lambda d: tol - abs(d[a] / d[b] - target)


def accuracy_diff_se(p1: float, p2: float, n: int) -> float:
    """Standard error (percentage points) of the difference of two accuracies (in %) measured on
    the same n test images, treated as independent binomials (a conservative stand-in for the
    seed spread of a single run)."""
    q1, q2 = p1 / 100.0, p2 / 100.0
    return 100.0 * math.sqrt(max(q1 * (1 - q1) + q2 * (1 - q2), 1e-12) / n)
