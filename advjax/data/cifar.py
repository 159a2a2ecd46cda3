"""CIFAR-10/100 "python version" batches, read through a restricted unpickler.

The official archives (Krizhevsky 2009, https://www.cs.toronto.edu/~kriz/cifar.html) hold pickled
dicts: ``data`` uint8 [N, 3072] (channel-major 3x32x32 rows) and ``labels`` (CIFAR-10) or
``fine_labels`` / ``coarse_labels`` (CIFAR-100). A pickle can run arbitrary code, so
`safe_unpickle` only resolves the few globals such dicts need (numpy's array and dtype
reconstructors, ``_codecs.encode`` for protocol-2 bytes, builtin containers); any other global is a
`DataFormatError` before anything is called. Truncated or malformed streams are also
`DataFormatError`.
"""
from __future__ import annotations

import io
import pathlib
import pickle

import numpy as np

from advjax.data.dataset import DataFormatError

__all__ = ["safe_unpickle", "find_cifar_files", "load_cifar_split", "CIFAR_FOLDERS"]

# dataset -> (folder in the official archive, files per split)
CIFAR_FOLDERS = {
    "cifar10": (
        "cifar-10-batches-py",
        {"train": tuple(f"data_batch_{i}" for i in range(1, 6)), "test": ("test_batch",)},
    ),
    "cifar100": ("cifar-100-python", {"train": ("train",), "test": ("test",)}),
}


def _allowed_globals() -> dict[tuple[str, str], object]:
    import _codecs

    try:
        from numpy._core import multiarray as ma, numeric as nu
    except ImportError:  # numpy < 2
        from numpy.core import multiarray as ma, numeric as nu  # type: ignore
    allowed = {}
    for mod in ("numpy.core", "numpy._core"):
        allowed[(f"{mod}.multiarray", "_reconstruct")] = ma._reconstruct
        allowed[(f"{mod}.multiarray", "scalar")] = ma.scalar
        if hasattr(nu, "_frombuffer"):
            allowed[(f"{mod}.numeric", "_frombuffer")] = nu._frombuffer
    allowed[("numpy", "ndarray")] = np.ndarray
    allowed[("numpy", "dtype")] = np.dtype
    allowed[("_codecs", "encode")] = _codecs.encode
    for name in ("dict", "list", "tuple", "set", "frozenset", "bytearray", "bytes", "str", "int",
                 "float", "bool", "complex"):
        allowed[("builtins", name)] = getattr(__import__("builtins"), name)
        allowed[("__builtin__", name)] = getattr(__import__("builtins"), name)
    return allowed


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file, path, allowed):
        super().__init__(file, encoding="bytes")
        self._path, self._allowed = path, allowed

    def find_class(self, module, name):
        obj = self._allowed.get((module, name))
        if obj is None:
            raise DataFormatError(
                f"{self._path}: refusing to unpickle global {module}.{name}: a CIFAR batch holds "
                "only builtin containers, bytes, str, ints and numpy arrays (tampered or not a "
                "CIFAR file)"
            )
        return obj

    def persistent_load(self, pid):
        raise DataFormatError(f"{self._path}: persistent ids are not allowed in a CIFAR batch")


def safe_unpickle(path: str | pathlib.Path) -> object:
    """Unpickle ``path`` admitting only builtin containers, bytes, str, numbers and numpy arrays."""
    path = pathlib.Path(path)
    raw = path.read_bytes()
    try:
        return _RestrictedUnpickler(io.BytesIO(raw), path, _allowed_globals()).load()
    except DataFormatError:
        raise
    except Exception as e:  # UnpicklingError, EOFError, ValueError, TypeError, ...
        raise DataFormatError(
            f"{path}: corrupt or truncated pickle ({type(e).__name__}: {e})"
        ) from e


def _key(d: dict, name: str):
    for k in (name.encode(), name):
        if k in d:
            return d[k]
    return None


def _read_batch(path: pathlib.Path, label_key: str) -> tuple[np.ndarray, np.ndarray]:
    d = safe_unpickle(path)
    if not isinstance(d, dict):
        raise DataFormatError(f"{path}: expected a pickled dict, got {type(d).__name__}")
    data, labels = _key(d, "data"), _key(d, label_key)
    if data is None or labels is None:
        keys = sorted(k.decode() if isinstance(k, bytes) else str(k) for k in d)
        raise DataFormatError(f"{path}: needs keys 'data' and {label_key!r}, found {keys}")
    data = np.asarray(data)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise DataFormatError(
            f"{path}: 'data' must be uint8 [N, 3072], got {data.dtype} {data.shape}"
        )
    try:
        labels = np.asarray(labels, dtype=np.int64)
    except (TypeError, ValueError) as e:
        raise DataFormatError(f"{path}: {label_key!r} is not a list of integers ({e})") from e
    if labels.shape != (data.shape[0],):
        raise DataFormatError(
            f"{path}: {data.shape[0]} images but {label_key!r} has shape {labels.shape}"
        )
    x = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(x), labels.astype(np.int32)


def find_cifar_files(name: str, root: pathlib.Path, split: str) -> list[pathlib.Path] | None:
    """The batch files of ``split`` under ``root`` (``root/<official folder>/`` or
    ``root/<name>/<official folder>/``), or None if any is missing."""
    folder, files = CIFAR_FOLDERS[name]
    if split not in files:
        return None
    for base in (root / folder, root / name / folder):
        paths = [base / f for f in files[split]]
        if all(p.is_file() for p in paths):
            return paths
    return None


def load_cifar_split(
    name: str, paths: list[pathlib.Path], label_mode: str = "fine"
) -> tuple[np.ndarray, np.ndarray, int]:
    """(x uint8 [N, 32, 32, 3], y int32 [N], num_classes) from the batch files."""
    if name == "cifar10":
        label_key, num_classes = "labels", 10
    elif label_mode in ("fine", "coarse"):
        label_key, num_classes = f"{label_mode}_labels", (100 if label_mode == "fine" else 20)
    else:
        raise ValueError(f"label_mode must be 'fine' or 'coarse' for cifar100, got {label_mode!r}")
    xs, ys = zip(*(_read_batch(p, label_key) for p in paths))
    return np.concatenate(xs), np.concatenate(ys), num_classes
