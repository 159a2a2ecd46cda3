"""Choosing a computation per *lowering* platform: the CPU fast paths on XLA:CPU, XLA's own ops elsewhere.

advjax's model layers have two implementations each. The CPU one (custom-VJP convolutions, the
oneDNN FFI calls, GEMV batch-norm sums, reshape max pooling) was measured faster on XLA:CPU
(DESIGN.md, "Measured on these machines"); the portable one is plain ``lax`` / flax code whose
derivatives are JAX's own rules, which GPU and TPU compilers map to their vendor kernels (cuDNN's
backward-data convolution needs the kernel operand of the gradient convolution to be a plain
``reverse``; TPUs tile the last two axes, which the reshape max pool splits).

The choice must not be made with ``jax.default_backend()`` at trace time: a program exported for
CUDA from a CPU host (``jax.export.export(..., platforms=("cuda",))``), or run on a GPU under
``JAX_PLATFORMS=cpu,cuda``, would bake in the CPU choices and the CPU-only FFI targets.
:func:`per_platform` uses ``lax.platform_dependent``: both implementations are traced, and the
one for the platform the program is lowered for is kept (with several lowering platforms the
StableHLO holds a conditional on the platform, resolved before compilation; XLA never compiles
the other branch, so the CPU path keeps its speed: benchmarks/README.md, session 8).

Forward mode. The CPU branches are ``custom_vjp`` functions (the convolution, the oneDNN calls, the
batch norm), which have no JVP rule. :func:`per_platform` therefore takes the portable branch, on
the CPU too, when its arguments carry forward-mode tangents at trace time (``jax.jvp``,
``jax.jacfwd``, the outer level of ``jax.hessian``, also under ``vmap``/``jit`` inside them): forward
mode works through every model and gives the same numbers. Reverse mode (``jax.grad``, ``jax.vjp``,
``value_and_grad``) traces with JAX's linearize tracers and keeps the CPU fast path, so training
and attacks compile exactly as before (the check is a few ``isinstance`` tests at trace time, no
runtime cost). Not covered, because the function is staged out before the JVP is applied: a
function jitted or ``jax.checkpoint``-ed *outside* the ``jvp`` (``jax.jvp(jax.jit(f), ...)``) and the
linear function returned by ``jax.linearize``; JAX then says "can't apply forward-mode autodiff
(jvp) to a custom_vjp function": put the ``jit`` outside (``jax.jit(lambda x: jax.jvp(f, ...))``) or
trace inside :func:`portable_ops`, which takes the portable implementation on every platform, CPU
included (also how the tests compare the two on this CPU). The check relies on JAX's direct
linearization (``jax_use_direct_linearize``, the default since 0.7); with it switched off reverse
mode also uses JVP tracers and is not re-routed (forward mode then needs :func:`portable_ops`).
"""
from __future__ import annotations

import contextlib
import contextvars
from typing import Callable

import jax
from jax import lax

try:  # the tracer of forward-mode autodiff (jax.jvp); reverse mode uses LinearizeTracer
    from jax._src.interpreters.ad import JVPTracer as _JVPTracer
except ImportError:  # pragma: no cover - a JAX without it: no automatic re-routing
    _JVPTracer = None

__all__ = ["per_platform", "portable_ops", "portable_forced", "in_forward_mode"]

_PORTABLE = contextvars.ContextVar("advjax_portable_ops", default=False)


def portable_forced() -> bool:
    """True inside :func:`portable_ops` (read at trace time)."""
    return _PORTABLE.get()


@contextlib.contextmanager
def portable_ops(enabled: bool = True):
    """Within this block, models *traced* use the portable implementation on every platform,
    CPU included (plain ``lax.conv_general_dilated``, flax-style batch norm, ``reduce_window``
    max pooling): JAX's own derivative rules, so ``jax.jvp`` works. Read at trace time, like
    ``smooth_relu_backward``: a function jitted (and cached) before is not traced again."""
    token = _PORTABLE.set(bool(enabled))
    try:
        yield
    finally:
        _PORTABLE.reset(token)


def in_forward_mode(*args) -> bool:
    """True when a leaf of ``args`` carries a forward-mode tangent at some level of the current
    trace (a ``jax.jvp`` / ``jax.jacfwd`` tracer, possibly under ``vmap`` or a reverse-mode level).
    Reverse mode alone (``jax.grad``, ``jax.vjp``: linearize tracers) is False."""
    if _JVPTracer is None or not jax.config.jax_use_direct_linearize:
        return False
    for leaf in jax.tree_util.tree_leaves(args):
        t = leaf
        while isinstance(t, jax.core.Tracer):
            if isinstance(t, _JVPTracer):
                return True
            inner = getattr(t, "primal", None)
            t = getattr(t, "val", None) if inner is None else inner
    return False


def per_platform(*args, cpu: Callable, default: Callable):
    """``cpu(*args)`` in programs lowered for the CPU, ``default(*args)`` for every other platform
    (CUDA, ROCm, TPU), decided at lowering by ``lax.platform_dependent``; ``default(*args)`` on every
    platform inside :func:`portable_ops` and when ``args`` carry forward-mode tangents
    (:func:`in_forward_mode`: the CPU branches' ``custom_vjp`` has no JVP rule; module docstring).
    Both must return the same shapes and dtypes."""
    if _PORTABLE.get() or in_forward_mode(*args):
        return default(*args)
    return lax.platform_dependent(*args, cpu=cpu, default=default)
