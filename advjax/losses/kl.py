"""The TRADES Kullback-Leibler term (Zhang et al. 2019, Eq. 5)."""
import jax
import jax.numpy as jnp


def trades_kl(logits_adv: jax.Array, logits_clean: jax.Array) -> jax.Array:
    """Per-example ``KL(p_clean || p_adv)``; shape ``[N]``.

    ``p = softmax(logits)``. This is PyTorch's ``KLDivLoss(log_softmax(logits_adv),
    softmax(logits_clean))`` summed over classes, as in the TRADES code. The TRADES attack maximizes
    it over x_adv with the clean prediction held fixed; the TRADES loss multiplies it by beta.
    """
    logp_adv = jax.nn.log_softmax(jnp.asarray(logits_adv), axis=-1)
    logp_clean = jax.nn.log_softmax(jnp.asarray(logits_clean), axis=-1)
    p_clean = jnp.exp(logp_clean)
    return jnp.sum(p_clean * (logp_clean - logp_adv), axis=-1)
