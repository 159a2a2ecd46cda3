"""MNIST-style IDX files (gzip or raw): the official format of MNIST and Fashion-MNIST.

IDX layout (LeCun et al., http://yann.lecun.com/exdb/mnist/): two zero bytes, a type byte (0x08 =
uint8), a rank byte, then ``rank`` big-endian uint32 dimensions, then the payload. Images are magic
2051 (rank 3), labels 2049 (rank 1). Every header field and the payload length are checked, so a
truncated or corrupt file is a `DataFormatError` naming the file, not a numpy error.
"""
from __future__ import annotations

import gzip
import pathlib
import zlib

import numpy as np

from advjax.data.dataset import DataFormatError

__all__ = ["read_idx", "find_idx_pair", "load_idx_split", "IDX_PREFIX"]

# split -> file-name prefix in the official releases
IDX_PREFIX = {"train": "train", "test": "t10k"}
_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
           0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


def _read_bytes(path: pathlib.Path) -> bytes:
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":  # gzip magic, whatever the file is called
        try:
            return gzip.decompress(raw)
        except (EOFError, OSError, zlib.error) as e:
            raise DataFormatError(f"{path}: corrupt or truncated gzip stream ({e})") from e
    return raw


def read_idx(path: str | pathlib.Path) -> np.ndarray:
    """Read one IDX file (gzipped or not) into a numpy array, validating header and length."""
    path = pathlib.Path(path)
    data = _read_bytes(path)
    if len(data) < 4:
        raise DataFormatError(f"{path}: {len(data)} bytes is too short for an IDX header")
    if data[0] != 0 or data[1] != 0 or data[2] not in _DTYPES:
        raise DataFormatError(
            f"{path}: not an IDX file (header bytes {data[:4].hex()}; expected 0000 + type + rank)"
        )
    dtype, rank = np.dtype(_DTYPES[data[2]]), data[3]
    if not 1 <= rank <= 4:
        raise DataFormatError(f"{path}: IDX rank {rank} is not in 1..4")
    header = 4 + 4 * rank
    if len(data) < header:
        raise DataFormatError(f"{path}: truncated IDX header")
    dims = tuple(int(d) for d in np.frombuffer(data, ">u4", count=rank, offset=4))
    expected = header + int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    if len(data) != expected:
        raise DataFormatError(
            f"{path}: IDX header says shape {dims} of {dtype} ({expected} bytes with header) "
            f"but the file holds {len(data)} bytes (truncated or corrupt)"
        )
    return np.frombuffer(data, dtype, offset=header).reshape(dims).astype(dtype.newbyteorder("="))


def _candidates(folder: pathlib.Path, prefix: str, kind: str, rank: int) -> list[pathlib.Path]:
    stems = [f"{prefix}-{kind}-idx{rank}-ubyte", f"{prefix}-{kind}.idx{rank}-ubyte"]
    return [folder / (s + ext) for s in stems for ext in (".gz", "")]


def find_idx_pair(folder: pathlib.Path, split: str) -> tuple[pathlib.Path, pathlib.Path] | None:
    """(images, labels) paths of ``split`` in ``folder`` if both exist, else None."""
    prefix = IDX_PREFIX.get(split)
    if prefix is None:
        return None
    imgs = [p for p in _candidates(folder, prefix, "images", 3) if p.is_file()]
    labs = [p for p in _candidates(folder, prefix, "labels", 1) if p.is_file()]
    if imgs and labs:
        return imgs[0], labs[0]
    return None


def load_idx_split(images: pathlib.Path, labels: pathlib.Path) -> tuple[np.ndarray, np.ndarray]:
    """Images as uint8 [N, H, W, 1] and labels as int32 [N] from an IDX pair."""
    x, y = read_idx(images), read_idx(labels)
    if x.ndim != 3 or x.dtype != np.uint8:
        raise DataFormatError(f"{images}: expected uint8 images of rank 3, got {x.dtype} {x.shape}")
    if y.ndim != 1:
        raise DataFormatError(f"{labels}: expected labels of rank 1, got shape {y.shape}")
    if x.shape[0] != y.shape[0]:
        raise DataFormatError(
            f"{images} holds {x.shape[0]} images but {labels} holds {y.shape[0]} labels"
        )
    return x[..., None], y.astype(np.int32)
