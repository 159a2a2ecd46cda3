"""LAFEAT, the latent-feature attack (Yu, Gao & Xu, "LAFEAT: Piercing through adversarial defenses
with latent features", CVPR 2021), as the official code (lafeat/lafeat, ``lafeat/attack.py``,
``lafeat/targeted.py``, ``lafeat/eval.py``, ``attack.py``) runs it and as the SAT paper (Jin et
al., ICCV) uses it for its LAFEAT-100 / LAFEAT-1000 columns.

The attack needs small classifiers ("heads") on intermediate layers of the frozen model, trained
once on the model's own predictions (:mod:`advjax.attacks.lafeat_heads`). One run of the attack,
for one mixing weight beta (the code's ``scale_17``):

* start: ``x0 = clip(x + eps * t / max|t|)``, t ~ U(-1, 1)^d (the official start: the noise is
  rescaled so its largest coordinate is exactly eps);
* at every iteration i = 0..N-1, the loss is the cross-entropy of the *margin-normalized mixed
  logits* :func:`mixed_logits`
  ``z = beta m_h h / s(h) + (1 - beta m_h) f / s(f)``, with f the output logits, h the head's
  logits, s(v) = v_(1) - v_(2) + 1e-8 the gap between the two largest entries (no gradient) and
  m_h = 1 while the head still predicts y, else 0 (then only the output is used);
* step size :func:`step_sizes`: ``2 eps (1 + cos(pi i / N)) / 2``;
* sign step, projection onto the eps-ball and [0, 1], then momentum 0.75 (1 at i = 0):
  ``x' = P(x_i + m_f (a (P(x_i + step sign g) - x_i) + (1 - a)(x_i - x_{i-1})))``;
* success masking: m_f = 0 once the output misclassifies x_i: that point never moves again;
  best-point tracking: the first misclassified iterate is the run's adversarial example.

The full attack (the code's ``LafeatEval``) repeats that run for every beta of the schedule
:data:`BETAS` (0.4, 0.5, 0.3, 0.6, 0.2, 0.7, 0.1, 0.8, 0.0, 0.9: ``arange(0, 1, 0.1)`` split in
two halves and interleaved from the middle), each time only on the points still robust; the
multi-targeted mode (``multi_targeted=True``) then runs, for every beta again, 9 targeted runs
whose targets are the 2nd..10th largest clean logits (loss -CE(z, target); the masks still test
the true label). Points that are never fooled are returned unchanged (clean x), as in the code.
LAFEAT-100 is ``steps=100``: 100 iterations per run, so up to 10 x 100 gradient steps per point
(up to 10 x 10 x 100 with the targeted mode).

Where this differs from the official code, and why:

* The official code shrinks eps by 1.9e-8 to stay inside the ball under float error; here every
  iterate is projected exactly (:func:`advjax.attacks.base.project_to_ball`), so eps is used as
  given.
* Randomness: the code reseeds torch before every run, so the start noise depends on which points
  are still robust and their order (it sorts them by clean margin to form batches); here each run
  r draws its start from ``fold_in(key, r)`` over the whole batch: deterministic by key, the same
  for any batch composition. The sort by margin only chose batches there; it has no effect here.
* Still-robust points are selected by masks over the whole batch (static shapes, one compile per
  shape): already-fooled points do not move and are not overwritten, but are still computed; a run
  is skipped (``lax.cond``) once no point of the batch is robust.
* Only L-inf (the SAT paper's threat model); the code also has an L2 branch.
* The head used by the attack: the code mixes one head, its third of four (``outputs[-3]``, the
  second-to-last block of WRN-34-10's last stage; in the SAT repository's ResNet-18 copy, layer
  ``layer4.1.conv1``). ``head=-2`` (the second-to-last trained head) is that choice for the default
  four heads of :func:`advjax.attacks.lafeat_heads.default_head_layers`.
* The SAT repository's copy of the attack calls it with beta = 0 only (the head is never used);
  that is ``betas=(0.0,)`` here (:data:`SAT_CODE_BETAS`).

The call shape is that of feature attacks: ``attack(features_fn, variables, x, y, key)`` with
``features_fn(variables, x) -> (logits, {layer: head logits})`` (from
:func:`advjax.attacks.lafeat_heads.lafeat_features_fn`) and ``variables`` holding the heads'
parameters (:func:`advjax.attacks.lafeat_heads.with_heads`). The simplest entry points are
:func:`lafeat_attack` and ``LAFEAT(...).bind(model, heads)``, an attack of the usual
``attack(apply_fn, variables, x, y, key)`` shape for :func:`advjax.eval.robust_accuracy`.
"""
from __future__ import annotations

import dataclasses
import itertools
from typing import Any, ClassVar, Sequence, Union

import jax
import jax.numpy as jnp
import numpy as np

from advjax import losses as _losses
from advjax.attacks import base

__all__ = ["BETAS", "SAT_CODE_BETAS", "LAFEAT", "BoundLAFEAT", "beta_schedule", "step_sizes", "output_scale",
           "mixed_logits", "lafeat_attack", "require_heads", "MISSING_HEADS_HELP"]

#: The code's beta schedule (``attack.py``: ``betas(args)`` with the default ``--beta-arange 0 1 0.1``).
BETAS: tuple[float, ...] = (0.4, 0.5, 0.3, 0.6, 0.2, 0.7, 0.1, 0.8, 0.0, 0.9)
#: What the SAT repository's copy runs (``perturb(x, y)`` with ``scale_17=0.0``).
SAT_CODE_BETAS: tuple[float, ...] = (0.0,)

MISSING_HEADS_HELP = (
    "LAFEAT needs intermediate-layer heads trained for this model: from Python, "
    "heads = advjax.attacks.lafeat_heads.train_lafeat_heads(model, variables, x_train, key) and then "
    "LAFEAT(...).bind(model, heads) or lafeat_attack(model, variables, heads, x, y, key); from the command "
    "line, `advjax lafeat-heads --checkpoint RUN` trains and stores them beside the checkpoint, where "
    "`advjax eval --attacks lafeat` finds them")


def beta_schedule(start: float = 0.0, stop: float = 1.0, step: float = 0.1, interleave: bool = True) -> tuple:
    """The code's beta list: ``arange(start, stop, step)``; with ``interleave`` (the default; the
    code's ``--no-beta-schedule`` turns it off) the first half reversed, zipped with the second:
    (0, 1, 0.1) -> (0.4, 0.5, 0.3, 0.6, 0.2, 0.7, 0.1, 0.8, 0.0, 0.9)."""
    bs = [round(float(b), 10) for b in np.arange(start, stop, step)]
    if not interleave:
        return tuple(bs)
    m = len(bs) // 2
    out = [b for b in itertools.chain(*itertools.zip_longest(reversed(bs[:m]), bs[m:])) if b is not None]
    return tuple(out)


def step_sizes(eps, steps: int) -> jax.Array:
    """The cosine step schedule ``2 eps (1 + cos(pi i / N)) / 2`` for i = 0..N-1 (shape [N])."""
    i = jnp.arange(steps, dtype=jnp.float32)
    return 2.0 * eps * (1.0 + jnp.cos(i / steps * jnp.pi)) * 0.5


def output_scale(logits: jax.Array) -> jax.Array:
    """The code's ``get_output_scale``: largest minus second-largest logit + 1e-8, per example
    ([N, 1]), without gradient."""
    top2 = jax.lax.top_k(jax.lax.stop_gradient(logits), 2)[0]
    return (top2[:, 0] - top2[:, 1] + 1e-8)[:, None]


def mixed_logits(logits: jax.Array, head_logits: jax.Array, y: jax.Array, beta) -> jax.Array:
    """Margin-normalized mixed logits (the code's ``logits_prev`` with ``scale=True``):

    ``beta * m * h / s(h) + (1 - beta * m) * f / s(f)``, m = [argmax h == y] per example,
    s(v) = :func:`output_scale`; f = output logits, h = head logits, both [N, C].
    """
    m = (jnp.argmax(head_logits, axis=-1) == y).astype(logits.dtype)[:, None]
    return beta * head_logits * m / output_scale(head_logits) + (1.0 - beta * m) * logits / output_scale(logits)


def _is_features_output(out) -> bool:
    return isinstance(out, tuple) and len(out) == 2 and hasattr(out[0], "shape") and hasattr(out[1], "keys")


def require_heads(named_attacks) -> None:
    """Raise, before any attack runs, if an unbound :class:`LAFEAT` is among ``(label, attack)``
    pairs meant for an ``apply_fn`` evaluator (it needs trained heads; the error says how)."""
    for label, atk in named_attacks:
        if isinstance(atk, LAFEAT) and not isinstance(atk, BoundLAFEAT):
            raise ValueError(f"attack {label!r}: {MISSING_HEADS_HELP}")


@dataclasses.dataclass(frozen=True, kw_only=True)
class LAFEAT(base.Attack):
    """LAFEAT (module docstring). ``attack(features_fn, variables, x, y, key) -> x_adv``.

    Attributes (beyond :class:`base.Attack`; L-inf only, untargeted in the sense of the true label y):
      steps: iterations per run (100: LAFEAT-100; 1000: LAFEAT-1000).
      betas: the head weights swept, in order, each on the points still robust (:data:`BETAS`).
      head: which head is mixed in: an index into the heads in order (default -2, the code's choice
        for four heads) or a layer name.
      momentum: weight of the new step (0.75, the code's ``a``; the first iteration uses 1).
      multi_targeted: after the untargeted runs, for every beta, targeted runs on the 2nd..
        (n_target_classes+1)-th largest clean logits (the code's ``--multi-targeted``).
      n_target_classes: targets per beta in the multi-targeted mode (9; capped at classes - 1).
      loss: "ce" (the code's default) or "dlr" (the code's other option; targeted: targeted DLR).
      loop: the loop form of the iterations of a run (the runs over betas / targets are always a
        rolled loop, unless ``loop="unroll"``).
    """

    steps: int = 100
    betas: tuple[float, ...] = BETAS
    head: Union[int, str] = -2
    momentum: float = 0.75
    multi_targeted: bool = False
    n_target_classes: int = 9
    loss: str = "ce"
    loop: base.Loop = "auto"
    name: ClassVar[str] = "lafeat"
    supported_norms: ClassVar[tuple[str, ...]] = ("linf",)
    supports_targeted: ClassVar[bool] = False

    def __post_init__(self):
        super().__post_init__()
        object.__setattr__(self, "steps", base.check_positive("steps", self.steps, integer=True))
        object.__setattr__(self, "n_target_classes",
                           base.check_positive("n_target_classes", self.n_target_classes, integer=True))
        try:
            betas = tuple(float(b) for b in (self.betas if isinstance(self.betas, (tuple, list)) else [self.betas]))
        except (TypeError, ValueError):
            raise ValueError(f"LAFEAT betas must be numbers in [0, 1], got {self.betas!r}") from None
        if not betas or any(not (0.0 <= b <= 1.0) for b in betas):
            raise ValueError(f"LAFEAT betas must be a non-empty list of numbers in [0, 1] (the head's weight in "
                             f"the mixed logits), got {self.betas!r}")
        object.__setattr__(self, "betas", betas)
        if isinstance(self.momentum, bool) or not isinstance(self.momentum, (int, float)) or \
                not 0.0 <= float(self.momentum) <= 1.0:
            raise ValueError(f"LAFEAT momentum must be in [0, 1] (the weight of the new step), got {self.momentum!r}")
        object.__setattr__(self, "momentum", float(self.momentum))
        if isinstance(self.head, bool) or not isinstance(self.head, (int, str)):
            raise ValueError(f"LAFEAT head must be an index or a layer name, got {self.head!r}")
        if self.loss not in ("ce", "dlr"):
            raise ValueError(f"LAFEAT loss must be 'ce' or 'dlr', got {self.loss!r}")

    # ------------------------------------------------------------------ binding to a model + heads
    def bind(self, model, heads) -> "BoundLAFEAT":
        """This attack with ``model`` and its trained ``heads`` attached: an attack of the usual
        ``attack(apply_fn, variables, x, y, key)`` shape (``apply_fn`` is not used: the logits and
        head logits come from ``model`` and ``heads``), e.g. for ``robust_accuracy``. Raises if
        ``heads`` is None or was trained for another model."""
        from advjax.attacks import lafeat_heads

        if heads is None:
            raise ValueError(MISSING_HEADS_HELP)
        lafeat_heads.check_heads(heads, model)
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(LAFEAT)}
        return BoundLAFEAT(**fields, model=model, heads=heads)

    # ------------------------------------------------------------------ validation
    def _head_index(self, names: Sequence[str]) -> int:
        names = list(names)
        if isinstance(self.head, str):
            if self.head not in names:
                raise ValueError(f"LAFEAT head {self.head!r} is not among the trained heads {names}")
            return names.index(self.head)
        if not -len(names) <= self.head < len(names):
            raise ValueError(f"LAFEAT head index {self.head} out of range for the {len(names)} trained heads {names}")
        return self.head % len(names)

    def validate(self, features_fn, variables, x, y) -> None:
        out = jax.eval_shape(features_fn, variables, jax.ShapeDtypeStruct(x.shape, x.dtype))
        if not _is_features_output(out):
            raise ValueError("LAFEAT takes features_fn(variables, x) -> (logits, {layer: head logits}), not an "
                             f"apply_fn returning logits. {MISSING_HEADS_HELP}")
        logits, heads = out
        if not heads:
            raise ValueError(f"LAFEAT got no head logits. {MISSING_HEADS_HELP}")
        self._head_index(list(heads))
        num_classes = int(logits.shape[-1])
        if num_classes < 2:
            raise ValueError("LAFEAT needs a model with >= 2 logits (the margin normalization uses the two largest)")
        if self.loss == "dlr" and num_classes < (4 if self.multi_targeted else 3):
            raise ValueError(f"LAFEAT with the DLR loss needs >= {4 if self.multi_targeted else 3} classes, "
                             f"this model has {num_classes}")
        base.check_inputs(x, y, self.domain, num_classes if self.check_inputs else None)

    # ------------------------------------------------------------------ the attack
    def _runs(self, num_classes: int):
        """(beta, target rank) per run; rank 0 = untargeted, k >= 2 = the k-th largest clean logit."""
        runs = [(b, 0) for b in self.betas]
        if self.multi_targeted:
            n_t = min(self.n_target_classes, num_classes - 1)
            runs += [(b, k) for b in self.betas for k in range(2, n_t + 2)]
        return runs

    def _loss(self, z, y, target, targeted):
        """Per-example objective; ``targeted`` is None (statically untargeted) or a traced bool."""
        if self.loss == "ce":
            untargeted = _losses.cross_entropy(z, y)
            if targeted is None:
                return untargeted
            return jnp.where(targeted, -_losses.cross_entropy(z, target), untargeted)
        untargeted = _losses.dlr(z, y)
        if targeted is None:
            return untargeted
        return jnp.where(targeted, _losses.dlr_targeted(z, y, target), untargeted)

    def _single_run(self, features_fn, variables, x, y, key, beta, target, targeted, active, head):
        """One run of the code's ``attack_single_run``: (fooled [N], first misclassified iterate)."""
        eps = self.eps
        t = jax.random.uniform(key, x.shape, x.dtype, -1.0, 1.0)
        tmax = jnp.max(jnp.abs(jnp.reshape(t, (t.shape[0], -1))), axis=-1)
        x0 = base.project_to_ball(x + eps * t / base._bcast(tmax, x), x, eps, "linf", self.domain)
        sizes = step_sizes(eps, self.steps).astype(x.dtype)

        def loss_fn(z):
            logits, heads = features_fn(variables, z)
            h = list(heads.values())[head]
            values = self._loss(mixed_logits(logits, h, y, beta), y, target, targeted)
            return jnp.sum(values), logits

        def body(i, carry):
            xa, x_old, x_best, fooled = carry
            g, logits = jax.grad(loss_fn, has_aux=True)(xa)
            correct = jnp.argmax(logits, axis=-1) == y
            m = base._bcast((correct & active).astype(x.dtype), x)
            a = jnp.where(jnp.asarray(i) > 0, self.momentum, 1.0).astype(x.dtype)
            x1 = base.project_to_ball(xa + m * sizes[i] * jnp.sign(g), x, eps, "linf", self.domain)
            x1 = base.project_to_ball(xa + m * ((x1 - xa) * a + (xa - x_old) * (1 - a)), x, eps, "linf", self.domain)
            newly = ~correct & ~fooled
            x_best = jnp.where(base._bcast(newly, x), xa, x_best)
            return x1, xa, x_best, fooled | ~correct

        init = (x0, x0, x0, jnp.zeros(x.shape[:1], bool))
        _, _, x_best, fooled = base.fori(self.steps, body, init, self.loop)
        return fooled, x_best

    def run(self, features_fn, variables, x, y, key):
        logits0, heads0 = features_fn(variables, x)
        head = self._head_index(list(heads0))
        num_classes = int(logits0.shape[-1])
        runs = self._runs(num_classes)
        run_betas = jnp.asarray([b for b, _ in runs], x.dtype)
        run_ranks = jnp.asarray([k for _, k in runs], jnp.int32)
        order = jnp.argsort(-jax.lax.stop_gradient(logits0), axis=-1)  # descending clean logits
        robust0 = jnp.argmax(logits0, axis=-1) == y

        def one(r, carry):
            x_out, robust = carry
            beta, rank = run_betas[r], run_ranks[r]
            kr = jax.random.fold_in(key, r)

            def attack(c):
                x_out, robust = c
                if self.multi_targeted:
                    target = jnp.take_along_axis(order, jnp.full((x.shape[0], 1), jnp.maximum(rank - 1, 0)),
                                                 axis=-1)[:, 0]
                    fooled, x_best = self._single_run(features_fn, variables, x, y, kr, beta, target, rank > 0,
                                                      robust, head)
                else:
                    fooled, x_best = self._single_run(features_fn, variables, x, y, kr, beta, None, None, robust, head)
                take = fooled & robust
                return jnp.where(base._bcast(take, x), x_best, x_out), robust & ~take

            return jax.lax.cond(jnp.any(robust), attack, lambda c: c, (x_out, robust))

        carry = (x, robust0)
        if self.loop == "unroll":
            for r in range(len(runs)):
                carry = one(r, carry)
        else:
            carry = jax.lax.fori_loop(0, len(runs), one, carry)
        x_out, _ = carry
        return base.project_to_ball(x_out, x, self.eps, "linf", self.domain)

    run._reads_one_logit = True  # features_fn output: (logits, heads), not wrapped by two_logits_fn


@dataclasses.dataclass(frozen=True, kw_only=True)
class BoundLAFEAT(LAFEAT):
    """A :class:`LAFEAT` with its model and heads attached (``LAFEAT(...).bind(model, heads)``):
    ``attack(apply_fn, variables, x, y, key)`` where ``variables`` are the model's own; the head
    parameters are added from ``heads``. ``apply_fn`` is ignored (the model's logits and the head
    logits come from ``lafeat_features_fn(model, heads)``)."""

    model: Any = None
    heads: Any = dataclasses.field(default=None, compare=False, hash=False, repr=False)

    def __post_init__(self):
        super().__post_init__()
        if self.model is None or self.heads is None:
            raise ValueError(MISSING_HEADS_HELP)

    def _features(self):
        from advjax.attacks import lafeat_heads

        return lafeat_heads.lafeat_features_fn(self.model, self.heads)

    def unbound(self) -> LAFEAT:
        return LAFEAT(**{f.name: getattr(self, f.name) for f in dataclasses.fields(LAFEAT)})

    def __call__(self, apply_fn, variables, x, y, key=None):
        from advjax.attacks import lafeat_heads

        lafeat_heads.check_heads(self.heads, self.model, variables)
        return self.unbound()(self._features(), lafeat_heads.with_heads(variables, self.heads), x, y, key)

    def run(self, apply_fn, variables, x, y, key):
        from advjax.attacks import lafeat_heads

        return self.unbound().run(self._features(), lafeat_heads.with_heads(variables, self.heads), x, y, key)

    run._reads_one_logit = True


def lafeat_attack(model, variables, heads, x, y, key=None, *, eps: float = 8 / 255, steps: int = 100,
                  betas: Sequence[float] = BETAS, head: Union[int, str] = -2, multi_targeted: bool = False,
                  **settings) -> jax.Array:
    """LAFEAT-``steps`` on ``model`` (eval mode) with its trained ``heads``; returns x_adv.

    ``heads`` from :func:`advjax.attacks.lafeat_heads.train_lafeat_heads` or ``load_heads``; heads
    trained for another model (or checkpoint) are a ValueError, as is ``heads=None``. Other
    settings (``momentum``, ``n_target_classes``, ``loss``, ``loop``, ``domain``) as :class:`LAFEAT`.
    """
    atk = LAFEAT(eps=eps, steps=steps, betas=tuple(betas), head=head, multi_targeted=multi_targeted, **settings)
    return atk.bind(model, heads)(None, variables, x, y, key)
