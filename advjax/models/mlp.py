"""Model A of the LSA paper (Khalooei et al., "Layer-wise Regularized Adversarial Training using
Layers Sustainability Analysis", Sec. 4, Table 1): an MLP for the 2-D Moon data.

Three hidden ``Dense(100)`` layers with ELU, then the output layer. Two heads:

* ``num_classes=1``: **the paper's head**, ``Linear(1)``: one logit z, p(y=1) = sigmoid(z), binary
  cross-entropy. The module returns it as the two logits ``[0, z]``
  (``advjax.losses.ce.two_logits``): softmax([0, z])[1] = sigmoid(z), so softmax cross-entropy on
  the output IS binary cross-entropy on z and the prediction is ``z > 0``; every training method,
  loss, attack and analysis then takes the model unchanged, and its parameters are exactly the
  paper's (the last kernel is [100, 1]). ``raw_logit=True`` returns z itself (shape [N, 1]); the
  attacks, the evaluator and the training monitor read such outputs as [0, z] too.
* ``num_classes=2`` (the registry default, kept as an option): two logits (z0, z1) and softmax --
  the same model family with one redundant parameter per unit (softmax([z0, z1])[1] =
  sigmoid(z1 - z0)).

The input is raw 2-D features (no [0, 1] box, identity normalization by default): the Moon epsilons
of the paper (0.1 - 0.5) are in feature units.
"""
from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from advjax.losses.ce import two_logits
from advjax.models import ops
from advjax.models.activations import Activation, get_activation


class ModelA(nn.Module):
    """MLP 2 -> 100 -> 100 -> 100 -> num_classes with ELU (LSA paper, Model A).

    Learnable layers (capture order): ``Dense_0, Dense_1, Dense_2, Dense_3`` (the last gives the
    logits); activations ``Activation_0, Activation_1, Activation_2``; perturbation points
    (layerwise AT; the identity unless a ``"perturbations"`` collection is passed)
    ``g_dense{i}`` after each hidden dense layer.
    """

    num_classes: int = 2
    activation: str = "elu"
    dtype: Any = jnp.float32
    input_shape: Sequence[int] = (2,)
    mean: Sequence[float] | None = None
    std: Sequence[float] | None = None
    hidden: Sequence[int] = (100, 100, 100)
    raw_logit: bool = False

    @nn.compact
    def __call__(self, x, train: bool = False):
        del train  # no batch norm or dropout
        if self.raw_logit and self.num_classes != 1:
            raise ValueError(f"ModelA: raw_logit=True needs num_classes=1 (the one-logit head), got {self.num_classes}")
        ops.check_input(x, self.input_shape, box=False, name=type(self).__name__)
        get_activation(self.activation)
        x = ops.Normalize(self.mean, self.std, self.dtype)(x)
        for i, width in enumerate(self.hidden):
            x = nn.Dense(width, dtype=self.dtype)(x)
            # layerwise-AT point (no BN here: after the dense layer); identity unless passed
            x = ops.perturbation_point(self, f"g_dense{i}", x)
            x = Activation(self.activation)(x)
        x = ops.as_logits(nn.Dense(self.num_classes, dtype=self.dtype)(x))
        return two_logits(x) if self.num_classes == 1 and not self.raw_logit else x
