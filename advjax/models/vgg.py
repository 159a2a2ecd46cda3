"""VGG for 32x32 inputs (Simonyan & Zisserman 2015, CIFAR variant) and the HLDR paper's VGG.

CIFAR VGG-11/13/16/19: 3x3 convolutions (padding 1) in five stages separated by 2x2 max pooling,
optional batch norm after every conv, then a linear classifier on the 1x1x512 feature (the layout
of the widely used CIFAR ports, e.g. VGG-16 with BN has 14.7M parameters).

HLDR VGG (Schwartz & Ditzler, "Bolstering Adversarial Robustness with Latent Disparity
Regularization"): the VGG-16 conv layout (blocks of 2-2-3-3-3 convs with 64-128-256-512-512
channels), batch norm after every conv, ELU, then a dense 512 hidden layer (with the activation)
before the classifier.

Layer names: stage ``s`` (1..5), conv ``j`` (0..) are ``block{s}/conv{j}`` (``block{s}/bn{j}``,
``block{s}/act{j}``); hidden dense layers ``fc{i}``; the classifier ``fc``. Perturbation points
(layerwise AT, :func:`advjax.models.ops.perturbation_point`; the identity unless a
``"perturbations"`` collection is passed): ``block{s}/g_bn{j}`` after each batch norm
(``block{s}/g_conv{j}`` after each conv without BN).
"""
from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from advjax.models import ops
from advjax.models.activations import Activation, get_activation

VGG_CONFIGS: dict[str, tuple[tuple[int, ...], ...]] = {
    "vgg11": ((64,), (128,), (256, 256), (512, 512), (512, 512)),
    "vgg13": ((64, 64), (128, 128), (256, 256), (512, 512), (512, 512)),
    "vgg16": ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512)),
    "vgg19": (
        (64, 64),
        (128, 128),
        (256, 256, 256, 256),
        (512, 512, 512, 512),
        (512, 512, 512, 512),
    ),
}


class _VGGStage(nn.Module):
    widths: Sequence[int]
    batch_norm: bool
    activation: str
    dtype: Any
    fast_conv: bool

    @nn.compact
    def __call__(self, x, train: bool):
        for j, width in enumerate(self.widths):
            x = ops.Conv(
                width,
                3,
                padding=((1, 1), (1, 1)),
                use_bias=not self.batch_norm,
                dtype=self.dtype,
                fast=self.fast_conv,
                name=f"conv{j}",
            )(x)
            if self.batch_norm:
                x = ops.batch_norm(train, self.dtype, name=f"bn{j}", fast=self.fast_conv)(x)
            # layerwise-AT point (identity unless perturbations are passed; ops.perturbation_point)
            x = ops.perturbation_point(self, f"g_bn{j}" if self.batch_norm else f"g_conv{j}", x)
            x = Activation(self.activation, name=f"act{j}")(x)
        return ops.max_pool(x, 2)


class VGG(nn.Module):
    """CIFAR VGG; ``depth`` in {11, 13, 16, 19}; ``hidden`` dense widths before the classifier."""

    depth: int = 16
    batch_norm: bool = False
    num_classes: int = 10
    activation: str = "relu"
    dtype: Any = jnp.float32
    input_shape: Sequence[int] = (32, 32, 3)
    mean: Sequence[float] | None = ops.CIFAR10_MEAN
    std: Sequence[float] | None = ops.CIFAR10_STD
    hidden: Sequence[int] = ()
    fast_conv: bool = True
    width_factor: float = 1.0  # conv channel counts scaled by this (narrow CPU-scale variants)
    # dropout before each dense layer in training mode (0: none); needs a "dropout" PRNG key in
    # apply(train=True) (advjax.methods.layerwise passes one; the other methods do not)
    dropout: float = 0.0

    @nn.compact
    def __call__(self, x, train: bool = False):
        ops.check_input(x, self.input_shape, name=type(self).__name__)
        if not self.width_factor > 0:
            raise ValueError(f"VGG width_factor must be > 0, got {self.width_factor}")
        get_activation(self.activation)
        key = f"vgg{self.depth}"
        if key not in VGG_CONFIGS:
            raise ValueError(f"VGG depth must be one of 11, 13, 16, 19; got {self.depth}")
        x = ops.Normalize(self.mean, self.std, self.dtype)(x)
        for s, widths in enumerate(VGG_CONFIGS[key], start=1):
            if self.width_factor != 1.0:
                widths = tuple(max(1, int(round(w * self.width_factor))) for w in widths)
            x = _VGGStage(widths, self.batch_norm, self.activation, self.dtype, self.fast_conv,
                          name=f"block{s}")(x, train)
        x = x.reshape(x.shape[:-3] + (-1,))
        for i, width in enumerate(self.hidden):
            if self.dropout:
                x = nn.Dropout(self.dropout, deterministic=not train)(x)
            x = nn.Dense(width, dtype=self.dtype, name=f"fc{i}")(x)
            x = Activation(self.activation, name=f"fc{i}_act")(x)
        if self.dropout:
            x = nn.Dropout(self.dropout, deterministic=not train)(x)
        x = nn.Dense(self.num_classes, dtype=self.dtype, name="fc")(x)
        return ops.as_logits(x)


def hldr_vgg(num_classes: int = 10, activation: str = "elu", dtype: Any = jnp.float32, **kw) -> VGG:
    """The HLDR paper's VGG: VGG-16 convs with BN after each, ELU, dense 512, classifier.

    Checked against §V of Schwartz & Ditzler: blocks of 2-2-3-3-3 3x3 convs with 64-128-256-512-512
    channels, each block ending in 2x2 max pooling, batch norm after every conv, ELU instead of ReLU,
    then "a fully connected layer of 512 neurons" before the softmax layer. Our convs have no bias
    (batch norm follows; the released Keras code keeps them) and the dense layer has no batch norm
    (the code has one after it, the paper does not mention it). Fashion-MNIST needs
    ``input_shape=(32, 32, 1)`` (five poolings; the experiments pad 28 -> 32) and its own mean / std.
    """
    kw.setdefault("hidden", (512,))
    return VGG(depth=16, batch_norm=True, num_classes=num_classes, activation=activation,
               dtype=dtype, **kw)
