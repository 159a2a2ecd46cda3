"""SVHN "cropped digits" in its official MATLAB format (``<split>_32x32.mat``).

Netzer et al. 2011 (http://ufldl.stanford.edu/housenumbers/): ``X`` uint8 [32, 32, 3, N] and ``y``
[N, 1] with labels 1..10, where 10 stands for the digit 0 (tfds's ``svhn_cropped`` maps it to 0,
and so do we). Read with ``scipy.io.loadmat`` (plain data, no code execution).
"""
from __future__ import annotations

import pathlib

import numpy as np

from advjax.data.dataset import DataFormatError

__all__ = ["find_svhn_mat", "load_svhn_mat"]


def find_svhn_mat(root: pathlib.Path, dir_names: tuple[str, ...], split: str) -> pathlib.Path | None:
    """``root/<dir>/<split>_32x32.mat`` (or directly ``root/<split>_32x32.mat``) if present."""
    for d in (*dir_names, "."):
        p = root / d / f"{split}_32x32.mat"
        if p.is_file():
            return p
    return None


def load_svhn_mat(path: pathlib.Path) -> tuple[np.ndarray, np.ndarray]:
    """(x uint8 [N, 32, 32, 3], y int32 [N] in 0..9) from an official SVHN .mat file."""
    from scipy.io import loadmat

    try:
        m = loadmat(str(path))
        x, y = np.asarray(m["X"]), np.asarray(m["y"]).reshape(-1)
    except Exception as e:  # noqa: BLE001 - truncated / not a .mat / missing keys
        raise DataFormatError(f"{path}: not a readable SVHN .mat file ({type(e).__name__}: {e})") from e
    if x.dtype != np.uint8 or x.ndim != 4 or x.shape[:3] != (32, 32, 3) or x.shape[3] != y.shape[0]:
        raise DataFormatError(
            f"{path}: expected X uint8 [32, 32, 3, N] and y [N, 1], got X {x.dtype} {x.shape}, "
            f"y {y.shape}"
        )
    y = y.astype(np.int64)
    if y.size and (y.min() < 1 or y.max() > 10):
        raise DataFormatError(f"{path}: SVHN labels must be 1..10, got [{y.min()}, {y.max()}]")
    return np.ascontiguousarray(x.transpose(3, 0, 1, 2)), np.where(y == 10, 0, y).astype(np.int32)
