"""APGD-AT: adversarial training (Madry et al. 2018, Eq. (2.1)) with the inner maximization done by
APGD-CE (Croce & Hein, "Reliable evaluation of adversarial robustness with an ensemble of diverse
parameter-free attacks", ICML 2020, Algorithm 1), as used for training in Croce & Hein 2021
("Mind the box"). Trains on the highest-loss point APGD found; eval-mode model for the attack, one
training forward on x_adv updates BN. Step size: APGD's own, 2·eps at the start, halved adaptively
(so it follows eps). ``domain="auto"`` (default): the dataset's input box.
"""
from __future__ import annotations

import dataclasses
from typing import Any

from advjax.attacks import APGD
from advjax.methods import _inner
from advjax.methods.base import AdversarialMethod, box, ce_forward, check_common

__all__ = ["APGDAT"]


@dataclasses.dataclass(frozen=True)
class APGDAT(AdversarialMethod):
    eps: float = 8 / 255
    steps: int = 10
    rho: float = 0.75
    label_smoothing: float = 0.0
    domain: Any = "auto"
    attack: Any = None

    def __post_init__(self):
        check_common("apgd_at", eps=self.eps, steps=self.steps, smoothing=self.label_smoothing, domain=self.domain)

    def default_attack(self):
        """APGD-CE returning its highest-loss iterate
        (``advjax.attacks.APGD(output="max_loss")``)."""
        return APGD(eps=self.eps, steps=self.steps, rho=self.rho, loss="ce", output="max_loss",
                    domain=box(self.domain), check_inputs=False)

    def loss(self, state, params, x, x_adv, y, key):
        loss, logits, bs = ce_forward(state, params, x_adv, y, smoothing=self.label_smoothing)
        return loss, (bs, {"acc": _inner.accuracy(logits, y)})
