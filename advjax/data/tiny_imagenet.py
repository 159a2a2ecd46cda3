"""Tiny ImageNet in its official layout (the extracted ``tiny-imagenet-200.zip``).

Le & Yang 2015 (http://cs231n.stanford.edu/tiny-imagenet-200.zip): ``wnids.txt`` lists the 200
WordNet ids; ``train/<wnid>/images/*.JPEG`` (500 per class) and ``val/images/*.JPEG`` labelled by
``val/val_annotations.txt`` (file, wnid, box). Labels index the *sorted* wnids (the torchvision
ImageFolder convention). The official test split has no labels and is not loadable. JPEGs are
decoded with PIL (grayscale ones converted to RGB); 100k images take a while, so convert once to
an ``.npz`` (see `advjax.data.npz`) if you load it often.
"""
from __future__ import annotations

import pathlib

import numpy as np

from advjax.data.dataset import DataFormatError

__all__ = ["find_tiny_imagenet", "load_tiny_imagenet"]

_FOLDER = "tiny-imagenet-200"


def find_tiny_imagenet(root: pathlib.Path, dir_names: tuple[str, ...], split: str):
    """The ``tiny-imagenet-200`` folder under ``root`` holding ``split``, or None."""
    sub = {"train": "train", "validation": "val"}.get(split)
    if sub is None:
        return None
    for base in [root / _FOLDER] + [root / d / _FOLDER for d in dir_names] + [root / d for d in dir_names]:
        if (base / "wnids.txt").is_file() and (base / sub).is_dir():
            return base
    return None


def _read_jpeg(path: pathlib.Path) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"), dtype=np.uint8)
    except Exception as e:  # noqa: BLE001
        raise DataFormatError(f"{path}: not a readable image ({e})") from e


def load_tiny_imagenet(base: pathlib.Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """(x uint8 [N, 64, 64, 3], y int32 [N]) of "train" or "validation"."""
    wnids = sorted(w.strip() for w in (base / "wnids.txt").read_text().split() if w.strip())
    if len(set(wnids)) != len(wnids) or not wnids:
        raise DataFormatError(f"{base / 'wnids.txt'}: expected unique WordNet ids, one per line")
    label = {w: i for i, w in enumerate(wnids)}
    items: list[tuple[pathlib.Path, int]] = []
    if split == "train":
        for w in wnids:
            items += [(p, label[w]) for p in sorted((base / "train" / w / "images").glob("*.JPEG"))]
    else:
        ann = base / "val" / "val_annotations.txt"
        if not ann.is_file():
            raise DataFormatError(f"{ann} is missing: the validation labels live there")
        for line in ann.read_text().splitlines():
            parts = line.split("\t")
            if len(parts) < 2 or parts[1] not in label:
                raise DataFormatError(f"{ann}: bad line {line!r} (file, wnid, box expected)")
            items.append((base / "val" / "images" / parts[0], label[parts[1]]))
    if not items:
        raise DataFormatError(f"{base}: no JPEG images found for split {split!r}")
    x = np.stack([_read_jpeg(p) for p, _ in items])
    return x, np.asarray([lab for _, lab in items], dtype=np.int32)
