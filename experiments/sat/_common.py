"""Shared by the SAT experiments (Jin et al., ICCV 2023): scales, data, the Table 1 methods, one
training run through the engine's loop, LAFEAT heads, the evaluation under the paper's attacks,
shift sizes, headers and claims.

Runs train through ``advjax.train.fit`` (resumable) into ``<out_dir>/../sat-runs/<scale>/<label>_s<seed>``:
the four SAT experiments share their trained models when written under the same results
directory (``advjax reproduce sat-... --out results/`` trains PGD-AT once for all of them), and
may run at the same time: ``fit`` locks a run directory while it trains, and ``train_all`` trains
first the runs nobody else is training, so two experiments started together split the trainings.
Evaluations of finished runs are cached in ``<out_dir>/cache.json``.

LAFEAT comes from ``advjax.attacks.lafeat`` through its documented interface
(``train_lafeat_heads``, ``LAFEAT(...).bind(model, heads)``).
"""
from __future__ import annotations

import dataclasses
import os
import pathlib
import re
import sys
import time
from typing import Optional

from experiments import base
from experiments.base import cached  # noqa: F401  (C.cached: the experiments call it through this module)
from experiments import claims as CL
from experiments._cifar_cpu import cifar10_test_split

EPS = 8 / 255
ALPHA = 2 / 255
COLUMNS = ("Clean", "FGSM", "BIM-100", "PGD-100", "CW-inf", "AutoAttack-100", "LAFEAT-100")

# the released code's values: lambda = 0.087 with its shift reduction (one Frobenius norm over the
# batch, "batch"), beta = 0.1; the paper prints neither (lambda comes from the §6.1 search). beta is
# calibrated to the code's cluster loss (the L2 norm of the per-dimension variance), so the
# experiments use that loss too (mode="reference"): eq. 10's summed per-dimension std is about
# sqrt(d) times larger (325 against a CE of 2.4 at the first --quick step, d = 8192), so beta = 0.1
# on it lets the cluster term swamp the CE
SAT_KW = {"steps": 10, "alpha": ALPHA, "lam": 0.087, "beta": 0.1, "shift_reduce": "batch", "mode": "reference"}
# Table 1's rows: label -> (registry name, settings). §6.1: PGD-AT's inner maximization is 7
# steps of 2/255; the others "follow the original literature" (TRADES / MART: 10 steps of 2/255,
# beta 6; AWP: gamma 5e-3 on 10-step PGD-AT); SAT's inner maximization is 10 steps.
METHODS = {
    "PGD-AT": ("pgd_at", {"steps": 7, "alpha": ALPHA}),
    "TRADES": ("trades", {"beta": 6.0, "steps": 10, "alpha": ALPHA}),
    "MART": ("mart", {"beta": 6.0, "steps": 10, "alpha": ALPHA}),
    "AWP-AT": ("awp", {"base": "pgd_at", "steps": 10, "alpha": ALPHA, "gamma": 5e-3}),
    "SAT": ("sat", dict(SAT_KW)),
    "SAT-TRADES": ("sat_trades", {**SAT_KW, "beta_trades": 6.0}),
    "SAT-AWP-AT": ("sat_awp", {**SAT_KW, "gamma": 5e-3}),
}
# Rows of ours beside Table 1's, each another reading of a paper row: label -> (the paper row it
# reads, registry name, settings, what differs). Shown with that row's paper numbers, marked *,
# and compared with that row's baseline (BASELINE).
READINGS = {
    "SAT-TRADES (eq. 9 inner)": (
        "SAT-TRADES", "sat_trades", {**SAT_KW, "beta_trades": 6.0, "inner": "ce"},
        "SAT-TRADES replaces the CE of eq. 9 and eq. 10 by TRADES' KL / loss; this row keeps eq. 9's CE and puts "
        "TRADES' loss in eq. 10 only (`advjax.methods.sat`, `inner=\"ce\"`)"),
    "SAT (lambda 0.01)": (
        "SAT", "sat", {**SAT_KW, "lam": 0.01},
        "lambda = 0.01, where sat-lambda's §6.1 search on a PGD-AT model stopped, in place of the code's fixed "
        "0.087 (the paper prints no lambda)"),
}
BASELINE = {"SAT": "PGD-AT", "SAT-TRADES": "TRADES", "SAT-AWP-AT": "AWP-AT"}
RUNS = {**METHODS, **{label: (name, kw) for label, (_, name, kw, _) in READINGS.items()}}


@dataclasses.dataclass(frozen=True)
class Scale:
    name: str
    widths: tuple  # ResNet-18's stage widths
    data: str  # "cifar10-test-split" (../shared/data) or "cifar10" (the real training set)
    n_train: Optional[int]
    epochs: int
    n_eval: int  # held-out images for clean / FGSM / BIM / PGD / CW / LAFEAT
    n_aa: int  # the first n_aa of them for AutoAttack
    batch_size: int = 128
    lr: float = 0.1
    milestones: tuple = ()  # epochs where lr is multiplied by 0.1
    weight_decay: float = 5e-4
    head_epochs: int = 10  # LAFEAT heads
    attack_steps: int = 100  # BIM / PGD / CW / LAFEAT iterations (the paper: 100)
    n_cos: int = 128  # images for the Fig. 1 cosine curves
    seeds: tuple = (0,)

    def describe(self) -> str:
        data = ("the 50k CIFAR-10 training images" if self.data == "cifar10" else
                f"{self.n_train} images of the CIFAR-10 test-set copy in ../shared/data (JPEG q75; a fixed "
                f"stratified split, evaluated on {self.n_eval} of the other 1000)")
        w = "" if self.widths == (64, 128, 256, 512) else f" at widths {'-'.join(map(str, self.widths))}"
        ms = ", ".join(map(str, self.milestones))
        return (f"scale `{self.name}`: ResNet-18{w} on {data}, {self.epochs} epoch(s), batch {self.batch_size}, "
                f"SGD momentum 0.9 lr {self.lr:g}" + (f" x0.1 at epochs {ms}" if ms else "") +
                f", weight decay {self.weight_decay:g}, no augmentation (as the paper); eps 8/255; attacks with "
                f"{self.attack_steps} iterations (step 2/255), AutoAttack (standard) on the first {self.n_aa} "
                f"images; LAFEAT heads trained {self.head_epochs} epoch(s); seeds {list(self.seeds)}")


# ResNet-18 at a quarter of the width (16-32-64-128 channels, 0.70M parameters instead of 11.2M)
# on the 9000-image split, 5 epochs (70 steps each), lr x0.1 at epochs 3 and 4 (the paper's 50 % /
# 75 %). Measured (session 13, two experiments sharing the 2 cores): PGD-7-AT 51-55 images/s, TRADES
# 34 images/s, i.e. ~15 / ~23 min per 5-epoch training (1 h 20 min for the seven with two
# processes). Evaluating one model (BIM / PGD / CW-100 on 400 images, LAFEAT-100's 10-beta sweep
# on the robust ones, standard AutoAttack on 100) took ~20-25 min, its heads ~1 min. Table 1 is
# then ~2.5 h with two sat-cifar10 on the same --out (they split trainings and evaluations). The
# first settings (15, then 8 epochs on 500 / 200 eval images) would have taken ~5 h and ~3.5 h.
CPU = Scale(name="cpu", widths=(16, 32, 64, 128), data="cifar10-test-split", n_train=9000, epochs=5, n_eval=400,
            n_aa=100, milestones=(3, 4), head_epochs=5)
QUICK = dataclasses.replace(CPU, name="quick", widths=(8, 16, 32, 64), n_train=256, epochs=1, n_eval=32, n_aa=8,
                            batch_size=64, milestones=(), head_epochs=1, attack_steps=10, n_cos=16)
# the paper's setting (§6.1): ResNet-18, 200 epochs, SGD 0.1 momentum 0.9, weight decay 5e-4,
# decayed at 100 and 150; no augmentation; the full test set. Needs the CIFAR-10 training set
# (set ADVJAX_CIFAR10_DIR) and an accelerator; not run here.
PAPER = Scale(name="paper", widths=(64, 128, 256, 512), data="cifar10", n_train=None, epochs=200, n_eval=10_000,
              n_aa=10_000, milestones=(100, 150), head_epochs=50, n_cos=1000)
SCALES = {"cpu": CPU, "quick": QUICK, "paper": PAPER}

DIFFERENCES = (
    "Differences from the paper's setting: the CPU scale trains a quarter-width ResNet-18 for 5 epochs on 9000 "
    "images of the CIFAR-10 test-set copy (the training set is not on this machine) instead of the full "
    "ResNet-18 for 200 epochs on 50k; SAT uses the released code's lambda = 0.087, beta = 0.1, its shift "
    "reduction (one Frobenius norm over the batch) and its cluster loss (the L2 norm of the per-dimension "
    "variance, to which beta is calibrated; eq. 10's summed std is about sqrt(d) times larger), since the "
    "paper prints neither value; LAFEAT's heads "
    "are trained for fewer epochs than the official 50; evaluation on a held-out subset.")


def pick_scale(scale: str, quick: bool) -> Scale:
    return base.pick_scale(SCALES, scale, quick)


def log(msg: str) -> None:
    print(f"[sat] {msg}", file=sys.stderr, flush=True)


def load_data(sc: Scale):
    """((x_train, y_train), (x_eval, y_eval)) as uint8 NHWC / int32 numpy."""
    import numpy as np
    from advjax.data import load

    if sc.data == "cifar10":
        d = os.environ.get("ADVJAX_CIFAR10_DIR")
        tr, te = load("cifar10", "train", data_dir=d), load("cifar10", "test", data_dir=d)
        return (np.asarray(tr.x), np.asarray(tr.y, np.int32)), (np.asarray(te.x)[:sc.n_eval],
                                                                  np.asarray(te.y, np.int32)[:sc.n_eval])
    (xt, yt), (xe, ye) = cifar10_test_split(2023, sc.n_train)
    return (xt, yt), (xe[:sc.n_eval], ye[:sc.n_eval])


def as_float(x):
    import numpy as np

    x = np.asarray(x)
    return x.astype(np.float32) / 255.0 if x.dtype == np.uint8 else x.astype(np.float32)


def shift_points(model, variables, x, y, batch_size: int = 256):
    """(bool [N], a phrase saying which): the points shift sizes are compared on, the ones the model
    classifies correctly: LAFEAT (as the official code) attacks only those and returns the others
    unchanged (shift 0), while PGD moves every point. With fewer than two (a model at chance on a
    tiny run) there is nothing to compare, so every point is used, and the phrase says so."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    fwd = jax.jit(lambda v, xb: jnp.argmax(model.apply(v, xb), -1))
    xf = as_float(x)
    pred = np.concatenate([np.asarray(fwd(variables, xf[i:i + batch_size])) for i in range(0, len(xf), batch_size)])
    right = pred == np.asarray(y)
    if right.sum() < 2:
        return np.ones_like(right), f"all {len(right)} points (only {int(right.sum())} classified correctly)"
    return right, f"the {int(right.sum())} of {len(right)} points classified correctly"


def lafeat_fooled(right, ila_sizes):
    """``(mask, description)``: the points classified correctly (``right``) that LAFEAT fooled.
    LAFEAT returns the points it never fools unchanged (shift 0 in ``ila_sizes``, one layer's
    per-point shift sizes) while PGD and eq. 7 return their last iterate, so shift distributions are
    compared on these points for every attack (the correct points when fewer than 2 are fooled)."""
    import numpy as np

    moved = np.asarray(ila_sizes) > 0
    sel = right & moved
    if sel.sum() < 2:  # (a quick run: LAFEAT fooled almost nothing) the correct points, zeros included
        sel = right
    return sel, (f"the {int(sel.sum())} of {len(sel)} points classified correctly and fooled by LAFEAT "
                 f"({int(right.sum())} classified correctly; LAFEAT leaves {int((right & ~moved).sum())} of them "
                 f"unchanged)")


def runs_root(out_dir, sc: Scale) -> pathlib.Path:
    return pathlib.Path(out_dir).resolve().parent / "sat-runs" / sc.name


def train(out_dir, label: str, sc: Scale, data, *, seed: int = 0):
    """Train Table 1's method ``label`` (resumable). Every epoch-end checkpoint is kept (sat-clustering
    reads them), so the four experiments share one run per method; ``fit``'s run-directory lock
    lets them run at the same time (a second one waits for a training in progress, then reuses it)."""
    from advjax.train.config import TrainConfig
    from advjax.train.loop import fit
    from advjax.train.optim import OptimizerConfig

    name, kw = RUNS[label]
    (x_tr, y_tr), _ = data
    opt = OptimizerConfig(name="momentum", lr=sc.lr, momentum=0.9, weight_decay=sc.weight_decay,
                          schedule="piecewise" if sc.milestones else "constant", milestones=tuple(sc.milestones),
                          decay=0.1)
    cfg = TrainConfig(model="resnet18", model_kwargs={"widths": list(sc.widths)}, dataset="cifar10", method=name,
                      method_kwargs=dict(kw), epochs=sc.epochs, batch_size=sc.batch_size, optimizer=opt,
                      augment=False, seed=seed, eval_size=0, keep=sc.epochs + 1, num_classes=10, input_shape=(32, 32, 3),
                      run_dir=str(run_dir(out_dir, label, sc, seed)))
    log(f"train {label} ({name}, seed {seed}): {cfg.epochs} epoch(s) on {len(x_tr)} images")
    t0 = time.perf_counter()
    res = fit(cfg, train_data=(x_tr, y_tr), progress=False, monitor=False, log=False)
    log(f"  {label}: done in {time.perf_counter() - t0:.0f} s")
    return res


def split_work(labels, lock_dirs, work, what: str = "work", *, wait: bool = True) -> dict:
    """``{label: work(label)}`` for every label, doing first the labels none of whose
    ``lock_dirs(label)`` (a path or a list of paths) another process holds right now, and coming
    back to the busy ones at the end (whose ``work`` then waits for the holder and finds its
    result: a finished run, a cached evaluation). With ``wait=False`` the busy ones are left out
    of the result instead. Two SAT experiments started together on the same ``--out`` split the
    shared work between them instead of queueing behind each other's lock."""
    from advjax.train.lock import is_locked

    def busy_now(label):
        dirs = lock_dirs(label)
        return any(is_locked(d) for d in (dirs if isinstance(dirs, (list, tuple)) else [dirs]))

    out, busy = {}, []
    for label in labels:
        if busy_now(label):
            log(f"{label}: {what} in progress in another process; " + ("coming back to it" if wait else "skipped"))
            busy.append(label)
            continue
        out[label] = work(label)  # (if taken meanwhile, its lock makes this wait)
    if not wait:
        return out
    for label in busy:
        out[label] = work(label)
    return {label: out[label] for label in labels}


def run_dir(out_dir, label: str, sc: Scale, seed: int = 0) -> pathlib.Path:
    """``<runs_root>/<label>_s<seed>`` (a label's spaces and brackets become ``_``: "SAT-TRADES
    (eq. 9 inner)" -> ``SAT-TRADES_eq.9_inner_s0``)."""
    slug = re.sub(r"[^A-Za-z0-9.+-]+", "_", label).strip("_").replace("._", ".")
    return runs_root(out_dir, sc) / f"{slug}_s{seed}"


def train_all(out_dir, labels, sc: Scale, data, *, seed: int = 0, wait: bool = True) -> dict:
    """``{label: train(...)}``, split with other processes by ``fit``'s run-directory lock; with
    ``wait=False`` the runs another process is training are left out (``train`` them later)."""
    return split_work(labels, lambda label: run_dir(out_dir, label, sc, seed),
                      lambda label: train(out_dir, label, sc, data, seed=seed), "training", wait=wait)


# ------------------------------------------------------------------------------------------------
# LAFEAT (through its documented interface only)
# ------------------------------------------------------------------------------------------------

def lafeat_heads(run_dir, model, variables, x_train, sc: Scale, seed: int = 0):
    """The heads of this run's final weights: loaded from ``<run>/lafeat_heads/final`` when they
    were trained for these weights, else trained (frozen backbone) and stored there."""
    import jax
    from advjax.attacks import lafeat_heads as LH

    from advjax.train.lock import run_dir_lock

    d = pathlib.Path(run_dir) / "lafeat_heads" / "final"
    with run_dir_lock(d.parent, what="LAFEAT heads directory"):  # (another experiment may be training them)
        try:
            return LH.load_heads(d, model, variables)
        except (FileNotFoundError, ValueError):
            pass
        log(f"  training LAFEAT heads ({sc.head_epochs} epoch(s)) for {pathlib.Path(run_dir).name}")
        heads = LH.train_lafeat_heads(model, variables, x_train, jax.random.PRNGKey(seed), epochs=sc.head_epochs,
                                      batch_size=sc.batch_size)
        LH.save_heads(heads, d)
        return heads


def lafeat(model, heads, sc: Scale):
    from advjax.attacks.lafeat import LAFEAT

    return LAFEAT(eps=EPS, steps=sc.attack_steps).bind(model, heads)


# ------------------------------------------------------------------------------------------------
# evaluation
# ------------------------------------------------------------------------------------------------

def output_attacks(sc: Scale) -> dict:
    """Table 1's output-layer attacks at eps 8/255 (iterative ones with step 2/255)."""
    from advjax.attacks import BIM, CWInf, FGSM, PGD

    n = sc.attack_steps
    return {"FGSM": FGSM(eps=EPS), "BIM-100": BIM(eps=EPS, steps=n, step_size=ALPHA),
            "PGD-100": PGD(eps=EPS, steps=n, step_size=ALPHA), "CW-inf": CWInf(eps=EPS, steps=n, step_size=ALPHA)}


def evaluate(model, variables, x, y, sc: Scale, heads=None, seed: int = 0) -> dict:
    """{column: accuracy %} for Table 1 (AutoAttack on the first ``n_aa``; LAFEAT when heads are
    given, else the column is absent)."""
    from advjax.attacks import AutoAttack
    from advjax.eval import robust_accuracy

    xf = as_float(x)
    bs = min(256, len(xf))
    attacks = output_attacks(sc)
    if heads is not None:
        attacks["LAFEAT-100"] = lafeat(model, heads, sc)
    res = robust_accuracy(model, variables, (xf, y), attacks, [EPS], batch_size=bs, key=seed, progress=False,
                          checks=False)
    out = {"Clean": 100.0 * res.clean_accuracy}
    out.update({k: 100.0 * res.table[k][EPS] for k in attacks})
    aa = robust_accuracy(model, variables, (xf[:sc.n_aa], y[:sc.n_aa]), {"AutoAttack-100": AutoAttack(eps=EPS)},
                         [EPS], batch_size=min(bs, sc.n_aa), key=seed, progress=False, checks=False)
    out["AutoAttack-100"] = 100.0 * aa.table["AutoAttack-100"][EPS]
    return out


def adversarial(attack, model, variables, x, y, seed: int = 0, batch_size: int = 256):
    """x_adv of a contract attack over (x, y) in batches (float numpy)."""
    import jax
    import numpy as np
    from advjax.models import logits_fn

    apply_fn = logits_fn(model)
    xf = as_float(x)
    out = []
    for i in range(0, len(xf), batch_size):
        out.append(np.asarray(attack(apply_fn, variables, xf[i:i + batch_size], np.asarray(y[i:i + batch_size]),
                                     jax.random.PRNGKey(seed * 1000 + i))))
    return np.concatenate(out)


def header(sc: Scale, what: str, extra: str = "") -> str:
    return (f"{what}\n\nOurs at {sc.describe()}. Cells are `ours (paper)` where the paper prints a number. "
            f"{DIFFERENCES}" + (f" {extra}" if extra else "") + "\n")


def accuracy_se(n: int, p: float = 45.0) -> float:
    return CL.accuracy_diff_se(p, p, n)
