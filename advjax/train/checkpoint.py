"""Checkpoints: orbax-checkpoint files plus an integrity manifest; exact resume; best and last.

Layout of one checkpoint directory (``<run>/checkpoints/{last,best}/step_<9 digits>/``)::

    state/          orbax PyTreeCheckpointer output: {"leaf_00000": array, ...} (no pickle)
    manifest.json   format, step, loop metadata (data position, best metric, ...), each leaf's
                    tree path, shape and dtype, and the sha256 of every file under state/

A checkpoint is written to ``.tmp_step_*`` and renamed into place once complete, so a run killed
while saving leaves no half-written ``step_*``. On restore the newest checkpoint whose manifest
parses and whose files hash to the recorded digests is used; a truncated or corrupt one is reported
with a ``CheckpointCorruptionWarning`` and the previous good one is tried. A checkpoint whose leaves
do not match the target state (shapes, dtypes, tree paths) is a different configuration: ValueError.

Typed PRNG keys (``jax.random.key(seed[, impl=...])``, e.g. a TrainState's ``key``) are stored as
their raw key data (``jax.random.key_data``: ``uint32[2]`` for threefry, ``uint32[4]`` for rbg) with
the implementation's name in the leaf's manifest entry (``"key_impl"``), and rebuilt with
``jax.random.wrap_key_data`` on restore, so a resumed run draws the same numbers. A target whose
key kind (raw / typed, implementation) differs from the saved one is a different configuration.

Every path is made absolute on entry (orbax needs absolute paths), so relative run directories work
from any working directory. ``load_for_eval(..., with_info=True)`` also says which checkpoint it read
and what it used instead of the one asked for, if anything.
"""
from __future__ import annotations

import hashlib
import json
import os
import pathlib
import shutil
import warnings
from typing import Any, Optional

import jax
import numpy as np

__all__ = ["save_checkpoint", "restore_checkpoint", "latest_valid_checkpoint", "list_checkpoints",
           "verify_checkpoint", "load_for_eval", "CheckpointCorruptionWarning", "CheckpointError"]

FORMAT = "advjax-checkpoint-v1"


class CheckpointCorruptionWarning(UserWarning):
    """A checkpoint failed verification and was skipped."""


class CheckpointError(ValueError):
    """A checkpoint is unreadable or corrupt."""


def _key_str(k) -> str:
    for attr in ("key", "name", "idx"):
        if hasattr(k, attr):
            return str(getattr(k, attr))
    return str(k)


def _paths_and_leaves(tree):
    flat, treedef = jax.tree_util.tree_flatten_with_path(tree)
    paths = ["/".join(_key_str(k) for k in path) for path, _ in flat]
    return paths, [leaf for _, leaf in flat], treedef


def _is_typed_key(x) -> bool:
    dtype = getattr(x, "dtype", None)
    return dtype is not None and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key)


def _key_impl(x) -> Optional[str]:
    """The implementation name of a typed PRNG key leaf ("threefry2x32", "rbg", ...), else None."""
    return str(jax.random.key_impl(x)) if _is_typed_key(x) else None


def _storable(x):
    """A leaf as orbax can write it: typed PRNG keys become their raw key data."""
    return jax.random.key_data(x) if _is_typed_key(x) else x


def _stored_shape_dtype(x) -> tuple[list, str]:
    """(shape, dtype) of ``x`` as a checkpoint stores it (typed keys: their key data's), without
    fetching anything to the host."""
    if _is_typed_key(x):
        data = jax.eval_shape(jax.random.key_data, x)
        return list(data.shape), str(data.dtype)
    dtype = x.dtype if hasattr(x, "dtype") else np.asarray(x).dtype
    return list(np.shape(x)), str(dtype)


def _hash_files(root: pathlib.Path) -> dict[str, str]:
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h = hashlib.sha256()
            with open(p, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)
            out[str(p.relative_to(root))] = h.hexdigest()
    return out


def _abs(path) -> pathlib.Path:
    """``path`` as an absolute, normalized path (orbax refuses relative ones; resolving once here
    means a relative run directory works from any working directory)."""
    return pathlib.Path(os.path.abspath(os.path.expanduser(os.fspath(path))))


def _step_dir_name(step: int) -> str:
    return f"step_{int(step):09d}"


def list_checkpoints(directory) -> list[pathlib.Path]:
    """Complete (renamed-into-place) checkpoint dirs under ``directory``, newest step first."""
    d = _abs(directory)
    if not d.is_dir():
        return []
    found = [p for p in d.iterdir() if p.is_dir() and p.name.startswith("step_") and p.name[5:].isdigit()]
    return sorted(found, key=lambda p: int(p.name[5:]), reverse=True)


def save_checkpoint(directory, state, meta: Optional[dict] = None, *, keep: int = 2) -> pathlib.Path:
    """Write ``state`` (any pytree; a TrainState's static fields are not saved) and the JSON-able
    ``meta`` as ``directory/step_<state.step>``; keep the newest ``keep`` checkpoints.

    Arrays are fetched to the host first (the only host round-trip, once per checkpoint).
    """
    import orbax.checkpoint as ocp

    from advjax.train import distributed as dist

    d = _abs(directory)
    d.mkdir(parents=True, exist_ok=True)
    paths, leaves, _ = _paths_and_leaves(state)
    impls = [_key_impl(x) for x in leaves]
    # sharded leaves gathered from every process; typed PRNG keys as their raw data (+ impl below)
    host = [np.asarray(x) for x in dist.to_host([_storable(x) for x in leaves])]
    step = int(np.asarray(getattr(state, "step", (meta or {}).get("step", 0))))
    name = _step_dir_name(step)
    multi, main = jax.process_count() > 1, jax.process_index() == 0
    token = os.getpid()
    if multi:  # one temporary directory for all processes: process 0's pid names it
        from jax.experimental import multihost_utils
        token = int(multihost_utils.broadcast_one_to_all(np.int32(token)))
    tmp = d / f".tmp_{name}_{token}"
    if main:
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
    dist.barrier(f"advjax-ckpt-{name}-begin")
    try:
        ocp.PyTreeCheckpointer().save(tmp / "state", {f"leaf_{i:05d}": a for i, a in enumerate(host)})
        if main:
            manifest = {
                "format": FORMAT,
                "step": step,
                "meta": meta or {},
                "leaves": [{"path": p, "shape": list(a.shape), "dtype": str(a.dtype),
                            **({"key_impl": k} if k is not None else {})}
                           for p, a, k in zip(paths, host, impls)],
                "files": _hash_files(tmp / "state"),
            }
            with open(tmp / "manifest.json", "w") as f:
                json.dump(manifest, f)
                f.flush()
                os.fsync(f.fileno())
    except BaseException:  # a failed save leaves nothing behind (a kill -9 leaves a .tmp_, removed next time)
        if main:
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    final = d / name
    if multi:
        dist.barrier(f"advjax-ckpt-{name}-written")
        if main:
            _commit(d, tmp, final, name, keep, token)
        dist.barrier(f"advjax-ckpt-{name}-committed")
        return final
    _commit(d, tmp, final, name, keep, token)
    return final


def _commit(d: pathlib.Path, tmp: pathlib.Path, final: pathlib.Path, name: str, keep: int, token: int) -> None:
    """Rename a complete temporary checkpoint into place and prune old and stale ones."""
    os_pid = token
    if final.exists():
        old = d / f".old_{name}_{os_pid}"
        final.rename(old)
        tmp.rename(final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        tmp.rename(final)
    for stale in list_checkpoints(d)[keep:]:
        shutil.rmtree(stale, ignore_errors=True)
    for junk in d.iterdir():
        if junk.name.startswith((".tmp_", ".old_")) and not junk.name.endswith(f"_{os_pid}"):
            shutil.rmtree(junk, ignore_errors=True)


def verify_checkpoint(path) -> dict:
    """Return the manifest of a checkpoint dir after checking every file's sha256; CheckpointError
    (saying what is wrong) if the manifest is missing/unreadable or a file is missing/changed."""
    p = _abs(path)
    mf = p / "manifest.json"
    if not mf.is_file():
        raise CheckpointError(f"{p}: manifest.json is missing (incomplete checkpoint)")
    try:
        manifest = json.loads(mf.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{p}: manifest.json is unreadable ({e})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise CheckpointError(f"{p}: not an advjax checkpoint (format {manifest.get('format') if isinstance(manifest, dict) else None!r})")
    actual = _hash_files(p / "state")
    expected = manifest["files"]
    missing = sorted(set(expected) - set(actual))
    changed = sorted(k for k in expected if k in actual and actual[k] != expected[k])
    extra = sorted(set(actual) - set(expected))
    if missing or changed or extra:
        raise CheckpointError(f"{p}: checkpoint files do not match their recorded sha256 "
                              f"(missing {missing[:3]}, changed {changed[:3]}, unexpected {extra[:3]}): "
                              f"truncated or corrupt")
    return manifest


def _read_arrays(path: pathlib.Path, manifest: dict) -> list[np.ndarray]:
    import orbax.checkpoint as ocp

    path = _abs(path)
    try:
        restored = ocp.PyTreeCheckpointer().restore(path / "state")
    except Exception as e:  # orbax/tensorstore errors on damaged files
        raise CheckpointError(f"{path}: orbax could not read the checkpoint ({type(e).__name__}: {e})") from None
    arrays = []
    for i, leaf in enumerate(manifest["leaves"]):
        a = np.asarray(restored.get(f"leaf_{i:05d}")) if f"leaf_{i:05d}" in restored else None
        if a is None or list(a.shape) != leaf["shape"] or str(a.dtype) != leaf["dtype"]:
            raise CheckpointError(f"{path}: leaf {leaf['path']} is missing or has the wrong shape/dtype")
        arrays.append(a)
    return arrays


def _check_matches(path, manifest, target_paths, target_leaves):
    rec = manifest["leaves"]
    if len(rec) != len(target_leaves):
        raise ValueError(f"checkpoint {path} holds {len(rec)} arrays but this configuration's state has "
                         f"{len(target_leaves)}: it was written by a different configuration")
    for r, p, t in zip(rec, target_paths, target_leaves):
        shape, dtype = _stored_shape_dtype(t)
        saved_impl, impl = r.get("key_impl"), _key_impl(t)
        if r["path"] == p and saved_impl != impl:
            kind = lambda i: f"a typed {i!r} PRNG key" if i else "a raw array"  # noqa: E731
            raise ValueError(f"checkpoint {path} does not match this configuration's state at {p!r}: "
                             f"saved {kind(saved_impl)}, expected {kind(impl)}")
        if r["path"] != p or r["shape"] != shape or r["dtype"] != dtype:
            raise ValueError(f"checkpoint {path} does not match this configuration's state at {p!r}: "
                             f"saved {r['path']} {r['dtype']}{r['shape']}, expected {dtype}{shape}")


def _rebuild_keys(arrays: list, manifest: dict) -> list:
    """Typed PRNG keys back from their saved key data (``key_impl`` in the leaf's manifest entry)."""
    return [jax.random.wrap_key_data(a, impl=leaf["key_impl"]) if leaf.get("key_impl") else a
            for a, leaf in zip(arrays, manifest["leaves"])]


def latest_valid_checkpoint(directory) -> Optional[tuple[pathlib.Path, dict]]:
    """``(path, manifest)`` of the newest checkpoint that verifies, warning about each skipped one."""
    for p in list_checkpoints(directory):
        try:
            return p, verify_checkpoint(p)
        except CheckpointError as e:
            warnings.warn(f"{e}; falling back to the previous checkpoint", CheckpointCorruptionWarning, stacklevel=2)
    return None


def restore_checkpoint(directory, target) -> Optional[tuple[Any, dict, pathlib.Path]]:
    """Restore the newest good checkpoint under ``directory`` into the structure of ``target``.

    Returns ``(state, meta, path)`` with host (numpy) leaves in ``target``'s tree (static fields
    from ``target``; typed PRNG keys rebuilt as typed keys of the saved implementation), or None if there is no usable checkpoint. Corrupt ones are skipped with a
    ``CheckpointCorruptionWarning``; a checkpoint of a different configuration raises ValueError.
    With several processes every process must call it; they must choose the same checkpoint
    (``advjax.train.distributed.DistributedError`` otherwise, e.g. directories that are not shared).
    """
    from advjax.train import distributed as dist

    out = _restore_newest(directory, target)
    dist.agree(None if out is None else [out[2].name, out[1]], f"the checkpoint to restore from {_abs(directory)}")
    return out


def _restore_newest(directory, target):
    t_paths, t_leaves, treedef = _paths_and_leaves(target)
    for p in list_checkpoints(directory):
        try:
            manifest = verify_checkpoint(p)
            _check_matches(p, manifest, t_paths, t_leaves)
            arrays = _read_arrays(p, manifest)
        except CheckpointError as e:
            warnings.warn(f"{e}; falling back to the previous checkpoint", CheckpointCorruptionWarning, stacklevel=2)
            continue
        return jax.tree_util.tree_unflatten(treedef, _rebuild_keys(arrays, manifest)), manifest["meta"], p
    return None


def _find_run_dir(path: pathlib.Path) -> pathlib.Path:
    for cand in [path, *path.parents]:
        if (cand / "config.json").is_file():
            return cand
    raise FileNotFoundError(f"no config.json found at or above {path}: not an advjax run directory")


def load_for_eval(path, which: str = "best", *, with_info: bool = False):
    """``(model, variables, config)`` from a run directory or one of its checkpoint directories.

    ``path``: the run dir (uses ``checkpoints/<which>``; for ``which="best"`` it falls back to
    ``last`` when ``best`` holds no intact checkpoint), a ``checkpoints/best|last`` dir, or a
    ``step_*`` dir. ``variables`` is the flax dict ``{"params": ..., "batch_stats": ...}``
    (batch_stats only if the model has any) as numpy arrays; ``config`` the run's ``TrainConfig``.
    Corrupt checkpoints are skipped with a ``CheckpointCorruptionWarning``.

    ``with_info=True`` returns ``(model, variables, config, info)``; ``info`` says which checkpoint
    was read: ``{"path", "step", "kind" ("best" | "last" | "step"), "requested", "skipped": [reasons],
    "substituted": None or a sentence saying what was used instead of what was asked for}``.
    """
    from advjax.train.config import TrainConfig

    if which not in ("best", "last"):
        raise ValueError(f"load_for_eval: which must be 'best' or 'last', got {which!r}")
    requested = pathlib.Path(path)
    path = _abs(path)
    if not path.exists():
        raise FileNotFoundError(f"load_for_eval: {requested} does not exist"
                                + (f" (resolved to {path})" if str(requested) != str(path) else ""))
    run_dir = _find_run_dir(path)
    config = TrainConfig.from_file(run_dir / "config.json")
    if path.name.startswith("step_"):
        dirs, kind_asked = [], "step"
        candidates = [("step", path)]
    else:
        if path.name in ("best", "last"):
            kind_asked, dirs = path.name, [path]
        else:
            kind_asked = which
            dirs = [run_dir / "checkpoints" / k for k in ((which, "last") if which == "best" else (which,))]
        candidates = [(d.name, p) for d in dirs for p in list_checkpoints(d)]
    skipped: list[str] = []
    chosen = None
    for kind, ckpt in candidates:
        try:
            manifest = verify_checkpoint(ckpt)
            arrays = _read_arrays(ckpt, manifest)
        except CheckpointError as e:
            if kind == "step":  # an explicit step_* directory: no substitution
                raise
            skipped.append(str(e))
            warnings.warn(f"{e}; falling back to the previous checkpoint", CheckpointCorruptionWarning, stacklevel=2)
            continue
        chosen = (kind, ckpt, manifest, arrays)
        break
    if chosen is None:
        where = ", ".join(str(d) for d in dirs) or str(path)
        why = f" ({len(skipped)} corrupt: {skipped[0]})" if skipped else " (none found)"
        raise FileNotFoundError(f"load_for_eval: no intact checkpoint under {where}{why}")
    kind, ckpt, manifest, arrays = chosen
    variables: dict = {}
    for leaf, a in zip(manifest["leaves"], arrays):
        parts = leaf["path"].split("/")
        if parts[0] not in ("params", "batch_stats"):
            continue
        node = variables
        for k in parts[:-1]:
            node = node.setdefault(k, {})
        node[parts[-1]] = a
    if "params" not in variables:
        raise CheckpointError(f"{ckpt}: no params in checkpoint")
    model = config.build_model()
    if not with_info:
        return model, variables, config
    substituted = None
    if kind != kind_asked and kind_asked != "step":
        reason = (f"{len(skipped)} checkpoint(s) under {kind_asked}/ corrupt" if skipped
                  else f"no {kind_asked}/ checkpoint")
        substituted = f"{reason}: evaluated {kind}/{ckpt.name} (step {manifest['step']}) instead"
    elif skipped:
        substituted = (f"{len(skipped)} newer checkpoint(s) under {kind}/ corrupt: evaluated the older "
                       f"{ckpt.name} (step {manifest['step']})")
    info = {"path": str(ckpt), "step": int(manifest["step"]), "kind": kind, "requested": str(requested),
            "skipped": skipped, "substituted": substituted}
    return model, variables, config, info
