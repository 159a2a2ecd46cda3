"""lsa-mnist: Table 3 of Khalooei et al. (LSA / AT-LR) -- Model B on MNIST: Normal, AT-APGD and
AT-APGD-LR-L0, accuracy under **FGSM** at eps 0, 0.1 ... 0.5 and the R&G score, ``ours (paper)``,
with the paper's PGD setting (7 x 0.005) and PGD-10 beside it, and the paper's claim decided.

Training-set size (the paper trains on the 60k MNIST training split; **our choice at the cpu
scale**): these machines hold only the official MNIST *test* split (10k images, ../shared/data),
so the cpu scale trains on test[:8000] and evaluates on test[8000:] (500 images); ``--scale
paper`` trains on the full training split when advjax.data finds it (IDX files or a prepared
tfds directory) and otherwise stops with the list of directories it searched. Gamma (not given
in the paper) is our choice, 1.0. Training at the full eps = 0.3 from scratch stays at chance
level on the cpu budget (measured: APGD-AT, 8000 images, loss 2.30 and 10-11% accuracy after 3
epochs of Adam 1e-3, and after 2 epochs of a one-cycle 5e-3 schedule), so the cpu scale ramps eps
linearly from 0 to 0.3 over the first 2 epochs (``advjax.methods.EpsWarmup``), the same for both
AT rows.

Measured before this table was evaluated as the paper does (cpu scale, seed 0, 2026-11-22, 44 min
on 2 cores shared with two other runs), accuracy (%) under L-inf PGD-10 on test[8000:8500]:

    eps            0      0.1    0.2    0.3    R&G
    AT-APGD        98.8   96.2   90.6   76.6   362.2
    AT-APGD-LR-L0  98.8   96.2   91.0   72.4   358.4

The claim (the LR variant beats its base on R&G) did not hold in that run (-3.8; one seed, 500
test images, within the noise). The regularizer does what it is meant to: the CM of the
regularized layer L0 under FGSM eps 0.3 fell from 0.593 to 0.357, and the MVL list moved from L0
to L1.
"""
from __future__ import annotations

import dataclasses

from experiments import claims as C
from experiments.base import Experiment, ExperimentResult
from experiments.lsa import paper_values as PV
from experiments.lsa._images import ImageTableConfig, run_image_table

CPU = ImageTableConfig(model="model_b", dataset="mnist", train_split="test[:8000]", test_split="test[8000:]",
                       base="apgd", lr_layer=0, gamma=1.0, train_eps=0.3, eval_eps=PV.TABLE3_EPS,
                       epochs=10, batch_size=128, lr=1e-3, steps=10, eval_steps=10, n_eval=500,
                       eps_warmup_epochs=2.0)
QUICK = dataclasses.replace(CPU, train_split="test[:1024]", epochs=2, n_eval=200, steps=5, eval_steps=5,
                           lsa_samples=100, eps_warmup_epochs=1.0)
PAPER = dataclasses.replace(CPU, train_split="train", test_split="test", epochs=100, n_eval=10000, eval_steps=20,
                            lsa_samples=1000, eps_warmup_epochs=0.0)


def table3_claims() -> list:
    prg = PV.rg(PV.TABLE3)
    return [C.Claim("AT-APGD-LR-L0 beats AT-APGD on R&G", "Table 3 / Sec. 4.2.2",
                    C.greater("rg/AT-APGD-LR-L0", "rg/AT-APGD"),
                    f"{prg['AT-APGD-LR-L0']:.2f} vs {prg['AT-APGD']:.2f} ({prg['AT-APGD-LR-L0'] - prg['AT-APGD']:+.2f})"),
            C.Claim("AT-APGD-LR-L0 beats AT-APGD at the large eps (sum of eps 0.4 and 0.5)", "Table 3",
                    lambda d: d["acc/AT-APGD-LR-L0/0.4"] + d["acc/AT-APGD-LR-L0/0.5"] - d["acc/AT-APGD/0.4"]
                    - d["acc/AT-APGD/0.5"], "150.12 vs 105.45 (+44.67)"),
            C.Claim("AT-APGD beats Normal on R&G", "Table 3", C.greater("rg/AT-APGD", "rg/Normal"),
                    f"{prg['AT-APGD']:.2f} vs {prg['Normal']:.2f} ({prg['AT-APGD'] - prg['Normal']:+.2f})")]


def run(scale: str = "cpu", quick: bool = False, out_dir=".", seed: int = 0) -> ExperimentResult:
    if scale == "paper":
        cfg = PAPER if not quick else dataclasses.replace(PAPER, epochs=1)
        notes = ["paper scale: the full MNIST training split (60k images, as the paper)"]
        header = (f"**Scale: `paper`{' (quick: 1 epoch)' if quick else ''}.** Full MNIST training split, all 10k test "
                  f"images; {cfg.epochs} epochs (the paper: 100), APGD-{cfg.steps} AT, gamma {cfg.gamma:g} (our "
                  "choice; not given). Evaluated as the paper: FGSM at eps 0 ... 0.5.")
    else:
        cfg = QUICK if quick else CPU
        notes = ["**CPU scale on the real MNIST test split only**: trained on test[:N] and evaluated on "
                 "test[8000:] (the official training images are not on this machine); numbers are not "
                 "comparable to the paper's absolute values, only the comparisons between rows are"]
        n_train = 1024 if quick else 8000
        header = (f"**Scale: `cpu`{' (quick)' if quick else ''}.** What differs from the paper's setting: "
                  f"{n_train} training images from the MNIST *test* split (the paper: the 60k training split, not "
                  f"on this machine), {cfg.epochs} epochs (the paper: 100), APGD-{cfg.steps} AT with eps ramped "
                  f"from 0 to 0.3 over {cfg.eps_warmup_epochs:g} epoch(s), evaluation on {cfg.n_eval} held-out "
                  f"images (the paper: 10k), gamma {cfg.gamma:g} (our choice; not given), one seed. As in the paper: "
                  "Model B, Adam 1e-3, batch 128, training eps 0.3, FGSM evaluation at eps 0 ... 0.5.")
    return run_image_table(cfg, out_dir, seed, "Table 3 (MNIST, Model B)", notes, PV.TABLE3,
                           claims=table3_claims(), header=header)


EXPERIMENT = Experiment(
    name="lsa-mnist",
    description="LSA paper Table 3: Model B on MNIST, Normal / AT-APGD / AT-APGD-LR-L0 under FGSM (cpu: MNIST test split 8k/2k)",
    paper='Khalooei et al., "Layer-wise Regularized Adversarial Training using Layers Sustainability Analysis", Table 3',
    expected_runtime={"quick": "~3 min on 2 cores",
                      "cpu": "~50 min on 2 cores shared with other runs (8000 images x 10 epochs of APGD-10 AT, "
                             "two AT rows + a normal one)",
                      "paper": "hours on CPU; minutes on a GPU (needs the MNIST training split)"},
    paper_values={"Table 3": PV.TABLE3},
    run=run,
)
