"""``Regularized(base, regularizer, kind)``: any AdversarialMethod plus a feature-space regularizer.

    J_reg(θ) = J_base(θ; x, x̂) + R(φ(x), φ(x̂))

where φ(·) = ``advjax.layers.capture(model, variables, ·, train=True, kind=kind)`` gives the ordered
{layer name: output} dict of the learnable layers (``kind="learnable"``) or activations
(``kind="activation"``) for the clean batch x and the base method's adversarial batch x̂, and
``regularizer(feats_clean, feats_adv) -> scalar`` is e.g. the LSA term Σ_{l∈MVL} γ_l·CM_l of AT-LR
(Khalooei et al., "Layer-wise Regularized Adversarial Training using Layers Sustainability
Analysis", Eq. (5)): ``Regularized(PGDAT(...), lsa_lr(...))``.

The capture passes run in training mode (batch norm with batch statistics, as the base loss's own
forward passes) but their batch-norm updates are discarded: the running statistics are the ones the
base method's loss returns, so adding a regularizer does not change what BN sees.
"""
from __future__ import annotations

import dataclasses
from typing import Callable

import jax.numpy as jnp

from advjax.methods.base import AdversarialMethod

__all__ = ["Regularized"]


@dataclasses.dataclass(frozen=True)
class Regularized(AdversarialMethod):
    """``base``'s perturbation and loss, plus ``regularizer(feats_clean, feats_adv)``.

    Metrics: the base's, plus ``"base_loss"`` and ``"reg"`` (the regularizer's value).
    """

    base: AdversarialMethod
    regularizer: Callable
    kind: str = "learnable"

    def __post_init__(self):
        if not isinstance(self.base, AdversarialMethod):
            raise ValueError(f"Regularized: base must be an AdversarialMethod, got {type(self.base).__name__}")
        if type(self.base).step is not AdversarialMethod.step:
            raise ValueError(f"Regularized: {type(self.base).__name__} has its own step (e.g. AWP), which the generic "
                             f"step would bypass; wrap the other way round, e.g. AWP(base=Regularized(...))")
        if not callable(self.regularizer):
            raise ValueError("Regularized: regularizer must be callable(feats_clean, feats_adv) -> scalar")
        if self.kind not in ("learnable", "activation"):
            raise ValueError(f"Regularized: kind must be 'learnable' or 'activation', got {self.kind!r}")

    def init_state(self, state, batch):
        return self.base.init_state(state, batch)

    def perturb(self, state, x, y, key):
        return self.base.perturb(state, x, y, key)

    def features(self, state, params, x):
        """Training-mode features of x (BN updates discarded)."""
        from advjax.layers import capture

        variables = state.variables(params=params)
        out = capture(state.model, variables, x, train=True, kind=self.kind)
        (_, feats), _ = out
        return feats

    def loss(self, state, params, x, x_adv, y, key):
        base_loss, (batch_stats, metrics) = self.base.loss(state, params, x, x_adv, y, key)
        reg = jnp.asarray(self.regularizer(self.features(state, params, x), self.features(state, params, x_adv)))
        if reg.shape != ():
            raise ValueError(f"Regularized: regularizer must return a scalar, got shape {reg.shape}")
        return base_loss + reg, (batch_stats, {**metrics, "base_loss": base_loss, "reg": reg})
