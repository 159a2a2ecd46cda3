"""Where the experiments find the real datasets: one rule for every family.

``SHARED_DATA`` is the project's sibling ``../shared/data`` (beside the source checkout), or
``$ADVJAX_SHARED_DATA``. :func:`load_local` searches it first, then ``advjax.data.load``'s default
directories (``$ADVJAX_DATA_DIR``, ``./data``, ``../shared/data`` of the working directory, tfds'),
so an installed advjax run from any directory finds the data a user points ``$ADVJAX_DATA_DIR`` at.
"""
from __future__ import annotations

import os
import pathlib

SHARED_DATA = pathlib.Path(os.environ.get("ADVJAX_SHARED_DATA",
                                          pathlib.Path(__file__).resolve().parents[2] / "shared" / "data"))


def load_local(name: str, split: str, **kw):
    """``advjax.data.load(name, split)`` from SHARED_DATA (when it exists), then the defaults."""
    from advjax.data import load

    dirs = [SHARED_DATA] if SHARED_DATA.is_dir() else None
    return load(name, split, data_dir=dirs, search_defaults=True, **kw)
