"""Private helpers shared by the training methods: per-example training losses and accuracy.

The inner maximizations are the attacks of ``advjax.attacks`` (each method's ``inner_attack``);
these are only the training-side losses (cross entropy with label smoothing).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ["cross_entropy", "accuracy"]


def cross_entropy(logits, y, smoothing: float = 0.0):
    """Per-example softmax cross entropy with integer labels, optionally label-smoothed
    (target (1-s)·onehot + s/K)."""
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    nll = -jnp.take_along_axis(logp, y[:, None].astype(jnp.int32), axis=-1)[:, 0]
    if smoothing == 0.0:
        return nll
    return (1.0 - smoothing) * nll - smoothing * jnp.mean(logp, axis=-1)


def accuracy(logits, y):
    return jnp.mean((jnp.argmax(logits, axis=-1) == y).astype(jnp.float32))
