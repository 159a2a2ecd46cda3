"""oneDNN convolutions for XLA:CPU, called through ``jax.ffi`` (optional: ``pip install 'advjax[onednn]'``).

XLA:CPU's own convolutions leave some layers well short of what this CPU can do (Model B's
16 -> 32 5x5 input gradient at batch 128: 35.5 ms in XLA, 19.1 ms in oneDNN, 19.9 ms in PyTorch;
benchmarks/bench_conv_layers.py, figures in benchmarks/README.md, session 6). This module
compiles ``onednn_conv.cc`` (three XLA FFI handlers: forward, backward-data, backward-weights;
NHWC/HWIO float32) against the oneDNN of the
``onednn-cpu-gomp`` / ``onednn-devel-cpu-gomp`` wheels, once, into a cache directory, and
registers them as CPU custom calls. :mod:`advjax.models.ops` routes the layers where oneDNN was
measured faster to them; everything else, and every non-CPU backend, keeps XLA's convolution.

The three functions here are bilinear and each one's derivative is written with the other two,
so gradients of any order (FGSM-GA's double backprop) stay on oneDNN:

* ``conv(x, w)``;  ``conv_backward_data(g, w)`` = d<conv(x, w), g>/dx;
  ``conv_backward_weights(x, g)`` = d<conv(x, w), g>/dw.

Selection (environment variable ``ADVJAX_CONV``, read when a model is traced):
``auto`` (default) uses oneDNN when the extra is installed and the build succeeds, silently
keeping XLA otherwise; ``xla`` never uses it; ``onednn`` requires it and raises, saying why, when
it is unavailable or when JAX's default backend is not the CPU. Either way oneDNN appears only in
the CPU branch of each layer (``lax.platform_dependent``, :mod:`advjax.models.platform`), so a
program exported for CUDA or TPU from this host holds XLA's convolutions, never these FFI calls. ``ADVJAX_NATIVE_CACHE`` moves the build cache (default
``~/.cache/advjax/native``); ``ADVJAX_ONEDNN_ROOT`` points at a oneDNN install (``include/`` and
``lib/``) other than the wheels'. oneDNN runs its own OpenMP threads (``OMP_NUM_THREADS``).

Data parallel: every call is a ``custom_partitioning`` op whose activations may be sharded on
the batch axis (the kernel gradient is summed across shards), so a jitted step over a
``NamedSharding``-sharded batch runs each device's share, as XLA's own convolution does.
``jax.vmap`` folds a mapped axis of the activations into the batch when the kernel is shared,
and maps sequentially (``lax.map``) otherwise.

Every call is given its exact geometry (:func:`_exact_geometry`): oneDNN 3.2 returned wrong
kernel gradients, on some calls only, when the last input rows were not read (1x1 stride 2 on an
even map, as in ResNet's shortcuts).

Limits: float32 only; forward-mode autodiff is not defined (as for every ``custom_vjp`` conv in
advjax: use ``fast_conv=False`` for ``jax.jvp``/``jax.hessian``).
"""
from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import jax
import numpy as np

__all__ = ["MODES", "mode", "status", "enabled", "conv", "conv_backward_data", "conv_backward_weights"]

MODES = ("auto", "xla", "onednn")
_SOURCE = Path(__file__).with_name("onednn_conv.cc")
_TARGETS = {
    "fwd": ("advjax_onednn_conv_fwd", "AdvjaxOnednnConvFwd"),
    "bwd_data": ("advjax_onednn_conv_bwd_data", "AdvjaxOnednnConvBwdData"),
    "bwd_weights": ("advjax_onednn_conv_bwd_weights", "AdvjaxOnednnConvBwdWeights"),
}


def mode() -> str:
    """The ``ADVJAX_CONV`` setting, validated."""
    m = os.environ.get("ADVJAX_CONV", "auto").strip().lower() or "auto"
    if m not in MODES:
        raise ValueError(f"ADVJAX_CONV={m!r}: expected one of {MODES}")
    return m


def _roots() -> list[Path]:
    roots = []
    if os.environ.get("ADVJAX_ONEDNN_ROOT"):
        roots.append(Path(os.environ["ADVJAX_ONEDNN_ROOT"]))
    roots += [Path(sys.prefix), Path(sys.base_prefix), Path("/usr/local"), Path("/usr")]
    return roots


def _find_onednn() -> tuple[Path, Path]:
    """(include dir, lib dir) of a oneDNN 3.x with the OpenMP (or sequential) CPU runtime."""
    looked = []
    for root in _roots():
        inc, lib = root / "include", root / "lib"
        looked.append(str(root))
        if (inc / "oneapi" / "dnnl" / "dnnl.hpp").is_file() and any(lib.glob("libdnnl.so*")):
            cfg = (inc / "oneapi" / "dnnl" / "dnnl_config.h").read_text(errors="replace")
            if "DNNL_RUNTIME_SYCL" in cfg.split("define DNNL_CPU_RUNTIME", 1)[-1].splitlines()[0]:
                continue  # the SYCL build needs Intel's compiler runtime; not usable here
            return inc, lib
    raise FileNotFoundError(
        "oneDNN not found (looked for include/oneapi/dnnl/dnnl.hpp and lib/libdnnl.so under "
        + ", ".join(looked)
        + "); install it with `pip install 'advjax[onednn]'` or set ADVJAX_ONEDNN_ROOT"
    )


def _cache_dir() -> Path:
    return Path(os.environ.get("ADVJAX_NATIVE_CACHE", Path.home() / ".cache" / "advjax" / "native"))


def _build() -> Path:
    inc, lib = _find_onednn()
    ffi_inc = Path(jax.ffi.include_dir())
    cxx = os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++")
    if cxx is None:
        raise FileNotFoundError("no C++ compiler (g++ or c++) on PATH to build the oneDNN convolutions")
    src = _SOURCE.read_bytes()
    tag = hashlib.sha256(src + str(inc).encode() + str(lib).encode() + jax.__version__.encode()).hexdigest()[:16]
    out = _cache_dir() / f"libadvjax_onednn_{tag}.so"
    if out.is_file():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=out.parent)
    os.close(fd)
    cmd = [cxx, "-O2", "-std=c++17", "-shared", "-fPIC", "-w", str(_SOURCE), f"-I{inc}", f"-I{ffi_inc}",
           f"-L{lib}", "-ldnnl", f"-Wl,-rpath,{lib}", "-o", tmp]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        os.unlink(tmp)
        raise RuntimeError("building the oneDNN convolutions failed:\n" + " ".join(cmd) + "\n" + res.stderr[-4000:])
    os.replace(tmp, out)  # atomic: concurrent builders (pytest workers) never see a partial file
    return out


@functools.cache
def _load() -> tuple[bool, str]:
    try:
        path = _build()
        lib = ctypes.cdll.LoadLibrary(str(path))
        for target, symbol in _TARGETS.values():
            jax.ffi.register_ffi_target(target, jax.ffi.pycapsule(getattr(lib, symbol)), platform="cpu")
    except Exception as e:  # noqa: BLE001 -- reported through status()
        return False, f"{type(e).__name__}: {e}"
    return True, str(path)


def status() -> tuple[bool, str]:
    """(usable, the built library's path or the reason it is not usable)."""
    return _load()


def enabled(backend: str | None = None) -> bool:
    """Whether convolutions on ``backend`` (default: JAX's default backend) go to oneDNN.

    The model layers ask with ``backend="cpu"`` when they trace their CPU branch; programs lowered
    for another platform never contain it (:mod:`advjax.models.platform`). In ``auto`` mode a
    process whose computations run elsewhere (JAX's default backend is a GPU or TPU) does not use
    oneDNN even in CPU branches (no build on an accelerator host). ``ADVJAX_CONV=onednn`` there is
    a RuntimeError, not a silent False: the setting cannot be honoured where the work runs."""
    m = mode()
    if m == "xla":
        return False
    default = jax.default_backend()
    if m == "onednn" and default != "cpu":
        raise RuntimeError(
            f"ADVJAX_CONV=onednn, but JAX runs computations on {default!r}: the oneDNN convolutions "
            "are an XLA:CPU extension and cannot run there. Unset ADVJAX_CONV (or set it to 'auto' or "
            "'xla') on accelerator hosts; programs for GPU/TPU use XLA's own convolutions.")
    if default != "cpu" or (backend or "cpu") != "cpu":
        return False
    ok, why = _load()
    if not ok and m == "onednn":
        raise RuntimeError(f"ADVJAX_CONV=onednn but the oneDNN convolutions are unavailable: {why}")
    return ok


# --------------------------------------------------------------------------------------------
# the three bilinear operations, each differentiable through the other two
# --------------------------------------------------------------------------------------------
def _attrs(strides, pads):
    (plh, phh), (plw, phw) = pads
    return dict(sh=np.int64(strides[0]), sw=np.int64(strides[1]), plh=np.int64(plh), phh=np.int64(phh),
                plw=np.int64(plw), phw=np.int64(phw))


def _ffi(kind, out_shape, a, b, strides, pads):
    """The bare custom call on dense operands (one device's shard)."""
    return jax.ffi.ffi_call(_TARGETS[kind][0], jax.ShapeDtypeStruct(tuple(out_shape), a.dtype))(
        a, b, **_attrs(strides, pads))


# Data parallel: a custom call has no sharding rule of its own, so under jit with a batch-sharded
# input XLA would all-gather the batch and run the whole convolution on every device. Each call
# is therefore a custom_partitioning op: the batch axis of the activations (x, the output
# cotangent g) may be sharded, everything else is replicated; forward and input gradient are
# computed shard by shard, the kernel gradient (a sum over the batch) is summed across the shards
# with psum. On one device the op is inlined (no partitioning machinery).
_RULES = {  # operands -> result, einsum-like (b: batch; the only factor that may be sharded)
    "fwd": "b h w c, kh kw c o -> b ho wo o",
    "bwd_data": "b ho wo o, kh kw c o -> b h w c",
    "bwd_weights": "b h w c, b ho wo o -> kh kw c o",
}


def _batch_axes(sharding):
    spec = getattr(sharding, "spec", None)
    return spec[0] if spec else None


def _make_partitioned(kind):
    from jax.experimental.custom_partitioning import custom_partitioning
    from jax.sharding import NamedSharding, PartitionSpec as P

    def op(a, b, out_shape, strides, pads):
        return _ffi(kind, out_shape, a, b, strides, pads)

    op = custom_partitioning(op, static_argnums=(2, 3, 4))
    weights_out = kind == "bwd_weights"

    def shardings(mesh, arg_shapes):
        axes = _batch_axes(arg_shapes[0].sharding)
        act = NamedSharding(mesh, P(axes))
        rep = NamedSharding(mesh, P())
        args = (act, act) if weights_out else (act, rep)
        return axes, args, (rep if weights_out else act)

    def infer(out_shape, strides, pads, mesh, arg_shapes, result_shape):
        return shardings(mesh, arg_shapes)[2]

    def partition(out_shape, strides, pads, mesh, arg_shapes, result_shape):
        axes, arg_sh, out_sh = shardings(mesh, arg_shapes)
        names = () if axes is None else (axes if isinstance(axes, tuple) else (axes,))
        parts = int(np.prod([mesh.shape[n] for n in names])) if names else 1
        local = tuple(out_shape) if weights_out else (out_shape[0] // parts, *out_shape[1:])

        def lower(a, b):
            r = _ffi(kind, local, a, b, strides, pads)
            return jax.lax.psum(r, names) if (weights_out and names) else r

        return mesh, lower, out_sh, arg_sh

    op.def_partition(
        partition,
        infer_sharding_from_operands=infer,
        propagate_user_sharding=lambda *a: a[-1].sharding,
        sharding_rule=_RULES[kind],
        reduction_factors=("b",) if weights_out else (),
        # every factor but the batch, in the order they first appear (Shardy wants them sorted)
        need_replication_factors=tuple(dict.fromkeys(
            f for f in _RULES[kind].replace(",", " ").replace("->", " ").split() if f != "b")),
    )
    return op


@functools.cache
def _partitioned(kind):
    return _make_partitioned(kind)


def _call(kind, out_shape, a, b, strides, pads):
    """One oneDNN operation on NHWC/HWIO float32 operands; jit-, shard- and vmap-able."""
    if a.dtype != np.float32 or b.dtype != np.float32:
        raise TypeError(f"oneDNN convolutions take float32, got {a.dtype} and {b.dtype}")
    ok, why = _load()  # registers the FFI targets (once) before the first call is traced
    if not ok:
        raise RuntimeError(f"the oneDNN convolutions are unavailable: {why}")
    out_shape = tuple(int(d) for d in out_shape)

    @jax.custom_batching.custom_vmap
    def call(a, b):
        return _partitioned(kind)(a, b, out_shape, strides, pads)

    @call.def_vmap
    def _vmapped(axis_size, in_batched, a, b):
        a_batched, b_batched = in_batched
        if a_batched and not b_batched and kind != "bwd_weights":
            # a batch of batches of activations against one kernel: fold the vmapped axis into N
            v, n = a.shape[:2]
            out = _call(kind, (v * n, *out_shape[1:]), a.reshape(v * n, *a.shape[2:]), b, strides, pads)
            return out.reshape(v, n, *out_shape[1:]), True
        a = a if a_batched else jax.numpy.broadcast_to(a, (axis_size, *a.shape))
        b = b if b_batched else jax.numpy.broadcast_to(b, (axis_size, *b.shape))
        return jax.lax.map(lambda ab: _call(kind, out_shape, ab[0], ab[1], strides, pads), (a, b)), True

    return call(a, b)


def _out_hw(x_shape, w_shape, strides, pads):
    return tuple((x_shape[1 + i] + pads[i][0] + pads[i][1] - w_shape[i]) // strides[i] + 1 for i in range(2))


def _exact_geometry(x_shape, w_shape, strides, pads):
    """(rows and columns of x the convolution reads, pads) with no input or padding left over.

    When (h + pad_lo + pad_hi - kh) is not a multiple of the stride (a stride-2 layer on an even
    map: ResNet's 1x1 shortcuts, 3x3 stride-2 convs), the last rows and columns of x (or of its
    high padding) are never read. oneDNN 3.2's kernel-gradient kernels then return wrong values
    on some calls (they depend on the calling thread; measured on the 1x1 stride-2 shortcut), so
    every call is given the exact geometry: the high padding cut first, then the unread input."""
    ho_wo = _out_hw(x_shape, w_shape, strides, pads)
    used, new_pads = [], []
    for i in range(2):
        n, (lo, hi) = x_shape[1 + i], pads[i]
        extra = n + lo + hi - ((ho_wo[i] - 1) * strides[i] + w_shape[i])
        cut_pad = min(hi, extra)
        used.append(n - (extra - cut_pad))
        new_pads.append((lo, hi - cut_pad))
    return tuple(used), tuple(new_pads)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def conv(x, w, strides, pads):
    """``lax.conv_general_dilated(x, w, strides, pads)`` for NHWC x, HWIO w, float32."""
    ho, wo = _out_hw(x.shape, w.shape, strides, pads)
    (h, w_), pads = _exact_geometry(x.shape, w.shape, strides, pads)
    return _call("fwd", (x.shape[0], ho, wo, w.shape[3]), x[:, :h, :w_], w, strides, pads)


def _conv_fwd(x, w, strides, pads):
    return conv(x, w, strides, pads), (x, w)


def _conv_bwd(strides, pads, res, g):
    x, w = res
    return conv_backward_data(g, w, x.shape, strides, pads), conv_backward_weights(x, g, w.shape, strides, pads)


conv.defvjp(_conv_fwd, _conv_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def conv_backward_data(g, w, x_shape, strides, pads):
    """The input gradient of :func:`conv` at any x of shape ``x_shape``, for the cotangent g."""
    (h, w_), exact = _exact_geometry(x_shape, w.shape, strides, pads)
    dx = _call("bwd_data", (x_shape[0], h, w_, x_shape[3]), g, w, strides, exact)
    return jax.numpy.pad(dx, ((0, 0), (0, x_shape[1] - h), (0, x_shape[2] - w_), (0, 0)))


def _bwd_data_fwd(g, w, x_shape, strides, pads):
    return conv_backward_data(g, w, x_shape, strides, pads), (g, w)


def _bwd_data_bwd(x_shape, strides, pads, res, c):
    g, w = res
    return conv(c, w, strides, pads), conv_backward_weights(c, g, w.shape, strides, pads)


conv_backward_data.defvjp(_bwd_data_fwd, _bwd_data_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def conv_backward_weights(x, g, w_shape, strides, pads):
    """The kernel gradient of :func:`conv` at x for the cotangent g (HWIO, shape ``w_shape``)."""
    (h, w_), exact = _exact_geometry(x.shape, w_shape, strides, pads)
    return _call("bwd_weights", tuple(w_shape), x[:, :h, :w_], g, strides, exact)


def _bwd_weights_fwd(x, g, w_shape, strides, pads):
    return conv_backward_weights(x, g, w_shape, strides, pads), (x, g)


def _bwd_weights_bwd(w_shape, strides, pads, res, c):
    x, g = res
    return conv_backward_data(g, c, x.shape, strides, pads), conv(x, c, strides, pads)


conv_backward_weights.defvjp(_bwd_weights_fwd, _bwd_weights_bwd)
