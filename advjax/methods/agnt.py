"""AGNT: training on inputs distorted by additive white Gaussian noise (Zantedeschi et al. 2017; Gilmer
et al. 2019; the "AGNT" defense of Schwartz & Ditzler, §II-E and §IV):

    L = CE(f(x + n), y),   n ~ N(0, sigma^2 I),   sigma = 32/255

The noise is drawn afresh every step (the released code draws it once per fold: a fixed noisy copy
of the fine-tuning samples; over the paper's few epochs the difference is a matter of noise
diversity only) and the noisy input is clipped to the data's domain (pixels stay in [0, 1]);
``clip=False`` with ``eps_scale`` = the data's std reproduces the code's unclipped noise in
standardized units. The noise itself is :class:`advjax.attacks.GaussianNoise`.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import jax.numpy as jnp

from advjax.attacks.noise import GaussianNoise
from advjax.methods import _inner
from advjax.methods.base import AdversarialMethod, box, check_common, forward

__all__ = ["AGNT"]


@dataclasses.dataclass(frozen=True)
class AGNT(AdversarialMethod):
    sigma: float = 32 / 255
    clip: bool = True
    eps_scale: float = 1.0
    domain: Any = "auto"
    name: str = "AGNT"

    def __post_init__(self):
        if isinstance(self.sigma, bool) or not isinstance(self.sigma, (int, float)) or not self.sigma > 0:
            raise ValueError(f"agnt: sigma (the noise's standard deviation) must be > 0, got {self.sigma!r}")
        check_common("agnt", domain=self.domain)

    def perturb(self, state, x, y, key):
        noise = GaussianNoise(eps=self.sigma * self.eps_scale, domain=box(self.domain) if self.clip else None,
                              check_inputs=False)
        return noise.run(None, None, x, y, key)

    def loss(self, state, params, x, x_adv, y, key):
        logits, bs = forward(state, params, x_adv)
        return jnp.mean(_inner.cross_entropy(logits, y, 0.0)), (bs, {"acc": _inner.accuracy(logits, y)})
