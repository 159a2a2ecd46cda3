"""Plots of the LSA paper (Khalooei et al.): per-layer CM curves (Fig. 4/5) and decision boundaries
with loss landscapes of 2-D models (Fig. 7). matplotlib with the Agg backend; every function writes
a PNG and returns its path."""
from __future__ import annotations

import pathlib
from collections.abc import Callable, Mapping, Sequence

import numpy as np


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


_STYLES = {"FGSM": "-o", "PGD": "-s", "Gaussian": "--^", "Salt": "--v", "Pepper": "--<", "Speckle": "-->"}


def _cm_axes(ax, layer_names: Sequence[str], cms: Mapping[str, Sequence[float]], title: str, mvl=()):
    x = np.arange(len(layer_names))
    for name, vals in cms.items():
        ax.plot(x, np.asarray(vals), _STYLES.get(name, "-o"), label=name, markersize=4)
    for i in mvl:
        ax.axvspan(i - 0.4, i + 0.4, color="red", alpha=0.08)
    ax.set_xticks(x)
    ax.set_xticklabels([f"L{i}" for i in x])
    ax.set_xlabel("learnable layer")
    ax.set_ylabel("CM (relative error, eq. 11)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)


def plot_layer_cms(path, layer_names: Sequence[str], cms: Mapping[str, Sequence[float]],
                   title: str = "LSA: CM per layer", mvl: Sequence[int] = ()) -> pathlib.Path:
    """One panel: CM per layer (x) for each perturbation (one line each), MVL layers shaded."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4))
    _cm_axes(ax, layer_names, cms, title, mvl)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return pathlib.Path(path)


def plot_lsa_before_after(path, layer_names: Sequence[str], panels: Mapping[str, Mapping[str, Sequence[float]]],
                          mvls: Mapping[str, Sequence[int]] | None = None) -> pathlib.Path:
    """Fig. 4/5 style: one panel per model (e.g. normal, AT-PGD, AT-PGD-LR-L1), a CM curve per
    perturbation in each, on a shared y axis, so the effect of AT-LR is visible side by side."""
    plt = _plt()
    n = len(panels)
    fig, axes = plt.subplots(1, n, figsize=(4.2 * n, 3.8), sharey=True, squeeze=False)
    for ax, (title, cms) in zip(axes[0], panels.items()):
        _cm_axes(ax, layer_names, cms, title, (mvls or {}).get(title, ()))
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return pathlib.Path(path)


def plot_decision_boundaries(path, models: Mapping[str, Callable], x, y, sample, label: int,
                             fgsm_points: Mapping[str, np.ndarray], adv_points: Mapping[str, np.ndarray],
                             grid: int = 120, ncols: int = 4, margin: float = 0.6) -> pathlib.Path:
    """Fig. 7: for each 2-D model, the loss landscape of the sample's label (colour), the decision
    boundary (black line), the data, the sample (star), its FGSM point (cross) and its adversarial
    points (dots, e.g. 1000 random-start PGD points).

    models: name -> ``probs_fn(points [P, 2]) -> class probabilities [P, C]`` (numpy in/out).
    """
    plt = _plt()
    x = np.asarray(x)
    lo, hi = x.min(0) - margin, x.max(0) + margin
    gx, gy = np.meshgrid(np.linspace(lo[0], hi[0], grid), np.linspace(lo[1], hi[1], grid))
    pts = np.stack([gx.ravel(), gy.ravel()], 1).astype(np.float32)
    n = len(models)
    ncols = min(ncols, n)
    nrows = -(-n // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.4 * ncols, 3.0 * nrows), squeeze=False)
    for ax in axes.ravel()[n:]:
        ax.axis("off")
    for ax, (name, probs_fn) in zip(axes.ravel(), models.items()):
        p = np.asarray(probs_fn(pts))
        loss = -np.log(np.clip(p[:, label], 1e-12, 1.0)).reshape(gx.shape)
        cs = ax.contourf(gx, gy, np.log1p(loss), levels=20, cmap="viridis")
        ax.contour(gx, gy, p[:, 1].reshape(gx.shape) if p.shape[1] == 2 else p.argmax(1).reshape(gx.shape),
                   levels=[0.5], colors="k", linewidths=1.2)
        ax.scatter(x[:, 0], x[:, 1], c=np.asarray(y), cmap="coolwarm", s=3, alpha=0.35)
        a = np.asarray(adv_points[name])
        ax.scatter(a[:, 0], a[:, 1], s=2, c="orange", alpha=0.5, label="adversarial points")
        f = np.asarray(fgsm_points[name]).ravel()
        ax.scatter([sample[0]], [sample[1]], marker="*", s=120, c="white", edgecolors="k", label="sample", zorder=5)
        ax.scatter([f[0]], [f[1]], marker="X", s=70, c="red", edgecolors="k", label="FGSM", zorder=5)
        ax.set_title(name, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
        fig.colorbar(cs, ax=ax, fraction=0.046, pad=0.02)
    axes.ravel()[0].legend(fontsize=6, loc="lower left")
    fig.suptitle("decision boundary (black) and log(1 + loss) landscape of the sample's label", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return pathlib.Path(path)


def plot_training_curves(path, curves: Mapping[str, Sequence[float]], title: str = "training loss") -> pathlib.Path:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4))
    for k, v in curves.items():
        ax.plot(np.asarray(v), label=k)
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return pathlib.Path(path)
