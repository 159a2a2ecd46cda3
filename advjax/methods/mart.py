"""MART (Wang et al., "Improving Adversarial Robustness Requires Revisiting Misclassified Examples",
ICLR 2020, Eq. (8)):

    L = (1/n) Σ_i [ BCE(p(x̂_i), y_i) + λ · KL(p(x_i) ‖ p(x̂_i)) · (1 − p_{y_i}(x_i)) ]

with x̂ from L∞ PGD on the cross entropy (random start, eval-mode model). ``beta`` is λ (6.0 in the
reference code). Training-mode forwards on x then x̂ (BN threaded). ``mode="reference"`` uses the
reference code's numerical constants (see ``advjax.losses.mart``). ``alpha=None`` (default) follows
eps: 2.5·eps/steps (the reference code's 2/255 at 8/255 with 10 steps); an alpha with
alpha·steps < eps warns. ``domain="auto"`` (default): the dataset's input box.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Optional

import jax.numpy as jnp

from advjax.losses.mart import boosted_cross_entropy, mart_kl
from advjax.attacks import PGD
from advjax.methods import _inner
from advjax.methods.base import AdversarialMethod, box, check_common, check_step, forward

__all__ = ["MART"]


@dataclasses.dataclass(frozen=True)
class MART(AdversarialMethod):
    beta: float = 6.0
    eps: float = 8 / 255
    alpha: Optional[float] = None  # None: 2.5 * eps / steps
    steps: int = 10
    mode: str = "paper"
    domain: Any = "auto"
    attack: Any = None

    def __post_init__(self):
        check_common("mart", eps=self.eps, alpha=self.alpha, steps=self.steps, domain=self.domain)
        if self.beta < 0:
            raise ValueError(f"mart: beta must be >= 0, got {self.beta}")
        if self.mode not in ("paper", "reference"):
            raise ValueError(f"mart: mode must be 'paper' or 'reference', got {self.mode!r}")
        check_step("mart", self.eps, self.alpha, self.steps)

    @property
    def step_size(self) -> float:
        """The PGD step: ``alpha``, or 2.5 * eps / steps when unset."""
        return 2.5 * self.eps / self.steps if self.alpha is None else self.alpha

    def default_attack(self):
        """L-inf PGD on the CE from a random start (``advjax.attacks.PGD``; ``alpha=None``: PGD's own
        2.5 * eps / steps)."""
        return PGD(eps=self.eps, steps=self.steps, step_size=self.alpha, domain=box(self.domain), check_inputs=False)

    def loss(self, state, params, x, x_adv, y, key):
        logits_c, bs = forward(state, params, x, train=True)
        logits_a, bs = forward(state, params, x_adv, train=True, batch_stats=bs)
        bce = jnp.mean(boosted_cross_entropy(logits_a, y, mode=self.mode))
        kl = jnp.mean(mart_kl(logits_c, logits_a, y, mode=self.mode))
        loss = bce + self.beta * kl
        return loss, (bs, {"acc": _inner.accuracy(logits_a, y), "clean_acc": _inner.accuracy(logits_c, y),
                           "bce": bce, "weighted_kl": kl})
