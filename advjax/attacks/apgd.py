"""Auto-PGD (Croce & Hein 2020, "Reliable evaluation of adversarial robustness with an ensemble of
diverse parameter-free attacks", Algorithm 1), APGD-CE / APGD-DLR and the targeted APGD-T.

Follows the official fra31/auto-attack ``autopgd_base.py`` in every step:

* start: x + eps * t / ||t|| (t ~ U(-1, 1)^d for L-inf, N(0, I) for L2), clipped to the domain;
* step size eta = 2 eps per example; momentum alpha = 0.75 (Eq. 2: z = P(x_k + eta grad-step),
  x_{k+1} = P(x_k + alpha (z - x_k) + (1 - alpha)(x_k - x_{k-1})), alpha = 1 at the first step);
* checkpoints (Sec. 3.2): the first after ``max(int(0.22 N), 1)`` iterations, then windows that
  shrink by ``max(int(0.03 N), 1)`` down to ``max(int(0.06 N), 1)`` (p_{j+1} = p_j +
  max(p_j - p_{j-1} - 0.03, 0.06)); at a checkpoint, condition 1 = the loss increased in at most
  rho = 0.75 of the window's steps, condition 2 = the step was not reduced at the last checkpoint
  and the best loss did not improve since; if either holds the step halves and the iterate
  restarts from the best point (and its gradient);
* per-sample best loss point (``x_best``) and the last point that misclassified (``x_best_adv``)
  are tracked; restarts and target classes only matter for the points still robust (here: masks
  over the whole batch instead of index gathers, so shapes stay static).

The oscillation count compares consecutive losses, the first against 0 (the zero row the official
code reads at ``loss_steps[-1]``). APGD-T runs ``min(n_target_classes, K - 1)`` target classes, the
2nd..(n+1)-th highest clean logits, on the targeted DLR loss (Eq. 6).
"""
from __future__ import annotations

import dataclasses
from typing import Callable, ClassVar

import jax
import jax.numpy as jnp

from advjax import losses as _losses
from advjax.attacks import base


def checkpoint_schedule(steps: int) -> dict[int, int]:
    """{iteration index i (0-based) at which a checkpoint is evaluated: window length k}."""
    n2 = max(int(0.22 * steps), 1)
    n_min = max(int(0.06 * steps), 1)
    size_decr = max(int(0.03 * steps), 1)
    k, counter, out = n2, 0, {}
    for i in range(steps):
        counter += 1
        if counter == k:
            out[i] = k
            k = max(k - size_decr, n_min)
            counter = 0
    return out


def apgd_single_run(apply_fn, variables, x, key, *, objective: Callable, robust: Callable, eps: float,
                    norm: str, steps: int, rho: float, domain, loop, x_init=None):
    """One APGD run on the whole batch.

    Args:
      objective: logits -> per-example loss to maximize.
      robust: logits -> bool [N], True while the attack has not yet succeeded on the point.
    Returns:
      (x_best, still_robust, loss_best, x_best_adv) as in the official ``attack_single_run``.
    """
    bc = lambda v: base._bcast(v, x)  # noqa: E731
    if x_init is None:
        if norm == "linf":
            t = jax.random.uniform(key, x.shape, x.dtype, -1.0, 1.0)
        else:
            t = jax.random.normal(key, x.shape, x.dtype)
        x_adv = base.clip_to_domain(x + eps * base.normalize(t, norm), domain)
    else:
        x_adv = x_init
    loss, logits, grad = base.loss_logits_grad(apply_fn, variables, x_adv, objective)
    acc = robust(logits)
    n = x.shape[0]
    state = dict(
        x_adv=x_adv, x_old=x_adv, grad=grad, grad_best=grad, x_best=x_adv, x_best_adv=x_adv,
        loss_best=loss, acc=acc, step=jnp.full((n,), 2.0 * eps, x.dtype),
        count=jnp.zeros((n,), jnp.int32), loss_prev=jnp.zeros((n,), loss.dtype),
        loss_best_last=loss, reduced_last=jnp.ones((n,), bool),
    )
    schedule = checkpoint_schedule(steps)
    is_check_tbl = jnp.asarray([i in schedule for i in range(steps)])
    k_tbl = jnp.asarray([schedule.get(i, 1) for i in range(steps)], jnp.float32)

    def proj(z):
        if norm == "linf":
            return base.project_to_ball(z, x, eps, norm, domain)
        d = z - x
        r = jnp.minimum(eps, base.per_example_norm(d, "l2"))
        return base.clip_to_domain(x + base.normalize(d, "l2") * bc(r), domain)

    def body(i, s):
        xa = s["x_adv"]
        grad2 = xa - s["x_old"]
        a = (0.75 if i > 0 else 1.0) if isinstance(i, int) else jnp.where(i > 0, 0.75, 1.0).astype(x.dtype)
        z = proj(xa + bc(s["step"]) * base.steepest_direction(s["grad"], norm))
        x_new = proj(xa + (z - xa) * a + grad2 * (1 - a))
        loss, logits, grad = base.loss_logits_grad(apply_fn, variables, x_new, objective)
        pred_ok = robust(logits)
        acc = s["acc"] & pred_ok
        x_best_adv = jnp.where(bc(~pred_ok), x_new, s["x_best_adv"])
        improved = loss > s["loss_best"]
        x_best = jnp.where(bc(improved), x_new, s["x_best"])
        grad_best = jnp.where(bc(improved), grad, s["grad_best"])
        loss_best = jnp.where(improved, loss, s["loss_best"])
        count = s["count"] + (loss > s["loss_prev"]).astype(jnp.int32)
        new = dict(s, x_old=xa, x_adv=x_new, grad=grad, grad_best=grad_best, x_best=x_best,
                   x_best_adv=x_best_adv, loss_best=loss_best, acc=acc, count=count, loss_prev=loss)

        def at_checkpoint(s2, k):
            fl_osc = s2["count"].astype(jnp.float32) <= k * rho
            fl_noimpr = (~s2["reduced_last"]) & (s2["loss_best_last"] >= s2["loss_best"])
            fl = fl_osc | fl_noimpr
            return dict(
                s2, reduced_last=fl, loss_best_last=s2["loss_best"],
                step=jnp.where(fl, s2["step"] / 2.0, s2["step"]),
                x_adv=jnp.where(bc(fl), s2["x_best"], s2["x_adv"]),
                grad=jnp.where(bc(fl), s2["grad_best"], s2["grad"]),
                count=jnp.zeros_like(s2["count"]))

        if isinstance(i, int):  # unrolled: static checkpoints
            return at_checkpoint(new, float(schedule[i])) if i in schedule else new
        checked = at_checkpoint(new, k_tbl[i])
        return jax.tree.map(lambda c, u: jnp.where(is_check_tbl[i], c, u), checked, new)

    s = base.fori(steps, body, state, loop)
    return s["x_best"], s["acc"], s["loss_best"], s["x_best_adv"]


@dataclasses.dataclass(frozen=True, kw_only=True)
class APGD(base.Attack):
    """APGD-CE (``loss="ce"``) or APGD-DLR (``loss="dlr"``), L-inf or L2.

    Attributes (beyond :class:`base.Attack`):
      steps: iterations N (100). restarts: random restarts (1), each only matters for the points
      still robust. rho: checkpoint threshold (0.75). loss: "ce" | "dlr".
      targeted: y is the target class; the loss is then -CE(target) (the official "ce-targeted").
      loop: loop form (see :mod:`advjax.attacks.base`); 100 steps are rolled under "auto".
      output: ``"adversarial"`` (default): per point, the last iterate that succeeded (first
        successful restart), else x, as the official ``perturb``; ``"max_loss"``: the iterate of
        highest loss (``x_best`` of the official ``attack_single_run``; the best restart), the point
        APGD-AT trains on.
    """

    steps: int = 100
    restarts: int = 1
    rho: float = 0.75
    loss: str = "ce"
    loop: base.Loop = "auto"
    output: str = "adversarial"
    name: ClassVar[str] = "apgd"

    def __post_init__(self):
        super().__post_init__()
        object.__setattr__(self, "steps", base.check_positive("steps", self.steps, integer=True))
        object.__setattr__(self, "restarts", base.check_positive("restarts", self.restarts, integer=True))
        object.__setattr__(self, "rho", base.check_positive("rho", self.rho))
        if self.loss not in ("ce", "dlr"):
            raise ValueError(f"APGD loss must be 'ce' or 'dlr', got {self.loss!r} (APGD-T: use APGDT)")
        if self.loss == "dlr" and self.targeted:
            raise ValueError("targeted APGD uses the CE loss; for targeted DLR use APGDT")
        if self.output not in ("adversarial", "max_loss"):
            raise ValueError(f"APGD output must be 'adversarial' or 'max_loss', got {self.output!r}")

    def _single(self, apply_fn, variables, x, y, key, objective):
        return apgd_single_run(
            apply_fn, variables, x, key, objective=objective,
            robust=lambda logits: ~base.is_success(logits, y, self.targeted),
            eps=self.eps, norm=self.norm, steps=self.steps, rho=self.rho, domain=self.domain, loop=self.loop)

    def run(self, apply_fn, variables, x, y, key):
        objective = lambda logits: base.attack_loss(self.loss, logits, y, self.targeted)  # noqa: E731
        if self.output == "max_loss":
            keys = jax.random.split(key, self.restarts)
            best, _, best_loss, _ = self._single(apply_fn, variables, x, y, keys[0], objective)
            for k in keys[1:]:
                x_best, _, loss_best, _ = self._single(apply_fn, variables, x, y, k, objective)
                take = loss_best > best_loss
                best = jnp.where(base._bcast(take, x), x_best, best)
                best_loss = jnp.where(take, loss_best, best_loss)
            return base.project_to_ball(best, x, self.eps, self.norm, self.domain)
        robust = ~base.is_success(apply_fn(variables, x), y, self.targeted)
        adv = x
        for r, k in enumerate(jax.random.split(key, self.restarts)):
            _, acc_curr, _, adv_curr = self._single(apply_fn, variables, x, y, k, objective)
            fooled = robust & ~acc_curr
            adv = jnp.where(base._bcast(fooled, x), adv_curr, adv)
            robust = robust & ~fooled
        return base.project_to_ball(adv, x, self.eps, self.norm, self.domain)


@dataclasses.dataclass(frozen=True, kw_only=True)
class APGDT(base.Attack):
    """APGD-T: APGD on the targeted DLR loss (Eq. 6) against each of the top ``n_target_classes``
    other classes (2nd, 3rd, ... highest clean logit), keeping the first success per point.

    Untargeted in effect (``y`` is the true label); needs at least 4 classes. The target loop is
    a Python loop when the inner loop is unrolled, a ``lax.fori_loop`` otherwise.
    """

    steps: int = 100
    restarts: int = 1
    rho: float = 0.75
    n_target_classes: int = 9
    loop: base.Loop = "auto"
    name: ClassVar[str] = "apgd-t"
    supports_targeted: ClassVar[bool] = False

    def __post_init__(self):
        super().__post_init__()
        object.__setattr__(self, "steps", base.check_positive("steps", self.steps, integer=True))
        object.__setattr__(self, "restarts", base.check_positive("restarts", self.restarts, integer=True))
        object.__setattr__(self, "n_target_classes",
                           base.check_positive("n_target_classes", self.n_target_classes, integer=True))
        object.__setattr__(self, "rho", base.check_positive("rho", self.rho))

    def run(self, apply_fn, variables, x, y, key):
        logits0 = apply_fn(variables, x)
        num_classes = logits0.shape[-1]
        if num_classes < 4:
            raise ValueError(f"APGD-T (targeted DLR) needs at least 4 classes, got {num_classes}")
        n_t = min(self.n_target_classes, num_classes - 1)
        order = jnp.argsort(logits0, axis=-1)
        robust0 = jnp.argmax(logits0, axis=-1) == y
        runs = n_t * self.restarts

        def one(j, carry):
            adv, robust = carry
            tc = 2 + j // self.restarts
            target = jnp.take(order, num_classes - tc, axis=-1)
            _, acc_curr, _, adv_curr = apgd_single_run(
                apply_fn, variables, x, jax.random.fold_in(key, j),
                objective=lambda logits: _losses.dlr_targeted(logits, y, target),
                robust=lambda logits: jnp.argmax(logits, axis=-1) == y,
                eps=self.eps, norm=self.norm, steps=self.steps, rho=self.rho, domain=self.domain, loop=self.loop)
            fooled = robust & ~acc_curr
            return jnp.where(base._bcast(fooled, x), adv_curr, adv), robust & ~fooled

        # the loop over targets x restarts takes the form of the inner loop (per lowering platform)
        outer = "rolled" if isinstance(self.loop, int) else self.loop  # an int partially unrolls the inner loop only
        carry = base.fori(runs, one, (x, robust0), outer, auto_steps=self.steps)
        return base.project_to_ball(carry[0], x, self.eps, self.norm, self.domain)
