"""Shared by the smooth-AT experiments: scales, data, one training run, the evaluation (clean,
PGD-10, PGD-50, AutoAttack), mean / std over seeds, ``ours (paper)`` tables and claim checks.

Every run trains with ``advjax.methods.smooth_at.SmoothAT`` (PGD-1 with random start, eps = step,
the thesis' training attacker) through the engine's loop (``advjax.train.fit``) into
``out_dir/runs/<label>_s<seed>``, so an interrupted experiment resumes, and caches its
evaluation in ``eval.json`` beside the checkpoints.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import pathlib
import re
import statistics
import sys
import time
from typing import Mapping, Optional, Sequence

from experiments import base
from experiments import claims as CL
from experiments._cifar_cpu import cifar10_test_split

EPS = 8 / 255
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2471, 0.2435, 0.2616)


@dataclasses.dataclass(frozen=True)
class Scale:
    """One experiment scale. ``n_eval`` held-out images get clean / PGD-10 / PGD-50, the first
    ``n_aa`` of them AutoAttack (standard: APGD-CE, APGD-T, FAB-T, Square)."""
    name: str
    model: str
    model_kwargs: tuple  # ((field, value), ...) besides the activation
    data: str  # "cifar10-test-split" (the 10k CIFAR-10 test images of ../shared/data) or "cifar10"
    n_train: Optional[int]
    epochs: int
    n_eval: int
    n_aa: int
    seeds: tuple = (0,)
    batch_size: int = 128
    optimizer: str = "adam"
    lr: float = 2e-3
    momentum: float = 0.9
    weight_decay: float = 0.0
    schedule: str = "cyclic"
    milestones: tuple = ()
    eps: float = EPS
    monitor_size: int = 200
    augment: bool = True
    attacks: tuple = ("pgd10", "pgd50", "aa")

    def describe(self) -> str:
        data = ("the CIFAR-10 training set" if self.data == "cifar10" else
                f"{self.n_train} images of the CIFAR-10 test-set copy in ../shared/data (JPEG q75; a fixed "
                "stratified split, the other 1000 held out)")
        return (f"scale `{self.name}`: {self.model} {dict(self.model_kwargs) or ''} on {data}, {self.epochs} "
                f"epoch(s), batch {self.batch_size}, {self.optimizer} lr {self.lr:g} ({self.schedule}), "
                f"augmentation {'on' if self.augment else 'off'}; eps {self.eps * 255:g}/255; seeds "
                f"{list(self.seeds)}; clean / PGD-10 / PGD-50 (step eps/4, random start) on {self.n_eval} held-out "
                f"images, AutoAttack (standard) on the first {self.n_aa}")


# Model B (the LSA paper's small CNN, three 5x5 convs + two dense layers, no batch norm) read as a
# CIFAR-10 net (estimated ~30 s per PGD-1 epoch of 9000 images on 2 idle cores, ~5 min per run
# with the per-epoch monitor and the evaluation)
CPU = Scale(name="cpu", model="model_b", model_kwargs=(("input_shape", (32, 32, 3)), ("mean", CIFAR_MEAN),
                                                      ("std", CIFAR_STD)),
            data="cifar10-test-split", n_train=9000, epochs=6, n_eval=500, n_aa=100, seeds=(0,), monitor_size=100)
QUICK = dataclasses.replace(CPU, name="quick", n_train=512, epochs=1, n_eval=64, n_aa=16, monitor_size=64)
# the thesis' CIFAR-10 setting (Sec. 4.7): ResNet-18, PGD-1 eps = step = 8/255; ResNet training
# recipe (SGD momentum 0.9, weight decay 5e-4, lr 0.1 decayed x0.1, here at 100 and 150 of 200)
PAPER_CIFAR = Scale(name="paper", model="resnet18", model_kwargs=(), data="cifar10", n_train=None, epochs=200,
                    n_eval=10_000, n_aa=10_000, seeds=(0,), optimizer="momentum", lr=0.1, weight_decay=5e-4,
                    schedule="piecewise", milestones=(100, 150), monitor_size=1000)
# the thesis' ImageNet setting (Sec. 4.3.1): ResNet-50, PGD-1 eps = step = 4/255, 100 epochs, lr /10
# at 30, 60, 90, weight decay 1e-4; PGD-200 evaluation. Needs an ImageNet loader and an
# accelerator: given as a config for accelerator users, not run by these experiments.
PAPER_IMAGENET = {"model": "resnet50 (not in advjax.models: torchvision-style ResNet-50 needed)",
                  "dataset": "imagenet2012", "method": "smooth_at", "method_kwargs": {"eps": 4 / 255},
                  "epochs": 100, "batch_size": 256, "optimizer": {"name": "momentum", "lr": 0.1, "momentum": 0.9,
                                                                  "weight_decay": 1e-4, "schedule": "piecewise",
                                                                  "milestones": [30, 60, 90]},
                  "eval": "PGD-200, eps 4/255, step 1/255"}

SCALES = {"cpu": CPU, "quick": QUICK, "paper": PAPER_CIFAR}


def pick_scale(scale: str, quick: bool, **cpu_overrides) -> Scale:
    """The scale by name (``quick`` wins); ``cpu_overrides`` change the ``cpu`` scale only (an
    experiment with more runs trains fewer epochs to stay under an hour)."""
    sc = base.pick_scale(SCALES, scale, quick)
    return dataclasses.replace(sc, **cpu_overrides) if sc is SCALES["cpu"] and cpu_overrides else sc


def log(msg: str) -> None:
    print(f"[smooth-at] {msg}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------
def load_data(sc: Scale):
    """((x_train, y_train), (x_eval, y_eval)) as uint8 NHWC / int32 numpy."""
    import numpy as np
    from advjax.data import load

    if sc.data == "cifar10":
        d = os.environ.get("ADVJAX_CIFAR10_DIR")
        tr, te = load("cifar10", "train", data_dir=d), load("cifar10", "test", data_dir=d)
        return (np.asarray(tr.x), np.asarray(tr.y, np.int32)), (np.asarray(te.x), np.asarray(te.y, np.int32))
    return cifar10_test_split(4_2020, sc.n_train)  # fixed seed: the same split for every run and experiment


def optimizer(sc: Scale, epochs: int):
    from advjax.train.optim import OptimizerConfig

    ms = tuple(round(m * epochs / sc.epochs) for m in sc.milestones)
    return OptimizerConfig(name=sc.optimizer, lr=sc.lr, momentum=sc.momentum, weight_decay=sc.weight_decay,
                           schedule=sc.schedule, milestones=ms)


def runs_root(out_dir, sc: Scale) -> pathlib.Path:
    """``<out>/smooth-at-runs/<scale>``: the runs every smooth-at experiment shares (the ReLU
    baseline of smooth-at-table10 and smooth-at-activations is one run, trained once)."""
    return pathlib.Path(out_dir).resolve().parent / "smooth-at-runs" / sc.name


def run_name(cfg) -> str:
    """A run's directory name from what it trains: activation, method settings, epochs, seed, and
    a digest of the whole configuration (two experiments that train the same thing share the run;
    a scale override that changes anything else gets its own)."""
    import hashlib

    d = {k: v for k, v in cfg.to_dict().items() if k != "run_dir"}
    digest = hashlib.sha1(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:8]
    act = re.sub(r"[^A-Za-z0-9.]+", "_", str(cfg.model_kwargs.get("activation", "relu"))).strip("_")
    kw = "".join(f"_{k}-{v}" for k, v in sorted(cfg.method_kwargs.items()) if k != "eps")
    return f"{act}{kw}_e{cfg.epochs}_s{cfg.seed}_{digest}"


def train(out_dir, label: str, sc: Scale, data, *, activation: str = "relu", seed: int = 0,
          epochs: Optional[int] = None, **method_kwargs):
    """One SmoothAT run (``method_kwargs``: smooth_attacker, smooth_optimizer, steps, alpha, ...),
    in :func:`runs_root` under :func:`run_name` (resumed or reused when it exists; ``fit``'s lock
    makes a second experiment wait for a training in progress). ``label`` names it in the log."""
    from advjax.train.config import TrainConfig
    from advjax.train.loop import fit

    (x_tr, y_tr), (x_te, y_te) = data
    epochs = sc.epochs if epochs is None else epochs
    kw = {"eps": sc.eps, **method_kwargs}
    cfg = TrainConfig(model=sc.model, model_kwargs={**dict(sc.model_kwargs), "activation": activation},
                      dataset="cifar10", method="smooth_at", method_kwargs=kw, eps=sc.eps, epochs=epochs,
                      batch_size=sc.batch_size, optimizer=optimizer(sc, epochs), augment=sc.augment, seed=seed,
                      eval_size=sc.monitor_size, eval_steps=10, eval_eps=sc.eps, eval_alpha=sc.eps / 4,
                      run_dir="", num_classes=10, input_shape=tuple(int(d) for d in x_tr.shape[1:]))
    cfg = cfg.replace(run_dir=str(runs_root(out_dir, sc) / run_name(cfg)))
    log(f"train {label} (activation {activation}, {kw}, seed {seed}): {epochs} epoch(s) on {len(x_tr)} images "
        f"in {cfg.run_dir}")
    t0 = time.perf_counter()
    res = fit(cfg, train_data=(x_tr, y_tr), test_data=(x_te[:sc.monitor_size], y_te[:sc.monitor_size]),
              progress=False)
    log(f"  {label}: trained in {time.perf_counter() - t0:.0f} s")
    return res


def _attack_set(sc: Scale):
    from advjax.attacks import get_attack

    out = {}
    for name in sc.attacks:
        if name.startswith("pgd"):
            steps = int(name[3:])
            out[f"PGD-{steps}"] = get_attack("pgd", eps=sc.eps, steps=steps, step_size=sc.eps / 4, random_start=True)
        elif name == "aa":
            out["AutoAttack"] = get_attack("aa", eps=sc.eps)
        else:
            out[name] = get_attack(name, eps=sc.eps)
    return out


def evaluate(res, sc: Scale, data, seed: int = 0) -> dict:
    """{"clean", "PGD-10", "PGD-50", "AutoAttack", "train_clean", "train_pgd10"} in % (cached in the
    run directory's cache.json, keyed by the settings: safe when two experiments evaluate the same
    shared run at once)."""
    key = {"n_eval": sc.n_eval, "n_aa": sc.n_aa, "attacks": list(sc.attacks), "eps": sc.eps,
           "step": int(res.state.step), "seed": seed}
    return base.cached(res.run_dir, "eval", key, lambda: _evaluate(res, sc, data, seed))


def _evaluate(res, sc: Scale, data, seed: int) -> dict:
    import numpy as np
    from advjax.eval import robust_accuracy

    (_, _), (x_te, y_te) = data
    state = res.state
    x, y = np.asarray(x_te[:sc.n_eval]), np.asarray(y_te[:sc.n_eval])
    attacks = _attack_set(sc)
    pgd = {k: v for k, v in attacks.items() if k != "AutoAttack"}
    out = {}
    t0 = time.perf_counter()
    r = robust_accuracy(state.model, state.variables(), (x, y), pgd, [sc.eps], batch_size=250, key=seed,
                        progress=False, checks=False)
    out["clean"] = 100 * r.clean_accuracy
    for k in pgd:
        out[k] = 100 * r.table[k][sc.eps]
    if "AutoAttack" in attacks and sc.n_aa > 0:
        ra = robust_accuracy(state.model, state.variables(), (x[:sc.n_aa], y[:sc.n_aa]),
                             {"AutoAttack": attacks["AutoAttack"]}, [sc.eps], batch_size=250, key=seed,
                             progress=False, checks=False)
        out["AutoAttack"] = 100 * ra.table["AutoAttack"][sc.eps]
        out["clean (AA subset)"] = 100 * ra.clean_accuracy
    last = res.history[-1] if res.history else {}
    out["train_clean"] = 100 * last.get("train_clean_acc", math.nan)
    out["train_pgd10"] = 100 * last.get("train_pgd_acc", math.nan)
    out["train_loss"] = last.get("train_loss", math.nan)
    ips = [h.get("images_per_s") for h in res.history if h.get("images_per_s")]
    out["images_per_s"] = float(statistics.median(ips)) if ips else math.nan
    log(f"  evaluated in {time.perf_counter() - t0:.0f} s: " +
        ", ".join(f"{k} {v:.1f}" for k, v in out.items() if k in ("clean", "PGD-10", "PGD-50", "AutoAttack")))
    return out


def mean_std(runs: Sequence[Mapping[str, float]]) -> dict:
    """{metric: (mean, std or None)} over the seeds' evaluations."""
    out = {}
    for k in runs[0]:
        vals = [float(r[k]) for r in runs if k in r and r[k] is not None and not math.isnan(float(r[k]))]
        if not vals:
            continue
        out[k] = (statistics.fmean(vals), statistics.stdev(vals) if len(vals) > 1 else None)
    return out


def cell(ms, paper=None, digits: int = 1) -> str:
    """``ours (paper)``: ``ours`` is the mean (± std over seeds when there are several)."""
    if ms is None:
        s = "–"
    elif ms[0] is None or (isinstance(ms[0], float) and math.isnan(ms[0])):
        s = "–"
    else:
        m, sd = ms
        s = f"{m:.{digits}f}" + (f" ± {sd:.{digits}f}" if sd is not None else "")
    if paper is not False:
        s += f" ({'–' if paper is None else f'{paper:.{digits}f}'})"
    return s


def table(head: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def claim(text: str, ours_holds: Optional[bool], detail: str, margin: Optional[float] = None,
          noise: Optional[float] = None) -> dict:
    """One claim of the thesis checked against our numbers, decided by :mod:`experiments.claims`.

    ``ours_holds``: does the claim hold on the seed means (None: not decidable here); ``margin``: by
    how much, in points (its sign is taken from ``ours_holds``); ``noise``: the seeds' spread or, with
    one seed, a noise level standing in for it (1 point if not given). A claim without a margin
    (e.g. "the loss is lower") is exact: yes or no. The verdict is yes / no / undecided within noise,
    as everywhere in the runner."""
    if ours_holds is None:
        verdict = CL.NOT_DECIDABLE
        signed = None
    else:
        if margin is None:
            signed, lim = (1.0 if ours_holds else -1.0), 0.0
        else:
            signed, lim = (abs(margin) if ours_holds else -abs(margin)), (1.0 if noise is None else float(noise))
        verdict = CL.decide(CL.Claim(text, "", lambda d: d["margin"]), [{"margin": signed}], noise=lim).verdict
    return {"claim": text, "verdict": verdict, "detail": detail, "margin": signed, "noise": noise}


def headline(sc: Scale, per_row: Mapping[str, Mapping]) -> str:
    """The robust accuracy the claims compare: AutoAttack when it ran on every evaluated image, else
    PGD-50 on the ``n_eval`` images (AutoAttack on its ``n_aa``-image subset is shown beside it as the
    check that PGD-50 does not overestimate; at the cpu scale its binomial noise is sqrt(5) times PGD-50's)."""
    has_aa = all("AutoAttack" in m for m in per_row.values())
    return "AutoAttack" if has_aa and sc.n_aa >= sc.n_eval else "PGD-50"


def _n_images(sc: Scale, metric: str) -> int:
    """How many held-out images ``metric`` was measured on."""
    return sc.n_aa if metric == "AutoAttack" else sc.n_eval


def diff_noise(sc: Scale, metric: str, a: Mapping, b: Mapping) -> float:
    """The noise a claim comparing ``metric`` of two rows (``mean_std`` dicts) is decided against: the
    larger seed std of the two when several seeds ran, else the binomial standard error of the
    difference of two accuracies on the metric's images (n_aa for AutoAttack, n_eval otherwise)."""
    sds = [m[metric][1] for m in (a, b) if m.get(metric) and m[metric][1] is not None]
    if sds:
        return max(sds)
    return CL.accuracy_diff_se(a[metric][0], b[metric][0], _n_images(sc, metric))


def noise_note(sc: Scale, metric: str, n_seeds: int) -> str:
    if n_seeds > 1:
        return f"Claims compare {metric}; a margin within the larger seed std of the two rows is undecided."
    n = _n_images(sc, metric)
    return (f"Claims compare {metric}. One seed: a margin within the binomial standard error of the difference "
            f"of two accuracies on {n} images (~{CL.accuracy_diff_se(25.0, 25.0, n):.1f} points at 25 %) is "
            "undecided; the seed spread of "
            "single-seed CPU runs elsewhere in this project was up to 3x that, so read a yes / no as an indication.")


def claims_markdown(claims: Sequence[dict]) -> str:
    count = {}
    for c in claims:
        count[c["verdict"]] = count.get(c["verdict"], 0) + 1
    return (table(["thesis claim", "holds at this scale?", "our numbers"],
                  [[c["claim"], f"**{c['verdict']}**", c["detail"]] for c in claims])
            + "\n\nSummary: " + ", ".join(f"{n} {k}" for k, n in count.items()) + ".")


def header(sc: Scale, what: str) -> list[str]:
    return [f"**{what}** Ours ran at {sc.describe()}.", "",
            "The thesis' numbers (in parentheses) are **ImageNet ResNet-50** figures (PGD-1 training at eps = step "
            "= 4/255, 100 epochs; robustness = PGD-200 at eps 4/255), quoted from the thesis (Xie et al.'s "
            "results). What differs here: dataset (CIFAR-10 images, 32x32, 10 classes), model (a small CNN, "
            "no batch norm), eps 8/255, a few epochs, and the attacks. Compare the direction of each claim, "
            "not the values.", ""]


def landscape_pair(results: Mapping[str, object], data, out_dir, *, n: int = 4, steps: int = 25,
                   radius: float = 2 * EPS, seed: int = 0, fname: str = "landscapes.png") -> dict:
    """Loss landscapes (Fig. 32) of each trained model on the same held-out images: directions
    from each model's own gradient (sign) and a random orthogonal vector; roughness per model."""
    import jax
    import numpy as np
    from advjax import models
    from advjax.analysis import landscape

    (_, _), (x_te, y_te) = data
    x = np.asarray(x_te[:n], np.float32) / 255.0
    y = np.asarray(y_te[:n], np.int32)
    lss, rough = {}, {}
    for label, res in results.items():
        st = res.state
        ls = landscape.loss_landscape(models.logits_fn(st.model), st.variables(), x, y,
                                      jax.random.PRNGKey(seed), radius=radius, steps=steps, chunk=125)
        lss[label] = ls
        rough[label] = [float(v) for v in landscape.roughness(ls)]
    landscape.plot_landscapes(lss, pathlib.Path(out_dir) / fname,
                              title="loss landscape around a held-out image (axes in 1/255)")
    return {"roughness": rough, "file": fname}
