"""FGSM with a uniform random start, "FGSM-RS" (Wong, Rice & Kolter 2020, "Fast is better than
free", Algorithm 3): delta ~ U(-eps, eps), delta += alpha * sign(grad), delta clipped to the ball."""
from __future__ import annotations

import dataclasses
from typing import ClassVar, Optional


from advjax.attacks import base


@dataclasses.dataclass(frozen=True, kw_only=True)
class FGSMRS(base.Attack):
    """Random start in the L-inf ball (clipped so x + delta is in the domain), one step of size
    ``step_size`` (default 1.25 * eps, the paper's alpha), projection back onto the ball.

    L2 is supported too (random start uniform direction, normalized-gradient step).
    """

    step_size: Optional[float] = None
    loss: str = "ce"
    name: ClassVar[str] = "fgsm-rs"

    def __post_init__(self):
        super().__post_init__()
        object.__setattr__(self, "step_size", base.check_positive("step_size", self.step_size))
        if self.loss not in ("ce", "cw"):
            raise ValueError(f"FGSM-RS loss must be 'ce' or 'cw', got {self.loss!r}")

    @property
    def alpha(self) -> float:
        return 1.25 * self.eps if self.step_size is None else self.step_size

    def run(self, apply_fn, variables, x, y, key):
        x0 = base.random_start(key, x, self.eps, self.norm, self.domain)
        _, _, g = base.loss_logits_grad(
            apply_fn, variables, x0, lambda z: base.attack_loss(self.loss, z, y, self.targeted))
        x_adv = x0 + self.alpha * base.steepest_direction(g, self.norm)
        return base.project_to_ball(x_adv, x, self.eps, self.norm, self.domain)
