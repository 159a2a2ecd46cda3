"""The thesis' Smooth-AT numbers as printed (ch. 4; all ImageNet, ResNet-50 unless noted,
PGD-1 training at eps = step = 4/255, robustness = top-1 under PGD-200 at eps 4/255, step 1/255).
Values the text does not give are None, never read off a figure or invented."""

# Table X: (smooth backward for the attacker, for the optimizer) -> (accuracy %, robustness %)
TABLE_X = {
    (False, False): (68.8, 33.0),
    (True, False): (68.3, 34.5),
    (False, True): (69.4, 35.8),
    (True, True): (68.9, 36.9),
}
# Sec. 4.3.3 alternatives for the ReLU baseline, as changes against row 1 of Table X
PGD2_DELTA = {"accuracy": -0.1, "robustness": +0.6}  # "increases ... by 0.6 ... sacrificing 0.1"
SCHEDULE_2X_DELTA = {"accuracy": +2.6, "robustness": -1.8}  # 200 epochs instead of 100
TRAIN_LOSS = {"relu": 2.71, "relu_smooth_optimizer": 2.59, "relu_2x_schedule": 2.62}

# Fig. 30 (+ Sec. 4.4.2 for SmoothReLU): activation -> (accuracy %, robustness %); only what
# the text states (Fig. 30's bars are not in the text for Softplus, GELU, ELU)
FIG_30 = {
    "relu": (68.8, 33.0),
    "parametric_softplus": (None, 38.7),  # "at least 5.7 percent (Parametric Softplus, 33 -> 38.7)"
    "softplus": (None, None),
    "silu": (69.7, 42.3),
    "gelu": (None, None),
    "elu": (None, 41.1),  # Table XI, a = 1
    "smooth_relu": (69.4, 40.3),
}
# backward-only parametric softplus (Table X row 4) vs forward + backward (Fig. 30): 36.9 -> 38.7

# Table XI: ELU vs CELU robustness; a = 1 is 41.1 % for both, the rest are changes from it
TABLE_XI_BASE = 41.1
TABLE_XI = {  # a -> (ELU delta, CELU delta)
    1.0: (0.0, 0.0),
    1.2: (-0.3, +0.1),
    1.4: (-2.0, -0.3),
    1.6: (-3.7, -0.3),
    1.8: (-6.2, -0.2),
    2.0: (-7.9, -0.5),
}

# Table XII (SAT = SiLU) and XVII, for the record (not reproduced at CPU scale)
TABLE_XII = {
    "ResNet-50": (69.7, 42.3), "ResNet-101": (72.9, 45.5), "ResNet-152": (73.9, 46.0),
    "ResNeXt-50-32x4d": (71.2, 42.5), "ResNeXt-50-32x8d": (73.6, 45.1), "ResNet-50 @299": (70.9, 43.8),
    "ResNet-50 @380": (71.6, 44.1), "ResNeXt-152-32x8d @380": (78.2, 51.2),
}
TABLE_XVII = {"prior art": (72.7, 47.0), "EfficientNet-L1 + SAT": (82.2, 58.6)}

# Sec. 4.7, CIFAR-10 (ResNet-18, PGD-1 eps = step = 8/255, AutoAttack): statements only
CIFAR10_CLAIMS = {
    "better_than_relu": ("softplus", "gelu", "smooth_relu"),  # similar accuracy, more robust
    "robustness_gain_range": (0.7, 2.3),  # GELU +0.7 ... Softplus +2.3 (AutoAttack)
    "worse_than_relu": ("elu", "silu"),
    "train_error_increase": {"silu": 4.1, "elu": 10.6},
}
