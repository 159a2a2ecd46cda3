"""sdi-overfitting: catastrophic overfitting of FGSM-RS vs FGSM-SDI, per-epoch curves (thesis Fig. 26/27).

Jia et al., IEEE TIP 2022 (thesis ch. 3, Fig. 26: PGD-10 accuracy on training and test data per
epoch; Fig. 27: attack success rate of the training adversarial examples). Catastrophic
overfitting (Wong et al. 2020): FGSM-RS's PGD accuracy collapses to ~0 while its accuracy on its
own training adversarial examples keeps rising. FGSM-SDI runs with the same eps (alpha = eps,
k = 20), FGSM-RS with alpha = 1.25 eps, PGD-2-AT (alpha = eps / 2) is the multi-step reference;
no early stopping. The paper scale adds PGD-10-AT and uses eps = 8/255 on ResNet-18 / CIFAR-10
(110 epochs).

Finding a CPU setting where FGSM-RS collapses (measured 2026-11-22, seed 0):
* ResNet-20 on 9000 CIFAR-10 images (scale ``cifar-cpu``), eps = 16/255, SGD one-cycle peak 0.2,
  10 epochs: no collapse. The model barely learned (test clean 35%, PGD-10 22% at the end).
* Model B on MNIST (8000 training images), eps = 0.3, alpha = 0.5, Adam one-cycle peak 5e-3:
  no collapse in 10 epochs (test PGD-10 17% -> 45%).
* The same at eps = 0.4, alpha = 0.5 (scale ``cpu``): **FGSM-RS collapses**. From epoch 2 its
  test PGD-10 accuracy stays at 0.0-1.4%, while its accuracy on its own training examples climbs
  from 23% to 97% (clean 97%). FGSM-SDI at the same eps ends at 15-16% test PGD-10. It dips to
  2-3% around epochs 6-8 and then recovers, which the detector does not count as a collapse.
  PGD-2-AT (alpha = eps / 2) takes off at epoch 7 and ends at 68.0% (clean 96.6%), so robustness
  at eps = 0.4 is reachable in this budget. FGSM-SDI avoids the collapse but stays far below
  PGD-2-AT here. (Runner output, ``advjax reproduce sdi-overfitting``: 35 min on 2 shared cores.)

Outputs: ``overfitting.png`` (test and training-subset PGD-10 accuracy per epoch, one line per
method, and FGSM-SDI's attack success rate with the others' adversarial training error) and a
table of the per-epoch numbers. Whether FGSM-RS collapsed is detected and stated, never assumed.
"""
from __future__ import annotations

import dataclasses
import json
import pathlib

import jax
import numpy as np

from experiments import claims as C
from experiments.base import Experiment, ExperimentResult, fmt
from experiments.sdi import paper_values as PV
from experiments._shared_data import load_local
from experiments.sdi.cifar10 import load_cifar10_split, optimizer_config, train_one


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
    data: str = "cifar10-test-split"   # or "mnist-test-split"
    optimizer: str = "momentum"        # "momentum" (SGD, wd 5e-4) or "adam"
    batch_size: int = 128
    augment: bool = True


SCALES = {
    "paper": OFScale("resnet18", 8 / 255, 110, None, 1000, schedule="piecewise", lr=0.1, data="cifar10",
                     methods=("FGSM-RS", "FGSM-SDI", "PGD-2-AT", "PGD-AT")),
    # Model B on MNIST (test split, 8000 / 2000), eps 0.4, Adam one-cycle peak 5e-3, batch 100:
    # the CPU setting where FGSM-RS was seen to collapse (see the module docstring)
    "cpu": OFScale("model_b", 0.4, 12, 8000, 500, lr=5e-3, data="mnist-test-split", optimizer="adam",
                   batch_size=100, augment=False),
    # tried first: ResNet-20 on 9000 CIFAR-10 images, eps 16/255, 10 epochs; FGSM-RS did not collapse
    "cifar-cpu": OFScale("resnet20", 16 / 255, 10, 9000, 500),
    "quick": OFScale("model_b", 0.4, 2, 1000, 200, lr=5e-3, data="mnist-test-split", optimizer="adam",
                     batch_size=100, augment=False, methods=("FGSM-RS", "FGSM-SDI")),
}


def _methods(eps):
    return {
        "FGSM-RS": ("fgsm_rs", {"eps": eps, "alpha": 1.25 * eps}),
        "FGSM-SDI": ("fgsm_sdi", {"eps": eps, "alpha": eps, "k": 20}),
        "PGD-2-AT": ("pgd_at", {"eps": eps, "alpha": eps / 2, "steps": 2}),
        "PGD-AT": ("pgd_at", {"eps": eps, "alpha": 2 / 255, "steps": 10}),
    }


def eps_str(eps: float) -> str:
    """8/255-style for image eps that are multiples of 1/255, else the number (MNIST's 0.4)."""
    k = eps * 255
    return f"{k:.0f}/255" if abs(k - round(k)) < 1e-6 and k < 64 else f"{eps:g}"


def load_split(sc: OFScale):
    """(x_train, y_train), (x_test, y_test): CIFAR-10 as ``sdi-cifar10`` does, or MNIST's test split
    (the only MNIST images on these machines) shuffled with a fixed seed, ``n_train`` / the rest."""
    if not sc.data.startswith("mnist"):
        return load_cifar10_split(sc.n_train, sc.data)
    import numpy as np

    ds = load_local("mnist", "test", shuffle_seed=0)
    x, y = np.asarray(ds.x), np.asarray(ds.y, np.int32)
    n = sc.n_train or 8000
    return (x[:n], y[:n]), (x[n:], y[n:])


def _optimizer(sc: OFScale):
    from advjax.train.optim import OptimizerConfig

    if sc.optimizer == "adam":  # Wong et al.'s MNIST setting: Adam, one cycle peaking mid-run
        return OptimizerConfig(name="adam", lr=sc.lr, schedule=sc.schedule, cycle_peak=0.5)
    return optimizer_config(sc.schedule, sc.epochs, sc.lr)


def collapsed(history, drop: float = 0.2, gap: float = 0.6, floor: float = 0.05) -> int | None:
    """First epoch of catastrophic overfitting, None if the run shows none.

    An epoch shows the signature if (a) the test PGD-10 accuracy fell by >= ``drop`` (absolute)
    below its best so far, to under ``floor``; or (b) the model classifies its own training
    adversarial examples correctly (``train_acc``, the training step's accuracy) at least ``gap``
    more often than PGD-10 examples of the same training data, whose accuracy is under ``floor``
    (Wong et al. 2020: FGSM fits, PGD fails; this catches runs that collapse before they were ever
    robust). It counts as a collapse only if the run never recovers: the test PGD-10 accuracy stays
    under ``floor`` in every later epoch. (FGSM-SDI on MNIST at eps 0.4 shows the signature
    for an epoch, then climbs to 15%.)"""
    best = 0.0
    for i, h in enumerate(history):
        acc = h["test_pgd_acc"]
        own = h.get("train_acc")
        sign_a = best - acc >= drop and acc < floor
        sign_b = own is not None and own - h["train_pgd_acc"] >= gap and h["train_pgd_acc"] < floor
        if (sign_a or sign_b) and all(later["test_pgd_acc"] < floor for later in history[i + 1:]):
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
    axes[0].set(title=f"test PGD-10 accuracy (eps={eps_str(eps)})", xlabel="epoch", ylabel="%")
    axes[1].set(title="training-subset PGD-10 accuracy", xlabel="epoch", ylabel="%")
    axes[2].set(title="training adversarial examples", xlabel="epoch", ylabel="%")
    for a in axes:
        a.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def fig26_claims(methods) -> list:
    """The statements of Sec. 3.4.3 about Fig. 26 over the numbers ``collapsed/<m>`` (1 or -1),
    ``final_test/<m>``, ``final_train/<m>`` (PGD-10 %, last epoch)."""
    f = PV.FIG26
    out = []
    if "FGSM-RS" in methods:
        out.append(C.Claim("FGSM-RS overfits catastrophically: its PGD-10 accuracy drops to ~0 and stays there",
                           "Fig. 26 / Sec. 3.4.3", lambda d: d["collapsed/FGSM-RS"],
                           f"after about epoch {f['FGSM-RS collapse epoch (about)']} of 110", unit="(+1 yes / -1 no)"))
    if "FGSM-SDI" in methods:
        out.append(C.Claim("FGSM-SDI does not overfit catastrophically", "Fig. 26 / Sec. 3.4.3",
                           lambda d: -d["collapsed/FGSM-SDI"], "no collapse in 110 epochs", unit="(+1 yes / -1 no)"))
    ref = next((m for m in ("PGD-AT", "PGD-2-AT") if m in methods), None)
    if ref and "FGSM-SDI" in methods:
        out.append(C.Claim(f"FGSM-SDI's final test PGD-10 accuracy is comparable to the multi-step {ref}'s (within 2 "
                           "points)", "Fig. 26 / Sec. 3.4.3", C.near("final_test/FGSM-SDI", f"final_test/{ref}", 2.0),
                           f"{f['FGSM-SDI train / test PGD-10'][1]} vs {f['PGD-AT train / test PGD-10'][1]} (PGD-AT)"))
    return out


def render_claims(histories: dict, n_monitor: int) -> list[str]:
    nums, rows = {}, []
    for label, hist in histories.items():
        nums[f"collapsed/{label}"] = 1.0 if collapsed(hist) is not None else -1.0
        nums[f"final_test/{label}"] = 100 * hist[-1]["test_pgd_acc"]
        nums[f"final_train/{label}"] = 100 * hist[-1]["train_pgd_acc"]
        key = {"PGD-2-AT": None}.get(label, f"{label} train / test PGD-10")
        pv = PV.FIG26.get(key) if key else None
        rows.append(f"| {label} | {fmt(nums[f'final_train/{label}'])} ({fmt(pv[0]) if pv else '–'}) | "
                    f"{fmt(nums[f'final_test/{label}'])} ({fmt(pv[1]) if pv else '–'}) |")
    cl = fig26_claims(list(histories))
    exact = [c for c in cl if c.text.startswith(("FGSM-RS overfits", "FGSM-SDI does not"))]
    acc = [c for c in cl if c not in exact]
    noise = C.accuracy_diff_se(50.0, 50.0, n_monitor)
    verdicts = C.decide_all(exact, [nums], noise=0.5) + C.decide_all(acc, [nums], noise=noise)
    return ["### Final-epoch PGD-10 accuracy, ours (the thesis' Sec. 3.4.3 numbers for Fig. 26: ResNet-18, CIFAR-10, "
            "best epoch)", "", "| method | train PGD-10 | test PGD-10 |", "|---|---|---|", *rows, "",
            "### The thesis' statements about Fig. 26, decided from this run", "",
            f"Collapse verdicts come from the detector above (exact); accuracy margins are compared with the binomial "
            f"standard error of a difference on {n_monitor} monitor images ({noise:.2f} points).", "",
            C.table(verdicts), "", f"Summary: {C.summary(verdicts)}.", ""]


def landscapes(states: dict, x_te, y_te, eps: float, path, *, n: int = 4, seed: int = 0) -> dict:
    """Loss landscapes (advjax.analysis.landscape) of each final model on the same ``n`` held-out
    images; writes the plot of the first image and returns each model's mean roughness."""
    from advjax import models
    from advjax.analysis import landscape

    x = np.asarray(x_te[:n])
    x = (x.astype(np.float32) / 255.0) if x.dtype == np.uint8 else x.astype(np.float32)
    y = np.asarray(y_te[:n], np.int32)
    lss = {label: landscape.loss_landscape(models.logits_fn(st.model), st.variables(), x, y, jax.random.PRNGKey(seed),
                                           radius=2 * eps, steps=21, domain=(0.0, 1.0))
           for label, st in states.items()}
    landscape.plot_landscapes(lss, path, eps_unit=1 / 255,
                              title=f"loss around a held-out image (± {2 * eps * 255:.0f}/255 along FGSM / random)")
    return {label: float(np.mean(landscape.roughness(v))) for label, v in lss.items()}


def run(scale: str = "cpu", quick: bool = False, out_dir=".", seed: int = 0) -> ExperimentResult:
    key = "quick" if quick else scale
    if key not in SCALES:
        raise ValueError(f"sdi-overfitting: unknown scale {scale!r}; use one of {sorted(set(SCALES) - {'quick'})}")
    sc = SCALES[key]
    out_dir = pathlib.Path(out_dir)
    (x_tr, y_tr), (x_te, y_te) = load_split(sc)
    methods = _methods(sc.eps)
    histories, metrics, states = {}, {"runs": {}}, {}
    for label in sc.methods:
        name, kw = methods[label]
        res = train_one(out_dir / "runs" / name / label.replace(" ", "_"), name, kw, model=sc.model,
                        train=(x_tr, y_tr), test=(x_te, y_te), epochs=sc.epochs, schedule=sc.schedule,
                        lr=sc.lr, monitor_size=sc.monitor, seed=seed, eval_eps=sc.eps, eval_alpha=sc.eps / 4,
                        batch_size=sc.batch_size, augment=sc.augment, optimizer=_optimizer(sc),
                        dataset="mnist" if sc.data.startswith("mnist") else "cifar10")
        histories[label] = res.history
        if getattr(res, "state", None) is not None:
            states[label] = res.state
        metrics["runs"][label] = {"history": res.history, "collapse_epoch": collapsed(res.history)}
        (out_dir / "partial.json").write_text(json.dumps(metrics, indent=1, default=float))
    plot(histories, out_dir / "overfitting.png", sc.eps)
    rough = landscapes(states, x_te, y_te, sc.eps, out_dir / "loss_landscapes.png", seed=seed) if states else {}
    metrics["landscape_roughness"] = rough
    differs = ("the thesis' setting" if key == "paper" else
               f"what differs from the thesis' setting (ResNet-18, 50k CIFAR-10 images, eps 8/255, 110 epochs "
               f"piecewise, PGD-10-AT as the multi-step reference): {sc.model}, {len(x_tr)} training images "
               f"({sc.data}), eps {eps_str(sc.eps)}, {sc.epochs} epochs {sc.schedule}"
               + (", PGD-2-AT as the multi-step reference" if "PGD-AT" not in sc.methods else "") + ", one seed")
    md = [f"**Scale: `{key}`**: {differs}. No early stopping; PGD-10 (step eps/4) on {sc.monitor} training and "
          f"{sc.monitor} held-out images after every epoch.", ""]
    for label, hist in histories.items():
        ce = metrics["runs"][label]["collapse_epoch"]
        md.append(f"- {label}: " + ("no catastrophic overfitting seen" if ce is None
                                    else f"catastrophic overfitting at epoch {ce}"))
    md += [""] + render_claims(histories, sc.monitor)
    md += ["", f"Loss landscapes of the final models (`loss_landscapes.png`, Li et al. style, the thesis' Fig. 32 tool): "
           f"the loss around held-out images along their FGSM direction and a random orthogonal one, radius 2 eps; "
           f"a model after catastrophic overfitting shows a distorted, non-linear landscape. Roughness (mean "
           f"|discrete Laplacian| over 4 images, lower is smoother): "
           + ", ".join(f"{k} {v:.3g}" for k, v in rough.items()) + "."]
    if key == "quick":
        from experiments.sdi._render import QUICK_NOTE

        md += [QUICK_NOTE]
    md += ["", "| method | epoch | train PGD-10 | test clean | test PGD-10 |", "|---|---|---|---|---|"]
    for label, hist in histories.items():
        for h in hist:
            md.append(f"| {label} | {h['epoch']} | {fmt(100 * h['train_pgd_acc'])} | "
                      f"{fmt(100 * h['test_clean_acc'])} | {fmt(100 * h['test_pgd_acc'])} |")
    return ExperimentResult(markdown="\n".join(md), config={"scale": key, **dataclasses.asdict(sc), "seed": seed},
                            metrics=metrics, plots=("overfitting.png",) + (("loss_landscapes.png",) if rough else ()))


EXPERIMENT = Experiment(
    name="sdi-overfitting",
    description="Catastrophic overfitting: FGSM-RS collapses, FGSM-SDI does not (thesis Fig. 26/27)",
    paper='Jia et al., "Boosting Fast Adversarial Training with Learnable Adversarial Initialization", '
          "IEEE TIP 2022; thesis ch. 3, Fig. 26-27",
    expected_runtime={"quick": "~3 min on 2 cores", "cpu": "~35 min on 2 shared cores (FGSM-RS ~5, "
                      "FGSM-SDI ~18, PGD-2-AT ~12 min)", "cifar-cpu": "~2-3 h on 2 cores (ResNet-20, 3 x 10 epochs)",
                      "paper": "days on CPU"},
    paper_values={"Fig. 26 (Sec. 3.4.3 statements)": PV.FIG26},
    run=run,
    scales=("cpu", "cifar-cpu", "paper"),
)
