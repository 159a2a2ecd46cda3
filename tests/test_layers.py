"""Tests of advjax.layers: capture order (= execution order), names, equality of logits, jit/vmap,
train mode, selection by index or name."""
import collections

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from advjax import layers, models
from advjax.models.activations import Activation

KEY = jax.random.key(0)


def _images(shape, n=2, seed=1):
    return jax.random.uniform(jax.random.key(seed), (n, *shape), jnp.float32)


def _tiny(name):
    """Small versions of the block types (same code paths as the full models)."""
    if name == "resnet":
        return models.ResNet(stage_sizes=(1, 1), widths=(4, 8), input_shape=(8, 8, 3))
    if name == "resnet_a":
        return models.ResNet(stage_sizes=(1, 1), widths=(4, 8), shortcut="pad", input_shape=(8, 8, 3))
    if name == "preact":
        return models.PreActResNet(stage_sizes=(1, 1), widths=(4, 8), input_shape=(8, 8, 3))
    if name == "wrn":
        return models.WideResNet(depth=10, widen_factor=1, input_shape=(8, 8, 3))
    if name == "vgg_bn":
        return models.VGG(depth=11, batch_norm=True, hidden=(8,), input_shape=(32, 32, 3))
    return models.get_model(name)


@pytest.fixture(scope="module")
def model_b():
    m = models.get_model("model_b")
    return m, models.init_variables(m, KEY)


def _call_order(model, variables, x, kind):
    """Independent record of the execution order via flax's method interceptor."""
    want = (nn.Conv, nn.Dense) if kind == "learnable" else (Activation,)
    seen = []

    def interceptor(next_fun, args, kwargs, context):
        if context.method_name == "__call__" and isinstance(context.module, want):
            seen.append("/".join(context.module.path))
        return next_fun(*args, **kwargs)

    with nn.intercept_methods(interceptor):
        jax.eval_shape(lambda v, x: model.apply(v, x), variables, x)  # trace only, no compute
    return seen


# ------------------------------------------------------------------------------------------
# exact names for the paper models
# ------------------------------------------------------------------------------------------
def test_names_of_model_a_and_b():
    assert layers.names(models.get_model("model_a")) == ["Dense_0", "Dense_1", "Dense_2", "Dense_3"]
    assert layers.names(models.get_model("model_a"), kind="activation") == [
        "Activation_0", "Activation_1", "Activation_2"]
    assert layers.names(models.get_model("model_b")) == [
        "Conv_0", "Conv_1", "Conv_2", "Dense_0", "Dense_1"]
    assert layers.names(models.get_model("model_b"), kind="activation") == [
        "Activation_0", "Activation_1", "Activation_2", "Activation_3"]


def test_names_of_big_models_are_readable_paths():
    r18 = layers.names(models.get_model("resnet18"))
    assert len(r18) == 21  # stem + 16 block convs + 3 shortcut convs + fc
    assert r18[0] == "conv1" and r18[-1] == "fc"
    assert r18[1:4] == ["layer1/block0/conv1", "layer1/block0/conv2", "layer1/block1/conv1"]
    assert "layer2/block0/shortcut_conv" in r18
    assert len(layers.names(models.get_model("wrn34_10"))) == 1 + 3 * 5 * 2 + 3 + 1
    assert len(layers.names(models.get_model("vgg16_bn"))) == 13 + 1
    assert len(layers.names(models.get_model("vgg_hldr"))) == 13 + 2
    assert len(layers.names(models.get_model("resnet20"))) == 1 + 18 + 1


# ------------------------------------------------------------------------------------------
# order = execution order, stable, and logits unchanged
# ------------------------------------------------------------------------------------------
def _random_variables(model, seed=0):
    """Variables of the right shapes without compiling ``init``."""
    shapes = jax.eval_shape(lambda: model.init(KEY, jnp.zeros((1, *model.input_shape))))
    rng = np.random.default_rng(seed)

    def fill(path, s):
        last = str(path[-1])
        if "var" in last or "scale" in last:
            return jnp.asarray(rng.uniform(0.5, 1.5, size=s.shape), s.dtype)
        if "mean" in last or "bias" in last:
            return jnp.asarray(rng.normal(size=s.shape) * 0.1, s.dtype)
        fan_in = int(np.prod(s.shape[:-1])) or 1
        return jnp.asarray(rng.normal(size=s.shape) * np.sqrt(2.0 / fan_in), s.dtype)

    return jax.tree_util.tree_map_with_path(fill, shapes)


def _check_order(model, variables, x, feats, kind):
    assert isinstance(feats, collections.OrderedDict)
    assert len(feats) >= 3
    assert list(feats) == _call_order(model, variables, x, kind)  # = execution order
    assert list(feats) == layers.names(model, kind=kind)
    assert all(v.shape[0] == x.shape[0] for v in feats.values())


@pytest.mark.parametrize("name", ["model_a", "model_b"])
def test_capture_keeps_logits_exactly(name):
    """Eager: the captured run is op for op the plain run, so the logits are bit-identical."""
    model = _tiny(name)
    variables = models.init_variables(model, KEY)
    x = _images(model.input_shape, n=2)
    plain = model.apply(variables, x)
    for kind in ("learnable", "activation"):
        logits, feats = layers.capture(model, variables, x, kind=kind)
        np.testing.assert_array_equal(logits, plain)
        _check_order(model, variables, x, feats, kind)
        if kind == "learnable":  # the last learnable layer produces the logits
            np.testing.assert_array_equal(list(feats.values())[-1], logits)


@pytest.mark.parametrize("name", ["resnet", "resnet_a", "preact", "wrn", "vgg_bn"])
def test_capture_is_in_execution_order_under_jit(name):
    """Every block type (small widths, same code as the full models). Under jit XLA may fuse the
    capturing program differently, so logits agree to float rounding (exactness: test above)."""
    model = _tiny(name)
    variables = _random_variables(model)
    x = _images(model.input_shape, n=2)
    plain = jax.jit(model.apply)(variables, x)
    (logits, feats), (logits_a, acts) = jax.jit(lambda v, x: (
        layers.capture(model, v, x), layers.capture(model, v, x, kind="activation")))(variables, x)
    for lg in (logits, logits_a):
        np.testing.assert_allclose(lg, plain, rtol=1e-5, atol=1e-6)
    _check_order(model, variables, x, feats, "learnable")
    _check_order(model, variables, x, acts, "activation")
    np.testing.assert_array_equal(list(feats.values())[-1], logits)


class _Two(nn.Module):
    def setup(self):
        self.a = nn.Dense(3)
        self.b = nn.Dense(3)

    def first(self, x):
        return self.a(x)

    def second(self, x):
        return self.b(x)


class _Interleaved(nn.Module):
    """Execution order two/a, mid, two/b, shared again: flax's nested intermediates dicts hold
    it as two/{a, b}, mid, i.e. not in execution order."""

    input_shape = (3,)

    @nn.compact
    def __call__(self, x, train=False):
        two = _Two(name="two")
        shared = nn.Dense(3, name="shared")
        x = shared(two.first(x))
        x = nn.Dense(3, name="mid")(x)
        return shared(two.second(x))


def _naive_order(model, x):
    order = []

    def run(x):
        variables = model.init(KEY, x)
        _, state = model.apply(variables, x, mutable=["intermediates"],
                               capture_intermediates=lambda m, n: isinstance(m, nn.Dense))

        def walk(d, prefix):  # nested dicts in their insertion order
            for k, v in d.items():
                if k == "__call__":
                    order.extend(["/".join(prefix)] * len(v))
                else:
                    walk(v, prefix + (k,))

        walk(state["intermediates"], ())
        return 0

    jax.eval_shape(run, x)
    return order


def test_order_is_execution_order_where_nested_dicts_are_not():
    model = _Interleaved()
    x = jnp.ones((2, 3))
    variables = model.init(KEY, x)
    logits, feats = layers.capture(model, variables, x)
    assert list(feats) == ["two/a", "shared", "mid", "two/b", "shared#1"]
    assert _naive_order(model, x) == ["two/a", "two/b", "shared", "shared", "mid"]
    # values belong to the right calls
    p = variables["params"]
    a = x @ p["two"]["a"]["kernel"] + p["two"]["a"]["bias"]
    np.testing.assert_allclose(feats["two/a"], a, rtol=1e-6)
    np.testing.assert_allclose(feats["shared"], a @ p["shared"]["kernel"] + p["shared"]["bias"],
                               rtol=1e-5)
    np.testing.assert_array_equal(feats["shared#1"], logits)


def test_shortcut_position_in_block_models():
    pre = layers.names(_tiny("preact"))  # PreActResNet: shortcut conv runs before conv1
    assert pre.index("layer2/block0/shortcut_conv") < pre.index("layer2/block0/conv1")
    wrn = layers.names(_tiny("wrn"))  # TRADES WRN: shortcut after conv2
    assert wrn.index("layer2/block0/shortcut_conv") > wrn.index("layer2/block0/conv2")
    res = layers.names(_tiny("resnet"))  # ResNet: after conv2 (after bn2)
    assert res.index("layer2/block0/shortcut_conv") == res.index("layer2/block0/conv2") + 1


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
def test_capture_values_and_order_under_jit(model_b, jit):
    m, v = model_b
    x = _images((28, 28, 1), n=2)
    fn = (lambda v, x: layers.capture(m, v, x))
    if jit:
        fn = jax.jit(fn)
    logits, feats = fn(v, x)
    assert list(feats) == ["Conv_0", "Conv_1", "Conv_2", "Dense_0", "Dense_1"]
    chex.assert_shape(feats["Conv_0"], (2, 24, 24, 16))
    chex.assert_shape(feats["Conv_1"], (2, 20, 20, 32))
    chex.assert_shape(feats["Conv_2"], (2, 6, 6, 64))
    chex.assert_shape(feats["Dense_0"], (2, 100))
    # equal up to float32 rounding: the first conv's fused sum of taps may be evaluated in another
    # order (or with FMA) in a different program (eager, or with captured outputs)
    np.testing.assert_allclose(logits, jax.jit(m.apply)(v, x), rtol=1e-6, atol=1e-6)
    # the first conv's output is exactly that conv applied to the (identity-normalized) input
    conv0 = nn.Conv(16, (5, 5), padding="VALID")
    np.testing.assert_allclose(feats["Conv_0"], conv0.apply({"params": v["params"]["Conv_0"]}, x),
                               rtol=1e-5, atol=1e-6)
    # activation capture: after the nonlinearity
    _, acts = layers.capture(m, v, x, kind="activation")
    np.testing.assert_allclose(acts["Activation_0"], jax.nn.relu(feats["Conv_0"]), rtol=1e-6, atol=1e-6)
    # stable: a second call gives the same order and the same numbers
    logits2, feats2 = fn(v, x)
    assert list(feats2) == list(feats)
    chex.assert_trees_all_equal(feats2, feats)


def test_capture_under_vmap(model_b):
    m, v = model_b
    xs = _images((28, 28, 1), n=6).reshape(3, 2, 28, 28, 1)  # e.g. 3 restarts of a batch of 2
    logits, feats = jax.jit(jax.vmap(lambda x: layers.capture(m, v, x)))(xs)
    assert list(feats) == layers.names(m)
    chex.assert_shape(logits, (3, 2, 10))
    chex.assert_shape(feats["Conv_2"], (3, 2, 6, 6, 64))
    _, f1 = layers.capture(m, v, xs[1])
    np.testing.assert_allclose(feats["Dense_0"][1], f1["Dense_0"], rtol=1e-5, atol=1e-6)


def test_gradient_through_captured_features(model_b):
    """A feature-level loss (SAT / LAFEAT style) differentiates w.r.t. the input under jit."""
    m, v = model_b
    x = _images((28, 28, 1))

    def loss(x):
        _, feats = layers.capture(m, v, x)
        return jnp.sum(feats["Conv_2"] ** 2)

    g = jax.jit(jax.grad(loss))(x)
    chex.assert_shape(g, x.shape)
    assert float(jnp.abs(g).sum()) > 0


# ------------------------------------------------------------------------------------------
# train mode
# ------------------------------------------------------------------------------------------
def test_capture_train_mode_returns_new_batch_stats():
    model = _tiny("resnet")
    variables = _random_variables(model)
    x = _images(model.input_shape, n=4)
    ((logits, feats), new_stats), (ref_logits, ref) = jax.jit(lambda v, x: (
        layers.capture(model, v, x, train=True),
        model.apply(v, x, train=True, mutable=["batch_stats"])))(variables, x)
    np.testing.assert_allclose(logits, ref_logits, rtol=1e-6, atol=1e-6)
    chex.assert_trees_all_close(new_stats, ref["batch_stats"], rtol=1e-6, atol=1e-7)
    assert not np.allclose(new_stats["bn1"]["mean"], variables["batch_stats"]["bn1"]["mean"])
    assert list(feats) == layers.names(model)
    # a model without batch norm returns an empty batch_stats collection
    mb = models.get_model("model_b")
    (_, _), stats = jax.eval_shape(lambda x: layers.capture(mb, mb.init(KEY, x), x, train=True),
                                   _images((28, 28, 1)))
    assert dict(stats) == {}


# ------------------------------------------------------------------------------------------
# selection, features_fn, errors
# ------------------------------------------------------------------------------------------
def test_select_by_index_and_name(model_b):
    m, v = model_b
    _, feats = layers.capture(m, v, _images((28, 28, 1)))
    assert list(layers.select(feats, 2)) == ["Conv_2"]
    assert list(layers.select(feats, [-1, "Conv_0", 3])) == ["Dense_1", "Conv_0", "Dense_0"]
    assert layers.select(feats, None) is feats
    with pytest.raises(ValueError, match="out of range"):
        layers.select(feats, 5)
    with pytest.raises(ValueError, match="unknown layer 'conv9'.*Conv_0"):
        layers.select(feats, "conv9")
    with pytest.raises(ValueError, match="ints or names"):
        layers.select(feats, [1.5])


def test_features_fn(model_b):
    m, v = model_b
    x = _images((28, 28, 1))
    logits, feats = jax.jit(layers.features_fn(m, layers=[0, "Dense_0"]))(v, x)
    assert list(feats) == ["Conv_0", "Dense_0"]
    # equal up to float32 rounding: the first conv's fused sum of taps may be evaluated in another
    # order (or with FMA) in a different program (eager, or with captured outputs)
    np.testing.assert_allclose(logits, jax.jit(m.apply)(v, x), rtol=1e-6, atol=1e-6)
    _, acts = layers.features_fn(m, kind="activation")(v, x)
    assert list(acts) == layers.names(m, kind="activation")


def test_capture_errors(model_b):
    m, v = model_b
    with pytest.raises(ValueError, match="unknown capture kind 'bn'.*learnable.*activation"):
        layers.capture(m, v, _images((28, 28, 1)), kind="bn")
    with pytest.raises(ValueError, match="channels"):
        layers.capture(m, v, jnp.zeros((2, 28, 28, 3)))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        layers.capture(m, v, jnp.full((2, 28, 28, 1), 1.5))
    with pytest.raises(ValueError, match="NaN"):
        layers.capture(m, v, jnp.full((2, 28, 28, 1), jnp.nan))
