"""FAST / FGSM-RS (Wong, Rice & Kolter, "Fast is better than free: Revisiting adversarial training",
ICLR 2020, Algorithm 3):

    δ ~ U(−ε, ε);  δ ← clip_[−ε,ε](δ + α·sign ∇_δ CE(f(x + δ), y));  θ ← θ − η ∇_θ CE(f(x + δ), y)

with α = 1.25ε by default (follows eps; an α < ε warns: one step cannot reach the ball's boundary
from x) and x + δ kept in the domain (``"auto"``, the default: the dataset's). The gradient for δ is taken on the eval-mode
model (the reference code stays in train mode); the one training forward on x + δ updates BN.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Optional


from advjax.attacks import FGSMRS as FGSMRSAttack
from advjax.methods import _inner
from advjax.methods.base import AdversarialMethod, box, ce_forward, check_common, check_step

__all__ = ["FGSMRS"]


@dataclasses.dataclass(frozen=True)
class FGSMRS(AdversarialMethod):
    eps: float = 8 / 255
    alpha: Optional[float] = None  # None: 1.25·eps
    label_smoothing: float = 0.0
    domain: Any = "auto"
    attack: Any = None

    def __post_init__(self):
        check_common("fast", eps=self.eps, alpha=self.alpha, smoothing=self.label_smoothing, domain=self.domain)
        check_step("fast", self.eps, self.alpha, 1)

    @property
    def step_size(self) -> float:
        return 1.25 * self.eps if self.alpha is None else self.alpha

    def default_attack(self):
        """``advjax.attacks.FGSMRS`` with step ``step_size`` (unset: the attack's own 1.25 eps)."""
        return FGSMRSAttack(eps=self.eps, step_size=self.alpha, domain=box(self.domain), check_inputs=False)

    def loss(self, state, params, x, x_adv, y, key):
        loss, logits, bs = ce_forward(state, params, x_adv, y, smoothing=self.label_smoothing)
        return loss, (bs, {"acc": _inner.accuracy(logits, y)})
