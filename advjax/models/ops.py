"""Shared building blocks of the advjax models: input checks, normalization, a fast conv, pooling.

* :func:`check_input` validates a model input (rank, per-example shape, dtype always; NaN and the
  [0, 1] pixel box only when the array is concrete, so jitted code keeps no host round-trip).
* :class:`Normalize` is every model's first layer: ``(x - mean) / std`` in pixel space, so attacks
  work on [0, 1] pixels and every epsilon means what the papers mean.
* :func:`Conv` builds a ``flax.linen.Conv`` whose input gradient is an ordinary NHWC/HWIO
  convolution (``jax.custom_vjp``). JAX writes the input gradient of a conv as a convolution with
  kernel layout ``01oi``; XLA:CPU canonicalizes that layout only in the entry computation, so
  inside a ``lax.fori_loop``/``lax.scan`` body (every iterative attack) it falls back to XLA's
  unoptimized element-wise convolution. Writing the input gradient as a plain convolution of the
  (stride-dilated, padded) output cotangent with the spatially flipped, in/out-swapped kernel gives
  the same numbers and keeps the fast path (DESIGN.md, "Measured on these machines", lever 1).
  The result is an ``nn.Conv`` instance, so layer capture sees it as a Conv.
  :func:`conv_plan` picks the algorithm per layer shape: a fused sum of taps for the forward with
  <= 3 input channels, and a GEMM + col2im input gradient where the transposed conv would read
  mostly zeros or write <= 4 channels (measured per layer, benchmarks/README.md).
  Forward mode: a ``custom_vjp`` has no JVP rule, so under ``jax.jvp``/``jax.jacfwd``/``jax.hessian``
  (tangents seen at trace time) the layer traces its portable form, ``lax.conv_general_dilated``
  (:func:`advjax.models.platform.per_platform`); reverse mode keeps the fast path. A function jitted
  *outside* the ``jvp`` (``jax.jvp(jax.jit(f))``) still fails with JAX's "can't apply forward-mode
  autodiff (jvp) to a custom_vjp function": jit outside the jvp, trace inside
  :func:`advjax.models.platform.portable_ops`, or build the model with ``fast_conv=False``.
* :func:`max_pool` pools by reshape + max instead of ``reduce_window`` (whose gradient lowers to
  a scatter; lever 3), with a custom JVP giving each window's gradient to its first maximum (as
  flax's ``nn.max_pool`` and PyTorch's ``max_pool2d``).
* :func:`batch_norm` builds the models' batch norm (:mod:`advjax.models.batch_norm`).

Platforms. Everything above is a CPU lever, chosen per *lowering* platform
(:func:`advjax.models.platform.per_platform`, i.e. ``lax.platform_dependent``; never
``jax.default_backend()`` at trace time, which would bake CPU choices and the CPU-only oneDNN FFI
targets into a program exported for, or run on, an accelerator). For CUDA, ROCm and TPU the
program holds XLA's own operations with JAX's own derivative rules: ``lax.conv_general_dilated``
(its input gradient is a convolution with a ``reverse``-d kernel, the pattern XLA:GPU maps to
cuDNN's backward-data kernel; the hand-built zero-interleaved gradient would run a dense
convolution over a 4x larger tensor on stride-2 layers), ``lax.reduce_window`` max pooling (the
same first-maximum gradient through XLA's ``select_and_scatter``; the reshape splits W next to
the channel axis, and TPUs tile the last two axes) and flax-style batch-norm reductions. Both
implementations give the same numbers (tests/test_accelerator.py).
"""
from __future__ import annotations

import functools
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from advjax.models.batch_norm import BatchNorm
from advjax.models.platform import per_platform
from advjax.native import onednn

__all__ = [
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "check_input",
    "Normalize",
    "Conv",
    "fast_conv_general_dilated",
    "conv_plan",
    "max_pool",
    "global_avg_pool",
    "batch_norm",
    "PERTURBATIONS",
    "perturbation_point",
]

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2471, 0.2435, 0.2616)


# --------------------------------------------------------------------------------------------
# input validation
# --------------------------------------------------------------------------------------------
def _is_concrete(x) -> bool:
    return not isinstance(x, jax.core.Tracer)


def check_input(x, input_shape: Sequence[int], *, box: bool = True, name: str = "model") -> None:
    """Raise ValueError if ``x`` is not a valid model input.

    Checked at trace time (free under jit): ``x`` is a float array of rank ``len(input_shape)+1``
    (a batch) or ``len(input_shape)`` (one example) whose trailing dims equal ``input_shape``.
    Checked only when ``x`` is concrete (not a jax Tracer): no NaN, and with ``box=True`` every
    value in [0, 1] (pixels; normalization happens inside the model).
    """
    input_shape = tuple(int(d) for d in input_shape)
    shape = tuple(np.shape(x))
    dtype = getattr(x, "dtype", None)
    if dtype is None:
        raise ValueError(f"{name}: input must be an array, got {type(x).__name__}")
    if not jnp.issubdtype(dtype, jnp.floating):
        raise ValueError(
            f"{name}: input dtype must be floating (pixels as float in [0, 1]), got {dtype}; "
            "convert uint8 images with x.astype(jnp.float32) / 255"
        )
    k = len(input_shape)
    if len(shape) not in (k, k + 1):
        raise ValueError(
            f"{name}: input must have rank {k + 1} (batch, {', '.join(map(str, input_shape))}) "
            f"or rank {k} (one example); got shape {shape} (rank {len(shape)})"
        )
    trailing = shape[-k:] if k else ()
    if trailing != input_shape:
        if k >= 3 and trailing[-1] != input_shape[-1]:
            raise ValueError(
                f"{name}: expected {input_shape[-1]} channels (NHWC, last axis), got "
                f"{trailing[-1]} in input of shape {shape}"
            )
        raise ValueError(
            f"{name}: expected per-example shape {input_shape}, got {trailing} (input shape "
            f"{shape}); set the model's input_shape field for other sizes"
        )
    if _is_concrete(x):
        xa = np.asarray(x, dtype=np.float32)
        if np.isnan(xa).any():
            raise ValueError(f"{name}: input contains NaN")
        if box and xa.size and (xa.min() < 0.0 or xa.max() > 1.0):
            raise ValueError(
                f"{name}: pixels must lie in [0, 1] (normalization is the model's first layer); "
                f"got range [{xa.min():.4g}, {xa.max():.4g}]"
            )


# --------------------------------------------------------------------------------------------
# normalization
# --------------------------------------------------------------------------------------------
class Normalize(nn.Module):
    """``(x - mean) / std`` per channel (last axis); identity when both are None.

    Computed in float32 and cast to ``dtype`` (the compute dtype of the model).
    """

    mean: Sequence[float] | None = None
    std: Sequence[float] | None = None
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        x = jnp.asarray(x, jnp.float32)
        if self.mean is not None:
            x = x - jnp.asarray(self.mean, jnp.float32)
        if self.std is not None:
            std = jnp.asarray(self.std, jnp.float32)
            if np.any(np.asarray(self.std) <= 0):
                raise ValueError(f"Normalize: std must be > 0, got {self.std}")
            x = x / std
        return x.astype(self.dtype)


# --------------------------------------------------------------------------------------------
# convolution with a plain-conv input gradient
# --------------------------------------------------------------------------------------------
_NHWC = ("NHWC", "HWIO", "NHWC")


def _plain_conv(x, w, strides, pads, precision):
    return lax.conv_general_dilated(
        x, w, strides, pads, dimension_numbers=_NHWC, precision=precision
    )


# Algorithm choice, per layer shape (static). Measured on the 2-core AMD EPYC of these machines
# (XLA:CPU, YNNPACK fusion off; benchmarks/README.md, "Per-layer conv algorithms"):
# * forward with few input channels (Model B's 1 -> 16 5x5 at batch 128: 4.2 ms as a convolution,
#   0.73 ms as 25 fused multiply-adds; PyTorch 1.07 ms): XLA's convolution packs a reduction of
#   only kh*kw*cin terms badly, a sum of shifted, broadcast products fuses into one loop.
# * input gradient as GEMM + col2im (``g @ w^T`` gives every pixel's kh*kw contributions, shifted
#   sums place them) instead of the padded full correlation, when that correlation mostly reads
#   zeros (input area >= 2x the output area: stride 2, or 5x5 on a 10x10 map; Model B's 32 -> 64
#   conv 11.3 -> 6.6 ms, ResNet-18's stride-2 convs 10-45% faster) or when few input channels make
#   the transposed conv's output narrow (1 or 3 channels: 8.2 -> 2.2 ms, 5.8 -> 1.6 ms). Where
#   neither holds (Model B's 16 -> 32, ResNet's stride-1 3x3) col2im's shifted sums cost more than
#   the convolution (20 -> 60 ms), so the convolution stays.
# Other platforms (GPU, TPU) always take the plain convolution, chosen at lowering by
# fast_conv_general_dilated's per_platform: nothing here was measured there.
_TAPS_MAX_CIN = 3
_COL2IM_MAX_CIN = 4
_COL2IM_MIN_AREA_RATIO = 2.0
_COL2IM_MAX_ELEMENTS = 1 << 26  # the g @ w^T buffer; 256 MiB of float32
# oneDNN (advjax.native.onednn, when installed), per operation, where it beat the choice above
# (benchmarks/bench_conv_layers.py, batch 128, 2026-12-01; benchmarks/README.md, session 6): the
# forward of convs with >= 16 input channels whose output is not much smaller than their input
# (not stride 2, not Model B's 5x5 on 10x10, where XLA's forward was as fast; ResNet-18's 3x3s
# 10-20% faster), the input gradient of every k x k (k > 1) conv with > 4 input channels (Model
# B's 16 -> 32: 35.5 -> 19.1 ms; ResNet-18's 3x3s 15-45% faster), the kernel gradient of layers
# with a large output map and few channels (ResNet-20's 16 -> 16: 20.8 -> 10.6 ms; ResNet-18's
# 1x1 shortcut 32.1 -> 10.1). XLA keeps the kernel gradient of the wide, small-map layers
# (512 x 512 at 4x4: oneDNN 261 ms against XLA's 137) and the taps / col2im choices above.
_ONEDNN_FWD_MIN_CIN = 16
_ONEDNN_DW_MIN_AREA = 256
_ONEDNN_DW_MAX_CIN_COUT = 64 * 128


def conv_plan(
    x_shape, w_shape, strides, pads, dtype=jnp.float32, backend: str | None = None, native: bool | None = None
) -> tuple[str, str, str]:
    """(forward, input gradient, kernel gradient) algorithms :func:`fast_conv_general_dilated`
    uses for a 2-D NHWC/HWIO convolution: ``("taps" | "conv" | "onednn", "col2im" | "conv" |
    "onednn", "conv" | "onednn")``. See the notes above.

    The choices were measured on XLA:CPU only; on any other backend (``backend``, default
    ``jax.default_backend()``) the plan is the plain convolution every way (cuDNN / TPU convs).
    The model layers do not depend on that default: their CPU branch asks for ``backend="cpu"``
    and programs for other platforms never contain it (:func:`fast_conv_general_dilated`).
    ``native`` says whether the oneDNN convolutions may be used (default:
    :func:`advjax.native.onednn.enabled`, i.e. the ``[onednn]`` extra is installed and
    ``ADVJAX_CONV`` is not ``xla``)."""
    if (backend or jax.default_backend()) != "cpu":
        return "conv", "conv", "conv"
    kh, kw, cin, cout = (int(d) for d in w_shape)
    n, h, w = (int(d) for d in x_shape[:3])
    nonneg = all(a >= 0 and b >= 0 for a, b in pads)
    ho = (h + pads[0][0] + pads[0][1] - kh) // strides[0] + 1
    wo = (w + pads[1][0] + pads[1][1] - kw) // strides[1] + 1
    f32 = jnp.dtype(dtype) == jnp.float32
    fwd = "taps" if (f32 and nonneg and cin <= _TAPS_MAX_CIN) else "conv"
    col2im = (
        f32
        and nonneg
        and ho > 0
        and wo > 0
        and n * ho * wo * kh * kw * cin <= _COL2IM_MAX_ELEMENTS
        and (cin <= _COL2IM_MAX_CIN or h * w >= _COL2IM_MIN_AREA_RATIO * ho * wo)
    )
    dx = "col2im" if col2im else "conv"
    dw = "conv"
    if native is None:
        from advjax.native import onednn

        native = onednn.enabled(backend)
    if native and f32 and nonneg and ho > 0 and wo > 0:
        if cin >= _ONEDNN_FWD_MIN_CIN and h * w < _COL2IM_MIN_AREA_RATIO * ho * wo:
            fwd = "onednn"
        if cin > _COL2IM_MAX_CIN and kh * kw > 1:
            dx = "onednn"
        if ho * wo >= _ONEDNN_DW_MIN_AREA and cin * cout <= _ONEDNN_DW_MAX_CIN_COUT:
            dw = "onednn"
    return fwd, dx, dw


def _taps_conv(x, w, strides, pads):
    """The convolution as a sum of kh*kw*cin shifted, broadcast products (one fused loop)."""
    kh, kw, cin, _ = w.shape
    sh, sw = strides
    xp = lax.pad(x, jnp.zeros((), x.dtype), ((0, 0, 0), (*pads[0], 0), (*pads[1], 0), (0, 0, 0)))
    ho = (xp.shape[1] - kh) // sh + 1
    wo = (xp.shape[2] - kw) // sw + 1
    out = None
    for i in range(kh):
        for j in range(kw):
            win = lax.slice(xp, (0, i, j, 0),
                            (xp.shape[0], i + (ho - 1) * sh + 1, j + (wo - 1) * sw + 1, cin),
                            (1, sh, sw, 1))
            for c in range(cin):
                term = win[..., c:c + 1] * w[i, j, c]
                out = term if out is None else out + term
    return out


def _conv_forward(x, w, strides, pads, precision):
    fwd = conv_plan(x.shape, w.shape, strides, pads, x.dtype, backend="cpu")[0] if precision is None else "conv"
    if fwd == "taps":
        return _taps_conv(x, w, strides, pads)
    if fwd == "onednn":
        return onednn.conv(x, w, strides, pads)
    return _plain_conv(x, w, strides, pads, precision)


def _dx_col2im(x_shape, w, g, strides, pads):
    """Input gradient as ``g @ w^T`` (each output pixel's contribution to its kh x kw window)
    followed by col2im: shifted (stride-dilated) sums, first along W within a kernel row, then
    along H, on the padded input grid, cropped to the input."""
    kh, kw, cin, cout = w.shape
    n, h, wd = x_shape[:3]
    ho, wo = g.shape[1], g.shape[2]
    (pl_h, ph_h), (pl_w, ph_w) = pads
    sh, sw = strides
    hp, wp = h + pl_h + ph_h, wd + pl_w + ph_w
    zero = jnp.zeros((), g.dtype)
    cols = jnp.dot(g, w.reshape(kh * kw * cin, cout).T).reshape(n, ho, wo, kh, kw, cin)
    acc = None
    for i in range(kh):
        row = None
        for j in range(kw):
            t = lax.pad(cols[:, :, :, i, j, :], zero,
                        ((0, 0, 0), (0, 0, 0), (j, wp - j - (wo - 1) * sw - 1, sw - 1), (0, 0, 0)))
            row = t if row is None else row + t
        t = lax.pad(row, zero, ((0, 0, 0), (i, hp - i - (ho - 1) * sh - 1, sh - 1), (0, 0, 0), (0, 0, 0)))
        acc = t if acc is None else acc + t
    return acc[:, pl_h:pl_h + h, pl_w:pl_w + wd, :]


def _dx_transposed_conv(x_shape, w, g, strides, pads, precision):
    """Input gradient as a plain VALID correlation of the stride-dilated, padded cotangent with
    the flipped kernel whose in/out channels are swapped: dx[i] = sum_k g_dilated[i + pl - k] w[k]."""
    kh, kw = w.shape[0], w.shape[1]
    h, wd = x_shape[1], x_shape[2]
    ho, wo = g.shape[1], g.shape[2]
    (pl_h, _), (pl_w, _) = pads
    sh, sw = strides
    lo_h, lo_w = kh - 1 - pl_h, kw - 1 - pl_w
    hi_h = h - (ho - 1) * sh + pl_h - 1
    hi_w = wd - (wo - 1) * sw + pl_w - 1
    gp = lax.pad(
        g,
        jnp.zeros((), g.dtype),
        ((0, 0, 0), (lo_h, hi_h, sh - 1), (lo_w, hi_w, sw - 1), (0, 0, 0)),
    )
    w_t = jnp.swapaxes(w[::-1, ::-1], 2, 3)
    return lax.conv_general_dilated(gp, w_t, (1, 1), "VALID", dimension_numbers=_NHWC, precision=precision)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def _conv_nhwc(x, w, strides, pads, precision):
    return _conv_forward(x, w, strides, pads, precision)


def _conv_nhwc_fwd(x, w, strides, pads, precision):
    return _conv_forward(x, w, strides, pads, precision), (x, w)


def _conv_nhwc_bwd(strides, pads, precision, res, g):
    x, w = res
    _, dx_plan, dw_plan = (
        conv_plan(x.shape, w.shape, strides, pads, x.dtype, backend="cpu") if precision is None else ("conv",) * 3
    )
    if dx_plan == "col2im":
        dx = _dx_col2im(x.shape, w, g, strides, pads)
    elif dx_plan == "onednn":
        dx = onednn.conv_backward_data(g, w, x.shape, strides, pads)
    else:
        dx = _dx_transposed_conv(x.shape, w, g, strides, pads, precision)
    dx = dx.astype(x.dtype)
    # The kernel gradient is dead code, removed by XLA, when only the input gradient is needed,
    # as in every attack.
    if dw_plan == "onednn":
        dw = onednn.conv_backward_weights(x, g, w.shape, strides, pads)
    else:
        _, w_vjp = jax.vjp(lambda w_: _plain_conv(x, w_, strides, pads, precision), w)
        (dw,) = w_vjp(g)
    return dx, dw


_conv_nhwc.defvjp(_conv_nhwc_fwd, _conv_nhwc_bwd)


def fast_conv_general_dilated(
    lhs,
    rhs,
    window_strides,
    padding,
    lhs_dilation=None,
    rhs_dilation=None,
    dimension_numbers=None,
    feature_group_count=1,
    batch_group_count=1,
    precision=None,
    preferred_element_type=None,
):
    """Drop-in for ``lax.conv_general_dilated`` (2-D, NHWC/HWIO) with a plain-conv input gradient
    in programs lowered for the CPU.

    Lowered for any other platform it *is* ``lax.conv_general_dilated`` (JAX's derivative rules,
    cuDNN / TPU convolutions; decided at lowering, see the module docstring). Anything outside the supported case (other layouts, dilation, groups, mixed dtypes) falls back
    to ``lax.conv_general_dilated`` itself, so results never differ.
    """
    nd = lhs.ndim - 2
    ones = (1,) * nd
    dn_ok = False
    if nd == 2:
        want = lax.conv_dimension_numbers(lhs.shape, rhs.shape, _NHWC)
        dn = (
            lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers)
            if dimension_numbers is not None
            else None
        )
        dn_ok = dn == want
    supported = (
        dn_ok
        and tuple(lhs_dilation or ones) == ones
        and tuple(rhs_dilation or ones) == ones
        and feature_group_count == 1
        and batch_group_count == 1
        and preferred_element_type is None
        and lhs.dtype == rhs.dtype
    )
    if supported:
        strides = tuple(int(s) for s in window_strides)
        if isinstance(padding, str):
            pads = lax.padtype_to_pads(lhs.shape[1:3], rhs.shape[0:2], strides, padding)
        else:
            pads = padding
        pads = tuple((int(a), int(b)) for a, b in pads)
        supported = all(p[0] <= k - 1 for p, k in zip(pads, rhs.shape[0:2]))

    def portable(a, b):
        return lax.conv_general_dilated(
            a,
            b,
            window_strides,
            padding,
            lhs_dilation=lhs_dilation,
            rhs_dilation=rhs_dilation,
            dimension_numbers=dimension_numbers,
            feature_group_count=feature_group_count,
            batch_group_count=batch_group_count,
            precision=precision,
            preferred_element_type=preferred_element_type,
        )

    if not supported:
        return portable(lhs, rhs)
    return per_platform(lhs, rhs, cpu=lambda a, b: _conv_nhwc(a, b, strides, pads, precision), default=portable)


def Conv(features: int, kernel_size, *, fast: bool = True, **kwargs) -> nn.Conv:  # noqa: N802
    """An ``nn.Conv`` (NHWC) using :func:`fast_conv_general_dilated` when ``fast`` is True.

    It is a genuine ``flax.linen.Conv`` (auto-named ``Conv_i``), so capture(kind="learnable")
    finds it; ``fast=False`` gives the stock ``nn.Conv`` (forward mode through a function jitted
    outside the ``jvp``; see the module docstring).
    """
    if isinstance(kernel_size, int):
        kernel_size = (kernel_size, kernel_size)
    if fast:
        kwargs["conv_general_dilated"] = fast_conv_general_dilated
    return nn.Conv(features, tuple(kernel_size), **kwargs)


# --------------------------------------------------------------------------------------------
# pooling, batch norm
# --------------------------------------------------------------------------------------------
def _first_max_mask(x6, y):
    """Boolean mask, shaped like ``x6`` ([..., ho, k, wo, k, c]), of the FIRST maximum of each window
    in window order (row-major: the window's top row left to right, then the next row): one True per
    window, at the smallest (row, column) where ``x6 == y``. Written as an unrolled "already found"
    scan over the k*k positions, so XLA fuses it into one element-wise pass."""
    k1, k2 = x6.shape[-4], x6.shape[-2]
    found = jnp.zeros(y.shape, bool)
    rows = []
    for i in range(k1):
        cols = []
        for j in range(k2):
            hit = x6[..., i, :, j, :] == y
            cols.append(hit & ~found)
            found = found | hit
        rows.append(jnp.stack(cols, axis=-2))  # [..., wo, k, c]
    return jnp.stack(rows, axis=-4)  # [..., ho, k, wo, k, c]


@jax.custom_jvp
def _window_max(x6):
    return x6.max(axis=(-4, -2))


@_window_max.defjvp
def _window_max_jvp(primals, tangents):
    (x6,), (t6,) = primals, tangents
    y = x6.max(axis=(-4, -2))
    mask = _first_max_mask(x6, y)
    return y, jnp.sum(jnp.where(mask, t6, jnp.zeros((), t6.dtype)), axis=(-4, -2))


def _reshape_max_pool(x, window):
    *lead, h, w, c = x.shape
    ho, wo = h // window, w // window
    x = x[..., : ho * window, : wo * window, :]
    x = x.reshape(*lead, ho, window, wo, window, c)
    return _window_max(x)


def _reduce_window_max_pool(x, window):
    """flax's ``nn.max_pool(x, (k, k), strides=(k, k))``: ``lax.reduce_window`` with ``max``, whose
    gradient is XLA's ``select_and_scatter`` with ``>=`` (the first maximum in window order)."""
    dims = (1,) * (x.ndim - 3) + (window, window, 1)
    return lax.reduce_window(x, -jnp.inf, lax.max, dims, dims, "VALID")  # a Python -inf: the max monoid


def max_pool(x, window: int = 2):
    """Non-overlapping ``window x window`` max pooling of NHWC ``x`` (VALID: trailing rows/cols
    that do not fill a window are dropped, like ``nn.max_pool(x, (k, k), strides=(k, k))``).

    Lowered for the CPU it is reshape + max: its gradient is a select, not the scatter of
    ``reduce_window`` (lever 3). Lowered for other platforms it is ``lax.reduce_window`` (flax's
    ``nn.max_pool``): the reshape splits W next to the channel axis, which TPUs tile, and the
    accelerators' ``select_and_scatter`` is not the CPU's slow path (decided at lowering,
    :func:`advjax.models.platform.per_platform`).
    Gradient rule, both ways: each window's whole gradient goes to ONE maximum, the first in
    window order (row-major: top row left to right, then the next row), as ``flax.linen.max_pool`` (XLA's
    ``select_and_scatter`` with ``>=``) and PyTorch's ``max_pool2d`` do; ties (a constant MNIST
    background, saturated pixels) are not split evenly as plain autodiff of ``max`` would. The CPU
    version is a ``jax.custom_jvp`` and ``reduce_window`` has JAX's own JVP, so forward mode (``jax.jvp``,
    ``jax.hessian``) works on every platform.
    """
    if isinstance(window, bool) or not isinstance(window, (int, np.integer)) or window < 1:
        raise ValueError(f"max_pool: window must be a positive integer, got {window!r}")
    window = int(window)
    h, w = x.shape[-3], x.shape[-2]
    if h // window == 0 or w // window == 0:
        raise ValueError(f"max_pool: window {window} larger than the {h}x{w} input")
    return per_platform(x, cpu=lambda a: _reshape_max_pool(a, window),
                        default=lambda a: _reduce_window_max_pool(a, window))


def global_avg_pool(x):
    """Mean over the spatial axes of NHWC ``x`` -> [N, C]."""
    return x.mean(axis=(-3, -2))


def batch_norm(train: bool, dtype: Any, name: str | None = None, *, fast: bool = True, **kw) -> nn.Module:
    """BatchNorm with PyTorch's defaults (momentum 0.1 there = 0.9 here, eps 1e-5).

    ``fast=True``: :class:`advjax.models.batch_norm.BatchNorm` (flax's variables and numbers,
    batch statistics reduced as GEMVs; a custom VJP); ``fast=False``: ``flax.linen.BatchNorm``
    (forward-mode autodiff). Models pass their ``fast_conv`` field."""
    cls = BatchNorm if fast else nn.BatchNorm
    return cls(use_running_average=not train, momentum=0.9, epsilon=1e-5, dtype=dtype, name=name, **kw)


def as_logits(x):
    """Logits are returned in float32 whatever the compute dtype."""
    return x.astype(jnp.float32)


# --------------------------------------------------------------------------------------------
# perturbation points (layerwise adversarial training, Sankaranarayanan et al. 2018, Sec. 3.2)
# --------------------------------------------------------------------------------------------
PERTURBATIONS = "perturbations"


def perturbation_point(module: nn.Module, name: str, x):
    """``x + perturbations[name]`` when the ``"perturbations"`` collection passed to ``apply``
    holds an entry ``name`` in ``module``'s scope; otherwise ``x`` itself (the identity: no
    operation is added, so the plain model's numbers are unchanged bit for bit).

    Like flax's ``Module.perturb``, ``jax.grad`` with respect to the passed collection is the
    gradient at this activation from the same backward pass. Unlike it, the collection is never
    created by ``init`` (``init_variables`` and checkpoints hold params and batch_stats only) nor
    by an apply that did not ask for it; ``apply(..., mutable=["perturbations"])`` outside init
    creates the zero entries (used to discover the points' names and shapes, see
    :func:`advjax.methods.layerwise.perturbation_points`). A passed collection may hold only some
    of the points: the others stay the identity."""
    if module.has_variable(PERTURBATIONS, name):
        return x + module.get_variable(PERTURBATIONS, name).astype(x.dtype)
    if not module.is_initializing() and module.is_mutable_collection(PERTURBATIONS):
        module.put_variable(PERTURBATIONS, name, jnp.zeros_like(x))
    return x
