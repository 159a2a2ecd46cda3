"""Tests of FGSM-SDI (Jia et al., TIP 2022, eq. 24-27, Algorithm 3) and its generator."""
import functools

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from advjax.methods.fgsm_sdi import FGSMSDI, init_sdi_state, smoothed_targets
from advjax.train.state import TrainState
from advjax.models.generator import SDIGenerator

EPS = 8 / 255
SHAPE = (8, 8, 3)


class TinyCNN(nn.Module):
    """A tiny target: conv(8) [+ BN] + ReLU + global mean + dense(10)."""
    use_bn: bool = True

    @nn.compact
    def __call__(self, x, train=False):
        x = nn.Conv(8, (3, 3))(x)
        if self.use_bn:
            x = nn.BatchNorm(use_running_average=not train, momentum=0.9)(x)
        x = nn.relu(x)
        return nn.Dense(10)(x.mean((1, 2)))


def _batch(lo=0.0, hi=1.0, n=16, seed=0):
    kx = jax.random.PRNGKey(seed)
    x = jax.random.uniform(kx, (n,) + SHAPE, minval=lo, maxval=hi)
    y = jnp.arange(n, dtype=jnp.int32) % 10
    return x, y


# one optimizer object per setting: optax transformations compare by identity, and the state
# holds them as static fields, so a fresh one would force a recompilation of the step
_TX = optax.sgd(0.05, momentum=0.9)


def M(**kw):
    """The method with a narrow generator (8 channels) for speed."""
    return FGSMSDI(generator_features=8, **kw)


def _state(use_bn=True, seed=0):
    return init_sdi_state(TinyCNN(use_bn=use_bn), _TX, jax.random.PRNGKey(seed), SHAPE, method=M())


def _gen(state):
    return state.extra["sdi"]


@functools.lru_cache(maxsize=None)
def _jitted_step(method):
    """One compiled step per method setting, shared by the tests (compiling dominates their time)."""
    return jax.jit(method.step)


def _changed(a, b):
    return any(not np.array_equal(np.asarray(u), np.asarray(v))
               for u, v in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)))


@pytest.mark.parametrize("arch", ["paper", "reference"])
def test_generator_shapes_and_range(arch):
    gen = SDIGenerator(features=16, arch=arch)
    x, _ = _batch(n=4)
    s = jnp.sign(jax.random.normal(jax.random.PRNGKey(1), x.shape))
    variables = jax.jit(gen.init)(jax.random.PRNGKey(0), x, s)
    assert variables["params"]["conv_in"]["kernel"].shape == (3, 3, 6, 16)  # 6-channel input
    out = jax.jit(gen.apply)(variables, x, s)
    chex.assert_shape(out, x.shape)
    # huge inputs saturate tanh but never leave [-1, 1]
    big, upd = jax.jit(lambda v, a, b: gen.apply(v, a, b, train=True, mutable=["batch_stats"]))(
        variables, 1e4 * x, s)
    for o in (out, big):
        assert bool(jnp.all(jnp.abs(o) <= 1.0)) and bool(jnp.all(jnp.isfinite(o)))
    assert float(jnp.std(out)) > 0  # not a constant map
    assert _changed(variables["batch_stats"], upd["batch_stats"])  # train mode updates BN stats
    gray = SDIGenerator(features=4).init(jax.random.PRNGKey(0), x[..., :1], s[..., :1])
    assert gray["params"]["conv_out"]["kernel"].shape[-1] == 1
    with pytest.raises(ValueError, match="same NHWC shape"):
        gen.apply(variables, x, s[..., :1])
    with pytest.raises(ValueError, match="arch"):
        SDIGenerator(arch="nope").init(jax.random.PRNGKey(0), x, s)


def test_settings_are_validated():
    for bad in (dict(k=0), dict(k=2.5), dict(eps=-1.0), dict(eps=8.0), dict(mode="torch"),
                dict(label_smoothing=1.0), dict(alpha=-0.1), dict(generator_arch="x"), dict(gen_lr=0.0)):
        with pytest.raises(ValueError):
            FGSMSDI(**bad)
    with pytest.raises(ValueError, match="input_shape"):
        init_sdi_state(TinyCNN(), optax.sgd(0.1), jax.random.PRNGKey(0), (8, 8))
    plain = TrainState(step=jnp.zeros((), jnp.int32), params={}, batch_stats={}, opt_state=(),
                       key=jax.random.PRNGKey(0), model=TinyCNN(), tx=_TX)
    with pytest.raises(ValueError, match="init_state"):
        jax.eval_shape(FGSMSDI().step, plain, _batch(), jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match="does not match"):  # a paper-arch generator, reference method
        jax.eval_shape(M(mode="reference").step, _state(), _batch(), jax.random.PRNGKey(0))


def test_registered_with_the_engine():
    from advjax.methods.base import get_method
    m = get_method("fgsm_sdi", eps=4 / 255, k=5, mode="reference")
    assert isinstance(m, FGSMSDI) and m.k == 5 and m.smoothing == 0.5


def test_smoothed_targets_match_released_code():
    t = smoothed_targets(jnp.array([3, 0]), 10, 0.5)
    np.testing.assert_allclose(t.sum(-1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(t[0, 3], 0.5)
    np.testing.assert_allclose(t[0, 0], 0.5 / 9, rtol=1e-6)


@pytest.mark.parametrize("mode,kw", [("paper", {}), ("reference", {"steps_per_epoch": 5})])
def test_one_compiled_step_updates_generator_every_k_and_target_always(mode, kw):
    k = 3
    method = M(k=k, mode=mode, generator_arch="paper", **kw)
    state = _state()
    step = _jitted_step(method)
    x, y = _batch()
    due = []
    for i in range(2 * k + 2):
        new, metrics = step(state, (x, y), jax.random.PRNGKey(i))
        assert isinstance(new, TrainState)
        gen_changed = _changed(_gen(state)["params"], _gen(new)["params"])
        gen_opt_changed = _changed(_gen(state)["opt_state"], _gen(new)["opt_state"])
        assert _changed(state.params, new.params), f"target not updated at step {i}"
        assert gen_changed == gen_opt_changed
        due.append(gen_changed)
        assert float(metrics["gen_updated"]) == float(gen_changed)
        assert int(new.step) == i + 1
        state = new
    if mode == "paper":
        expected = [i % k == 0 for i in range(2 * k + 2)]          # 0, 3, 6
    else:
        expected = [(i % 5) % k == 0 for i in range(2 * k + 2)]    # 0, 3, 5: batch index per epoch
    assert due == expected
    assert step._cache_size() == 1  # one compilation for all steps


def _gen_objective(method, state, x, y):
    s, _, _ = method.input_sign(state, x, y)
    bs = _gen(state)["batch_stats"]

    def obj(gp):
        delta, _, _ = method.perturbation(state, {"params": gp, "batch_stats": bs}, x, y, s, gen_train=True)
        logits = state.model.apply(state.variables(), jnp.clip(x + delta, 0, 1), train=True,
                                   mutable=["batch_stats"])[0]
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
    return obj


def test_generator_update_raises_target_loss_on_fixed_batch():
    method = M(k=1)
    state = _state()
    x, y = _batch()
    obj = jax.jit(_gen_objective(method, state, x, y))  # the target held at its initial params
    theta0 = _gen(state)["params"]
    grads = jax.jit(jax.grad(obj))(theta0)
    assert float(optax.tree.norm(grads)) > 0  # gradients reach theta through delta_g
    # one step: the generator ascends (before the target moves), Adam lr 1e-3
    new, metrics = _jitted_step(method)(state, (x, y), jax.random.PRNGKey(0))
    assert float(metrics["gen_updated"]) == 1.0
    np.testing.assert_allclose(float(metrics["gen_loss"]), float(obj(theta0)), rtol=1e-5)
    before, after = float(obj(theta0)), float(obj(_gen(new)["params"]))
    assert after > before + 1e-5, (before, after)
    # a descent step of the same size would have lowered it: the sign is right, not luck
    lowered = jax.tree_util.tree_map(lambda p, q: 2 * p - q, theta0, _gen(new)["params"])
    assert float(obj(lowered)) < before


@pytest.mark.parametrize("transform", [jax.jit, lambda f: f], ids=["jit", "nojit"])
@pytest.mark.parametrize("mode", ["paper", "reference"])
def test_delta_in_eps_ball_and_domain(mode, transform):
    eps = 0.3  # large, so the [0, 1] box is active at many pixels
    method = M(eps=eps, alpha=eps, mode=mode, generator_arch="paper")
    state = _state()
    x, y = _batch()
    s, _, _ = method.input_sign(state, x, y)

    def delta_fn(gvars):
        return method.perturbation(state, gvars, x, y, s)[0]
    delta = transform(delta_fn)(_gen(state))
    chex.assert_shape(delta, x.shape)
    assert float(jnp.max(jnp.abs(delta))) <= eps + 1e-6
    inside = bool(jnp.all((x + delta >= -1e-6) & (x + delta <= 1 + 1e-6)))
    assert inside == (mode == "paper")  # reference mode does not clip x + delta to [0, 1]


def test_modes_differ_only_where_documented():
    x, y = _batch(0.3, 0.7)  # interior: no [0, 1] clipping is active at eps = 8/255
    # same generator params in both modes -> identical deltas
    state = _state(use_bn=False)
    p, r = M(mode="paper"), M(mode="reference", generator_arch="paper")
    s, _, _ = p.input_sign(state, x, y)
    args = (state, _gen(state), x, y, s)
    np.testing.assert_array_equal(np.asarray(p.perturbation(*args)[0]), np.asarray(r.perturbation(*args)[0]))

    # with batch statistics in every training forward, running-stat threading does not change
    # outputs, and without clipping reference mode == paper mode + label smoothing 0.5:
    # same deltas, same losses, same updates of both networks
    state = _state(use_bn=True)
    step_ps = _jitted_step(M(mode="paper", label_smoothing=0.5, k=1))
    step_r = _jitted_step(M(mode="reference", generator_arch="paper", k=1))
    step_p = _jitted_step(M(mode="paper", k=1))
    a = b = c = state
    for i in range(2):
        a, ma = step_ps(a, (x, y), jax.random.PRNGKey(i))
        b, mb = step_r(b, (x, y), jax.random.PRNGKey(i))
        c, mc = step_p(c, (x, y), jax.random.PRNGKey(i))
        np.testing.assert_allclose(float(ma["loss"]), float(mb["loss"]), rtol=1e-5)
        np.testing.assert_allclose(float(ma["gen_loss"]), float(mb["gen_loss"]), rtol=1e-5)
        assert abs(float(ma["loss"]) - float(mc["loss"])) > 1e-3  # smoothing changes the loss
    chex.assert_trees_all_close(a.params, b.params, rtol=1e-4, atol=1e-6)
    chex.assert_trees_all_close(_gen(a)["params"], _gen(b)["params"], rtol=1e-4, atol=1e-6)
    assert _changed(a.batch_stats, b.batch_stats)  # ... and the running statistics differ

    # label smoothing changes only the target loss, not the perturbation the step trains on
    d_plain = M(k=1000).perturbation(*args)[0]
    d_smooth = M(k=1000, label_smoothing=0.5).perturbation(*args)[0]
    np.testing.assert_array_equal(np.asarray(d_plain), np.asarray(d_smooth))


def test_reference_mode_threads_target_batch_stats():
    x, y = _batch()
    state = _state(use_bn=True)
    p, _ = _jitted_step(M(mode="paper", k=1))(state, (x, y), jax.random.PRNGKey(0))
    r, _ = _jitted_step(M(mode="reference", generator_arch="paper", k=1))(state, (x, y), jax.random.PRNGKey(0))
    # paper: one running-stat update (the training forward): mean = 0.9 * 0 + 0.1 * batch mean
    # reference: five updates (clean, 2 in the generator step, 2 in the target step)
    m0 = state.batch_stats["BatchNorm_0"]["mean"]
    dp = jnp.abs(p.batch_stats["BatchNorm_0"]["mean"] - m0).mean()
    dr = jnp.abs(r.batch_stats["BatchNorm_0"]["mean"] - m0).mean()
    assert float(dr) > 2.5 * float(dp) > 0


def test_metrics_attack_success_rate_consistent():
    x, y = _batch()
    state = _state()
    _, m = _jitted_step(M(k=1))(state, (x, y), jax.random.PRNGKey(0))
    for name in ("loss", "acc", "clean_acc", "attack_success_rate", "gen_loss", "delta_linf"):
        assert np.isfinite(float(m[name])), name
    assert 0.0 <= float(m["attack_success_rate"]) <= 1.0
    np.testing.assert_allclose(float(m["delta_linf"]), EPS, rtol=1e-5)  # alpha = eps: a full step


@pytest.mark.parametrize("arch", ["paper", "reference"])
def test_generator_fast_conv_is_used_and_matches_stock_conv(arch):
    """Every 3x3 conv of the generator goes through ``conv3x3_same`` (flax hands it padding="SAME";
    a missed match silently fell back to lax's conv, whose weight gradient XLA:CPU runs
    unoptimized inside FGSM-SDI's ``lax.cond``: 10x slower generator steps), with the gradients of
    stock ``nn.Conv``."""
    x, _ = _batch(n=2)
    s = jnp.sign(jax.random.normal(jax.random.PRNGKey(1), x.shape))
    fast, plain = SDIGenerator(features=8, arch=arch), SDIGenerator(features=8, arch=arch, fast_conv=False)
    variables = fast.init(jax.random.PRNGKey(0), x, s)

    def loss(gen):
        return lambda p: jnp.sum(gen.apply({**variables, "params": p}, x, s) ** 2)

    jaxpr = str(jax.make_jaxpr(loss(fast))(variables["params"]))
    assert jaxpr.count("custom_vjp_call") == 4, "every generator conv should use conv3x3_same"
    g_fast = jax.grad(loss(fast))(variables["params"])
    g_plain = jax.grad(loss(plain))(variables["params"])
    chex.assert_trees_all_close(g_fast, g_plain, rtol=1e-4, atol=1e-5)
