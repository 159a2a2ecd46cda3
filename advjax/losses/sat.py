"""SAT's cluster loss (Jin et al., "Explaining Adversarial Robustness of Neural Networks from
Clustering Effect Perspective", ICCV 2023, eq. 8 and the regularizer of eq. 10).

Per chosen layer l (features flattened to d_l dimensions) and class i, the batch samples of class
i give a centroid mu^i_l (the batch approximation of the training-set centroid the paper states in
§5.2) and a per-dimension spread; the loss sums the spreads:

    paper (eq. 10):   L = 1 / (n |Y|) * sum_i sum_l sum_k sqrt(Sigma^i_l)_kk,

with sqrt(Sigma^i_l)_kk read as the per-dimension standard deviation of class i's features
(the population std, E over the class's samples, as eq. 8's expectation), n the number of layers
and |Y| = ``num_classes`` (the label space, not the classes present in the batch).

    reference (the released code, ``FAT.make_var``):
        L = 1 / (n N) * sum_l sum_j || var_{class(j)}(f^l) ||_2,

the L2 norm of the per-dimension (unbiased) variance vector instead of the summed std, one term
per *sample* j (a class counts as often as it appears in the batch), averaged over layers and
samples. The code applies it to the adversarial features with weight 0.1 (what
``advjax.methods.sat`` does in both modes).

Classes with fewer than two samples in the batch (explicit handling, both modes): their spread is
0 and contributes nothing. In paper mode this is what the population std of one sample is; the
normalizer stays n |Y|. In reference mode a one-sample class still counts in the code's
denominator n N (with 0), but the code's value for it is a bug: ``torch.nonzero(...).squeeze()``
drops the batch axis of a lone sample, so ``var(dim=0)`` becomes the variance across *channels*
of that one image's feature map. We do not reproduce that bug. Absent classes contribute 0.

Static shapes: classes are handled through a one-hot [N, C] matrix (C = ``num_classes``), so the
loss jits once per shape, with no Python loop over the classes present; ``mask`` (bool [N])
excludes padded samples. The square root has a zero gradient where the spread is 0 (no NaN).
"""
from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp

__all__ = ["MODES", "cluster_loss", "class_spread", "check_cluster_inputs"]

MODES = ("paper", "reference")


def _safe_sqrt(v):
    pos = v > 0
    return jnp.where(pos, jnp.sqrt(jnp.where(pos, v, 1.0)), 0.0)


def _as_list(feats) -> list:
    if isinstance(feats, Mapping):
        return list(feats.values())
    if isinstance(feats, (list, tuple)):
        return list(feats)
    return [feats]


def check_cluster_inputs(feats, labels, num_classes, mode: str = "paper") -> None:
    """ValueError for a bad mode, class count, shapes or (when concrete) labels out of range."""
    if mode not in MODES:
        raise ValueError(f"cluster_loss: mode must be one of {MODES}, got {mode!r}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"cluster_loss: num_classes must be an int >= 1, got {num_classes!r}")
    layers = _as_list(feats)
    if not layers:
        raise ValueError("cluster_loss: no features given (pass a {layer: [N, ...]} mapping or arrays)")
    if labels.ndim != 1:
        raise ValueError(f"cluster_loss: labels must be [N], got shape {labels.shape}")
    for f in layers:
        if f.ndim < 2 or f.shape[0] != labels.shape[0]:
            raise ValueError(f"cluster_loss: each feature must be [N, ...] with N = {labels.shape[0]} "
                             f"(the labels'), got shape {f.shape}")
    if not isinstance(labels, jax.core.Tracer):
        import numpy as np

        ya = np.asarray(labels)
        if ya.size and (ya.min() < 0 or ya.max() >= num_classes):
            raise ValueError(f"cluster_loss: labels out of range [0, {num_classes}): min {ya.min()}, "
                             f"max {ya.max()}")


def class_spread(f, onehot, mode: str):
    """Per-class spread of one layer's features ``f`` [N, d] (float32) given ``onehot`` [N, C]
    (masked rows are 0): ``(spread [C], counts [C])``; spread is 0 for classes with < 2 samples.

    paper: sum_k std_k (population std); reference: ||var||_2 (unbiased variance).
    """
    counts = jnp.sum(onehot, axis=0)  # [C]
    centroids = (onehot.T @ f) / jnp.maximum(counts, 1.0)[:, None]  # [C, d]
    dev = (f - onehot @ centroids) * jnp.sum(onehot, axis=1, keepdims=True)  # [N, d], 0 on masked rows
    sq = onehot.T @ (dev * dev)  # [C, d]: sum of squared deviations per class and dimension
    valid = counts >= 2
    if mode == "paper":
        var = sq / jnp.maximum(counts, 1.0)[:, None]
        spread = jnp.sum(_safe_sqrt(var), axis=-1)
    else:
        var = sq / jnp.maximum(counts - 1.0, 1.0)[:, None]
        spread = _safe_sqrt(jnp.sum(var * var, axis=-1))
    return jnp.where(valid, spread, 0.0), counts


def cluster_loss(feats, labels, num_classes: int, mode: str = "paper", mask=None) -> jax.Array:
    """The cluster loss (eq. 10's regularizer without beta) over the given layers; a scalar.

    Args:
      feats: ``{layer: [N, ...]}`` (e.g. from ``advjax.layers.capture``), a sequence of arrays
        or one array; each is flattened per sample.
      labels: int [N].
      num_classes: |Y|.
      mode: "paper" (summed per-dimension std, / (n |Y|)) or "reference" (the released code:
        ||per-dimension variance||_2 per sample, / (n N)); see the module docstring.
      mask: optional bool [N]; False rows (padding) are left out of every centroid and spread
        (and of reference mode's sample count).
    """
    check_cluster_inputs(feats, labels, num_classes, mode)
    layers = _as_list(feats)
    onehot = jax.nn.one_hot(labels, num_classes, dtype=jnp.float32)
    if mask is not None:
        onehot = onehot * jnp.asarray(mask, jnp.float32)[:, None]
    total = jnp.zeros((), jnp.float32)
    for f in layers:
        flat = jnp.reshape(f, (f.shape[0], -1)).astype(jnp.float32)
        spread, counts = class_spread(flat, onehot, mode)
        if mode == "paper":
            total = total + jnp.sum(spread)
        else:
            total = total + jnp.sum(counts * spread)  # one term per sample of the class
    n = len(layers)
    if mode == "paper":
        return total / (n * num_classes)
    num = jnp.sum(onehot)
    return total / (n * jnp.maximum(num, 1.0))
