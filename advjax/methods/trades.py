"""TRADES (Zhang et al., "Theoretically Principled Trade-off between Robustness and Accuracy",
ICML 2019, Eq. (5)):

    min_θ E [ CE(f_θ(x), y) + β · max_{x'∈B∞(x,ε)} KL(f_θ(x) ‖ f_θ(x')) ]

Inner max: x' = x + 0.001·N(0, I), then ``steps`` sign-gradient ascent steps of size ``alpha`` on
KL(f(x) ‖ f(x')), projected on B∞(x, ε) ∩ [0,1], eval-mode model (as the reference code). Outer:
training-mode forwards on x then x' (BN statistics threaded through both); the KL is summed over
classes and averaged over the batch, gradients flow through both arguments.
``alpha=None`` (default) follows eps: 2.5·eps/steps (the reference code's 2/255-class step at
8/255 with 10 steps: it uses 0.007 at 0.031); an alpha with alpha·steps < eps warns.
``domain="auto"`` (default): the dataset's input box.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Optional

import jax.numpy as jnp

from advjax.attacks import TradesKL
from advjax.losses import trades_kl
from advjax.methods import _inner
from advjax.methods.base import AdversarialMethod, box, check_common, check_step, forward

__all__ = ["TRADES"]


@dataclasses.dataclass(frozen=True)
class TRADES(AdversarialMethod):
    beta: float = 6.0
    eps: float = 8 / 255
    alpha: Optional[float] = None  # None: 2.5 * eps / steps
    steps: int = 10
    domain: Any = "auto"
    attack: Any = None  # optional contract attack maximizing the KL (takes the clean logits itself)

    def __post_init__(self):
        check_common("trades", eps=self.eps, alpha=self.alpha, steps=self.steps, domain=self.domain)
        if self.beta < 0:
            raise ValueError(f"trades: beta must be >= 0, got {self.beta}")
        check_step("trades", self.eps, self.alpha, self.steps)

    @property
    def step_size(self) -> float:
        """The ascent step: ``alpha``, or 2.5 * eps / steps when unset."""
        return 2.5 * self.eps / self.steps if self.alpha is None else self.alpha

    def default_attack(self):
        """The KL maximization ``advjax.attacks.TradesKL`` with step ``step_size``."""
        return TradesKL(eps=self.eps, steps=self.steps, step_size=self.step_size, domain=box(self.domain),
                        check_inputs=False)

    def loss(self, state, params, x, x_adv, y, key):
        logits_c, bs = forward(state, params, x, train=True)
        logits_a, bs = forward(state, params, x_adv, train=True, batch_stats=bs)
        natural = jnp.mean(_inner.cross_entropy(logits_c, y))
        robust = jnp.mean(trades_kl(logits_a.astype(jnp.float32), logits_c.astype(jnp.float32)))
        loss = natural + self.beta * robust
        return loss, (bs, {"acc": _inner.accuracy(logits_a, y), "clean_acc": _inner.accuracy(logits_c, y),
                           "natural": natural, "robust_kl": robust})
