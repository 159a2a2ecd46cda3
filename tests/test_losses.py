"""Tests of the attack losses (advjax.losses): values against hand computations, shapes, signs."""
import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from advjax import losses


def _np_ce(z, y):
    z = np.asarray(z, np.float64)
    m = z.max(-1, keepdims=True)
    lse = (m + np.log(np.exp(z - m).sum(-1, keepdims=True)))[:, 0]
    return lse - z[np.arange(len(y)), y]


@settings(max_examples=4, deadline=None)
@given(n=st.sampled_from([2, 3]), k=st.sampled_from([4, 10]), seed=st.integers(0, 2**16))
def test_losses_match_numpy(n, k, seed):
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, k)).astype(np.float32) * 3
    y = rng.integers(0, k, size=n).astype(np.int32)
    t = (y + 1 + rng.integers(0, k - 1, size=n)) % k
    ce = losses.cross_entropy(z, y)
    chex.assert_shape(ce, (n,))
    np.testing.assert_allclose(ce, _np_ce(z, y), rtol=1e-5, atol=1e-5)

    zs = np.sort(z, -1)
    z_y = z[np.arange(n), y]
    other = np.where(np.arange(k)[None] == y[:, None], -np.inf, z).max(-1)
    np.testing.assert_allclose(losses.cw_margin(z, y), other - z_y, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(losses.dlr(z, y), -(z_y - other) / (zs[:, -1] - zs[:, -3] + 1e-12), rtol=1e-5,
                               atol=1e-6)
    z_t = z[np.arange(n), t]
    np.testing.assert_allclose(losses.dlr_targeted(z, y, t),
                               -(z_y - z_t) / (zs[:, -1] - 0.5 * (zs[:, -3] + zs[:, -4]) + 1e-12), rtol=1e-5,
                               atol=1e-6)
    z2 = rng.normal(size=(n, k)).astype(np.float32)
    p = np.exp(z2 - z2.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    q = np.exp(z - z.max(-1, keepdims=True))
    q /= q.sum(-1, keepdims=True)
    np.testing.assert_allclose(losses.trades_kl(z, z2), (p * (np.log(p) - np.log(q))).sum(-1), rtol=1e-4, atol=1e-5)


def test_margin_sign_is_misclassification():
    z = jnp.array([[3.0, 1.0, 0.0, -1.0], [0.0, 2.0, 1.0, 0.5]])
    y = jnp.array([0, 0])
    assert bool(losses.cw_margin(z, y)[0] < 0) and bool(losses.cw_margin(z, y)[1] > 0)
    assert bool(losses.dlr(z, y)[0] < 0) and bool(losses.dlr(z, y)[1] > 0)
    np.testing.assert_allclose(losses.cw_margin(z, y, kappa=1.0), [-2.0, 1.0])


def test_kl_zero_iff_same_and_invariant_to_shift():
    z = jax.random.normal(jax.random.PRNGKey(0), (4, 10))
    np.testing.assert_allclose(losses.trades_kl(z, z), 0.0, atol=1e-6)
    np.testing.assert_allclose(losses.trades_kl(z + 5.0, z), 0.0, atol=1e-5)
    assert bool(jnp.all(losses.trades_kl(z, -z) > 0))


def test_dlr_scale_invariant_and_class_count_errors():
    z = jax.random.normal(jax.random.PRNGKey(1), (3, 10))
    y = jnp.array([0, 1, 2])
    np.testing.assert_allclose(losses.dlr(z, y), losses.dlr(7.0 * z + 2.0, y), rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="at least 3 classes"):
        losses.dlr(jnp.zeros((2, 2)), jnp.array([0, 1]))
    with pytest.raises(ValueError, match="at least 4 classes"):
        losses.dlr_targeted(jnp.zeros((2, 3)), jnp.array([0, 1]), jnp.array([1, 2]))


def test_losses_jit_and_grad():
    z = jax.random.normal(jax.random.PRNGKey(2), (5, 10))
    y = jnp.arange(5)
    for f in (losses.cross_entropy, losses.cw_margin, losses.dlr):
        v = jax.jit(f)(z, y)
        chex.assert_shape(v, (5,))
        g = jax.grad(lambda a: f(a, y).sum())(z)
        assert bool(jnp.all(jnp.isfinite(g)))
