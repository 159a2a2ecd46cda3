"""ResNets for 32x32 inputs (He et al., "Deep Residual Learning for Image Recognition", 2016).

* ResNet-18 with the CIFAR stem (3x3 conv, stride 1, no max pool), basic blocks [2, 2, 2, 2] with
  64-128-256-512 channels and 1x1-conv + BN projection shortcuts (the layout used by the adversarial
  training literature; 11.17M parameters for 10 classes).
* ResNet-20 / ResNet-56 of He et al. Sec. 4.2: 16-32-64 channels, n = (depth - 2) / 6 basic blocks
  per stage and the parameter-free "option A" shortcut (stride-2 subsampling + zero channel
  padding); 0.27M / 0.85M parameters.

Layer names: ``conv1``, ``bn1``, ``act1`` (stem), ``layer{s}/block{j}/{conv1,bn1,act1,conv2,bn2,
shortcut_conv,shortcut_bn,act2}``, ``fc``. Inside a block the shortcut runs after ``bn2``.
Perturbation points (layerwise AT, :func:`advjax.models.ops.perturbation_point`; the identity
unless a ``"perturbations"`` collection is passed): ``g_bn1`` (stem), ``layer{s}/block{j}/g_bn1``,
``.../g_bn2`` (after each BN of the main path, before the shortcut sum) and ``.../g_sum`` (the sum,
before ``act2``).
"""
from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from advjax.models import ops
from advjax.models.activations import Activation, get_activation

conv_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")  # He et al. init


class BasicBlock(nn.Module):
    """Two 3x3 conv + BN; ReLU (the chosen activation) after the first and after the sum."""

    width: int
    stride: int
    shortcut: str  # "conv" (1x1 conv + BN projection) or "pad" (option A)
    activation: str
    dtype: Any
    fast_conv: bool

    @nn.compact
    def __call__(self, x, train: bool):
        def conv(features, k, stride, name):
            pad = (k - 1) // 2
            return ops.Conv(features, k, strides=stride, padding=((pad, pad), (pad, pad)),
                            use_bias=False, kernel_init=conv_init, dtype=self.dtype,
                            fast=self.fast_conv, name=name)

        in_width = x.shape[-1]
        out = conv(self.width, 3, self.stride, "conv1")(x)
        out = ops.batch_norm(train, self.dtype, name="bn1", fast=self.fast_conv)(out)
        out = ops.perturbation_point(self, "g_bn1", out)  # layerwise-AT points: identity by default
        out = Activation(self.activation, name="act1")(out)
        out = conv(self.width, 3, 1, "conv2")(out)
        out = ops.batch_norm(train, self.dtype, name="bn2", fast=self.fast_conv)(out)
        out = ops.perturbation_point(self, "g_bn2", out)
        if self.stride != 1 or in_width != self.width:
            if self.shortcut == "conv":
                sc = conv(self.width, 1, self.stride, "shortcut_conv")(x)
                sc = ops.batch_norm(train, self.dtype, name="shortcut_bn", fast=self.fast_conv)(sc)
            else:  # option A: subsample, zero-pad the new channels on both sides
                sc = x[..., :: self.stride, :: self.stride, :]
                extra = self.width - in_width
                pads = [(0, 0)] * (sc.ndim - 1) + [(extra // 2, extra - extra // 2)]
                sc = jnp.pad(sc, pads)
        else:
            sc = x
        return Activation(self.activation, name="act2")(ops.perturbation_point(self, "g_sum", out + sc))


class _Stage(nn.Module):
    num_blocks: int
    width: int
    stride: int
    shortcut: str
    activation: str
    dtype: Any
    fast_conv: bool

    @nn.compact
    def __call__(self, x, train: bool):
        for j in range(self.num_blocks):
            x = BasicBlock(self.width, self.stride if j == 0 else 1, self.shortcut,
                           self.activation, self.dtype, self.fast_conv, name=f"block{j}")(x, train)
        return x


class ResNet(nn.Module):
    """CIFAR ResNet with basic blocks; see :func:`resnet18`, :func:`resnet20`, :func:`resnet56`."""

    stage_sizes: Sequence[int] = (2, 2, 2, 2)
    widths: Sequence[int] = (64, 128, 256, 512)
    shortcut: str = "conv"
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
        if self.shortcut not in ("conv", "pad"):
            raise ValueError(f"ResNet shortcut must be 'conv' or 'pad', got {self.shortcut!r}")
        if len(self.stage_sizes) != len(self.widths):
            raise ValueError("ResNet: stage_sizes and widths must have the same length")
        x = ops.Normalize(self.mean, self.std, self.dtype)(x)
        x = ops.Conv(self.widths[0], 3, padding=((1, 1), (1, 1)), use_bias=False,
                     kernel_init=conv_init, dtype=self.dtype, fast=self.fast_conv, name="conv1")(x)
        x = ops.batch_norm(train, self.dtype, name="bn1", fast=self.fast_conv)(x)
        x = ops.perturbation_point(self, "g_bn1", x)
        x = Activation(self.activation, name="act1")(x)
        for s, (n, width) in enumerate(zip(self.stage_sizes, self.widths), start=1):
            x = _Stage(n, width, 1 if s == 1 else 2, self.shortcut, self.activation, self.dtype,
                       self.fast_conv, name=f"layer{s}")(x, train)
        x = ops.global_avg_pool(x)
        x = nn.Dense(self.num_classes, dtype=self.dtype, name="fc")(x)
        return ops.as_logits(x)


def resnet18(**kw) -> ResNet:
    """ResNet-18, CIFAR stem (11.17M parameters for 10 classes); ``widths`` narrows it for CPU-scale
    runs (default 64-128-256-512)."""
    widths = tuple(kw.pop("widths", (64, 128, 256, 512)))
    return ResNet(stage_sizes=(2, 2, 2, 2), widths=widths, shortcut="conv", **kw)


def cifar_resnet(depth: int, **kw) -> ResNet:
    """He et al.'s CIFAR ResNet-``depth`` (depth = 6n + 2), option-A shortcuts."""
    if depth < 8 or (depth - 2) % 6:
        raise ValueError(f"CIFAR ResNet depth must be 6n + 2 (20, 32, 44, 56, 110), got {depth}")
    n = (depth - 2) // 6
    widths = tuple(kw.pop("widths", (16, 32, 64)))  # narrower variants for CPU-scale runs
    return ResNet(stage_sizes=(n, n, n), widths=widths, shortcut="pad", **kw)


def resnet20(**kw) -> ResNet:
    """ResNet-20 (0.27M parameters)."""
    return cifar_resnet(20, **kw)


def resnet56(**kw) -> ResNet:
    """ResNet-56 (0.85M parameters)."""
    return cifar_resnet(56, **kw)
