"""Loss landscapes in input space (Li et al., "Visualizing the Loss Landscape of Neural Nets",
NeurIPS 2018, as used for the thesis' Fig. 32, Smooth Adversarial Training Sec. 4.6):

    L(a, b) = loss(f(x + a d1 + b d2), y)        a, b on a regular grid in [-r, r]

for one input (or a batch, one surface per example) and two directions d1, d2 of the input's
shape. :func:`adversarial_directions` gives the thesis' pair: d1 = sign(grad_x CE) (the FGSM
direction, so a = eps is the FGSM point) and d2 a random sign vector made orthogonal to d1 (per
example) and rescaled to d1's L2 norm; or pass any two directions (e.g. an FGSM-SDI
initialization and its attack step, or an LSA perturbation). The whole grid is one jitted call
that vmaps the forward pass over the grid points (``chunk``: vmapped ``lax.map`` chunks of that
many points, for memory).

:func:`plot_landscapes` draws surfaces and contours side by side (e.g. ReLU vs SAT);
:func:`roughness` is a number to compare them by: the mean absolute discrete Laplacian of the
surface (grid units), which is 0 for a plane and grows with curvature and kinks.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Callable, Mapping, Optional

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["Landscape", "adversarial_directions", "loss_surface", "loss_landscape", "roughness",
           "plot_landscapes"]


@dataclasses.dataclass(frozen=True)
class Landscape:
    """``loss[i, j, k]``: example i's loss at ``x_i + a[j] d1_i + b[k] d2_i``."""

    a: np.ndarray  # (n,) coordinates along d1
    b: np.ndarray  # (m,) coordinates along d2
    loss: np.ndarray  # (B, n, m)
    d1: np.ndarray  # (B, ...) as x
    d2: np.ndarray

    def center(self) -> np.ndarray:
        """The loss at the grid point nearest (0, 0), per example."""
        return self.loss[:, int(np.argmin(np.abs(self.a))), int(np.argmin(np.abs(self.b)))]


def _per_example_ce(logits, y):
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    return -jnp.take_along_axis(logp, y[:, None].astype(jnp.int32), axis=-1)[:, 0]


def _check(x, y, d1=None, d2=None):
    x = jnp.asarray(x)
    y = jnp.asarray(y)
    if x.ndim < 2:
        raise ValueError(f"loss landscape: x must be a batch [B, ...], got shape {x.shape}")
    if y.shape != (x.shape[0],):
        raise ValueError(f"loss landscape: y must have shape ({x.shape[0]},), got {y.shape}")
    for name, d in (("d1", d1), ("d2", d2)):
        if d is not None and jnp.shape(d) != x.shape:
            raise ValueError(f"loss landscape: direction {name} must have x's shape {x.shape}, got {jnp.shape(d)}")
    return x, y


@functools.partial(jax.jit, static_argnames=("apply_fn", "loss_fn"))
def _directions(apply_fn, variables, x, y, key, loss_fn):
    g = jax.grad(lambda z: jnp.sum(loss_fn(apply_fn(variables, z), y)))(x)
    d1 = jnp.sign(g)
    r = jax.random.rademacher(key, x.shape, x.dtype)
    axes = tuple(range(1, x.ndim))
    dot = jnp.sum(r * d1, axes, keepdims=True)
    n1 = jnp.sum(d1 * d1, axes, keepdims=True)
    d2 = r - jnp.where(n1 > 0, dot / jnp.where(n1 > 0, n1, 1.0), 0.0) * d1
    scale = jnp.sqrt(jnp.where(n1 > 0, n1, x[0].size) / jnp.maximum(jnp.sum(d2 * d2, axes, keepdims=True), 1e-30))
    return d1, d2 * scale


def adversarial_directions(apply_fn: Callable, variables, x, y, key, *, loss_fn: Callable = _per_example_ce):
    """``(d1, d2)``: d1 = sign(grad_x loss) per example, d2 = a Rademacher vector orthogonal to d1
    (Gram-Schmidt per example) with d1's L2 norm (sqrt(D) unless the gradient has zeros)."""
    x, y = _check(x, y)
    return _directions(apply_fn, variables, x, y, key, loss_fn)


@functools.partial(jax.jit, static_argnames=("apply_fn", "loss_fn", "chunk", "domain"))
def _surface(apply_fn, variables, x, y, d1, d2, a, b, loss_fn, chunk, domain):
    ga, gb = jnp.meshgrid(a, b, indexing="ij")
    coords = jnp.stack([ga.ravel(), gb.ravel()], axis=-1).astype(x.dtype)

    def at(c):
        z = x + c[0] * d1 + c[1] * d2
        if domain is not None:
            z = jnp.clip(z, domain[0], domain[1])
        return loss_fn(apply_fn(variables, z), y)  # (B,)

    vals = jax.vmap(at)(coords) if chunk is None else jax.lax.map(at, coords, batch_size=chunk)
    return vals.T.reshape(x.shape[0], a.shape[0], b.shape[0])


def loss_surface(apply_fn: Callable, variables, x, y, d1, d2, a, b, *, loss_fn: Callable = _per_example_ce,
                 chunk: Optional[int] = None, domain=None) -> jax.Array:
    """``[B, len(a), len(b)]`` losses at ``x + a_j d1 + b_k d2`` in one jitted, vmapped call.

    ``domain=(lo, hi)`` clips the points to the input box (default None: the raw plane, as Li et
    al.); ``chunk``: evaluate the grid in vmapped chunks of that many points (``lax.map``)."""
    x, y = _check(x, y, d1, d2)
    if chunk is not None and (not isinstance(chunk, int) or chunk < 1):
        raise ValueError(f"loss_surface: chunk must be a positive int or None, got {chunk!r}")
    a = jnp.asarray(a, jnp.float32).ravel()
    b = jnp.asarray(b, jnp.float32).ravel()
    domain = None if domain is None else (float(domain[0]), float(domain[1]))
    return _surface(apply_fn, variables, x, y, jnp.asarray(d1, x.dtype), jnp.asarray(d2, x.dtype), a, b,
                    loss_fn, chunk, domain)


def loss_landscape(apply_fn: Callable, variables, x, y, key=None, *, directions=None, radius: float = 8 / 255,
                   steps: int = 21, loss_fn: Callable = _per_example_ce, chunk: Optional[int] = None,
                   domain=None) -> Landscape:
    """The loss on a ``steps x steps`` grid over [-radius, radius]^2 along ``directions`` (default:
    :func:`adversarial_directions` with ``key``)."""
    if not (isinstance(steps, int) and steps >= 2):
        raise ValueError(f"loss_landscape: steps must be an int >= 2, got {steps!r}")
    if not (radius > 0):
        raise ValueError(f"loss_landscape: radius must be > 0, got {radius!r}")
    x, y = _check(x, y)
    if directions is None:
        if key is None:
            raise ValueError("loss_landscape: pass a PRNG key (for the random direction) or directions=(d1, d2)")
        d1, d2 = adversarial_directions(apply_fn, variables, x, y, key, loss_fn=loss_fn)
    else:
        d1, d2 = directions
    grid = np.linspace(-radius, radius, steps, dtype=np.float32)
    loss = loss_surface(apply_fn, variables, x, y, d1, d2, grid, grid, loss_fn=loss_fn, chunk=chunk, domain=domain)
    return Landscape(a=grid, b=grid.copy(), loss=np.asarray(loss), d1=np.asarray(d1), d2=np.asarray(d2))


def roughness(ls: Landscape) -> np.ndarray:
    """Per example: the mean |discrete Laplacian| of the loss over the interior grid points (loss
    units per grid step squared); 0 for a plane."""
    z = np.asarray(ls.loss, np.float64)
    lap = (z[:, 2:, 1:-1] + z[:, :-2, 1:-1] + z[:, 1:-1, 2:] + z[:, 1:-1, :-2] - 4 * z[:, 1:-1, 1:-1])
    return np.abs(lap).mean(axis=(1, 2))


def plot_landscapes(landscapes: Mapping[str, Landscape], path, *, index: int = 0, title: Optional[str] = None,
                    eps_unit: float = 1 / 255):
    """One column per landscape (e.g. {"ReLU": ..., "SAT (SiLU)": ...}): the surface on top, its
    contour below, axes in units of ``eps_unit`` (default 1/255). Writes ``path`` (png)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    items = list(landscapes.items())
    if not items:
        raise ValueError("plot_landscapes: no landscapes given")
    fig = plt.figure(figsize=(4.2 * len(items), 7.6))
    for c, (label, ls) in enumerate(items):
        A, B = np.meshgrid(ls.a / eps_unit, ls.b / eps_unit, indexing="ij")
        z = ls.loss[index]
        ax = fig.add_subplot(2, len(items), c + 1, projection="3d")
        ax.plot_surface(A, B, z, cmap="viridis", linewidth=0, antialiased=True)
        ax.set_title(f"{label}\nroughness {roughness(ls)[index]:.3g}")
        ax.set_xlabel("adv. dir. (1/255)" if eps_unit == 1 / 255 else "d1")
        ax.set_ylabel("random orth. dir." if eps_unit == 1 / 255 else "d2")
        ax.set_zlabel("loss")
        ax2 = fig.add_subplot(2, len(items), len(items) + c + 1)
        cs = ax2.contour(A, B, z, levels=15, cmap="viridis")
        ax2.clabel(cs, inline=True, fontsize=6)
        ax2.set_xlabel("d1")
        ax2.set_ylabel("d2")
        ax2.set_aspect("equal")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
