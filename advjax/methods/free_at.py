"""Free adversarial training (Shafahi et al., "Adversarial Training for Free!", NeurIPS 2019,
Algorithm 1): each minibatch is replayed m times; one backward pass gives both ∇_θ and ∇_δ:

    for i in 1..m:  g_θ, g_δ = ∇ CE(f_θ(clip_[0,1](x + δ)), y)
                    θ ← opt(θ, g_θ);   δ ← clip_[−ε,ε](δ + ε·sign g_δ)

δ is carried across minibatches (``state.extra["free_at_delta"]``, batch-shaped, zeros at start);
the training loop shards it on the batch axis like the data (``batch_sharded_extra``: each device
keeps the δ rows of its own examples, across processes too), and checkpoints include it.
One ``step`` call performs the m replays (m optimizer updates; ``state.step`` advances by m), so
run ``epochs / m`` epochs for the paper's budget. BN statistics: each replay's training forward.
The step on δ is eps unless set (follows eps; alpha·m < eps warns); ``domain="auto"``: the
dataset's input box.

Loop form (``loop``): the m replays are a ``lax.fori_loop`` by default ("rolled"), so the step
compiles one replay, not m copies (compile time no longer grows with m; on accelerators the
program stays small), with the same numbers as the Python-unrolled form (``loop="unroll"``,
kept for comparison; its speed on XLA:CPU against the rolled form was not measured).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Optional

import jax
import jax.numpy as jnp

from advjax.attacks.base import clip_to_domain
from advjax.methods import _inner
from advjax.methods.base import box, check_common, check_step, forward

__all__ = ["FreeAT"]


@dataclasses.dataclass(frozen=True)
class FreeAT:
    eps: float = 8 / 255
    m: int = 8  # replays per minibatch
    alpha: Optional[float] = None  # step on δ; None: eps (the paper)
    label_smoothing: float = 0.0
    domain: Any = "auto"
    loop: str = "rolled"  # "rolled": the m replays in one lax.fori_loop; "unroll": m copies

    batch_sharded_extra = ("free_at_delta",)  # state.extra keys the loop shards on the batch axis

    def __post_init__(self):
        check_common("free_at", eps=self.eps, alpha=self.alpha, smoothing=self.label_smoothing, domain=self.domain)
        if isinstance(self.m, bool) or not isinstance(self.m, int) or self.m < 1:
            raise ValueError(f"free_at: m must be an integer >= 1, got {self.m!r}")
        if self.loop not in ("rolled", "unroll"):
            raise ValueError(f"free_at: loop must be 'rolled' (one lax.fori_loop) or 'unroll', got {self.loop!r}")
        check_step("free_at", self.eps, self.alpha, self.m)

    @property
    def updates_per_step(self) -> int:
        """Optimizer updates per ``step`` call (the loop sizes lr schedules with it)."""
        return self.m

    def init_state(self, state, batch):
        x, _ = batch
        return state.replace(extra={**state.extra, "free_at_delta": jnp.zeros(x.shape, jnp.float32)})

    def loss(self, state, params, delta, x, y):
        x_in = clip_to_domain(x + delta, box(self.domain))
        logits, bs = forward(state, params, x_in, train=True)
        loss = jnp.mean(_inner.cross_entropy(logits, y, self.label_smoothing))
        return loss, (bs, logits)

    def step(self, state, batch, key):
        x, y = batch
        if "free_at_delta" not in state.extra:
            raise ValueError("free_at: call method.init_state(state, batch) before step (the loop does)")
        alpha = self.eps if self.alpha is None else self.alpha
        grad_fn = jax.value_and_grad(self.loss, argnums=(1, 2), has_aux=True)

        def replay(_, carry):
            state, loss, acc = carry
            delta = state.extra["free_at_delta"]
            (l, (bs, logits)), (g_p, g_d) = grad_fn(state, state.params, delta, x, y)
            delta = jnp.clip(delta + alpha * jnp.sign(g_d), -self.eps, self.eps).astype(delta.dtype)
            state = state.apply_gradients(g_p, batch_stats=bs, extra={**state.extra, "free_at_delta": delta})
            loss = loss + l.astype(jnp.float32) / self.m
            acc = acc + jnp.asarray(_inner.accuracy(logits, y), jnp.float32) / self.m
            return state, loss, acc

        carry = (state, jnp.zeros((), jnp.float32), jnp.zeros((), jnp.float32))
        if self.loop == "unroll":
            for i in range(self.m):
                carry = replay(i, carry)
        else:
            carry = jax.lax.fori_loop(0, self.m, replay, carry)
        state, loss, acc = carry
        return state, {"loss": loss, "acc": acc}
