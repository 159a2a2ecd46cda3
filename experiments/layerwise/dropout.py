"""layerwise-dropout: Table 5 of Sankaranarayanan et al. 2018 -- VGG-BN with and without dropout,
baseline vs perturbed (Ours-orig), clean accuracy, no augmentation.

Dropout: ``VGG(dropout=0.5)`` before the classifier (the Torch VGG-BN also drops inside the conv
blocks; the paper gives no rates). The baseline WITH dropout is ``layerwise`` at eps = 0 (the
standard cross-entropy step, bit for bit the same loss: every perturbation is 0) because the
engine's standard method passes no dropout key; the baseline without dropout is ``standard``.
CIFAR-100 is not on these machines: the cpu scale runs CIFAR-10 only (paper scale: both)."""
from __future__ import annotations

from experiments import claims as CL
from experiments.base import Experiment, ExperimentResult, fmt
from experiments.layerwise import _common as C
from experiments.layerwise import paper_values as P

DROPOUT = 0.5


def run(scale: str = "cpu", quick: bool = False, out_dir=".", seed: int = 0) -> ExperimentResult:
    sc = C.pick_scale(scale, quick)
    data = C.load_data(sc)
    _, (x_te, y_te) = data
    out = {}
    for drop in (False, True):
        mkw = {"dropout": DROPOUT} if drop else {}
        row = {}
        for col, (name, kw) in (("Baseline", ("layerwise", {"eps": 0.0}) if drop else ("standard", {})),
                                ("Perturbed", ("layerwise", {"eps": C.LAYER_EPS}))):
            label = f"{col}{'-dropout' if drop else ''}"
            res = C.train(out_dir, label, sc, data, name, kw, seed=seed, model_kwargs=mkw)
            row[col] = C.cached(out_dir, "clean", {"label": label, "step": int(res.state.step), "n": len(x_te)},
                                lambda: C.fgs_accuracy(res.state.model, res.state.variables(), x_te, y_te,
                                                       (0.0,))[0.0])
        out["with dropout" if drop else "w/o dropout"] = row
    lines = ["| CIFAR-10 | Baseline | Perturbed |", "|---|---|---|"]
    for k, row in out.items():
        p = P.TABLE5["cifar10"][k]
        lines.append(f"| {k} | {fmt(row['Baseline'])} ({fmt(p[0])}) | {fmt(row['Perturbed'])} ({fmt(p[1])}) |")
    nums = {f"{k} {c}": v for k, row in out.items() for c, v in row.items()}
    claims = [
        CL.Claim("the perturbed model beats the baseline without dropout", "Table 5",
                 CL.greater("w/o dropout Perturbed", "w/o dropout Baseline"), "91.3 vs 89.4"),
        CL.Claim("... and with dropout (it complements dropout)", "Table 5",
                 CL.greater("with dropout Perturbed", "with dropout Baseline"), "92.1 vs 91.5"),
        CL.Claim("perturbation without dropout beats dropout alone", "Table 5",
                 CL.greater("w/o dropout Perturbed", "with dropout Baseline"), "C-10 91.3 vs 91.5 (no); C-100 72.3 vs 70.5"),
    ]
    noise = C.accuracy_se(len(x_te))
    verdicts = CL.decide_all(claims, [nums], noise=noise)
    md = C.header(sc, "## Table 5: with / without dropout, clean accuracy (%)",
                  f"Dropout {DROPOUT} before the classifier only. CIFAR-100 (the paper's right half: "
                  f"{P.TABLE5['cifar100']}) is not available on these machines.")
    md += "\n" + "\n".join(lines) + "\n\n"
    md += ("**Claims** (" + CL.summary(verdicts) + f"; one run, noise = binomial s.e. {noise:.2f} points):\n\n"
           + CL.table(verdicts) + "\n")
    return ExperimentResult(markdown=md, config={"scale": sc.describe(), "dropout": DROPOUT},
                            metrics={"table": out, "paper": P.TABLE5})


EXPERIMENT = Experiment(
    name="layerwise-dropout",
    description="Layerwise AT, Table 5: baseline vs perturbed, with and without dropout (VGG-BN)",
    paper='Sankaranarayanan et al., "Regularizing deep networks using efficient layerwise adversarial '
          'training", AAAI 2018, Table 5',
    expected_runtime={"cpu": "about 20-30 min on 2 idle cores (4 runs x 12 epochs); 13.5 min measured when layerwise-cifar10's two no-dropout runs exist (session 10)",
                      "quick": "4-10 min (mostly compilation)",
                      "paper": "days on one accelerator (8 x 300 epochs, CIFAR-10 and -100)"},
    paper_values={"table5": P.TABLE5},
    run=run,
)
