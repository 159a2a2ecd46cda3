"""The clustering effect (Jin et al., ICCV 2023): clustering accuracy per layer, shift sizes per
layer, and the cosine between a layer's shift and its gradient during PGD, with their plots.

* Clu.Acc (Def. 1, eq. 2): class centroids mu^l_i = mean of the *training* features of class i at
  layer l (features flattened); a test sample's clustered label is the class of the nearest
  centroid in L_p, p in {1, 2, inf}; Clu.Acc = the fraction whose clustered label is its label.
  Eq. 2 prints argmax of the distance: a typo for argmin (the nearest centroid; the released code,
  ``clustering/cluster_compute.py``, takes ``distance.argmin``). The code's default p is inf, the
  appendix says 2: p is a setting (default 2). The code builds each centroid from the correctly
  classified training samples only but divides by the class size; we average all training
  samples of the class (eq. 2's mu = E over X_train,i). Under an attack the test samples are
  replaced by their adversarial points (Fig. 3, 7), the centroids stay the clean training ones.
* Shift sizes (Fig. 4-6): ||f^l(x_adv) - f^l(x)||_2 per sample and layer.
* Shift / gradient cosine (Fig. 1): at every PGD iteration t, per sample, the cosine between the
  shift f^l(x + r_t) - f^l(x) and the gradient of the CE with respect to the layer output,
  ``at="clean"`` (the paper's nabla_{f^l(x)} L_CE(f, x, y), the default) or ``at="iterate"`` (at
  x + r_t); the mean over samples per iteration. The iterates are those of
  ``advjax.attacks.PGD`` itself (its own ascent step, one step at a time).

Layers are names / indices of ``advjax.layers.capture``'s ``kind`` list (default: every
activation output, which for ResNets includes each block's output ``.../act2``). Everything runs
in eval mode, batch by batch, with one compiled program per batch shape; a last partial batch is
padded and masked.
"""
from __future__ import annotations

import collections
import pathlib
from collections.abc import Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from advjax.layers import capture, names as _layer_names, select

__all__ = ["P_NORMS", "class_centroids", "centroid_distances", "clustering_accuracy", "layer_centroids",
           "layer_clustering_accuracy", "shift_sizes", "layer_output_gradients", "shift_gradient_cosine",
           "plot_clustering_accuracy", "plot_shift_histograms", "plot_shift_gradient_cosine"]

P_NORMS = (1, 2, "inf")


def _check_p(p):
    if p == float("inf") or p == np.inf:
        p = "inf"
    if p not in P_NORMS:
        raise ValueError(f"clustering: p must be one of {P_NORMS}, got {p!r}")
    return p


def _flat(f):
    return jnp.reshape(f, (f.shape[0], -1)).astype(jnp.float32)


# ------------------------------------------------------------------------------------------------
# array-level functions (jit-able)
# ------------------------------------------------------------------------------------------------

def class_centroids(feats: Mapping[str, jax.Array], labels, num_classes: int, mask=None):
    """``({layer: class sums [C, d]}, counts [C])`` of one batch (sums, so batches add up)."""
    onehot = jax.nn.one_hot(labels, num_classes, dtype=jnp.float32)
    if mask is not None:
        onehot = onehot * jnp.asarray(mask, jnp.float32)[:, None]
    sums = collections.OrderedDict((k, onehot.T @ _flat(v)) for k, v in feats.items())
    return sums, jnp.sum(onehot, axis=0)


def centroid_distances(f, centroids, p) -> jax.Array:
    """L_p distances [N, C] between flattened features [N, d] and centroids [C, d]."""
    p = _check_p(p)
    diff = _flat(f)[:, None, :] - centroids[None, :, :]
    if p == 1:
        return jnp.sum(jnp.abs(diff), axis=-1)
    if p == 2:
        return jnp.sqrt(jnp.sum(diff * diff, axis=-1))
    return jnp.max(jnp.abs(diff), axis=-1)


def clustering_accuracy(feats: Mapping[str, jax.Array], labels, centroids: Mapping[str, jax.Array], p=2,
                        mask=None) -> dict:
    """Eq. 2 on one batch: ``{layer: number of samples whose nearest centroid is their class}``
    (counts; divide by the number of samples). ``centroids``: {layer: [C, d]}."""
    out = {}
    m = jnp.ones(labels.shape, bool) if mask is None else jnp.asarray(mask, bool)
    for k, f in feats.items():
        pred = jnp.argmin(centroid_distances(f, centroids[k], p), axis=-1)
        out[k] = jnp.sum((pred == labels) & m)
    return out


# ------------------------------------------------------------------------------------------------
# dataset-level drivers
# ------------------------------------------------------------------------------------------------

def _batches(x, y, batch_size):
    n = len(x)
    for i in range(0, n, batch_size):
        xb, yb = np.asarray(x[i:i + batch_size]), np.asarray(y[i:i + batch_size])
        k = len(xb)
        if k < batch_size:  # pad to one shape, mask the padding
            reps = batch_size - k
            xb = np.concatenate([xb, np.repeat(xb[:1], reps, 0)])
            yb = np.concatenate([yb, np.repeat(yb[:1], reps, 0)])
        mask = np.arange(batch_size) < k
        yield xb, yb.astype(np.int32), mask


def _as_float(x):
    x = np.asarray(x)
    return x.astype(np.float32) / 255.0 if x.dtype == np.uint8 else x.astype(np.float32)


def resolve(model, layers, kind):
    """Layer names (all of ``kind`` when None); an unknown layer lists the model's layers."""
    known = _layer_names(model, kind=kind)
    if layers is None:
        return tuple(known)
    return tuple(select(collections.OrderedDict((n, None) for n in known), layers))


def layer_centroids(model, variables, x, y, num_classes: int, *, layers=None, kind: str = "activation",
                    batch_size: int = 256) -> dict:
    """Class centroids {layer: [C, d] np.float32} of the training features (eval mode).
    A class absent from ``y`` is a ValueError (its centroid would be undefined)."""
    names = list(resolve(model, layers, kind))

    @jax.jit
    def one(variables, xb, yb, mask):
        _, feats = capture(model, variables, xb, kind=kind)
        return class_centroids(select(feats, names), yb, num_classes, mask)

    sums, counts = None, None
    for xb, yb, mask in _batches(x, y, batch_size):
        s, c = one(variables, _as_float(xb), yb, mask)
        sums = s if sums is None else jax.tree.map(jnp.add, sums, s)
        counts = c if counts is None else counts + c
    counts = np.asarray(counts)
    if (counts == 0).any():
        raise ValueError(f"layer_centroids: classes {np.flatnonzero(counts == 0).tolist()} have no training sample")
    return {k: np.asarray(v) / counts[:, None] for k, v in sums.items()}


def layer_clustering_accuracy(model, variables, x, y, centroids: Mapping[str, Any], *, p=2, attack=None,
                              key=None, kind: str = "activation", batch_size: int = 256) -> dict:
    """Clu.Acc (%) per layer of ``centroids`` on (x, y), clean or under ``attack`` (a contract
    attack ``attack(apply_fn, variables, x, y, key)``, or a callable ``(xb, yb, key) -> x_adv``),
    plus ``"output"``: the classification accuracy (%) on the same points."""
    from advjax.models import logits_fn

    p = _check_p(p)
    names = list(centroids)
    cents = {k: jnp.asarray(v) for k, v in centroids.items()}
    apply_fn = logits_fn(model)
    key = jax.random.PRNGKey(0) if key is None else key

    @jax.jit
    def one(variables, xb, yb, mask):
        logits, feats = capture(model, variables, xb, kind=kind)
        counts = clustering_accuracy(select(feats, names), yb, cents, p, mask)
        counts["output"] = jnp.sum((jnp.argmax(logits, -1) == yb) & mask)
        return counts

    total, n = None, 0
    for i, (xb, yb, mask) in enumerate(_batches(x, y, batch_size)):
        xb = _as_float(xb)
        if attack is not None:
            k = jax.random.fold_in(key, i)
            xb = attack(apply_fn, variables, xb, yb, k) if hasattr(attack, "run") else attack(xb, yb, k)
        c = one(variables, xb, yb, mask)
        total = c if total is None else jax.tree.map(jnp.add, total, c)
        n += int(mask.sum())
    return {k: 100.0 * float(v) / n for k, v in total.items()}


def shift_sizes(model, variables, x, x_adv, *, layers=None, kind: str = "activation", batch_size: int = 256) -> dict:
    """||f^l(x_adv) - f^l(x)||_2 per sample: {layer: np [N]} (Fig. 4-6)."""
    names = list(resolve(model, layers, kind))

    @jax.jit
    def one(variables, xb, xab):
        _, fc = capture(model, variables, xb, kind=kind)
        _, fa = capture(model, variables, xab, kind=kind)
        fc, fa = select(fc, names), select(fa, names)
        return {k: jnp.sqrt(jnp.sum((_flat(fa[k]) - _flat(fc[k])) ** 2, axis=-1)) for k in names}

    n = len(x)
    out = {k: [] for k in names}
    y0 = np.zeros(n, np.int32)
    xa_iter = _batches(x_adv, y0, batch_size)
    for (xb, _, mask), (xab, _, _) in zip(_batches(x, y0, batch_size), xa_iter):
        r = one(variables, _as_float(xb), _as_float(xab))
        for k in names:
            out[k].append(np.asarray(r[k])[mask])
    return {k: np.concatenate(v) for k, v in out.items()}


def layer_output_gradients(model, variables, x, y, layers, *, kind: str = "activation"):
    """``(feats, grads)``: the chosen layers' outputs and d sum_j CE_j / d f^l (so each sample's
    row is its own CE's gradient), in eval mode.

    The gradient with respect to a layer's output is taken by intercepting that module's call
    (``flax.linen.intercept_methods``) and adding a zero input whose gradient is the layer's;
    the logits are unchanged. ``layers`` are capture names of ``kind``.
    """
    from advjax.losses import cross_entropy

    names = list(layers)
    _, feats = capture(model, variables, x, kind=kind)
    feats = select(feats, names)
    zeros = {k: jnp.zeros_like(v) for k, v in feats.items()}

    def loss(delta):
        def interceptor(next_fun, args, kwargs, context):
            out = next_fun(*args, **kwargs)
            if context.method_name == "__call__":
                name = "/".join(context.module.path)
                if name in delta:
                    out = out + delta[name]
            return out

        with nn.intercept_methods(interceptor):
            logits = model.apply(variables, x, train=False)
        return jnp.sum(cross_entropy(logits, y))

    grads = jax.grad(loss)(zeros)
    return feats, grads


def _cos(a, b):
    a, b = _flat(a), _flat(b)
    num = jnp.sum(a * b, axis=-1)
    den = jnp.sqrt(jnp.sum(a * a, axis=-1) * jnp.sum(b * b, axis=-1))
    return jnp.where(den > 0, num / jnp.where(den > 0, den, 1.0), 0.0)


def shift_gradient_cosine(model, variables, x, y, key, *, attack=None, layers=None, kind: str = "activation",
                          at: str = "clean") -> dict:
    """Mean over samples of cos(f^l(x + r_t) - f^l(x), nabla_{f^l} CE) at every iteration t of
    ``attack`` (an ``advjax.attacks.PGD``; default PGD-100, eps 8/255, step 2/255): {layer: np [steps]}.
    One batch (x, y); see the module docstring for ``at``."""
    from advjax.attacks import PGD, base
    from advjax.attacks.pgd import ascend
    from advjax.models import logits_fn

    if at not in ("clean", "iterate"):
        raise ValueError(f"shift_gradient_cosine: at must be 'clean' or 'iterate', got {at!r}")
    attack = PGD(steps=100, step_size=2 / 255) if attack is None else attack
    if not isinstance(attack, PGD) or attack.loss != "ce" or attack.restarts != 1:
        raise ValueError("shift_gradient_cosine: attack must be an advjax.attacks.PGD on the CE with restarts=1")
    names = list(resolve(model, layers, kind))
    apply_fn = logits_fn(model)
    x = jnp.asarray(_as_float(x))
    y = jnp.asarray(y, jnp.int32)
    objective = lambda logits: base.attack_loss("ce", logits, y, False)  # noqa: E731

    @jax.jit
    def start(variables, x, key):
        x0 = base.random_start(jax.random.split(key, 1)[0], x, attack.eps, attack.norm, attack.domain) \
            if attack.random_start else x
        return x0, layer_output_gradients(model, variables, x, y, names, kind=kind)

    @jax.jit
    def step(variables, xa, f_clean, g_clean):
        xa = ascend(apply_fn, variables, x, xa, objective, eps=attack.eps, norm=attack.norm, domain=attack.domain,
                    alpha=attack.alpha, steps=1, loop="unroll")
        f_t, g_t = layer_output_gradients(model, variables, xa, y, names, kind=kind)
        g = g_clean if at == "clean" else g_t
        return xa, {k: jnp.mean(_cos(f_t[k] - f_clean[k], g[k])) for k in names}

    xa, (f_clean, g_clean) = start(variables, x, key)
    out = {k: [] for k in names}
    for _ in range(attack.steps):
        xa, cos = step(variables, xa, f_clean, g_clean)
        for k in names:
            out[k].append(float(cos[k]))
    return {k: np.asarray(v) for k, v in out.items()}


# ------------------------------------------------------------------------------------------------
# plots (matplotlib, Agg; each writes a PNG and returns its path)
# ------------------------------------------------------------------------------------------------

def _plt():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _short(name: str) -> str:
    return name.replace("/block", ".").replace("/act", ":a")


def plot_clustering_accuracy(path, panels: Mapping[str, Mapping[str, float]], title: str = "Clu.Acc per layer"
                             ) -> pathlib.Path:
    """Fig. 2 / 3 / 7: one panel per entry (e.g. an epoch, or clean / PGD / LAFEAT), a bar per
    layer (colored by residual stage), the classification accuracy (``"output"``) dashed."""
    plt = _plt()
    n = len(panels)
    fig, axes = plt.subplots(1, n, figsize=(4.5 * n, 3.6),
                             sharey=True, squeeze=False)
    for ax, (label, accs) in zip(axes[0], panels.items()):
        layers = [k for k in accs if k != "output"]
        stages = [k.split("/")[0] for k in layers]
        uniq = list(dict.fromkeys(stages))
        colors = [plt.cm.tab10(uniq.index(s) % 10) for s in stages]
        ax.bar(np.arange(len(layers)), [accs[k] for k in layers], color=colors)
        if "output" in accs:
            ax.axhline(accs["output"], color="k", ls="--", lw=1, label="classification acc.")
            ax.legend(fontsize=7)
        ax.set_xticks(np.arange(len(layers)))
        ax.set_xticklabels([_short(k) for k in layers], rotation=90, fontsize=6)
        ax.set_title(label, fontsize=9)
        ax.set_ylim(0, 100)
    axes[0][0].set_ylabel("Clu.Acc (%)")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return pathlib.Path(path)


def plot_shift_histograms(path, sizes: Mapping[str, Sequence[float]], bins: int = 40,
                          title: str = "shift size ||f(x_adv) - f(x)||_2") -> pathlib.Path:
    """Fig. 4-6: one histogram (as a fraction of samples) per attack / setting, shared bins."""
    plt = _plt()
    allv = np.concatenate([np.asarray(v, float) for v in sizes.values()])
    edges = np.linspace(float(allv.min()), float(allv.max()) + 1e-12, bins + 1)
    fig, ax = plt.subplots(figsize=(6, 3.8))
    for label, v in sizes.items():
        v = np.asarray(v, float)
        ax.hist(v, bins=edges, weights=np.full(len(v), 100.0 / max(1, len(v))), alpha=0.5, label=label)
    ax.set_xlabel("shift size")
    ax.set_ylabel("% of samples")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return pathlib.Path(path)


def plot_shift_gradient_cosine(path, curves: Mapping[str, Sequence[float]],
                               title: str = "cos(shift, layer gradient) per PGD iteration") -> pathlib.Path:
    """Fig. 1: one curve per layer (or per model) over the PGD iterations."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 3.8))
    for label, v in curves.items():
        ax.plot(np.arange(1, len(v) + 1), np.asarray(v), label=_short(label), lw=1)
    ax.axhline(0.0, color="k", lw=0.6)
    ax.set_xlabel("PGD iteration")
    ax.set_ylabel("mean cosine")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return pathlib.Path(path)
