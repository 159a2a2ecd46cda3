"""Activations by name, applied through the :class:`Activation` module.

Every model applies its nonlinearity as ``Activation(spec)(x)``, so
``advjax.layers.capture(..., kind="activation")`` finds each one via flax's
``capture_intermediates`` filter (the LSA reference code measures its comparison measure on
activation outputs).

**The activation setting is one string** (a model's ``activation`` field, ``get_model(...,
activation=...)``, ``advjax train --activation``): a name, optionally with one numeric parameter
in parentheses, ``"name"`` or ``"name(a)"`` (``"name(a=1.4)"`` is accepted too); names are
case-insensitive and ``-`` equals ``_``. :func:`parse_activation` turns it into an
:class:`ActivationSpec`; ``str(spec)`` is the canonical string. The smooth activations of Smooth
Adversarial Training (Xie et al. 2020; thesis "Boosting Adversarial Training in Adversarial
Machine Learning", ch. 4):

* ``relu``: max(x, 0).
* ``softplus(a)``: log(1 + exp(a x)) / a, a > 0, default 1 (eq. 28 with a = 1: Softplus).
* ``parametric_softplus(a)`` (alias ``psoftplus``): the same with default a = 10, the thesis'
  setting (eq. 28; derivative sigmoid(a x), eq. 29).
* ``silu``: x sigmoid(x).  ``gelu``: x Phi(x), the exact (erf) form.
* ``elu(a)``: x for x >= 0, a (exp(x) - 1) for x < 0, a > 0, default 1 (eq. 30; derivative eq. 33).
* ``celu(a)``: x for x >= 0, a (exp(x / a) - 1) for x < 0, a > 0, default 1 (eq. 34*; derivative
  eq. 35).
* ``smooth_relu(a0)``: 0 for x < 0, x - log(a x + 1) / a for x >= 0 (eq. 31; derivative eq. 32),
  a learnable per layer, initialised to a0 > 0, default 400.
* ``leaky_relu`` (slope 0.01), ``tanh``.

(*) Eq. 34 as printed, ``a exp(x/a - 1)`` for x < 0, cannot be what is meant: at x -> 0- it tends
to a/e, not 0, so the function would jump at 0 (not even continuous, let alone "continuously
differentiable regardless of a"), its derivative ``exp(x/a - 1)`` contradicts eq. 35
(``exp(x/a)``), and at a = 1 it is ``exp(x - 1)``, not ELU, contradicting "CELU is equivalent to
ELU when a = 1". Barron's CELU, ``a (exp(x/a) - 1)``, satisfies all three, so that is CELU here.

**SmoothReLU's learnable a** (eq. 31-32: "a learnable variable shared by all channels in a layer
[that] must be positive", initialised to 400) is one scalar parameter per :class:`Activation`
module, stored as ``log_a_ratio`` with ``a = a0 * exp(max(log_a_ratio, -20))`` (``log_a_ratio``
starts at 0, so a starts at a0): a >= a0 e^-20 > 0 for every real value of the parameter, so no
optimizer step can make it <= 0 (the floor keeps float32's exp, and the a**2 in the gradient with
respect to a, from underflowing to 0 after absurd steps; below it the gradient is 0 and the
parameter stops), an update changes a by a
factor (suited to a value in the hundreds), and weight decay, if the optimizer applies it to this
parameter, pulls a back towards a0 instead of towards 0 or 1.
:func:`smooth_relu_alphas` reads the learned values out of a params tree.

**ReLU forward, smooth backward** (thesis Sec. 4.3.2, Table X): :func:`relu_smooth_backward` is a
``jax.custom_vjp`` whose forward is exactly ReLU and whose backward multiplies the cotangent by
eq. 29's ``sigmoid(a x)`` (a = 10) instead of ReLU's step. Models never name it: inside a
``with smooth_relu_backward():`` block, every ``Activation("relu")`` that is *traced* uses it
(the block is read at trace time, like any Python control flow), so the same model and the same
parameters give either backward; :func:`with_smooth_relu_backward` wraps an ``apply_fn`` so that
its traces always do. ``advjax.methods.smooth_at`` uses this to switch the attacker's gradient
and the optimizer's gradient separately (the four rows of Table X).

``ACTIVATIONS`` maps each parameter-free name (and each parametric one at its default parameter)
to a pure function ``f(x) -> y``; :func:`get_activation` accepts any spec and raises ValueError
listing the known names (with their parameter ranges) for an unknown name or an impossible
parameter.
"""
from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import functools
import math
import re
from typing import Callable, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

__all__ = [
    "ACTIVATIONS", "Activation", "ActivationSpec", "get_activation", "list_activations",
    "parse_activation", "register_activation", "parametric_softplus", "elu", "celu", "smooth_relu",
    "relu_smooth_backward", "smooth_relu_backward", "with_smooth_relu_backward",
    "smooth_relu_alphas", "SMOOTH_BACKWARD_ALPHA", "SMOOTH_RELU_INIT",
]

SMOOTH_BACKWARD_ALPHA = 10.0  # eq. 29's a for ReLU's replaced backward (thesis Sec. 4.3.2)
SMOOTH_RELU_INIT = 400.0  # SmoothReLU's initial a (thesis Sec. 4.4.2)
_LOG_RATIO_FLOOR = -20.0  # a >= a0 exp(-20) ~ 2e-9 a0: float32's exp and a**2 (in d/da) stay > 0


# ------------------------------------------------------------------------------------------
# the functions
# ------------------------------------------------------------------------------------------
def parametric_softplus(x, a=10.0):
    """Eq. 28: ``log(1 + exp(a x)) / a``; derivative ``sigmoid(a x)`` (eq. 29). a = 1: Softplus."""
    return jax.nn.softplus(a * x) / a


def elu(x, a=1.0):
    """Eq. 30: ``x`` for x >= 0, ``a (exp(x) - 1)`` for x < 0; derivative eq. 33 (``a exp(x)`` /
    1), continuous at 0 only for a = 1."""
    return jnp.where(x >= 0, x, a * jnp.expm1(jnp.minimum(x, 0)))


def celu(x, a=1.0):
    """CELU (Barron 2017): ``x`` for x >= 0, ``a (exp(x / a) - 1)`` for x < 0; derivative eq. 35
    (``exp(x / a)`` / 1), continuous for every a > 0; equals ELU at a = 1. (Eq. 34 as printed is
    misprinted: see the module docstring.)"""
    return jnp.where(x >= 0, x, a * jnp.expm1(jnp.minimum(x, 0) / a))


def smooth_relu(x, a=SMOOTH_RELU_INIT):
    """Eq. 31: 0 for x < 0, ``x - log(a x + 1) / a`` for x >= 0 (a > 0); derivative eq. 32
    (``a x / (1 + a x)``), continuous at 0 for every a; tends to ReLU as a -> infinity."""
    xp = jnp.maximum(x, 0)
    return xp - jnp.log1p(a * xp) / a


def _gelu_exact(x):
    # PyTorch's nn.GELU default (erf form), which the smooth-AT papers use.
    return jax.nn.gelu(x, approximate=False)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def relu_smooth_backward(x, alpha: float = SMOOTH_BACKWARD_ALPHA):
    """ReLU forward (bit for bit ``jax.nn.relu``), eq. 29's ``sigmoid(alpha x)`` as its derivative
    in the backward pass (thesis Sec. 4.3.2; alpha = 10)."""
    return jnp.maximum(x, 0)


def _rsb_fwd(x, alpha):
    return jnp.maximum(x, 0), x


def _rsb_bwd(alpha, x, g):
    return (g * jax.nn.sigmoid(jnp.asarray(alpha, x.dtype) * x),)


relu_smooth_backward.defvjp(_rsb_fwd, _rsb_bwd)


# ------------------------------------------------------------------------------------------
# names and parameters
# ------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class _Family:
    fn: Callable  # fn(x) or fn(x, a)
    default: Optional[float] = None  # None: takes no parameter
    learnable: bool = False
    what: str = ""  # the parameter's meaning, for messages


_FAMILIES: dict[str, _Family] = {
    "softplus": _Family(parametric_softplus, 1.0, what="sharpness a"),
    "parametric_softplus": _Family(parametric_softplus, 10.0, what="sharpness a"),
    "elu": _Family(elu, 1.0, what="a (negative saturation)"),
    "celu": _Family(celu, 1.0, what="a"),
    "smooth_relu": _Family(smooth_relu, SMOOTH_RELU_INIT, learnable=True, what="initial a (learnable)"),
}
_ALIASES = {"psoftplus": "parametric_softplus", "smoothrelu": "smooth_relu", "swish": "silu"}

# parameter-free functions (plus register_activation's additions)
_PLAIN: dict[str, Callable] = {
    "relu": jax.nn.relu,
    "silu": jax.nn.silu,  # = swish with beta 1
    "gelu": _gelu_exact,
    "leaky_relu": jax.nn.leaky_relu,  # negative slope 0.01
    "tanh": jnp.tanh,
}

# name -> f(x), every parameter-free name and every parametric one at its default parameter
ACTIVATIONS: dict[str, Callable] = {
    **_PLAIN,
    **{n: functools.partial(f.fn, a=f.default) for n, f in _FAMILIES.items() if not f.learnable},
}


@dataclasses.dataclass(frozen=True)
class ActivationSpec:
    """A parsed activation setting: canonical ``name`` and its parameter (None if it takes none)."""

    name: str
    param: Optional[float] = None

    @property
    def learnable(self) -> bool:
        fam = _FAMILIES.get(self.name)
        return fam is not None and fam.learnable

    @property
    def is_relu(self) -> bool:
        return self.name == "relu"

    def __str__(self) -> str:
        return self.name if self.param is None else f"{self.name}({self.param:g})"

    def fn(self) -> Callable:
        """The pure function ``f(x)`` (SmoothReLU: at a = its initial value)."""
        if self.name in _FAMILIES:
            return functools.partial(_FAMILIES[self.name].fn, a=self.param)
        return _PLAIN[self.name]


def _known() -> str:
    parts = []
    for n in sorted(set(_PLAIN) | set(_FAMILIES)):
        fam = _FAMILIES.get(n)
        parts.append(n if fam is None else
                     f"{n}(a > 0, default {fam.default:g}{'; the initial a of a learnable a' if fam.learnable else ''})")
    return ", ".join(parts)


_SPEC_RE = re.compile(r"^\s*([A-Za-z][A-Za-z0-9_\-]*)\s*(?:\(\s*(?:a\s*=\s*)?([^()]*?)\s*\))?\s*$")


@functools.lru_cache(maxsize=512)
def parse_activation(spec) -> ActivationSpec:
    """``"celu(1.4)"`` -> ``ActivationSpec("celu", 1.4)``; ``"elu"`` -> ``ActivationSpec("elu", 1.0)``.

    Raises ValueError naming the known activations for an unknown name, and the valid range for
    an impossible parameter (a <= 0, not a finite number, or a parameter on a name taking none).
    """
    if isinstance(spec, ActivationSpec):
        return spec
    if not isinstance(spec, str):
        raise ValueError(f"activation must be a string such as 'relu' or 'celu(1.4)', got {spec!r}; "
                         f"known: {_known()}")
    m = _SPEC_RE.match(spec)
    if m is None:
        raise ValueError(f"cannot parse activation {spec!r}: expected 'name' or 'name(a)', e.g. 'celu(1.4)'; "
                         f"known: {_known()}")
    key = m.group(1).lower().replace("-", "_")
    key = _ALIASES.get(key, key)
    raw = m.group(2)
    if key not in _PLAIN and key not in _FAMILIES:
        raise ValueError(f"unknown activation {spec!r}; known: {_known()}")
    fam = _FAMILIES.get(key)
    if fam is None:
        if raw is not None and raw != "":
            raise ValueError(f"activation {key!r} takes no parameter, got {spec!r}; parametric ones: "
                             f"{', '.join(sorted(_FAMILIES))}")
        return ActivationSpec(key)
    if raw is None or raw == "":
        return ActivationSpec(key, float(fam.default))
    try:
        a = float(raw)
    except ValueError:
        a = math.nan
    if not (math.isfinite(a) and a > 0):
        raise ValueError(f"activation {spec!r}: the parameter ({fam.what}) must be a finite number > 0 "
                         f"(valid range: 0 < a < inf; default {fam.default:g}), got {raw!r}")
    return ActivationSpec(key, a)


def list_activations(learnable: bool = False) -> list[str]:
    """Sorted names usable as pure functions ``get_activation(name)(x)`` and as parameter-free
    ``Activation(name)`` modules; ``learnable=True`` adds those with parameters (smooth_relu)."""
    names = set(ACTIVATIONS)
    if learnable:
        names |= {n for n, f in _FAMILIES.items() if f.learnable}
    return sorted(names)


def get_activation(name) -> Callable:
    """The function ``f(x)`` of the activation setting ``name`` (any spec, e.g. ``"celu(1.4)"``;
    SmoothReLU at its initial a). Unknown names / impossible parameters raise ValueError."""
    if isinstance(name, str) and name.lower().replace("-", "_") in ACTIVATIONS:
        return ACTIVATIONS[name.lower().replace("-", "_")]
    return parse_activation(name).fn()


def register_activation(name: str, fn: Callable, *, overwrite: bool = False) -> None:
    """Add a parameter-free ``fn`` under ``name`` (for user code)."""
    key = name.lower().replace("-", "_")
    if (key in ACTIVATIONS or key in _FAMILIES) and not overwrite:
        raise ValueError(f"activation {name!r} already registered")
    _PLAIN[key] = fn
    ACTIVATIONS[key] = fn
    parse_activation.cache_clear()


# ------------------------------------------------------------------------------------------
# ReLU's smooth backward, switched at trace time
# ------------------------------------------------------------------------------------------
@dataclasses.dataclass
class SmoothBackwardScope:
    """What a ``smooth_relu_backward`` block records: its alpha and how many ReLU activations were
    traced inside it (``relu_calls``; 0 means the model has no ReLU to replace)."""

    enabled: bool
    alpha: float
    relu_calls: int = 0


_SCOPE: contextvars.ContextVar[Optional[SmoothBackwardScope]] = contextvars.ContextVar(
    "advjax_smooth_relu_backward", default=None)


@contextlib.contextmanager
def smooth_relu_backward(enabled: bool = True, alpha: float = SMOOTH_BACKWARD_ALPHA):
    """Within the block, ``Activation("relu")`` traces as :func:`relu_smooth_backward` (``enabled``)
    or as plain ReLU (``enabled=False``, which also turns an outer block off). Yields the
    :class:`SmoothBackwardScope`.

    The block is read when a function is *traced*: use it inside the function being jitted or
    differentiated (as ``advjax.methods.smooth_at`` does), or wrap an ``apply_fn`` with
    :func:`with_smooth_relu_backward`; a jitted function traced outside the block keeps its
    compiled backward."""
    if not (isinstance(alpha, (int, float)) and math.isfinite(alpha) and alpha > 0):
        raise ValueError(f"smooth_relu_backward: alpha must be a finite number > 0 (eq. 29; the thesis uses 10), "
                         f"got {alpha!r}")
    scope = SmoothBackwardScope(bool(enabled), float(alpha))
    token = _SCOPE.set(scope)
    try:
        yield scope
    finally:
        _SCOPE.reset(token)


@functools.lru_cache(maxsize=256)
def with_smooth_relu_backward(apply_fn: Callable, alpha: float = SMOOTH_BACKWARD_ALPHA) -> Callable:
    """``apply_fn`` whose every trace runs inside ``smooth_relu_backward(alpha=alpha)``: same forward
    values, ReLU's gradient replaced by ``sigmoid(alpha x)`` (e.g. the thesis' PGD-1 evaluation
    attacker "with ReLU forward and Parametric Softplus backward"). Cached, so that equal
    arguments give the same function (attacks jit with ``apply_fn`` as a static argument)."""

    def smooth_apply_fn(variables, x, *args, **kwargs):
        with smooth_relu_backward(True, alpha):
            return apply_fn(variables, x, *args, **kwargs)

    return smooth_apply_fn


# ------------------------------------------------------------------------------------------
# the module every model uses
# ------------------------------------------------------------------------------------------
class Activation(nn.Module):
    """Applies the activation setting ``activation`` (see the module docstring); a module so layer
    capture can find it. SmoothReLU owns one parameter ``log_a_ratio`` (a = a0 exp(log_a_ratio))."""

    activation: str = "relu"  # flax reserves ``name`` for the module's scope name

    @nn.compact
    def __call__(self, x):
        key = self.activation.lower().replace("-", "_") if isinstance(self.activation, str) else None
        if key == "relu":
            scope = _SCOPE.get()
            if scope is not None and scope.enabled:
                scope.relu_calls += 1
                return relu_smooth_backward(x, scope.alpha)
            return jax.nn.relu(x)
        if key in ACTIVATIONS:
            return ACTIVATIONS[key](x)
        spec = parse_activation(self.activation)
        if spec.learnable:
            log_ratio = self.param("log_a_ratio", nn.initializers.zeros_init(), (), jnp.float32)
            a = spec.param * jnp.exp(jnp.maximum(log_ratio, _LOG_RATIO_FLOOR))
            return smooth_relu(x, a.astype(x.dtype))
        return spec.fn()(x)


def smooth_relu_alphas(params, a0: float = SMOOTH_RELU_INIT) -> dict[str, float]:
    """``{module path: a}`` for every SmoothReLU in a params tree, ``a = a0 exp(max(log_a_ratio, -20))``
    (``a0``: the spec's initial value, ``smooth_relu(a0)``; default 400)."""
    out = {}
    for path, leaf in jax.tree_util.tree_leaves_with_path(params):
        names = [getattr(p, "key", str(p)) for p in path]
        if names and names[-1] == "log_a_ratio":
            out["/".join(str(n) for n in names[:-1])] = float(a0 * jnp.exp(jnp.maximum(leaf, _LOG_RATIO_FLOOR)))
    return out
