"""Difference of Logits Ratio losses (Croce & Hein 2020, "Reliable evaluation ...", Eqs. 5 and 6).

Both follow the official fra31/auto-attack code, including the 1e-12 in the denominator.
"""
import jax
import jax.numpy as jnp

from advjax.losses.ce import two_logits


def dlr(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Untargeted DLR, Eq. 5: ``-(z_y - max_{i != y} z_i) / (z_pi1 - z_pi3 + 1e-12)``; shape ``[N]``.

    ``z_pi1 >= z_pi2 >= ...`` are the sorted logits; needs at least 3 classes. The attacker
    maximizes it; it is positive exactly when the point is misclassified.
    """
    logits = two_logits(logits)
    if logits.shape[-1] < 3:
        raise ValueError(f"dlr needs at least 3 classes, got logits of shape {logits.shape}: its denominator "
                         "z_pi1 - z_pi3 does not exist for a binary (one- or two-logit) model; use CE or the "
                         "CW margin (apgd-ce, cw-inf) instead")
    labels = jnp.asarray(labels).astype(jnp.int32)
    z_sorted = jnp.sort(logits, axis=-1)
    z_y = jnp.take_along_axis(logits, labels[:, None], axis=-1)[:, 0]
    top_is_y = jnp.argmax(logits, axis=-1) == labels
    max_other = jnp.where(top_is_y, z_sorted[:, -2], z_sorted[:, -1])
    return -(z_y - max_other) / (z_sorted[:, -1] - z_sorted[:, -3] + 1e-12)


def dlr_targeted(logits: jax.Array, labels: jax.Array, targets: jax.Array) -> jax.Array:
    """Targeted DLR, Eq. 6: ``-(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2 + 1e-12)``; shape ``[N]``.

    ``labels`` are the true classes y, ``targets`` the target classes t; needs at least 4 classes.
    """
    logits = two_logits(logits)
    if logits.shape[-1] < 4:
        raise ValueError(f"dlr_targeted needs at least 4 classes, got logits of shape {logits.shape}"
                         + (" (a binary model: use CE or the CW margin instead)" if logits.shape[-1] == 2 else ""))
    labels = jnp.asarray(labels).astype(jnp.int32)
    targets = jnp.asarray(targets).astype(jnp.int32)
    z_sorted = jnp.sort(logits, axis=-1)
    z_y = jnp.take_along_axis(logits, labels[:, None], axis=-1)[:, 0]
    z_t = jnp.take_along_axis(logits, targets[:, None], axis=-1)[:, 0]
    return -(z_y - z_t) / (z_sorted[:, -1] - 0.5 * (z_sorted[:, -3] + z_sorted[:, -4]) + 1e-12)
