"""Statistical perturbations as "attacks" of the same call shape (used by LSA, Khalooei et al., and
HLDR, Schwartz & Ditzler): Gaussian, salt, pepper, salt-and-pepper, speckle and uniform noise.

``eps`` is the noise strength: the standard deviation (Gaussian, speckle), the fraction of
elements hit (salt, pepper, salt-and-pepper, as scikit-image's ``amount``), or the half-width
(uniform, which therefore stays in the L-inf eps-ball). The model and the labels are ignored;
the output is clipped to the domain. Gaussian and speckle noise are unbounded, so only uniform
noise respects an eps-ball. Salt and pepper need a bounded domain (they set elements to hi / lo).
"""
from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax
import jax.numpy as jnp

from advjax.attacks import base


@dataclasses.dataclass(frozen=True, kw_only=True)
class _Noise(base.Attack):
    supports_targeted: ClassVar[bool] = False
    needs_domain: ClassVar[bool] = False

    def __post_init__(self):
        super().__post_init__()
        if self.needs_domain and self.domain is None:
            raise ValueError(f"{type(self).__name__} sets elements to the domain bounds: it needs a bounded domain")

    def validate(self, apply_fn, variables, x, y) -> None:
        base.check_inputs(x, y, self.domain, None)

    def noise(self, key, x):
        raise NotImplementedError

    def run(self, apply_fn, variables, x, y, key):
        del apply_fn, variables, y
        return base.clip_to_domain(self.noise(key, x), self.domain)


@dataclasses.dataclass(frozen=True, kw_only=True)
class GaussianNoise(_Noise):
    """x + eps * N(0, 1) (AGNT's training noise, LSA's Gaussian perturbation)."""

    name: ClassVar[str] = "gaussian"

    def noise(self, key, x):
        return x + self.eps * jax.random.normal(key, x.shape, x.dtype)


@dataclasses.dataclass(frozen=True, kw_only=True)
class UniformNoise(_Noise):
    """x + U(-eps, eps) per element."""

    name: ClassVar[str] = "uniform"

    def noise(self, key, x):
        return x + jax.random.uniform(key, x.shape, x.dtype, -self.eps, self.eps)


@dataclasses.dataclass(frozen=True, kw_only=True)
class SpeckleNoise(_Noise):
    """x + x * n, n ~ N(0, eps^2) (multiplicative noise, scikit-image's "speckle")."""

    name: ClassVar[str] = "speckle"

    def noise(self, key, x):
        return x + x * (self.eps * jax.random.normal(key, x.shape, x.dtype))


@dataclasses.dataclass(frozen=True, kw_only=True)
class SaltNoise(_Noise):
    """A fraction eps of the elements set to the domain's upper bound."""

    name: ClassVar[str] = "salt"
    needs_domain: ClassVar[bool] = True

    def __post_init__(self):
        super().__post_init__()
        if not isinstance(self.eps, jax.core.Tracer) and self.eps > 1:
            raise ValueError(f"{self.name} amount eps must be a fraction in [0, 1], got {self.eps}")

    def noise(self, key, x):
        hit = jax.random.uniform(key, x.shape) < self.eps
        return jnp.where(hit, jnp.asarray(self.domain[1], x.dtype), x)


@dataclasses.dataclass(frozen=True, kw_only=True)
class PepperNoise(SaltNoise):
    """A fraction eps of the elements set to the domain's lower bound."""

    name: ClassVar[str] = "pepper"

    def noise(self, key, x):
        hit = jax.random.uniform(key, x.shape) < self.eps
        return jnp.where(hit, jnp.asarray(self.domain[0], x.dtype), x)


@dataclasses.dataclass(frozen=True, kw_only=True)
class SaltAndPepperNoise(SaltNoise):
    """A fraction eps of the elements hit; each hit is salt or pepper with probability
    ``salt_vs_pepper`` (0.5), as scikit-image's "s&p"."""

    salt_vs_pepper: float = 0.5
    name: ClassVar[str] = "salt-and-pepper"

    def noise(self, key, x):
        k1, k2 = jax.random.split(key)
        hit = jax.random.uniform(k1, x.shape) < self.eps
        salt = jax.random.uniform(k2, x.shape) < self.salt_vs_pepper
        value = jnp.where(salt, self.domain[1], self.domain[0]).astype(x.dtype)
        return jnp.where(hit, value, x)
