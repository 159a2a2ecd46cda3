"""Tests of advjax.native.onednn: the oneDNN convolutions behind jax.ffi equal XLA's (values and
gradients of every order), models give the same numbers with and without them, and the selection
(ADVJAX_CONV) fails loudly and says why.

The numerical tests need the ``[onednn]`` extra (part of ``[dev]`` on Linux x86-64) and a C++
compiler; without them they are skipped with the reason. The selection tests always run."""
import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import parameterized

from advjax import attacks, models
from advjax.models import ops
from advjax.native import onednn

AVAILABLE, WHY = onednn.status()
needs_onednn = pytest.mark.skipif(not AVAILABLE, reason=f"oneDNN convolutions unavailable: {WHY}")

DN = ("NHWC", "HWIO", "NHWC")
# (x shape, w shape, strides, pads): Model B's conv 2, a ResNet 3x3, a stride-2 3x3, a 1x1
# stride-2 shortcut, asymmetric padding, a non-square input
CASES = [
    ((3, 12, 12, 16), (5, 5, 16, 8), (1, 1), ((0, 0), (0, 0))),
    ((2, 8, 8, 8), (3, 3, 8, 8), (1, 1), ((1, 1), (1, 1))),
    ((2, 9, 9, 4), (3, 3, 4, 6), (2, 2), ((1, 1), (1, 1))),
    ((2, 8, 8, 4), (1, 1, 4, 6), (2, 2), ((0, 0), (0, 0))),
    ((1, 10, 7, 3), (5, 3, 3, 5), (1, 2), ((2, 1), (0, 2))),
]


def _ref(x, w, strides, pads):
    return jax.lax.conv_general_dilated(x, w, strides, pads, dimension_numbers=DN)


def _operands(xs, ws, seed=0):
    kx, kw, kg = jax.random.split(jax.random.key(seed), 3)
    x = jax.random.normal(kx, xs)
    w = jax.random.normal(kw, ws)
    return x, w, kg


@needs_onednn
class OnednnConvTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.parameters(*CASES)
    def test_three_operations_equal_xla(self, xs, ws, strides, pads):
        x, w, kg = _operands(xs, ws)
        y_ref, pull = jax.vjp(lambda x, w: _ref(x, w, strides, pads), x, w)
        g = jax.random.normal(kg, y_ref.shape)
        dx_ref, dw_ref = pull(g)
        fwd = self.variant(lambda x, w: onednn.conv(x, w, strides, pads))
        bwd_data = self.variant(lambda g, w: onednn.conv_backward_data(g, w, xs, strides, pads))
        bwd_weights = self.variant(lambda x, g: onednn.conv_backward_weights(x, g, ws, strides, pads))
        # several calls each: oneDNN 3.2 gave wrong kernel gradients on the first calls only, for
        # the 1x1 stride-2 case (unread last row and column; see onednn._exact_geometry)
        for _ in range(3):
            np.testing.assert_allclose(fwd(x, w), y_ref, rtol=1e-5, atol=1e-4)
            np.testing.assert_allclose(bwd_data(g, w), dx_ref, rtol=1e-5, atol=1e-4)
            np.testing.assert_allclose(bwd_weights(x, g), dw_ref, rtol=1e-5, atol=1e-4)

    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.parameters(*CASES[:3])
    def test_second_order_gradients_equal_xla(self, xs, ws, strides, pads):
        """d/dw ||d/dx L||^2 (FGSM-GA's GradAlign) and the mixed second derivatives: each
        operation's derivative is written with the other two, so this stays on oneDNN."""
        x, w, _ = _operands(xs, ws, seed=1)

        def penalty(conv):
            def f(x, w):
                gx = jax.grad(lambda x_: jnp.tanh(conv(x_, w)).sum())(x)
                return (gx**2).sum() + jnp.sin(conv(x, w)).sum()

            return jax.grad(f, argnums=(0, 1))

        got = self.variant(penalty(lambda x, w: onednn.conv(x, w, strides, pads)))(x, w)
        want = penalty(lambda x, w: _ref(x, w, strides, pads))(x, w)
        for a, b in zip(got, want):
            # entries reach ~4e3 here, and XLA's own float32 result is ~3e-2 from the float64 one:
            # the tolerance is relative to the largest entry
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=3e-5 * float(jnp.abs(b).max()))

    def test_vmap_over_an_extra_axis(self):
        x, w, _ = _operands((3, 2, 8, 8, 4), (3, 3, 4, 5))
        got = jax.vmap(lambda x: onednn.conv(x, w, (1, 1), ((1, 1), (1, 1))))(x)
        want = jax.vmap(lambda x: _ref(x, w, (1, 1), ((1, 1), (1, 1))))(x)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)

    def test_rejects_other_dtypes(self):
        x, w, _ = _operands((1, 6, 6, 4), (3, 3, 4, 4))
        with pytest.raises(TypeError, match="float32"):
            onednn.conv(x.astype(jnp.bfloat16), w.astype(jnp.bfloat16), (1, 1), ((1, 1), (1, 1)))


@needs_onednn
# The layers are covered one by one above (CASES) and Model B in the 8-device test below; whole
# models run under the slow marker to keep the default run short (ResNet-20: ~45 s)
@pytest.mark.slow
@pytest.mark.parametrize("name,shape", [("model_b", (28, 28, 1)), ("resnet20", (32, 32, 3))])
def test_model_and_attack_give_the_same_numbers_on_both_backends(monkeypatch, name, shape):
    """Logits, the training gradient and a PGD attack with ADVJAX_CONV=onednn equal ADVJAX_CONV=xla
    (float tolerance), so switching backends changes speed only."""
    model = models.get_model(name)
    variables = models.init_variables(model, jax.random.key(0))
    x = jax.random.uniform(jax.random.key(1), (8, *shape))
    y = jnp.arange(8) % 10

    def run():
        def loss(params, x):
            logits = model.apply({**variables, "params": params}, x)
            return -jnp.mean(jax.nn.log_softmax(logits)[jnp.arange(8), y]), logits

        (l, logits), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(variables["params"], x)
        pgd = attacks.PGD(eps=8 / 255, step_size=2 / 255, steps=3, random_start=False)
        x_adv = jax.jit(lambda x: pgd(model.apply, variables, x, y, jax.random.key(2)))(x)
        return logits, grads, x_adv

    monkeypatch.setenv("ADVJAX_CONV", "xla")
    ref = run()
    monkeypatch.setenv("ADVJAX_CONV", "onednn")
    plan_b = ops.conv_plan((8, 24, 24, 16), (5, 5, 16, 32), (1, 1), ((0, 0), (0, 0)))
    assert plan_b == ("onednn", "onednn", "onednn")
    got = run()
    np.testing.assert_allclose(got[0], ref[0], rtol=1e-4, atol=1e-4)
    for a, b in zip(jax.tree.leaves(got[1]), jax.tree.leaves(ref[1])):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-5)
    # PGD takes signs of gradients: a gradient entry within float noise of 0 may flip one pixel's
    # step, so compare the fraction of pixels that differ, not every pixel
    assert float(jnp.mean(jnp.abs(got[2] - ref[2]) > 1e-5)) < 0.01


@needs_onednn
@pytest.mark.skipif(jax.device_count() < 8, reason="needs 8 (simulated) devices; see conftest")
def test_eight_devices_run_their_shard_and_match_one_device(monkeypatch):
    """Under jit with the batch sharded on 8 devices, each oneDNN call gets its device's share of
    the batch (no all-gather: a custom call has no sharding rule unless we give it one) and the
    kernel gradient is summed across devices once: a training step equals the 1-device step.

    Model B (no batch norm): at initialization a train-mode batch norm makes some kernel
    gradients nearly cancel, and there 1 and 8 devices differ by a few percent with XLA's own
    convolutions too; standard training, because an attack's sign steps amplify float noise."""
    from advjax.methods.base import get_method
    from advjax.train.mesh import batch_sharding, make_mesh, replicate, replicated, shard_batch
    from advjax.train.state import create_train_state
    import optax

    monkeypatch.setenv("ADVJAX_CONV", "onednn")
    model = models.get_model("model_b")
    assert ops.conv_plan((2, 24, 24, 16), (5, 5, 16, 32), (1, 1), ((0, 0), (0, 0))) == ("onednn",) * 3
    state = create_train_state(model, optax.sgd(0.05, momentum=0.9), jax.random.PRNGKey(0))
    x = jax.random.uniform(jax.random.key(1), (16, 28, 28, 1))
    y = jnp.arange(16) % 10
    method = get_method("standard")

    def step(s, batch):
        return method.step(s, batch, jax.random.key(3))

    s1, m1 = jax.jit(step)(state, (x, y))
    mesh = make_mesh(8)
    sharded = jax.jit(step, in_shardings=(replicated(mesh), batch_sharding(mesh)),
                      out_shardings=(replicated(mesh), replicated(mesh)))
    args = (replicate(state, mesh), shard_batch((x, y), mesh))
    hlo = sharded.lower(*args).compile().as_text()
    calls = [line for line in hlo.splitlines() if "advjax_onednn_conv" in line and "custom-call(" in line]
    assert calls, "the oneDNN convolutions were not used"
    assert all(" f32[16," not in line.split("custom-call(")[0] for line in calls), "a device ran the whole batch"
    s8, m8 = sharded(*args)
    chex.assert_trees_all_close(jax.device_get(s8.params), jax.device_get(s1.params), atol=1e-6, rtol=1e-5)
    np.testing.assert_allclose(float(m8["loss"]), float(m1["loss"]), rtol=1e-5)


# ------------------------------------------------------------------------------------------
# selection: ADVJAX_CONV
# ------------------------------------------------------------------------------------------
def test_unknown_mode_is_a_value_error(monkeypatch):
    monkeypatch.setenv("ADVJAX_CONV", "cudnn")
    with pytest.raises(ValueError, match="ADVJAX_CONV='cudnn'"):
        onednn.mode()


def test_xla_mode_never_uses_onednn(monkeypatch):
    monkeypatch.setenv("ADVJAX_CONV", "xla")
    assert not onednn.enabled()
    assert ops.conv_plan((8, 24, 24, 16), (5, 5, 16, 32), (1, 1), ((0, 0), (0, 0))) == ("conv", "conv", "conv")


def test_required_but_unavailable_says_why(monkeypatch):
    monkeypatch.setattr(onednn, "_load", lambda: (False, "FileNotFoundError: oneDNN not found"))
    monkeypatch.setenv("ADVJAX_CONV", "auto")
    assert not onednn.enabled()  # auto: quietly XLA
    monkeypatch.setenv("ADVJAX_CONV", "onednn")
    with pytest.raises(RuntimeError, match="oneDNN not found"):
        onednn.enabled()


def test_other_backends_never_use_onednn(monkeypatch):
    monkeypatch.setenv("ADVJAX_CONV", "onednn")
    assert not onednn.enabled("gpu")
    assert ops.conv_plan((8, 24, 24, 16), (5, 5, 16, 32), (1, 1), ((0, 0), (0, 0)), backend="tpu") == (
        "conv", "conv", "conv")


def test_missing_library_error_names_where_it_looked(monkeypatch, tmp_path):
    monkeypatch.setattr(onednn, "_roots", lambda: [tmp_path])
    with pytest.raises(FileNotFoundError, match=str(tmp_path)) as e:
        onednn._find_onednn()
    assert "advjax[onednn]" in str(e.value)
