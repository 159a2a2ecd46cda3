"""sdi-overfitting: catastrophic overfitting of FGSM-RS vs FGSM-SDI, per-epoch curves (thesis Fig. 26/27).

Jia et al., IEEE TIP 2022 (thesis ch. 3, Fig. 26: PGD-10 accuracy on training and test data per
epoch; Fig. 27: attack success rate of the training adversarial examples). Catastrophic
overfitting (Wong et al. 2020): FGSM-RS's PGD accuracy collapses to ~0 within an epoch while its
FGSM training accuracy jumps up. It appears reliably at large eps / step size, so the CPU scale
uses eps = 16/255 with FGSM-RS's step alpha = 1.25 eps = 20/255, a constant-peak cyclic schedule
and no early stopping; FGSM-SDI runs with the same eps (alpha = eps, k = 20). PGD-2-AT (alpha =
eps/2) is the multi-step reference curve at ``cpu`` scale; the paper scale adds PGD-10-AT and uses
eps = 8/255 on ResNet-18 / CIFAR-10 (110 epochs).

Outputs: ``overfitting.png`` (test and training-subset PGD-10 accuracy per epoch, one line per
method, and FGSM-SDI's attack success rate with the others' adversarial training error) and a
table of the per-epoch numbers. Whether FGSM-RS collapsed is detected and stated, never assumed.
"""
from __future__ import annotations

import dataclasses
import json
import pathlib

from experiments.base import Experiment, ExperimentResult, fmt
from experiments.sdi_cifar10 import load_cifar10_split, train_one


@dataclasses.dataclass(frozen=True)
class OFScale:
    model: str
    eps: float
    epochs: int
    n_train: int | None
    monitor: int
    schedule: str = "cyclic"
    lr: float = 0.2
    methods: tuple = ("FGSM-RS", "FGSM-SDI", "PGD-2-AT")
    data: str = "cifar10-test-split"


SCALES = {
    "paper": OFScale("resnet18", 8 / 255, 110, None, 1000, schedule="piecewise", lr=0.1, data="cifar10",
                     methods=("FGSM-RS", "FGSM-SDI", "PGD-2-AT", "PGD-AT")),
    "cpu": OFScale("resnet20", 16 / 255, 10, 9000, 500),
    "quick": OFScale("resnet20", 16 / 255, 2, 1000, 200, methods=("FGSM-RS", "FGSM-SDI")),
}


def _methods(eps):
    return {
        "FGSM-RS": ("fgsm_rs", {"eps": eps, "alpha": 1.25 * eps}),
        "FGSM-SDI": ("fgsm_sdi", {"eps": eps, "alpha": eps, "k": 20}),
        "PGD-2-AT": ("pgd_at", {"eps": eps, "alpha": eps / 2, "steps": 2}),
        "PGD-AT": ("pgd_at", {"eps": eps, "alpha": 2 / 255, "steps": 10}),
    }


def collapsed(history, drop: float = 0.2) -> int | None:
    """First epoch whose test PGD accuracy fell by >= ``drop`` (absolute) below the best so far,
    to under 5% -- the catastrophic-overfitting signature; None if it never happens."""
    best = 0.0
    for h in history:
        acc = h["test_pgd_acc"]
        if best - acc >= drop and acc < 0.05:
            return h["epoch"]
        best = max(best, acc)
    return None


def plot(histories: dict, path, eps: float) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for i, (name, hist) in enumerate(histories.items()):
        ep = [h["epoch"] for h in hist]
        c = f"C{i}"
        axes[0].plot(ep, [100 * h["test_pgd_acc"] for h in hist], c + "-o", label=f"{name} test")
        axes[0].plot(ep, [100 * h["test_clean_acc"] for h in hist], c + ":", label=f"{name} test clean")
        axes[1].plot(ep, [100 * h["train_pgd_acc"] for h in hist], c + "-o", label=f"{name} train subset")
        if "train_attack_success_rate" in hist[0]:
            axes[2].plot(ep, [100 * h["train_attack_success_rate"] for h in hist], c + "-o",
                         label=f"{name} attack success rate")
        else:
            axes[2].plot(ep, [100 * (1 - h.get("train_acc", float("nan"))) for h in hist], c + "--",
                         label=f"{name} adv. training error")
    axes[0].set(title=f"test PGD-10 accuracy (eps={eps * 255:.0f}/255)", xlabel="epoch", ylabel="%")
    axes[1].set(title="training-subset PGD-10 accuracy", xlabel="epoch", ylabel="%")
    axes[2].set(title="training adversarial examples", xlabel="epoch", ylabel="%")
    for a in axes:
        a.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def run(scale: str = "cpu", quick: bool = False, out_dir=".", seed: int = 0) -> ExperimentResult:
    key = "quick" if quick else scale
    if key not in SCALES:
        raise ValueError(f"sdi-overfitting: unknown scale {scale!r}; use one of {sorted(set(SCALES) - {'quick'})}")
    sc = SCALES[key]
    out_dir = pathlib.Path(out_dir)
    (x_tr, y_tr), (x_te, y_te) = load_cifar10_split(sc.n_train, sc.data)
    methods = _methods(sc.eps)
    histories, metrics = {}, {"runs": {}}
    for label in sc.methods:
        name, kw = methods[label]
        res = train_one(out_dir / "runs" / name / label.replace(" ", "_"), name, kw, model=sc.model,
                        train=(x_tr, y_tr), test=(x_te, y_te), epochs=sc.epochs, schedule=sc.schedule,
                        lr=sc.lr, monitor_size=sc.monitor, seed=seed, eval_eps=sc.eps)
        histories[label] = res.history
        metrics["runs"][label] = {"history": res.history, "collapse_epoch": collapsed(res.history)}
        (out_dir / "partial.json").write_text(json.dumps(metrics, indent=1, default=float))
    plot(histories, out_dir / "overfitting.png", sc.eps)
    md = [f"Scale `{key}`: {sc.model}, {len(x_tr)} training images, eps = {sc.eps * 255:.0f}/255, "
          f"{sc.epochs} epochs {sc.schedule} (peak lr {sc.lr}), no early stopping; PGD-10 (step eps/4) on "
          f"{sc.monitor} training and {sc.monitor} held-out images after every epoch.", ""]
    for label, hist in histories.items():
        ce = metrics["runs"][label]["collapse_epoch"]
        md.append(f"- {label}: " + ("no catastrophic overfitting seen" if ce is None
                                    else f"catastrophic overfitting at epoch {ce}"))
    md += ["", "| method | epoch | train PGD-10 | test clean | test PGD-10 |", "|---|---|---|---|---|"]
    for label, hist in histories.items():
        for h in hist:
            md.append(f"| {label} | {h['epoch']} | {fmt(100 * h['train_pgd_acc'])} | "
                      f"{fmt(100 * h['test_clean_acc'])} | {fmt(100 * h['test_pgd_acc'])} |")
    return ExperimentResult(markdown="\n".join(md), config={"scale": key, **dataclasses.asdict(sc), "seed": seed},
                            metrics=metrics, plots=("overfitting.png",))


EXPERIMENT = Experiment(
    name="sdi-overfitting",
    description="Catastrophic overfitting: FGSM-RS collapses, FGSM-SDI does not (thesis Fig. 26/27)",
    paper='Jia et al., "Boosting Fast Adversarial Training with Learnable Adversarial Initialization", '
          "IEEE TIP 2022; thesis ch. 3, Fig. 26-27",
    expected_runtime={"quick": "~5 min on 2 shared cores", "cpu": "~2-3 h on 2 cores",
                      "paper": "days on CPU"},
    paper_values={},
    run=run,
)
