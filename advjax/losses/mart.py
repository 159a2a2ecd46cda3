"""MART loss (Wang et al., "Improving Adversarial Robustness Requires Revisiting Misclassified
Examples", ICLR 2020, Eq. (7)–(8)).

    L_MART = (1/n) Σ_i [ BCE(p(x̂_i), y_i) + λ · KL(p(x_i) ‖ p(x̂_i)) · (1 − p_{y_i}(x_i)) ]
    BCE(p(x̂), y) = −log p_y(x̂) − log(1 − max_{k≠y} p_k(x̂))

The reference code adds small constants inside the logarithms and to (1 − p_y): ``log(1.0001 − p_k
+ 1e-12)``, ``log(p̂ + 1e-12)`` in the KL, ``1.0000001 − p_y``; ``mode="reference"`` reproduces them,
the default follows the equations with only a 1e-12 guard against log(0).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ["boosted_cross_entropy", "mart_kl", "mart"]


def boosted_cross_entropy(logits_adv, y, *, mode: str = "paper"):
    """Per-example BCE(p(x̂), y) = −log p_y(x̂) − log(1 − max_{k≠y} p_k(x̂)) (Eq. (7))."""
    logp = jax.nn.log_softmax(logits_adv.astype(jnp.float32), axis=-1)
    p = jnp.exp(logp)
    k = logits_adv.shape[-1]
    onehot = jax.nn.one_hot(y, k, dtype=p.dtype)
    ce = -jnp.sum(onehot * logp, axis=-1)
    p_other = jnp.max(jnp.where(onehot > 0, -jnp.inf, p), axis=-1)
    if mode == "reference":
        margin = -jnp.log(1.0001 - p_other + 1e-12)
    else:
        margin = -jnp.log(jnp.maximum(1.0 - p_other, 1e-12))
    return ce + margin


def mart_kl(logits_clean, logits_adv, y, *, mode: str = "paper"):
    """Per-example KL(p(x) ‖ p(x̂)) · (1 − p_y(x)) (Eq. (8))."""
    lp = jax.nn.log_softmax(logits_clean.astype(jnp.float32), axis=-1)
    p = jnp.exp(lp)
    if mode == "reference":
        lq = jnp.log(jax.nn.softmax(logits_adv.astype(jnp.float32), axis=-1) + 1e-12)
    else:
        lq = jax.nn.log_softmax(logits_adv.astype(jnp.float32), axis=-1)
    # KLDivLoss(log q, p) = Σ p (log p − log q), with 0·log 0 = 0
    kl = jnp.sum(jnp.where(p > 0, p * (lp - lq), 0.0), axis=-1)
    p_true = jnp.take_along_axis(p, y[:, None].astype(jnp.int32), axis=-1)[:, 0]
    weight = (1.0000001 - p_true) if mode == "reference" else (1.0 - p_true)
    return kl * weight


def mart(logits_clean, logits_adv, y, beta: float = 6.0, *, mode: str = "paper"):
    """Per-example MART loss BCE + β·KL·(1 − p_y) (the batch mean is Eq. (8))."""
    if mode not in ("paper", "reference"):
        raise ValueError(f"mart: mode must be 'paper' or 'reference', got {mode!r}")
    return boosted_cross_entropy(logits_adv, y, mode=mode) + beta * mart_kl(logits_clean, logits_adv, y, mode=mode)
