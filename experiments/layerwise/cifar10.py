"""layerwise-cifar10: Table 4 of Sankaranarayanan et al. 2018 -- Baseline, FGS-orig, FGS-inter,
Ours-orig and Ours-joint on VGG-BN / CIFAR-10: accuracy under FGS at eps 0, 0.02, ..., 0.1, and
each method's training-step time as a ratio to the baseline's, measured in the same process
(round-robin, median of rounds) on one training batch.

Table 3 (VGG / ResNet-20 / ResNet-56 on CIFAR-10 and -100) has no experiment: its body is missing
from our copy of the paper. Its configurations are in ``_common.PAPER_CONFIGS``.
"""
from __future__ import annotations

import pathlib

from experiments import claims as CL
from experiments.base import Experiment, ExperimentResult, fmt
from experiments.layerwise import _common as C
from experiments.layerwise import paper_values as P


def run(scale: str = "cpu", quick: bool = False, out_dir=".", seed: int = 0) -> ExperimentResult:
    sc = C.pick_scale(scale, quick)
    data = C.load_data(sc)
    (x_tr, y_tr), (x_te, y_te) = data
    table, raw = {}, {}
    model = None
    for label, (name, kw) in C.METHODS.items():
        res = C.train(out_dir, label, sc, data, name, kw, seed=seed)
        model = res.state.model
        acc = C.cached(out_dir, "fgs", {"label": label, "step": int(res.state.step), "n": len(x_te)},
                       lambda: {str(k): v for k, v in C.fgs_accuracy(model, res.state.variables(), x_te, y_te).items()})
        table[label] = [acc[str(float(e))] for e in C.FGS_EPS]
        raw[label] = res.history
    C.log("timing the training steps (round-robin, one batch)")
    times = C.step_time_ratios(model, C.METHODS, x_tr[:sc.batch_size], y_tr[:sc.batch_size],
                               rounds=3 if quick else 7)

    head = ["method"] + [f"eps={e:g}" for e in C.FGS_EPS] + ["time (x baseline)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for label, accs in table.items():
        cells = [f"{fmt(a)} ({fmt(p)})" for a, p in zip(accs, P.TABLE4[label])]
        cells.append(f"{times['ratio'][label]:.2f} ({P.TABLE4_TIME[label]:g}x)")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")

    nums = {f"{k}@{e:g}": v for k, accs in table.items() for e, v in zip(C.FGS_EPS, accs)}
    nums.update({f"{k} robust": sum(a[1:]) / (len(a) - 1) for k, a in table.items()})
    nums.update({f"{k} time": v for k, v in times["ratio"].items()})
    claims = [
        CL.Claim("perturbing hidden layers (Ours-orig) raises clean accuracy over the baseline", "Table 4",
                 CL.greater("Ours-orig@0", "Baseline@0"), "91.2 vs 89.4"),
        CL.Claim("... and so do FGS-inter and Ours-joint", "Table 4",
                 lambda d: min(d["FGS-inter@0"], d["Ours-joint@0"]) - d["Baseline@0"], "90.9, 91.5 vs 89.4"),
        CL.Claim("FGS-orig gives the best FGS robustness (mean over eps 0.02-0.1)", "Table 4",
                 CL.is_max("FGS-orig robust", [f"{k} robust" for k in table]), "81.9 vs <= 79.2"),
        CL.Claim("Ours-orig costs about what the baseline costs (step time <= 1.1x the standard step's)",
                 "Table 4", CL.below("Ours-orig time", 1.1), "X vs X", unit="(ratio)"),
    ]
    noise = C.accuracy_se(len(x_te))
    verdicts = CL.decide_all(claims[:3], [nums], noise=noise) + CL.decide_all(claims[3:], [nums], noise=0.0)

    md = C.header(sc, "## Table 4: training strategies, accuracy (%) under FGS",
                  "Time: seconds per training step / the standard step's, measured here in one process "
                  "(the paper's column is an estimate: X or 2x).")
    md += "\n" + "\n".join(lines) + "\n\n"
    md += ("Step times (s): " + ", ".join(f"{k} {v:.3f}" for k, v in times["seconds"].items()) + "\n\n")
    md += ("**Claims** (" + CL.summary(verdicts) + f"; one run, noise = binomial s.e. {noise:.2f} points on "
           f"{len(x_te)} images):\n\n" + CL.table(verdicts) + "\n")
    C.plot_fgs_curves(pathlib.Path(out_dir) / "fgs_accuracy.png", table, P.TABLE4,
                      title=f"Table 4 at scale {sc.name}: ours (solid) vs the paper (dashed)")
    md += "\n![accuracy under FGS vs eps](fgs_accuracy.png)\n"
    return ExperimentResult(markdown=md, config={"scale": sc.describe(), "methods": C.METHODS, "eps": C.FGS_EPS},
                            metrics={"table": table, "time": times, "paper": P.TABLE4}, plots=["fgs_accuracy.png"])


EXPERIMENT = Experiment(
    name="layerwise-cifar10",
    description="Layerwise AT, Table 4: Baseline / FGS-orig / FGS-inter / Ours-orig / Ours-joint under FGS + time",
    paper='Sankaranarayanan et al., "Regularizing deep networks using efficient layerwise adversarial '
          'training", AAAI 2018, Table 4',
    expected_runtime={"cpu": "36 min measured on 2 cores shared with a test run (8 standard-step units x 12 epochs; session 10)",
                      "quick": "5-17 min (17 min measured on a heavily shared machine, mostly compilation)", "paper": "days on one accelerator (5 x 300 epochs)"},
    paper_values={"table4": P.TABLE4, "time": P.TABLE4_TIME},
    run=run,
)
