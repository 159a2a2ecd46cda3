"""Training methods: each loss equals its paper's equation on a hand-computed tiny case (a linear
model with fixed weights, numpy reference), each step lowers its own objective, BN statistics come
only from the training forward passes, and the registry's errors are clear."""
from __future__ import annotations

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from advjax.methods.base import AdversarialMethod, get_method, list_methods
from advjax.methods.regularized import Regularized
from advjax.methods.standard import Standard
from advjax.methods.at_fgsm import ATFGSM
from advjax.methods.pgd_at import PGDAT
from advjax.methods.trades import TRADES
from advjax.methods.mart import MART
from advjax.methods.awp import AWP, weight_perturbation
from advjax.methods.fast import FGSMRS
from advjax.methods.fgsm_ga import FGSMGA
from advjax.methods.fgsm_ckpt import FGSMCKPT
from advjax.methods.free_at import FreeAT
from advjax.methods.apgd_at import APGDAT
from advjax.train.state import create_train_state


class Linear(nn.Module):
    num_classes: int = 3
    input_shape: tuple = (4,)

    @nn.compact
    def __call__(self, x, train: bool = False):
        return nn.Dense(self.num_classes)(x)


class TinyBN(nn.Module):
    num_classes: int = 3
    input_shape: tuple = (4,)

    @nn.compact
    def __call__(self, x, train: bool = False):
        h = nn.Dense(8)(x)
        h = nn.BatchNorm(use_running_average=not train, momentum=0.9)(h)
        h = nn.relu(h)
        return nn.Dense(self.num_classes)(h)


RNG = np.random.default_rng(0)
W = RNG.normal(size=(4, 3)).astype(np.float32)
B = np.array([0.1, -0.2, 0.05], np.float32)
X = RNG.uniform(0.2, 0.8, size=(6, 4)).astype(np.float32)
Y = np.array([0, 1, 2, 0, 1, 2], np.int32)
KEY = jax.random.PRNGKey(3)


def quick_compile(f, *args):
    """jit + compile with LLVM optimization off: these are correctness tests of tiny programs, and on
    the shared 2-core machine compile time dominates (about 2x faster to compile)."""
    return jax.jit(f).lower(*args).compile(compiler_options={"xla_backend_optimization_level": 0})


def linear_state(lr=0.1):
    return create_train_state(Linear(), optax.sgd(lr), jax.random.PRNGKey(0),
                              variables={"params": {"Dense_0": {"kernel": jnp.asarray(W), "bias": jnp.asarray(B)}}})


# ---- numpy references -------------------------------------------------------------------------
def np_logits(x, w=W, b=B):
    return x @ w + b


def np_softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def np_ce(z, y):
    p = np_softmax(z)
    return -np.log(p[np.arange(len(y)), y])


def np_kl(zp, zq):
    p, q = np_softmax(zp), np_softmax(zq)
    return np.sum(p * (np.log(p) - np.log(q)), -1)


def np_input_grad(x, y, w=W, b=B):
    """∇ₓ CE for the linear model: (p − onehot) Wᵀ (per example)."""
    p = np_softmax(np_logits(x, w, b))
    p[np.arange(len(y)), y] -= 1.0
    return p @ w.T


def np_project(xa, x, eps):
    return np.clip(np.clip(xa, x - eps, x + eps), 0, 1)


def split(key):
    return jax.random.split(key)


# ---- equations ----------------------------------------------------------------------------------
class EquationTest(chex.TestCase):

    @chex.variants(with_jit=True, without_jit=True)
    def test_standard_is_mean_cross_entropy(self):
        st = linear_state()
        m = Standard()
        loss, (_, met) = self.variant(lambda p: m.loss(st, p, X, X, Y, KEY))(st.params)
        np.testing.assert_allclose(loss, np_ce(np_logits(X), Y).mean(), rtol=1e-5)
        np.testing.assert_allclose(met["acc"], np.mean(np_logits(X).argmax(-1) == Y))

    def test_label_smoothing(self):
        st = linear_state()
        loss, _ = Standard(label_smoothing=0.2).loss(st, st.params, X, X, Y, KEY)
        logp = np.log(np_softmax(np_logits(X)))
        target = 0.8 * np.eye(3)[Y] + 0.2 / 3
        np.testing.assert_allclose(loss, -(target * logp).sum(-1).mean(), rtol=1e-5)

    @chex.variants(with_jit=True, without_jit=True)
    def test_at_fgsm_joint_loss_and_fgsm(self):
        st = linear_state()
        m = ATFGSM(eps=0.1, weight=0.3)
        x_adv = self.variant(lambda: m.perturb(st, X, Y, KEY))()
        np.testing.assert_allclose(x_adv, np.clip(X + 0.1 * np.sign(np_input_grad(X, Y)), 0, 1), atol=1e-6)
        loss, _ = m.loss(st, st.params, X, x_adv, Y, KEY)
        want = 0.3 * np_ce(np_logits(X), Y).mean() + 0.7 * np_ce(np_logits(np.asarray(x_adv)), Y).mean()
        np.testing.assert_allclose(loss, want, rtol=1e-5)

    def test_pgd_at_one_step_and_loss(self):
        st = linear_state()
        m = PGDAT(eps=0.05, alpha=0.03, steps=1, random_start=False)
        x_adv = np.asarray(m.perturb(st, X, Y, KEY))
        np.testing.assert_allclose(x_adv, np_project(X + 0.03 * np.sign(np_input_grad(X, Y)), X, 0.05), atol=1e-6)
        m2 = PGDAT(eps=0.05, alpha=0.03, steps=4)
        x2 = np.asarray(m2.perturb(st, X, Y, KEY))
        assert np.abs(x2 - X).max() <= 0.05 + 1e-6 and x2.min() >= 0 and x2.max() <= 1
        # PGD climbs: 4 steps give a larger CE than the clean point for every example
        assert np.all(np_ce(np_logits(x2), Y) > np_ce(np_logits(X), Y))
        loss, _ = m.loss(st, st.params, X, x_adv, Y, KEY)
        np.testing.assert_allclose(loss, np_ce(np_logits(x_adv), Y).mean(), rtol=1e-5)

    @chex.variants(with_jit=True, without_jit=True)
    def test_trades_is_ce_plus_beta_kl(self):
        st = linear_state()
        m = TRADES(beta=6.0, eps=0.1, alpha=0.02, steps=3)
        x_adv = np.asarray(self.variant(lambda: m.perturb(st, X, Y, KEY))())
        assert np.abs(x_adv - X).max() <= 0.1 + 1e-6
        # the inner max increases KL(f(x) || f(x')) above its value at the 0.001-noise start
        assert np_kl(np_logits(X), np_logits(x_adv)).mean() > 1e-4
        loss, (_, met) = m.loss(st, st.params, X, x_adv, Y, KEY)
        want = np_ce(np_logits(X), Y).mean() + 6.0 * np_kl(np_logits(X), np_logits(x_adv)).mean()
        np.testing.assert_allclose(loss, want, rtol=1e-5)
        np.testing.assert_allclose(met["robust_kl"], np_kl(np_logits(X), np_logits(x_adv)).mean(), rtol=1e-4)

    def test_mart_is_bce_plus_weighted_kl(self):
        st = linear_state()
        x_adv = np.clip(X + 0.2 * np.sign(np_input_grad(X, Y)), 0, 1).astype(np.float32)
        pa, pc = np_softmax(np_logits(x_adv)), np_softmax(np_logits(X))
        other = pa.copy()
        other[np.arange(6), Y] = -1
        bce = -np.log(pa[np.arange(6), Y]) - np.log(1 - other.max(-1))
        kl = np_kl(np_logits(X), np_logits(x_adv)) * (1 - pc[np.arange(6), Y])
        loss, _ = MART(beta=5.0).loss(st, st.params, X, x_adv, Y, KEY)
        np.testing.assert_allclose(loss, (bce + 5.0 * kl).mean(), rtol=1e-5)
        loss_ref, _ = MART(beta=5.0, mode="reference").loss(st, st.params, X, x_adv, Y, KEY)
        np.testing.assert_allclose(loss_ref, loss, rtol=1e-3)  # only epsilon constants differ

    def test_fast_fgsm_rs(self):
        st = linear_state()
        m = FGSMRS(eps=0.1)
        x_adv = np.asarray(m.perturb(st, X, Y, KEY))
        x0 = np.clip(X + np.asarray(jax.random.uniform(KEY, X.shape, jnp.float32, -0.1, 0.1)), 0, 1)
        want = np_project(x0 + 0.125 * np.sign(np_input_grad(x0, Y)), X, 0.1)
        np.testing.assert_allclose(x_adv, want, atol=1e-6)

    def test_fgsm_ga_is_ce_plus_lambda_alignment(self):
        st = linear_state()
        m = FGSMGA(eps=0.1, lam=0.5)
        x_adv = np.asarray(m.perturb(st, X, Y, KEY))
        np.testing.assert_allclose(x_adv, np_project(X + 0.1 * np.sign(np_input_grad(X, Y)), X, 0.1), atol=1e-6)
        loss, (_, met) = m.loss(st, st.params, X, x_adv, Y, KEY)
        eta = np.asarray(jax.random.uniform(KEY, X.shape, jnp.float32, -0.1, 0.1))
        g1, g2 = np_input_grad(X, Y), np_input_grad(np.clip(X + eta, 0, 1), Y)
        cos = (g1 * g2).sum(-1) / np.linalg.norm(g1, axis=-1) / np.linalg.norm(g2, axis=-1)
        np.testing.assert_allclose(met["grad_align"], 1 - cos.mean(), rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(loss, np_ce(np_logits(x_adv), Y).mean() + 0.5 * (1 - cos.mean()), rtol=1e-5)

    def test_fgsm_ckpt_picks_smallest_fooling_checkpoint(self):
        st = linear_state()
        x = RNG.uniform(0.2, 0.8, size=(64, 4)).astype(np.float32)
        y = (np_logits(x).argmax(-1) + (RNG.uniform(size=64) < 0.15)) % 3  # some clean errors
        y = y.astype(np.int32)
        m = FGSMCKPT(eps=0.3, alpha=0.375, c=4)
        x_adv = np.asarray(jax.jit(m.perturb)(st, x, y, KEY))
        x0 = np.clip(x + np.asarray(jax.random.uniform(KEY, x.shape, jnp.float32, -0.3, 0.3)), 0, 1)
        delta = np_project(x0 + 0.375 * np.sign(np_input_grad(x0, y)), x, 0.3) - x
        wrong = lambda z: np_logits(z).argmax(-1) != y
        want = x + delta
        branch = np.full(64, 4)
        for j in (3, 2, 1):
            xj = x + j / 4 * delta
            want = np.where(wrong(xj)[:, None], xj, want)
            branch = np.where(wrong(xj), j, branch)
        want = np.where(wrong(x)[:, None], x, want)
        branch = np.where(wrong(x), 0, branch)
        np.testing.assert_allclose(x_adv, want, atol=1e-6)
        assert {0, 4} <= set(branch.tolist()) and len(set(branch.tolist())) >= 3, branch  # branches exercised

    def test_apgd_at_never_loses_loss_and_stays_in_ball(self):
        st = linear_state()
        m = APGDAT(eps=0.1, steps=6)
        x_adv = np.asarray(jax.jit(m.perturb)(st, X, Y, KEY))
        assert np.abs(x_adv - X).max() <= 0.1 + 1e-6 and x_adv.min() >= 0 and x_adv.max() <= 1
        start = np.clip(X + np.asarray(jax.random.uniform(KEY, X.shape, jnp.float32, -0.1, 0.1)), 0, 1)
        assert np.all(np_ce(np_logits(x_adv), Y) >= np_ce(np_logits(start), Y) - 1e-6)
        # for a linear model the CE maximizer over the box is a vertex: APGD gets close to FGSM's value
        fgsm = np_project(X + 0.1 * np.sign(np_input_grad(X, Y)), X, 0.1)
        assert np_ce(np_logits(x_adv), Y).mean() >= np_ce(np_logits(fgsm), Y).mean() - 1e-3

    def test_awp_weight_perturbation_and_restored_update(self):
        lr, gamma, plr = 0.1, 0.01, 0.5
        st = linear_state(lr)
        m = AWP(base=PGDAT(eps=0.05, alpha=0.03, steps=1, random_start=False), gamma=gamma, proxy_lr=plr)
        st = m.init_state(st, (X, Y))
        new, _ = m.step(st, (X, Y), KEY)
        x_adv = np_project(X + 0.03 * np.sign(np_input_grad(X, Y)), X, 0.05)
        onehot = np.eye(3)[Y]

        def grads(w, b):  # ∂ mean CE / ∂(W, b) of the linear model at x_adv
            d = (np_softmax(np_logits(x_adv, w, b)) - onehot) / len(Y)
            return x_adv.T @ d, d.sum(0)
        gw, _ = grads(W, B)
        proxy_w = W + plr * gw  # one ascent step of the proxy
        v = gamma * np.linalg.norm(W) / np.linalg.norm(proxy_w - W) * (proxy_w - W)
        gw_p, gb_p = grads(W + v, B)  # bias is not perturbed (1-D)
        np.testing.assert_allclose(new.params["Dense_0"]["kernel"], W - lr * gw_p, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(new.params["Dense_0"]["bias"], B - lr * gb_p, rtol=1e-5, atol=1e-6)
        vt = weight_perturbation(st.params, {"Dense_0": {"kernel": jnp.asarray(proxy_w), "bias": jnp.asarray(B + 1)}}, gamma)
        np.testing.assert_allclose(np.linalg.norm(vt["Dense_0"]["kernel"]), gamma * np.linalg.norm(W), rtol=1e-5)
        assert np.all(np.asarray(vt["Dense_0"]["bias"]) == 0)

    def test_free_at_replays_and_carries_delta(self):
        lr, eps = 0.1, 0.05
        st = linear_state(lr)
        m = FreeAT(eps=eps, m=2)
        st = m.init_state(st, (X, Y))
        new, _ = m.step(st, (X, Y), KEY)
        w, b, d = W.copy(), B.copy(), np.zeros_like(X)
        onehot = np.eye(3)[Y]
        for _ in range(2):
            xin = np.clip(X + d, 0, 1)
            dz = (np_softmax(np_logits(xin, w, b)) - onehot) / len(Y)
            gw, gb, gx = xin.T @ dz, dz.sum(0), dz @ w.T
            inside = ((X + d) > 0) & ((X + d) < 1)
            d = np.clip(d + eps * np.sign(gx * inside), -eps, eps)
            w, b = w - lr * gw, b - lr * gb
        np.testing.assert_allclose(new.params["Dense_0"]["kernel"], w, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(new.extra["free_at_delta"], d, atol=1e-6)
        assert int(new.step) == 2

    def test_regularized_adds_feature_regularizer(self):
        st = linear_state()
        reg = lambda fc, fa: sum(jnp.mean((fc[k] - fa[k]) ** 2) for k in fc)
        m = Regularized(PGDAT(eps=0.05, alpha=0.03, steps=1, random_start=False), reg)
        x_adv = np.asarray(m.perturb(st, X, Y, KEY))
        loss, (_, met) = m.loss(st, st.params, X, x_adv, Y, KEY)
        want_reg = np.mean((np_logits(X) - np_logits(x_adv)) ** 2)  # the one learnable layer is the logits
        np.testing.assert_allclose(met["reg"], want_reg, rtol=1e-5)
        np.testing.assert_allclose(loss, np_ce(np_logits(x_adv), Y).mean() + want_reg, rtol=1e-5)
        assert isinstance(m, AdversarialMethod)
        with pytest.raises(ValueError, match="AdversarialMethod"):
            Regularized(FreeAT(), reg)
        with pytest.raises(ValueError, match="own step.*AWP\\(base=Regularized"):
            Regularized(AWP(), reg)


# ---- one step lowers the objective; BN semantics ----------------------------------------------------
XB = RNG.uniform(0, 1, size=(16, 4)).astype(np.float32)
YB = (np.arange(16) % 3).astype(np.int32)

METHODS = {
    "standard": Standard(),
    "at_fgsm": ATFGSM(eps=0.1),
    "pgd_at": PGDAT(eps=0.1, alpha=0.03, steps=2),
    "trades": TRADES(eps=0.1, alpha=0.03, steps=2),
    "mart": MART(eps=0.1, alpha=0.03, steps=2),
    # AT-AWP's update is checked exactly in EquationTest; here TRADES-AWP
    "awp_trades": AWP(base=TRADES(eps=0.1, alpha=0.03, steps=2)),
    "fast": FGSMRS(eps=0.1),
    "fgsm_ga": FGSMGA(eps=0.1, lam=0.5),
    "fgsm_ckpt": FGSMCKPT(eps=0.1, alpha=0.125),
    "apgd_at": APGDAT(eps=0.1, steps=4),
    "regularized": Regularized(TRADES(eps=0.1, alpha=0.03, steps=2),
                               lambda fc, fa: 0.1 * sum(jnp.mean(jnp.abs(fc[k] - fa[k])) for k in fc)),
}


# which training forward passes (x: clean, a: adversarial, in order) each paper's loss runs
BN_PASSES = {"standard": "x", "pgd_at": "a", "trades": "xa", "mart": "xa", "fast": "a", "at_fgsm": "xa",
             "fgsm_ckpt": "a", "apgd_at": "a", "fgsm_ga": "a", "regularized": "xa"}


def _train_forward(st, x, bs):
    _, mut = st.model.apply({"params": st.params, "batch_stats": bs}, x, train=True, mutable=["batch_stats"])
    return mut["batch_stats"]


@pytest.mark.parametrize("name", list(METHODS))
def test_one_step_lowers_its_objective(name):
    """loss(θ_new; x_adv) < loss(θ_old; x_adv) at the step's own adversarial batch; and the new BN
    statistics are exactly those of the paper's training forward passes (the attack moves none)."""
    m = METHODS[name]
    st = create_train_state(TinyBN(), optax.sgd(0.05), jax.random.PRNGKey(1))
    st = m.init_state(st, (XB, YB))

    def run(st):  # one compile: the step and the checks together
        new, metrics = m.step(st, (XB, YB), KEY)
        _, k_loss = split(KEY)
        x_adv = m.adversarial_examples(st, XB, YB, KEY)
        before = m.loss(st, st.params, XB, x_adv, YB, k_loss)[0]
        after = m.loss(st, new.params, XB, x_adv, YB, k_loss)[0]
        bs = st.batch_stats
        for p in BN_PASSES.get(name, ""):
            bs = _train_forward(st, XB if p == "x" else x_adv, bs)
        return new, metrics, before, after, bs

    new, metrics, before, after, bs = quick_compile(run, st)(st)
    assert float(after) < float(before), (name, float(before), float(after))
    assert int(new.step) == 1 and np.isfinite(float(metrics["loss"]))
    if name in BN_PASSES:
        chex.assert_trees_all_close(new.batch_stats, bs, rtol=1e-6, atol=1e-7)
    else:  # AWP: the base's passes at the perturbed weights; at least the statistics moved
        assert not jax.tree_util.tree_all(jax.tree.map(lambda a, b: bool(jnp.all(a == b)), st.batch_stats, new.batch_stats))


def test_free_at_step_lowers_its_objective():
    m = FreeAT(eps=0.1, m=3)
    st = m.init_state(create_train_state(TinyBN(), optax.sgd(0.05), jax.random.PRNGKey(1)), (XB, YB))

    def run(st):
        new, _ = m.step(st, (XB, YB), KEY)
        d = new.extra["free_at_delta"]
        return new, m.loss(st, st.params, d, XB, YB)[0], m.loss(new, new.params, d, XB, YB)[0]

    new, before, after = quick_compile(run, st)(st)
    d = new.extra["free_at_delta"]
    assert float(after) < float(before)
    assert int(new.step) == 3 and float(jnp.abs(d).max()) <= 0.1 + 1e-7


# ---- registry and bad input -----------------------------------------------------------------------
def test_registry_builds_every_method_and_lists_names():
    names = list_methods()
    for n in ("standard", "at_fgsm", "pgd_at", "trades", "mart", "awp", "fast", "fgsm_rs", "fgsm_ga", "fgsm_ckpt",
              "free_at", "apgd_at"):
        assert n in names
    assert isinstance(get_method("pgd-at", eps=0.3, steps=40), PGDAT)
    awp = get_method("awp", base="trades", beta=3.0, gamma=0.002, eps=0.1)
    assert isinstance(awp.base, TRADES) and awp.base.beta == 3.0 and awp.gamma == 0.002 and awp.base.eps == 0.1


def test_registry_and_settings_errors():
    with pytest.raises(ValueError, match="unknown method 'pgdd'.*pgd_at"):
        get_method("pgdd")
    with pytest.raises(ValueError, match="no setting.*'beta'"):
        get_method("pgd_at", beta=1.0)
    with pytest.raises(ValueError, match="8/255"):
        get_method("pgd_at", eps=8)
    with pytest.raises(ValueError, match="eps"):
        PGDAT(eps=-0.1)
    with pytest.raises(ValueError, match="steps"):
        TRADES(steps=0)
    with pytest.raises(ValueError, match="label_smoothing"):
        Standard(label_smoothing=1.5)


def test_eps_warmup_ramps_the_radius_and_keeps_the_loss():
    """EpsWarmup: at step t the adversarial examples lie in the ball of radius eps*(t+1)/T (and at
    the full eps from step T-1 on); the loss is the base method's on those examples; methods that
    make their own perturbation are refused; AT-LR names see through the ramp."""
    from advjax.methods.at_lr import at_lr
    from advjax.methods.eps_warmup import EpsWarmup

    base = PGDAT(eps=0.4, steps=3, domain=None)
    m = EpsWarmup(base, warmup_steps=4)
    st = linear_state()
    x, y = jnp.asarray(X), jnp.asarray(Y)
    for t, frac in ((0, 0.25), (1, 0.5), (3, 1.0), (10, 1.0)):
        st_t = st.replace(step=jnp.asarray(t, st.step.dtype))
        xa = m.adversarial_examples(st_t, x, y, KEY)
        dist = float(jnp.max(jnp.abs(xa - x)))
        assert dist <= 0.4 * frac + 1e-6
        assert dist >= 0.4 * frac - 1e-6  # PGD on a linear model goes to the ball's boundary
        _, metrics = jax.jit(m.step)(st_t, (x, y), KEY)
        assert float(metrics["eps"]) == pytest.approx(0.4 * frac)
    # the loss is the base's loss at the same adversarial examples
    xa = m.adversarial_examples(st, x, y, KEY)
    l_m, _ = m.loss(st, st.params, x, xa, y, KEY)
    l_b, _ = base.loss(st, st.params, x, xa, y, KEY)
    assert float(l_m) == pytest.approx(float(l_b))
    assert m.eps == 0.4
    with pytest.raises(ValueError, match="own perturbation"):
        EpsWarmup(FGSMCKPT(eps=0.1), warmup_steps=3)
    with pytest.raises(ValueError, match="warmup_steps"):
        EpsWarmup(base, warmup_steps=0)
    assert at_lr(m, 0).name == "AT-PGD-LR-L0"
