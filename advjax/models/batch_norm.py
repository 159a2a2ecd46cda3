"""Batch normalization whose batch statistics are reduced with matrix-vector products.

A drop-in for ``flax.linen.BatchNorm`` over the last (channel) axis: the same variables
(``params``: ``scale``, ``bias``; ``batch_stats``: ``mean``, ``var``), the same defaults as
:func:`advjax.models.ops.batch_norm` (momentum 0.9, epsilon 1e-5), flax's statistics (float32,
``var = E[x^2] - E[x]^2`` clipped at 0, running averages updated only outside ``init``), so
checkpoints, weight copies and numbers carry over (up to float32 summation order).

Why: a training-mode batch norm needs per-channel sums over N x H x W -- two in the forward pass
(sum x, sum x^2), two in the backward pass (sum dy, sum dy * x) -- and XLA:CPU runs such column
reductions of an NHWC tensor at ~2 GB/s when its YNNPACK reduce fusion is off (which the
benchmarks and CLI do, as it makes XLA:CPU's convolutions slower): ResNet-18's first-stage batch
norm at batch 64 (17 MB) took 95 ms forward + backward, 15 ms with this module. Each sum is
written here as ``ones @ X`` (GEMVs, memory-bound at full speed; :func:`_sum_rows`) inside a
``jax.custom_vjp`` whose backward pass is the textbook formula (Ioffe & Szegedy 2015, Sec. 3):

    dx = scale * r / R * (R * dy - sum(dy) - xhat * sum(dy * xhat)),
    dscale = sum(dy * xhat),  dbias = sum(dy),  xhat = (x - mean) * r,  r = (var + eps)^-1/2,

with R = N * H * W (plus the terms of any cotangent of the returned batch mean and variance).
Measured in benchmarks/README.md (session 6).

Only programs lowered for the CPU use this custom VJP. For CUDA, ROCm and TPU (decided at lowering
by :func:`advjax.models.platform.per_platform`, not by ``jax.default_backend()`` at trace time) the
training-mode statistics are flax's own code, :func:`batch_norm_reference` (``jnp.mean`` reductions,
which are fast there, differentiated by JAX), with the same numbers.

The backward pass is ordinary JAX code, so second-order derivatives (FGSM-GA's GradAlign through a
training-mode model) work. A custom VJP has no forward-mode rule: under ``jax.jvp`` / ``jax.jacfwd``
(tangents seen at trace time) the layer takes :func:`batch_norm_reference` instead, on the CPU too
(:func:`advjax.models.platform.per_platform`); for a function jitted outside the ``jvp`` trace inside
:func:`advjax.models.platform.portable_ops` or build the model with ``fast_conv=False``.
"""
from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from advjax.models.platform import per_platform

__all__ = ["BatchNorm", "batch_norm_train", "batch_norm_reference"]


def _sum_rows(a):
    """Column sums of a 2-D float32 array as ``k`` GEMVs over ``k`` row blocks (one batched dot)
    and a sum of the ``k`` partial sums (the CPU path; other platforms use
    :func:`batch_norm_reference`).

    One GEMV over all N*H*W rows accumulates sequentially (relative error 6e-6 at 65536 rows,
    against 1e-6 for XLA's reduction); 32 blocks bring it to 4e-7 at the same speed."""
    r, c = a.shape
    k = next(d for d in (32, 16, 8, 4, 2, 1) if r % d == 0)
    partial = jnp.einsum("kr,krc->kc", jnp.ones((k, r // k), a.dtype), a.reshape(k, r // k, c),
                         preferred_element_type=jnp.float32)
    return partial.sum(0)


def _stats(x):
    c = x.shape[-1]
    xf = x.reshape(-1, c).astype(jnp.float32)
    r = xf.shape[0]
    mean = _sum_rows(xf) / r
    mean2 = _sum_rows(xf * xf) / r
    return mean, jnp.maximum(0.0, mean2 - mean * mean)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def batch_norm_train(x, scale, bias, epsilon: float):
    """Training-mode batch norm over the last axis of ``x``: ``(y, batch mean, batch variance)``.

    ``scale``, ``bias``: float32 vectors of the channel count; ``y`` is float32."""
    return _bn_fwd(x, scale, bias, epsilon)[0]


def _bn_fwd(x, scale, bias, epsilon):
    mean, var = _stats(x)
    r = jax.lax.rsqrt(var + epsilon)
    y = (x.astype(jnp.float32) - mean) * (r * scale) + bias
    return (y, mean, var), (x, scale, mean, r)


def _bn_bwd(epsilon, res, cts):
    x, scale, mean, r = res
    dy, d_mean, d_var = cts
    c = x.shape[-1]
    xf = x.astype(jnp.float32)
    n = xf.size // c
    s_dy = _sum_rows(dy.reshape(-1, c))
    s_dyx = _sum_rows((dy * xf).reshape(-1, c))
    d_bias = s_dy
    d_scale = r * (s_dyx - mean * s_dy)  # = sum(dy * xhat)
    centered = xf - mean
    xhat = centered * r
    dx = (scale * r) * (dy - s_dy / n - xhat * (d_scale / n)) + d_mean / n + d_var * (2.0 / n) * centered
    return dx.astype(x.dtype), d_scale, d_bias


batch_norm_train.defvjp(_bn_fwd, _bn_bwd)


def batch_norm_reference(x, scale, bias, epsilon: float):
    """:func:`batch_norm_train` as ``flax.linen.BatchNorm`` computes it (``use_fast_variance``):
    float32 ``mean(x)``, ``var = max(0, mean(x^2) - mean(x)^2)``, ``(x - mean) * rsqrt(var + eps) *
    scale + bias``, differentiated by JAX. The off-CPU training path of :class:`BatchNorm`."""
    xf = x.astype(jnp.float32)
    axes = tuple(range(x.ndim - 1))
    mean = jnp.mean(xf, axes)
    mean2 = jnp.mean(xf * xf, axes)
    var = jnp.maximum(0.0, mean2 - mean * mean)
    y = (xf - mean) * (jax.lax.rsqrt(var + epsilon) * scale) + bias
    return y, mean, var


class BatchNorm(nn.Module):
    """``nn.BatchNorm`` over the channel (last) axis with :func:`batch_norm_train` in training mode
    in programs lowered for the CPU, :func:`batch_norm_reference` for other platforms.

    Attributes (flax's meaning): ``use_running_average`` (eval mode), ``momentum``, ``epsilon``,
    ``dtype`` (of the output; default: promoted from the input and the float32 parameters),
    ``use_bias``, ``use_scale``.
    """

    use_running_average: bool = False
    momentum: float = 0.9
    epsilon: float = 1e-5
    dtype: Any = None
    use_bias: bool = True
    use_scale: bool = True

    @nn.compact
    def __call__(self, x):
        c = x.shape[-1]
        ra_mean = self.variable("batch_stats", "mean", lambda s: jnp.zeros(s, jnp.float32), (c,))
        ra_var = self.variable("batch_stats", "var", lambda s: jnp.ones(s, jnp.float32), (c,))
        scale = self.param("scale", nn.initializers.ones, (c,), jnp.float32) if self.use_scale else jnp.ones(
            (c,), jnp.float32)
        bias = self.param("bias", nn.initializers.zeros, (c,), jnp.float32) if self.use_bias else jnp.zeros(
            (c,), jnp.float32)
        out_dtype = self.dtype or jnp.result_type(x.dtype, jnp.float32)
        if self.use_running_average:
            mul = jax.lax.rsqrt(ra_var.value + self.epsilon) * scale
            y = (x - ra_mean.value) * mul + bias
            return y.astype(out_dtype)
        eps = float(self.epsilon)
        y, mean, var = per_platform(x, scale, bias, cpu=lambda *a: batch_norm_train(*a, eps),
                                    default=lambda *a: batch_norm_reference(*a, eps))
        if not self.is_initializing():
            ra_mean.value = self.momentum * ra_mean.value + (1 - self.momentum) * mean
            ra_var.value = self.momentum * ra_var.value + (1 - self.momentum) * var
        return y.astype(out_dtype)
