"""Carlini-Wagner margin loss (Carlini & Wagner 2017, Eq. 6 for f_6, in logit form)."""
import jax
import jax.numpy as jnp

from advjax.losses.ce import two_logits


def _max_other(logits: jax.Array, labels: jax.Array) -> jax.Array:
    num_classes = logits.shape[-1]
    onehot = jax.nn.one_hot(labels, num_classes, dtype=bool)
    return jnp.max(jnp.where(onehot, -jnp.inf, logits), axis=-1)


def cw_margin(logits: jax.Array, labels: jax.Array, kappa: float = float("inf")) -> jax.Array:
    """Per-example CW margin ``min(max_{j != y} z_j - z_y, kappa)``; shape ``[N]``.

    This is the quantity an untargeted attacker maximizes: it is positive exactly when the point is
    misclassified. ``kappa`` is the confidence cap of Carlini & Wagner (``-kappa`` in their f_6
    sign convention); the default leaves it uncapped, as in CW-inf (PGD on the margin loss).
    For a targeted attack with target ``t`` maximize ``-cw_margin(logits, t)``. One-logit binary
    logits ``[N, 1]`` are read as ``[0, z]`` (margin ``-z`` for label 1, ``z`` for label 0).
    """
    logits = two_logits(logits)
    labels = jnp.asarray(labels).astype(jnp.int32)
    z_y = jnp.take_along_axis(logits, labels[:, None], axis=-1)[:, 0]
    return jnp.minimum(_max_other(logits, labels) - z_y, kappa)
