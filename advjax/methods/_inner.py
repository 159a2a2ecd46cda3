"""Private helpers shared by the training methods: per-example losses and the inner maximizations.

These are small, unrolled (Python-loop) implementations in pixel space so a method's step compiles
into straight-line XLA code (DESIGN.md: rolled loops run ~4x slower on XLA:CPU). A method can use a
contract attack from ``advjax.attacks`` instead through its ``attack`` field.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jax import lax

__all__ = ["cross_entropy", "kl_div", "accuracy", "project_linf", "pgd_linf", "trades_kl_linf", "apgd_ce_linf",
           "sign_grad", "input_grad"]


def cross_entropy(logits, y, smoothing: float = 0.0):
    """Per-example softmax cross entropy with integer labels, optionally label-smoothed
    (target (1-s)·onehot + s/K)."""
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    nll = -jnp.take_along_axis(logp, y[:, None].astype(jnp.int32), axis=-1)[:, 0]
    if smoothing == 0.0:
        return nll
    return (1.0 - smoothing) * nll - smoothing * jnp.mean(logp, axis=-1)


def kl_div(p_logits, q_logits):
    """Per-example KL(p || q) = Σ_k p_k (log p_k − log q_k) with p, q = softmax of the logits."""
    lp = jax.nn.log_softmax(p_logits.astype(jnp.float32), axis=-1)
    lq = jax.nn.log_softmax(q_logits.astype(jnp.float32), axis=-1)
    return jnp.sum(jnp.exp(lp) * (lp - lq), axis=-1)


def accuracy(logits, y):
    return jnp.mean((jnp.argmax(logits, axis=-1) == y).astype(jnp.float32))


def clip_domain(x, domain):
    return x if domain is None else jnp.clip(x, domain[0], domain[1])


def project_linf(x_adv, x, eps, domain):
    """Project onto {x' : ‖x'−x‖∞ ≤ eps} ∩ domain box."""
    return clip_domain(jnp.clip(x_adv, x - eps, x + eps), domain)


def input_grad(loss_fn, x):
    """∇ₓ Σ loss_fn(x) (per-example losses summed, so each example gets its own gradient)."""
    return jax.grad(lambda z: jnp.sum(loss_fn(z)))(x)


def sign_grad(loss_fn, x):
    return jnp.sign(input_grad(loss_fn, x))


def uniform_linf(key, x, eps):
    return jax.random.uniform(key, x.shape, x.dtype, -eps, eps)


def pgd_linf(apply_fn, variables, x, y, key, *, eps, alpha, steps, random_start=True, domain=(0.0, 1.0),
             smoothing=0.0):
    """L∞ PGD on the cross entropy (Madry et al. 2018, Eq. (2.1) inner max):
    x^{t+1} = Π_{B∞(x,ε)∩box}(x^t + α·sign ∇ₓ CE(f(x^t), y)), x^0 = x + U(−ε, ε) if random_start."""
    loss = lambda z: cross_entropy(apply_fn(variables, z), y, smoothing)
    x_adv = x
    if random_start:
        x_adv = clip_domain(x + uniform_linf(key, x, eps), domain)
    for _ in range(steps):
        x_adv = project_linf(x_adv + alpha * sign_grad(loss, x_adv), x, eps, domain)
    return x_adv


def trades_kl_linf(apply_fn, variables, x, key, *, eps, alpha, steps, domain=(0.0, 1.0), init_std=0.001):
    """TRADES inner maximization (Zhang et al. 2019, Eq. (5)):
    max_{x'∈B∞(x,ε)} KL(f(x) ‖ f(x')), from x' = x + 0.001·N(0, I), by sign-gradient ascent."""
    p_clean = lax.stop_gradient(apply_fn(variables, x))
    loss = lambda z: kl_div(p_clean, apply_fn(variables, z))
    x_adv = x + init_std * jax.random.normal(key, x.shape, x.dtype)
    for _ in range(steps):
        x_adv = project_linf(x_adv + alpha * sign_grad(loss, x_adv), x, eps, domain)
    return x_adv


def _apgd_checkpoints(n_iter):
    """Step-size checkpoints of APGD (Croce & Hein 2020, Sec. 3.2): p_0=0, p_1=0.22,
    p_{j+1} = p_j + max(p_j − p_{j−1} − 0.03, 0.06), w_j = ⌈p_j·N_iter⌉."""
    p = [0.0, 0.22]
    while p[-1] < 1.0:
        p.append(p[-1] + max(p[-1] - p[-2] - 0.03, 0.06))
    return sorted({int(math.ceil(q * n_iter)) for q in p if 0 < q < 1.0 and math.ceil(q * n_iter) < n_iter})


def apgd_ce_linf(apply_fn, variables, x, y, key, *, eps, steps, rho=0.75, domain=(0.0, 1.0)):
    """APGD-CE, L∞ (Croce & Hein 2020, Algorithm 1), per-example step sizes, unrolled.

    η⁰ = 2ε; z = Π(x_k + η sign∇); x_{k+1} = Π(x_k + α(z − x_k) + (1−α)(x_k − x_{k−1})), α = 0.75
    (α = 1 for the first step). At each checkpoint w_j, η is halved and the iterate reset to the best
    point for examples where (i) fewer than ρ·(w_j − w_{j−1}) steps increased the loss, or (ii) η was
    not reduced at the last checkpoint and the best loss did not improve. Returns the point of
    highest loss (what APGD-AT trains on).
    """
    loss = lambda z: cross_entropy(apply_fn(variables, z), y)
    bshape = (x.shape[0],) + (1,) * (x.ndim - 1)
    def loss_and_grad(z):
        per = loss(z)
        g = jax.grad(lambda q: jnp.sum(loss(q)))(z)
        return per, g

    x_adv = clip_domain(x + uniform_linf(key, x, eps), domain)
    checkpoints = set(_apgd_checkpoints(steps))
    eta = jnp.full(bshape, 2.0 * eps, x.dtype)
    cur_loss, grad = loss_and_grad(x_adv)
    best_loss, x_best, grad_best = cur_loss, x_adv, grad
    x_prev = x_adv
    n_incr = jnp.zeros(x.shape[0], jnp.int32)
    last_ckpt, best_at_last_ckpt = 0, best_loss
    reduced_last = jnp.zeros(x.shape[0], bool)
    for k in range(steps):
        a = 1.0 if k == 0 else 0.75
        z = project_linf(x_adv + eta * jnp.sign(grad), x, eps, domain)
        x_new = project_linf(x_adv + a * (z - x_adv) + (1 - a) * (x_adv - x_prev), x, eps, domain)
        x_prev, x_adv = x_adv, x_new
        new_loss, grad = loss_and_grad(x_adv)
        n_incr = n_incr + (new_loss > cur_loss).astype(jnp.int32)
        cur_loss = new_loss
        better = new_loss > best_loss
        bb = better.reshape(bshape)
        x_best = jnp.where(bb, x_adv, x_best)
        grad_best = jnp.where(bb, grad, grad_best)
        best_loss = jnp.where(better, new_loss, best_loss)
        if (k + 1) in checkpoints:
            span = (k + 1) - last_ckpt
            cond1 = n_incr < rho * span
            cond2 = (~reduced_last) & (best_at_last_ckpt >= best_loss)
            reduce = cond1 | cond2
            rb = reduce.reshape(bshape)
            eta = jnp.where(rb, eta / 2.0, eta)
            x_adv = jnp.where(rb, x_best, x_adv)
            x_prev = jnp.where(rb, x_best, x_prev)
            grad = jnp.where(rb, grad_best, grad)
            cur_loss = jnp.where(reduce, best_loss, cur_loss)
            reduced_last, best_at_last_ckpt = reduce, best_loss
            n_incr = jnp.zeros_like(n_incr)
            last_ckpt = k + 1
    return x_best
