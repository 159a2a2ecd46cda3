"""FAB, the Fast Adaptive Boundary attack (Croce & Hein 2020, "Minimally distorted adversarial
examples with a fast adaptive boundary attack", Algorithm 1 / Eqs. 7-9), L-inf, targeted ("FAB-T",
as in AutoAttack) or untargeted.

Compact JAX version of the official fra31/auto-attack ``fab_base.py`` / ``fab_projections.py``:
each iteration linearizes the classifier at x1, projects both x1 and the original point x0 onto
the linearized decision hyperplane intersected with the box (``projection_linf``, a sort plus a
binary search), takes the convex combination with weight alpha = min(||d1|| / (||d1|| + ||d2||),
alpha_max) and overshoot eta, and after a success moves back towards x0 by beta. The smallest
successful perturbation is kept; it is returned only if its L-inf norm is <= eps (else x).
Restarts after the first start from a random point at distance eps/2. FAB-T runs the targets of the
2nd..(n+1)-th highest clean logits; success is untargeted misclassification (as in the official
code). Only points classified correctly at the start are attacked.

Differences: whole-batch masks instead of index gathers; a domain other than [0, 1] is handled by
an affine map to the unit box; ``domain=None`` uses the box x0 +- max(1, 2 eps).
"""
from __future__ import annotations

import dataclasses
import math
from typing import ClassVar

import jax
import jax.numpy as jnp

from advjax.attacks import base


def projection_linf(t: jax.Array, w: jax.Array, b: jax.Array) -> jax.Array:
    """Minimal L-inf step d with w.(t + d) = b and t + d in [0, 1]^D (rows of t [M, D], w [M, D], b [M]).

    When the hyperplane does not meet the box, the box point closest to it along the same
    procedure is returned (as the official ``projection_linf``).
    """
    m, dim = t.shape
    sign = jnp.where(jnp.sum(w * t, axis=1) - b >= 0, 1.0, -1.0).astype(t.dtype)
    w = w * sign[:, None]
    b = b * sign
    a = (w < 0).astype(t.dtype)
    nz = (w != 0).astype(t.dtype)
    d = (a - t) * nz
    p = a - t * (2 * a - 1)
    indp = jnp.argsort(p, axis=1)
    b = b - jnp.sum(w * t, axis=1)
    b0 = jnp.sum(w * d, axis=1)
    indp2 = jnp.flip(indp, axis=1)
    ws = jnp.take_along_axis(w, indp2, axis=1)
    bs2 = -ws * jnp.take_along_axis(d, indp2, axis=1)
    s = jnp.cumsum(jnp.abs(ws), axis=1)
    sb = jnp.cumsum(bs2, axis=1) + b0[:, None]
    b2 = sb[:, -1] - s[:, -1] * jnp.take_along_axis(p, indp[:, :1], axis=1)[:, 0]
    c_l = b - b2 > 0
    c2 = (b - b0 > 0) & ~c_l
    lb = jnp.zeros((m,), t.dtype)
    ub = jnp.full((m,), dim - 1, t.dtype)

    def bisect(_, bounds):  # a rolled loop: a few cheap gathers, not worth unrolling (compile time)
        lb, ub = bounds
        c4 = jnp.floor((lb + ub) / 2)
        ci = c4.astype(jnp.int32)[:, None]
        indcurr = jnp.take_along_axis(indp, dim - 1 - ci, axis=1)
        b2 = (jnp.take_along_axis(sb, ci, axis=1) - jnp.take_along_axis(s, ci, axis=1)
              * jnp.take_along_axis(p, indcurr, axis=1))[:, 0]
        c = b - b2 > 0
        return jnp.where(c, c4, lb), jnp.where(c, ub, c4)

    lb, ub = jax.lax.fori_loop(0, math.ceil(math.log2(dim)) if dim > 1 else 0, bisect, (lb, ub))
    lbi = lb.astype(jnp.int32)[:, None]
    lmbd_l = jnp.maximum((b - sb[:, -1]) / (-s[:, -1]), 0.0)[:, None]
    d_l = (2 * a - 1) * lmbd_l
    lmbd_2 = jnp.maximum((b - jnp.take_along_axis(sb, lbi, axis=1)[:, 0])
                         / (-jnp.take_along_axis(s, lbi, axis=1)[:, 0]), 0.0)[:, None]
    d_2 = jnp.minimum(lmbd_2, d) * a + jnp.maximum(-lmbd_2, d) * (1 - a)
    d = jnp.where(c_l[:, None], d_l, jnp.where(c2[:, None], d_2, d))
    return d * nz


@dataclasses.dataclass(frozen=True, kw_only=True)
class FAB(base.Attack):
    """Untargeted FAB L-inf: linearizes all K - 1 decision boundaries (full Jacobian, one VJP per
    class) and steps towards the closest. See :class:`FABT` for the AutoAttack version.

    Attributes: steps (100), restarts (1), alpha_max (0.1), eta (1.05), beta (0.9),
    n_target_classes (9), loop (loop form of the iterations; "auto" means rolled here).
    """

    steps: int = 100
    restarts: int = 1
    alpha_max: float = 0.1
    eta: float = 1.05
    beta: float = 0.9
    n_target_classes: int = 9
    loop: base.Loop = "auto"
    name: ClassVar[str] = "fab"
    supported_norms: ClassVar[tuple[str, ...]] = ("linf",)
    supports_targeted: ClassVar[bool] = False
    multi_target: ClassVar[bool] = False

    @property
    def _loop(self):
        # "auto" is rolled for FAB: each unrolled step costs ~2 s of XLA:CPU compile (the sort and
        # gathers of the projection), far more than the while-loop slowdown saves.
        return "rolled" if self.loop == "auto" else self.loop

    def __post_init__(self):
        super().__post_init__()
        for f in ("steps", "restarts", "n_target_classes"):
            object.__setattr__(self, f, base.check_positive(f, getattr(self, f), integer=True))
        for f in ("alpha_max", "eta", "beta"):
            object.__setattr__(self, f, base.check_positive(f, getattr(self, f)))

    # one run: returns (adv [N, ...], res2 [N]) in original units; res2 = 1e10 where it failed
    def _single_run(self, apply_fn, variables, x, y, target, key, use_rand_start, attack_mask):
        n = x.shape[0]
        shape = x.shape
        if self.domain is None:
            half = jnp.maximum(1.0, 2.0 * self.eps)
            lo, hi = x - half, x + half
        else:
            lo = jnp.full_like(x, self.domain[0])
            hi = jnp.full_like(x, self.domain[1])
        scale = hi - lo  # constant per pixel, so L-inf distances scale by it uniformly
        unit = lambda z: (z - lo) / scale  # noqa: E731
        back = lambda u: lo + u * scale  # noqa: E731
        sc = jnp.max(jnp.reshape(scale, (n, -1)), axis=1)  # per-example scale (constant)
        eps_u = self.eps / sc

        im2 = unit(x)
        fwd = lambda u: apply_fn(variables, back(u))  # noqa: E731

        def diff_and_grad(u):
            if self.multi_target:
                def f(z):
                    logits = fwd(z)
                    zy = jnp.take_along_axis(logits, y[:, None], 1)[:, 0]
                    zt = jnp.take_along_axis(logits, target[:, None], 1)[:, 0]
                    return jnp.sum(-(zy - zt)), -(zy - zt)
                g, df = jax.grad(f, has_aux=True)(u)
                return df[:, None], g[:, None]
            logits, vjp = jax.vjp(fwd, u)
            k = logits.shape[-1]
            jac = jax.vmap(lambda c: vjp(jnp.broadcast_to(jax.nn.one_hot(c, k, dtype=logits.dtype), logits.shape))[0])(
                jnp.arange(k))  # [K, N, ...]
            jac = jnp.moveaxis(jac, 0, 1)  # [N, K, ...]
            zy = jnp.take_along_axis(logits, y[:, None], 1)
            df = logits - zy
            gy = jnp.take_along_axis(jac, y.reshape((n, 1) + (1,) * (jac.ndim - 2)), 1)
            dg = jac - gy
            df = jnp.where(jax.nn.one_hot(y, k, dtype=bool), 1e10, df)
            return df, dg

        x1 = im2
        if use_rand_start:
            t = jax.random.uniform(key, shape, x.dtype, -1.0, 1.0)
            tn = base._bcast(jnp.max(jnp.abs(jnp.reshape(t, (n, -1))), axis=1), x)
            x1 = jnp.clip(im2 + base._bcast(jnp.minimum(1e10, eps_u), x) * t / tn * 0.5, 0.0, 1.0)
        x0f = jnp.reshape(im2, (n, -1))
        state = (x1, im2, jnp.full((n,), 1e10, x.dtype))

        def body(i, st):
            x1, adv, res2 = st
            df, dg = diff_and_grad(x1)
            dist1 = jnp.abs(df) / (1e-12 + jnp.sum(jnp.abs(jnp.reshape(dg, dg.shape[:2] + (-1,))), axis=-1))
            ind = jnp.argmin(dist1, axis=1)
            dg2 = jnp.take_along_axis(dg, ind.reshape((n, 1) + (1,) * (dg.ndim - 2)), 1)[:, 0]
            df2 = jnp.take_along_axis(df, ind[:, None], 1)[:, 0]
            w = jnp.reshape(dg2, (n, -1))
            bb = -df2 + jnp.sum(w * jnp.reshape(x1, (n, -1)), axis=1)
            d3 = projection_linf(jnp.concatenate([jnp.reshape(x1, (n, -1)), x0f], 0),
                                 jnp.concatenate([w, w], 0), jnp.concatenate([bb, bb], 0))
            d1 = jnp.reshape(d3[:n], shape)
            d2 = jnp.reshape(d3[n:], shape)
            a0 = jnp.maximum(jnp.max(jnp.abs(d3), axis=1), 1e-8)
            a1, a2 = a0[:n], a0[n:]
            alpha = base._bcast(jnp.clip(a1 / (a1 + a2), 0.0, self.alpha_max), x)
            x1 = jnp.clip((x1 + self.eta * d1) * (1 - alpha) + (im2 + d2 * self.eta) * alpha, 0.0, 1.0)
            is_adv = (jnp.argmax(fwd(x1), axis=-1) != y) & attack_mask
            t = jnp.max(jnp.abs(jnp.reshape(x1 - im2, (n, -1))), axis=1)
            better = is_adv & (t < res2)
            adv = jnp.where(base._bcast(better, x), x1, adv)
            res2 = jnp.where(better, t, res2)
            x1 = jnp.where(base._bcast(is_adv, x), im2 + (x1 - im2) * self.beta, x1)
            return x1, adv, res2

        _, adv, res2 = base.fori(self.steps, body, state, self._loop)
        return back(adv), jnp.where(res2 < 1e10, res2 * sc, 1e10)

    def run(self, apply_fn, variables, x, y, key):
        logits0 = apply_fn(variables, x)
        num_classes = logits0.shape[-1]
        robust0 = jnp.argmax(logits0, axis=-1) == y
        order = jnp.argsort(logits0, axis=-1)
        n_t = min(self.n_target_classes, num_classes - 1) if self.multi_target else 1
        runs = n_t * self.restarts

        def one(j, carry):
            adv, robust = carry
            target = jnp.take(order, num_classes - (2 + j // self.restarts), axis=-1)
            use_rs = (j % self.restarts) > 0
            k = jax.random.fold_in(key, j)
            if isinstance(use_rs, bool):
                adv_c, res = self._single_run(apply_fn, variables, x, y, target, k, use_rs, robust0)
            else:  # rolled loop over runs: random start chosen per run with a select
                adv_a, res_a = self._single_run(apply_fn, variables, x, y, target, k, False, robust0)
                if self.restarts > 1:
                    adv_b, res_b = self._single_run(apply_fn, variables, x, y, target, k, True, robust0)
                    adv_a = jnp.where(use_rs, adv_b, adv_a)
                    res_a = jnp.where(use_rs, res_b, res_a)
                adv_c, res = adv_a, res_a
            ok = (jnp.argmax(apply_fn(variables, adv_c), axis=-1) != y) & (res <= self.eps)
            fooled = robust & ok
            return jnp.where(base._bcast(fooled, x), adv_c, adv), robust & ~fooled

        # the loop over targets x restarts takes the form of the inner loop (per lowering platform)
        outer = "rolled" if isinstance(self._loop, int) else self._loop  # an int partially unrolls the inner loop only
        carry = (x, robust0)
        if runs == 1:
            carry = one(0, carry)
        else:
            carry = base.fori(runs, one, carry, outer, auto_steps=self.steps)
        return base.project_to_ball(carry[0], x, self.eps, self.norm, self.domain)


@dataclasses.dataclass(frozen=True, kw_only=True)
class FABT(FAB):
    """FAB-T of AutoAttack: FAB on the boundary between the true class and each of the top
    ``n_target_classes`` other classes of the clean logits (one gradient per step). ``y`` is the
    TRUE label: success means misclassification, as in the official code."""

    name: ClassVar[str] = "fab-t"
    multi_target: ClassVar[bool] = True
