"""Square Attack, L-inf (Andriushchenko, Croce, Flammarion & Hein 2020, Algorithm 1 and Sec. 3.1):
score-based random search, no gradients.

As in the official fra31/auto-attack ``square.py``: start from vertical stripes x + eps * s,
s in {-1, 1} per (column, channel); at iteration i draw a square of side
``s_i = max(round(sqrt(p_i * H * W)), 1)`` (capped at min(H, W)) at a random position, set it to
x_best +- 2 eps per channel, project onto the ball and the domain, and keep the candidate if the
loss decreased or the point is misclassified. The loss is the margin z_y - max_{j != y} z_j
(``loss="margin"``; "ce" uses -CE, targeted uses CE of the target); p follows the official
piecewise schedule from p_init = 0.8 (halved after iterations 10, 50, 200, 500, 1000, 2000, 4000,
6000 and 8000 of 10000), rescaled to ``n_queries`` when ``rescale_schedule=True`` (the official
``SquareAttack`` default, used here standalone) and indexed by the raw iteration otherwise (the
official AutoAttack ensemble builds Square with ``resc_schedule=False``: with 5000 queries its
squares shrink half as fast, p ends at p_init / 128). Only points correctly classified and not yet
fooled are updated; the loop stops early once every point is fooled.

Difference: the square position and sign are drawn per example (as in the original Square code);
the AutoAttack copy shares them across the batch. Images are NHWC.

Loop form: a ``lax.while_loop`` whose predicate (any point left, queries left) is read by the host
after every trip on a GPU (a device-to-host copy and a stall each time: ~5000 per batch at one
query per trip). ``loop="auto"`` therefore runs one query per trip in programs lowered for the CPU
(no such stall there; a bigger body only compiles longer) and :data:`QUERIES_PER_TRIP_OFF_CPU`
queries per trip for other platforms (``lax.platform_dependent``: decided at lowering, see
:mod:`advjax.models.platform`). Query i draws its square from ``fold_in(key, i)`` and does nothing
once i >= n_queries or its point is fooled, so every trip length gives the same result for the
same key.
"""
from __future__ import annotations

import dataclasses
import math
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from advjax import losses as _losses
from advjax.attacks import base
from advjax.models.platform import per_platform

#: Queries per while-loop trip with ``loop="auto"`` in programs lowered for GPU / TPU (each trip
#: costs the host a predicate read there; 8 queries cut those reads 8x for an 8x larger body).
QUERIES_PER_TRIP_OFF_CPU = 8


def p_selection(p_init: float, it: int, n_queries: int, rescale: bool = True) -> float:
    """The official schedule of the square fraction p at iteration ``it``."""
    if rescale:
        it = int(it / n_queries * 10000)
    for bound, div in ((8000, 512), (6000, 256), (4000, 128), (2000, 64), (1000, 32), (500, 16), (200, 8),
                       (50, 4), (10, 2)):
        if it > bound:
            return p_init / div
    return p_init


def side_schedule(p_init: float, n_queries: int, h: int, w: int, rescale: bool = True) -> np.ndarray:
    """Side length of the square at each iteration (int32 [n_queries]):
    ``max(round(sqrt(p_i * h * w)), 1)``, capped at min(h, w)."""
    out = np.empty((n_queries,), np.int32)
    for i in range(n_queries):
        p = p_selection(p_init, i, n_queries, rescale)
        s = max(int(round(math.sqrt(p * h * w))), 1)
        out[i] = min(s, min(h, w))
    return out


@dataclasses.dataclass(frozen=True, kw_only=True)
class Square(base.Attack):
    """Square Attack L-inf. Attributes: n_queries (5000), p_init (0.8), restarts (1),
    loss ("margin" | "ce"), rescale_schedule (True: the p schedule of 10000 iterations is
    rescaled to ``n_queries``, the official standalone default; False: as inside the official
    AutoAttack), loop (queries per while-loop trip; the loop is always a ``lax.while_loop`` with
    early exit: an int is that many queries per trip, "rolled" one, "auto" one on the CPU and
    :data:`QUERIES_PER_TRIP_OFF_CPU` elsewhere; the result is the same for every choice)."""

    n_queries: int = 5000
    p_init: float = 0.8
    restarts: int = 1
    loss: str = "margin"
    rescale_schedule: bool = True
    loop: base.Loop = "auto"
    name: ClassVar[str] = "square"
    supported_norms: ClassVar[tuple[str, ...]] = ("linf",)

    def __post_init__(self):
        super().__post_init__()
        object.__setattr__(self, "n_queries", base.check_positive("n_queries", self.n_queries, integer=True))
        object.__setattr__(self, "restarts", base.check_positive("restarts", self.restarts, integer=True))
        object.__setattr__(self, "p_init", base.check_positive("p_init", self.p_init))
        if self.p_init > 1:
            raise ValueError(f"p_init must be in (0, 1], got {self.p_init}")
        if self.loss not in ("margin", "ce"):
            raise ValueError(f"Square loss must be 'margin' or 'ce', got {self.loss!r}")
        if self.loop == "unroll":
            raise ValueError("Square runs thousands of queries: use loop='auto', 'rolled' or an int")

    def _margin_and_loss(self, logits, y):
        onehot = jax.nn.one_hot(y, logits.shape[-1], dtype=bool)
        z_y = jnp.take_along_axis(logits, y[:, None], 1)[:, 0]
        z_other = jnp.max(jnp.where(onehot, -jnp.inf, logits), axis=-1)
        if self.targeted:
            return z_other - z_y, _losses.cross_entropy(logits, y)
        margin = z_y - z_other
        if self.loss == "ce":
            return margin, -_losses.cross_entropy(logits, y)
        return margin, margin

    def _single(self, apply_fn, variables, x, y, key, active0):
        if x.ndim != 4:
            raise ValueError(f"Square needs NHWC images, got x of shape {x.shape}")
        if isinstance(self.loop, int):
            return self._search(apply_fn, self.loop, variables, x, y, key, active0)
        if self.loop == "auto":
            return per_platform(
                variables, x, y, key, active0,
                cpu=lambda *a: self._search(apply_fn, 1, *a),
                default=lambda *a: self._search(apply_fn, min(QUERIES_PER_TRIP_OFF_CPU, self.n_queries), *a))
        return self._search(apply_fn, 1, variables, x, y, key, active0)

    def _search(self, apply_fn, per_trip, variables, x, y, key, active0):
        """The random search with ``per_trip`` queries per while-loop trip."""
        n, h, w, c = x.shape
        eps = self.eps
        sides = jnp.asarray(side_schedule(self.p_init, self.n_queries, h, w, bool(self.rescale_schedule)))
        k0, key = jax.random.split(key)
        stripes = jnp.where(jax.random.bernoulli(k0, 0.5, (n, 1, w, c)), 1.0, -1.0).astype(x.dtype)
        x_best = base.project_to_ball(x + eps * stripes, x, eps, "linf", self.domain)
        margin, loss = self._margin_and_loss(apply_fn(variables, x_best), y)
        margin = jnp.where(active0, margin, -1.0)  # points not attacked count as done
        rows = jnp.arange(h)[None, :, None, None]
        cols = jnp.arange(w)[None, None, :, None]

        def step(i, st):
            x_best, margin_min, loss_min = st
            s = sides[jnp.minimum(i, self.n_queries - 1)]
            ki = jax.random.fold_in(key, i)
            kh, kw, ks = jax.random.split(ki, 3)
            hi_h = jnp.maximum(h - s, 1)
            hi_w = jnp.maximum(w - s, 1)
            vh = jax.random.randint(kh, (n, 1, 1, 1), 0, hi_h)
            vw = jax.random.randint(kw, (n, 1, 1, 1), 0, hi_w)
            sign = jnp.where(jax.random.bernoulli(ks, 0.5, (n, 1, 1, c)), 1.0, -1.0).astype(x.dtype)
            mask = ((rows >= vh) & (rows < vh + s) & (cols >= vw) & (cols < vw + s)).astype(x.dtype)
            x_new = base.project_to_ball(x_best + mask * (2.0 * eps) * sign, x, eps, "linf", self.domain)
            m_new, l_new = self._margin_and_loss(apply_fn(variables, x_new), y)
            active = (margin_min > 0) & (i < self.n_queries)
            improved = l_new < loss_min
            loss_min = jnp.where(active & improved, l_new, loss_min)
            upd = active & (improved | (m_new <= 0))
            margin_min = jnp.where(upd, m_new, margin_min)
            x_best = jnp.where(base._bcast(upd, x), x_new, x_best)
            return x_best, margin_min, loss_min

        def cond(carry):
            i, (_, margin_min, _) = carry
            return (i < self.n_queries) & jnp.any(margin_min > 0)

        def trip(carry):
            i, st = carry
            for j in range(per_trip):
                st = step(i + j, st)
            return i + per_trip, st

        _, (x_best, margin_min, _) = jax.lax.while_loop(cond, trip, (jnp.asarray(0), (x_best, margin, loss)))
        return x_best

    def run(self, apply_fn, variables, x, y, key):
        robust = ~base.is_success(apply_fn(variables, x), y, self.targeted)
        adv = x
        for k in jax.random.split(key, self.restarts):
            cand = self._single(apply_fn, variables, x, y, k, robust)
            fooled = robust & base.is_success(apply_fn(variables, cand), y, self.targeted)
            adv = jnp.where(base._bcast(fooled, x), cand, adv)
            robust = robust & ~fooled
        return base.project_to_ball(adv, x, self.eps, self.norm, self.domain)
