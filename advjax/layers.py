"""Capture of hidden-layer outputs, in execution order (DESIGN.md, "Core contracts").

"Layer l" in LSA (Khalooei et al., comparison measure per learnable layer, Alg. 1-2), HLDR
(Schwartz & Ditzler, latent disparity over hidden layers) and SAT (Jin et al., per-layer feature
shifts) is an index into the ordered mapping returned here:

* ``kind="learnable"``: the output of every ``nn.Conv`` / ``nn.Dense`` (incl. the fast conv of
  :mod:`advjax.models.ops`, which is an ``nn.Conv``), in the order the layers run;
* ``kind="activation"``: the output of every :class:`advjax.models.activations.Activation`
  (what the LSA reference code measures).

Outputs are gathered with flax's ``capture_intermediates``. flax stores them in nested dicts,
whose per-level insertion order is not the execution order (e.g. a pre-activation block's shortcut
conv runs before its ``conv1``); the capture filter is called exactly once per module call in
execution order, so it records the call sequence and the mapping is built from that record. The
record is made while tracing, so the order is static: identical across calls, under ``jit``,
``vmap`` and ``grad``. The mapping is a ``collections.OrderedDict`` (a pytree that keeps its key
order through jit, unlike ``dict`` whose keys jax sorts). Names are ``/``-joined module paths such
as ``"Conv_0"`` or ``"layer1/block0/conv1"``; a module called twice gets ``"name#1"`` for its
second call.
"""
from __future__ import annotations

import collections
import functools
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from advjax.models.activations import Activation

__all__ = ["KINDS", "capture", "names", "features_fn", "select"]

_LEARNABLE = (nn.Conv, nn.ConvTranspose, nn.ConvLocal, nn.Dense, nn.DenseGeneral, nn.Einsum)
KINDS = ("learnable", "activation")


def _matcher(kind: str) -> Callable[[nn.Module], bool]:
    if kind == "learnable":
        return lambda m: isinstance(m, _LEARNABLE)
    if kind == "activation":
        return lambda m: isinstance(m, Activation)
    raise ValueError(f"unknown capture kind {kind!r}; known: {', '.join(KINDS)}")


def capture(model: nn.Module, variables, x, train: bool = False, kind: str = "learnable"):
    """Run ``model`` on ``x`` and return its logits with the ordered layer outputs.

    Returns ``(logits, feats)`` with ``feats`` an OrderedDict ``name -> output`` in execution
    order; with ``train=True`` (batch norm in training mode) returns
    ``((logits, feats), new_batch_stats)`` where ``new_batch_stats`` is the updated
    ``batch_stats`` collection (``{}`` for models without batch norm). The logits equal
    ``model.apply(variables, x, train=train)`` exactly.
    """
    match = _matcher(kind)
    order: list[tuple[str, ...]] = []

    def filter_fn(mdl: nn.Module, method_name: str) -> bool:
        if method_name == "__call__" and match(mdl):
            order.append(tuple(mdl.path))
            return True
        return False

    mutable = ["batch_stats"] if train else []
    logits, state = model.apply(
        variables, x, train=train, capture_intermediates=filter_fn, mutable=mutable
    )
    inter = state.get("intermediates", {})
    feats: collections.OrderedDict[str, Any] = collections.OrderedDict()
    seen: collections.Counter = collections.Counter()
    for path in order:
        node = inter
        for part in path:
            node = node[part]
        k = seen[path]
        seen[path] += 1
        name = "/".join(path) + (f"#{k}" if k else "")
        feats[name] = node["__call__"][k]
    if train:
        return (logits, feats), state.get("batch_stats", {})
    return logits, feats


@functools.lru_cache(maxsize=256)
def _names_cached(model: nn.Module, shape: tuple[int, ...], kind: str) -> tuple[str, ...]:
    result: list[str] = []

    def trace(x):
        variables = model.init(jax.random.key(0), x, train=False)
        _, feats = capture(model, variables, x, kind=kind)
        result.extend(feats)
        return jnp.zeros(())

    jax.eval_shape(trace, jax.ShapeDtypeStruct((1, *shape), jnp.float32))
    return tuple(result)


def names(model: nn.Module, input_shape: Sequence[int] | None = None, kind: str = "learnable"):
    """The layer names :func:`capture` returns, in order (abstract trace: no compute).

    ``input_shape`` is the per-example shape; default ``model.input_shape``.
    """
    _matcher(kind)
    shape = tuple(input_shape if input_shape is not None else getattr(model, "input_shape"))
    return list(_names_cached(model, shape, kind))


def select(feats, layers):
    """Pick layers from an ordered ``feats`` mapping by index (negative allowed) or name.

    ``layers`` is an int, a str, or a sequence of them; None returns ``feats`` unchanged. Returns
    an OrderedDict in the requested order. Unknown names / out-of-range indices raise ValueError.
    """
    if layers is None:
        return feats
    if isinstance(layers, (int, str)):
        layers = [layers]
    keys = list(feats)
    out: collections.OrderedDict[str, Any] = collections.OrderedDict()
    for layer in layers:
        if isinstance(layer, bool) or not isinstance(layer, (int, str)):
            raise ValueError(f"layers must be ints or names, got {layer!r}")
        if isinstance(layer, int):
            if not -len(keys) <= layer < len(keys):
                raise ValueError(
                    f"layer index {layer} out of range for {len(keys)} layers: {keys}"
                )
            name = keys[layer]
        else:
            if layer not in feats:
                raise ValueError(f"unknown layer {layer!r}; known: {keys}")
            name = layer
        out[name] = feats[name]
    return out


def features_fn(model: nn.Module, kind: str = "learnable", layers=None) -> Callable:
    """``features_fn(variables, x) -> (logits, feats)`` in eval mode, for feature-level attacks
    and regularizers; ``layers`` optionally restricts ``feats`` (see :func:`select`)."""
    _matcher(kind)

    def fn(variables, x):
        logits, feats = capture(model, variables, x, train=False, kind=kind)
        return logits, select(feats, layers)

    return fn
