"""Layer Sustainability Analysis losses (Khalooei et al., "Layer-wise Regularized Adversarial
Training using Layers Sustainability Analysis").

* :func:`comparison_measure` -- eq. 11, the relative error
  ``CM(phi_l(x), phi_l(x_hat)) = ||phi_l(x) - phi_l(x_hat)||_F / ||phi_l(x)||_F``.
* :func:`layer_comparison_measures` -- eq. 11 for every captured layer at once.
* :func:`lsa_lr` -- the layer-wise regularizer of AT-LR (eq. 13-15):
  ``LR(theta, x, x_hat) = sum_{l in MVL} gamma_l * CM_l``.

Paper mode and reference mode (DESIGN.md, "Paper mode and reference mode"):

============================  =====================================  =====================================
                              ``mode="paper"`` (default)             ``mode="reference"``
============================  =====================================  =====================================
which tensors phi_l           outputs of the learnable layers        outputs of the activation layers
                              (Conv / Dense), ``kind="learnable"``   (ReLU / ELU ...), ``kind="activation"``
how the ratio is formed       per sample: ``||a_i - b_i|| / ||a_i||``  one Frobenius ratio over the whole
                              then averaged over the batch            batch: ``||A - B||_F / ||A||_F``
============================  =====================================  =====================================

The reference mode is what the authors' released code (khalooei/LSA, ``representation_comparisons``)
computes. The choice of tensors (learnable vs activation) is made by whoever captures the features
(``Regularized(..., kind=...)``, see :func:`advjax.methods.at_lr.at_lr`); this module only sees the
feature dicts.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Literal

import jax.numpy as jnp

Mode = Literal["paper", "reference"]
Reduction = Literal["sample", "mean", "batch"]

_EPS = 1e-12  # guards ||phi_l(x)|| = 0 (a dead layer); CM is then ||phi_l(x_hat)|| / eps-ish


def _safe_norm(sq_sum):
    """sqrt with a finite gradient at 0 (x_hat == x gives CM = 0 and a zero, not NaN, gradient)."""
    pos = sq_sum > 0
    return jnp.where(pos, jnp.sqrt(jnp.where(pos, sq_sum, 1.0)), 0.0)


def _check_pair(a, b, what: str = "features") -> None:
    if a.shape != b.shape:
        raise ValueError(f"comparison_measure: clean and perturbed {what} differ in shape: "
                         f"{a.shape} vs {b.shape}")
    if a.ndim < 1:
        raise ValueError(f"comparison_measure: {what} need a leading batch axis, got a scalar")


def comparison_measure(phi_clean, phi_adv, reduction: Reduction = "sample", eps: float = _EPS):
    """Comparison measure CM of eq. 11 (relative error) between two representation tensors.

    Args:
      phi_clean: phi_l(x), shape [N, ...] (batch first).
      phi_adv: phi_l(x_hat), same shape.
      reduction: ``"sample"`` -> CM of each sample, shape [N] (eq. 11 applied per sample);
        ``"mean"`` -> the mean of the per-sample values (paper mode of the regularizer);
        ``"batch"`` -> one Frobenius ratio over the whole batch, a scalar (the authors' code).
      eps: added to the denominator so a zero representation gives a finite value.
    """
    phi_clean = jnp.asarray(phi_clean)
    phi_adv = jnp.asarray(phi_adv)
    _check_pair(phi_clean, phi_adv)
    if reduction == "batch":
        num = _safe_norm(jnp.sum(jnp.square(phi_clean - phi_adv)))
        den = _safe_norm(jnp.sum(jnp.square(phi_clean)))
        return num / (den + eps)
    a = phi_clean.reshape(phi_clean.shape[0], -1)
    b = phi_adv.reshape(phi_adv.shape[0], -1)
    per_sample = _safe_norm(jnp.sum(jnp.square(a - b), axis=1)) / (_safe_norm(jnp.sum(jnp.square(a), axis=1)) + eps)
    if reduction == "sample":
        return per_sample
    if reduction == "mean":
        return jnp.mean(per_sample)
    raise ValueError(f"comparison_measure: unknown reduction {reduction!r}; use 'sample', 'mean' or 'batch'")


def _as_list(feats) -> list:
    if isinstance(feats, Mapping):
        return list(feats.values())
    if isinstance(feats, (list, tuple)):
        return list(feats)
    raise ValueError(f"expected an ordered dict (layer name -> output) or a list of layer outputs, "
                     f"got {type(feats).__name__}")


def layer_comparison_measures(feats_clean, feats_adv, mode: Mode = "paper"):
    """CM (eq. 11) for every layer.

    ``feats_*`` are ordered dicts name -> output (``advjax.layers.capture``) or lists in layer order.
    Returns shape [N, L] (per sample and layer) in paper mode and [L] (one batch ratio per layer)
    in reference mode.
    """
    a, b = _as_list(feats_clean), _as_list(feats_adv)
    if len(a) != len(b):
        raise ValueError(f"clean and perturbed feature lists differ in length: {len(a)} vs {len(b)}")
    if not a:
        raise ValueError("no layers captured: the feature dict is empty")
    if mode == "paper":
        return jnp.stack([comparison_measure(x, y, "sample") for x, y in zip(a, b)], axis=1)
    if mode == "reference":
        return jnp.stack([comparison_measure(x, y, "batch") for x, y in zip(a, b)])
    raise ValueError(f"unknown LSA mode {mode!r}; use 'paper' or 'reference'")


def _resolve_layers(layers, names: list[str]) -> list[int]:
    idx = []
    for l in layers:
        if isinstance(l, str):
            if l not in names:
                raise ValueError(f"lsa_lr: layer {l!r} not among the captured layers {names}")
            idx.append(names.index(l))
        else:
            i = int(l)
            if not -len(names) <= i < len(names):
                raise ValueError(f"lsa_lr: layer index {i} out of range: the model has {len(names)} "
                                 f"captured layers {names}")
            idx.append(i % len(names))
    return idx


def lsa_lr(layers: Sequence[int | str] | int | str, gammas=1.0, mode: Mode = "paper") -> Callable:
    """The AT-LR layer-wise regularizer (eq. 13-15): ``sum_{l in layers} gamma_l * CM_l``.

    Args:
      layers: the MVL list -- indices into the ordered captured layers ("layer l" of the paper;
        L0 is the first learnable layer) or layer names.
      gammas: one weight for all layers or one per layer (``gamma_l`` of eq. 15). May be a traced
        array (e.g. to train several variants at once under ``jax.vmap``).
      mode: ``"paper"`` (mean over the batch of the per-sample CM) or ``"reference"`` (one
        Frobenius ratio over the whole batch, as in the authors' code; pair it with activation
        outputs, ``kind="activation"``).

    Returns:
      ``regularizer(feats_clean, feats_adv) -> scalar``, differentiable in both arguments. A
      layer's term depends only on the parameters up to that layer, so later layers receive no
      gradient from it.
    """
    if isinstance(layers, (int, str)):
        layers = (layers,)
    layers = tuple(layers)
    if not layers:
        raise ValueError("lsa_lr: the layer list (MVL) is empty")
    if mode not in ("paper", "reference"):
        raise ValueError(f"lsa_lr: unknown mode {mode!r}; use 'paper' or 'reference'")
    g = gammas
    if isinstance(g, (int, float)):
        if g < 0:
            raise ValueError(f"lsa_lr: gamma must be >= 0, got {g}")
        g = (float(g),) * len(layers)
    elif isinstance(g, (list, tuple)):
        if len(g) != len(layers):
            raise ValueError(f"lsa_lr: {len(g)} gammas for {len(layers)} layers")
        if any(isinstance(v, (int, float)) and v < 0 for v in g):
            raise ValueError(f"lsa_lr: gammas must be >= 0, got {g}")
    else:  # an array (possibly traced)
        g_arr = jnp.asarray(g)
        if g_arr.ndim == 0:
            g = [g_arr] * len(layers)
        elif g_arr.shape != (len(layers),):
            raise ValueError(f"lsa_lr: gammas of shape {g_arr.shape} for {len(layers)} layers")
        else:
            g = [g_arr[i] for i in range(len(layers))]
    reduction = "mean" if mode == "paper" else "batch"

    def regularizer(feats_clean, feats_adv):
        names = list(feats_clean.keys()) if isinstance(feats_clean, Mapping) else [str(i) for i in range(len(feats_clean))]
        a, b = _as_list(feats_clean), _as_list(feats_adv)
        if len(a) != len(b):
            raise ValueError(f"lsa_lr: clean and perturbed feature lists differ: {len(a)} vs {len(b)}")
        total = 0.0
        for gamma, i in zip(g, _resolve_layers(layers, names)):
            total = total + gamma * comparison_measure(a[i], b[i], reduction)
        return jnp.asarray(total, jnp.float32)

    regularizer.layers = layers
    regularizer.gammas = gammas
    regularizer.mode = mode
    return regularizer


def at_lr_name(base_name: str, layers) -> str:
    """Paper-style name of an AT-LR variant: ``at_lr_name("AT-PGD", [2]) == "AT-PGD-LR-L2"``."""
    if isinstance(layers, (int, str)):
        layers = (layers,)
    return f"{base_name}-LR-" + "-".join(f"L{l}" if isinstance(l, int) else str(l) for l in layers)
