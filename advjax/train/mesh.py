"""Data parallelism by sharding, not by rewriting (DESIGN.md "Data parallel by sharding").

One ``Mesh`` over the devices with a single axis ``"data"``; the batch is placed with
``NamedSharding(mesh, P("data"))`` (split along its first axis), the TrainState with
``NamedSharding(mesh, P())`` (replicated), and the *same* jitted step runs with those shardings:
XLA inserts the cross-device reductions, so the gradients are exactly the 1-device gradients of the
global batch mean. (The hand-written alternative, ``jax.shard_map`` with ``lax.pmean`` of the
gradients, silently gives device-count-times too large gradients for replicated parameters under the
default ``check_vma=True``: their gradients are already summed across devices. We do not do that;
tests/test_sharding.py checks it.)

For several processes (hosts) call ``advjax.train.distributed.initialize()`` first, then build the
mesh over ``jax.devices()`` (every process's devices, process by process, so each process feeds one
contiguous block of the batch; see ``advjax.train.distributed.local_rows``).
"""
from __future__ import annotations

import os
from typing import Optional, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

__all__ = ["DATA_AXIS", "make_mesh", "batch_sharding", "replicated", "shard_batch", "replicate",
           "check_batch_size", "initialize_distributed", "state_sharding"]

DATA_AXIS = "data"


def make_mesh(num_devices: Optional[int] = None, devices: Optional[Sequence] = None) -> Mesh:
    """A 1-D mesh with axis ``"data"`` over ``devices`` (default: the first ``num_devices`` of
    ``jax.devices()``, all of them if None). Axis type Auto (sharding propagated by XLA).

    With several processes the mesh spans every device of every process (a subset would leave a
    process without a share of the batch): ``num_devices`` must then be None or all of them."""
    if devices is None:
        all_devices = jax.devices()
        if num_devices is None:
            num_devices = len(all_devices)
        if jax.process_count() > 1 and num_devices != len(all_devices):
            raise ValueError(f"with {jax.process_count()} processes the mesh spans all {len(all_devices)} devices; "
                             f"got num_devices={num_devices!r} (leave --devices unset)")
        if jax.process_count() > 1:  # process by process, so each one holds a contiguous block of the batch
            all_devices = sorted(all_devices, key=lambda d: (d.process_index, d.id))
        if not isinstance(num_devices, int) or num_devices < 1:
            raise ValueError(f"num_devices must be a positive integer, got {num_devices!r}")
        if num_devices > len(all_devices):
            raise ValueError(f"asked for {num_devices} devices but only {len(all_devices)} are available "
                             f"({jax.default_backend()}; on CPU set XLA_FLAGS=--xla_force_host_platform_device_count=N)")
        devices = all_devices[:num_devices]
    return Mesh(np.asarray(devices), (DATA_AXIS,), axis_types=(jax.sharding.AxisType.Auto,))


def batch_sharding(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P(DATA_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def check_batch_size(batch_size: int, mesh_or_count) -> None:
    n = mesh_or_count if isinstance(mesh_or_count, int) else mesh_or_count.size
    if batch_size % n:
        raise ValueError(f"batch size {batch_size} is not divisible by the number of devices ({n}"
                         f"{', over all processes' if jax.process_count() > 1 else ''}); "
                         f"use a multiple of {n}, e.g. {max(n, batch_size // n * n)}")


def state_sharding(state, mesh: Mesh, batch_sharded_extra: Sequence[str] = ()):
    """Shardings for a TrainState (same tree): replicated, except ``state.extra[k]`` for ``k`` in
    ``batch_sharded_extra``, whose leaves have the batch as leading axis (layerwise AT's cache of
    the previous batch's gradients) and are sharded on ``"data"`` like the batch.

    Methods name those keys in a ``batch_sharded_extra`` attribute; the loop passes it here."""
    repl = replicated(mesh)
    sh = jax.tree.map(lambda _: repl, state)
    keys = tuple(batch_sharded_extra or ())
    if not keys or not hasattr(state, "extra"):
        return sh
    extra = dict(sh.extra)
    for k in keys:
        if k in state.extra:
            for leaf in jax.tree.leaves(state.extra[k]):
                check_batch_size(leaf.shape[0], mesh)
            extra[k] = jax.tree.map(lambda _: batch_sharding(mesh), state.extra[k])
    return sh.replace(extra=extra)


def shard_batch(batch, mesh: Mesh):
    """Place a host batch (pytree of arrays with leading batch axis) split over ``"data"``."""
    for leaf in jax.tree.leaves(batch):
        check_batch_size(leaf.shape[0], mesh)
    return jax.device_put(batch, batch_sharding(mesh))


def replicate(tree, mesh: Mesh):
    """Place a pytree (e.g. a TrainState) replicated on every device of the mesh."""
    return jax.device_put(tree, replicated(mesh))


def initialize_distributed(coordinator_address: Optional[str] = None, num_processes: Optional[int] = None,
                           process_id: Optional[int] = None, **kw) -> bool:
    """Start multi-process JAX when asked to, else do nothing (kept for callers of the old name).

    ``auto_detect=True`` (what ``--distributed`` passes) always initializes, leaving what is not
    given to the environment and jax's cluster auto-detection; without it, this only initializes
    when an address or a process count is given here or in the environment. See
    ``advjax.train.distributed.initialize``. Returns True if jax.distributed is initialized."""
    from advjax.train import distributed

    auto = kw.pop("auto_detect", False)
    if not auto and coordinator_address is None and num_processes is None \
            and not os.environ.get("JAX_COORDINATOR_ADDRESS") and not os.environ.get("JAX_NUM_PROCESSES"):
        return False
    return distributed.initialize(coordinator_address, num_processes, process_id, **kw)
