"""The FGSM-SDI initialization generator g(x, S_x; theta) (Jia et al., IEEE TIP 2022, eq. 24-25).

The generator takes the 6-channel concatenation of a clean image x (pixels in [0, 1]) and the sign
of the target's input gradient S_x = sign(grad_x L(f(x; w), y)) (eq. 24) and returns a map in
[-1, 1] of the image's shape; FGSM-SDI scales it by eps to get the learnable initialization
eta_g = eps * g(x, S_x; theta) (eq. 25).

Two architectures (field ``arch``):

- ``"paper"`` (default, as the thesis / paper describe it): conv3x3(64) + BN + ReLU, one residual
  block of 64 channels (conv3x3 + BN + ReLU + conv3x3 + BN, identity shortcut, ReLU after the
  sum), conv3x3(3) + BN, tanh.
- ``"reference"`` (the released code's ``One_Layer_Attacker``, jiaxiaojunQAQ/FGSM-SDI
  attacker.py): conv3x3(64, no bias) + BN(eps=1e-3) + ReLU; a pre-activation block
  (BN without scale/bias + PReLU + conv3x3 + BN without scale/bias + PReLU + conv3x3, identity
  shortcut, convs with bias); BN without scale/bias; conv3x3(3) with bias and *no* BN after it;
  tanh. (The released module also holds an unused ``scale_last`` parameter; it is omitted.)
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from advjax.models.batch_norm import BatchNorm
from advjax.models.platform import per_platform
from advjax.native import onednn

__all__ = ["SDIGenerator"]


_DN = ("NHWC", "HWIO", "NHWC")


def _conv_same(x, w):
    return jax.lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=_DN)


@jax.custom_vjp
def conv3x3_same(x, w):
    """3x3, stride 1, SAME convolution whose backward pass uses no transposed-layout convolution.

    The input gradient is a plain SAME convolution with the flipped, in/out-swapped kernel; the
    weight gradient is 9 matmuls (one per kernel tap) instead of a convolution. Same numbers as
    ``lax.conv_general_dilated``; but inside a ``lax.cond`` branch (where FGSM-SDI updates the
    generator) XLA:CPU does not canonicalize the gradient convolutions' layouts and falls back to
    its unoptimized element-wise convolution (DESIGN.md, "Measured on these machines").
    A CPU lever only: the generator's layers use it in programs lowered for the CPU, and
    ``lax.conv_general_dilated`` with JAX's own rules elsewhere (:func:`_conv_general_dilated`).
    """
    return _conv_same(x, w)


def _conv3x3_fwd(x, w):
    return _conv_same(x, w), (x, w)


def _conv3x3_bwd(res, g):
    x, w = res
    dx = _conv_same(g, jnp.flip(w, (0, 1)).transpose(0, 1, 3, 2))
    h, wd = x.shape[1], x.shape[2]
    xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    g2 = g.reshape(-1, g.shape[-1])
    taps = [[jnp.dot(xp[:, i:i + h, j:j + wd, :].reshape(-1, x.shape[-1]).T, g2,
                     preferred_element_type=jnp.float32).astype(w.dtype)
             for j in range(3)] for i in range(3)]
    dw = jnp.stack([jnp.stack(row) for row in taps])
    return dx, dw


conv3x3_same.defvjp(_conv3x3_fwd, _conv3x3_bwd)


def _is_same_3x3_padding(padding) -> bool:
    """True for the padding of a 3x3 SAME conv: flax passes the string "SAME" through unchanged."""
    if isinstance(padding, str):
        return padding.upper() == "SAME"
    return [tuple(p) for p in padding] == [(1, 1), (1, 1)]


def _conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None,
                          dimension_numbers=None, feature_group_count=1, precision=None, **kw):
    """``conv_general_dilated`` for flax's nn.Conv, routed (for a 3x3 stride-1 SAME conv) to oneDNN
    or :func:`conv3x3_same` in programs lowered for the CPU; ``lax.conv_general_dilated`` itself
    for other platforms (cuDNN / TPU convolutions and JAX's derivative rules, chosen at lowering by
    :func:`advjax.models.platform.per_platform`) and for every other geometry."""

    def portable(a, b):
        return jax.lax.conv_general_dilated(a, b, window_strides, padding, lhs_dilation, rhs_dilation,
                                            dimension_numbers, feature_group_count, precision=precision, **kw)

    simple = (rhs.shape[:2] == (3, 3) and tuple(window_strides) == (1, 1) and feature_group_count == 1
              and (lhs_dilation is None or tuple(lhs_dilation) == (1, 1))
              and (rhs_dilation is None or tuple(rhs_dilation) == (1, 1))
              and _is_same_3x3_padding(padding))
    if not simple:
        return portable(lhs, rhs)
    if lhs.dtype == rhs.dtype == jnp.float32 and onednn.enabled("cpu"):
        # oneDNN custom calls have no layout problem inside lax.cond, and its kernel gradient
        # beats the 9 matmuls (advjax/native/onednn.py)
        cpu = lambda a, b: onednn.conv(a, b, (1, 1), ((1, 1), (1, 1)))  # noqa: E731
    else:
        cpu = conv3x3_same
    return per_platform(lhs, rhs, cpu=cpu, default=portable)


class _PReLU(nn.Module):
    """PReLU with one learnable slope (PyTorch's default nn.PReLU(): a single 0.25)."""

    @nn.compact
    def __call__(self, x):
        a = self.param("alpha", lambda _k: jnp.full((), 0.25, jnp.float32))
        return jnp.where(x >= 0, x, a.astype(x.dtype) * x)


class SDIGenerator(nn.Module):
    """g(x, S_x; theta) -> [-1, 1]^{H x W x C} (FGSM-SDI eq. 24-25; multiply by eps outside).

    Attributes:
      features: width of the hidden layers (64 in the paper).
      out_channels: channels of the output (the image's channels; 3 for CIFAR-10). ``None``
        takes the channels of ``x``.
      arch: ``"paper"`` or ``"reference"`` (see the module docstring).
      dtype: compute dtype.
      fast_conv: convolutions through oneDNN when available, else :func:`conv3x3_same` (its
        backward pass avoids the convolutions XLA:CPU runs unoptimized inside ``lax.cond``
        bodies, where FGSM-SDI updates the generator), and :class:`advjax.models.batch_norm.BatchNorm`;
        ``False`` gives the stock ``nn.Conv`` and ``nn.BatchNorm`` (needed for forward-mode autodiff).
    """

    features: int = 64
    out_channels: int | None = None
    arch: str = "paper"
    dtype: Any = jnp.float32
    fast_conv: bool = True

    @nn.compact
    def __call__(self, x, s, train: bool = False):
        """x: [N, H, W, C] clean images; s: [N, H, W, C] the sign of grad_x L; returns [N, H, W, C'].

        ``train=True`` uses batch statistics in BN and needs ``mutable=["batch_stats"]``.
        """
        if self.arch not in ("paper", "reference"):
            raise ValueError(f"SDIGenerator: unknown arch {self.arch!r}; use 'paper' or 'reference'")
        if x.ndim != 4 or s.shape != x.shape:
            raise ValueError(
                f"SDIGenerator expects x and s of the same NHWC shape, got {x.shape} and {s.shape}")
        out_c = self.out_channels or x.shape[-1]
        h = jnp.concatenate([x, s], axis=-1).astype(self.dtype)
        f = self.features
        extra = {"conv_general_dilated": _conv_general_dilated} if self.fast_conv else {}
        conv = lambda c, bias, name: nn.Conv(c, (3, 3), padding="SAME", use_bias=bias,
                                             dtype=self.dtype, name=name, **extra)
        bn_cls = BatchNorm if self.fast_conv else nn.BatchNorm
        norm = lambda name, affine=True, eps=1e-5: bn_cls(
            use_running_average=not train, momentum=0.9, epsilon=eps, use_scale=affine,
            use_bias=affine, dtype=self.dtype, name=name)
        if self.arch == "paper":
            h = nn.relu(norm("bn_in")(conv(f, False, "conv_in")(h)))
            r = nn.relu(norm("res_bn1")(conv(f, False, "res_conv1")(h)))
            r = norm("res_bn2")(conv(f, False, "res_conv2")(r))
            h = nn.relu(h + r)
            h = norm("bn_out")(conv(out_c, False, "conv_out")(h))
        else:
            h = nn.relu(norm("bn_in", eps=1e-3)(conv(f, False, "conv_in")(h)))
            r = _PReLU(name="res_act1")(norm("res_bn1", affine=False)(h))
            r = conv(f, True, "res_conv1")(r)
            r = _PReLU(name="res_act2")(norm("res_bn2", affine=False)(r))
            r = conv(f, True, "res_conv2")(r)
            h = h + r
            h = norm("bn_out", affine=False)(h)
            h = conv(out_c, True, "conv_out")(h)
        return jnp.tanh(h)
