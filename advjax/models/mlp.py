"""Model A of the LSA paper (Khalooei et al., "Layer-wise Regularized Adversarial Training using
Layers Sustainability Analysis", Sec. 4): an MLP for the 2-D Moon data.

Three hidden ``Dense(100)`` layers with ELU, then the output layer. The paper's output is a single
logit z with p(y=1) = sigmoid(z); here the head has ``num_classes`` = 2 logits (z0, z1) and
softmax. The two are the same model family: softmax([z0, z1])[1] = sigmoid(z1 - z0), so any
single-logit classifier z is the two-logit one with (z0, z1) = (0, z), and cross-entropy on the two
logits equals binary cross-entropy on z1 - z0. Two logits let every attack and loss treat Model A
like any other classifier.

The input is raw 2-D features (no [0, 1] box, identity normalization by default): the Moon epsilons
of the paper (0.1 - 0.5) are in feature units.
"""
from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from advjax.models import ops
from advjax.models.activations import Activation, get_activation


class ModelA(nn.Module):
    """MLP 2 -> 100 -> 100 -> 100 -> num_classes with ELU (LSA paper, Model A).

    Learnable layers (capture order): ``Dense_0, Dense_1, Dense_2, Dense_3`` (the last gives the
    logits); activations ``Activation_0, Activation_1, Activation_2``.
    """

    num_classes: int = 2
    activation: str = "elu"
    dtype: Any = jnp.float32
    input_shape: Sequence[int] = (2,)
    mean: Sequence[float] | None = None
    std: Sequence[float] | None = None
    hidden: Sequence[int] = (100, 100, 100)

    @nn.compact
    def __call__(self, x, train: bool = False):
        del train  # no batch norm or dropout
        ops.check_input(x, self.input_shape, box=False, name=type(self).__name__)
        get_activation(self.activation)
        x = ops.Normalize(self.mean, self.std, self.dtype)(x)
        for width in self.hidden:
            x = nn.Dense(width, dtype=self.dtype)(x)
            x = Activation(self.activation)(x)
        x = nn.Dense(self.num_classes, dtype=self.dtype)(x)
        return ops.as_logits(x)
