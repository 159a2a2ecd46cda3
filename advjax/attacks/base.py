"""Shared machinery of every attack: threat models, validation, loop forms, the attack base class.

Threat models (Madry et al. 2018, Eq. 2.1): the L-inf or L2 ball of radius eps around x,
intersected with the data's domain (the box [lo, hi], (0, 1) for images, or None for unbounded
features such as the 2-D Moon data). Every attack ends with :func:`project_to_ball`, so its
output is inside the ball and the domain up to float rounding, and eps = 0 returns x exactly.

An attack is a frozen (hashable) dataclass; ``attack(apply_fn, variables, x, y, key)`` validates
concrete inputs and then runs ``attack.run`` under ``jax.jit`` with the attack and ``apply_fn`` as
static arguments and the radius eps as a traced argument, so it compiles once per (attack
settings other than eps, apply_fn, shapes): an evaluation over an eps list compiles each attack
once. ``attack.run`` is
the pure, untransformed function: call it inside your own jit / vmap / grad (e.g. inside a
training step). Create ``apply_fn`` once (e.g. ``advjax.models.logits_fn(model)``) and reuse it:
a new closure is a new static argument and recompiles.

Loop form (``loop`` field of iterative attacks): XLA:CPU runs the convolutions' input-gradients
inside a while loop far slower than unrolled (see DESIGN.md), so the form is a setting:
``"unroll"`` (Python loop, one copy of the body per step), ``"rolled"`` (``lax.fori_loop``),
an int k (``lax.fori_loop(..., unroll=k)``), or ``"auto"``: unrolled for <= 20 steps in programs
lowered for the CPU, rolled otherwise (always rolled in programs lowered for GPU / TPU).

"auto" follows the *lowering* platform, not ``jax.default_backend()`` at trace time (issue 25,
item 2): a program exported for CUDA from this CPU host, or jitted for a GPU under
``JAX_PLATFORMS=cpu,cuda``, gets the rolled loop. For <= 20 steps :func:`fori` stages out both forms
with ``lax.platform_dependent`` (the unrolled one for "cpu", the rolled one as the default) and the
lowering keeps one of them, so XLA compiles exactly what it compiled before on either platform. The
price is tracing one extra copy of the body and the branch join (Model B, batch 8, interleaved on a
loaded 2-core host: PGD-10 traced in 2.0-2.3 s instead of 1.7-2.1 s, APGD-CE-10 in 2.7 instead of
2.0; the compiled CPU program has the same operations, no conditional, and the same results);
loops of > 20 steps are rolled on every platform and traced once. The choice follows the real
lowering platform even inside :func:`advjax.models.platform.portable_ops` (a rolled loop of XLA's
own convolutions is the slow XLA:CPU case that unrolling avoids; the loop form changes the numbers
by float rounding at most). Code that must
branch in Python on the form (an outer loop built by hand) calls :func:`resolve_loop` with the
platform it targets, or better :func:`fori` with ``auto_steps``.
"""
from __future__ import annotations

import copy
import dataclasses
import functools
from typing import Any, Callable, ClassVar, Union

import jax
import jax.numpy as jnp
import numpy as np

from advjax import losses as _losses
from advjax.losses.ce import two_logits_fn

Domain = Union[tuple[float, float], None]
Loop = Union[str, int]
ApplyFn = Callable[[Any, jax.Array], jax.Array]

NORMS = ("linf", "l2")
AUTO_UNROLL_MAX_STEPS = 20
_TINY = 1e-12


# --------------------------------------------------------------------------------------------
# threat models
# --------------------------------------------------------------------------------------------


def _bcast(v: jax.Array, x: jax.Array) -> jax.Array:
    """Reshape a per-example vector [N] to broadcast against x [N, ...]."""
    return jnp.reshape(v, v.shape + (1,) * (x.ndim - v.ndim))


def per_example_norm(delta: jax.Array, norm: str) -> jax.Array:
    """The L-inf or L2 norm of each example of ``delta`` (shape [N])."""
    flat = jnp.reshape(delta, (delta.shape[0], -1))
    if norm == "linf":
        return jnp.max(jnp.abs(flat), axis=-1)
    if norm == "l2":
        return jnp.sqrt(jnp.sum(flat * flat, axis=-1))
    raise ValueError(f"unsupported norm {norm!r}; supported: {NORMS}")


def normalize(delta: jax.Array, norm: str) -> jax.Array:
    """``delta / (||delta|| + 1e-12)`` per example (the ``normalize`` of the AutoAttack code)."""
    return delta / _bcast(per_example_norm(delta, norm) + _TINY, delta)


def steepest_direction(grad: jax.Array, norm: str) -> jax.Array:
    """The steepest-ascent unit direction for the norm: sign(g) for L-inf, g / ||g||_2 for L2."""
    if norm == "linf":
        return jnp.sign(grad)
    return normalize(grad, "l2")


def clip_to_domain(x: jax.Array, domain: Domain) -> jax.Array:
    """Clip to the box [lo, hi]; identity when ``domain`` is None."""
    if domain is None:
        return x
    return jnp.clip(x, domain[0], domain[1])


def project_delta(delta: jax.Array, eps: float, norm: str) -> jax.Array:
    """Euclidean projection of a perturbation onto the eps-ball of the norm (no domain)."""
    if norm == "linf":
        return jnp.clip(delta, -eps, eps)
    if norm == "l2":
        n = per_example_norm(delta, "l2")
        factor = jnp.minimum(1.0, eps / jnp.maximum(n, _TINY))
        return delta * _bcast(factor, delta).astype(delta.dtype)
    raise ValueError(f"unsupported norm {norm!r}; supported: {NORMS}")


def project_to_ball(x_adv: jax.Array, x: jax.Array, eps: float, norm: str, domain: Domain) -> jax.Array:
    """Project ``x_adv`` onto {z : ||z - x|| <= eps} and then clip to the domain.

    L-inf: one clip to [max(x - eps, lo), min(x + eps, hi)] (the exact projection onto the
    intersection). L2: radial projection then clipping; clipping only shrinks |z - x| per
    coordinate (x is in the domain), so the result stays in the ball. eps = 0 returns x bit-exactly.
    """
    if norm == "linf":
        lo, hi = x - eps, x + eps
        if domain is not None:
            lo, hi = jnp.maximum(lo, domain[0]), jnp.minimum(hi, domain[1])
        return jnp.clip(x_adv, lo, hi)
    return clip_to_domain(x + project_delta(x_adv - x, eps, norm), domain)


def random_start(key: jax.Array, x: jax.Array, eps: float, norm: str, domain: Domain) -> jax.Array:
    """A random point of the ball, clipped to the domain.

    L-inf: uniform in [-eps, eps]^d (Madry et al.). L2: uniform direction times a radius
    ``eps * u``, u ~ U(0, 1) (as torchattacks' PGDL2).
    """
    if norm == "linf":
        delta = jax.random.uniform(key, x.shape, x.dtype, -eps, eps)
    else:
        kd, kr = jax.random.split(key)
        d = normalize(jax.random.normal(kd, x.shape, x.dtype), "l2")
        r = jax.random.uniform(kr, (x.shape[0],), x.dtype)
        delta = d * _bcast(r, x) * eps
    return project_to_ball(x + delta, x, eps, norm, domain)


# --------------------------------------------------------------------------------------------
# losses the attacker maximizes
# --------------------------------------------------------------------------------------------


def attack_loss(name: str, logits: jax.Array, y: jax.Array, targeted: bool) -> jax.Array:
    """Per-example objective to MAXIMIZE. Untargeted: y is the true label; targeted: y is the target.

    ``"ce"``: CE(y) (targeted: -CE(target)); ``"cw"``: the CW margin max_{j!=y} z_j - z_y
    (targeted: -margin w.r.t. the target); ``"dlr"``: untargeted DLR only.
    """
    if name == "ce":
        v = _losses.cross_entropy(logits, y)
        return -v if targeted else v
    if name == "cw":
        v = _losses.cw_margin(logits, y)
        return -v if targeted else v
    if name == "dlr":
        if targeted:
            raise ValueError("the 'dlr' loss is untargeted; use APGDT (targeted DLR) instead")
        return _losses.dlr(logits, y)
    raise ValueError(f"unknown attack loss {name!r}; known: ('ce', 'cw', 'dlr')")


def loss_logits_grad(apply_fn: ApplyFn, variables, x: jax.Array, loss_fn: Callable[[jax.Array], jax.Array]):
    """(per-example loss [N], logits, d sum(loss) / dx) at x. Each example gets its own gradient."""

    def total(z):
        logits = apply_fn(variables, z)
        values = loss_fn(logits)
        return jnp.sum(values), (values, logits)

    (_, (values, logits)), grad = jax.value_and_grad(total, has_aux=True)(x)
    return values, logits, grad


def is_success(logits: jax.Array, y: jax.Array, targeted: bool) -> jax.Array:
    """Misclassified (untargeted) or classified as the target (targeted); bool [N]."""
    pred = jnp.argmax(logits, axis=-1)
    return pred == y if targeted else pred != y


# --------------------------------------------------------------------------------------------
# loop forms
# --------------------------------------------------------------------------------------------


def check_loop(loop: Loop) -> None:
    if isinstance(loop, bool) or not (
        (isinstance(loop, str) and loop in ("auto", "unroll", "rolled")) or (isinstance(loop, int) and loop >= 1)
    ):
        raise ValueError(f"loop must be 'auto', 'unroll', 'rolled' or an int >= 1 (partial unroll), got {loop!r}")


def resolve_loop(loop: Loop, steps: int, platform: str = "cpu") -> tuple[str, int]:
    """-> ("unroll", 0) or ("rolled", unroll_factor): the loop form of ``loop`` in a program lowered
    for ``platform`` ("cpu", "cuda", "rocm", "tpu"). A pure function of its arguments (no
    ``jax.default_backend()``): :func:`fori` asks it for both "cpu" and another platform and lets
    ``lax.platform_dependent`` pick at lowering. See the module docstring for "auto"."""
    check_loop(loop)
    if loop == "unroll":
        return "unroll", 0
    if loop == "rolled":
        return "rolled", 1
    if isinstance(loop, int):
        return "rolled", int(loop)
    if platform == "cpu" and steps <= AUTO_UNROLL_MAX_STEPS:
        return "unroll", 0
    return "rolled", 1


def _match_types(out, like):
    """``out`` with the dtypes of ``like``: the unrolled and rolled forms of a loop are two branches
    of one ``lax.platform_dependent``, which needs the same output dtypes (weak types are joined)."""
    def one(o, a):
        dtype = getattr(a, "dtype", None)
        if dtype is None or getattr(o, "dtype", None) == dtype:
            return o
        return jnp.asarray(o).astype(dtype)
    return jax.tree.map(one, out, like)


def _loop_form(mode: str, factor: int, steps: int, body, init):
    if mode == "unroll":
        carry = init
        for i in range(steps):
            carry = body(i, carry)
        return carry
    return jax.lax.fori_loop(0, steps, body, init, unroll=min(factor, steps))


def fori(steps: int, body: Callable[[Any, Any], Any], init: Any, loop: Loop, *, auto_steps: int | None = None) -> Any:
    """``for i in range(steps): carry = body(i, carry)`` in the chosen loop form.

    In the unrolled form ``i`` is a Python int, otherwise a traced int32; bodies must accept both
    (use ``jnp`` on ``i`` or test ``isinstance(i, int)`` for static branches). With ``loop="auto"``
    and a form that differs between the CPU and other platforms, both are staged out and the
    lowering platform picks one (``lax.platform_dependent``, module docstring). ``auto_steps``: the
    step count "auto" decides on (default ``steps``; an outer loop over restarts passes the inner
    attack's steps).
    """
    check_loop(loop)
    if steps <= 0:
        return init
    n = steps if auto_steps is None else auto_steps
    cpu = resolve_loop(loop, n, "cpu")
    other = resolve_loop(loop, n, "cuda")
    if cpu == other:
        return _loop_form(*cpu, steps, body, init)
    return jax.lax.platform_dependent(
        init,
        cpu=lambda c: _match_types(_loop_form(*cpu, steps, body, c), c),
        default=lambda c: _loop_form(*other, steps, body, c))


# --------------------------------------------------------------------------------------------
# validation
# --------------------------------------------------------------------------------------------


def _is_concrete(a) -> bool:
    return not isinstance(a, jax.core.Tracer)


def check_eps(eps) -> float:
    if isinstance(eps, jax.core.Tracer):  # a traced radius (see Attack.__call__): checked when concrete
        return eps
    if isinstance(eps, bool) or not isinstance(eps, (int, float, np.floating, np.integer)):
        raise ValueError(f"eps must be a Python number (attacks are static settings), got {type(eps).__name__}")
    eps = float(eps)
    if not np.isfinite(eps) or eps < 0:
        raise ValueError(f"eps must be a finite number >= 0, got {eps}")
    return eps


def check_positive(name: str, value, integer: bool = False):
    if value is None:
        return None
    if integer:
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name} must be an int >= 1, got {value!r}")
        return int(value)
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise ValueError(f"{name} must be a number > 0, got {value!r}")
    if not np.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be > 0, got {value}")
    return float(value)


def check_domain(domain) -> Domain:
    if domain is None:
        return None
    try:
        lo, hi = (float(v) for v in domain)
    except (TypeError, ValueError):
        raise ValueError(f"domain must be None or a pair (lo, hi), got {domain!r}") from None
    if not (np.isfinite(lo) and np.isfinite(hi) and lo < hi):
        raise ValueError(f"domain must satisfy lo < hi (finite), got {domain!r}")
    return (lo, hi)


def _host_values(a) -> tuple[np.ndarray, bool]:
    """(the values of ``a`` this process can read, as one flat numpy array; whether that is all of
    ``a``). A single-process array is fetched whole; an array spanning other processes' devices
    (multi-host, ``not a.is_fully_addressable``) contributes only its addressable shards, each
    distinct piece once (replicas of a piece share its index), and nothing is gathered: a check
    must never be a collective nor fetch a value that lives on another host."""
    if getattr(a, "is_fully_addressable", True):
        return np.asarray(a), True
    pieces = {}
    for shard in a.addressable_shards:
        key = tuple((sl.start, sl.stop, sl.step) for sl in shard.index)
        if key not in pieces:
            pieces[key] = np.asarray(shard.data).ravel()
    flat = np.concatenate(list(pieces.values())) if pieces else np.zeros((0,), a.dtype)
    return flat, False


def check_inputs(x, y, domain: Domain, num_classes: int | None = None) -> None:
    """Shape checks always; value checks (NaN, outside the domain, labels) when concrete.

    Under multi-host (arrays not fully addressable by this process) the value checks see this
    process's shards only (the other processes check theirs: every process validates its inputs);
    shapes and dtypes are global and checked in full."""
    if x.ndim < 1 or y.ndim != 1 or x.shape[0] != y.shape[0]:
        raise ValueError(f"x must be [N, ...] and y [N] with the same N, got x {x.shape} and y {y.shape}")
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise ValueError(f"x must be floating point (pixels in [0, 1]), got dtype {x.dtype}")
    if not jnp.issubdtype(y.dtype, jnp.integer):
        raise ValueError(f"y must be integer labels, got dtype {y.dtype}")
    if _is_concrete(x):
        xa, whole = _host_values(x)
        where = "" if whole else " in this process's shards"
        if np.isnan(xa).any():
            raise ValueError(f"x contains NaN ({int(np.isnan(xa).sum())} values{where})")
        if domain is not None and xa.size and (xa.min() < domain[0] or xa.max() > domain[1]):
            raise ValueError(
                f"x is outside the domain {domain}: values{where} in [{xa.min():.4g}, {xa.max():.4g}] "
                "(pixels must be in [0, 1]; pass domain=None for unbounded features)")
    if num_classes is not None and _is_concrete(y):
        ya, whole = _host_values(y)
        where = "" if whole else " (this process's shards)"
        if ya.size and (ya.min() < 0 or ya.max() >= num_classes):
            raise ValueError(f"labels out of range [0, {num_classes}): min {ya.min()}, max {ya.max()}{where}")


# --------------------------------------------------------------------------------------------
# the attack base class
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, kw_only=True)
class Attack:
    """Settings shared by every attack. Subclasses implement :meth:`run`.

    Attributes:
      eps: radius of the threat model (pixel units; for noise "attacks" the noise strength).
      norm: "linf" or "l2" (each attack lists what it supports in ``supported_norms``).
      domain: the box the inputs live in, (0.0, 1.0) for images; None = unbounded.
      targeted: if True, ``y`` passed to the attack is the target class.
      check_inputs: validate concrete x and y (NaN, domain, label range) before running.
    """

    eps: float = 8 / 255
    norm: str = "linf"
    domain: Domain = (0.0, 1.0)
    targeted: bool = False
    check_inputs: bool = True

    name: ClassVar[str] = "attack"
    supported_norms: ClassVar[tuple[str, ...]] = NORMS
    supports_targeted: ClassVar[bool] = True

    def __init_subclass__(cls, **kwargs):
        # One-logit binary models (logits [N, 1]) are read as [0, z] by every attack: each
        # subclass's ``run`` gets its apply_fn wrapped by ``advjax.losses.ce.two_logits_fn``
        # (idempotent, and a no-op for models with >= 2 logits).
        super().__init_subclass__(**kwargs)
        run = cls.__dict__.get("run")
        if run is not None and not getattr(run, "_reads_one_logit", False):
            @functools.wraps(run)
            def wrapped(self, apply_fn, *args, **kw):
                return run(self, two_logits_fn(apply_fn), *args, **kw)

            wrapped._reads_one_logit = True
            cls.run = wrapped

    def __post_init__(self):
        object.__setattr__(self, "eps", check_eps(self.eps))
        object.__setattr__(self, "domain", check_domain(self.domain))
        if self.norm not in self.supported_norms:
            raise ValueError(f"{type(self).__name__} does not support norm {self.norm!r}; "
                             f"supported: {self.supported_norms}")
        if self.targeted and not self.supports_targeted:
            raise ValueError(f"{type(self).__name__} has no targeted mode")
        for f in ("loop",):
            if hasattr(self, f):
                check_loop(getattr(self, f))

    def replace(self, **changes) -> "Attack":
        """A copy with some settings changed (e.g. ``attack.replace(eps=0.1)``)."""
        return dataclasses.replace(self, **changes)

    def run(self, apply_fn: ApplyFn, variables, x: jax.Array, y: jax.Array, key: jax.Array) -> jax.Array:
        """The pure attack (no validation, no jit): call it inside your own transformations."""
        raise NotImplementedError

    def validate(self, apply_fn: ApplyFn, variables, x, y) -> None:
        """Raise ValueError on bad inputs (shapes always; values when concrete)."""
        num_classes = None
        if _is_concrete(y) and self.check_inputs:
            num_classes = int(jax.eval_shape(two_logits_fn(apply_fn), variables,
                                             jax.ShapeDtypeStruct(x.shape, x.dtype)).shape[-1])
        check_inputs(x, y, self.domain, num_classes)

    def __call__(self, apply_fn: ApplyFn, variables, x, y, key=None) -> jax.Array:
        x = jnp.asarray(x)
        y = jnp.asarray(y)
        if key is None:
            key = jax.random.PRNGKey(0)
        if self.check_inputs:
            self.validate(apply_fn, variables, x, y)
        return _jit_run(self.with_eps(0.0), apply_fn, variables, x, y, key, jnp.asarray(self.eps, x.dtype))

    def with_eps(self, eps) -> "Attack":
        """A copy whose radius is ``eps`` as given (a traced scalar is allowed), without validation.

        This is how ``__call__`` compiles once per shape for every eps: the jitted function takes
        the radius as an argument and the static attack carries a placeholder.
        """
        out = copy.copy(self)
        object.__setattr__(out, "eps", eps)
        return out


def _run(attack: Attack, apply_fn: ApplyFn, variables, x, y, key, eps):
    return attack.with_eps(eps).run(apply_fn, variables, x, y, key)


_jit_run = jax.jit(_run, static_argnums=(0, 1))
