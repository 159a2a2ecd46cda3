"""FIMR: Fisher-information regularization (Shen et al. 2019, as used by Schwartz & Ditzler, eq. 2):

    L = (1 - zeta) * CE(x) + zeta * sum_j 1 / p_j(x),     zeta = 0.0025

trained on the benign samples only (§IV: "Shen et al.'s model is trained using only the benign
samples"). With ``noise_sigma`` set (the D_N experiment, "each approach is trained on examples
distorted by pixelwise AGN"), a fraction 1 / (pair_kinds + 1) of the inputs is x + n, n ~ N(0, sigma),
matching D_N's share of noisy pairs. One training-mode forward per step.

``mode="reference"`` (dmschwar/robust-ldr): the penalty summed over the batch and the classes
(``K.sum``) rather than averaged over the batch, and zeta = 0.00025 (the code's value, ten times
smaller than the paper's) unless zeta is given. The code's ``p = 0 -> 1e16`` substitution (a
vanishing penalty for a vanishing probability) is a bug we do not reproduce; see
:mod:`advjax.losses.fimr`.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from advjax.losses.fimr import fimr_penalty
from advjax.methods import _inner
from advjax.methods.base import AdversarialMethod, box, check_common, forward
from advjax.methods.hldr import check_unit

__all__ = ["FIMR", "noisy_share"]


def noisy_share(x, key, sigma, share, domain, eps_scale=1.0):
    """x with a random ``share`` of its samples replaced by x + sigma * N(0, 1) (clipped to domain)."""
    k_pick, k_noise = jax.random.split(key)
    noisy = x + sigma * eps_scale * jax.random.normal(k_noise, x.shape, x.dtype)
    if domain is not None:
        noisy = jnp.clip(noisy, domain[0], domain[1])
    pick = jax.random.uniform(k_pick, (x.shape[0],)) < share
    return jnp.where(pick.reshape((-1,) + (1,) * (x.ndim - 1)), noisy, x)


@dataclasses.dataclass(frozen=True)
class FIMR(AdversarialMethod):
    zeta: float | None = None  # None: 0.0025 (paper) / 0.00025 (reference)
    mode: str = "paper"
    noise_sigma: float | None = None
    pair_kinds: int = 3  # D's pair kinds per benign sample (len of HLDR's eps); D_N adds one noisy kind
    eps_scale: float = 1.0
    domain: Any = "auto"
    name: str = "FIMR"

    def __post_init__(self):
        if self.mode not in ("paper", "reference"):
            raise ValueError(f"fimr: unknown mode {self.mode!r}; use 'paper' or 'reference'")
        if self.zeta is None:
            object.__setattr__(self, "zeta", 0.0025 if self.mode == "paper" else 0.00025)
        check_unit("fimr", "zeta", self.zeta)
        check_common("fimr", domain=self.domain)
        if self.noise_sigma is not None and not self.noise_sigma > 0:
            raise ValueError(f"fimr: noise_sigma must be None or > 0, got {self.noise_sigma!r}")
        if not (isinstance(self.pair_kinds, int) and self.pair_kinds >= 1):
            raise ValueError(f"fimr: pair_kinds must be an integer >= 1, got {self.pair_kinds!r}")

    def perturb(self, state, x, y, key):
        if not self.noise_sigma:
            return x
        return noisy_share(x, key, self.noise_sigma, 1.0 / (self.pair_kinds + 1), box(self.domain), self.eps_scale)

    def loss(self, state, params, x, x_adv, y, key):
        logits, bs = forward(state, params, x_adv)  # x_adv is x (D) or partly x + n (D_N)
        ce = jnp.mean(_inner.cross_entropy(logits, y, 0.0))
        fim = fimr_penalty(logits, self.mode)
        loss = (1.0 - self.zeta) * ce + self.zeta * fim
        return loss, (bs, {"acc": _inner.accuracy(logits, y), "ce": ce, "fim": fim})
