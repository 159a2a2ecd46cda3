"""Pre-activation ResNet-18 (He et al., "Identity Mappings in Deep Residual Networks", 2016) in the
CIFAR form used by fast adversarial training and FGSM-SDI (Wong et al. 2020; Jia et al. 2022):
3x3 stem conv (no BN after it), basic pre-activation blocks [2, 2, 2, 2] with 64-128-256-512
channels, 1x1-conv projection shortcuts (no BN) taken from the pre-activated input, and a final
BN + activation before global average pooling and the classifier. 11.17M parameters.

Layer names: ``conv1``; ``layer{s}/block{j}/{bn1, act1, shortcut_conv, conv1, bn2, act2, conv2}``
(in that execution order: the shortcut conv runs before ``conv1``); ``bn``, ``act``, ``fc``.
Perturbation points (layerwise AT, :func:`advjax.models.ops.perturbation_point`; the identity
unless a ``"perturbations"`` collection is passed): ``layer{s}/block{j}/g_bn1``, ``.../g_bn2`` and
``g_bn`` (after each batch norm).
"""
from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from advjax.models import ops
from advjax.models.activations import Activation, get_activation

conv_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


def _conv3(features, stride, dtype, fast, name, k=3):
    pad = (k - 1) // 2
    return ops.Conv(features, k, strides=stride, padding=((pad, pad), (pad, pad)), use_bias=False,
                    kernel_init=conv_init, dtype=dtype, fast=fast, name=name)


class PreActBlock(nn.Module):
    """BN-act-conv-BN-act-conv with identity or 1x1-conv shortcut on the pre-activated input.

    ``shortcut_first`` runs the shortcut conv before ``conv1`` (PreActResNet ports) or after
    ``conv2`` (the WideResNet code of TRADES/AWP); the numbers are the same, only the capture
    order differs.
    """

    width: int
    stride: int
    activation: str
    dtype: Any
    fast_conv: bool
    shortcut_first: bool = True

    @nn.compact
    def __call__(self, x, train: bool):
        in_width = x.shape[-1]
        project = self.stride != 1 or in_width != self.width
        out = ops.batch_norm(train, self.dtype, name="bn1", fast=self.fast_conv)(x)
        out = ops.perturbation_point(self, "g_bn1", out)  # layerwise-AT points: identity by default
        out = Activation(self.activation, name="act1")(out)
        shortcut_conv = _conv3(self.width, self.stride, self.dtype, self.fast_conv,
                               "shortcut_conv", k=1) if project else None
        sc = None
        if project and self.shortcut_first:
            sc = shortcut_conv(out)
        h = _conv3(self.width, self.stride, self.dtype, self.fast_conv, "conv1")(out)
        h = ops.batch_norm(train, self.dtype, name="bn2", fast=self.fast_conv)(h)
        h = ops.perturbation_point(self, "g_bn2", h)
        h = Activation(self.activation, name="act2")(h)
        h = _conv3(self.width, 1, self.dtype, self.fast_conv, "conv2")(h)
        if project and not self.shortcut_first:
            sc = shortcut_conv(out)
        return h + (sc if project else x)


class _PreActStage(nn.Module):
    num_blocks: int
    width: int
    stride: int
    activation: str
    dtype: Any
    fast_conv: bool
    shortcut_first: bool = True

    @nn.compact
    def __call__(self, x, train: bool):
        for j in range(self.num_blocks):
            x = PreActBlock(self.width, self.stride if j == 0 else 1, self.activation, self.dtype,
                            self.fast_conv, self.shortcut_first, name=f"block{j}")(x, train)
        return x


class PreActResNet(nn.Module):
    """CIFAR pre-activation ResNet; :func:`preact_resnet18` is the 18-layer one."""

    stage_sizes: Sequence[int] = (2, 2, 2, 2)
    widths: Sequence[int] = (64, 128, 256, 512)
    num_classes: int = 10
    activation: str = "relu"
    dtype: Any = jnp.float32
    input_shape: Sequence[int] = (32, 32, 3)
    mean: Sequence[float] | None = ops.CIFAR10_MEAN
    std: Sequence[float] | None = ops.CIFAR10_STD
    fast_conv: bool = True

    @nn.compact
    def __call__(self, x, train: bool = False):
        ops.check_input(x, self.input_shape, name=type(self).__name__)
        get_activation(self.activation)
        x = ops.Normalize(self.mean, self.std, self.dtype)(x)
        x = _conv3(self.widths[0], 1, self.dtype, self.fast_conv, "conv1")(x)
        for s, (n, width) in enumerate(zip(self.stage_sizes, self.widths), start=1):
            x = _PreActStage(n, width, 1 if s == 1 else 2, self.activation, self.dtype,
                             self.fast_conv, name=f"layer{s}")(x, train)
        x = ops.batch_norm(train, self.dtype, name="bn", fast=self.fast_conv)(x)
        x = ops.perturbation_point(self, "g_bn", x)
        x = Activation(self.activation, name="act")(x)
        x = ops.global_avg_pool(x)
        x = nn.Dense(self.num_classes, dtype=self.dtype, name="fc")(x)
        return ops.as_logits(x)


def preact_resnet18(**kw) -> PreActResNet:
    """PreActResNet-18 (11.17M parameters for 10 classes)."""
    return PreActResNet(stage_sizes=(2, 2, 2, 2), widths=(64, 128, 256, 512), **kw)
