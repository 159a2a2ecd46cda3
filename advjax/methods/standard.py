"""Standard training (empirical risk minimization): L(θ) = (1/n) Σ_i CE(f_θ(x_i), y_i),
optionally with label smoothing (Szegedy et al. 2016). BN statistics: the one training forward."""
from __future__ import annotations

import dataclasses

from advjax.methods import _inner
from advjax.methods.base import AdversarialMethod, ce_forward, check_common

__all__ = ["Standard"]


@dataclasses.dataclass(frozen=True)
class Standard(AdversarialMethod):
    label_smoothing: float = 0.0

    def __post_init__(self):
        check_common("standard", smoothing=self.label_smoothing)

    def perturb(self, state, x, y, key):
        return x

    def loss(self, state, params, x, x_adv, y, key):
        loss, logits, bs = ce_forward(state, params, x, y, smoothing=self.label_smoothing)
        return loss, (bs, {"acc": _inner.accuracy(logits, y)})
