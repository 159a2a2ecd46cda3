"""Projected gradient descent (Madry et al. 2018, Eq. 2.1 iterated), L-inf and L2, random start,
restarts keeping the per-sample best."""
from __future__ import annotations

import dataclasses
from typing import ClassVar, Optional

import jax
import jax.numpy as jnp

from advjax.attacks import base


def ascend(apply_fn, variables, x, x0, objective, *, eps, norm, domain, alpha, steps, loop):
    """``steps`` projected steepest-ascent steps of size ``alpha`` on ``objective(logits)`` from
    ``x0``, each projected on the ``norm`` ball of radius ``eps`` around ``x`` and the domain."""

    def body(i, xa):
        _, _, g = base.loss_logits_grad(apply_fn, variables, xa, objective)
        xa = xa + alpha * base.steepest_direction(g, norm)
        return base.project_to_ball(xa, x, eps, norm, domain)

    return base.fori(steps, body, x0, loop)


@dataclasses.dataclass(frozen=True, kw_only=True)
class PGD(base.Attack):
    """``x_{t+1} = Proj_{ball, domain}(x_t + alpha * dir(grad_x L(x_t, y)))`` for ``steps`` steps.

    Attributes (beyond :class:`base.Attack`):
      steps: iterations (default 10).
      step_size: alpha; default ``2.5 * eps / steps`` (Madry et al.).
      random_start: start uniformly in the ball (default True).
      restarts: independent runs; per sample the result that misclassifies (else has the highest
        loss) is kept.
      loss: "ce" or "cw" (margin; this is CW-inf).
      loop: loop form, see :mod:`advjax.attacks.base`.
    """

    steps: int = 10
    step_size: Optional[float] = None
    random_start: bool = True
    restarts: int = 1
    loss: str = "ce"
    loop: base.Loop = "auto"
    name: ClassVar[str] = "pgd"
    default_step_factor: ClassVar[float] = 2.5

    def __post_init__(self):
        super().__post_init__()
        object.__setattr__(self, "steps", base.check_positive("steps", self.steps, integer=True))
        object.__setattr__(self, "restarts", base.check_positive("restarts", self.restarts, integer=True))
        object.__setattr__(self, "step_size", base.check_positive("step_size", self.step_size))
        if self.loss not in ("ce", "cw", "dlr"):
            raise ValueError(f"{type(self).__name__} loss must be 'ce', 'cw' or 'dlr', got {self.loss!r}")

    @property
    def alpha(self) -> float:
        if self.step_size is not None:
            return self.step_size
        return self.default_step_factor * self.eps / self.steps

    def _objective(self, y):
        return lambda logits: base.attack_loss(self.loss, logits, y, self.targeted)

    def _single(self, apply_fn, variables, x, y, key):
        x0 = base.random_start(key, x, self.eps, self.norm, self.domain) if self.random_start else x
        return ascend(apply_fn, variables, x, x0, self._objective(y), eps=self.eps, norm=self.norm,
                      domain=self.domain, alpha=self.alpha, steps=self.steps, loop=self.loop)

    def run(self, apply_fn, variables, x, y, key):
        keys = jax.random.split(key, self.restarts)
        best = self._single(apply_fn, variables, x, y, keys[0])
        if self.restarts > 1:
            objective = self._objective(y)

            def score(xa):
                logits = apply_fn(variables, xa)
                return base.is_success(logits, y, self.targeted), objective(logits)

            best_ok, best_loss = score(best)
            for r in range(1, self.restarts):
                cand = self._single(apply_fn, variables, x, y, keys[r])
                ok, loss = score(cand)
                take = (ok & ~best_ok) | ((ok == best_ok) & (loss > best_loss))
                best = jnp.where(base._bcast(take, x), cand, best)
                best_ok = best_ok | ok
                best_loss = jnp.where(take, loss, best_loss)
        return base.project_to_ball(best, x, self.eps, self.norm, self.domain)
