"""AT-FGSM: Goodfellow et al., "Explaining and Harnessing Adversarial Examples", ICLR 2015, Eq. (6):

    J̃(θ, x, y) = a·J(θ, x, y) + (1 − a)·J(θ, x + ε·sign(∇ₓJ(θ, x, y)), y),   a = 0.5

FGSM is computed on the eval-mode model (BN frozen). Outer: two training-mode forwards, clean then
adversarial, with the BN statistics threaded through both (as two successive calls of a PyTorch model
in train mode); the paper's models had no BN. The step is eps itself (FGSM). ``domain="auto"``
(default): the dataset's input box.
"""
from __future__ import annotations

import dataclasses
from typing import Any

from advjax.attacks import FGSM
from advjax.methods import _inner
from advjax.methods.base import AdversarialMethod, box, ce_forward, check_common

__all__ = ["ATFGSM"]


@dataclasses.dataclass(frozen=True)
class ATFGSM(AdversarialMethod):
    eps: float = 8 / 255
    weight: float = 0.5  # a in Eq. (6): weight of the clean term
    label_smoothing: float = 0.0
    domain: Any = "auto"
    attack: Any = None

    def __post_init__(self):
        check_common("at_fgsm", eps=self.eps, smoothing=self.label_smoothing, domain=self.domain)
        if not 0.0 <= self.weight <= 1.0:
            raise ValueError(f"at_fgsm: weight must be in [0, 1], got {self.weight}")

    def default_attack(self):
        """``advjax.attacks.FGSM`` (x + eps sign grad, clipped to the domain)."""
        return FGSM(eps=self.eps, domain=box(self.domain), check_inputs=False)

    def loss(self, state, params, x, x_adv, y, key):
        l_clean, logits_c, bs = ce_forward(state, params, x, y, smoothing=self.label_smoothing)
        l_adv, logits_a, bs = ce_forward(state, params, x_adv, y, smoothing=self.label_smoothing, batch_stats=bs)
        loss = self.weight * l_clean + (1.0 - self.weight) * l_adv
        return loss, (bs, {"acc": _inner.accuracy(logits_a, y), "clean_acc": _inner.accuracy(logits_c, y)})
