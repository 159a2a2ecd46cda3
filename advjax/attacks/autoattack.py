"""AutoAttack (Croce & Hein 2020, "Reliable evaluation of adversarial robustness with an ensemble of
diverse parameter-free attacks", Sec. 4): the ``standard`` ensemble APGD-CE, APGD-T (9 targets),
FAB-T (9 targets) and Square (5000 queries), each run only on the points still robust, or a
``custom`` list of attack names.

Two ways to run it:

* ``attack(...)`` / :meth:`AutoAttack.drive`, the evaluation path: as the official code, each
  sub-attack runs only on the points still robust. The driver gathers them on the host and pads
  the subset to a bucket of the batch size (N/8, N/4, N/2 or N, repeating a robust point), so each
  sub-attack compiles at most four shapes per batch size and its cost falls with the robust
  fraction (on a model with 50% robust accuracy, APGD-T, FAB-T and Square run on half the batch).
  It stops once no point is robust.
* ``attack.run``, the pure, traceable version (inside your own jit / vmap): static shapes, so every
  sub-attack runs on the whole batch and masks keep, per point, the first successful adversarial
  example. Same result up to the randomness of the sub-attacks (their keys see other batch shapes).
"""
from __future__ import annotations

import dataclasses
import time
from typing import ClassVar, Optional

import jax
import jax.numpy as jnp
import numpy as np

from advjax.attacks import base
from advjax.attacks.apgd import APGD, APGDT
from advjax.attacks.fab import FABT
from advjax.attacks.square import Square

STANDARD = ("apgd-ce", "apgd-t", "fab-t", "square")


@dataclasses.dataclass(frozen=True, kw_only=True)
class AutoAttack(base.Attack):
    """AutoAttack. Attributes (beyond :class:`base.Attack`):
      version: "standard" (L-inf: APGD-CE, APGD-T, FAB-T, Square) or "custom" (``attacks``).
      attacks: names for "custom" (any registered attack; eps, norm, domain, loop are passed on).
      steps: APGD / FAB iterations (100). n_target_classes: APGD-T / FAB-T targets (9).
      n_queries: Square queries (5000). loop: loop form of the sub-attacks.
      square_rescale_schedule: Square's p schedule rescaled to n_queries (False: as the official
        ensemble, which builds Square with ``resc_schedule=False``: the schedule of 10000
        iterations indexed by the raw iteration, so squares shrink half as fast as standalone).
    """

    version: str = "standard"
    attacks: Optional[tuple[str, ...]] = None
    steps: int = 100
    n_target_classes: int = 9
    n_queries: int = 5000
    square_rescale_schedule: bool = False
    loop: base.Loop = "auto"
    name: ClassVar[str] = "aa"
    supports_targeted: ClassVar[bool] = False

    def __post_init__(self):
        super().__post_init__()
        if self.attacks is not None:
            object.__setattr__(self, "attacks", tuple(self.attacks))
        if self.version not in ("standard", "custom"):
            raise ValueError(f"AutoAttack version must be 'standard' or 'custom', got {self.version!r}")
        if self.version == "custom" and not self.attacks:
            raise ValueError("AutoAttack version='custom' needs a non-empty attacks=(...) list")
        if self.version == "standard" and self.attacks is not None:
            raise ValueError("attacks=(...) is only used with version='custom'")
        if self.version == "standard" and self.norm != "linf":
            raise ValueError("standard AutoAttack is implemented for norm='linf' only (FAB-T and Square are "
                             "L-inf here); use version='custom', attacks=('apgd-ce', 'apgd-t') for L2")
        for f in ("steps", "n_target_classes", "n_queries"):
            object.__setattr__(self, f, base.check_positive(f, getattr(self, f), integer=True))
        self.sub_attacks()  # validate the list early

    def sub_attacks(self) -> tuple[tuple[str, base.Attack], ...]:
        """The ordered (name, attack) pairs this AutoAttack runs."""
        common = dict(eps=self.eps, norm=self.norm, domain=self.domain, loop=self.loop, check_inputs=False)
        if self.version == "standard":
            return (
                ("apgd-ce", APGD(loss="ce", steps=self.steps, **common)),
                ("apgd-t", APGDT(steps=self.steps, n_target_classes=self.n_target_classes, **common)),
                ("fab-t", FABT(steps=self.steps, n_target_classes=self.n_target_classes, **common)),
                ("square", Square(n_queries=self.n_queries, rescale_schedule=self.square_rescale_schedule,
                                  **common)),
            )
        from advjax.attacks import get_attack  # registry (imports this module)

        out = []
        for name in self.attacks:
            if name in ("aa", "autoattack"):
                raise ValueError("AutoAttack cannot contain itself")
            atk = get_attack(name, eps=self.eps, norm=self.norm, domain=self.domain, check_inputs=False)
            if hasattr(atk, "loop"):
                atk = atk.replace(loop=self.loop)
            if name.startswith("apgd") and hasattr(atk, "steps"):
                atk = atk.replace(steps=self.steps)
            if isinstance(atk, Square):
                atk = atk.replace(n_queries=self.n_queries, rescale_schedule=self.square_rescale_schedule)
            out.append((name, atk))
        return tuple(out)

    def run_detailed(self, apply_fn, variables, x, y, key):
        """Pure version returning (x_adv, clean_correct [N], {name: robust [N] after that attack})."""
        robust = jnp.argmax(apply_fn(variables, x), axis=-1) == y
        clean = robust
        adv = x
        flags = {}
        for j, (name, atk) in enumerate(self.sub_attacks()):
            cand = atk.run(apply_fn, variables, x, y, jax.random.fold_in(key, j))
            adv, robust = _merge(apply_fn, variables, x, y, adv, robust, cand)
            flags[name] = robust
        return adv, clean, flags

    def run(self, apply_fn, variables, x, y, key):
        return self.run_detailed(apply_fn, variables, x, y, key)[0]

    def drive(self, apply_fn, variables, x, y, key, verbose: bool = False, with_times: bool = False):
        """Eager driver: each sub-attack jitted on its own, on the points still robust (padded to
        N/8, N/4, N/2 or N); skips the rest once nothing is robust.

        Returns ``(x_adv, clean_correct, {name: robust flags after that attack})``, and with
        ``with_times=True`` also ``{name: seconds}`` (each sub-attack's wall time, its compilation
        included the first time a shape is seen). It returns only once every result is computed
        (nothing is left in JAX's asynchronous dispatch), so timing a call times the attack.
        ``verbose`` prints the clean accuracy and, after each sub-attack, the robust accuracy and
        the time so far, as the official code's log does.
        """
        from advjax.train.distributed import to_host

        t_start = time.perf_counter()
        apply_fn = base.two_logits_fn(apply_fn)  # one-logit binary models read as [0, z] (advjax.losses.ce)
        x = jnp.asarray(x)
        y = jnp.asarray(y)
        if key is None:
            key = jax.random.PRNGKey(0)
        if self.check_inputs:
            self.validate(apply_fn, variables, x, y)
        robust = _clean_correct(apply_fn, variables, x, y)
        clean = robust
        adv = x
        flags, seconds = {}, {}
        n = x.shape[0]
        if verbose:
            print(f"[autoattack] clean accuracy: {float(jnp.mean(clean)):.2%} (n = {n})")
        for j, (name, atk) in enumerate(self.sub_attacks()):
            t0 = time.perf_counter()
            idx = np.flatnonzero(to_host(robust))  # (a sharded, several-process array is gathered)
            if idx.size:
                size = compact_size(idx.size, n)
                sel = np.concatenate([idx, np.full(size - idx.size, idx[0])]) if size > idx.size else idx
                sel = jnp.asarray(sel)
                cand = atk(apply_fn, variables, x[sel], y[sel], jax.random.fold_in(key, j))
                adv, robust = _merge_subset_jit(apply_fn, variables, x, y, adv, robust, cand, sel,
                                                jnp.asarray(idx.size))
                jax.block_until_ready((adv, robust))
            flags[name] = robust
            seconds[name] = time.perf_counter() - t0
            if verbose:
                print(f"[autoattack] robust accuracy after {name}: {float(jnp.mean(robust)):.2%} "
                      f"({seconds[name]:.1f} s; {time.perf_counter() - t_start:.1f} s in all)")
        jax.block_until_ready((adv, clean, flags))
        return (adv, clean, flags, seconds) if with_times else (adv, clean, flags)

    def __call__(self, apply_fn, variables, x, y, key=None):
        return self.drive(apply_fn, variables, x, y, key)[0]


def _merge(apply_fn, variables, x, y, adv, robust, cand):
    fooled = robust & (jnp.argmax(apply_fn(variables, cand), axis=-1) != y)
    return jnp.where(base._bcast(fooled, x), cand, adv), robust & ~fooled


def compact_size(n_robust: int, n: int) -> int:
    """The padded size of a subset of ``n_robust`` of ``n`` points: the smallest of N/8, N/4, N/2, N
    (rounded up) that holds it, so a sub-attack compiles at most four shapes per batch size."""
    for frac in (8, 4, 2):
        size = -(-n // frac)
        if n_robust <= size:
            return size
    return n


def _merge_subset(apply_fn, variables, x, y, adv, robust, cand, sel, count):
    """Merge a sub-attack's output on the subset ``sel`` (its first ``count`` entries are robust
    points, the rest padding) into the full batch: a point takes its candidate if it is fooled.
    Padding entries scatter to index N and are dropped."""
    real = jnp.arange(sel.shape[0]) < count
    fooled_sub = real & (jnp.argmax(apply_fn(variables, cand), axis=-1) != y[sel])
    out = jnp.where(real, sel, x.shape[0])
    fooled = jnp.zeros_like(robust).at[out].set(fooled_sub, mode="drop")
    adv = adv.at[out].set(jnp.where(base._bcast(fooled_sub, cand), cand, adv[sel]), mode="drop")
    return adv, robust & ~fooled


_merge_subset_jit = jax.jit(_merge_subset, static_argnums=(0,))


_clean_correct = jax.jit(lambda f, v, x, y: jnp.argmax(f(v, x), axis=-1) == y, static_argnums=(0,))
