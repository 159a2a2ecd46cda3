"""The CPU-scale CIFAR-10 split shared by the experiment families.

These machines have only the CIFAR-10 **test** set (``../shared/data/cifar10/test_jpeg_q75.npz``,
1000 images per class, stored sorted by class). CPU-scale experiments train on 900 images per class
and evaluate on the other 100, drawn per class with a fixed seed, so every run of an experiment
sees the same split and both halves hold every class equally.
"""
from __future__ import annotations

from experiments._shared_data import load_local


def cifar10_test_split(seed: int, n_train: int | None = None, per_class_train: int = 900):
    """((x_train, y_train), (x_eval, y_eval)) as uint8 NHWC / int32 numpy arrays from the CIFAR-10
    test images: ``per_class_train`` images per class for training, the rest for evaluation, each
    half shuffled; ``n_train`` keeps only the first images of the (shuffled) training half."""
    import numpy as np

    ds = load_local("cifar10", "test")
    x, y = np.asarray(ds.x), np.asarray(ds.y, np.int32)
    rng = np.random.default_rng(seed)
    tr, te = [], []
    for c in range(ds.num_classes):
        idx = rng.permutation(np.flatnonzero(y == c))
        tr.append(idx[:per_class_train])
        te.append(idx[per_class_train:])
    tr, te = rng.permutation(np.concatenate(tr)), rng.permutation(np.concatenate(te))
    if n_train is not None:
        tr = tr[:n_train]
    return (x[tr], y[tr]), (x[te], y[te])
