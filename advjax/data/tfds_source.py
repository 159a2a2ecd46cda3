"""Datasets already prepared by tensorflow-datasets in a local data dir (never downloads).

A prepared dataset is a directory ``<data_dir>/<tfds_name>[/<config>]/<version>/`` holding
``dataset_info.json`` and the record shards. `find_prepared` checks the file system only, and
`load_prepared` opens that exact directory with ``tfds.builder_from_directory`` (which reads the
stored metadata and never resolves the dataset by name, so no code path can reach a download or
a DNS lookup: offline, ``tfds.load`` would hang about 200 s). ``array_record`` shards are read with
``as_data_source`` (no TensorFlow needed); ``tfrecord`` shards need TensorFlow, and without it the
error says how to rebuild as array_record. tensorflow_datasets is imported lazily, only here.
"""
from __future__ import annotations

import pathlib

import numpy as np

from advjax.data.dataset import DataFormatError

__all__ = ["find_prepared", "load_prepared", "prepared_splits"]


def _version_key(p: pathlib.Path):
    try:
        return tuple(int(v) for v in p.name.split("."))
    except ValueError:
        return (-1,)


def find_prepared(data_dir: pathlib.Path, tfds_name: str) -> pathlib.Path | None:
    """The newest ``<data_dir>/<tfds_name>[/<config>]/<version>/`` with a dataset_info.json."""
    base = data_dir / tfds_name
    if not base.is_dir():
        return None
    infos = list(base.glob("*/dataset_info.json")) + list(base.glob("*/*/dataset_info.json"))
    dirs = [p.parent for p in infos if _version_key(p.parent) != (-1,)]
    if not dirs:
        return None
    return max(dirs, key=lambda d: (_version_key(d), str(d)))


def _builder(path: pathlib.Path):
    import tensorflow_datasets as tfds  # lazy: importing tfds costs ~0.7 s

    try:
        return tfds.builder_from_directory(str(path))
    except Exception as e:  # noqa: BLE001
        raise DataFormatError(f"{path}: not a readable prepared tfds dataset ({e})") from e


def prepared_splits(path: pathlib.Path) -> list[str]:
    """Split names recorded in a prepared dataset's metadata."""
    return list(_builder(path).info.splits.keys())


def _to_numpy(items: list[dict], x_key: str, y_key: str, path) -> tuple[np.ndarray, np.ndarray]:
    try:
        x = np.stack([np.asarray(it[x_key]) for it in items])
        y = np.asarray([int(it[y_key]) for it in items], dtype=np.int64)
    except Exception as e:  # noqa: BLE001
        raise DataFormatError(f"{path}: cannot assemble {x_key!r}/{y_key!r} arrays ({e})") from e
    return x, y


def load_prepared(path: pathlib.Path, split: str) -> tuple[np.ndarray, np.ndarray, int]:
    """(x, y int32, num_classes) of a full split of the prepared dataset at ``path``."""
    builder = _builder(path)
    info = builder.info
    if split not in info.splits:
        raise KeyError(split)
    x_key, y_key = info.supervised_keys or ("image", "label")
    if isinstance(x_key, (tuple, list, dict)) or isinstance(y_key, (tuple, list, dict)):
        x_key, y_key = "image", "label"
    try:
        num_classes = int(info.features[y_key].num_classes)
    except Exception as e:  # noqa: BLE001
        raise DataFormatError(f"{path}: feature {y_key!r} is not a class label ({e})") from e
    fmt = getattr(info, "file_format", None)
    fmt = str(getattr(fmt, "value", fmt) or "").lower()
    if "array_record" in fmt:
        try:
            src = builder.as_data_source(split=split)
            items = src.__getitems__(list(range(len(src))))
        except Exception as e:  # noqa: BLE001
            raise DataFormatError(f"{path}: cannot read split {split!r} ({e})") from e
        x, y = _to_numpy(items, x_key, y_key, path)
    else:
        try:
            import tensorflow  # noqa: F401
        except ImportError:
            raise DataFormatError(
                f"{path} is stored as {fmt or 'tfrecord'}, which needs TensorFlow to read; "
                "install tensorflow, or rebuild it as array_record: "
                f"`tfds build {info.name} --file_format=array_record`"
            ) from None
        import tensorflow_datasets as tfds

        data = tfds.as_numpy(builder.as_dataset(split=split, batch_size=-1))
        x, y = np.asarray(data[x_key]), np.asarray(data[y_key])
    if x.dtype != np.uint8:
        raise DataFormatError(f"{path}: feature {x_key!r} is {x.dtype}, expected uint8 images")
    return x, y.astype(np.int32), num_classes
