"""Minibatch iteration over a `Dataset`: deterministic shuffling, uint8 -> float32 in [0, 1].

The order of epoch ``e`` under seed ``s`` is the permutation drawn by
``numpy.random.default_rng(SeedSequence([s, e]))``: the same (seed, epoch) always gives the same
batches, on any machine, independent of how many batches were consumed before.

Several processes (``advjax.train.distributed``): every process draws the same global order and
batches only its share of each global batch (``process_index`` / ``process_count``: the
``process_index``-th of ``process_count`` equal contiguous blocks, the rows its devices hold on a
mesh made by ``advjax.train.mesh.make_mesh``), so the concatenation of the processes' batches is,
row for row, the single-process batch. Per-example randomness inside a step (augmentation, attack
starts) is drawn for the assembled global batch, so it follows the global example position and the
numbers do not depend on the process count.
"""
from __future__ import annotations

from typing import Iterator

import numpy as np

from advjax.data.dataset import Dataset

__all__ = ["batches", "num_batches", "epoch_order", "to_float"]


def _xy(ds) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(ds, Dataset):
        return ds.x, ds.y
    if isinstance(ds, (tuple, list)) and len(ds) == 2:
        x, y = np.asarray(ds[0]), np.asarray(ds[1])
        if x.shape[0] != y.shape[0]:
            raise ValueError(f"x has {x.shape[0]} rows but y has {y.shape[0]}")
        return x, y
    raise ValueError(f"expected a Dataset or an (x, y) pair, got {type(ds).__name__}")


def to_float(x: np.ndarray) -> np.ndarray:
    """uint8 pixels -> float32 in [0, 1] (x / 255); anything else -> float32 unchanged."""
    if x.dtype == np.uint8:
        return x.astype(np.float32) / np.float32(255.0)
    return x.astype(np.float32, copy=False)


def _check_seed(name: str, v) -> int:
    if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 0:
        raise ValueError(f"{name} must be a non-negative integer, got {v!r}")
    return int(v)


def epoch_order(n: int, seed: int = 0, epoch: int = 0, shuffle: bool = True) -> np.ndarray:
    """The example order of one epoch: a permutation of range(n) fixed by (seed, epoch)."""
    if not shuffle:
        return np.arange(n)
    rng = np.random.default_rng(np.random.SeedSequence([_check_seed("seed", seed),
                                                        _check_seed("epoch", epoch)]))
    return rng.permutation(n)


def num_batches(ds, batch_size: int, drop_remainder: bool = True) -> int:
    """How many batches `batches` yields for these arguments."""
    n = _xy(ds)[0].shape[0]
    return n // batch_size if drop_remainder else -(-n // batch_size)


def batches(
    ds,
    batch_size: int,
    seed: int = 0,
    epoch: int = 0,
    shuffle: bool = True,
    drop_remainder: bool = True,
    process_index: int = 0,
    process_count: int = 1,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield ``(x float32, y int32)`` numpy batches of one epoch of ``ds``.

    Args:
      ds: a `Dataset` or an ``(x, y)`` pair of arrays.
      batch_size: examples per batch (>= 1).
      seed, epoch: fix the shuffle order (see `epoch_order`); use epoch = 0, 1, 2, ... per epoch.
      shuffle: False keeps the stored order.
      drop_remainder: True drops the last partial batch so every batch has the same (static)
        shape, which is what a jitted step wants; False yields it as a smaller last batch.
      process_index, process_count: yield only this process's block of each global batch of
        ``batch_size`` (which must divide by ``process_count``; with ``drop_remainder=False`` the
        last, smaller batch too); only those rows are converted to float32.

    uint8 pixels become float32 in [0, 1]; float inputs (Moon features, digits) pass unchanged.
    Arguments are checked when called, not at the first ``next``.
    """
    x, y = _xy(ds)
    if not isinstance(batch_size, (int, np.integer)) or isinstance(batch_size, bool) \
            or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    n = x.shape[0]
    if drop_remainder and n < batch_size:
        raise ValueError(
            f"batch_size {batch_size} exceeds the {n} examples and drop_remainder=True "
            "would yield no batch"
        )
    process_count = _check_seed("process_count", process_count) if process_count != 1 else 1
    process_index = _check_seed("process_index", process_index)
    if process_count < 1 or process_index >= process_count:
        raise ValueError(f"process_index {process_index} is out of range for {process_count} processes")
    last = n % batch_size if not drop_remainder else 0
    for size in (batch_size, last):
        if size % process_count:
            raise ValueError(f"a batch of {size} examples does not split evenly over {process_count} processes; "
                             f"use a batch size divisible by {process_count}")
    order = epoch_order(n, seed, epoch, shuffle)
    stop = (n // batch_size) * batch_size if drop_remainder else n

    def gen():
        for start in range(0, stop, batch_size):
            idx = order[start:start + batch_size]
            share = len(idx) // process_count
            idx = idx[process_index * share:(process_index + 1) * share]
            yield to_float(x[idx]), y[idx].astype(np.int32, copy=False)

    return gen()
