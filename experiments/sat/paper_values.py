"""Numbers printed in Jin et al., "Explaining Adversarial Robustness of Neural Networks from
Clustering Effect Perspective" (ICCV 2023), as printed (accuracy, %). Figures 1-8 are not in our
copy of the paper (only their captions): their claims are qualitative and checked as such."""

# Table 1 columns
COLUMNS = ("Clean", "FGSM", "BIM-100", "PGD-100", "CW-inf", "AutoAttack-100", "LAFEAT-100")

TABLE1_RESNET18 = {
    "PGD-AT": (81.32, 60.83, 40.19, 38.75, 38.68, 38.02, 37.05),
    "TRADES": (82.45, 62.94, 45.33, 44.88, 45.46, 43.38, 42.02),
    "MART": (81.07, 63.36, 45.72, 44.68, 46.67, 44.36, 40.14),
    "AWP-AT": (82.97, 63.15, 48.94, 47.07, 47.57, 47.36, 46.14),
    "SAT": (81.77, 61.03, 42.83, 42.92, 43.46, 42.52, 43.08),
    "SAT-TRADES": (82.25, 63.40, 45.83, 45.80, 46.25, 43.69, 45.35),
    "SAT-AWP-AT": (82.68, 63.34, 49.08, 48.82, 48.07, 47.64, 48.95),
}
TABLE1_WRN28_10 = {
    "PGD-AT": (83.52, 65.21, 44.81, 44.72, 44.12, 44.24, 41.71),
    "TRADES": (84.25, 66.88, 49.74, 49.92, 49.15, 47.57, 45.31),
    "MART": (85.17, 66.52, 52.41, 52.03, 50.95, 49.34, 45.90),
    "AWP-AT": (84.16, 67.54, 54.38, 54.36, 52.47, 50.14, 48.61),
    "SAT": (84.22, 65.52, 44.18, 44.95, 44.43, 44.10, 43.75),
    "SAT-TRADES": (84.90, 67.56, 50.56, 50.40, 50.48, 48.28, 49.35),
    "SAT-AWP-AT": (84.50, 68.49, 54.79, 54.60, 53.55, 51.44, 54.70),
}
# Table 2: SAT against converged attacks (PGD-1000, AutoAttack-1000, LAFEAT-1000)
TABLE2 = {
    "CIFAR10 ResNet-18": (42.28, 42.06, 42.49),
    "CIFAR10 WRN28x10": (44.80, 44.05, 44.55),
    "CIFAR100 ResNet-18": (31.35, 30.04, 31.69),
}
# Table 3: generated data (AutoAttack, LAFEAT) for TRADES and SAT-TRADES
TABLE3 = {
    "100K": {"TRADES": (53.27, 50.85), "SAT-TRADES": (53.36, 54.60)},
    "500K": {"TRADES": (62.82, 61.39), "SAT-TRADES": (62.51, 62.64)},
    "1M": {"TRADES": (63.46, 62.88), "SAT-TRADES": (63.56, 64.17)},
}
