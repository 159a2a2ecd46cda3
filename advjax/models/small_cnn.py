"""Model B of the LSA paper (Khalooei et al., "Layer-wise Regularized Adversarial Training using
Layers Sustainability Analysis", Sec. 4): the small MNIST CNN.

conv16 5x5 -> ReLU -> conv32 5x5 -> ReLU -> maxpool 2 -> conv64 5x5 -> ReLU -> maxpool 2 ->
dense 100 -> ReLU -> dense num_classes. Convolutions are unpadded ("VALID", PyTorch's default
``padding=0`` in the authors' code base), so a 28x28 image goes 24 -> 20 -> 10 -> 6 -> 3 and the
flattened feature has 3*3*64 = 576 entries.
"""
from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from advjax.models import ops
from advjax.models.activations import Activation, get_activation


class ModelB(nn.Module):
    """The LSA paper's MNIST CNN (Model B).

    Learnable layers (capture order): ``Conv_0, Conv_1, Conv_2, Dense_0, Dense_1``;
    activations ``Activation_0 .. Activation_3``.
    """

    num_classes: int = 10
    activation: str = "relu"
    dtype: Any = jnp.float32
    input_shape: Sequence[int] = (28, 28, 1)
    mean: Sequence[float] | None = None
    std: Sequence[float] | None = None
    padding: str = "VALID"
    fast_conv: bool = True

    @nn.compact
    def __call__(self, x, train: bool = False):
        del train  # no batch norm or dropout
        ops.check_input(x, self.input_shape, name=type(self).__name__)
        get_activation(self.activation)
        x = ops.Normalize(self.mean, self.std, self.dtype)(x)

        def conv(h, features):
            h = ops.Conv(features, 5, padding=self.padding, dtype=self.dtype, fast=self.fast_conv)(h)
            return Activation(self.activation)(h)

        x = conv(x, 16)
        x = conv(x, 32)
        x = ops.max_pool(x, 2)
        x = conv(x, 64)
        x = ops.max_pool(x, 2)
        x = x.reshape(x.shape[:-3] + (-1,))
        x = nn.Dense(100, dtype=self.dtype)(x)
        x = Activation(self.activation)(x)
        x = nn.Dense(self.num_classes, dtype=self.dtype)(x)
        return ops.as_logits(x)
