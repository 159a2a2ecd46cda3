"""layerwise-toy: §3.4 of Sankaranarayanan et al. 2018 -- the toy network FC 1024-tanh-512-tanh on
grayscale CIFAR-10 (32 x 32 luminance, flattened), trained three ways (baseline, with the gradient
accumulation points after each dense layer = Ours-orig, and FGS = FGS-orig's joint loss), L2
weight decay, no augmentation or dropout. Table 2: FGS examples made on each net, all classified
by the baseline. Fig. 2: the mean over test samples of the top-50 singular values of the encoder
Jacobian (input -> the 512 tanh units; ``advjax.analysis.jacobian``, vmap over jacrev, in batches).
"""
from __future__ import annotations

import dataclasses
import pathlib

from experiments import claims as CL
from experiments.base import Experiment, ExperimentResult, fmt
from experiments.layerwise import _common as C
from experiments.layerwise import paper_values as P

NETS = {"Baseline": ("standard", {}), "Ours": ("layerwise", {"eps": C.LAYER_EPS}),
        "FGS": ("fgs_orig", {"input_eps": C.INPUT_EPS})}
MODEL_KW = {"input_shape": (1024,), "hidden": (1024, 512), "activation": "tanh", "num_classes": 10,
            "mean": None, "std": None}
TOY = {"cpu": dict(epochs=30, lr=0.01, n_spec=500), "quick": dict(epochs=2, lr=0.01, n_spec=32),
       "paper": dict(epochs=100, lr=0.01, n_spec=10_000)}


def gray(x):
    import numpy as np

    xf = np.asarray(x, np.float32) / 255.0
    return (xf @ np.array([0.299, 0.587, 0.114], np.float32)).reshape(len(xf), -1)


def run(scale: str = "cpu", quick: bool = False, out_dir=".", seed: int = 0) -> ExperimentResult:
    import jax
    import jax.numpy as jnp
    import numpy as np
    from advjax.analysis.jacobian import encoder_fn, mean_spectrum
    from advjax.attacks import FGSM

    sc = C.pick_scale(scale, quick)
    t = TOY["quick" if quick else scale]
    sc = dataclasses.replace(sc, epochs=t["epochs"], lr=t["lr"], milestones=())
    (x_tr, y_tr), (x_te, y_te) = C.load_data(sc)
    data = ((gray(x_tr), y_tr), (gray(x_te), y_te))
    xg, yg = data[1]
    nets = {}
    for label, (name, kw) in NETS.items():
        res = C.train(out_dir, f"toy-{label}", sc, data, name, kw, seed=seed, model="model_a",
                      model_kwargs=MODEL_KW, augment=False)
        nets[label] = res.state
    base = nets["Baseline"]
    apply_fn = lambda v, z, m=base.model: m.apply(v, z, train=False)  # noqa: E731
    clean = {k: C.fgs_accuracy(s.model, s.variables(), xg, yg, (0.0,))[0.0] for k, s in nets.items()}

    # Table 2: FGS from each net, classified by the baseline
    @jax.jit
    def transfer(v_src, v_base, xb, yb, eps):
        xa = FGSM(eps=0.0, check_inputs=False).with_eps(eps).run(apply_fn, v_src, xb, yb, None)
        return jnp.sum(jnp.argmax(apply_fn(v_base, xa), -1) == yb)

    table2 = {}
    for label, s in nets.items():
        row = []
        for e in P.TABLE2_EPS:
            c = sum(int(transfer(s.variables(), base.variables(), xg[i:i + 500], yg[i:i + 500], np.float32(e)))
                    for i in range(0, len(xg), 500))
            row.append(100.0 * c / len(xg))
        table2[label] = row

    # Fig. 2: mean top-50 singular values of the encoder Jacobian
    n_spec = min(t["n_spec"], len(xg))
    spectra = {k: mean_spectrum(encoder_fn(s.model, s.variables()), xg[:n_spec], top_k=50, batch_size=25)
               for k, s in nets.items()}
    plots = []
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig, ax = plt.subplots(figsize=(5, 3.5))
        for k, sv in spectra.items():
            ax.plot(np.arange(1, len(sv) + 1), sv, label=k)
        ax.set(xlabel="singular value index", ylabel="mean singular value", yscale="log",
               title="encoder Jacobian, top-50 (Fig. 2)")
        ax.legend()
        fig.tight_layout()
        fig.savefig(pathlib.Path(out_dir) / "spectrum.png", dpi=100)
        plt.close(fig)
        plots.append("spectrum.png")
    except Exception as e:  # noqa: BLE001 -- the numbers are in the table either way
        C.log(f"plot skipped: {e}")

    pcol = {"Baseline": "Baseline n/w", "FGS": "FGS n/w", "Ours": "Our n/w"}
    head = ["FGS from"] + [f"eps={e:g}" for e in P.TABLE2_EPS]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for k, row in table2.items():
        lines.append(f"| {k} n/w | " + " | ".join(f"{fmt(a)} ({fmt(q)})" for a, q in zip(row, P.TABLE2[pcol[k]])) + " |")
    spec_lines = ["| net | clean acc. (paper) | sigma_1 | sigma_10 | sigma_50 | sqrt(sum sigma_i^2), top 50 |",
                  "|---|---|---|---|---|---|"]
    for k, sv in spectra.items():
        spec_lines.append(f"| {k} | {fmt(clean[k])} ({fmt(P.TOY_CLEAN[k])}) | {sv[0]:.3g} | {sv[9]:.3g} | "
                          f"{sv[49]:.3g} | {float(np.sqrt((sv ** 2).sum())):.3g} |")
    nums = {**{f"clean {k}": v for k, v in clean.items()},
            **{f"{k}@{e:g}": v for k, row in table2.items() for e, v in zip(P.TABLE2_EPS, row)},
            **{f"sv1 {k}": float(sv[0]) for k, sv in spectra.items()},
            **{f"sv50 {k}": float(sv[49]) for k, sv in spectra.items()}}
    claims = [
        CL.Claim("Ours improves the baseline's clean accuracy", "§3.4", CL.greater("clean Ours", "clean Baseline"),
                 "43.3 vs 39.5"),
        CL.Claim("robustness of the baseline to FGS from: FGS > Ours (eps 0.04)", "Table 2",
                 CL.greater("FGS@0.04", "Ours@0.04"), "26.08 > 18.16"),
        CL.Claim("... Ours >> base (eps 0.04)", "Table 2", CL.greater("Ours@0.04", "Baseline@0.04"), "18.16 >> 1.92"),
    ]
    noise = C.accuracy_se(len(xg), 30.0)
    verdicts = CL.decide_all(claims, [nums], noise=noise)
    spec_claims = [
        CL.Claim("FGS suppresses the leading singular value more than Ours does", "Fig. 2",
                 lambda d: d["sv1 Ours"] - d["sv1 FGS"], "shown in the figure", unit="(sigma)"),
        CL.Claim("Ours' spectrum decays below the baseline's in the trailing dimensions (sigma_50)", "Fig. 2",
                 lambda d: d["sv50 Baseline"] - d["sv50 Ours"], "shown in the figure", unit="(sigma)"),
    ]
    verdicts += CL.decide_all(spec_claims, [nums], noise=0.0)
    md = C.header(dataclasses.replace(sc, model="FC 1024-tanh-512-tanh (model_a)", model_kwargs=()),
                  "## §3.4 toy example: Table 2 and Fig. 2",
                  f"Grayscale (luminance) inputs, SGD Nesterov lr {t['lr']:g} constant, weight decay "
                  f"{sc.weight_decay:g}; the paper's optimizer and epochs for the toy net are not given. "
                  f"Spectrum over the first {n_spec} test images.",
                  paper_setup="the paper trained the same net on the 50k grayscale CIFAR-10 training images "
                              "(L2 weight decay; optimizer, epochs, eps not reported) and took the spectrum over "
                              "all 10k test images")
    md += "\n### Table 2: FGS examples from each net, classified by the baseline (%)\n\n" + "\n".join(lines)
    md += "\n\n### Fig. 2: mean top-50 singular values of the encoder Jacobian\n\n" + "\n".join(spec_lines)
    md += ("\n\n**Claims** (" + CL.summary(verdicts) + f"; one run, noise = binomial s.e. {noise:.2f} points "
           "for the accuracies, exact for the spectra):\n\n" + CL.table(verdicts) + "\n")
    return ExperimentResult(markdown=md, config={"scale": sc.describe(), "toy": t, "nets": NETS},
                            metrics={"clean": clean, "table2": table2,
                                     "spectrum": {k: [float(v) for v in sv] for k, sv in spectra.items()},
                                     "paper": {"table2": P.TABLE2, "clean": P.TOY_CLEAN}}, plots=plots)


EXPERIMENT = Experiment(
    name="layerwise-toy",
    description="Layerwise AT, §3.4 toy MLP on grayscale CIFAR-10: Table 2 (FGS transfer) and Fig. 2 (Jacobian spectrum)",
    paper='Sankaranarayanan et al., "Regularizing deep networks using efficient layerwise adversarial '
          'training", AAAI 2018, Table 2 and Fig. 2',
    expected_runtime={"cpu": "3 min measured on 2 shared cores (session 10)",
                      "quick": "2-11 min (11 min measured on a heavily shared machine)",
                      "paper": "an hour on one accelerator"},
    paper_values={"table2": P.TABLE2, "clean": P.TOY_CLEAN},
    run=run,
)
