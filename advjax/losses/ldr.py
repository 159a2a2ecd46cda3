"""Latent disparity (Schwartz & Ditzler, "Bolstering Adversarial Robustness with Latent Disparity
Regularization", eq. 3): the HLDR regularizer.

    LD(x, x_a) = sum_i ||s_i(x) - s_i(x_a)||_1 / sum_i ||s_i(x)||_1

over the hidden layers i (default: every hidden conv and dense output, the logits excluded), with
ONE ratio: numerator and denominator are each summed over the layers before dividing.

Modes:

* ``mode="paper"`` (default): the ratio per sample, then averaged over the batch (eq. 3 is
  written for one pair (x, x_a); the batch loss is the mean of the per-pair losses, as for CE).
* ``mode="reference"``: the released code (dmschwar/robust-ldr, ``HLDR_VGG_16.py``) concatenates
  every layer of every sample of the batch and takes ONE ratio
  ``sum_{n,i} |s_i(x_n) - s_i(x_a,n)| / sum_{n,i} |s_i(x_n)|``; samples with large activations
  weigh more.

``latent_disparity_per_layer`` is Fig. 6's per-layer mean perturbation error
``mean_n ||s_i(x_n) - s_i(x_a,n)||_1 / ||s_i(x_n)||_1``.
"""
from __future__ import annotations

import collections

import jax.numpy as jnp

__all__ = ["latent_disparity", "latent_disparity_per_layer", "hidden_layers", "MODES"]

MODES = ("paper", "reference")
_TINY = 1e-12


def hidden_layers(names, layers=None):
    """The layer names LD uses out of ``names`` (capture order): ``layers=None`` = every layer but
    the last (the logits); else ints (indices into ``names``, negative allowed) or names. An
    unknown name or an index out of range is a ValueError listing the layers the model has."""
    names = list(names)
    if layers is None:
        if len(names) < 2:
            raise ValueError(f"latent_disparity: the model has no hidden layer besides the logits (layers: {names})")
        return names[:-1]
    if isinstance(layers, (int, str)):
        layers = [layers]
    out = []
    for layer in layers:
        if isinstance(layer, bool) or not isinstance(layer, (int, str)):
            raise ValueError(f"latent_disparity: layers must be ints or names, got {layer!r}")
        if isinstance(layer, int):
            if not -len(names) <= layer < len(names):
                raise ValueError(f"latent_disparity: layer index {layer} out of range; the model has "
                                 f"{len(names)} layers: {names}")
            out.append(names[layer])
        else:
            if layer not in names:
                raise ValueError(f"latent_disparity: unknown layer {layer!r}; the model has: {names}")
            out.append(layer)
    return out


def _pick(feats, layers):
    return hidden_layers(list(feats), layers)


def _per_sample_l1(a):
    a = a.reshape(a.shape[0], -1)
    return jnp.sum(jnp.abs(a.astype(jnp.float32)), axis=1)


def latent_disparity(feats_clean, feats_adv, layers=None, mode: str = "paper"):
    """Eq. 3's ratio for ordered ``{layer name: [N, ...]}`` captures of x and x_a (a scalar).

    ``layers``: None (every layer but the last, i.e. all hidden layers) or indices / names (see
    :func:`hidden_layers`). ``mode``: "paper" (per-sample ratio, batch mean) or "reference" (one
    ratio over the whole batch and all layers at once).
    """
    if mode not in MODES:
        raise ValueError(f"latent_disparity: unknown mode {mode!r}; use one of {MODES}")
    chosen = _pick(feats_clean, layers)
    missing = [k for k in chosen if k not in feats_adv]
    if missing:
        raise ValueError(f"latent_disparity: feats_adv lacks layers {missing}")
    num = sum(_per_sample_l1(feats_clean[k] - feats_adv[k]) for k in chosen)  # [N]
    den = sum(_per_sample_l1(feats_clean[k]) for k in chosen)  # [N]
    if mode == "paper":
        return jnp.mean(num / jnp.maximum(den, _TINY))
    return jnp.sum(num) / jnp.maximum(jnp.sum(den), _TINY)


def latent_disparity_per_layer(feats_clean, feats_adv, layers=None):
    """Fig. 6: ``{layer: mean_n ||s_i(x_n) - s_i(x_a,n)||_1 / ||s_i(x_n)||_1}`` (ordered)."""
    chosen = _pick(feats_clean, layers)
    return collections.OrderedDict(
        (k, jnp.mean(_per_sample_l1(feats_clean[k] - feats_adv[k]) / jnp.maximum(_per_sample_l1(feats_clean[k]), _TINY)))
        for k in chosen)
