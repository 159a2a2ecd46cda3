"""sat-clustering: Fig. 2, 3 and 7 of Jin et al. (ICCV 2023), clustering accuracy per layer.

* Fig. 2: Clu.Acc (Def. 1, eq. 2; nearest class centroid of the training features, p = 2) of
  every conv layer of ResNet-18 trained by PGD-AT, TRADES and MART, on the held-out images, at
  several epochs of one run (every epoch-end checkpoint is kept), beside the classification
  accuracy.
* Fig. 3 / 7: Clu.Acc per conv layer of the PGD-AT and the SAT model, clean and under PGD-100
  (OLA) and LAFEAT-100 (ILA); the centroids are always the clean training ones.

Claims (§3.2, §4, §6.2): Clu.Acc rises with depth and, for the deep layers, during training; ILA
damages Clu.Acc less than OLA (the paper: "ILA performs less violent damage on clustering accuracy
than OLA ... but results in lower classification accuracy"; the issue's shorthand "falls under
LAFEAT more than under PGD" reads the other way, we test the paper's sentence) while the
classification accuracy under ILA is lower; under OLA the last layer's Clu.Acc is close to the
classification accuracy, under ILA it is not; on the SAT model the last layer's Clu.Acc under ILA
is closer to the classification accuracy than on the PGD-AT model.
"""
from __future__ import annotations

import os
import pathlib
import tempfile

import numpy as np

from experiments import claims as CL
from experiments.base import Experiment, ExperimentResult, fmt
from experiments.sat import _common as C

P_NORM = 2


def _conv_layers(model):
    from advjax.layers import names

    return [n for n in names(model, kind="learnable") if n != "fc"]


def _epoch_states(run_dir, target):
    """[(epoch step, state)] of every epoch-end checkpoint kept in ``run_dir/checkpoints/last``."""
    from advjax.train import checkpoint as ckpt

    out = []
    for p in reversed(ckpt.list_checkpoints(pathlib.Path(run_dir) / "checkpoints" / "last")):
        with tempfile.TemporaryDirectory() as d:  # restore exactly this one (restore takes the newest)
            os.symlink(p, pathlib.Path(d) / p.name)
            got = ckpt.restore_checkpoint(d, target)
        if got is not None:
            out.append((int(p.name[5:]), got[0]))
    return out


def _clu(model, variables, x_tr, y_tr, x_te, y_te, attack=None, seed=0):
    import jax
    from advjax.analysis.clustering import layer_centroids, layer_clustering_accuracy

    layers = _conv_layers(model)
    cents = layer_centroids(model, variables, C.as_float(x_tr), y_tr, 10, layers=layers, kind="learnable",
                            batch_size=100)
    return layer_clustering_accuracy(model, variables, C.as_float(x_te), y_te, cents, p=P_NORM, attack=attack,
                                     kind="learnable", batch_size=100, key=jax.random.PRNGKey(seed))


def _deep(accs):
    return float(np.mean([v for k, v in accs.items() if k.startswith("layer4/")]))


def _shallow(accs):
    return float(np.mean([v for k, v in accs.items() if k.startswith("layer1/") or k == "conv1"]))


def run(scale: str = "cpu", quick: bool = False, out_dir=".", seed: int = 0) -> ExperimentResult:
    from advjax.analysis.clustering import plot_clustering_accuracy
    from advjax.attacks import PGD

    sc = C.pick_scale(scale, quick)
    data = C.load_data(sc)
    (x_tr, y_tr), (x_te, y_te) = data
    out = pathlib.Path(out_dir)
    plots, nums, md_parts = [], {}, []

    runs = C.train_all(out_dir, ("PGD-AT", "TRADES", "MART", "SAT"), sc, data, seed=seed)  # (shared with sat-cifar10)

    # Fig. 2: Clu.Acc over epochs (one run per method, every epoch-end checkpoint kept)
    epochs_shown = sorted({1, max(1, sc.epochs // 3), max(1, 2 * sc.epochs // 3), sc.epochs})
    steps_per_epoch = len(x_tr) // sc.batch_size
    fig2 = {}
    for label in ("PGD-AT", "TRADES", "MART"):
        res = runs[label]
        per_epoch = {}
        for step, state in _epoch_states(res.run_dir, res.state):
            e = step // steps_per_epoch
            if e not in epochs_shown:
                continue
            per_epoch[e] = C.cached(out_dir, "clu-epoch", {"label": label, "step": step, "scale": sc.name},
                                    lambda: _clu(state.model, state.variables(), x_tr, y_tr, x_te, y_te, seed=seed))
        fig2[label] = per_epoch
        plots.append(plot_clustering_accuracy(out / f"fig2_cluacc_{label}.png",
                                              {f"epoch {e}": a for e, a in sorted(per_epoch.items())},
                                              title=f"Fig. 2 ({label}): Clu.Acc per conv layer, p = {P_NORM}").name)
        first, last = min(per_epoch), max(per_epoch)
        nums[f"{label} deep first"], nums[f"{label} deep last"] = _deep(per_epoch[first]), _deep(per_epoch[last])
        nums[f"{label} shallow last"] = _shallow(per_epoch[last])
    rows = ["| method | epoch | conv1/layer1 mean | layer4 mean | last conv | classification |", "|---|---|---|---|---|---|"]
    for label, pe in fig2.items():
        for e, a in sorted(pe.items()):
            lastconv = [k for k in a if k != "output"][-1]
            rows.append(f"| {label} | {e} | {fmt(_shallow(a))} | {fmt(_deep(a))} | {fmt(a[lastconv])} | "
                        f"{fmt(a['output'])} |")
    md_parts.append("### Fig. 2: Clu.Acc (%) over epochs\n\n" + "\n".join(rows))

    # Fig. 3 / 7: AT vs SAT model, clean / PGD-100 / LAFEAT-100
    fig37 = {}
    for label in ("PGD-AT", "SAT"):
        res = runs[label]
        model, variables = res.state.model, res.state.variables()
        attacks = {"clean": None, "PGD-100": PGD(eps=C.EPS, steps=sc.attack_steps, step_size=C.ALPHA),
                   "LAFEAT-100": C.lafeat(model, C.lafeat_heads(res.run_dir, model, variables, x_tr, sc, seed), sc)}
        fig37[label] = {}
        for name, att in attacks.items():
            fig37[label][name] = C.cached(out_dir, "clu-attack", {"label": label, "attack": name, "scale": sc.name,
                                                                  "step": int(res.state.step), "n": len(x_te)},
                                          lambda: _clu(model, variables, x_tr, y_tr, x_te, y_te, att, seed))
            a = fig37[label][name]
            lastconv = [k for k in a if k != "output"][-1]
            nums[f"{label} {name} deep"] = _deep(a)
            nums[f"{label} {name} lastgap"] = abs(a[lastconv] - a["output"])
            nums[f"{label} {name} acc"] = a["output"]
        fig = {"PGD-AT": "fig3_cluacc_at.png", "SAT": "fig7_cluacc_sat.png"}[label]
        plots.append(plot_clustering_accuracy(out / fig, fig37[label],
                                              title=f"{label}: Clu.Acc per conv layer (clean / OLA / ILA)").name)
    rows = ["| model | attack | layer4 mean Clu.Acc | last conv Clu.Acc | classification |", "|---|---|---|---|---|"]
    for label, d in fig37.items():
        for name, a in d.items():
            lastconv = [k for k in a if k != "output"][-1]
            rows.append(f"| {label} | {name} | {fmt(_deep(a))} | {fmt(a[lastconv])} | {fmt(a['output'])} |")
    md_parts.append("### Fig. 3 / 7: Clu.Acc (%) clean and under OLA / ILA\n\n" + "\n".join(rows))

    claims = [
        CL.Claim("the deeper the layer, the higher Clu.Acc (layer4 mean above conv1/layer1 mean, last epoch, PGD-AT)",
                 "Fig. 2, §3.2", CL.greater("PGD-AT deep last", "PGD-AT shallow last"), "rises with depth"),
        *[CL.Claim(f"Clu.Acc of the deep layers rises during training ({m})", "Fig. 2",
                   CL.greater(f"{m} deep last", f"{m} deep first"), "rises over epochs") for m in fig2],
        CL.Claim("ILA damages the deep layers' Clu.Acc less than OLA (PGD-AT model)", "Fig. 3, §4",
                 CL.greater("PGD-AT LAFEAT-100 deep", "PGD-AT PGD-100 deep"), "less violent damage"),
        CL.Claim("... while ILA's classification accuracy is lower than OLA's (PGD-AT model)", "Fig. 3, §4",
                 CL.greater("PGD-AT PGD-100 acc", "PGD-AT LAFEAT-100 acc"), "lower"),
        CL.Claim("under OLA the last layer's Clu.Acc is closer to the classification accuracy than under ILA "
                 "(PGD-AT model)", "Fig. 3, §4",
                 CL.greater("PGD-AT LAFEAT-100 lastgap", "PGD-AT PGD-100 lastgap"), "does not converge under ILA"),
        CL.Claim("on the SAT model the last layer's Clu.Acc under ILA is closer to the classification accuracy than "
                 "on the PGD-AT model", "Fig. 7, §6.2",
                 CL.greater("PGD-AT LAFEAT-100 lastgap", "SAT LAFEAT-100 lastgap"), "favourable clustering effect"),
    ]
    noise = C.accuracy_se(len(x_te), 50.0)
    verdicts = CL.decide_all(claims, [nums], noise=noise)
    md = C.header(sc, "## Fig. 2, 3, 7: clustering accuracy per layer",
                  f"Clu.Acc with p = {P_NORM} (the appendix's; the released code uses inf) on every conv layer's "
                  f"output (shortcut convs included), centroids from the {len(x_tr)} training images; epochs shown "
                  f"{epochs_shown}, read from the epoch-end checkpoints that every SAT-family run keeps (the runs are "
                  f"sat-cifar10's).")
    md += "\n" + "\n\n".join(md_parts) + (f"\n\n**Claims** ({CL.summary(verdicts)}; one run, noise = binomial s.e. "
                                          f"{noise:.2f} points on {len(x_te)} images):\n\n" + CL.table(verdicts) + "\n")
    return ExperimentResult(markdown=md, config={"scale": sc.describe(), "p": P_NORM, "epochs_shown": epochs_shown},
                            metrics={"fig2": {m: {str(e): a for e, a in pe.items()} for m, pe in fig2.items()},
                                     "fig3_7": fig37, "numbers": nums},
                            plots=plots)


EXPERIMENT = Experiment(
    name="sat-clustering",
    description="SAT, Fig. 2/3/7: Clu.Acc per layer over epochs (PGD-AT, TRADES, MART) and AT vs SAT under PGD / LAFEAT",
    paper='Jin et al., "Explaining Adversarial Robustness of Neural Networks from Clustering Effect '
          'Perspective", ICCV 2023, Fig. 2, 3, 7',
    expected_runtime={"cpu": "40 min measured with the runs reused from sat-cifar10 (session 14, 2 cores shared with 2-3 other runs); add their trainings (~1 h 10 min) when they are missing",
                      "quick": "2.5 min measured when sat-shift's PGD-AT and SAT runs exist (3 one-epoch trainings + Clu.Acc; session 10)", "paper": "a day on one accelerator"},
    paper_values={},
    run=run,
)
