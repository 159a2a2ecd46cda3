"""Tests of advjax.attacks: the properties every attack must have (ball, domain, eps = 0, determinism,
jit / vmap), validation errors, APGD on a linear model (known optimum), and the attack strength on
a small CNN trained here on the real MNIST test split (ordering AA <= APGD <= PGD <= FGSM).

Iterative attacks run with few steps and tiny models here; the full-size AutoAttack is `slow`.
"""
import gzip
import json
import os
import pathlib

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given, settings, strategies as st

from advjax import attacks
from advjax.attacks import apgd as apgd_mod
from advjax.attacks import autoattack as autoattack_mod
from advjax.attacks import base
from advjax import losses

# ----------------------------------------------------------------------------------------------
# tiny models
# ----------------------------------------------------------------------------------------------


class TinyCNN(nn.Module):
    classes: int = 10

    @nn.compact
    def __call__(self, x, train=False):
        x = nn.relu(nn.Conv(4, (3, 3), strides=2)(x))
        return nn.Dense(self.classes)(x.reshape(x.shape[0], -1))


def _tiny(shape=(6, 6, 1), classes=10, seed=0):
    m = TinyCNN(classes)
    v = m.init(jax.random.PRNGKey(seed), jnp.zeros((1,) + shape))
    return (lambda variables, x: m.apply(variables, x)), v


TINY_APPLY, TINY_VARS = _tiny()

# cheap settings for the property tests (one shape, few steps)
FAST = {
    "fgsm": {}, "fgsm-rs": {}, "bim": {"steps": 3}, "pgd": {"steps": 3}, "pgd-l2": {"steps": 3},
    "cw-inf": {"steps": 3}, "apgd-ce": {"steps": 5}, "apgd-dlr": {"steps": 5},
    "apgd-t": {"steps": 4, "n_target_classes": 2}, "fab": {"steps": 3}, "fab-t": {"steps": 3, "n_target_classes": 2},
    "square": {"n_queries": 20}, "aa": {"steps": 3, "n_target_classes": 2, "n_queries": 10}, "trades-kl": {"steps": 3},
    "gaussian": {}, "uniform": {}, "speckle": {}, "salt": {}, "pepper": {}, "salt-and-pepper": {},
}
NOISE = {"gaussian", "speckle", "salt", "pepper", "salt-and-pepper"}  # no eps-ball (uniform has one)
HEAVY = {"apgd-ce", "apgd-dlr", "apgd-t", "fab", "fab-t", "square", "aa"}  # compile-heavy: eps=0 check is slow


def _data(n=4, shape=(6, 6, 1), seed=0):
    kx, ky = jax.random.split(jax.random.PRNGKey(seed))
    return jax.random.uniform(kx, (n,) + shape), jax.random.randint(ky, (n,), 0, 10)


def test_registry_covers_every_attack():
    assert set(attacks.list_attacks()) == set(FAST)
    assert attacks.get_attack("pgd20").steps == 20
    assert attacks.get_attack("bim7").steps == 7 and not attacks.get_attack("bim").random_start
    assert attacks.get_attack("cw30").loss == "cw"
    assert isinstance(attacks.get_attack("autoattack"), attacks.AutoAttack)
    with pytest.raises(ValueError, match="unknown attack 'pgdx'.*apgd-ce"):
        attacks.get_attack("pgdx")
    with pytest.raises(ValueError, match="bad settings"):
        attacks.get_attack("fgsm", steps=3)


# the compile-heavy ones are also run (ball + domain) on the trained MNIST model below
SLOW_PROPS = {"aa", "apgd-dlr", "apgd-t", "fab", "fab-t", "square"}


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in SLOW_PROPS else n
                                  for n in sorted(FAST)])
def test_every_attack_properties(name):
    """Ball, domain, eps = 0 -> x exactly, deterministic per key, hashable, shape and dtype kept."""
    x, y = _data()
    atk = attacks.get_attack(name, eps=0.1, **FAST[name])
    hash(atk)
    key = jax.random.PRNGKey(3)
    xa = atk(TINY_APPLY, TINY_VARS, x, y, key)
    chex.assert_equal_shape([xa, x])
    assert xa.dtype == x.dtype
    assert float(xa.min()) >= 0.0 and float(xa.max()) <= 1.0
    if name not in NOISE:
        norm = base.per_example_norm(xa - x, atk.norm)
        assert float(norm.max()) <= 0.1 * (1 + 1e-5) + 1e-6, (name, float(norm.max()))
    np.testing.assert_array_equal(np.asarray(atk(TINY_APPLY, TINY_VARS, x, y, key)), np.asarray(xa))
    if name not in HEAVY:
        _check_eps_zero(atk, x, y, key)


def _check_eps_zero(atk, x, y, key):
    zero = atk.replace(eps=0.0)
    np.testing.assert_array_equal(np.asarray(zero(TINY_APPLY, TINY_VARS, x, y, key)), np.asarray(x))


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(HEAVY))
def test_eps_zero_returns_x_heavy(name):
    x, y = _data()
    _check_eps_zero(attacks.get_attack(name, eps=0.1, **FAST[name]), x, y, jax.random.PRNGKey(3))


@settings(max_examples=5, deadline=None)
@given(name=st.sampled_from(["fgsm", "fgsm-rs", "pgd", "pgd-l2", "bim", "uniform"]),
       eps=st.sampled_from([0.0, 0.03, 0.3, 2.0]), seed=st.integers(0, 2**20), n=st.sampled_from([1, 3]))
def test_ball_and_domain_hypothesis(name, eps, seed, n):
    x, y = _data(n=n, seed=seed)
    atk = attacks.get_attack(name, eps=eps, **FAST[name])
    xa = atk(TINY_APPLY, TINY_VARS, x, y, jax.random.PRNGKey(seed))
    assert float(xa.min()) >= 0.0 and float(xa.max()) <= 1.0
    norm = base.per_example_norm(xa - x, atk.norm)
    assert float(norm.max()) <= eps * (1 + 1e-5) + 1e-6
    if eps == 0.0:
        np.testing.assert_array_equal(np.asarray(xa), np.asarray(x))


def test_unbounded_domain_for_features():
    """domain=None (Moon features): no clipping to [0, 1], still inside the ball."""
    k = jax.random.PRNGKey(0)
    w = jax.random.normal(k, (2, 3))
    apply_fn = lambda v, x: x @ v  # noqa: E731
    x = jnp.array([[2.5, -3.0], [0.1, 7.0]])
    y = jnp.array([0, 1])
    for name in ("fgsm", "pgd", "gaussian"):
        xa = attacks.get_attack(name, eps=0.4, domain=None, **FAST[name])(apply_fn, w, x, y, k)
        if name != "gaussian":
            assert float(jnp.abs(xa - x).max()) <= 0.4 + 1e-6
    with pytest.raises(ValueError, match="outside the domain"):
        attacks.get_attack("fgsm", eps=0.1)(apply_fn, w, x, y, k)


class TestVariants(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_run_pure_under_variants(self):
        x, y = _data()
        for name in ("fgsm", "uniform"):
            atk = attacks.get_attack(name, eps=0.05, **FAST[name])
            f = self.variant(lambda x, y, k: atk.run(TINY_APPLY, TINY_VARS, x, y, k))
            xa = f(x, y, jax.random.PRNGKey(1))
            ref = atk(TINY_APPLY, TINY_VARS, x, y, jax.random.PRNGKey(1))
            chex.assert_trees_all_close(xa, ref, atol=1e-6)


@pytest.mark.parametrize("name", ["fgsm-rs"] + [pytest.param(n, marks=pytest.mark.slow)
                                                 for n in ("pgd", "apgd-ce", "fab-t", "square")])
def test_vmap_matches_loop(name):
    """vmap over a stack of batches gives the per-batch results."""
    atk = attacks.get_attack(name, eps=0.1, **FAST[name])
    xs, ys = zip(*[_data(n=2, seed=s) for s in range(2)])
    xs, ys = jnp.stack(xs), jnp.stack(ys)
    keys = jax.random.split(jax.random.PRNGKey(0), 2)
    out = jax.vmap(lambda x, y, k: atk(TINY_APPLY, TINY_VARS, x, y, k))(xs, ys, keys)
    for i in range(2):
        chex.assert_trees_all_close(out[i], atk(TINY_APPLY, TINY_VARS, xs[i], ys[i], keys[i]), atol=1e-5)


def test_batch_stats_untouched():
    """A batch-norm model in eval mode: the attack never changes the variables it is given."""

    class BNNet(nn.Module):
        @nn.compact
        def __call__(self, x, train=False):
            x = nn.Conv(4, (3, 3))(x)
            x = nn.BatchNorm(use_running_average=not train)(x)
            return nn.Dense(10)(nn.relu(x).reshape(x.shape[0], -1))

    m = BNNet()
    v = m.init(jax.random.PRNGKey(0), jnp.zeros((1, 6, 6, 1)))
    before = jax.tree.map(np.array, v)
    x, y = _data()
    attacks.get_attack("fgsm", eps=0.1)(lambda vv, z: m.apply(vv, z), v, x, y, jax.random.PRNGKey(0))
    chex.assert_trees_all_equal(before, jax.tree.map(np.array, v))


def test_one_compile_for_every_eps():
    """eps is a traced argument of the jitted attack: a sweep over radii compiles once, and each
    radius gives the same result as the pure ``run`` with that radius as a Python number."""
    x, y = _data()
    key = jax.random.PRNGKey(3)
    apply_fn = lambda v, z: TINY_APPLY(v, z)  # noqa: E731  (a fresh static argument: a fresh cache entry)
    before = base._jit_run._cache_size()
    for eps in (0.05, 0.1, 0.2, 0.3):
        atk = attacks.get_attack("pgd", eps=eps, steps=3)
        out = atk(apply_fn, TINY_VARS, x, y, key)
        chex.assert_trees_all_close(out, atk.run(apply_fn, TINY_VARS, x, y, key), atol=1e-6)
        assert float(jnp.max(jnp.abs(out - x))) <= eps + 1e-6
    assert base._jit_run._cache_size() == before + 1


def test_targeted_pgd_reaches_target():
    x, y = _data(n=8)
    target = (y + 1) % 10
    atk = attacks.get_attack("pgd", eps=1.0, steps=20, step_size=0.1, targeted=True)
    xa = atk(TINY_APPLY, TINY_VARS, x, target, jax.random.PRNGKey(0))
    hit = jnp.argmax(TINY_APPLY(TINY_VARS, xa), -1) == target
    assert float(hit.mean()) >= 0.75


def test_validation_errors():
    x, y = _data()
    k = jax.random.PRNGKey(0)
    with pytest.raises(ValueError, match="eps must be"):
        attacks.get_attack("pgd", eps=-0.1)
    with pytest.raises(ValueError, match="step_size must be > 0"):
        attacks.get_attack("pgd", step_size=0.0)
    with pytest.raises(ValueError, match="steps must be an int >= 1"):
        attacks.get_attack("apgd-ce", steps=0)
    with pytest.raises(ValueError, match="does not support norm 'l2'"):
        attacks.get_attack("square", norm="l2")
    with pytest.raises(ValueError, match="does not support norm 'l1'"):
        attacks.get_attack("pgd", norm="l1")
    with pytest.raises(ValueError, match="loop must be"):
        attacks.get_attack("pgd", loop="sometimes")
    atk = attacks.get_attack("fgsm", eps=0.1)
    with pytest.raises(ValueError, match="labels out of range"):
        atk(TINY_APPLY, TINY_VARS, x, y.at[0].set(10), k)
    with pytest.raises(ValueError, match="outside the domain"):
        atk(TINY_APPLY, TINY_VARS, x * 2.0, y, k)
    with pytest.raises(ValueError, match="NaN"):
        atk(TINY_APPLY, TINY_VARS, x.at[0, 0, 0, 0].set(jnp.nan), y, k)
    with pytest.raises(ValueError, match="same N"):
        atk(TINY_APPLY, TINY_VARS, x, y[:2], k)
    with pytest.raises(ValueError, match="no targeted mode"):
        attacks.get_attack("apgd-t", targeted=True)
    with pytest.raises(ValueError, match="L2"):
        attacks.get_attack("aa", norm="l2")
    with pytest.raises(ValueError, match="NHWC"):
        attacks.get_attack("square", n_queries=2)(lambda v, z: z @ v, jnp.ones((3, 10)), jnp.zeros((2, 3)),
                                                  jnp.array([0, 1]), k)


def test_apgd_checkpoints_match_official_schedule():
    # the official code with n_iter=100 checks after 22, 19, 16, 13, 10, 7, 6, 6 iterations
    sched = apgd_mod.checkpoint_schedule(100)
    assert sorted(sched) == [21, 40, 56, 69, 79, 86, 92, 98]
    assert [sched[i] for i in sorted(sched)] == [22, 19, 16, 13, 10, 7, 6, 6]


# ----------------------------------------------------------------------------------------------
# linear models: known optima
# ----------------------------------------------------------------------------------------------


def _linear_binary(d=12, n=16, seed=0):
    kw, kb, kx = jax.random.split(jax.random.PRNGKey(seed), 3)
    w = jax.random.normal(kw, (d, 2))
    b = jax.random.normal(kb, (2,)) * 0.1
    apply_fn = lambda v, x: x @ v[0] + v[1]  # noqa: E731
    x = jax.random.uniform(kx, (n, d), minval=0.2, maxval=0.8)
    y = jnp.argmax(apply_fn((w, b), x), -1)
    return apply_fn, (w, b), x, y


def _margin(apply_fn, v, x, y):
    z = apply_fn(v, x)
    return z[jnp.arange(x.shape[0]), y] - z[jnp.arange(x.shape[0]), 1 - y]


@pytest.mark.parametrize("eps", [0.1])
def test_apgd_linear_linf_optimum(eps):
    """For logits x @ W + b the smallest margin over the L-inf ball in [0, 1] is attained at
    clip(x - eps * sign(w_y - w_other)); APGD-CE's best point must reach it, and APGD must fool
    exactly the points whose optimal margin is negative."""
    apply_fn, v, x, y = _linear_binary()
    w = v[0]
    dvec = (w[:, y] - w[:, 1 - y]).T  # [N, d]
    x_star = jnp.clip(x - eps * jnp.sign(dvec), 0.0, 1.0)
    m_star = _margin(apply_fn, v, x_star, y)
    x_best, _, _, _ = apgd_mod.apgd_single_run(
        apply_fn, v, x, jax.random.PRNGKey(0),
        objective=lambda z: base.attack_loss("ce", z, y, False), robust=lambda z: jnp.argmax(z, -1) == y,
        eps=eps, norm="linf", steps=20, rho=0.75, domain=(0.0, 1.0), loop="rolled")
    np.testing.assert_allclose(_margin(apply_fn, v, x_best, y), m_star, atol=1e-4)
    xa = attacks.APGD(eps=eps, steps=20, loop="rolled")(apply_fn, v, x, y, jax.random.PRNGKey(0))
    fooled = np.asarray(jnp.argmax(apply_fn(v, xa), -1) != y)
    np.testing.assert_array_equal(fooled, np.asarray(m_star < 0))


def test_apgd_linear_l2_optimum():
    """Without active box constraints the L2 optimum is x - eps * d / ||d||: margin m0 - eps ||d||."""
    apply_fn, v, x, y = _linear_binary(seed=1)
    eps = 0.1
    w = v[0]
    dvec = (w[:, y] - w[:, 1 - y]).T
    m_star = _margin(apply_fn, v, x, y) - eps * jnp.linalg.norm(dvec, axis=1)
    x_best, _, _, _ = apgd_mod.apgd_single_run(
        apply_fn, v, x, jax.random.PRNGKey(0),
        objective=lambda z: base.attack_loss("ce", z, y, False), robust=lambda z: jnp.argmax(z, -1) == y,
        eps=eps, norm="l2", steps=50, rho=0.75, domain=(0.0, 1.0), loop="rolled")
    np.testing.assert_allclose(_margin(apply_fn, v, x_best, y), m_star, atol=2e-3)
    assert float(base.per_example_norm(x_best - x, "l2").max()) <= eps * (1 + 1e-5)


def test_apgd_max_loss_output_is_the_highest_loss_point():
    """output="max_loss" returns x_best of the single run (what APGD-AT trains on): its loss is the
    run's best loss, never below the loss at the default (adversarial) output, inside the ball."""
    apply_fn, v, x, y = _linear_binary()
    eps = 0.1
    k1 = jax.random.split(jax.random.PRNGKey(0), 1)[0]  # the key APGD.run gives its single restart
    objective = lambda z: base.attack_loss("ce", z, y, False)  # noqa: E731
    _, _, loss_best, _ = apgd_mod.apgd_single_run(
        apply_fn, v, x, k1, objective=objective, robust=lambda z: jnp.argmax(z, -1) == y,
        eps=eps, norm="linf", steps=20, rho=0.75, domain=(0.0, 1.0), loop="rolled")
    run = lambda out: attacks.APGD(eps=eps, steps=20, loop="rolled", output=out).run(  # noqa: E731
        apply_fn, v, x, y, jax.random.PRNGKey(0))
    xm = run("max_loss")
    lm, la = objective(apply_fn(v, xm)), objective(apply_fn(v, run("adversarial")))
    np.testing.assert_allclose(lm, loss_best, rtol=1e-5, atol=1e-6)
    assert bool(jnp.all(lm >= la - 1e-5))
    assert float(base.per_example_norm(xm - x, "linf").max()) <= eps * (1 + 1e-6)
    with pytest.raises(ValueError, match="output"):
        attacks.APGD(output="best")


def test_trades_kl_attack_raises_the_kl_and_ignores_labels():
    """TRADES' inner maximization: KL(f(x) || f(x')) at its output is larger than at the start
    x + 0.001 N(0, I); the labels do not matter."""
    x, y = _data(n=6)
    atk = attacks.get_attack("trades", eps=0.1, steps=5)
    assert isinstance(atk, attacks.TradesKL) and atk.alpha == pytest.approx(0.025)
    key = jax.random.PRNGKey(0)
    xa = atk(TINY_APPLY, TINY_VARS, x, y, key)
    np.testing.assert_array_equal(np.asarray(xa), np.asarray(atk(TINY_APPLY, TINY_VARS, x, (y + 1) % 10, key)))
    clean = TINY_APPLY(TINY_VARS, x)
    kl = lambda z: losses.trades_kl(TINY_APPLY(TINY_VARS, z), clean)  # noqa: E731
    x0 = x + 0.001 * jax.random.normal(key, x.shape)
    assert float(jnp.mean(kl(xa))) > 10 * float(jnp.mean(kl(x0)))
    with pytest.raises(ValueError, match="targeted"):
        attacks.TradesKL(targeted=True)


@pytest.mark.parametrize("name", ["pgd-l2", "apgd-ce", "fgsm", "fgsm-rs"])
def test_l2_attacks_respect_l2_ball(name):
    x, y = _data(n=6)
    eps = 0.5
    atk = attacks.get_attack(name, eps=eps, norm="l2", **FAST[name])
    xa = atk(TINY_APPLY, TINY_VARS, x, y, jax.random.PRNGKey(0))
    n2 = base.per_example_norm(xa - x, "l2")
    assert float(n2.max()) <= eps * (1 + 1e-5)
    assert float(n2.max()) > 0.25  # it did move (an L-inf step of 0.5 would leave the L2 ball)


def test_fab_projection_is_feasible_and_minimal():
    """projection_linf lands on the hyperplane inside the box, no farther than a bisection optimum."""
    from advjax.attacks.fab import projection_linf

    rng = np.random.default_rng(0)
    t = jnp.asarray(rng.uniform(0.2, 0.8, (5, 8)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(5, 8)), jnp.float32)
    b = jnp.sum(w * t, 1) + jnp.asarray(rng.normal(size=5) * 0.3, jnp.float32)
    d = projection_linf(t, w, b)
    z = t + d
    np.testing.assert_allclose(jnp.sum(w * z, 1), b, atol=1e-4)
    assert float(z.min()) >= -1e-6 and float(z.max()) <= 1 + 1e-6
    # minimal L-inf: for radius r the reachable w.z range is w.t +- r * ||w||_1 (box clipped); bisection
    for i in range(5):
        lo, hi = 0.0, 1.0
        for _ in range(40):
            r = (lo + hi) / 2
            zl = np.clip(np.asarray(t[i]) - r * np.sign(np.asarray(w[i])), 0, 1)
            zh = np.clip(np.asarray(t[i]) + r * np.sign(np.asarray(w[i])), 0, 1)
            ok = np.dot(np.asarray(w[i]), zl) <= float(b[i]) <= np.dot(np.asarray(w[i]), zh)
            lo, hi = (lo, r) if ok else (r, hi)
        assert float(jnp.abs(d[i]).max()) <= hi + 1e-4


# ----------------------------------------------------------------------------------------------
# a CNN trained here on the real MNIST test split
# ----------------------------------------------------------------------------------------------


class MnistCNN(nn.Module):
    @nn.compact
    def __call__(self, x, train=False):
        x = nn.relu(nn.Conv(8, (3, 3), strides=2)(x))
        x = nn.relu(nn.Conv(16, (3, 3), strides=2)(x))
        x = nn.relu(nn.Dense(64)(x.reshape(x.shape[0], -1)))
        return nn.Dense(10)(x)


def _read_idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(dims)


N_EVAL = 100
EPS = 0.1


@pytest.fixture(scope="module")
def mnist_model(shared_data):
    folder = pathlib.Path(shared_data) / "mnist"
    x = _read_idx(folder / "t10k-images-idx3-ubyte.gz").astype(np.float32)[..., None] / 255.0
    y = _read_idx(folder / "t10k-labels-idx1-ubyte.gz").astype(np.int32)
    x_tr, y_tr, x_te, y_te = x[:8000], y[:8000], x[8000:8000 + N_EVAL], y[8000:8000 + N_EVAL]
    model = MnistCNN()
    params = model.init(jax.random.PRNGKey(0), x_tr[:1])
    tx = optax.adam(3e-3)
    opt = tx.init(params)

    @jax.jit
    def step(params, opt, xb, yb):
        def loss(p):
            return optax.softmax_cross_entropy_with_integer_labels(model.apply(p, xb), yb).mean()
        g = jax.grad(loss)(params)
        upd, opt = tx.update(g, opt, params)
        return optax.apply_updates(params, upd), opt

    rng = np.random.default_rng(0)
    for _ in range(200):
        idx = rng.integers(0, len(x_tr), 64)
        params, opt = step(params, opt, x_tr[idx], y_tr[idx])
    apply_fn = lambda v, z: model.apply(v, z)  # noqa: E731
    return apply_fn, params, jnp.asarray(x_te), jnp.asarray(y_te)


def _acc(apply_fn, v, x, y):
    return float(jnp.mean(jnp.argmax(apply_fn(v, x), -1) == y))


REPORT = {}


def test_attacks_lower_accuracy_and_ordering(mnist_model):
    apply_fn, v, x, y = mnist_model
    key = jax.random.PRNGKey(0)
    clean = _acc(apply_fn, v, x, y)
    assert clean >= 0.85, clean
    aa = attacks.AutoAttack(eps=EPS, steps=20, n_target_classes=2, n_queries=200, loop="rolled")
    x_aa, _, per = aa.drive(apply_fn, v, x, y, key)
    apgd = attacks.APGD(eps=EPS, steps=20, loop="rolled")
    acc = {
        "clean": clean,
        "fgsm": _acc(apply_fn, v, attacks.FGSM(eps=EPS)(apply_fn, v, x, y, key), y),
        "pgd10": _acc(apply_fn, v, attacks.PGD(eps=EPS, steps=10)(apply_fn, v, x, y, key), y),
        "apgd-ce": _acc(apply_fn, v, apgd(apply_fn, v, x, y, jax.random.fold_in(key, 0)), y),
        "aa": _acc(apply_fn, v, x_aa, y),
    }
    REPORT.update(acc)
    print("\nMNIST CNN accuracies at eps=%.2f:" % EPS, json.dumps(acc))
    assert acc["fgsm"] < clean - 0.1
    assert acc["aa"] <= acc["apgd-ce"] <= acc["pgd10"] <= acc["fgsm"]
    # AutoAttack's APGD-CE runs on the clean-correct points only (other random starts than the
    # standalone run): same strength up to that randomness
    assert abs(float(jnp.mean(per["apgd-ce"])) - acc["apgd-ce"]) <= 0.05
    assert float(jnp.mean(per["square"])) == pytest.approx(acc["aa"])
    assert float(jnp.abs(x_aa - x).max()) <= EPS + 1e-6
    assert float(x_aa.min()) >= 0.0 and float(x_aa.max()) <= 1.0


def test_autoattack_compaction_equals_full_batch(mnist_model):
    """The eager driver runs each sub-attack only on the still-robust points (gathered and padded
    to a bucket); with deterministic sub-attacks its output and flags equal the full-batch, masked
    ``run`` exactly."""
    apply_fn, v, x, y = mnist_model
    x, y = x[:50], y[:50]
    aa = attacks.AutoAttack(version="custom", attacks=("fgsm", "bim"), eps=EPS, check_inputs=False)
    key = jax.random.PRNGKey(0)
    x_d, clean_d, flags_d = aa.drive(apply_fn, v, x, y, key)
    x_r, clean_r, flags_r = jax.jit(aa.run_detailed, static_argnums=0)(apply_fn, v, x, y, key)
    np.testing.assert_array_equal(np.asarray(clean_d), np.asarray(clean_r))
    for name in ("fgsm", "bim"):
        np.testing.assert_array_equal(np.asarray(flags_d[name]), np.asarray(flags_r[name]))
    np.testing.assert_allclose(np.asarray(x_d), np.asarray(x_r), atol=1e-6)
    n_fgsm, n_bim = int(flags_d["fgsm"].sum()), int(flags_d["bim"].sum())
    assert 0 < n_bim < n_fgsm < int(clean_d.sum())  # both stages ran on a strict subset
    assert [autoattack_mod.compact_size(k, 128) for k in (1, 16, 17, 33, 64, 65, 128)] == [16, 16, 32, 64, 64, 128, 128]


@pytest.mark.parametrize("name,kw", [
    ("fgsm-rs", {}), ("bim", {}), ("cw-inf", {"steps": 10}), ("apgd-dlr", {"steps": 25, "loop": "rolled"}),
    ("apgd-t", {"steps": 10, "n_target_classes": 2, "loop": "rolled"}),
    ("fab-t", {"steps": 10, "n_target_classes": 2}), ("square", {"n_queries": 300}), ("trades-kl", {}),
])
def test_each_attack_lowers_accuracy(mnist_model, name, kw):
    apply_fn, v, x, y = mnist_model
    clean = _acc(apply_fn, v, x, y)
    xa = attacks.get_attack(name, eps=EPS, **kw)(apply_fn, v, x, y, jax.random.PRNGKey(1))
    a = _acc(apply_fn, v, xa, y)
    REPORT[name] = a
    assert a < clean - 0.1, (name, clean, a)
    assert float(jnp.abs(xa - x).max()) <= EPS + 1e-6
    assert float(xa.min()) >= 0.0 and float(xa.max()) <= 1.0


def test_noise_is_weaker_than_attacks(mnist_model):
    apply_fn, v, x, y = mnist_model
    clean = _acc(apply_fn, v, x, y)
    for name in ("gaussian", "uniform", "salt-and-pepper"):
        a = _acc(apply_fn, v, attacks.get_attack(name, eps=EPS)(apply_fn, v, x, y, jax.random.PRNGKey(2)), y)
        assert a >= clean - 0.2, (name, a)


@pytest.mark.slow
def test_standard_autoattack_full(mnist_model):
    """The full standard AutoAttack (100 iterations, 9 targets, 5000 queries) on the trained CNN."""
    apply_fn, v, x, y = mnist_model
    key = jax.random.PRNGKey(0)
    aa = attacks.get_attack("aa", eps=EPS)
    x_aa, clean, per = aa.drive(apply_fn, v, x, y, key)
    accs = {"clean": float(clean.mean()), **{k: float(f.mean()) for k, f in per.items()}}
    accs["pgd20"] = _acc(apply_fn, v, attacks.get_attack("pgd20", eps=EPS)(apply_fn, v, x, y, key), y)
    accs["fgsm"] = _acc(apply_fn, v, attacks.FGSM(eps=EPS)(apply_fn, v, x, y, key), y)
    print("\nfull AutoAttack on MNIST CNN:", json.dumps(accs))
    assert accs["square"] <= accs["apgd-ce"] <= accs["pgd20"] <= accs["fgsm"]
    if os.environ.get("ADVJAX_ATTACK_REPORT"):
        pathlib.Path(os.environ["ADVJAX_ATTACK_REPORT"]).write_text(json.dumps(accs))
