"""FGSM-GA (Andriushchenko & Flammarion, "Understanding and Improving Fast Adversarial Training",
NeurIPS 2020, Eq. (6)–(7)):

    L = CE(f(x + δ_FGSM), y) + λ · E_{η~U(−ε,ε)} [ 1 − cos(∇ₓCE(f(x), y), ∇ₓCE(f(x + η), y)) ]

δ_FGSM = clip_[−ε,ε](α·sign ∇ₓCE(f(x), y)) from a zero start (α = ε unless set: follows eps; an
α < ε warns), eval-mode model; ``domain="auto"`` (default): the dataset's input box. The
gradient-alignment term is differentiated through ∇ₓCE(f(x + η)) (double backprop); ∇ₓCE(f(x)) is
held constant, and examples with a zero input gradient are left out of the mean, as in the reference
code. The two input gradients use training-mode forwards (batch statistics, as the reference code's
model.train()), whose BN updates are discarded; the BN statistics come from the forward on x + δ.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Optional

import jax
import jax.numpy as jnp
from jax import lax

from advjax.attacks import PGD
from advjax.attacks.base import clip_to_domain
from advjax.methods import _inner
from advjax.methods.base import AdversarialMethod, box, ce_forward, check_common, check_step, forward

__all__ = ["FGSMGA", "gradient_alignment"]


def gradient_alignment(g1, g2):
    """Mean over examples with nonzero gradients of 1 − cos(g1_i, g2_i)."""
    a = g1.reshape(g1.shape[0], -1)
    b = g2.reshape(g2.shape[0], -1)
    na = jnp.linalg.norm(a, axis=-1)
    nb = jnp.linalg.norm(b, axis=-1)
    ok = (na > 0) & (nb > 0)
    cos = jnp.sum(a * b, axis=-1) / jnp.where(ok, na * nb, 1.0)
    n_ok = jnp.maximum(jnp.sum(ok), 1)
    return 1.0 - jnp.sum(jnp.where(ok, cos, 0.0)) / n_ok


@dataclasses.dataclass(frozen=True)
class FGSMGA(AdversarialMethod):
    eps: float = 8 / 255
    alpha: Optional[float] = None  # None: eps
    lam: float = 0.2  # λ of the gradient-alignment term
    label_smoothing: float = 0.0
    domain: Any = "auto"
    attack: Any = None

    def __post_init__(self):
        check_common("fgsm_ga", eps=self.eps, alpha=self.alpha, smoothing=self.label_smoothing, domain=self.domain)
        if self.lam < 0:
            raise ValueError(f"fgsm_ga: lam must be >= 0, got {self.lam}")
        check_step("fgsm_ga", self.eps, self.alpha, 1)

    def default_attack(self):
        """One FGSM step of size alpha from x, projected on the eps-ball
        (``advjax.attacks.PGD`` with one step and no random start)."""
        alpha = self.eps if self.alpha is None else self.alpha
        return PGD(eps=self.eps, steps=1, step_size=alpha, random_start=False, domain=box(self.domain),
                   check_inputs=False)

    def alignment(self, state, params, x, y, key):
        def input_grad(z):
            def f(q):
                logits, _ = forward(state, params, q, train=True)
                return jnp.mean(_inner.cross_entropy(logits, y))
            return jax.grad(f)(z)

        g1 = lax.stop_gradient(input_grad(x))
        eta = jax.random.uniform(key, x.shape, x.dtype, -self.eps, self.eps)
        g2 = input_grad(clip_to_domain(x + eta, box(self.domain)))
        return gradient_alignment(g1, g2)

    def loss(self, state, params, x, x_adv, y, key):
        ce, logits, bs = ce_forward(state, params, x_adv, y, smoothing=self.label_smoothing)
        if self.lam == 0.0:
            return ce, (bs, {"acc": _inner.accuracy(logits, y)})
        reg = self.alignment(state, params, x, y, key)
        return ce + self.lam * reg, (bs, {"acc": _inner.accuracy(logits, y), "grad_align": reg})
