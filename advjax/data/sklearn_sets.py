"""The two scikit-learn datasets: Moon (generated) and digits (shipped with scikit-learn).

* ``moons``: the two interleaving half circles of `sklearn.datasets.make_moons`, the "Moon
  dataset" of the LSA paper (Khalooei et al., "Layer-wise Regularized Adversarial Training using
  Layers Sustainability Analysis"), used with Model A and decision-boundary plots. Features are
  float32 [N, 2] in feature units, so ``domain`` is None (attacks do not clip; ε is in feature
  units, 0.1-0.5 in the paper). One sample of ``n_samples`` points is drawn from ``seed`` and
  split by a seeded permutation into train (first ``1 - test_fraction``) and test; the same
  arguments always give the same points, and the two splits never overlap.
* ``digits``: the 1,797 8x8 handwritten digits of `sklearn.datasets.load_digits` (UCI optdigits
  test set), pixel counts 0..16 divided by 16, as float32 [N, 8, 8, 1] in [0, 1] (exact; a uint8
  rescale would round). Split into train/test by a stratified, seeded split.
"""
from __future__ import annotations

import numpy as np

from advjax.data.dataset import Dataset

__all__ = ["load_moons", "load_digits"]


def _check_fraction(test_fraction: float) -> None:
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")


def load_moons(
    split: str,
    n_samples: int = 1000,
    noise: float = 0.1,
    seed: int = 0,
    test_fraction: float = 0.2,
) -> Dataset:
    """The full ``split`` ("train" or "test") of the Moon data; see the module docstring."""
    from sklearn.datasets import make_moons

    if not isinstance(n_samples, (int, np.integer)) or n_samples < 2:
        raise ValueError(f"n_samples must be an integer >= 2, got {n_samples!r}")
    if noise < 0:
        raise ValueError(f"noise must be >= 0, got {noise}")
    _check_fraction(test_fraction)
    x, y = make_moons(n_samples=int(n_samples), noise=float(noise), shuffle=True, random_state=seed)
    perm = np.random.default_rng(seed).permutation(len(x))
    n_test = max(1, int(round(len(x) * test_fraction)))
    idx = perm[n_test:] if split == "train" else perm[:n_test]
    return Dataset(
        x=x[idx].astype(np.float32),
        y=y[idx].astype(np.int32),
        num_classes=2,
        domain=None,
        name="moons",
        split=split,
        source=f"sklearn:make_moons(n_samples={n_samples}, noise={noise}, random_state={seed})",
    )


def load_digits(split: str, seed: int = 0, test_fraction: float = 0.2) -> Dataset:
    """The full ``split`` ("train" or "test") of scikit-learn's digits; stratified by class."""
    from sklearn.datasets import load_digits as _load
    from sklearn.model_selection import train_test_split

    _check_fraction(test_fraction)
    bunch = _load()
    x = (bunch.images.astype(np.float32) / 16.0)[..., None]
    y = bunch.target.astype(np.int32)
    idx_train, idx_test = train_test_split(
        np.arange(len(y)), test_size=test_fraction, stratify=y, random_state=seed
    )
    idx = np.sort(idx_train if split == "train" else idx_test)
    return Dataset(
        x=x[idx], y=y[idx], num_classes=10, domain=(0.0, 1.0), name="digits", split=split,
        source=f"sklearn:load_digits (stratified split, random_state={seed})",
    )
