"""sat-shift: Fig. 1 and Fig. 4-6 of Jin et al. (ICCV 2023).

* Fig. 1: on PGD-AT, TRADES, MART and AWP-AT models, the mean cosine between a layer's shift
  f^l(x + r_t) - f^l(x) and the CE gradient with respect to that layer's output, at every
  iteration t of PGD-100 (every ResNet block output).
* Fig. 4: shift sizes ||f^l(x_adv) - f^l(x)||_2 at SAT's layers (the last stage's block outputs) of
  the PGD-AT model under OLA (PGD-100) and ILA (LAFEAT-100).
* Fig. 5: the same under eq. 7 (``LGen``, Lambda ~ U(0, lambda)), on the PGD-AT model.
* Fig. 6: OLA vs ILA on the SAT model.

Shift sizes are compared on the test points the model classifies correctly: LAFEAT (as the
official code) attacks only those and returns the others unchanged (shift 0), while PGD moves
every point, so over all points ILA's smaller shift would be partly an artefact of clean errors.

The figures are missing from our copy of the paper: the claims are the text's (§3.1, §4, §6.2).
"""
from __future__ import annotations

import math

import numpy as np

from experiments import claims as CL
from experiments.base import Experiment, ExperimentResult, fmt
from experiments.sat import _common as C


def _sizes(model, variables, x, x_adv, names):
    from advjax.analysis.clustering import shift_sizes

    s = shift_sizes(model, variables, x, x_adv, layers=list(names), batch_size=min(256, len(x)))
    return {k: v.tolist() for k, v in s.items()}


def _se(a, b):
    a, b = np.asarray(a), np.asarray(b)
    return math.sqrt(a.var(ddof=1) / len(a) + b.var(ddof=1) / len(b))


def run(scale: str = "cpu", quick: bool = False, out_dir=".", seed: int = 0) -> ExperimentResult:
    import pathlib

    import jax
    from advjax import layers as L
    from advjax.analysis import clustering as clu
    from advjax.attacks import PGD
    from advjax.attacks.l_gen import LGen, default_layers, sat_features_fn

    sc = C.pick_scale(scale, quick)
    data = C.load_data(sc)
    (x_tr, y_tr), (x_te, y_te) = data
    out = pathlib.Path(out_dir)
    plots, md_parts, nums, noises = [], [], {}, {}

    runs = C.train_all(out_dir, ("PGD-AT", "TRADES", "MART", "AWP-AT", "SAT"), sc, data, seed=seed)  # (shared with sat-cifar10)

    # Fig. 1: cosine curves on the four AT models
    cos_all = {}
    for label in ("PGD-AT", "TRADES", "MART", "AWP-AT"):
        res = runs[label]
        model, variables = res.state.model, res.state.variables()
        n = sc.n_cos
        cos = C.cached(out_dir, "cosine", {"label": label, "step": int(res.state.step), "n": n, "scale": sc.name},
                       lambda: {k: v.tolist() for k, v in clu.shift_gradient_cosine(
                           model, variables, C.as_float(x_te[:n]), y_te[:n], jax.random.PRNGKey(seed),
                           attack=PGD(eps=C.EPS, steps=sc.attack_steps, step_size=C.ALPHA),
                           layers=[k for k in L.names(model, kind="activation") if k.endswith("/act2")]).items()})
        cos_all[label] = cos
        plots.append(clu.plot_shift_gradient_cosine(out / f"fig1_cosine_{label}.png", cos,
                                                    title=f"Fig. 1 ({label}): cos(shift, layer gradient)").name)
        nums[f"{label} min cos"] = min(min(v) for v in cos.values())
    md_parts.append("### Fig. 1: mean cos(shift, layer gradient) over PGD iterations (min / mean over layers and "
                    "iterations)\n\n| model | min | mean |\n|---|---|---|\n" + "\n".join(
                        f"| {m} | {min(min(v) for v in c.values()):.3f} | "
                        f"{np.mean([np.mean(v) for v in c.values()]):.3f} |" for m, c in cos_all.items()))

    # Fig. 4-6: shift sizes
    dist, lasts, points, all_right = {}, {}, {}, {}
    for label in ("PGD-AT", "SAT"):
        res = runs[label]
        model, variables = res.state.model, res.state.variables()
        names = default_layers(model)
        key = {"label": label, "step": int(res.state.step), "n": len(x_te), "scale": sc.name}
        ola = C.cached(out_dir, "shift-ola", key, lambda: _sizes(
            model, variables, x_te, C.adversarial(PGD(eps=C.EPS, steps=sc.attack_steps, step_size=C.ALPHA),
                                                  model, variables, x_te, y_te, seed), names))
        dist[label] = {"OLA (PGD-100)": ola}
        heads = C.lafeat_heads(res.run_dir, model, variables, x_tr, sc, seed)
        dist[label]["ILA (LAFEAT-100)"] = C.cached(out_dir, "shift-ila", key, lambda: _sizes(
            model, variables, x_te, C.adversarial(C.lafeat(model, heads, sc), model, variables, x_te, y_te,
                                                  seed), names))
        if label == "PGD-AT":
            ffn = sat_features_fn(model)
            lg = LGen(eps=C.EPS, steps=C.SAT_KW["steps"], step_size=C.ALPHA, lam=C.SAT_KW["lam"],
                      shift_reduce=C.SAT_KW["shift_reduce"])

            def eq7():
                xf = C.as_float(x_te)
                xa = np.concatenate([np.asarray(lg(ffn, variables, xf[i:i + 256], y_te[i:i + 256],
                                                   jax.random.PRNGKey(seed + i))) for i in range(0, len(xf), 256)])
                return _sizes(model, variables, x_te, xa, names)

            dist[label]["eq. 7"] = C.cached(out_dir, "shift-eq7", key, eq7)
        last = lasts[label] = names[-1]
        right, _ = C.shift_points(model, variables, x_te, y_te)
        sel, points[label] = C.lafeat_fooled(right, dist[label]["ILA (LAFEAT-100)"][names[0]])  # (same points
        # for every attack: LAFEAT's unchanged points would make ILA's shifts look small by construction)
        all_right[label] = {k: float(np.asarray(v[last])[right].mean()) for k, v in dist[label].items()}
        dist[label] = {k: {layer: np.asarray(a)[sel].tolist() for layer, a in v.items()}
                       for k, v in dist[label].items()}
        pooled = {k: np.asarray(v[last]) for k, v in dist[label].items()}
        fig = {"PGD-AT": "fig4_5_shift_pgd_at.png", "SAT": "fig6_shift_sat.png"}[label]
        plots.append(clu.plot_shift_histograms(out / fig, pooled, title=f"{label}: shift size at {last}").name)
        for k, v in pooled.items():
            nums[f"{label} {k} mean"] = float(v.mean())
        if "ILA (LAFEAT-100)" in pooled:
            nums[f"{label} gap"] = (pooled["OLA (PGD-100)"].mean() - pooled["ILA (LAFEAT-100)"].mean()) / \
                pooled["OLA (PGD-100)"].mean()
            noises[f"{label} gap"] = _se(pooled["OLA (PGD-100)"], pooled["ILA (LAFEAT-100)"]) / \
                pooled["OLA (PGD-100)"].mean()
            noises[f"{label} ola-ila"] = _se(pooled["OLA (PGD-100)"], pooled["ILA (LAFEAT-100)"])
        if "eq. 7" in pooled:
            noises["eq7"] = max(_se(pooled["eq. 7"], pooled["OLA (PGD-100)"]),
                                _se(pooled["eq. 7"], pooled.get("ILA (LAFEAT-100)", pooled["OLA (PGD-100)"])))
    rows = ["| model | attack | mean | median | sd |", "|---|---|---|---|---|"]
    for label, d in dist.items():
        for k, v in d.items():
            a = np.asarray(v[lasts[label]])
            rows.append(f"| {label} | {k} | {fmt(a.mean(), 3)} | {fmt(np.median(a), 3)} | {fmt(a.std(), 3)} |")
    md_parts.append("### Fig. 4-6: shift size ||f(x_adv) - f(x)||_2 at the last block output\n\n"
                    "On the same points for every attack: " + "; ".join(f"{m}: {p}" for m, p in points.items())
                    + ".\n\n" + "\n".join(rows) + "\n\nMeans over all the correctly classified points instead "
                    "(LAFEAT's unchanged points counted as shift 0): " + "; ".join(
                        f"{m}: " + ", ".join(f"{k} {fmt(v, 3)}" for k, v in d.items()) for m, d in all_right.items())
                    + ".")

    claims = [
        (CL.Claim("Fig. 1: the mean cosine between each layer's shift and its gradient is positive at every PGD "
                  "iteration, for every AT model", "Fig. 1, §3.1",
                  lambda d: min(d[f"{m} min cos"] for m in cos_all), "always positive (figure not in our copy)",
                  unit="(cosine)"), 0.0),
        (CL.Claim("Fig. 4: ILA shifts the last layer less than OLA on the PGD-AT model", "Fig. 4, §4",
                  CL.greater("PGD-AT OLA (PGD-100) mean", "PGD-AT ILA (LAFEAT-100) mean"), "smaller on average",
                  unit="(L2)"), noises.get("PGD-AT ola-ila")),
        (CL.Claim("Fig. 5: eq. 7's shift sizes lie between ILA's and OLA's (about their average)", "Fig. 5, §6.2",
                  lambda d: min(d["PGD-AT eq. 7 mean"] - d["PGD-AT ILA (LAFEAT-100) mean"],
                                d["PGD-AT OLA (PGD-100) mean"] - d["PGD-AT eq. 7 mean"]),
                  "resembles the average of ILA's and OLA's", unit="(L2)"), noises.get("eq7")),
        (CL.Claim("Fig. 6: ILA and OLA shift the last layer more alike on the SAT model than on the PGD-AT model "
                  "(relative mean gap (OLA - ILA) / OLA smaller)", "Fig. 6, §6.2",
                  lambda d: d["PGD-AT gap"] - d["SAT gap"], "more similar",
                  unit="(relative gap)"),
         math.sqrt(noises.get("PGD-AT gap", 0) ** 2 + noises.get("SAT gap", 0) ** 2)),
    ]
    verdicts = [CL.decide(c, [nums], noise=nz) for c, nz in claims]
    md = C.header(sc, "## Fig. 1, 4-6: layer shifts under OLA, ILA and eq. 7",
                  f"eq. 7 here: LGen with lambda = {C.SAT_KW['lam']} (the released code's, Lambda ~ U(0, lambda) "
                  f"per step, its batch-Frobenius shift), 10 steps of 2/255. Noise: the standard error of the "
                  f"mean difference over the {len(x_te)} images; Fig. 1 is decided exactly (noise 0).")
    md += "\n" + "\n\n".join(md_parts) + "\n\n**Claims** (" + CL.summary(verdicts) + "):\n\n" + CL.table(verdicts)
    md += "\n"
    return ExperimentResult(markdown=md, config={"scale": sc.describe(), "sat": C.SAT_KW},
                            metrics={"numbers": nums, "cosine": cos_all,
                                     "shift_means": {m: {k: float(np.mean(list(v.values())[-1])) for k, v in d.items()}
                                                     for m, d in dist.items()}},
                            plots=plots)


EXPERIMENT = Experiment(
    name="sat-shift",
    description="SAT, Fig. 1 and 4-6: cos(shift, layer gradient) per PGD iteration; shift sizes under PGD / "
                "LAFEAT / eq. 7 on AT and SAT models",
    paper='Jin et al., "Explaining Adversarial Robustness of Neural Networks from Clustering Effect '
          'Perspective", ICCV 2023, Fig. 1, 4, 5, 6',
    expected_runtime={"cpu": "95 min measured with the runs reused from sat-cifar10 (session 14: 2 cores shared with 2-3 other runs, the first half at nice 19; Fig. 1 cosines on 4 models, PGD-100 / LAFEAT-100 on 2 models and eq. 7 on 400 images); add the trainings (~1 h 30 min) when they are missing",
                      "quick": "8 min measured (5 one-epoch trainings + the attacks; 2 shared cores, session 10)", "paper": "a day on one accelerator (trainings shared)"},
    paper_values={},
    run=run,
)
