"""sdi-k: FGSM-SDI's generator update period k (thesis Table II) at CPU scale.

Jia et al., IEEE TIP 2022 (thesis ch. 3, Table II): FGSM-SDI trained with the generator updated
once every k target steps, k in {1, 2, 10, 20, 30, 40}; clean, PGD-10/20/50 and CW accuracy of the
best and last checkpoints, and the training time. Larger k makes training cheaper (the generator
update costs about two extra forward-backward passes of the target) at some cost in robustness.

Scales: ``cpu`` = ResNet-20 on 9000 images of the JPEG-q75 CIFAR-10 test set (the only CIFAR-10
images here; fixed stratified 9000/1000 split), evaluated on 500 of the held-out 1000, 4 epochs cyclic; ``paper`` = ResNet-18,
CIFAR-10 train, 110 epochs piecewise (not run here); ``quick`` = k in {1, 20}, 1000 images, 1 epoch.
Paper values: not available offline, so none are quoted.
"""
from __future__ import annotations

import dataclasses
import json
import pathlib
import time

from experiments.base import Experiment, ExperimentResult, fmt
from experiments.sdi_cifar10 import EPS, best_state, load_cifar10_split, robust_eval, train_one

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
    data: str = "cifar10-test-split"


SCALES = {
    "paper": KScale("resnet18", "piecewise", 110, None, 10_000, data="cifar10",
                    attacks=("pgd10", "pgd20", "pgd50", "cw20", "aa")),
    "cpu": KScale("resnet20", "cyclic", 4, 9000, 500),
    "quick": KScale("resnet20", "cyclic", 1, 1000, 200, ks=(1, 20), attacks=("pgd10",)),
}


def run(scale: str = "cpu", quick: bool = False, out_dir=".", seed: int = 0) -> ExperimentResult:
    key = "quick" if quick else scale
    if key not in SCALES:
        raise ValueError(f"sdi-k: unknown scale {scale!r}; use one of {sorted(set(SCALES) - {'quick'})}")
    sc = SCALES[key]
    out_dir = pathlib.Path(out_dir)
    (x_tr, y_tr), (x_te, y_te) = load_cifar10_split(sc.n_train, sc.data)
    x_ev, y_ev = x_te[:sc.n_eval], y_te[:sc.n_eval]
    rows, metrics = [], {"runs": {}}
    for k in sc.ks:
        t0 = time.time()
        res = train_one(out_dir / "runs" / f"k{k}", "fgsm_sdi", {"eps": EPS, "alpha": EPS, "k": k},
                        model=sc.model, train=(x_tr, y_tr), test=(x_ev, y_ev), epochs=sc.epochs,
                        schedule=sc.schedule, monitor_size=min(500, sc.n_eval), seed=seed)
        secs = time.time() - t0
        train_s = sum(len(x_tr) // 128 * 128 / h["images_per_s"] for h in res.history)
        best = robust_eval(best_state(res), x_ev, y_ev, sc.attacks, seed=seed)
        last = robust_eval(res.state, x_ev, y_ev, sc.attacks, seed=seed)
        metrics["runs"][str(k)] = {"best": best, "last": last, "train_seconds": train_s,
                                   "wall_seconds": secs, "history": res.history}
        rows.append((k, best, last, train_s / sc.epochs))
        (out_dir / "partial.json").write_text(json.dumps(metrics, indent=1, default=float))
    cols = ["clean"] + list(sc.attacks)
    head = ["k"] + [f"best {c}" for c in cols] + [f"last {c}" for c in cols] + ["train s/epoch"]
    md = [f"Scale `{key}`: FGSM-SDI on {sc.model}, {len(x_tr)} training images, {sc.epochs} epochs "
          f"({sc.schedule}), accuracy (%) on {len(x_ev)} held-out images, eps = 8/255.", "",
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
    expected_runtime={"quick": "~5 min on 2 shared cores", "cpu": "~3-5 h on 2 cores",
                      "paper": "days on CPU (6 x 110 epochs of ResNet-18)"},
    paper_values={},
    run=run,
)
