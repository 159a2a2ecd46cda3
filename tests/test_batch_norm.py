"""advjax.models.batch_norm.BatchNorm equals flax.linen.BatchNorm: the same variables, outputs,
running statistics and gradients (first and second order), in training and eval mode, with and
without jit; and it is what the models use unless fast_conv=False."""
import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import parameterized

from advjax import models
from advjax.models.batch_norm import BatchNorm, _sum_rows, batch_norm_train

SHAPES = [(8, 6, 6, 5), (3, 4, 4, 16), (6, 10)]


def _pair(**kw):
    return nn.BatchNorm(momentum=0.9, epsilon=1e-5, **kw), BatchNorm(momentum=0.9, epsilon=1e-5, **kw)


def _data(shape, seed=0):
    kx, kg = jax.random.split(jax.random.key(seed))
    # a large mean and spread, so E[x^2] - E[x]^2 is exercised
    return 3.0 * jax.random.normal(kx, shape) + 1.5, jax.random.normal(kg, shape)


class BatchNormTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.parameters(*SHAPES)
    def test_training_mode_equals_flax(self, *shape):
        x, g = _data(shape)
        ref, ours = _pair(use_running_average=False)
        v_ref, v_ours = ref.init(jax.random.key(1), x), ours.init(jax.random.key(1), x)
        chex.assert_trees_all_equal(v_ref, v_ours)  # same names, shapes, initial values
        params = {"scale": jnp.linspace(0.5, 2.0, shape[-1]), "bias": jnp.linspace(-1.0, 1.0, shape[-1])}

        def run(mod):
            def loss(p, x):
                y, upd = mod.apply({"params": p, "batch_stats": v_ref["batch_stats"]}, x, mutable=["batch_stats"])
                return jnp.vdot(jnp.tanh(y), g), (y, upd["batch_stats"])

            (l, (y, stats)), grads = jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)(params, x)
            return l, y, stats, grads

        got = self.variant(lambda: run(ours))()
        want = run(ref)
        chex.assert_trees_all_close(got, want, rtol=2e-5, atol=2e-5)

    @chex.variants(with_jit=True, without_jit=True)
    def test_eval_mode_equals_flax(self):
        x, _ = _data((4, 5, 5, 3))
        ref, ours = _pair(use_running_average=True)
        v = {"params": {"scale": jnp.array([1.0, 2.0, 0.5]), "bias": jnp.array([0.1, -0.2, 0.3])},
             "batch_stats": {"mean": jnp.array([1.0, 0.0, -1.0]), "var": jnp.array([4.0, 1.0, 0.25])}}
        got = self.variant(lambda x: ours.apply(v, x))(x)
        np.testing.assert_allclose(got, ref.apply(v, x), rtol=1e-6, atol=1e-6)

    def test_second_order_gradient_equals_flax(self):
        """d/dscale of ||d loss / dx||^2 through training-mode BN (GradAlign-style double backprop)."""
        x, g = _data((6, 4, 4, 3), seed=2)
        ref, ours = _pair(use_running_average=False)
        v = ref.init(jax.random.key(0), x)

        def penalty(mod):
            def f(p):
                def loss(x):
                    y, _ = mod.apply({"params": p, "batch_stats": v["batch_stats"]}, x, mutable=["batch_stats"])
                    return jnp.vdot(jnp.sin(y), g)
                return jnp.sum(jax.grad(loss)(x) ** 2)
            return jax.jit(jax.grad(f))(v["params"])

        chex.assert_trees_all_close(penalty(ours), penalty(ref), rtol=1e-4, atol=1e-4)

    def test_cotangents_of_the_batch_statistics(self):
        """The returned mean and variance are differentiable too (dx gets their terms)."""
        x, _ = _data((5, 3, 3, 2), seed=3)
        s, b = jnp.array([1.0, 2.0]), jnp.array([0.0, 1.0])

        def stats_ours(x):
            _, m, v = batch_norm_train(x, s, b, 1e-5)
            return jnp.sum(m * jnp.array([1.0, -2.0])) + jnp.sum(v * jnp.array([0.5, 3.0]))

        def stats_ref(x):
            m = x.mean((0, 1, 2))
            v = (x * x).mean((0, 1, 2)) - m * m
            return jnp.sum(m * jnp.array([1.0, -2.0])) + jnp.sum(v * jnp.array([0.5, 3.0]))

        np.testing.assert_allclose(jax.grad(stats_ours)(x), jax.grad(stats_ref)(x), rtol=1e-4, atol=1e-6)

    def test_bfloat16_compute_keeps_float32_statistics(self):
        x, _ = _data((4, 3, 3, 4))
        ref, ours = _pair(use_running_average=False, dtype=jnp.bfloat16)
        v = ref.init(jax.random.key(0), x)
        y_o, s_o = ours.apply(v, x.astype(jnp.bfloat16), mutable=["batch_stats"])
        y_r, s_r = ref.apply(v, x.astype(jnp.bfloat16), mutable=["batch_stats"])
        assert y_o.dtype == y_r.dtype == jnp.bfloat16
        assert s_o["batch_stats"]["mean"].dtype == jnp.float32
        np.testing.assert_allclose(np.asarray(y_o, np.float32), np.asarray(y_r, np.float32), atol=0.05)
        chex.assert_trees_all_close(s_o, s_r, rtol=1e-3, atol=1e-3)


def test_column_sums_are_accurate():
    """The blocked GEMV sums over 65536 rows stay within 1e-6 of float64 (relative to the sum);
    one GEMV over all rows, accumulating sequentially, is ~6e-6 off."""
    a = 3.0 * jax.random.normal(jax.random.key(0), (65536, 8)) + 1.0
    exact = np.asarray(a, np.float64).sum(0)
    rel = lambda s: np.abs(np.asarray(s) - exact).max() / np.abs(exact).max()
    assert rel(jax.jit(_sum_rows)(a)) < 1e-6
    assert rel(jax.jit(lambda a: jnp.ones(65536) @ a)(a)) > 1e-6  # why the blocks are there


@pytest.mark.parametrize("name", ["resnet20", "preact_resnet18", "vgg11_bn", "sdi_generator"])
def test_models_use_it_unless_fast_conv_is_off(name):
    def bn_classes(model):
        found = set()

        def spy(next_fun, args, kwargs, context):
            if isinstance(context.module, (nn.BatchNorm, BatchNorm)):
                found.add(type(context.module))
            return next_fun(*args, **kwargs)

        x = jnp.zeros((1, 32, 32, 3))
        args = (x, x) if name == "sdi_generator" else (x,)
        with nn.intercept_methods(spy):  # the modules are seen while tracing: no need to compute
            jax.eval_shape(lambda: model.init(jax.random.key(0), *args))
        return found

    assert bn_classes(models.get_model(name)) == {BatchNorm}
    assert bn_classes(models.get_model(name, fast_conv=False)) == {nn.BatchNorm}
