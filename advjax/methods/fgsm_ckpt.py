"""FGSM-CKPT (Kim, Lee & Lee, "Understanding Catastrophic Overfitting in Single-step Adversarial
Training", AAAI 2021, Algorithm 1): per example, the smallest checkpointed perturbation that fools.

    δ = clip_[−ε,ε](η + α·sign ∇ CE(f(x + η), y)),  η ~ U(−ε, ε)
    x̃ = x                      if f(x) already misclassifies x
        x + (j*/c)·δ           j* = min{ j ∈ 1..c−1 : f(x + (j/c)·δ) ≠ y }
        x + δ                  if no checkpoint is misclassified

Defaults as the reference code: ε = 8/255, α = 10/255 (``alpha=None``: 1.25ε, the reference's
ratio, so it follows eps; an α < ε warns), c = 3; ``domain="auto"``: the dataset's input box. All checks use the eval-mode model;
the training forward on x̃ is the only one updating BN statistics.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Optional

import jax.numpy as jnp

from advjax.attacks import FGSMRS as FGSMRSAttack
from advjax.methods import _inner
from advjax.methods.base import AdversarialMethod, box, ce_forward, check_common, check_step, eval_apply_fn

__all__ = ["FGSMCKPT"]


@dataclasses.dataclass(frozen=True)
class FGSMCKPT(AdversarialMethod):
    eps: float = 8 / 255
    alpha: Optional[float] = None  # None: 1.25 * eps (10/255 at 8/255)
    c: int = 3
    label_smoothing: float = 0.0
    domain: Any = "auto"

    def __post_init__(self):
        check_common("fgsm_ckpt", eps=self.eps, alpha=self.alpha, smoothing=self.label_smoothing, domain=self.domain)
        if not isinstance(self.c, int) or self.c < 1:
            raise ValueError(f"fgsm_ckpt: c must be an integer >= 1, got {self.c!r}")
        check_step("fgsm_ckpt", self.eps, self.alpha, 1)

    @property
    def step_size(self) -> float:
        return 1.25 * self.eps if self.alpha is None else self.alpha

    def perturb(self, state, x, y, key):
        apply_fn, variables = eval_apply_fn(state), state.variables()
        x_full = FGSMRSAttack(eps=self.eps, step_size=self.alpha, domain=box(self.domain),
                              check_inputs=False).run(apply_fn, variables, x, y, key)
        delta = x_full - x
        bshape = (x.shape[0],) + (1,) * (x.ndim - 1)
        wrong = lambda z: jnp.argmax(apply_fn(variables, z), axis=-1) != y
        out = x_full
        # go from the largest checkpoint down so the smallest misclassified one wins
        for j in range(self.c - 1, 0, -1):
            xj = x + (j / self.c) * delta
            out = jnp.where(wrong(xj).reshape(bshape), xj, out)
        return jnp.where(wrong(x).reshape(bshape), x, out)

    def loss(self, state, params, x, x_adv, y, key):
        loss, logits, bs = ce_forward(state, params, x_adv, y, smoothing=self.label_smoothing)
        return loss, (bs, {"acc": _inner.accuracy(logits, y)})
