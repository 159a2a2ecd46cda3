"""Datasets for advjax: offline loaders, batching and augmentation.

* `load(name, split, data_dir=None, **kw) -> Dataset` reads local files (IDX, CIFAR pickles,
  SVHN .mat, Tiny ImageNet JPEG folders, .npz, prepared tensorflow-datasets directories) or
  scikit-learn (moons, digits);
  it never downloads and fails fast with `DatasetNotFoundError` (see `advjax.data.loader`).
* `batches(ds, batch_size, seed=0, epoch=0, shuffle=True, drop_remainder=True)` yields
  deterministic float32 batches.
* `augment(key, x, pad=4, flip=True)` is the jitted random-crop + flip.

tensorflow_datasets and scikit-learn are imported lazily, on first use.
"""
from advjax.data.augment import augment
from advjax.data.dataset import (
    DataFormatError,
    Dataset,
    DatasetNotFoundError,
    DatasetSpec,
    SplitSpec,
    get_spec,
    list_datasets,
    parse_split,
)
from advjax.data.iterate import batches, epoch_order, num_batches, to_float
from advjax.data.loader import ENV_VAR, load, search_dirs

__all__ = [
    "load",
    "batches",
    "augment",
    "Dataset",
    "DatasetSpec",
    "SplitSpec",
    "DatasetNotFoundError",
    "DataFormatError",
    "list_datasets",
    "get_spec",
    "parse_split",
    "search_dirs",
    "num_batches",
    "epoch_order",
    "to_float",
    "ENV_VAR",
]
