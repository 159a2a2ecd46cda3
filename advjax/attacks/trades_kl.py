"""The TRADES inner maximization as an attack (Zhang et al., "Theoretically Principled Trade-off
between Robustness and Accuracy", ICML 2019, Eq. (5) and Algorithm 1):

    x' = argmax_{x' in B(x, eps) ∩ domain} KL(f(x) || f(x')),

from x' = x + init_std * N(0, I) (0.001, as the released code), by ``steps`` steepest-ascent steps
of size ``step_size`` projected on the ball and the domain. The labels are not used: the target is
the model's own clean prediction (held constant). This is what TRADES trains on
(``advjax.methods.trades``); as an evaluation attack it is weaker than PGD on the CE.
"""
from __future__ import annotations

import dataclasses
from typing import ClassVar, Optional

import jax

from advjax import losses as _losses
from advjax.attacks import base
from advjax.attacks.pgd import ascend


@dataclasses.dataclass(frozen=True, kw_only=True)
class TradesKL(base.Attack):
    """KL-to-clean-prediction PGD (TRADES' attack), L-inf or L2.

    Attributes (beyond :class:`base.Attack`):
      steps: iterations (10, TRADES' CIFAR-10 setting).
      step_size: default ``eps / 4`` (TRADES: eps 8/255, step 2/255).
      init_std: standard deviation of the Gaussian start (0.001).
      loop: loop form, see :mod:`advjax.attacks.base`.
    """

    steps: int = 10
    step_size: Optional[float] = None
    init_std: float = 0.001
    loop: base.Loop = "auto"
    name: ClassVar[str] = "trades-kl"
    supports_targeted: ClassVar[bool] = False

    def __post_init__(self):
        super().__post_init__()
        object.__setattr__(self, "steps", base.check_positive("steps", self.steps, integer=True))
        object.__setattr__(self, "step_size", base.check_positive("step_size", self.step_size))
        if isinstance(self.init_std, bool) or not self.init_std >= 0:
            raise ValueError(f"TradesKL init_std must be >= 0, got {self.init_std!r}")

    @property
    def alpha(self) -> float:
        return self.eps / 4 if self.step_size is None else self.step_size

    def run(self, apply_fn, variables, x, y, key):
        del y  # the clean prediction is the target
        clean = jax.lax.stop_gradient(apply_fn(variables, x))
        objective = lambda logits: _losses.trades_kl(logits, clean)  # noqa: E731
        x0 = x + self.init_std * jax.random.normal(key, x.shape, x.dtype)
        out = ascend(apply_fn, variables, x, x0, objective, eps=self.eps, norm=self.norm, domain=self.domain,
                     alpha=self.alpha, steps=self.steps, loop=self.loop)
        return base.project_to_ball(out, x, self.eps, self.norm, self.domain)


__all__ = ["TradesKL"]
