"""The `Dataset` record, the registry of known datasets, the error types and split specs.

A dataset is plain numpy in host memory: ``x`` is uint8 NHWC pixels (0..255, meaning [0, 1]) or
float32 (features, or images already in [0, 1]) and ``y`` int32 labels. Batching
(`advjax.data.iterate`) turns uint8 into float32 in [0, 1]; the attack box is ``domain``.
"""
from __future__ import annotations

import dataclasses
import re
from typing import Any

import numpy as np

__all__ = [
    "Dataset",
    "DatasetSpec",
    "DatasetNotFoundError",
    "DataFormatError",
    "SplitSpec",
    "parse_split",
    "order_is_random",
    "stratified_order",
    "missing_classes",
    "warn_missing_classes",
    "get_spec",
    "list_datasets",
    "SPECS",
]


class DatasetNotFoundError(FileNotFoundError, ValueError):
    """No local copy of a dataset (or of the requested split) was found.

    Subclasses both FileNotFoundError and ValueError. The message names the dataset, every
    directory searched (with what was found there, if anything) and how to obtain the files.
    """


class DataFormatError(ValueError):
    """A data file exists but is corrupt, truncated, tampered with or not in the expected format."""


@dataclasses.dataclass(frozen=True, eq=False)
class Dataset:
    """One split of a dataset, in host memory.

    Attributes:
      x: uint8 [N, H, W, C] pixels (0..255 meaning [0, 1]), or float32 [N, ...] (features such
        as Moon's [N, 2], or images already scaled into [0, 1] such as digits).
      y: int32 [N] labels in [0, num_classes).
      num_classes: number of classes.
      domain: the input box attacks clip to, ``(0.0, 1.0)`` for images, ``None`` for unbounded
        features (Moon).
      name: canonical dataset name (see `list_datasets`).
      split: the split spec it was loaded with, e.g. ``"test[:8000]"``.
      source: where it was read from (a file or directory, ``"tfds:<dir>"`` or ``"sklearn:..."``),
        followed by how it was reordered before slicing, if it was: ``" (shuffle_seed=S)"`` for
        an explicit seed, ``" (order not random: stratified shuffle, seed 0, before slicing)"``
        when a slice of a source stored in a non-random order (e.g. sorted by class, as the
        shared CIFAR-10 npz) was taken after the deterministic stratified shuffle of
        `stratified_order` (see `advjax.data.load`).
    """

    x: np.ndarray
    y: np.ndarray
    num_classes: int
    domain: tuple[float, float] | None
    name: str
    split: str = ""
    source: str = ""

    def __post_init__(self):
        x, y = self.x, self.y
        if not isinstance(x, np.ndarray) or not isinstance(y, np.ndarray):
            raise TypeError("Dataset.x and Dataset.y must be numpy arrays")
        if x.dtype not in (np.uint8, np.float32):
            raise ValueError(f"Dataset.x must be uint8 or float32, got {x.dtype}")
        if y.dtype != np.int32 or y.ndim != 1:
            raise ValueError(f"Dataset.y must be int32 of rank 1, got {y.dtype} shape {y.shape}")
        if x.shape[0] != y.shape[0]:
            raise ValueError(f"Dataset {self.name}: {x.shape[0]} inputs but {y.shape[0]} labels")
        if y.size and (y.min() < 0 or y.max() >= self.num_classes):
            raise ValueError(
                f"Dataset {self.name}: labels must lie in [0, {self.num_classes}), "
                f"got range [{y.min()}, {y.max()}]"
            )

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Per-example shape, e.g. (28, 28, 1) or (2,)."""
        return tuple(self.x.shape[1:])

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def __repr__(self) -> str:
        return (
            f"Dataset(name={self.name!r}, split={self.split!r}, n={len(self)}, "
            f"x={self.x.dtype}{list(self.x.shape)}, num_classes={self.num_classes}, "
            f"domain={self.domain}, source={self.source!r})"
        )

    def take(self, index: Any, split: str | None = None) -> "Dataset":
        """A new Dataset of ``x[index], y[index]`` (a slice or an index array)."""
        return dataclasses.replace(
            self, x=self.x[index], y=self.y[index], split=self.split if split is None else split
        )


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """Static facts about a known dataset: shape, classes, where its files live, how to get them."""

    name: str
    num_classes: int
    input_shape: tuple[int, ...]
    splits: tuple[str, ...]
    domain: tuple[float, float] | None = (0.0, 1.0)
    tfds_name: str | None = None
    dir_names: tuple[str, ...] = ()  # folder names under a data dir (first is canonical)
    how_to_get: str = ""


_TFDS_HINT = (
    "or prepare it with tensorflow-datasets on a machine with network access "
    "(`tfds build {tfds} --file_format=array_record --data_dir=DIR`) and copy DIR here"
)

SPECS: dict[str, DatasetSpec] = {
    s.name: s
    for s in [
        DatasetSpec(
            "moons", 2, (2,), ("train", "test"), domain=None,
            how_to_get="generated by scikit-learn's make_moons; no files needed",
        ),
        DatasetSpec(
            "digits", 10, (8, 8, 1), ("train", "test"),
            how_to_get="shipped with scikit-learn (load_digits); no files needed",
        ),
        DatasetSpec(
            "mnist", 10, (28, 28, 1), ("train", "test"), tfds_name="mnist",
            dir_names=("mnist", "MNIST"),
            how_to_get=(
                "put the four IDX files (train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, "
                "t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz) from "
                "https://yann.lecun.com/exdb/mnist/ (mirror: "
                "https://ossci-datasets.s3.amazonaws.com/mnist/) into DIR/mnist/, "
                + _TFDS_HINT.format(tfds="mnist")
            ),
        ),
        DatasetSpec(
            "fashion_mnist", 10, (28, 28, 1), ("train", "test"), tfds_name="fashion_mnist",
            dir_names=("fashion_mnist", "fashion-mnist", "FashionMNIST"),
            how_to_get=(
                "put the four IDX files from https://github.com/zalandoresearch/fashion-mnist "
                "(http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/) into "
                "DIR/fashion_mnist/ (Debian: package dataset-fashion-mnist), "
                + _TFDS_HINT.format(tfds="fashion_mnist")
            ),
        ),
        DatasetSpec(
            "cifar10", 10, (32, 32, 3), ("train", "test"), tfds_name="cifar10",
            dir_names=("cifar10", "cifar-10", "CIFAR10"),
            how_to_get=(
                "extract https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz into DIR "
                "(giving DIR/cifar-10-batches-py/), or put an .npz with arrays x, y "
                "(uint8 [N, 32, 32, 3], labels [N]) named <split>*.npz into DIR/cifar10/, "
                + _TFDS_HINT.format(tfds="cifar10")
            ),
        ),
        DatasetSpec(
            "cifar100", 100, (32, 32, 3), ("train", "test"), tfds_name="cifar100",
            dir_names=("cifar100", "cifar-100", "CIFAR100"),
            how_to_get=(
                "extract https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz into DIR "
                "(giving DIR/cifar-100-python/), or put <split>*.npz files with x, y into "
                "DIR/cifar100/, " + _TFDS_HINT.format(tfds="cifar100")
            ),
        ),
        DatasetSpec(
            "svhn_cropped", 10, (32, 32, 3), ("train", "test", "extra"),
            tfds_name="svhn_cropped", dir_names=("svhn_cropped", "svhn", "SVHN"),
            how_to_get=(
                "put train_32x32.mat / test_32x32.mat / extra_32x32.mat from "
                "http://ufldl.stanford.edu/housenumbers/ (label 10 means digit 0) or "
                "<split>*.npz files with x, y into DIR/svhn_cropped/, "
                + _TFDS_HINT.format(tfds="svhn_cropped")
            ),
        ),
        DatasetSpec(
            "tiny_imagenet", 200, (64, 64, 3), ("train", "validation"),
            dir_names=("tiny_imagenet", "tiny-imagenet", "tiny-imagenet-200"),
            how_to_get=(
                "extract http://cs231n.stanford.edu/tiny-imagenet-200.zip into DIR (giving "
                "DIR/tiny-imagenet-200/; its test split has no labels), or put <split>*.npz files "
                "with x (uint8 [N, 64, 64, 3]) and y into DIR/tiny_imagenet/, or a prepared tfds "
                "directory DIR/tiny_imagenet/<version>/"
            ),
        ),
    ]
}

_ALIASES = {
    "moon": "moons",
    "fashion-mnist": "fashion_mnist",
    "fmnist": "fashion_mnist",
    "cifar-10": "cifar10",
    "cifar-100": "cifar100",
    "svhn": "svhn_cropped",
    "tiny-imagenet": "tiny_imagenet",
    "tiny_imagenet200": "tiny_imagenet",
}


def list_datasets() -> list[str]:
    """The canonical names `load` accepts."""
    return list(SPECS)


def get_spec(name: str) -> DatasetSpec:
    """The `DatasetSpec` of ``name`` (case-insensitive; a few aliases such as "svhn")."""
    if not isinstance(name, str):
        raise ValueError(f"dataset name must be a string, got {type(name).__name__}")
    key = name.strip().lower()
    key = _ALIASES.get(key, key)
    if key not in SPECS:
        raise ValueError(f"unknown dataset {name!r}; known datasets: {', '.join(list_datasets())}")
    return SPECS[key]


# ----------------------------------------------------------------------------------------- splits
_SPLIT_RE = re.compile(r"^\s*(\w+)\s*(?:\[\s*(-?\d+%?)?\s*:\s*(-?\d+%?)?\s*\])?\s*$")
_SPLIT_ALIASES = {"val": "validation", "valid": "validation", "t10k": "test"}


@dataclasses.dataclass(frozen=True)
class SplitSpec:
    """A parsed split spec: a base split and an optional Python-style slice.

    Bounds are ints (examples, negative from the end) or percent strings ("80%"), like tfds's
    split slicing: ``"test[:8000]"``, ``"test[8000:]"``, ``"train[:90%]"``, ``"train[-500:]"``.
    """

    base: str
    start: int | str | None = None
    stop: int | str | None = None

    @property
    def is_full(self) -> bool:
        return self.start is None and self.stop is None

    def indices(self, n: int) -> slice:
        """The slice into a split of ``n`` examples."""

        def bound(b):
            if b is None:
                return None
            if isinstance(b, str):  # percent, rounded like tfds (to the nearest example)
                return int(round(n * int(b[:-1]) / 100.0))
            return b

        return slice(bound(self.start), bound(self.stop))

    def __str__(self) -> str:
        if self.is_full:
            return self.base
        fmt = lambda b: "" if b is None else str(b)  # noqa: E731
        return f"{self.base}[{fmt(self.start)}:{fmt(self.stop)}]"


def parse_split(split: str, known: tuple[str, ...] | None = None) -> SplitSpec:
    """Parse ``"test"``, ``"test[:8000]"``, ``"train[10%:]"`` into a `SplitSpec`.

    ``known``: the dataset's split names; an unknown base split raises ValueError listing them.
    """
    if not isinstance(split, str):
        raise ValueError(f"split must be a string like 'test' or 'test[:8000]', got {split!r}")
    m = _SPLIT_RE.match(split)
    if not m:
        raise ValueError(
            f"cannot parse split {split!r}; expected '<name>' or '<name>[start:stop]' "
            "with integer or percent bounds, e.g. 'test[:8000]' or 'train[:90%]'"
        )
    base, a, b = m.groups()
    base = _SPLIT_ALIASES.get(base.lower(), base.lower())

    def conv(v):
        if v is None:
            return None
        if v.endswith("%"):
            if not -100 <= int(v[:-1]) <= 100:
                raise ValueError(f"percent bound {v} in split {split!r} is outside [-100%, 100%]")
            return v
        return int(v)

    if known is not None and base not in known:
        raise ValueError(f"unknown split {base!r} in {split!r}; this dataset has splits {list(known)}")
    return SplitSpec(base, conv(a), conv(b))


def order_is_random(y: np.ndarray) -> bool:
    """False when the labels' order is clearly not random (e.g. sorted or grouped by class).

    Counts the adjacent pairs with different labels; a random order has about
    ``(n - 1) * (1 - sum_k p_k^2)`` of them. Fewer than half of that (with at least 10 expected)
    means the file is grouped by class, so a contiguous slice would miss or over-represent classes.
    """
    y = np.asarray(y)
    if y.size < 2:
        return True
    _, counts = np.unique(y, return_counts=True)
    p = counts / y.size
    expected = (y.size - 1) * (1.0 - float(np.sum(p * p))) * y.size / max(y.size - 1, 1)
    if expected < 10:
        return True
    changes = int(np.count_nonzero(y[1:] != y[:-1]))
    return changes >= 0.5 * expected


def stratified_order(y: np.ndarray, seed: int = 0) -> np.ndarray:
    """A deterministic permutation of ``range(len(y))`` whose every prefix (and so every contiguous
    slice) holds each class in proportion to its frequency, within one example.

    Each class's examples are shuffled (``numpy.random.default_rng(seed)``), the r-th of a class
    of n_k gets the key (r + u) / n_k with u ~ U(0, 1), and the examples are sorted by key.
    """
    y = np.asarray(y)
    rng = np.random.default_rng(seed)
    keys = np.empty(y.size, np.float64)
    for k in np.unique(y):
        idx = np.flatnonzero(y == k)
        idx = idx[rng.permutation(idx.size)]
        keys[idx] = (np.arange(idx.size) + rng.random(idx.size)) / idx.size
    return np.argsort(keys, kind="stable")


def missing_classes(y: np.ndarray, num_classes: int) -> list[int]:
    """The classes in ``range(num_classes)`` with no example in ``y``."""
    present = np.zeros(int(num_classes), bool)
    yy = np.asarray(y).astype(np.int64)
    present[yy[(yy >= 0) & (yy < num_classes)]] = True
    return [int(k) for k in np.flatnonzero(~present)]


def warn_missing_classes(y: np.ndarray, num_classes: int, what: str) -> list[int]:
    """Warn (UserWarning) when ``y`` lacks some of the ``num_classes`` classes; returns them.
    A split missing classes (e.g. a contiguous slice of a class-sorted file) trains or scores
    nonsense without any other sign."""
    import warnings

    miss = missing_classes(y, num_classes) if len(y) else []
    if miss:
        shown = miss if len(miss) <= 12 else miss[:12] + ["..."]
        warnings.warn(f"{what} has no example of {len(miss)} of its {num_classes} classes ({shown}): is its "
                      f"source sorted by class? (advjax.data.load stratifies slices of such sources; pass "
                      f"shuffle_seed to permute them)", UserWarning, stacklevel=2)
    return miss


def apply_split(ds: Dataset, spec: SplitSpec) -> Dataset:
    """Slice a full split according to ``spec``; an empty result is an error."""
    if spec.is_full:
        return dataclasses.replace(ds, split=str(spec))
    out = ds.take(spec.indices(len(ds)), split=str(spec))
    if len(out) == 0:
        raise ValueError(
            f"split {str(spec)!r} of {ds.name} selects no examples (the {spec.base} split has "
            f"{len(ds)})"
        )
    return out
