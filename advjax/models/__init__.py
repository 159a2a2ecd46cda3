"""Model registry: ``get_model(name, ...)`` -> a flax.linen Module (docs/CONTRACTS.md, "Models").

Every classifier is ``model.apply(variables, x, train=False) -> logits`` (float32) for NHWC pixels
in [0, 1] (Model A: [N, 2] features), normalizes with its ``mean``/``std`` fields as its first
layer, and has the fields ``num_classes``, ``activation``, ``dtype`` (compute dtype; parameters
stay float32), ``input_shape`` and ``fast_conv`` (conv models: plain-conv input gradient, see
:mod:`advjax.models.ops`).
"""
from __future__ import annotations

import functools
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from advjax.models import activations, ops
from advjax.models.activations import ACTIVATIONS, Activation, get_activation
from advjax.models.mlp import ModelA
from advjax.models.preact_resnet import PreActResNet, preact_resnet18
from advjax.models.resnet import ResNet, cifar_resnet, resnet18, resnet20, resnet56
from advjax.models.small_cnn import ModelB
from advjax.models.vgg import VGG, hldr_vgg
from advjax.models.wide_resnet import WideResNet

__all__ = [
    "ACTIVATIONS",
    "Activation",
    "get_activation",
    "get_model",
    "list_models",
    "init_variables",
    "logits_fn",
    "param_count",
    "ModelA",
    "ModelB",
    "VGG",
    "ResNet",
    "PreActResNet",
    "WideResNet",
]


def _sdi_generator(**kw):
    # Lazy import: the generator is FGSM-SDI's, not a classifier; most users never load it.
    from advjax.models.generator import SDIGenerator

    return SDIGenerator(**kw)


def _vgg(depth, bn):
    return lambda **kw: VGG(depth=depth, batch_norm=bn, **kw)


def _wrn(depth, width):
    return lambda **kw: WideResNet(depth=depth, widen_factor=width, **kw)


# name -> factory(**fields). Paper defaults for num_classes / activation live in the classes.
_REGISTRY: dict[str, Callable[..., nn.Module]] = {
    "model_a": ModelA,
    "model_b": ModelB,
    **{f"vgg{d}": _vgg(d, False) for d in (11, 13, 16, 19)},
    **{f"vgg{d}_bn": _vgg(d, True) for d in (11, 13, 16, 19)},
    "vgg_hldr": hldr_vgg,
    "resnet18": resnet18,
    "resnet20": resnet20,
    "resnet56": resnet56,
    "preact_resnet18": preact_resnet18,
    "wrn28_10": _wrn(28, 10),
    "wrn34_10": _wrn(34, 10),
    "wide_resnet": WideResNet,  # depth=..., widen_factor=...
    "sdi_generator": _sdi_generator,
}

_ALIASES = {
    "mlp": "model_a",
    "modela": "model_a",
    "small_cnn": "model_b",
    "modelb": "model_b",
    "hldr_vgg": "vgg_hldr",
    "preactresnet18": "preact_resnet18",
    "wideresnet28_10": "wrn28_10",
    "wideresnet34_10": "wrn34_10",
    "wrn": "wide_resnet",
    "generator": "sdi_generator",
}


def list_models() -> list[str]:
    """Sorted canonical model names accepted by :func:`get_model`."""
    return sorted(_REGISTRY)


def _canonical(name: str) -> str:
    if not isinstance(name, str):
        raise ValueError(f"model name must be a string, got {name!r}")
    key = name.strip().lower().replace("-", "_").replace(" ", "_")
    if key.startswith("wrn_"):  # "wrn-28-10" -> "wrn28_10"
        key = "wrn" + key[4:]
    key = _ALIASES.get(key, key)
    if key not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; known: {', '.join(list_models())}")
    return key


def get_model(
    name: str,
    num_classes: int | None = None,
    activation: str | None = None,
    dtype: Any = jnp.float32,
    **kw,
) -> nn.Module:
    """Build the model called ``name`` (see :func:`list_models`; '-' and '_' are equivalent).

    ``num_classes`` / ``activation`` left as None take the model's paper default (Model A: 2
    classes, ELU; HLDR VGG: ELU; everything else: 10 classes, ReLU). Other keyword arguments set
    the module's fields (``mean``, ``std``, ``input_shape``, ``fast_conv``, ``hidden``, ...).
    Unknown names raise ValueError listing the known ones; so do unknown activations.
    """
    key = _canonical(name)
    if activation is not None:
        get_activation(activation)  # fail early with the list of known names
        kw["activation"] = activation
    if num_classes is not None:
        if int(num_classes) < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        kw["num_classes"] = int(num_classes)
    kw["dtype"] = dtype
    for field in ("input_shape", "mean", "std", "hidden"):
        if field in kw and kw[field] is not None:
            kw[field] = tuple(kw[field])  # hashable module fields
    try:
        return _REGISTRY[key](**kw)
    except TypeError as e:  # unknown field
        try:
            import dataclasses

            fields = sorted(f.name for f in dataclasses.fields(type(_REGISTRY[key]()))
                            if f.name not in ("parent", "name"))
            hint = f"; {name!r} takes: {', '.join(fields)}"
        except Exception:  # noqa: BLE001 - the hint is best effort
            hint = ""
        raise ValueError(f"get_model({name!r}): bad keyword argument: {e}{hint}") from e


def _example_input(model: nn.Module, batch_size: int):
    shape = getattr(model, "input_shape", None)
    if shape is None:
        raise ValueError(f"{type(model).__name__} has no input_shape field")
    # 0.5 lies inside [0, 1] and is a legal generic input for every model.
    return jnp.full((batch_size, *shape), 0.5, jnp.float32)


def init_variables(model: nn.Module, key: jax.Array, batch_size: int = 1):
    """Initialize ``{"params": ..., maybe "batch_stats": ...}`` for ``model`` (eval-mode trace)."""
    x = _example_input(model, batch_size)
    variables = jax.jit(lambda k: model.init(k, x, train=False))(key)
    return dict(variables)


@functools.lru_cache(maxsize=256)
def logits_fn(model: nn.Module) -> Callable:
    """``apply_fn(variables, x) -> logits`` in eval mode (batch norm frozen): what attacks take.

    Cached per model (linen Modules hash by their fields): attacks take ``apply_fn`` as a static
    jit argument, so handing out the same function for equal models avoids a recompile per call.
    """

    def apply_fn(variables, x):
        return model.apply(variables, x, train=False)

    return apply_fn


def param_count(model: nn.Module) -> int:
    """Number of parameters, from ``jax.eval_shape`` (no compute, no memory)."""
    shapes = jax.eval_shape(lambda k: model.init(k, _example_input(model, 1), train=False),
                            jax.random.key(0))
    return int(sum(x.size for x in jax.tree.leaves(shapes["params"])))
