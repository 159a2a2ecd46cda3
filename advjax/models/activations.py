"""Activations by name, applied through the :class:`Activation` module.

Every model applies its nonlinearity as ``Activation(name)(x)``, so
``advjax.layers.capture(..., kind="activation")`` finds each one via flax's
``capture_intermediates`` filter (the LSA reference code measures its comparison measure on
activation outputs).

``ACTIVATIONS`` maps a name to a pure function ``f(x) -> y``; :func:`get_activation` looks one up
and raises ValueError listing the known names. The smooth activations of Smooth Adversarial
Training (Xie et al. 2020; thesis "Boosting Adversarial Training", Table X) that need no
parameters are here already (softplus, silu, gelu, celu, elu); the parametric ones (parametric
Softplus, learnable SmoothReLU) and ReLU-forward/smooth-backward belong to a later issue and
extend this module.
"""
from __future__ import annotations

from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

__all__ = ["ACTIVATIONS", "Activation", "get_activation", "list_activations", "register_activation"]


def _gelu_exact(x):
    # PyTorch's nn.GELU default (erf form), which the smooth-AT papers use.
    return jax.nn.gelu(x, approximate=False)


ACTIVATIONS: dict[str, Callable] = {
    "relu": jax.nn.relu,
    "elu": jax.nn.elu,  # alpha = 1 (HLDR, LSA Model A)
    "softplus": jax.nn.softplus,
    "silu": jax.nn.silu,  # = swish with beta 1
    "gelu": _gelu_exact,
    "celu": jax.nn.celu,  # alpha = 1
    "leaky_relu": jax.nn.leaky_relu,  # negative slope 0.01
    "tanh": jnp.tanh,
}


def list_activations() -> list[str]:
    """Sorted list of known activation names."""
    return sorted(ACTIVATIONS)


def get_activation(name: str) -> Callable:
    """The activation function called ``name`` (case-insensitive; '-' and '_' are equivalent)."""
    if not isinstance(name, str):
        raise ValueError(f"activation name must be a string, got {name!r}")
    key = name.lower().replace("-", "_")
    if key not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; known: {', '.join(list_activations())}")
    return ACTIVATIONS[key]


def register_activation(name: str, fn: Callable, *, overwrite: bool = False) -> None:
    """Add ``fn`` under ``name`` (for later issues and user code)."""
    key = name.lower().replace("-", "_")
    if key in ACTIVATIONS and not overwrite:
        raise ValueError(f"activation {name!r} already registered")
    ACTIVATIONS[key] = fn


class Activation(nn.Module):
    """Applies the named activation; a module so layer capture can find it."""

    activation: str = "relu"  # flax reserves ``name`` for the module's scope name

    def __call__(self, x):
        return get_activation(self.activation)(x)
