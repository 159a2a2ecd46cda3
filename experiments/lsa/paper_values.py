"""The LSA paper's numbers, copied as printed (Khalooei et al., "Layer-wise Regularized
Adversarial Training using Layers Sustainability Analysis", ../shared/papers/lsa-at-lr_khalooei.md).

Every table is accuracy (%) under **FGSM** at the listed eps, then the R&G score (the row sum, as
printed -- not recomputed). Row names are the paper's "Training type" column; the paper's bold
marks (top-5 per column) are left out. Table 3's header reads "Accuracy of model A" though the
table is Model B on MNIST (a typo of the paper; the caption says model B).
"""
from __future__ import annotations

TABLE2_EPS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5)
# Table 2. Evaluation of model A on Moon dataset with different loss functions against FGSM
# adversarial attack. {training type: ([acc at eps 0, 0.1, ..., 0.5], R&G score)}
TABLE2 = {
    "Normal": ([97.07, 93.63, 82.5, 76.83, 63.79, 52.35], 466.17),
    "AT-FGSM": ([95.86, 91.98, 87.88, 81.33, 70.54, 58.69], 486.28),
    "AT-PGD": ([86.5, 83.89, 80.87, 76.61, 72.57, 60.02], 460.46),
    "AT-TRADE": ([96.17, 93.06, 85.78, 74.2, 68.62, 59.68], 477.51),
    "AT-FAST": ([94.32, 89.72, 84.91, 78.35, 70.18, 61.65], 479.13),
    "AT-FGSM-LR-L0": ([92.81, 90.25, 85.36, 80.74, 68.21, 58.74], 476.11),
    "AT-FGSM-LR-L1": ([91.87, 89.77, 86.95, 81.51, 69.15, 59.59], 478.84),
    "AT-FGSM-LR-L2": ([93.98, 93.01, 89.12, 84.01, 75.15, 63.25], 498.52),
    "AT-PGD-LR-L0": ([87.02, 84.02, 80.64, 76.22, 71.12, 65.87], 464.89),
    "AT-PGD-LR-L1": ([86.2, 82.94, 79.23, 75.16, 70.5, 65.04], 459.07),
    "AT-PGD-LR-L2": ([88.78, 86.93, 81.25, 77.01, 72.81, 66.58], 473.36),
    "AT-FAST-LR-L0": ([86.86, 83.85, 80.33, 76.34, 71.34, 65.79], 464.51),
    "AT-FAST-LR-L1": ([87.91, 85.43, 82.44, 77.38, 70.01, 62.25], 465.42),
    "AT-FAST-LR-L2": ([92.91, 90.31, 86.26, 81.53, 75.09, 67.65], 493.75),
    "AT-TRADE-LR-L0": ([86.84, 82.38, 80.55, 76.37, 71.58, 64.07], 461.79),
    "AT-TRADE-LR-L1": ([87.25, 84.22, 81.25, 76.98, 71.14, 63.25], 464.09),
    "AT-TRADE-LR-L2": ([96.67, 93.2, 86.56, 81.25, 79.5, 68.65], 505.83),
}

TABLE3_EPS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5)
# Table 3. Evaluation of model B on MNIST dataset with different loss functions against FGSM
# adversarial attack.
TABLE3 = {
    "Normal": ([98.82, 82.1, 47.2, 17.87, 6.96, 4.25], 257.2),
    "AT-APGD": ([99.36, 98.54, 97.67, 96.97, 71.72, 33.73], 497.99),
    "AT-APGD-LR-L0": ([98.97, 98.11, 97.36, 97.17, 94.6, 55.52], 541.73),
}

TABLE4_EPS = (0.0, 0.01, 0.03, 0.1, 0.2)
# Table 4. Evaluation of models C and D on CIFAR-10 with different loss functions against FGSM
# adversarial attack. {architecture: {training type: (accs, R&G)}}
TABLE4 = {
    "Model C": {
        "Normal": ([90.53, 48.91, 43.91, 31.5, 22.29], 237.14),
        "AT-APGD": ([83.68, 74.69, 72.21, 50.04, 41.45], 322.07),
        "AT-APGD-LR-L1": ([83.55, 75.32, 73.35, 52.36, 46.01], 330.59),
    },
    "Model D": {
        "Normal": ([90.01, 40.01, 36.35, 22.3, 16.2], 204.87),
        "AT-APGD": ([82.60, 50.12, 47.11, 41.46, 40.01], 261.3),
        "AT-APGD-LR-L1": ([81.81, 53.21, 48.17, 43.01, 42.65], 268.85),
    },
}

# the settings of Sec. 4.1.3 the tables were made with
SETTINGS = {
    "evaluation attack": "FGSM (Tables 2-4)",
    "PGD evaluations": "7 iterations, step size 0.005 (Sec. 4.1.3)",
    "training eps": "0.3 (Moon, MNIST), 8/255 (CIFAR-10)",
    "batch size": 128,
    "epochs": "100 (Moon, MNIST), 150 (CIFAR-10)",
    "optimizer": "Adam 1e-3 (models A, B), Adam 0.003 (model D)",
    "Model A": "Linear(100)-ELU-Linear(100)-ELU-Linear(100)-ELU-Linear(1) (Table 1; the appendix's "
               "Table 1 prints the third layer as Linear(200))",
    "gamma": "not given",
}

# the paper's claims about each table, in its words (Sec. 4.2.2)
CLAIMS_TEXT = {
    "table2": ["AT-LR reduces vulnerability, and its trained model is more robust than its normal adversarially "
               "trained one for greater perturbation rates", "The performance score value of 505.83 for "
               "AT-TRADE-LR-L1 L2 was highest among others", "the R&G scores for AT-LR models are superior to "
               "baseline approaches"],
    "table3": ["AT-APGD-LR-L0 ... could be a suitable extension on its pure adversarial training method that is "
               "more robust"],
    "table4": ["the AT-APGD-LR-L1 model on architectures C and D outperforms other related models in CIFAR-10"],
}


def rows(table: dict) -> dict[str, list[float]]:
    """{row: accuracies} (the R&G column dropped) for ``accuracy_table``'s ``paper`` argument."""
    return {k: list(v[0]) for k, v in table.items()}


def rg(table: dict) -> dict[str, float]:
    """{row: R&G score as printed}."""
    return {k: float(v[1]) for k, v in table.items()}
