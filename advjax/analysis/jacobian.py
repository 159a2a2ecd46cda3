"""Singular-value spectrum of an encoder's Jacobian (Sankaranarayanan et al. 2018, §3.4, Fig. 2;
the analysis of Rifai et al.'s contractive auto-encoders).

For each test sample x the Jacobian J_f(x) of the encoder f (input -> last hidden layer) is
computed explicitly (``jax.vmap`` over ``jax.jacrev``, a batch of samples at a time), its singular
values (the square roots of the eigenvalues of the smaller Gram matrix J J^T or J^T J, float32
with full-precision matmuls) sorted in decreasing order, and the top ``k`` averaged over the
samples. By the appendix's bound ||J_f(x)^T dx|| <= sqrt(sum sigma_i^2) ||dx||, a spectrum that
decays faster means a mapping less sensitive to local perturbations.
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["jacobian_singular_values", "mean_spectrum", "encoder_fn"]


def jacobian_singular_values(f: Callable, x, *, top_k: int = 50, batch_size: int = 64) -> np.ndarray:
    """``[N, top_k]`` largest singular values of the Jacobian of ``f`` (one example -> features,
    any shapes; flattened to a matrix out_dim x in_dim) at each of the ``N`` examples ``x``,
    computed ``batch_size`` examples at a time. ``top_k`` larger than min(out_dim, in_dim) is
    padded with zeros (those singular values are 0)."""
    if not isinstance(top_k, int) or top_k < 1:
        raise ValueError(f"jacobian_singular_values: top_k must be an integer >= 1, got {top_k!r}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"jacobian_singular_values: batch_size must be an integer >= 1, got {batch_size!r}")
    x = np.asarray(x, np.float32)
    if x.ndim < 1 or len(x) == 0:
        raise ValueError(f"jacobian_singular_values: x must be a non-empty batch, got shape {x.shape}")

    @jax.jit
    def svals(xb):
        def one(xi):
            jac = jax.jacrev(f)(xi)
            out_size = int(np.prod(jax.eval_shape(f, xi).shape))
            m = jac.reshape(out_size, -1)
            # singular values = sqrt(eigenvalues of the smaller Gram matrix), descending: ~10x
            # cheaper than an SVD of the 512 x 1024 Jacobian, and exact enough for the leading ones
            hi = jax.lax.Precision.HIGHEST
            g = jnp.matmul(m, m.T, precision=hi) if m.shape[0] <= m.shape[1] else jnp.matmul(m.T, m, precision=hi)
            ev = jnp.linalg.eigvalsh(jnp.asarray(g, jnp.float32))[::-1]
            return jnp.sqrt(jnp.clip(ev, 0.0, None))
        return jax.vmap(one)(xb)

    outs = []
    n = len(x)
    for s in range(0, n, batch_size):
        xb = x[s:s + batch_size]
        pad = batch_size - len(xb)
        if pad and s > 0:  # one compiled shape: pad the last batch, drop the padding
            xb = np.concatenate([xb, np.repeat(xb[-1:], pad, axis=0)])
        sv = np.asarray(svals(xb))[: min(batch_size, n - s)]
        outs.append(sv)
    sv = np.concatenate(outs)
    if sv.shape[1] < top_k:
        sv = np.concatenate([sv, np.zeros((sv.shape[0], top_k - sv.shape[1]), sv.dtype)], axis=1)
    return sv[:, :top_k]


def mean_spectrum(f: Callable, x, *, top_k: int = 50, batch_size: int = 64) -> np.ndarray:
    """Fig. 2: the mean over the examples of the top-``top_k`` singular values, ``[top_k]``."""
    return jacobian_singular_values(f, x, top_k=top_k, batch_size=batch_size).mean(axis=0)


def encoder_fn(model, variables, layer: str | None = None) -> Callable:
    """``f(x_one) -> features`` for ONE example: the output of the activation ``layer`` (default:
    the last activation, i.e. the encoder up to the last hidden layer), from
    ``advjax.layers.capture(kind="activation")`` in eval mode."""
    from advjax import layers

    def f(xi):
        _, feats = layers.capture(model, variables, xi[None], kind="activation")
        name = layer if layer is not None else list(feats)[-1]
        if name not in feats:
            raise ValueError(f"encoder_fn: no activation {name!r}; known: {list(feats)}")
        return feats[name][0]

    return f
