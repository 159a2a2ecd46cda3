"""The matmul / convolution precision setting, and a deterministic mode for exact resume on GPU.

Why this exists: on CPU a float32 convolution or matmul is computed in float32. On accelerators
JAX's ``"default"`` precision is not: NVIDIA Ampere / Hopper GPUs run float32 convolutions and
matmuls as TF32 (10-bit mantissa), TPUs as one bfloat16 pass. Training is fine with that (and
fast), but a robust-accuracy number computed that way is not the number the CPU gives, and an
attack's gradient signs near zero can flip. So:

* :data:`TRAIN_DEFAULT` = ``"default"``: training uses the platform's fast default.
* :data:`EVAL_DEFAULT` = ``"highest"``: evaluation (``robust_accuracy``, ``advjax eval``) runs
  float32 convolutions and matmuls in full float32 (several bfloat16 passes on TPU, no TF32 on GPU)
  unless you chose a precision yourself (``--precision``, ``JAX_DEFAULT_MATMUL_PRECISION`` or
  ``jax.default_matmul_precision``). On CPU every setting gives the same numbers.

The setting is JAX's ``jax_default_matmul_precision`` (read when a function is traced; it is part
of the jit cache key), so :func:`use` is a context manager around tracing and running.

Determinism: even at "highest", GPU results can differ run to run (atomics in scatter-adds and some
reductions, autotuned convolution algorithms). Exact resume of a killed run on GPU needs
``XLA_FLAGS=--xla_gpu_deterministic_ops=true`` (slower; set before JAX creates its backend):
:func:`enable_deterministic` (``advjax train --deterministic``) sets it where the installed jaxlib
knows the flag. CPU runs are deterministic already; on TPU XLA is deterministic for a given
program and topology.
"""
from __future__ import annotations

import contextlib
import functools
import os
from typing import Callable

import jax

__all__ = ["PRECISIONS", "TRAIN_DEFAULT", "EVAL_DEFAULT", "DETERMINISTIC_GPU_FLAG", "check", "current", "use",
           "evaluation", "enable_deterministic"]

#: ``default``: the platform's fastest (TF32 on Ampere+, one bf16 pass on TPU); ``high``: bf16_3x /
#: TF32-free where offered; ``highest``: full float32.
PRECISIONS = ("default", "high", "highest")
TRAIN_DEFAULT = "default"
EVAL_DEFAULT = "highest"
DETERMINISTIC_GPU_FLAG = "--xla_gpu_deterministic_ops=true"

_ALIASES = {"bfloat16": "default", "tensorfloat32": "high", "float32": "highest", "fastest": "default"}


def check(name: str) -> str:
    """``name`` canonical (one of :data:`PRECISIONS`; JAX's aliases bfloat16 / tensorfloat32 /
    float32 accepted), or a ValueError listing the choices."""
    n = str(name).strip().lower()
    n = _ALIASES.get(n, n)
    if n not in PRECISIONS:
        raise ValueError(f"precision {name!r}: expected one of {', '.join(PRECISIONS)} "
                         "('highest' = full float32 on GPU/TPU; 'default' = TF32 / bfloat16 there)")
    return n


def current() -> str | None:
    """The precision in effect for code traced now (None: nobody chose one, the platform default)."""
    v = jax.config.jax_default_matmul_precision
    return None if v is None else check(v)


@contextlib.contextmanager
def use(name: str | None):
    """Trace and run the block's JAX code at precision ``name`` (None: leave the setting alone)."""
    if name is None:
        yield
        return
    with jax.default_matmul_precision(check(name)):
        yield


def evaluation(fn: Callable) -> Callable:
    """Decorator for evaluation entry points: run ``fn`` at :data:`EVAL_DEFAULT` ("highest") unless
    a precision was chosen already (by the caller's :func:`use`, ``--precision``, or JAX's own
    config / ``JAX_DEFAULT_MATMUL_PRECISION``), which then wins."""

    @functools.wraps(fn)
    def wrapped(*args, **kwargs):
        if current() is not None:
            return fn(*args, **kwargs)
        with use(EVAL_DEFAULT):
            return fn(*args, **kwargs)

    return wrapped


def enable_deterministic(*, env=None) -> bool:
    """Ask XLA:GPU for deterministic ops (:data:`DETERMINISTIC_GPU_FLAG` in ``XLA_FLAGS``) so a
    resumed GPU run repeats the uninterrupted one bit for bit. Must run before JAX creates its
    backend (a RuntimeError otherwise, since the flag would silently do nothing). Returns False,
    changing nothing, when the installed jaxlib does not know the flag (XLA aborts on unknown
    flags)."""
    from advjax import xla_flags

    if "xla_gpu_deterministic_ops" in (os.environ if env is None else env).get("XLA_FLAGS", ""):
        return True
    if xla_flags.backend_initialized():
        raise RuntimeError("enable_deterministic: JAX has already created its backend, so XLA_FLAGS is no "
                           "longer read; call it before the first JAX computation (or set XLA_FLAGS="
                           f"{DETERMINISTIC_GPU_FLAG} in the environment)")
    return xla_flags.add(DETERMINISTIC_GPU_FLAG, env=env)
