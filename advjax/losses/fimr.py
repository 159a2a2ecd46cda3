"""FIMR's regularizer (Shen et al., "Defending against adversarial attacks by suppressing the largest
eigenvalue of Fisher information matrix", as approximated in Schwartz & Ditzler eq. 2):

    tr F ~ sum_j 1 / p_j,      L = (1 - zeta) CE + zeta * sum_j 1 / p_j

``fisher_trace(logits)`` returns the per-example value [N]. Numerically safe: 1/p_j is computed as
exp(-log_softmax_j) with log p_j floored at ``-max_log`` (default 50, i.e. 1/p_j <= e^50 ~ 5e21), so a
class with probability underflowing to 0 gives a large finite value and a finite gradient instead of
inf / NaN. (The released code, dmschwar/robust-ldr, replaces p_j = 0 by 1e16 and so gives such a class
the tiny penalty 1e-16 -- the opposite of the equation; we do not copy that.)

``mode="reference"``: the code's batch reduction -- the penalty summed over the batch and the classes
(``K.sum``) instead of averaged over the batch; :func:`fimr_penalty` applies the mode.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ["fisher_trace", "fimr_penalty"]


def fisher_trace(logits, max_log: float = 50.0):
    """sum_j 1 / p_j per example, p = softmax(logits); shape [N]."""
    logits = jnp.asarray(logits, jnp.float32)
    if logits.ndim != 2:
        raise ValueError(f"fisher_trace: logits must be [N, classes], got shape {logits.shape}")
    logp = jax.nn.log_softmax(logits, axis=-1)
    return jnp.sum(jnp.exp(-jnp.maximum(logp, -max_log)), axis=-1)


def fimr_penalty(logits, mode: str = "paper"):
    """The batch's FIM penalty: mean over the batch (paper) or sum over batch (reference)."""
    v = fisher_trace(logits)
    if mode == "paper":
        return jnp.mean(v)
    if mode == "reference":
        return jnp.sum(v)
    raise ValueError(f"fimr_penalty: unknown mode {mode!r}; use 'paper' or 'reference'")
