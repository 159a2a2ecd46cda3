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

Consequences: forward-mode autodiff (``jax.jvp``) traces both branches, so it still fails where
the CPU branch is a ``custom_vjp`` (the convolution, the batch norm): build the model with
``fast_conv=False``, or trace inside :func:`portable_ops`, which takes the portable
implementation on every platform (also how the tests compare the two on this CPU).
"""
from __future__ import annotations

import contextlib
import contextvars
from typing import Callable

from jax import lax

__all__ = ["per_platform", "portable_ops", "portable_forced"]

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


def per_platform(*args, cpu: Callable, default: Callable):
    """``cpu(*args)`` in programs lowered for the CPU, ``default(*args)`` for every other platform
    (CUDA, ROCm, TPU), decided at lowering by ``lax.platform_dependent``; ``default(*args)`` on every
    platform inside :func:`portable_ops`. Both must return the same shapes and dtypes."""
    if _PORTABLE.get():
        return default(*args)
    return lax.platform_dependent(*args, cpu=cpu, default=default)
