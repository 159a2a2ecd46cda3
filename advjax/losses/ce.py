"""Cross-entropy on logits with integer labels, per example."""
import jax
import jax.numpy as jnp


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Per-example cross-entropy ``logsumexp(z) - z_y``; shape ``[N]``.

    Args:
      logits: ``[N, K]`` unnormalized scores.
      labels: ``[N]`` integer class indices.
    """
    logits = jnp.asarray(logits)
    lse = jax.nn.logsumexp(logits, axis=-1)
    z_y = jnp.take_along_axis(logits, jnp.asarray(labels)[:, None].astype(jnp.int32), axis=-1)[:, 0]
    return lse - z_y
