"""PGD adversarial training (Madry et al., "Towards Deep Learning Models Resistant to Adversarial
Attacks", ICLR 2018, Eq. (2.1)):

    min_θ E_{(x,y)} [ max_{‖δ‖∞ ≤ ε} CE(f_θ(x + δ), y) ]

Inner max: ``steps`` of L∞ PGD with step ``alpha`` from a uniform random start, on the eval-mode
model (BN frozen; the reference code attacks in train mode, which also moves the BN statistics).
``alpha=None`` (default) follows eps: Madry et al.'s 2.5·eps/steps (2/255 at 8/255 with 10 steps,
0.075 at 0.3); an alpha with alpha·steps < eps warns (it cannot reach the ball's boundary).
``domain="auto"`` (default): the dataset's input box (see ``advjax.methods.base.with_domain``).
Outer: one training-mode forward on x + δ, the only pass that updates BN statistics.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Optional

from advjax.attacks import PGD
from advjax.methods import _inner
from advjax.methods.base import AdversarialMethod, box, ce_forward, check_common, check_step

__all__ = ["PGDAT"]


@dataclasses.dataclass(frozen=True)
class PGDAT(AdversarialMethod):
    eps: float = 8 / 255
    alpha: Optional[float] = None  # None: 2.5 * eps / steps (Madry et al.)
    steps: int = 10
    random_start: bool = True
    label_smoothing: float = 0.0
    domain: Any = "auto"  # the dataset's (base.AUTO); None = unbounded
    attack: Any = None  # optional contract attack (advjax.attacks) replacing the built-in PGD

    def __post_init__(self):
        check_common("pgd_at", eps=self.eps, alpha=self.alpha, steps=self.steps, smoothing=self.label_smoothing,
                     domain=self.domain)
        check_step("pgd_at", self.eps, self.alpha, self.steps)

    @property
    def step_size(self) -> float:
        """The PGD step: ``alpha``, or 2.5 * eps / steps when unset."""
        return 2.5 * self.eps / self.steps if self.alpha is None else self.alpha

    def default_attack(self):
        """L-inf PGD (``advjax.attacks.PGD``) with this method's settings (``alpha=None``: PGD's own
        2.5 * eps / steps, which also follows a ramped radius under ``EpsWarmup``)."""
        return PGD(eps=self.eps, steps=self.steps, step_size=self.alpha, random_start=self.random_start,
                   domain=box(self.domain), check_inputs=False)

    def loss(self, state, params, x, x_adv, y, key):
        loss, logits, bs = ce_forward(state, params, x_adv, y, smoothing=self.label_smoothing)
        return loss, (bs, {"acc": _inner.accuracy(logits, y)})
