"""AT-LR: layer-wise regularized adversarial training (Khalooei et al., "Layer-wise Regularized
Adversarial Training using Layers Sustainability Analysis", eq. 13-15, Algorithm 3).

    x_hat = argmax_{z in B(x, eps)} J(theta, z, y)                      (the base method's attack)
    min_theta  E [ J(theta, x_hat, y) + sum_{l in MVL} gamma_l * CM_l(phi_l(x), phi_l(x_hat)) ]

AT-LR is not a separate training loop: it is ANY base ``AdversarialMethod`` (AT-FGSM, PGD-AT,
TRADES, FAST, APGD-AT, MART, ...) composed with the LSA regularizer
(:func:`advjax.losses.lsa.lsa_lr`) through :class:`advjax.methods.regularized.Regularized`::

    at_lr(PGDAT(eps=0.3, domain=None), layers=[2], gammas=1.0).name == "AT-PGD-LR-L2"

Modes (see :mod:`advjax.losses.lsa`): ``mode="paper"`` (default) measures the learnable layers'
outputs with a per-sample CM averaged over the batch; ``mode="reference"`` measures the activation
outputs with one Frobenius ratio over the whole batch, as the authors' released code does.
"""
from __future__ import annotations

import dataclasses

from advjax.losses.lsa import at_lr_name, lsa_lr
from advjax.methods.base import AdversarialMethod, get_method, register_method
from advjax.methods.regularized import Regularized

__all__ = ["ATLR", "at_lr", "paper_name"]

# class name of a base method -> the name the LSA paper prints
_PAPER_NAMES = {"Standard": "Normal", "ATFGSM": "AT-FGSM", "PGDAT": "AT-PGD", "TRADES": "TRADES",
                "FGSMRS": "FAST", "APGDAT": "AT-APGD", "MART": "MART", "AWP": "AWP"}


def paper_name(method) -> str:
    """The LSA paper's name for a method: PGDAT -> "AT-PGD", FGSMRS -> "FAST", an ATLR -> its name."""
    if isinstance(method, ATLR):
        return method.name
    from advjax.methods.eps_warmup import EpsWarmup

    if isinstance(method, EpsWarmup):  # the ramp is a training detail, not a new method
        return paper_name(method.base)
    cls = type(method).__name__
    return _PAPER_NAMES.get(cls, cls)


@dataclasses.dataclass(frozen=True)
class ATLR(Regularized):
    """A :class:`Regularized` whose regularizer is the LSA term; ``name`` is the paper's name."""
    name: str = "AT-LR"


def at_lr(base_method: AdversarialMethod, layers, gammas=1.0, mode: str = "paper") -> ATLR:
    """Wrap ``base_method`` with the AT-LR regularizer on ``layers`` (the MVL list).

    Args:
      base_method: any AdversarialMethod (its attack makes x_hat; its loss is J).
      layers: learnable-layer indices ("L2" = index 2 of ``advjax.layers.capture``'s order) or
        names; an int for one layer.
      gammas: gamma_l, one float for all layers or one per layer (may be a traced array, e.g. to
        train several variants at once under ``jax.vmap``).
      mode: "paper" (learnable layers, per-sample CM) or "reference" (activation outputs, one
        Frobenius ratio over the batch, as the authors' code).
    """
    if not isinstance(base_method, AdversarialMethod):
        raise ValueError(f"at_lr: base_method must be an AdversarialMethod, got {type(base_method).__name__}")
    if mode not in ("paper", "reference"):
        raise ValueError(f"at_lr: unknown mode {mode!r}; use 'paper' or 'reference'")
    reg = lsa_lr(layers, gammas, mode=mode)
    kind = "learnable" if mode == "paper" else "activation"
    name = at_lr_name(paper_name(base_method), reg.layers) + ("" if mode == "paper" else "-ref")
    return ATLR(base=base_method, regularizer=reg, kind=kind, name=name)


def _at_lr_by_name(base: str = "pgd_at", layers=(0,), gammas=1.0, mode: str = "paper", **base_kw) -> ATLR:
    """Registry factory: ``get_method("at_lr", base="trades", layers=[1], gammas=1.0, eps=0.3)``;
    settings other than layers/gammas/mode go to the base method."""
    if isinstance(layers, (list, tuple)):
        layers = tuple(layers)
    return at_lr(get_method(base, **base_kw), layers, gammas, mode)


register_method("at_lr", _at_lr_by_name)
