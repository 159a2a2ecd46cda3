"""Several JAX processes as one run: start-up, each process's share of a batch, agreement checks.

JAX is the distributed engine: after ``initialize()`` every process sees all devices of all
processes in ``jax.devices()``, a mesh over them is one global mesh, and a jitted step over global
arrays runs as one SPMD program (the cross-process reductions are XLA's). This module adds what a
correct multi-process *run* needs on top of that:

- ``initialize(coordinator_address, num_processes, process_id)``: from the arguments, else the
  environment (``JAX_COORDINATOR_ADDRESS``, ``JAX_NUM_PROCESSES``, ``JAX_PROCESS_ID``), else jax's
  own cluster auto-detection (SLURM, Open MPI, cloud TPU, ...). On CPU it selects the gloo
  collectives (without them CPU processes cannot reduce across each other).
- ``local_rows(mesh, global_batch)``: the rows of a global batch this process feeds (its devices'
  shards, in mesh order); ``global_batch(tree, mesh)`` assembles a global array from each process's
  rows with ``jax.make_array_from_process_local_data``; ``shard_host_batch`` does both for a batch
  every process holds whole (evaluation data).
- ``check_same_config(d)``: every process must run the same configuration; a difference is a
  ValueError on every process, and process 0's names the keys and the processes that differ.
- ``to_host(x)``: the value of a (possibly multi-process) array on every process.
- ``is_main()``: process 0 writes metrics, plots, results and config files; ``barrier(name)``.

Guaranteed: with one process every function is the single-process behaviour (no collective runs).
Not guaranteed (cannot be checked on one machine): network bandwidth, TPU-pod topologies,
filesystems that are not shared between hosts (checkpoints need one path all hosts see).
"""
from __future__ import annotations

import hashlib
import json
import os
from typing import Any, Mapping, Optional

import jax
import numpy as np

__all__ = ["initialize", "is_initialized", "process_count", "process_index", "is_main", "barrier",
           "local_rows", "global_batch", "shard_host_batch", "check_same_config", "to_host",
           "agree", "DistributedError"]


class DistributedError(ValueError):
    """The processes of a run disagree, or a multi-process set-up is wrong."""


def is_initialized() -> bool:
    fn = getattr(jax.distributed, "is_initialized", None)
    if fn is not None:
        return bool(fn())
    from jax._src import distributed as _d  # older jax: the global state's client
    return _d.global_state.client is not None


def _env_int(name: str) -> Optional[int]:
    v = os.environ.get(name)
    if v is None or v == "":
        return None
    try:
        return int(v)
    except ValueError:
        raise DistributedError(f"environment variable {name}={v!r} must be an integer") from None


def initialize(coordinator_address: Optional[str] = None, num_processes: Optional[int] = None,
               process_id: Optional[int] = None, *, local_device_ids=None,
               initialization_timeout: int = 300) -> bool:
    """Start multi-process JAX (``jax.distributed.initialize``); call before anything touches a device.

    Each argument left None comes from the environment (``JAX_COORDINATOR_ADDRESS`` host:port,
    ``JAX_NUM_PROCESSES``, ``JAX_PROCESS_ID``); what is still None is left to jax's auto-detection
    (SLURM, Open MPI, cloud TPU, Kubernetes jobs), which needs none of them. Returns True once
    initialized (also when it already was). A wrong set-up raises DistributedError saying what to
    pass. On the CPU backend the cross-process collectives are set to gloo unless you set
    ``jax_cpu_collectives_implementation`` yourself.
    """
    if is_initialized():
        return True
    coordinator_address = coordinator_address or os.environ.get("JAX_COORDINATOR_ADDRESS") or None
    if num_processes is None:
        num_processes = _env_int("JAX_NUM_PROCESSES")
    if process_id is None:
        process_id = _env_int("JAX_PROCESS_ID")
    for name, v in (("num_processes", num_processes), ("process_id", process_id)):
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 0):
            raise DistributedError(f"{name} must be a non-negative integer, got {v!r}")
    if num_processes is not None and process_id is not None and process_id >= num_processes:
        raise DistributedError(f"process_id {process_id} is out of range for {num_processes} processes "
                               f"(ids are 0 .. {num_processes - 1})")
    if coordinator_address is not None and ":" not in coordinator_address:
        raise DistributedError(f"coordinator address {coordinator_address!r} must be host:port, e.g. 10.0.0.1:1234")
    try:
        if jax.config.jax_cpu_collectives_implementation in (None, "", "none"):
            jax.config.update("jax_cpu_collectives_implementation", "gloo")
    except AttributeError:  # pragma: no cover - a jax without the option
        pass
    kw: dict[str, Any] = {"initialization_timeout": initialization_timeout}
    if local_device_ids is not None:
        kw["local_device_ids"] = local_device_ids
    try:
        jax.distributed.initialize(coordinator_address=coordinator_address, num_processes=num_processes,
                                   process_id=process_id, **kw)
    except (ValueError, RuntimeError) as e:
        raise DistributedError(
            f"jax.distributed.initialize failed ({type(e).__name__}: {e}). Pass --coordinator-address HOST:PORT "
            f"--num-processes N --process-id I (or set JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID), "
            f"or run under a cluster manager jax detects (SLURM, Open MPI, cloud TPU); call it before any other "
            f"JAX work") from None
    return True


def process_count() -> int:
    return jax.process_count()


def process_index() -> int:
    return jax.process_index()


def is_main() -> bool:
    """True on process 0, the one that writes files meant to exist once (metrics, plots, results)."""
    return jax.process_index() == 0


def barrier(name: str) -> None:
    """Wait until every process reaches the barrier ``name`` (no-op with one process)."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils
        multihost_utils.sync_global_devices(name)


def local_rows(mesh, global_batch: int) -> slice:
    """The rows ``[start, stop)`` of a global batch of ``global_batch`` examples that this process's
    devices hold under ``NamedSharding(mesh, P("data"))``. With one process: all of them.

    A mesh whose devices of one process do not hold one contiguous block is refused (the batch
    would need a gather); ``advjax.train.mesh.make_mesh`` builds contiguous ones."""
    from advjax.train.mesh import batch_sharding, check_batch_size

    check_batch_size(global_batch, mesh)
    if jax.process_count() == 1:
        return slice(0, global_batch)
    idx = batch_sharding(mesh).addressable_devices_indices_map((global_batch,))
    starts = sorted({(s[0].start or 0, s[0].stop if s[0].stop is not None else global_batch) for s in idx.values()})
    lo, hi = starts[0][0], starts[-1][1]
    covered = sum(b - a for a, b in starts)
    if covered != hi - lo:
        raise DistributedError(f"process {jax.process_index()}'s devices do not hold one contiguous block of the "
                               f"batch on this mesh ({starts}); build the mesh with advjax.train.mesh.make_mesh()")
    return slice(lo, hi)


def global_batch(local_tree, mesh, global_size: Optional[int] = None):
    """Assemble global arrays sharded on ``"data"`` from this process's rows (``local_rows``).

    ``local_tree``: a pytree of host arrays with this process's rows first; ``global_size``: the
    global batch (default: local rows x process count). With one process this is ``device_put``."""
    from advjax.train.mesh import batch_sharding

    sh = batch_sharding(mesh)
    if jax.process_count() == 1:
        return jax.device_put(local_tree, sh)

    def one(a):
        a = np.asarray(a)
        n = global_size if global_size is not None else a.shape[0] * jax.process_count()
        return jax.make_array_from_process_local_data(sh, a, (n, *a.shape[1:]))

    return jax.tree.map(one, local_tree)


def shard_host_batch(tree, mesh):
    """A batch every process holds whole, placed as global arrays sharded on ``"data"``: each
    process transfers only its own rows."""
    leaves = jax.tree.leaves(tree)
    if not leaves:
        return tree
    n = int(np.shape(leaves[0])[0])
    rows = local_rows(mesh, n)
    return global_batch(jax.tree.map(lambda a: np.asarray(a)[rows], tree), mesh, n)


def to_host(x):
    """The numpy value of ``x`` (an array or a pytree of them) on every process. Arrays that span
    other processes' devices are gathered (``process_allgather``: a collective, so every process
    must call this for the same arrays in the same order); others are fetched with ``device_get``."""
    def one(a):
        if isinstance(a, jax.Array) and not a.is_fully_addressable and not a.is_fully_replicated:
            from jax.experimental import multihost_utils
            return np.asarray(multihost_utils.process_allgather(a, tiled=True))
        return np.asarray(jax.device_get(a))
    return jax.tree.map(one, x)


def _digest(value) -> np.ndarray:
    text = json.dumps(value, sort_keys=True, default=str)
    return np.frombuffer(hashlib.sha256(text.encode()).digest()[:8], np.int32).copy()


def _allgather_host(a: np.ndarray) -> np.ndarray:
    """[process_count, *a.shape]: every process's ``a`` (host values)."""
    from jax.experimental import multihost_utils
    return np.asarray(multihost_utils.process_allgather(np.asarray(a), tiled=False))


def agree(value, what: str) -> None:
    """DistributedError on every process unless all processes hold the same JSON-able ``value``."""
    if jax.process_count() == 1:
        return
    got = _allgather_host(_digest(value))
    bad = [p for p in range(got.shape[0]) if not np.array_equal(got[p], got[0])]
    if bad:
        raise DistributedError(f"process {jax.process_index()}: the processes disagree on {what} "
                               f"(processes {bad} differ from process 0)")


def check_same_config(config: Mapping[str, Any], what: str = "configuration") -> None:
    """Every process must run the same configuration (a dict of JSON-able values).

    With one process nothing happens. Otherwise every process raises DistributedError when any
    key differs; process 0's message names the keys and the processes (and it is printed there, so
    the launcher's log shows it even when another process is killed first)."""
    if jax.process_count() == 1:
        return
    keys = sorted(config)
    agree(keys, f"the {what}'s keys")
    mine = np.stack([_digest(config[k]) for k in keys]) if keys else np.zeros((0, 2), np.int32)
    got = _allgather_host(mine)  # [P, K, 2]
    diff = {}
    for p in range(1, got.shape[0]):
        for i, k in enumerate(keys):
            if not np.array_equal(got[p, i], got[0, i]):
                diff.setdefault(k, []).append(p)
    if not diff:
        return
    if jax.process_index() == 0:
        items = "; ".join(f"{k} (process 0: {json.dumps(config[k], default=str)}; differs on process(es) "
                          f"{ps})" for k, ps in diff.items())
        msg = (f"process 0: the {what} differs across the {jax.process_count()} processes in {items}. Launch every "
               f"process with the same flags and config file")
        import sys
        print(f"[advjax] error: {msg}", file=sys.stderr, flush=True)
    else:
        msg = (f"process {jax.process_index()}: the {what} differs from process 0's in {sorted(diff)}; see process "
               f"0's error")
    raise DistributedError(msg)
