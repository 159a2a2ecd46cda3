"""Shared by the layerwise-AT experiments (Sankaranarayanan et al. 2018): scales, data, one training
run through the engine's loop, FGS evaluation, measured step-time ratios, headers and claims.

Every run trains through ``advjax.train.fit`` into ``out_dir/runs/<label>_s<seed>`` (an interrupted
experiment resumes exactly, the layerwise cache included), without the per-epoch PGD monitor
(the paper evaluates with FGS only).
"""
from __future__ import annotations

import dataclasses
import os
import pathlib
import sys
import time
from typing import Optional

from experiments import base
from experiments.base import cached  # noqa: F401  (C.cached: the experiments call it through this module)
from experiments import claims as CL
from experiments._cifar_cpu import cifar10_test_split

FGS_EPS = (0.0, 0.02, 0.04, 0.06, 0.08, 0.1)  # Table 4's columns
LAYER_EPS = 10.0  # eps of eps_l = eps (M - m): the paper's grid is {10, 20, 30}, its choice unreported
INPUT_EPS = 0.05  # FGS-orig's training radius (not reported: the middle of Table 4's eps list)

# Table 4's rows: label -> (method registry name, settings)
METHODS = {
    "Baseline": ("standard", {}),
    "FGS-orig": ("fgs_orig", {"input_eps": INPUT_EPS}),
    "FGS-inter": ("fgs_inter", {"eps": LAYER_EPS}),
    "Ours-orig": ("layerwise", {"eps": LAYER_EPS}),
    "Ours-joint": ("layerwise_joint", {"eps": LAYER_EPS}),
}


@dataclasses.dataclass(frozen=True)
class Scale:
    name: str
    model: str
    model_kwargs: tuple  # ((field, value), ...)
    data: str  # "cifar10-test-split" (the 10k CIFAR-10 test images of ../shared/data) or "cifar10"/"cifar100"
    n_train: Optional[int]
    epochs: int
    n_eval: int
    batch_size: int = 128
    lr: float = 0.1
    milestones: tuple = ()  # epochs at which lr is divided by 5
    weight_decay: float = 5e-4
    augment: bool = False  # Table 4-6: "no data augmentation"
    seeds: tuple = (0,)
    depth_stages: tuple = (1, 2, 3, 4, 5)  # Table 6

    def describe(self) -> str:
        data = ("the CIFAR training set" if self.data in ("cifar10", "cifar100") else
                f"{self.n_train} images of the CIFAR-10 test-set copy in ../shared/data (JPEG q75; a fixed "
                f"stratified split, evaluated on {self.n_eval} of the other 1000)")
        ms = ", ".join(str(m) for m in self.milestones)
        sched = f"divided by 5 at epochs {ms}" if ms else "constant"
        return (f"scale `{self.name}`: {self.model} {dict(self.model_kwargs) or ''} on {data}, {self.epochs} "
                f"epochs, batch {self.batch_size}, SGD Nesterov 0.9 lr {self.lr:g} {sched}, "
                f"weight decay {self.weight_decay:g}, augmentation {'flip + crop' if self.augment else 'none'}; "
                f"layer eps {LAYER_EPS:g} (eps_l = eps (M - m)), FGS-orig training eps {INPUT_EPS:g}; seeds "
                f"{list(self.seeds)}")


# VGG-16 with BN at a quarter of the width (16-32-64-128-128 channels, 0.92M parameters instead
# of 14.7M) on the 9000-image split: an estimated 20-30 s per standard epoch on 2 idle cores
CPU = Scale(name="cpu", model="vgg16_bn", model_kwargs=(("width_factor", 0.25),), data="cifar10-test-split",
            n_train=9000, epochs=12, n_eval=1000, milestones=(6, 9))
QUICK = dataclasses.replace(CPU, name="quick", model_kwargs=(("width_factor", 0.125),), n_train=512, epochs=1,
                            n_eval=128, milestones=(), depth_stages=(1, 5))
# the paper's setting (§4): VGG with BN (the szagoruyko Torch VGG), CIFAR-10, 300 epochs, SGD
# Nesterov 0.9, lr 0.1 / 5 every 50 epochs (every 60 on CIFAR-100), flips (Table 3; Tables 4-6 use
# no augmentation). Batch size not reported: 128. Hours to days on an accelerator; not run here.
PAPER = Scale(name="paper", model="vgg16_bn", model_kwargs=(), data="cifar10", n_train=None, epochs=300,
              n_eval=10_000, milestones=(50, 100, 150, 200, 250))
SCALES = {"cpu": CPU, "quick": QUICK, "paper": PAPER}

# the other paper-scale configurations (Tables 3 and 7), for accelerator users:
# advjax train --model M --dataset D --method layerwise --epochs 300 ... (or fit(TrainConfig(...)))
PAPER_CONFIGS = {
    f"{model}-{ds}": {"model": model, "dataset": ds, "method": m, "method_kwargs": {"eps": LAYER_EPS},
                      "epochs": 300, "batch_size": 128, "augment": "flip" if model != "wrn28_10" else "flip+crop",
                      "optimizer": {"name": "nesterov", "lr": 0.1, "momentum": 0.9, "weight_decay": 5e-4,
                                    "schedule": "piecewise", "decay": 0.2,
                                    "milestones": list(range(50 if ds == "cifar10" else 60, 300,
                                                             50 if ds == "cifar10" else 60))}}
    for model, m in (("vgg16_bn", "layerwise"), ("resnet20", "layerwise"), ("resnet56", "layerwise"),
                     ("wrn28_10", "layerwise_joint"))
    for ds in ("cifar10", "cifar100")
}


def pick_scale(scale: str, quick: bool) -> Scale:
    return base.pick_scale(SCALES, scale, quick)


def log(msg: str) -> None:
    print(f"[layerwise] {msg}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------
def load_data(sc: Scale):
    """((x_train, y_train), (x_eval, y_eval)) as uint8 NHWC / int32 numpy."""
    import numpy as np
    from advjax.data import load

    if sc.data in ("cifar10", "cifar100"):
        d = os.environ.get("ADVJAX_CIFAR10_DIR" if sc.data == "cifar10" else "ADVJAX_CIFAR100_DIR")
        tr, te = load(sc.data, "train", data_dir=d), load(sc.data, "test", data_dir=d)
        return (np.asarray(tr.x), np.asarray(tr.y, np.int32)), (np.asarray(te.x)[:sc.n_eval],
                                                                  np.asarray(te.y, np.int32)[:sc.n_eval])
    (xt, yt), (xe, ye) = cifar10_test_split(2018, sc.n_train)  # fixed seed: the same split every run
    return (xt, yt), (xe[:sc.n_eval], ye[:sc.n_eval])


def optimizer(sc: Scale):
    from advjax.train.optim import OptimizerConfig

    return OptimizerConfig(name="nesterov", lr=sc.lr, momentum=0.9, weight_decay=sc.weight_decay,
                           schedule="piecewise" if sc.milestones else "constant",
                           milestones=tuple(sc.milestones), decay=0.2)


def train(out_dir, label: str, sc: Scale, data, method: str, method_kwargs: dict, *, seed: int = 0,
          model: Optional[str] = None, model_kwargs: Optional[dict] = None, epochs: Optional[int] = None,
          augment: Optional[bool] = None):
    """One run through the engine's loop (resumable run directory ``out_dir/runs/<label>_s<seed>``)."""
    from advjax.train.config import TrainConfig
    from advjax.train.loop import fit

    (x_tr, y_tr), _ = data
    mkw = {**({} if model else dict(sc.model_kwargs)), **(model_kwargs or {})}  # another model: its own
    if x_tr.ndim == 4:
        mkw.setdefault("input_shape", tuple(int(d) for d in x_tr.shape[1:]))
    cfg = TrainConfig(model=model or sc.model, model_kwargs=mkw, dataset="cifar10", method=method,
                      method_kwargs=dict(method_kwargs), epochs=epochs or sc.epochs, batch_size=sc.batch_size,
                      optimizer=optimizer(sc), augment=sc.augment if augment is None else augment, seed=seed,
                      eval_size=0, run_dir=str(pathlib.Path(out_dir) / "runs" / f"{label}_s{seed}"),
                      num_classes=int(y_tr.max()) + 1, input_shape=tuple(int(d) for d in x_tr.shape[1:]))
    log(f"train {label} ({method} {method_kwargs}, seed {seed}): {cfg.epochs} epoch(s) on {len(x_tr)} images")
    t0 = time.perf_counter()
    res = fit(cfg, train_data=(x_tr, y_tr), progress=False, monitor=False, log=False)
    log(f"  {label}: trained in {time.perf_counter() - t0:.0f} s")
    return res


def fgs_accuracy(model, variables, x, y, eps_list=FGS_EPS, batch_size: int = 250) -> dict:
    """{eps: accuracy %} under the library's FGSM (x + eps sign grad, clipped to [0, 1]) on the
    eval-mode model; eps = 0 is the clean accuracy. One compile for all radii (eps traced)."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    from advjax.attacks import FGSM

    attack = FGSM(eps=0.0, check_inputs=False)
    apply_fn = lambda v, z: model.apply(v, z, train=False)  # noqa: E731

    @jax.jit
    def counts(v, xb, yb, eps):
        xa = attack.with_eps(eps).run(apply_fn, v, xb, yb, jax.random.PRNGKey(0))
        return jnp.sum(jnp.argmax(apply_fn(v, xa), -1) == yb)

    x = np.asarray(x)
    xf = x.astype(np.float32) / 255.0 if x.dtype == np.uint8 else x.astype(np.float32)
    y = np.asarray(y, np.int32)
    out = {}
    for e in eps_list:
        c = 0
        for s in range(0, len(xf), batch_size):
            c += int(counts(variables, xf[s:s + batch_size], y[s:s + batch_size], np.float32(e)))
        out[float(e)] = 100.0 * c / len(xf)
    return out


def step_time_ratios(model, methods: dict, x, y, *, rounds: int = 5, steps: int = 3, seed: int = 0) -> dict:
    """Seconds per training step of each ``{label: (registry name, settings)}`` on one batch
    ``(x, y)``, measured in this process, round-robin (``rounds`` x ``steps``, median of rounds,
    compile excluded), and their ratio to the first label's."""
    import statistics

    import jax
    import numpy as np
    import optax
    from advjax.methods.base import get_method
    from advjax.train.state import create_train_state

    x = np.asarray(x)
    x = x.astype(np.float32) / 255.0 if x.dtype == np.uint8 else x.astype(np.float32)
    y = np.asarray(y, np.int32)
    runs = {}
    for label, (name, kw) in methods.items():
        m = get_method(name, **kw)
        st = create_train_state(model, optax.sgd(0.01, momentum=0.9, nesterov=True), jax.random.PRNGKey(seed))
        if hasattr(m, "init_state"):
            st = m.init_state(st, (x, y))
        fn = jax.jit(lambda s, b, k, m=m: m.step(s, b, k), donate_argnums=(0,))
        st, met = fn(st, (x, y), jax.random.PRNGKey(1))
        jax.block_until_ready(met)
        runs[label] = [fn, st, []]
    for r in range(rounds):
        for label, run in runs.items():
            fn, st, times = run
            t0 = time.perf_counter()
            for i in range(steps):
                st, met = fn(st, (x, y), jax.random.PRNGKey(2 + i))
            jax.block_until_ready((st.params, met))
            times.append((time.perf_counter() - t0) / steps)
            run[1] = st
    sec = {label: statistics.median(run[2]) for label, run in runs.items()}
    base = next(iter(sec.values()))
    return {"seconds": sec, "ratio": {k: v / base for k, v in sec.items()}}


# ------------------------------------------------------------------------------------------
PAPER_SETUP = ("the paper ran the full-width VGG-16-BN on the 50k CIFAR-10 training images for 300 epochs "
               "(SGD Nesterov, lr 0.1 / 5 every 50 epochs; batch size and eps not reported)")


def header(sc: Scale, what: str, differs: str = "", paper_setup: str = PAPER_SETUP) -> str:
    return (f"{what}\n\nOurs at {sc.describe()}. Cells are `ours (paper)`; {paper_setup}."
            + (f" {differs}" if differs else "") + "\n")


def claim_rows(claims, numbers: dict, noise: float) -> str:
    verdicts = CL.decide_all(claims, [numbers], noise=noise)
    return "**Claims** (" + CL.summary(verdicts) + "):\n\n" + CL.table(verdicts)


def accuracy_se(n: int, p: float = 85.0) -> float:
    return CL.accuracy_diff_se(p, p, n)


def plot_fgs_curves(path, table: dict, paper: dict, eps=FGS_EPS, title: str = "") -> None:
    """Accuracy under FGS vs eps, one colour per method: ours solid, the paper's dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for i, (label, accs) in enumerate(table.items()):
        c = f"C{i}"
        ax.plot(eps, accs, "o-", color=c, label=f"{label} (ours)")
        if label in paper:
            ax.plot(eps, paper[label][:len(eps)], "--", color=c, alpha=0.6, label=f"{label} (paper)")
    ax.set_xlabel("FGS eps")
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 100)
    ax.set_title(title)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
