"""FGSM-SDI's numbers, copied as printed from the thesis "Boosting Adversarial Training in
Adversarial Machine Learning" (ch. 3; ../shared/papers/thesis_fgsm-sdi_smooth-at_saleh.md), which
reproduces Jia et al., IEEE TIP 2022 ([111]) and adds its own reimplementation (Table IV).

Accuracy (%) at eps = 8/255 on CIFAR-10; "Time(min)" is the total training time in minutes (one
value per method, printed on the Best row). Bold marks are left out. Values are kept as printed
(e.g. Table III's FGSM-RS Last "00.09" is 0.09; Table II's k=20 AA is 48.52 while Table III's
FGSM-SDI Best AA is 48.50: both as printed).
"""
from __future__ import annotations

COLUMNS = ("Clean", "PGD-10", "PGD-20", "PGD-50", "C&W", "APGD", "AA", "Time(min)")

# Table II - The hyperparameter selection on the CIFAR10 database (FGSM-SDI, ResNet18).
TABLE2 = {
    "k=1": (85.05, 52.95, 51.52, 51.16, 49.80, 50.64, 47.06, 134),
    "k=2": (85.14, 52.63, 51.26, 50.9, 49.75, 50.42, 47.36, 106),
    "k=10": (84.80, 53.33, 52.20, 51.79, 50.47, 51.52, 47.99, 84),
    "k=20": (84.86, 53.73, 52.54, 52.18, 51.00, 51.84, 48.52, 83),
    "k=30": (84.45, 53.30, 52.09, 51.77, 50.09, 51.05, 47.03, 82),
    "k=40": (84.73, 52.96, 51.71, 51.34, 49.62, 51.01, 47.24, 81),
}

# Table III - ResNet18 on CIFAR10, piecewise schedule, 110 epochs (Original [111]).
# {method: {"Best"/"Last": (Clean, PGD-10, PGD-20, PGD-50, C&W, APGD, AA)}, "Time(min)": minutes}
TABLE3 = {
    "PGD-AT": {"Best": (82.32, 53.76, 52.83, 52.6, 51.08, 52.29, 48.68),
               "Last": (82.65, 53.39, 52.52, 52.27, 51.28, 51.90, 48.93), "Time(min)": 265},
    "FGSM-RS": {"Best": (73.81, 42.31, 41.55, 41.26, 39.84, 41.02, 37.07),
                "Last": (83.82, 0.09, 0.04, 0.02, 0.00, 0.00, 0.00), "Time(min)": 51},
    "FGSM-CKPT": {"Best": (90.29, 41.96, 39.84, 39.15, 41.13, 38.45, 37.15),
                  "Last": (90.29, 41.96, 39.84, 39.15, 41.13, 38.45, 37.15), "Time(min)": 76},
    "FGSM-GA": {"Best": (83.96, 49.23, 47.57, 46.89, 47.46, 45.86, 43.45),
                "Last": (84.43, 48.67, 46.66, 46.08, 46.75, 45.05, 42.63), "Time(min)": 178},
    "Free-AT(m=8)": {"Best": (80.38, 47.1, 45.85, 45.62, 44.42, 42.18, 42.17),
                     "Last": (80.75, 45.82, 44.82, 44.48, 43.73, 45.22, 41.17), "Time(min)": 215},
    "FGSM-SDI": {"Best": (84.86, 53.73, 52.54, 52.18, 51.00, 51.84, 48.50),
                 "Last": (85.25, 53.18, 52.05, 51.79, 50.29, 51.30, 47.91), "Time(min)": 83},
}

# Table IV - ResNet18 on CIFAR10 (Reimplementation, by the thesis author; one checkpoint per row).
TABLE4 = {
    "FGSM-RS": (70.95, 37.23, 38.67, 38.22, 36.35, 38.21, 32.00, 128),
    "FGSM-CKPT": (85.65, 40.49, 37.41, 36.50, 40.79, 37.42, 36.19, 190),
    "FGSM-SDI": (83.77, 52.67, 50.39, 51.78, 49.85, 50.32, 46.20, 210),
}

# Table VI - CIFAR10, ResNet18, cyclic learning rate, 30 epochs (Best and Last are equal as printed;
# the column printed "CW" here is the C&W column of the other tables).
TABLE6 = {
    "PGD-AT": {"Best": (80.12, 51.59, 50.83, 50.7, 49.04, 50.34, 46.83),
               "Last": (80.12, 51.59, 50.83, 50.7, 49.04, 50.34, 46.83), "Time(min)": 71},
    "FGSM-RS": {"Best": (83.75, 48.05, 46.47, 46.11, 46.21, 45.75, 42.92),
                "Last": (83.75, 48.05, 46.47, 46.11, 46.21, 45.75, 42.92), "Time(min)": 15},
    "FGSM-CKPT": {"Best": (89.08, 40.47, 38.2, 37.69, 39.87, 37.16, 35.81),
                  "Last": (89.08, 40.47, 38.2, 37.69, 39.87, 37.16, 35.81), "Time(min)": 21},
    "FGSM-GA": {"Best": (80.83, 48.76, 47.83, 47.54, 47.14, 47.27, 44.06),
                "Last": (80.83, 48.76, 47.83, 47.54, 47.14, 47.27, 44.06), "Time(min)": 49},
    "Free-AT(m=8)": {"Best": (75.22, 44.67, 43.97, 43.72, 42.48, 43.55, 40.30),
                     "Last": (75.22, 44.67, 43.97, 43.72, 42.48, 43.55, 40.30), "Time(min)": 59},
    "FGSM-SDI": {"Best": (82.08, 51.63, 50.65, 50.33, 48.57, 49.98, 46.21),
                 "Last": (82.08, 51.63, 50.65, 50.33, 48.57, 49.98, 46.21), "Time(min)": 23},
}

# Fig. 26 (the curves are not in the text; these are the statements of Sec. 3.4.3 about it):
# PGD-10 accuracy on training and test data per epoch, ResNet18, CIFAR10, 110 epochs.
FIG26 = {
    "FGSM-RS collapse epoch (about)": 70,       # "After about the 70th epoch, the accuracy of FGSM-RS quickly drops to zero"
    "FGSM-RS PGD-10 after the collapse": 0.0,
    "FGSM-GA train / test PGD-10": (58.46, 48.17),
    "PGD-AT train / test PGD-10": (63.71, 53.33),
    "FGSM-SDI train / test PGD-10": (64.14, 52.81),
    "FGSM-SDI time / PGD-AT time": "around a third",
}

# our column names (experiments.sdi) -> the thesis' column index
OUR_COLUMNS = {"clean": 0, "pgd10": 1, "pgd20": 2, "pgd50": 3, "cw20": 4, "apgd-ce": 5, "aa": 6}
# our method labels -> the thesis' row names
OUR_METHODS = {"FGSM-SDI": "FGSM-SDI", "FGSM-RS": "FGSM-RS", "FGSM-CKPT": "FGSM-CKPT", "FGSM-GA": "FGSM-GA",
               "Free-AT (m=8)": "Free-AT(m=8)", "PGD-AT": "PGD-AT"}


def cell(table: dict, method: str, column: str, checkpoint: str = "Best"):
    """The thesis' value for our ``method`` label and ``column`` name (None if not printed)."""
    row = table.get(OUR_METHODS.get(method, method))
    if row is None or column not in OUR_COLUMNS and column != "time":
        return None
    if column == "time":
        return row.get("Time(min)") if isinstance(row, dict) else row[7]
    vals = row.get(checkpoint) if isinstance(row, dict) else row
    return None if vals is None else vals[OUR_COLUMNS[column]]
