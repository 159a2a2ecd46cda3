"""layerwise-depth: Table 6 of Sankaranarayanan et al. 2018 -- Ours-orig perturbing conv1 up to
pool k (k = 1..5: the points of VGG stages 1..k, ``LayerwiseAT(stages=k)``) against the baseline,
clean CIFAR-10 test accuracy, no augmentation or dropout."""
from __future__ import annotations

from experiments import claims as CL
from experiments.base import Experiment, ExperimentResult, fmt
from experiments.layerwise import _common as C
from experiments.layerwise import paper_values as P


def run(scale: str = "cpu", quick: bool = False, out_dir=".", seed: int = 0) -> ExperimentResult:
    sc = C.pick_scale(scale, quick)
    data = C.load_data(sc)
    _, (x_te, y_te) = data

    def clean(label, name, kw):
        res = C.train(out_dir, label, sc, data, name, kw, seed=seed)
        return C.cached(out_dir, "clean", {"label": label, "step": int(res.state.step), "n": len(x_te)},
                        lambda: C.fgs_accuracy(res.state.model, res.state.variables(), x_te, y_te, (0.0,))[0.0])

    base = clean("Baseline", "standard", {})
    accs = {k: clean(f"Ours-orig-stages{k}", "layerwise", {"eps": C.LAYER_EPS, "stages": k}) for k in sc.depth_stages}
    lines = ["| layers perturbed (conv1 to) | " + " | ".join(f"pool{k}" for k in accs) + " |",
             "|---|" + "---|" * len(accs),
             "| accuracy | " + " | ".join(f"{fmt(a)} ({fmt(P.TABLE6[k])})" for k, a in accs.items()) + " |"]
    nums = {"baseline": base, **{f"pool{k}": a for k, a in accs.items()}}
    first, last = min(accs), max(accs)
    claims = [
        CL.Claim(f"gains grow with depth: perturbing up to pool{last} beats up to pool{first}", "Table 6",
                 CL.greater(f"pool{last}", f"pool{first}"), f"{P.TABLE6[last]} vs {P.TABLE6[first]}"),
        CL.Claim(f"perturbing all layers (pool{last}) beats the baseline", "Table 6",
                 CL.greater(f"pool{last}", "baseline"), f"{P.TABLE6[last]} vs {P.TABLE6_BASELINE}"),
    ]
    if len(accs) > 2:
        ks = sorted(accs)
        claims.append(CL.Claim("... monotonically (every step k -> k+1 is >= 0; margin: the worst step)", "Table 6",
                               lambda d: min(d[f"pool{b}"] - d[f"pool{a}"] for a, b in zip(ks, ks[1:])),
                               "89.5 < 89.62 < 90.24 < 91.1 < 91.3"))
    noise = C.accuracy_se(len(x_te))
    verdicts = CL.decide_all(claims, [nums], noise=noise)
    md = C.header(sc, "## Table 6: perturbing conv1 up to pool k, clean accuracy (%)")
    md += f"\nBaseline: {fmt(base)} ({fmt(P.TABLE6_BASELINE)}).\n\n" + "\n".join(lines) + "\n\n"
    md += ("**Claims** (" + CL.summary(verdicts) + f"; one run, noise = binomial s.e. {noise:.2f} points):\n\n"
           + CL.table(verdicts) + "\n")
    return ExperimentResult(markdown=md, config={"scale": sc.describe(), "stages": list(accs)},
                            metrics={"baseline": base, "stages": accs, "paper": P.TABLE6})


EXPERIMENT = Experiment(
    name="layerwise-depth",
    description="Layerwise AT, Table 6: perturbing VGG stages 1..k vs the baseline (clean accuracy)",
    paper='Sankaranarayanan et al., "Regularizing deep networks using efficient layerwise adversarial '
          'training", AAAI 2018, Table 6',
    expected_runtime={"cpu": "30 min measured on 2 shared cores (6 runs x 12 epochs; session 10)",
                      "quick": "5-12 min (mostly compilation)",
                      "paper": "days on one accelerator (6 x 300 epochs)"},
    paper_values={"table6": P.TABLE6, "baseline": P.TABLE6_BASELINE},
    run=run,
)
