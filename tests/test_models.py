"""Tests of advjax.models: registry, every model's forward pass and parameter count, the fast conv,
max pooling, activations, input validation and bfloat16 compute."""
import sys

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from advjax import models
from advjax.models import activations, ops

KEY = jax.random.key(0)


def _images(shape, n=2, seed=1):
    return jax.random.uniform(jax.random.key(seed), (n, *shape), jnp.float32)


@pytest.fixture(scope="module")
def model_b():
    m = models.get_model("model_b")
    return m, models.init_variables(m, KEY)


# ------------------------------------------------------------------------------------------
# registry
# ------------------------------------------------------------------------------------------
def test_list_models_has_every_paper_model():
    names = set(models.list_models())
    want = {
        "model_a", "model_b", "vgg11", "vgg11_bn", "vgg13", "vgg13_bn", "vgg16", "vgg16_bn",
        "vgg19", "vgg19_bn", "vgg_hldr", "resnet18", "resnet20", "resnet56", "preact_resnet18",
        "wrn28_10", "wrn34_10", "wide_resnet", "sdi_generator",
    }
    assert want <= names


def test_unknown_model_lists_known_names():
    with pytest.raises(ValueError, match="unknown model 'resnet99'.*resnet18.*wrn34_10"):
        models.get_model("resnet99")


def test_unknown_activation_lists_known_names():
    with pytest.raises(ValueError, match="unknown activation 'swishy'.*elu.*relu"):
        models.get_model("model_b", activation="swishy")
    with pytest.raises(ValueError, match="unknown activation"):
        activations.get_activation("nope")


def test_bad_keyword_is_value_error():
    with pytest.raises(ValueError, match="bad keyword"):
        models.get_model("model_b", no_such_field=3)
    # the message lists the fields the model does take
    with pytest.raises(ValueError, match=r"'sdi_generator' takes: arch, .*features, out_channels"):
        models.get_model("sdi_generator", num_classes=10)


def test_name_normalization_and_paper_defaults():
    wrn = models.get_model("WRN-28-10")
    assert isinstance(wrn, models.WideResNet) and (wrn.depth, wrn.widen_factor) == (28, 10)
    a = models.get_model("model_a")
    assert (a.num_classes, a.activation, tuple(a.input_shape)) == (2, "elu", (2,))
    assert a.mean is None and a.std is None
    b = models.get_model("model_b")
    assert (b.num_classes, b.activation, tuple(b.input_shape)) == (10, "relu", (28, 28, 1))
    assert b.mean is None and b.std is None
    h = models.get_model("vgg_hldr")
    assert h.activation == "elu" and h.batch_norm and tuple(h.hidden) == (512,)
    r = models.get_model("resnet18", num_classes=100, activation="softplus", input_shape=[64, 64, 3])
    assert (r.num_classes, r.activation, r.input_shape) == (100, "softplus", (64, 64, 3))
    assert tuple(r.mean) == ops.CIFAR10_MEAN and tuple(r.std) == ops.CIFAR10_STD


def test_sdi_generator_is_registered_lazily():
    # importing the registry must not import the generator module (owned elsewhere)
    assert "sdi_generator" in models.list_models()
    try:
        gen = models.get_model("sdi_generator")
    except ModuleNotFoundError as e:  # generator.py not written yet
        assert "generator" in str(e)
    else:
        assert isinstance(gen, nn.Module)


# ------------------------------------------------------------------------------------------
# parameter counts (jax.eval_shape: no compute)
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "name,published,rel,exact",
    [
        ("resnet18", 11.17e6, 0.002, 11_173_962),
        ("preact_resnet18", 11.17e6, 0.002, 11_172_170),  # 11,171,146 + the final BN
        ("wrn28_10", 36.5e6, 0.002, 36_479_194),
        ("wrn34_10", 46.2e6, 0.002, 46_160_474),
        ("resnet20", 0.27e6, 0.005, 269_722),
        ("resnet56", 0.85e6, 0.005, 853_018),
        ("vgg16", 14.7e6, 0.003, None),
        ("vgg16_bn", 14.7e6, 0.003, None),
        ("model_a", 20702, 0.0, 20702),  # 2*100+100 + 2*(100*100+100) + 100*2+2
        ("model_b", 123222, 0.0, 123222),  # 416 + 12832 + 51264 + 57700 + 1010
    ],
)
def test_parameter_count_matches_published(name, published, rel, exact):
    n = models.param_count(models.get_model(name))
    assert abs(n - published) <= rel * published, (name, n)
    if exact is not None:  # the reference PyTorch ports
        assert n == exact, (name, n)


# ------------------------------------------------------------------------------------------
# forward passes
# ------------------------------------------------------------------------------------------
def _check_logits(logits, n, num_classes):
    chex.assert_shape(logits, (n, num_classes))
    assert logits.dtype == jnp.float32
    chex.assert_tree_all_finite(logits)


def _random_variables(model, seed=0):
    """Variables of the right shapes without compiling ``init`` (cheap for big models)."""
    shapes = jax.eval_shape(lambda: model.init(KEY, jnp.zeros((1, *model.input_shape))))
    rng = np.random.default_rng(seed)

    def fill(path, s):
        last = str(path[-1])
        if "var" in last or "scale" in last:
            return jnp.ones(s.shape, s.dtype)
        if "mean" in last or "bias" in last:
            return jnp.zeros(s.shape, s.dtype)
        fan_in = int(np.prod(s.shape[:-1])) or 1
        return jnp.asarray(rng.normal(size=s.shape) * np.sqrt(2.0 / fan_in), s.dtype)

    return jax.tree_util.tree_map_with_path(fill, shapes)


def test_real_forward_model_b(model_b):
    model, variables = model_b
    assert set(variables) == {"params"}
    x = _images(model.input_shape)
    logits = jax.jit(models.logits_fn(model))(variables, x)
    _check_logits(logits, 2, 10)
    assert not np.allclose(logits[0], logits[1])  # the model is not constant


def test_real_forward_resnet18():
    model = models.get_model("resnet18")
    variables = _random_variables(model)
    assert set(variables) == {"params", "batch_stats"}
    x = _images(model.input_shape)
    logits = jax.jit(models.logits_fn(model))(variables, x)
    _check_logits(logits, 2, 10)
    assert not np.allclose(logits[0], logits[1])


def test_init_variables_and_logits_fn():
    model = models.get_model("model_a", num_classes=3)
    variables = models.init_variables(model, KEY, batch_size=2)
    assert set(variables) == {"params"}
    chex.assert_shape(variables["params"]["Dense_3"]["kernel"], (100, 3))
    x = jnp.array([[0.1, 0.2], [2.0, -1.0]])
    np.testing.assert_array_equal(models.logits_fn(model)(variables, x),
                                  model.apply(variables, x, train=False))
    # same key, same numbers; other key, other numbers
    chex.assert_trees_all_equal(variables, models.init_variables(model, KEY, batch_size=2))
    assert not np.allclose(variables["params"]["Dense_0"]["kernel"],
                           models.init_variables(model, jax.random.key(1))["params"]["Dense_0"]["kernel"])


def test_model_a_forward_takes_unbounded_features():
    model = models.get_model("model_a")
    variables = models.init_variables(model, KEY)
    x = jnp.array([[-1.5, 2.0], [0.3, -0.7], [10.0, 3.0]])
    _check_logits(model.apply(variables, x), 3, 2)
    chex.assert_shape(model.apply(variables, x[0]), (2,))  # one example, no batch axis


@pytest.mark.parametrize(
    "name", ["vgg11_bn", "vgg13", "vgg16", "vgg19_bn", "vgg_hldr", "resnet20", "resnet56",
             "preact_resnet18", "wrn28_10", "wrn34_10"]
)
def test_abstract_forward_of_big_models(name):
    model = models.get_model(name, num_classes=10)

    def run(x):
        variables = model.init(KEY, x)
        out = model.apply(variables, x)
        if "batch_stats" in variables:
            out_t, upd = model.apply(variables, x, train=True, mutable=["batch_stats"])
            assert jax.tree.structure(upd["batch_stats"]) == jax.tree.structure(variables["batch_stats"])
            assert out_t.shape == out.shape
        return out

    out = jax.eval_shape(run, jax.ShapeDtypeStruct((2, 32, 32, 3), jnp.float32))
    assert out.shape == (2, 10) and out.dtype == jnp.float32


def test_train_and_eval_mode_with_batch_norm():
    model = _tiny_resnet(True)
    variables = _random_variables(model)
    x = _images(model.input_shape, n=4)
    f = models.logits_fn(model)
    (logits, upd), eval_logits, eval_one = jax.jit(lambda v, x: (
        model.apply(v, x, train=True, mutable=["batch_stats"]), f(v, x), f(v, x[:1])))(variables, x)
    _check_logits(logits, 4, 10)
    old = variables["batch_stats"]["bn1"]["mean"]
    new = upd["batch_stats"]["bn1"]["mean"]
    assert not np.allclose(old, new)
    # train mode normalizes with batch statistics, eval mode with the running ones
    assert not np.allclose(logits, eval_logits)
    # eval mode: frozen statistics, so one example's logits do not depend on the others
    np.testing.assert_allclose(eval_logits[:1], eval_one, rtol=1e-5, atol=1e-6)


def test_normalize_is_first_layer():
    norm = ops.Normalize((0.5, 0.25), (0.5, 2.0))
    x = jnp.array([[1.0, 0.25], [0.0, 1.0]])
    np.testing.assert_allclose(norm.apply({}, x), [[1.0, 0.0], [-1.0, 0.375]])
    # a model's mean/std change the function: same params, different normalization
    m1 = models.get_model("model_a")
    m2 = models.get_model("model_a", mean=(0.5, -1.0), std=(2.0, 0.5))
    variables = models.init_variables(m1, KEY)
    x = jnp.array([[0.3, 0.7], [1.5, -2.0]])
    # Model A with mean/std == identity Model A on the normalized features
    np.testing.assert_allclose(m2.apply(variables, x),
                               m1.apply(variables, (x - jnp.array([0.5, -1.0])) / jnp.array([2.0, 0.5])),
                               rtol=1e-6)
    assert not np.allclose(m1.apply(variables, x), m2.apply(variables, x))


def test_activation_is_selectable():
    x = jax.random.normal(KEY, (4, 2))
    variables = models.init_variables(models.get_model("model_a"), KEY)
    outs = {act: models.get_model("model_a", activation=act).apply(variables, x)
            for act in ["relu", "elu", "softplus", "silu", "gelu", "celu"]}
    for a in outs:
        for b in outs:
            if a < b and {a, b} != {"celu", "elu"}:  # CELU with alpha = 1 (PyTorch default) is ELU
                assert not np.allclose(outs[a], outs[b]), (a, b)
    np.testing.assert_allclose(outs["celu"], outs["elu"], rtol=1e-6)
    # the conv models take the name too
    m = models.get_model("resnet20", activation="silu")
    x = jnp.zeros((1, 32, 32, 3))
    assert m.activation == "silu" and "silu" in str(jax.make_jaxpr(m.apply)(jax.eval_shape(m.init, KEY, x), x))


def test_activation_module_and_registry():
    x = jnp.linspace(-3, 3, 13)
    for name in activations.list_activations():
        y = activations.Activation(name).apply({}, x)
        np.testing.assert_allclose(y, activations.get_activation(name)(x), rtol=1e-6)
    np.testing.assert_allclose(activations.Activation("relu").apply({}, x), np.maximum(x, 0))
    np.testing.assert_allclose(activations.get_activation("ELU")(x), np.where(x > 0, x, np.expm1(x)),
                               rtol=1e-6)
    # GELU is the exact (erf) form, as in PyTorch
    from scipy.special import erf

    np.testing.assert_allclose(activations.get_activation("gelu")(x),
                               0.5 * x * (1 + erf(x / np.sqrt(2))), rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------------------------
# bfloat16
# ------------------------------------------------------------------------------------------
def test_bfloat16_compute(model_b):
    m32, variables = model_b
    m16 = models.get_model("model_b", dtype=jnp.bfloat16)
    params16 = jax.eval_shape(lambda: m16.init(KEY, jnp.zeros((1, 28, 28, 1))))
    assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(params16))  # params stay float32
    x = _images((28, 28, 1))
    l16, l32, g, inner = jax.jit(lambda v, x: (
        m16.apply(v, x), m32.apply(v, x), jax.grad(lambda x: m16.apply(v, x).sum())(x),
        m16.apply(v, x, capture_intermediates=True, mutable=["intermediates"])[1]))(variables, x)
    assert l16.dtype == jnp.float32
    assert inner["intermediates"]["Conv_0"]["__call__"][0].dtype == jnp.bfloat16
    np.testing.assert_allclose(l16, l32, atol=0.05 * float(jnp.abs(l32).max()) + 1e-3)
    assert not np.array_equal(l16, l32)  # it really computed in bf16
    # gradients w.r.t. the input flow through the bf16 fast conv
    assert g.dtype == jnp.float32 and bool(jnp.isfinite(g).all()) and float(jnp.abs(g).sum()) > 0


def test_bfloat16_batchnorm_model_abstract():
    m = models.get_model("resnet18", dtype=jnp.bfloat16)
    out = jax.eval_shape(lambda x: m.apply(m.init(KEY, x), x), jax.ShapeDtypeStruct((2, 32, 32, 3), jnp.float32))
    assert out.dtype == jnp.float32


# ------------------------------------------------------------------------------------------
# input validation
# ------------------------------------------------------------------------------------------
def test_bad_rank(model_b):
    m, v = model_b
    with pytest.raises(ValueError, match="rank"):
        m.apply(v, jnp.zeros((2, 1, 28, 28, 1)))
    with pytest.raises(ValueError, match="rank"):
        m.apply(v, jnp.zeros((28, 28)))


def test_bad_channels(model_b):
    m, v = model_b
    with pytest.raises(ValueError, match="channels"):
        m.apply(v, jnp.zeros((2, 28, 28, 3)))
    with pytest.raises(ValueError, match="per-example shape"):
        m.apply(v, jnp.zeros((2, 32, 32, 1)))


def test_bad_dtype(model_b):
    m, v = model_b
    with pytest.raises(ValueError, match="dtype"):
        m.apply(v, jnp.zeros((2, 28, 28, 1), jnp.uint8))
    with pytest.raises(ValueError, match="dtype"):  # also at trace time under jit
        jax.jit(m.apply)(v, jnp.zeros((2, 28, 28, 1), jnp.int32))


def test_nan_and_box_checked_when_concrete(model_b):
    m, v = model_b
    x = np.full((2, 28, 28, 1), 0.5, np.float32)
    x_nan = x.copy()
    x_nan[0, 3, 3, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        m.apply(v, x_nan)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        m.apply(v, x * 3)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        m.apply(v, x - 0.6)
    # under jit the value checks are skipped (no host round-trip): it runs
    out = jax.jit(m.apply)(v, jnp.asarray(x * 3))
    chex.assert_shape(out, (2, 10))


def test_model_a_has_no_box_check_but_checks_shape():
    m = models.get_model("model_a")
    v = models.init_variables(m, KEY)
    m.apply(v, jnp.array([[5.0, -5.0]]))
    with pytest.raises(ValueError, match="per-example shape"):
        m.apply(v, jnp.zeros((4, 3)))
    with pytest.raises(ValueError, match="NaN"):
        m.apply(v, jnp.array([[jnp.nan, 0.0]]))


# ------------------------------------------------------------------------------------------
# the fast conv: same numbers as jax's default, including gradients
# ------------------------------------------------------------------------------------------
CONV_CASES = [
    # (input hw, kernel, stride, padding, jit): every conv shape the models use, plus odd sizes
    ((8, 8), 3, 1, "SAME", True),
    ((9, 9), 3, 2, "SAME", True),
    ((9, 7), 1, 2, "VALID", False),
    ((12, 12), 5, 1, "VALID", True),
    ((8, 8), 3, 2, ((1, 1), (1, 1)), True),
    ((7, 7), 3, 2, ((1, 1), (1, 1)), True),
    ((10, 10), 5, 3, ((2, 1), (0, 2)), True),
]
# input channels: 1 and 3 take the "taps" forward and the col2im input gradient; 8 takes the
# convolution forward, and col2im only where the input area is >= 2x the output's (stride 2,
# 5x5 VALID on a small map)
CONV_CINS = [1, 3, 8]


def _maybe_jit(f, jit):
    return jax.jit(f) if jit else f


@pytest.mark.parametrize("cin", CONV_CINS)
@pytest.mark.parametrize("hw,k,s,pad,jit", CONV_CASES)
def test_fast_conv_matches_lax(hw, k, s, pad, jit, cin):
    kx, kw, kg = jax.random.split(jax.random.key(3), 3)
    x = jax.random.normal(kx, (2, *hw, cin))
    w = jax.random.normal(kw, (k, k, cin, 4))
    dn = ("NHWC", "HWIO", "NHWC")

    def ref(x, w):
        return jax.lax.conv_general_dilated(x, w, (s, s), pad, dimension_numbers=dn)

    def fast(x, w):
        return ops.fast_conv_general_dilated(x, w, (s, s), pad, dimension_numbers=dn)

    def vjp(f):
        def run(x, w, g):
            y, pull = jax.vjp(f, x, w)
            return (y, *pull(g))

        return _maybe_jit(run, jit)

    g = jax.random.normal(kg, ref(x, w).shape)
    y_r, dx_r, dw_r = vjp(ref)(x, w, g)
    y_f, dx_f, dw_f = vjp(fast)(x, w, g)
    np.testing.assert_allclose(y_f, y_r, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(dx_f, dx_r, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(dw_f, dw_r, rtol=1e-4, atol=1e-4)


def test_conv_plan_per_layer():
    """The algorithm choice for the layers it was measured on (see ops.conv_plan), without
    oneDNN (``native=False``) and with it (``native=True``; benchmarks/bench_conv_layers.py)."""
    v = ((0, 0), (0, 0))
    same = ((1, 1), (1, 1))

    def plan(*a, native=False, **k):
        return ops.conv_plan(*a, native=native, **k)

    assert plan((128, 28, 28, 1), (5, 5, 1, 16), (1, 1), v) == ("taps", "col2im", "conv")  # Model B conv 1
    assert plan((128, 24, 24, 16), (5, 5, 16, 32), (1, 1), v) == ("conv", "conv", "conv")  # conv 2
    assert plan((128, 10, 10, 32), (5, 5, 32, 64), (1, 1), v) == ("conv", "col2im", "conv")  # conv 3
    assert plan((32, 32, 32, 3), (3, 3, 3, 64), (1, 1), same) == ("taps", "col2im", "conv")  # ResNet stem
    assert plan((32, 32, 32, 64), (3, 3, 64, 64), (1, 1), same) == ("conv", "conv", "conv")
    assert plan((32, 32, 32, 64), (3, 3, 64, 128), (2, 2), same) == ("conv", "col2im", "conv")
    assert plan((32, 32, 32, 64), (1, 1, 64, 128), (2, 2), v) == ("conv", "col2im", "conv")
    # with oneDNN: Model B's conv 2 goes to oneDNN every way; the taps / col2im choices stay
    # where they beat it; wide layers on small maps keep XLA's kernel gradient
    assert plan((128, 28, 28, 1), (5, 5, 1, 16), (1, 1), v, native=True) == ("taps", "col2im", "onednn")
    assert plan((128, 24, 24, 16), (5, 5, 16, 32), (1, 1), v, native=True) == ("onednn",) * 3
    assert plan((128, 10, 10, 32), (5, 5, 32, 64), (1, 1), v, native=True) == ("conv", "onednn", "conv")
    assert plan((32, 32, 32, 64), (3, 3, 64, 64), (1, 1), same, native=True) == ("onednn",) * 3
    assert plan((32, 8, 8, 256), (3, 3, 256, 256), (1, 1), same, native=True) == ("onednn", "onednn", "conv")
    assert plan((32, 32, 32, 64), (1, 1, 64, 128), (2, 2), v, native=True) == ("conv", "col2im", "onednn")
    # other dtypes and oversized col2im buffers keep the plain convolution
    assert plan((128, 28, 28, 1), (5, 5, 1, 16), (1, 1), v, jnp.bfloat16, native=True) == ("conv",) * 3
    assert plan((4096, 224, 224, 3), (7, 7, 3, 64), (2, 2), ((3, 3), (3, 3)))[1] == "conv"
    # measured on XLA:CPU only: other backends keep their own convolution
    assert plan((128, 28, 28, 1), (5, 5, 1, 16), (1, 1), v, backend="gpu", native=True) == ("conv",) * 3
    assert plan((128, 28, 28, 1), (5, 5, 1, 16), (1, 1), v, backend="cpu") == ("taps", "col2im", "conv")


def test_fast_conv_second_order_matches_lax():
    """Double backprop (e.g. GradAlign in FGSM-GA): d/dw of ||dL/dx||^2 is the same."""
    kx, kw = jax.random.split(jax.random.key(4))
    x = jax.random.normal(kx, (2, 8, 8, 3))
    w = jax.random.normal(kw, (3, 3, 3, 4))
    dn = ("NHWC", "HWIO", "NHWC")

    def make(conv):
        def penalty(w):
            gx = jax.grad(lambda x: jnp.tanh(conv(x, w, (2, 2), "SAME", dimension_numbers=dn)).sum())(x)
            return (gx**2).sum()

        return jax.jit(jax.grad(penalty))

    np.testing.assert_allclose(make(ops.fast_conv_general_dilated)(w),
                               make(jax.lax.conv_general_dilated)(w), rtol=1e-4, atol=1e-4)


def test_fast_conv_falls_back_for_unsupported_cases():
    x = jax.random.normal(KEY, (1, 8, 8, 4))
    w = jax.random.normal(KEY, (3, 3, 2, 4))
    dn = ("NHWC", "HWIO", "NHWC")
    # grouped conv: not the fast path, must still be exact
    y = ops.fast_conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=dn,
                                      feature_group_count=2)
    y_ref = jax.lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=dn,
                                         feature_group_count=2)
    np.testing.assert_allclose(y, y_ref, rtol=1e-5, atol=1e-5)


def test_conv_module_is_a_flax_conv_with_plain_params():
    fast = ops.Conv(4, 3, padding="SAME")
    plain = ops.Conv(4, 3, padding="SAME", fast=False)
    assert isinstance(fast, nn.Conv) and type(fast).__name__ == "Conv"
    x = _images((6, 6, 2))
    variables = fast.init(KEY, x)
    assert jax.tree.structure(variables) == jax.tree.structure(plain.init(KEY, x))
    # same numbers up to float32 summation order (the fast path may sum taps in another order)
    np.testing.assert_allclose(fast.apply(variables, x), plain.apply(variables, x), rtol=1e-6, atol=1e-6)


def _tiny_resnet(fast):
    # stride-2 3x3 convs and stride-2 1x1 projection shortcuts, as in ResNet-18, but small
    return models.ResNet(stage_sizes=(1, 1), widths=(4, 8), shortcut="conv", input_shape=(8, 8, 3),
                         fast_conv=fast)


@pytest.mark.parametrize("build", ["model_b", "tiny_resnet"])
def test_model_gradients_equal_plain_conv(build):
    """Input and parameter gradients of whole models (stride 1 and 2, 1x1 and 3x3 and 5x5,
    VALID and explicit padding) equal those of the stock nn.Conv."""
    if build == "model_b":
        m_fast, m_plain = models.get_model("model_b"), models.get_model("model_b", fast_conv=False)
    else:
        m_fast, m_plain = _tiny_resnet(True), _tiny_resnet(False)
    variables = _random_variables(m_fast)
    x = _images(m_fast.input_shape, n=3)

    def grads(m, params, x):
        def loss(params, x):
            logits = m.apply({**variables, "params": params}, x)
            return jax.nn.log_softmax(logits)[:, 0].sum()

        return jax.grad(loss, argnums=(0, 1))(params, x)

    (gp_f, gx_f), (gp_p, gx_p) = jax.jit(lambda p, x: (grads(m_fast, p, x), grads(m_plain, p, x)))(
        variables["params"], x)
    np.testing.assert_allclose(gx_f, gx_p, rtol=1e-4, atol=1e-6)
    chex.assert_trees_all_close(gp_f, gp_p, rtol=1e-4, atol=1e-6)
    assert float(jnp.abs(gx_f).sum()) > 0


def test_fast_conv_inside_fori_loop(model_b):
    """The PGD-like rolled loop gives the same iterate with the fast and the plain conv."""
    m_fast, variables = model_b
    m_plain = models.get_model("model_b", fast_conv=False)

    def pgd(m, x):
        def body(_, xa):
            g = jax.grad(lambda z: m.apply(variables, z)[:, 0].sum())(xa)
            return jnp.clip(xa + 0.01 * jnp.sign(g), 0.0, 1.0)

        return jax.lax.fori_loop(0, 3, body, x)

    x = _images((28, 28, 1), n=2)
    a, b = jax.jit(lambda x: (pgd(m_fast, x), pgd(m_plain, x)))(x)
    assert float(jnp.abs(a - x).max()) > 0
    # signs can flip on numerically-zero gradients only; the iterates agree almost everywhere
    assert float(jnp.mean(jnp.abs(a - b) < 1e-6)) > 0.99


# ------------------------------------------------------------------------------------------
# max pooling
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("hw", [(8, 8), (7, 9)])
def test_max_pool_matches_reduce_window(hw):
    x = jax.random.normal(KEY, (2, *hw, 3))
    ref = lambda x: nn.max_pool(x, (2, 2), strides=(2, 2))  # noqa: E731
    np.testing.assert_array_equal(ops.max_pool(x, 2), ref(x))
    gy = jax.random.normal(jax.random.key(5), ref(x).shape)
    g_fast = jax.vjp(lambda x: ops.max_pool(x, 2), x)[1](gy)[0]
    g_ref = jax.vjp(ref, x)[1](gy)[0]
    np.testing.assert_allclose(g_fast, g_ref)
    with pytest.raises(ValueError, match="window"):
        ops.max_pool(x, 10)
