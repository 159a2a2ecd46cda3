"""FGSM / FGM (Goodfellow et al. 2015, Eq. 3): one step of size eps along the steepest direction."""
from __future__ import annotations

import dataclasses
from typing import ClassVar

from advjax.attacks import base


@dataclasses.dataclass(frozen=True, kw_only=True)
class FGSM(base.Attack):
    """``x + eps * sign(grad_x L(x, y))`` (L-inf) or ``x + eps * g / ||g||_2`` (L2, "FGM").

    Attributes (beyond :class:`base.Attack`):
      loss: "ce" (default) or "cw" (margin); targeted mode descends the loss of the target.
    """

    loss: str = "ce"
    name: ClassVar[str] = "fgsm"

    def __post_init__(self):
        super().__post_init__()
        if self.loss not in ("ce", "cw"):
            raise ValueError(f"FGSM loss must be 'ce' or 'cw', got {self.loss!r}")

    def run(self, apply_fn, variables, x, y, key):
        del key
        _, _, g = base.loss_logits_grad(
            apply_fn, variables, x, lambda z: base.attack_loss(self.loss, z, y, self.targeted))
        x_adv = x + self.eps * base.steepest_direction(g, self.norm)
        return base.project_to_ball(x_adv, x, self.eps, self.norm, self.domain)
