"""Wide residual networks WRN-depth-width (Zagoruyko & Komodakis, "Wide Residual Networks", 2016),
in the form of the TRADES / AWP / MART code bases: 3x3 stem conv with 16 channels, three stages of
n = (depth - 4) / 6 pre-activation basic blocks with 16k-32k-64k channels (strides 1, 2, 2),
1x1-conv shortcuts where the width changes, final BN + activation, global average pooling and the
classifier. WRN-28-10 has 36.5M parameters, WRN-34-10 46.2M. (Dropout of the original is left out:
the adversarial-training papers run it with drop rate 0.)

Layer names: ``conv1``; ``layer{s}/block{j}/{bn1, act1, conv1, bn2, act2, conv2, shortcut_conv}``
(the shortcut conv runs after ``conv2`` as in the TRADES code); ``bn``, ``act``, ``fc``.
Perturbation points (layerwise AT; identity unless passed): ``layer{s}/block{j}/g_bn1``,
``.../g_bn2`` and ``g_bn``, as in :mod:`advjax.models.preact_resnet`.
"""
from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from advjax.models import ops
from advjax.models.activations import Activation, get_activation
from advjax.models.preact_resnet import _conv3, _PreActStage


class WideResNet(nn.Module):
    """WRN-``depth``-``widen_factor``; depth = 6n + 4."""

    depth: int = 28
    widen_factor: int = 10
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
        if self.depth < 10 or (self.depth - 4) % 6:
            raise ValueError(f"WideResNet depth must be 6n + 4 (16, 22, 28, 34, 40), got {self.depth}")
        if self.widen_factor < 1:
            raise ValueError(f"WideResNet widen_factor must be >= 1, got {self.widen_factor}")
        n = (self.depth - 4) // 6
        k = self.widen_factor
        x = ops.Normalize(self.mean, self.std, self.dtype)(x)
        x = _conv3(16, 1, self.dtype, self.fast_conv, "conv1")(x)
        for s, (width, stride) in enumerate(zip((16 * k, 32 * k, 64 * k), (1, 2, 2)), start=1):
            x = _PreActStage(n, width, stride, self.activation, self.dtype, self.fast_conv,
                             shortcut_first=False, name=f"layer{s}")(x, train)
        x = ops.batch_norm(train, self.dtype, name="bn", fast=self.fast_conv)(x)
        x = ops.perturbation_point(self, "g_bn", x)  # layerwise-AT point: identity by default
        x = Activation(self.activation, name="act")(x)
        x = ops.global_avg_pool(x)
        x = nn.Dense(self.num_classes, dtype=self.dtype, name="fc")(x)
        return ops.as_logits(x)
