"""The paper's numbers as printed (accuracy %, CIFAR-10 unless noted). Table 3's body is missing
from our copy of the paper (the caption survives, the numbers do not): not quoted, never invented."""

# Table 1: a conventionally trained VGG on CIFAR-10 test data; FGS at the input vs the
# previous-sample layerwise perturbation at every point (fixed eps)
TABLE1_EPS = (0.0, 0.05, 0.1, 0.15, 0.2)
TABLE1 = {
    "FGS (input)": (92.4, 53.28, 41.58, 36.44, 33.85),
    "Ours - all layers": (92.4, 48.56, 21.72, 14.76, 14.19),
}

# Table 2 (toy, §3.4): FGS examples from each net, classified by the baseline net
TABLE2_EPS = (0.0, 0.02, 0.04, 0.06, 0.08, 0.1)
TABLE2 = {
    "Baseline n/w": (39.51, 8.6, 1.92, 0.51, 0.12, 0.03),
    "FGS n/w": (39.51, 32.14, 26.08, 20.74, 16.23, 12.47),
    "Our n/w": (39.51, 26.92, 18.16, 12.23, 8.63, 6.05),
}
TOY_CLEAN = {"Baseline": 39.5, "Ours": 43.3, "FGS": 40.5}  # §3.4 text

# Table 4: accuracy under FGS at eps 0 ... 0.1 and the training time relative to the baseline
TABLE4_EPS = (0.0, 0.02, 0.04, 0.06, 0.08, 0.1)
TABLE4 = {
    "Baseline": (89.4, 67.5, 49.6, 41.2, 37.3, 34.7),
    "FGS-orig": (88.7, 86.4, 84.1, 81.4, 80.5, 77.1),
    "FGS-inter": (90.9, 87.79, 83.85, 79.65, 74.69, 69.92),
    "Ours-orig": (91.2, 87.95, 83.84, 79.11, 73.66, 68.37),
    "Ours-joint": (91.5, 86.07, 81.38, 75.72, 70.25, 64.76),
}
TABLE4_TIME = {"Baseline": 1.0, "FGS-orig": 2.0, "FGS-inter": 2.0, "Ours-orig": 1.0, "Ours-joint": 2.0}

# Table 5: VGG with / without dropout, baseline vs perturbed (Ours-orig), no augmentation
TABLE5 = {
    "cifar10": {"w/o dropout": (89.4, 91.3), "with dropout": (91.5, 92.1)},
    "cifar100": {"w/o dropout": (69.8, 72.3), "with dropout": (70.5, 73.1)},
}

# Table 6: perturbing conv1 up to pool k (VGG, CIFAR-10); baseline 89.4
TABLE6 = {1: 89.5, 2: 89.62, 3: 90.24, 4: 91.1, 5: 91.3}
TABLE6_BASELINE = 89.4

# Table 7 (appendix): error rates %, WRN-28-10 (Ours-joint: mean of 5 runs)
TABLE7 = {"WRN-28-10": (4.00, 19.25), "WRN-28-10 with dropout": (3.89, 18.85),
          "WRN-40-10 with dropout": (3.8, 18.3), "WRN-28-10 with Ours-joint": (3.62, 17.1)}
