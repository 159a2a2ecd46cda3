"""sdi-k: FGSM-SDI's generator update period k (thesis Table II) at CPU scale.

Jia et al., IEEE TIP 2022 (thesis ch. 3, Table II): FGSM-SDI trained with the generator updated
once every k target steps, k in {1, 2, 10, 20, 30, 40}; clean, PGD-10/20/50 and CW accuracy of the
best and last checkpoints, and the training time. Larger k makes training cheaper (the generator
update costs about two extra forward-backward passes of the target) at some cost in robustness.

Scales: ``cpu`` = Model B on MNIST (the test split of ../shared/data, shuffled with a fixed seed,
8000 training / 2000 held-out images, 500 evaluated), eps 0.3, Adam one-cycle peak 5e-3, batch
100, 5 epochs: the setting of ``sdi-overfitting``'s cpu scale at the usual MNIST radius (about
1.5 h on 2 shared cores); ``cifar-cpu`` = ResNet-20 on 9000 images of the JPEG-q75
CIFAR-10 test set, 4 epochs cyclic (3-5 h here, not run); ``paper`` = ResNet-18, CIFAR-10 train,
110 epochs piecewise (not run here); ``quick`` = k in {1, 20}, 1000 MNIST images, 1 epoch.
Paper values: not available offline, so none are quoted.

Measured (cpu scale, seed 0, 2026-11-22; 76 min of training on 2 cores shared with other runs,
then 9 min of evaluation), accuracy (%) of the last checkpoint on 500 held-out MNIST images at
eps 0.3 (PGD / CW step eps/4), and training seconds per epoch (noisy: other runs shared the cores):

    k         1      2      10     20     30     40
    clean     97.2   97.2   97.4   97.6   97.2   97.0
    PGD-10    56.4   50.2   42.8   30.4   22.6   24.6
    PGD-50    42.8   35.4   28.4    6.4    3.8   10.8
    CW-20     50.4   42.6   36.2   15.8   12.2   20.8
    s/epoch   263    198    73     61     36     34

More frequent generator updates (small k) give more robust models at a higher cost per epoch, the
trade-off Table II reports; at this scale k = 10 keeps most of k = 1's robustness at a quarter of
its cost, while k >= 20 loses most of it (the best-by-PGD-10 checkpoints: 33.8 / 37.8 / 33.4 PGD-10
for k = 20 / 30 / 40).
"""
from __future__ import annotations

import dataclasses
import json
import pathlib
import time

from experiments.base import Experiment, ExperimentResult, fmt
from experiments.sdi_cifar10 import EPS, evaluate_best_and_last, train_one, train_seconds
from experiments.sdi_overfitting import _optimizer as of_optimizer, eps_str, load_split

K_VALUES = (1, 2, 10, 20, 30, 40)


@dataclasses.dataclass(frozen=True)
class KScale:
    model: str
    schedule: str
    epochs: int
    n_train: int | None
    n_eval: int
    ks: tuple = K_VALUES
    attacks: tuple = ("pgd10", "pgd20", "pgd50", "cw20")
    data: str = "cifar10-test-split"   # or "mnist-test-split"
    eps: float = EPS
    lr: float = 0.1
    optimizer: str = "momentum"        # "momentum" (SGD, wd 5e-4, ``schedule``) or "adam" (one cycle)
    batch_size: int = 128
    augment: bool = True


_MNIST = dict(data="mnist-test-split", eps=0.3, lr=5e-3, optimizer="adam", batch_size=100, augment=False)
SCALES = {
    "paper": KScale("resnet18", "piecewise", 110, None, 10_000, data="cifar10",
                    attacks=("pgd10", "pgd20", "pgd50", "cw20", "aa")),
    "cpu": KScale("model_b", "cyclic", 5, 8000, 500, **_MNIST),
    "cifar-cpu": KScale("resnet20", "cyclic", 4, 9000, 500),
    "quick": KScale("model_b", "cyclic", 1, 1000, 200, ks=(1, 20), attacks=("pgd10",), **_MNIST),
}


def run(scale: str = "cpu", quick: bool = False, out_dir=".", seed: int = 0) -> ExperimentResult:
    key = "quick" if quick else scale
    if key not in SCALES:
        raise ValueError(f"sdi-k: unknown scale {scale!r}; use one of {sorted(set(SCALES) - {'quick'})}")
    sc = SCALES[key]
    out_dir = pathlib.Path(out_dir)
    (x_tr, y_tr), (x_te, y_te) = load_split(sc)
    x_ev, y_ev = x_te[:sc.n_eval], y_te[:sc.n_eval]
    rows, metrics = [], {"runs": {}}
    for k in sc.ks:
        t0 = time.time()
        res = train_one(out_dir / "runs" / key / f"k{k}", "fgsm_sdi", {"eps": sc.eps, "alpha": sc.eps, "k": k},
                        model=sc.model, train=(x_tr, y_tr), test=(x_ev, y_ev), epochs=sc.epochs,
                        schedule=sc.schedule, lr=sc.lr, monitor_size=min(500, sc.n_eval), seed=seed,
                        eval_eps=sc.eps, eval_alpha=sc.eps / 4, batch_size=sc.batch_size, augment=sc.augment,
                        optimizer=of_optimizer(sc), dataset="mnist" if sc.data.startswith("mnist") else "cifar10")
        secs = time.time() - t0
        train_s = train_seconds(res, len(x_tr), sc.batch_size)
        best, last = evaluate_best_and_last(res, x_ev, y_ev, sc.attacks, eps=sc.eps, seed=seed,
                                            cache_path=pathlib.Path(res.run_dir) / "evaluations.json")
        metrics["runs"][str(k)] = {"best": best, "last": last, "train_seconds": train_s,
                                   "wall_seconds": secs, "history": res.history}
        rows.append((k, best, last, train_s / sc.epochs))
        (out_dir / "partial.json").write_text(json.dumps(metrics, indent=1, default=float))
    cols = ["clean"] + list(sc.attacks)
    head = ["k"] + [f"best {c}" for c in cols] + [f"last {c}" for c in cols] + ["train s/epoch"]
    md = [f"Scale `{key}`: FGSM-SDI on {sc.model}, {len(x_tr)} training images, {sc.epochs} epochs "
          f"({sc.schedule}), accuracy (%) on {len(x_ev)} held-out images, eps = {eps_str(sc.eps)}.", "",
          "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for k, b, l, t in rows:
        md.append(f"| {k} | " + " | ".join(fmt(b[c]) for c in cols) + " | "
                  + " | ".join(fmt(l[c]) for c in cols) + f" | {t:.1f} |")
    md += ["", "Training time per epoch excludes the per-epoch monitor. Paper values (Table II): not "
           "available offline; none quoted."]
    return ExperimentResult(markdown="\n".join(md), config={"scale": key, **dataclasses.asdict(sc), "seed": seed},
                            metrics=metrics)


EXPERIMENT = Experiment(
    name="sdi-k",
    description="FGSM-SDI generator update period k in {1, 2, 10, 20, 30, 40} (thesis Table II)",
    paper='Jia et al., "Boosting Fast Adversarial Training with Learnable Adversarial Initialization", '
          "IEEE TIP 2022; thesis ch. 3, Table II",
    expected_runtime={"quick": "~2 min on 2 cores", "cpu": "~85 min on 2 cores shared with other runs "
                                                                    "(6 x 5 epochs of Model B, then the evaluation)",
                      "cifar-cpu": "~3-5 h on 2 cores",
                      "paper": "days on CPU (6 x 110 epochs of ResNet-18)"},
    paper_values={},
    run=run,
    scales=("cpu", "cifar-cpu", "paper"),
)
