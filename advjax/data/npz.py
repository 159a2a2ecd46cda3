"""Datasets stored as numpy ``.npz`` archives (read with ``allow_pickle=False``: data only).

Two layouts are recognised in ``<dir>/<name>/*.npz`` (and ``<dir>/<name>.npz``):

* one split per file: arrays ``x`` and ``y``, the split named by the start of the file name
  (``test.npz``, ``test_jpeg_q75.npz``, ``train-part1.npz``, ``validation.npz``/``val*.npz``);
* several splits per file: arrays ``x_<split>`` and ``y_<split>`` (``x_train``, ``x_test``, ...).

When several files hold the same split, the one with the most examples is used (ties: the
alphabetically first); ``load(..., file="name.npz")`` picks one explicitly, and then a file with
plain ``x``/``y`` whatever its name counts as the requested split.

``x`` is uint8 [N, H, W, C] (or [N, H, W], given a channel axis), or floating point already in
[0, 1] (stored as float32); ``y`` integer [N] (or [N, 1]).
"""
from __future__ import annotations

import contextlib
import pathlib
import zipfile

import numpy as np

from advjax.data.dataset import DataFormatError

__all__ = ["npz_candidates", "npz_splits", "npz_length", "find_npz", "load_npz_split"]

_PREFIXES = {
    "train": ("train",),
    "test": ("test", "t10k"),
    "validation": ("validation", "valid", "val"),
    "extra": ("extra",),
}
_KEY_ALIASES = {"validation": ("validation", "val", "valid")}


def npz_candidates(root: pathlib.Path, dir_names: tuple[str, ...]) -> list[pathlib.Path]:
    """All ``.npz`` files under ``root/<dir_name>/`` and ``root/<dir_name>.npz``, sorted."""
    out: list[pathlib.Path] = []
    for d in dir_names:
        folder = root / d
        if folder.is_dir():
            out += sorted(p for p in folder.glob("*.npz") if p.is_file())
        single = root / f"{d}.npz"
        if single.is_file():
            out.append(single)
    return list(dict.fromkeys(out))


@contextlib.contextmanager
def _open(path: pathlib.Path):
    """np.load of an .npz (no pickles), closing the file even when the archive is broken."""
    with open(path, "rb") as fh:
        try:
            archive = np.load(fh, allow_pickle=False)
        except (zipfile.BadZipFile, ValueError, EOFError, OSError) as e:
            raise DataFormatError(
                f"{path}: not a readable .npz archive ({type(e).__name__}: {e})"
            ) from e
        if not isinstance(archive, np.lib.npyio.NpzFile):
            raise DataFormatError(f"{path}: a single .npy array, not an .npz archive")
        with archive:
            yield archive


def npz_splits(path: pathlib.Path, explicit: bool = False) -> dict[str, tuple[str, str]]:
    """Map split -> (x key, y key) of the splits ``path`` provides (reads only the zip index).

    ``explicit``: the user named this file; then plain ``x``/``y`` count as any split (key "*").
    """
    with _open(path) as f:
        keys = set(f.files)
    found: dict[str, tuple[str, str]] = {}
    for split in _PREFIXES:
        for alias in _KEY_ALIASES.get(split, (split,)):
            if f"x_{alias}" in keys and f"y_{alias}" in keys:
                found[split] = (f"x_{alias}", f"y_{alias}")
                break
    if "x" in keys and "y" in keys:
        stem = path.stem.lower()
        for split, prefixes in _PREFIXES.items():
            if any(stem.startswith(p) for p in prefixes):
                found.setdefault(split, ("x", "y"))
        if explicit:
            found.setdefault("*", ("x", "y"))
    return found


def npz_length(path: pathlib.Path, key: str) -> int:
    """Number of rows of array ``key`` in ``path``, from the .npy header alone."""
    try:
        with zipfile.ZipFile(path) as z, z.open(f"{key}.npy") as fh:
            version = np.lib.format.read_magic(fh)
            read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                    else np.lib.format.read_array_header_2_0)
            shape, _, _ = read(fh)
    except Exception as e:  # noqa: BLE001 - any failure means a broken archive
        raise DataFormatError(f"{path}: cannot read the header of {key!r} ({e})") from e
    return int(shape[0]) if shape else 0


def find_npz(
    candidates: list[pathlib.Path], split: str, explicit: bool = False
) -> tuple[pathlib.Path, str, str] | None:
    """(path, x key, y key) of the best file providing ``split`` among ``candidates``, or None."""
    best = None
    for path in candidates:
        splits = npz_splits(path, explicit)
        keys = splits.get(split) or splits.get("*")
        if keys is None:
            continue
        n = npz_length(path, keys[0])
        if best is None or n > best[0]:
            best = (n, path, *keys)
    return None if best is None else best[1:]


def load_npz_split(
    path: pathlib.Path, x_key: str, y_key: str, input_shape: tuple[int, ...]
) -> tuple[np.ndarray, np.ndarray]:
    """(x uint8 NHWC or float32, y int32) from ``path``, validated against ``input_shape``."""
    try:
        with _open(path) as f:
            x, y = f[x_key], f[y_key]
    except DataFormatError:
        raise
    except Exception as e:  # truncated member, CRC error, object array, ...
        raise DataFormatError(
            f"{path}: cannot read arrays {x_key!r}/{y_key!r} ({type(e).__name__}: {e}); "
            "the file is truncated, corrupt or holds pickled objects"
        ) from e
    if x.ndim == len(input_shape) and input_shape[-1] == 1:
        x = x[..., None]
    if tuple(x.shape[1:]) != tuple(input_shape):
        raise DataFormatError(
            f"{path}: {x_key!r} has shape {x.shape}; expected [N, {', '.join(map(str, input_shape))}]"
            " (NHWC)"
        )
    if x.dtype == np.uint8:
        pass
    elif np.issubdtype(x.dtype, np.floating):
        if x.size and (not np.isfinite(x).all() or x.min() < 0.0 or x.max() > 1.0):
            raise DataFormatError(f"{path}: floating {x_key!r} must be finite and in [0, 1]")
        x = x.astype(np.float32)
    else:
        raise DataFormatError(f"{path}: {x_key!r} must be uint8 or float in [0, 1], got {x.dtype}")
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        raise DataFormatError(f"{path}: {y_key!r} must be integer labels [N], got {y.dtype} {y.shape}")
    if y.shape[0] != x.shape[0]:
        raise DataFormatError(f"{path}: {x.shape[0]} inputs but {y.shape[0]} labels")
    return x, y.astype(np.int32)
