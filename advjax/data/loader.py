"""`load(name, split, data_dir=None, **kw)`: find a dataset on local disk and return a `Dataset`.

Nothing is ever downloaded. For the file-backed datasets the directories are searched in order:

1. ``data_dir`` (a path or a list of paths) if given, and then ONLY ``data_dir``: a directory you
   name is a promise, so a ``data_dir`` lacking the dataset is an error naming the files expected
   there, never a silent read from elsewhere (``search_defaults=True`` also searches the defaults
   below, and warns naming the directory the data really came from);
2. ``$ADVJAX_DATA_DIR`` (``os.pathsep``-separated list allowed);
3. ``./data`` and ``../shared/data`` relative to the current directory;
4. ``$TFDS_DATA_DIR`` and ``~/tensorflow_datasets`` (tfds's default data dirs).

(``search_defaults=False`` searches ``data_dir`` only.) In each directory the official formats are
tried first, then ``.npz`` archives, then a prepared tensorflow-datasets directory; the first
directory holding the requested split wins, and ``Dataset.source`` says which file was read:

* mnist, fashion_mnist: IDX files (gzipped or not) in ``<dir>/<name>/``:
  ``train-images-idx3-ubyte.gz``, ``train-labels-idx1-ubyte.gz``, ``t10k-...`` for "test";
* cifar10, cifar100: the python pickle batches, ``<dir>/cifar-10-batches-py/`` or
  ``<dir>/cifar-100-python/`` (also below ``<dir>/<name>/``), read by a restricted unpickler;
* svhn_cropped: ``<dir>/svhn_cropped/<split>_32x32.mat`` (official MATLAB files);
* tiny_imagenet: the extracted ``<dir>/tiny-imagenet-200/`` (JPEG folders; train, validation);
* any image set: ``.npz`` archives in ``<dir>/<name>/`` (see `advjax.data.npz`);
* any image set with a tfds name: ``<dir>/<tfds_name>/<version>/`` prepared by tfds.

Splits accept Python-style slices (tfds syntax): ``"test[:8000]"``, ``"test[8000:]"``,
``"train[:90%]"``. The MNIST copy on these machines has only the official 10k test split: train on
``load("mnist", "test[:8000]")`` and evaluate on ``load("mnist", "test[8000:]")``. Likewise the
shared ``cifar10/test_jpeg_q75.npz`` holds only CIFAR-10's test split: ``load("cifar10", "test")``
reads it; ``load("cifar10", "train")`` raises `DatasetNotFoundError` saying only "test" was
found and suggesting such a slice. That file is sorted by class: a slice of a split whose label
order is not random (`advjax.data.dataset.order_is_random`) is taken after a deterministic
stratified shuffle (`stratified_order`, seed 0), so ``load("cifar10", "test[:80%]")`` and
``load("cifar10", "test[80%:]")`` are disjoint and class-balanced, and ``Dataset.source`` says
so. ``shuffle_seed=S`` permutes the full split with seed S before slicing instead (any source);
``shuffle_seed=False`` slices the file order as it is. Full splits keep the file order.

A missing dataset raises `DatasetNotFoundError` naming the dataset, every directory searched
(and what it holds) and how to get the files, after file-system checks only (milliseconds).
"""
from __future__ import annotations

import dataclasses
import inspect
import os
import pathlib
import warnings
from typing import Iterable

import numpy as np

from advjax.data import cifar, idx, npz, svhn, tfds_source, tiny_imagenet
from advjax.data.dataset import (
    DataFormatError,
    Dataset,
    DatasetNotFoundError,
    DatasetSpec,
    apply_split,
    get_spec,
    order_is_random,
    parse_split,
    stratified_order,
)
from advjax.data.sklearn_sets import load_digits, load_moons

__all__ = ["load", "search_dirs", "expected_files", "ENV_VAR"]

ENV_VAR = "ADVJAX_DATA_DIR"
_GENERATED = {"moons": load_moons, "digits": load_digits}


def _as_paths(value) -> list[pathlib.Path]:
    if value is None:
        return []
    if isinstance(value, (str, os.PathLike)):
        return [pathlib.Path(value).expanduser()]
    if isinstance(value, Iterable):
        return [pathlib.Path(v).expanduser() for v in value]
    raise ValueError(f"data_dir must be a path or a list of paths, got {type(value).__name__}")


def search_dirs(data_dir=None, search_defaults: bool | None = None) -> list[tuple[pathlib.Path, str]]:
    """The directories `load` searches, in order, each with the reason it is searched.
    ``search_defaults=None``: the defaults only when no ``data_dir`` is given."""
    out = [(p, "data_dir") for p in _as_paths(data_dir)]
    if search_defaults is None:
        search_defaults = not out
    if search_defaults:
        env = os.environ.get(ENV_VAR, "")
        out += [(pathlib.Path(p).expanduser(), f"${ENV_VAR}") for p in env.split(os.pathsep) if p]
        cwd = pathlib.Path.cwd()
        out += [(cwd / "data", "./data"), (cwd.parent / "shared" / "data", "../shared/data")]
        tfds_env = os.environ.get("TFDS_DATA_DIR", "")
        if tfds_env:
            out.append((pathlib.Path(tfds_env).expanduser(), "$TFDS_DATA_DIR"))
        out.append((pathlib.Path("~/tensorflow_datasets").expanduser(), "tfds default"))
    seen, unique = set(), []
    for p, why in out:
        key = os.path.abspath(p)
        if key not in seen:
            seen.add(key)
            unique.append((p, why))
    return unique


@dataclasses.dataclass(frozen=True)
class _Found:
    kind: str  # "idx" | "cifar" | "svhn_mat" | "npz" | "tfds"
    where: pathlib.Path
    detail: tuple = ()


def _scan(spec: DatasetSpec, root: pathlib.Path, split: str, file) -> tuple[_Found | None, dict]:
    """Look for ``split`` of ``spec`` in ``root``; also report which splits exist there.

    Returns (the source to read or None, {split: description} of everything found in ``root``).
    """
    found: dict[str, list[str]] = {}
    hit = None
    if file is None:
        if spec.name in ("mnist", "fashion_mnist"):
            for d in spec.dir_names:
                for s in spec.splits:
                    pair = idx.find_idx_pair(root / d, s)
                    if pair:
                        found.setdefault(s, []).append(f"IDX {pair[0]}")
                        if s == split and hit is None:
                            hit = _Found("idx", pair[0], pair)
        if spec.name in cifar.CIFAR_FOLDERS:
            for s in spec.splits:
                paths = cifar.find_cifar_files(spec.name, root, s)
                if paths:
                    found.setdefault(s, []).append(f"CIFAR pickles in {paths[0].parent}")
                    if s == split and hit is None:
                        hit = _Found("cifar", paths[0].parent, tuple(paths))
        if spec.name == "svhn_cropped":
            for s in spec.splits:
                p = svhn.find_svhn_mat(root, spec.dir_names, s)
                if p:
                    found.setdefault(s, []).append(f"SVHN .mat {p}")
                    if s == split and hit is None:
                        hit = _Found("svhn_mat", p)
        if spec.name == "tiny_imagenet":
            for s in spec.splits:
                base = tiny_imagenet.find_tiny_imagenet(root, spec.dir_names, s)
                if base:
                    found.setdefault(s, []).append(f"JPEG folders in {base}")
                    if s == split and hit is None:
                        hit = _Found("tiny_jpeg", base)
    # npz archives
    if file is not None:
        fp = pathlib.Path(file).expanduser()
        cands = [fp] if fp.is_absolute() or fp.parent != pathlib.Path(".") else [
            root / d / fp for d in spec.dir_names
        ] + [root / fp]
        cands = [c for c in cands if c.is_file()][:1]
    else:
        cands = npz.npz_candidates(root, spec.dir_names)
    for c in cands:
        for s in npz.npz_splits(c, explicit=file is not None):
            found.setdefault(split if s == "*" else s, []).append(f"npz {c}")
    if hit is None:
        best = npz.find_npz(cands, split, explicit=file is not None)
        if best:
            hit = _Found("npz", best[0], best[1:])
    # prepared tfds data (metadata only; tfds is imported only if such a directory exists)
    if file is None:
        for tname in filter(None, {spec.tfds_name, spec.name}):
            prepared = tfds_source.find_prepared(root, tname)
            if prepared is None:
                continue
            splits = tfds_source.prepared_splits(prepared)
            for s in splits:
                found.setdefault(s, []).append(f"prepared tfds data {prepared}")
            if hit is None and split in splits:
                hit = _Found("tfds", prepared)
            break
    return hit, found


def _read(spec: DatasetSpec, hit: _Found, split: str, label_mode: str) -> Dataset:
    num_classes = spec.num_classes
    if hit.kind == "idx":
        x, y = idx.load_idx_split(*hit.detail)
        source = str(hit.detail[0])
    elif hit.kind == "cifar":
        x, y, num_classes = cifar.load_cifar_split(spec.name, list(hit.detail), label_mode)
        source = str(hit.where)
    elif hit.kind == "svhn_mat":
        x, y = svhn.load_svhn_mat(hit.where)
        source = str(hit.where)
    elif hit.kind == "tiny_jpeg":
        x, y = tiny_imagenet.load_tiny_imagenet(hit.where, split)
        source = str(hit.where)
    elif hit.kind == "npz":
        x, y = npz.load_npz_split(hit.where, *hit.detail, input_shape=spec.input_shape)
        source = str(hit.where)
    else:
        x, y, num_classes = tfds_source.load_prepared(hit.where, split)
        source = f"tfds:{hit.where}"
    if tuple(x.shape[1:]) != spec.input_shape:
        raise DataFormatError(
            f"{source}: {spec.name} images must have shape {spec.input_shape}, got {x.shape[1:]}"
        )
    if y.size and (y.min() < 0 or y.max() >= num_classes):
        raise DataFormatError(
            f"{source}: labels must lie in [0, {num_classes}), got [{y.min()}, {y.max()}]"
        )
    return Dataset(x=x, y=y, num_classes=num_classes, domain=spec.domain, name=spec.name,
                   split=split, source=source)


def expected_files(spec: DatasetSpec, root, split: str) -> list[str]:
    """What ``load`` would read for ``split`` of ``spec`` in directory ``root`` (alternatives)."""
    root = pathlib.Path(root)
    d = spec.dir_names[0] if spec.dir_names else spec.name
    out = []
    if spec.name in ("mnist", "fashion_mnist") and split in idx.IDX_PREFIX:
        pre = idx.IDX_PREFIX[split]
        out.append(f"{root / d / f'{pre}-images-idx3-ubyte.gz'} + {root / d / f'{pre}-labels-idx1-ubyte.gz'} "
                   "(or the same names without .gz)")
    if spec.name in cifar.CIFAR_FOLDERS:
        folder, files = cifar.CIFAR_FOLDERS[spec.name]
        if split in files:
            names = files[split]
            shown = names[0] if len(names) == 1 else f"{names[0]} ... {names[-1]}"
            out.append(f"{root / folder}/{shown}")
    if spec.name == "svhn_cropped":
        out.append(str(root / d / f"{split}_32x32.mat"))
    if spec.name == "tiny_imagenet":
        out.append(f"{root / 'tiny-imagenet-200'}/ (wnids.txt and {'val' if split == 'validation' else split}/)")
    if spec.name not in _GENERATED:
        out.append(f"an .npz with x, y named {split}*.npz in {root / d}/")
        if spec.tfds_name:
            out.append(f"a prepared tensorflow-datasets directory {root / spec.tfds_name}/<version>/")
    return out


def _not_found(spec, split_spec, searched, file) -> DatasetNotFoundError:
    def status(found):
        if isinstance(found, str):
            return found
        if not found:
            return "nothing for this dataset"
        return "found split(s) " + "; ".join(f"{s!r} ({', '.join(w)})" for s, w in found.items())

    lines = [
        f"dataset {spec.name!r}, split {split_spec.base!r}: no local copy found "
        "(advjax never downloads). Directories searched, in order:"
    ] + [f"  - {root}  [{why}]: {status(found)}" for root, why, found in searched]
    if ENV_VAR not in os.environ and any(why == "./data" for _, why, _ in searched):
        lines.append(f"  (${ENV_VAR} is not set)")
    available = {s for _, _, found in searched if isinstance(found, dict) for s in found}
    if file is not None:
        lines.append(f"(restricted to the file {str(file)!r} by file=)")
    if available:
        others = sorted(available)
        ex = others[0]
        lines.append(
            f"Only split(s) {others} of {spec.name} were found, not {split_spec.base!r}. "
            f"Load a slice of an available split instead, e.g. "
            f"load({spec.name!r}, '{ex}[:80%]') to train and load({spec.name!r}, '{ex}[80%:]') "
            f"to evaluate" + (" (MNIST here: 'test[:8000]' / 'test[8000:]')"
                              if spec.name == "mnist" else "")
            + "; a slice of a split stored in a non-random order (e.g. sorted by class) is "
            "taken after a deterministic stratified shuffle, so the two are disjoint and "
            "class-balanced (Dataset.source says so)."
        )
    named = [root for root, why, _ in searched if why == "data_dir"]
    if named and file is None:
        for root in named:
            lines.append(f"{spec.name} {split_spec.base!r} needs, in the data_dir you named, "
                         + " or ".join(expected_files(spec, root, split_spec.base))
                         + " (only data_dir is searched when you name one; pass search_defaults=True to "
                           "search the default directories too).")
    lines.append(f"How to get it: {spec.how_to_get}.")
    lines.append(
        f"Then pass data_dir=DIR to load() or set ${ENV_VAR}=DIR (DIR = the folder that holds "
        f"{spec.dir_names[0] if spec.dir_names else spec.name}/)."
    )
    return DatasetNotFoundError("\n".join(lines))


def load(name: str, split: str, data_dir=None, **kw) -> Dataset:
    """Load split ``split`` of dataset ``name`` from local disk (or scikit-learn) as a `Dataset`.

    Args:
      name: one of `list_datasets()`: moons, digits, mnist, fashion_mnist, cifar10, cifar100,
        svhn_cropped, tiny_imagenet (case-insensitive; aliases such as "svhn" accepted).
      split: "train", "test" (and "validation"/"extra" where they exist), optionally sliced:
        "test[:8000]", "test[8000:]", "train[:90%]".
      data_dir: a directory (or list of directories) searched first; see the module docstring
        for the full search order. Ignored by moons and digits.
      **kw: for moons: ``n_samples`` (1000), ``noise`` (0.1), ``seed`` (0), ``test_fraction``
        (0.2); for digits: ``seed`` (0), ``test_fraction`` (0.2); for the file-backed sets:
        ``file`` (an .npz name or path to read instead of searching for one),
        ``search_defaults`` (None: the default directories only when no ``data_dir`` is named;
        True also searches them after ``data_dir``, warning if the data came from there; False
        searches ``data_dir`` only), ``shuffle_seed`` (None: a slice of a split stored in a
        non-random order, such as the class-sorted shared CIFAR-10 npz, is taken after a
        deterministic stratified shuffle; an int permutes the full split with that seed before
        slicing; False: file order), and for cifar100
        ``label_mode`` ("fine" = 100 classes, or "coarse" = 20).

    Raises:
      ValueError: unknown dataset (listing the known ones), split, or keyword.
      DatasetNotFoundError: no local copy of the split (names every directory searched).
      DataFormatError: a file was found but is corrupt, truncated or of the wrong shape.
    """
    spec = get_spec(name)
    split_spec = parse_split(split, spec.splits)
    if spec.name in _GENERATED:
        fn = _GENERATED[spec.name]
        allowed = [p for p in inspect.signature(fn).parameters if p != "split"]
        bad = sorted(set(kw) - set(allowed))
        if bad:
            raise ValueError(f"unknown keyword(s) {bad} for {spec.name}; accepted: {allowed}")
        return apply_split(fn(split_spec.base, **kw), split_spec)

    allowed = ["file", "search_defaults", "shuffle_seed"] + (
        ["label_mode"] if spec.name == "cifar100" else [])
    bad = sorted(set(kw) - set(allowed))
    if bad:
        raise ValueError(f"unknown keyword(s) {bad} for {spec.name}; accepted: {allowed}")
    file = kw.get("file")
    label_mode = kw.get("label_mode", "fine")
    if label_mode not in ("fine", "coarse"):
        raise ValueError(f"label_mode must be 'fine' or 'coarse', got {label_mode!r}")
    shuffle_seed = kw.get("shuffle_seed")
    if not (shuffle_seed is None or shuffle_seed is False
            or (isinstance(shuffle_seed, (int, np.integer)) and not isinstance(shuffle_seed, bool)
                and shuffle_seed >= 0)):
        raise ValueError(f"shuffle_seed must be None (auto), False (file order) or an int >= 0, got {shuffle_seed!r}")
    searched = []
    for root, why in search_dirs(data_dir, kw.get("search_defaults")):
        if not root.is_dir():
            searched.append((root, why, "not a directory" if root.exists() else "does not exist"))
            continue
        hit, found = _scan(spec, root, split_spec.base, file)
        if hit is not None:
            ds = _read(spec, hit, split_spec.base, label_mode)
            if data_dir is not None and why != "data_dir":
                warnings.warn(
                    f"advjax.data.load({spec.name!r}, {split!r}): the data_dir you named "
                    f"({', '.join(str(p) for p in _as_paths(data_dir))}) holds no {spec.name} "
                    f"{split_spec.base!r}; read {ds.source} from {root} [{why}] instead "
                    "(search_defaults=True)", stacklevel=2)
            if shuffle_seed is not None and shuffle_seed is not False:
                perm = np.random.default_rng(shuffle_seed).permutation(len(ds))
                ds = dataclasses.replace(ds.take(perm), source=f"{ds.source} (shuffle_seed={shuffle_seed})")
            elif shuffle_seed is None and not split_spec.is_full and not order_is_random(ds.y):
                ds = dataclasses.replace(
                    ds.take(stratified_order(ds.y, 0)),
                    source=f"{ds.source} (order not random: stratified shuffle, seed 0, before slicing)")
            return apply_split(ds, split_spec)
        searched.append((root, why, found))
    if not searched:
        searched.append((pathlib.Path("(none)"), "search_defaults=False and no data_dir", ""))
    raise _not_found(spec, split_spec, searched, file)

