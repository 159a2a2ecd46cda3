"""Data parallel by sharding: the 8-device step (batch on "data", state replicated, same jitted
step) matches the 1-device step for standard training, PGD-AT and TRADES; batch sizes that do not
divide are clear errors; and the shard_map + pmean pitfall is not what we do."""
from __future__ import annotations

from functools import partial

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import PartitionSpec as P

from advjax.methods.base import get_method
from advjax.train.mesh import batch_sharding, check_batch_size, make_mesh, replicate, replicated, shard_batch
from advjax.train.state import create_train_state

pytestmark = pytest.mark.skipif(jax.device_count() < 8, reason="needs 8 (simulated) devices; see conftest")


class TinyBNCNN(nn.Module):
    num_classes: int = 4
    input_shape: tuple = (6, 6, 1)

    @nn.compact
    def __call__(self, x, train: bool = False):
        h = nn.Conv(4, (3, 3))(x)
        h = nn.BatchNorm(use_running_average=not train, momentum=0.9)(h)
        h = nn.relu(h).reshape(x.shape[0], -1)
        return nn.Dense(self.num_classes)(h)


RNG = np.random.default_rng(0)
X = RNG.uniform(size=(32, 6, 6, 1)).astype(np.float32)
Y = (np.arange(32) % 4).astype(np.int32)
KEY = jax.random.PRNGKey(5)


def _state():
    return create_train_state(TinyBNCNN(), optax.sgd(0.1, momentum=0.9), jax.random.PRNGKey(0))


_FAST = {"xla_backend_optimization_level": 0}  # tiny programs: compile time dominates on 2 shared cores


def _run(method, state, steps, mesh=None):
    def train_step(s, batch):
        return method.step(s, batch, jax.random.fold_in(s.key, s.step))
    if mesh is None:
        batch = (X, Y)
        fn = jax.jit(train_step).lower(state, batch).compile(_FAST)
    else:
        state, batch = replicate(state, mesh), shard_batch((X, Y), mesh)
        fn = jax.jit(train_step, in_shardings=(replicated(mesh), batch_sharding(mesh)),
                     out_shardings=(replicated(mesh), replicated(mesh))).lower(state, batch).compile(_FAST)
    for _ in range(steps):
        state, metrics = fn(state, batch)
    return state, metrics


@pytest.mark.parametrize("name,kw", [("standard", {}), ("pgd_at", dict(eps=0.1, alpha=0.04, steps=2)),
                                     ("trades", dict(eps=0.1, alpha=0.04, steps=2))])
def test_eight_devices_match_one_device(name, kw):
    method = get_method(name, **kw)
    mesh = make_mesh(8)
    # Attacks take sign(∇ₓ) of near-zero input gradients (TRADES starts at x + 0.001·N(0, I)), so
    # after one update a last-bit difference in the parameters (summation order) can flip single
    # pixels' steps of the next attack; compare adversarial methods after one full step (attack under
    # sharding, cross-device BN statistics, gradient reduction, update), standard after two.
    steps = 2 if name == "standard" else 1
    s1, m1 = _run(method, _state(), steps)
    s8, m8 = _run(method, _state(), steps, mesh)
    assert s8.params["Dense_0"]["kernel"].sharding.is_fully_replicated
    tol = dict(atol=2e-6, rtol=2e-5)
    chex.assert_trees_all_close(jax.device_get(s8.params), jax.device_get(s1.params), **tol)
    chex.assert_trees_all_close(jax.device_get(s8.batch_stats), jax.device_get(s1.batch_stats), **tol)
    np.testing.assert_allclose(float(m8["loss"]), float(m1["loss"]), rtol=1e-5)
    # the training actually moved the parameters (the comparison is not between two no-ops)
    assert float(jnp.abs(s1.params["Dense_0"]["kernel"] - _state().params["Dense_0"]["kernel"]).max()) > 1e-3


def test_batch_size_must_divide_device_count():
    mesh = make_mesh(8)
    with pytest.raises(ValueError, match="batch size 12 is not divisible by the number of devices \\(8\\)"):
        shard_batch((X[:12], Y[:12]), mesh)
    with pytest.raises(ValueError, match="not divisible"):
        check_batch_size(30, 8)
    with pytest.raises(ValueError, match="only 8 are available"):
        make_mesh(16)


def test_gradients_equal_one_device_unlike_shard_map_pmean():
    """jit + NamedSharding gives the 1-device gradient of the global batch; the usual pmap port
    (shard_map with lax.pmean of the gradients, default check_vma=True) would not: replicated
    parameters' gradients are already summed over devices, so the pmean result is 8x too large."""
    method = get_method("standard")
    state = _state()
    mesh = make_mesh(8)

    def grads(s, batch):
        return method.gradients(s, batch, KEY)[1]

    g1 = jax.jit(grads)(state, (X, Y))
    ours = jax.jit(grads, in_shardings=(replicated(mesh), batch_sharding(mesh)), out_shardings=replicated(mesh))(
        replicate(state, mesh), shard_batch((X, Y), mesh))
    chex.assert_trees_all_close(jax.device_get(ours), jax.device_get(g1), atol=1e-6, rtol=1e-5)

    # the pitfall, for contrast (a model without batch norm, so only the reduction differs):
    # loss = mean over the local shard, gradients pmean'ed, check_vma=True
    w = jnp.asarray(RNG.normal(size=(36, 4)), jnp.float32)
    xf = X.reshape(32, -1)

    def loss(w, x, y):
        return optax.softmax_cross_entropy_with_integer_labels(x @ w, y).mean()

    @partial(jax.shard_map, mesh=mesh, in_specs=(P(), P("data"), P("data")), out_specs=P())
    def pmap_style(w, x, y):
        return jax.lax.pmean(jax.grad(loss)(w, x, y), "data")

    g_true = jax.grad(loss)(w, xf, Y)
    g_bad = jax.jit(pmap_style)(w, xf, Y)
    g_ours = jax.jit(jax.grad(loss), in_shardings=(replicated(mesh), batch_sharding(mesh), batch_sharding(mesh)),
                     out_shardings=replicated(mesh))(w, xf, Y)
    np.testing.assert_allclose(g_ours, g_true, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(g_bad, 8.0 * g_true, rtol=1e-4, atol=1e-6)  # 8x: the silent failure
