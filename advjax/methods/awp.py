"""AWP: Adversarial Weight Perturbation (Wu, Xia & Wang, "Adversarial Weight Perturbation Helps
Robust Generalization", NeurIPS 2020, Eq. (9)–(11)), on PGD-AT (AT-AWP) or TRADES (TRADES-AWP):

    min_w max_{v∈V} ρ(w + v),   ‖v_l‖ ≤ γ‖w_l‖ per layer
    v ← γ · ‖w_l‖ · ∇_l / ‖∇_l‖  from one ascent step of the proxy, ∇ = ∇_w ρ(w) (Eq. (11))
    w ← (w + v) − η ∇_{w+v} ρ(w + v) − v   (perturb, descend, restore)

ρ is the base method's loss on its adversarial examples (−ρ is the proxy's objective). As in the
reference code: only weight tensors with ≥ 2 dimensions are perturbed (biases and BN scales are
not); the proxy is a copy of w taking one SGD step (lr ``proxy_lr`` = 0.01, its optax state kept in
``state.extra["awp_proxy_opt_state"]``); the optimizer update (momentum, weight decay) is computed
at the perturbed weights and applied to the unperturbed ones; no perturbation before
``warmup_steps`` optimizer steps. The proxy's training forwards do not touch the BN statistics; the
base loss's forwards at w + v do. Both the proxy and the model update happen in this one step.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import optax
from jax import lax

from advjax.methods.base import AdversarialMethod
from advjax.methods.pgd_at import PGDAT

__all__ = ["AWP", "weight_perturbation"]

_EPS = 1e-20


def weight_perturbation(params, proxy_params, gamma):
    """v_l = γ·‖w_l‖·(p_l − w_l)/‖p_l − w_l‖ for tensors with ndim ≥ 2, 0 otherwise."""
    def one(w, p):
        if w.ndim < 2:
            return jnp.zeros_like(w)
        d = p - w
        return gamma * jnp.linalg.norm(w) / (jnp.linalg.norm(d) + _EPS) * d
    return jax.tree.map(one, params, proxy_params)


@dataclasses.dataclass(frozen=True)
class AWP(AdversarialMethod):
    base: Any = dataclasses.field(default_factory=PGDAT)
    gamma: float = 5e-3
    proxy_lr: float = 0.01
    warmup_steps: int = 0

    @classmethod
    def from_kwargs(cls, base="pgd_at", **kw):
        """``get_method("awp", base="trades", gamma=..., beta=...)``: non-AWP settings go to the base."""
        own = {f.name for f in dataclasses.fields(cls)} - {"base"}
        mine = {k: v for k, v in kw.items() if k in own}
        rest = {k: v for k, v in kw.items() if k not in own}
        if isinstance(base, str):
            from advjax.methods.base import get_method
            if base.replace("-", "_").lower() == "awp":
                raise ValueError("awp: base cannot be awp")
            base = get_method(base, **rest)
        elif rest:
            raise ValueError(f"awp: unknown settings {sorted(rest)} (AWP's: {sorted(own)})")
        return cls(base=base, **mine)

    def __post_init__(self):
        if not isinstance(self.base, AdversarialMethod):
            raise ValueError(f"awp: base must be an AdversarialMethod, got {type(self.base).__name__}")
        if self.gamma < 0:
            raise ValueError(f"awp: gamma must be >= 0, got {self.gamma}")
        if not self.proxy_lr > 0:
            raise ValueError(f"awp: proxy_lr must be > 0, got {self.proxy_lr}")

    @property
    def proxy_tx(self):
        return optax.sgd(self.proxy_lr)

    def init_state(self, state, batch):
        state = self.base.init_state(state, batch)
        return state.replace(extra={**state.extra, "awp_proxy_opt_state": self.proxy_tx.init(state.params)})

    def perturb(self, state, x, y, key):
        return self.base.perturb(state, x, y, key)

    def loss(self, state, params, x, x_adv, y, key):
        return self.base.loss(state, params, x, x_adv, y, key)

    def perturbed_params(self, state, x, x_adv, y, key):
        """``(w + v, new proxy optax state)``: one proxy ascent step on ρ, then Eq. (11)."""
        if "awp_proxy_opt_state" not in state.extra:
            raise ValueError("awp: call method.init_state(state, batch) before step (the loop does)")
        neg = lambda p: -self.base.loss(state, p, x, x_adv, y, key)[0]
        g = jax.grad(neg)(state.params)
        upd, proxy_opt = self.proxy_tx.update(g, state.extra["awp_proxy_opt_state"], state.params)
        proxy = optax.apply_updates(state.params, upd)
        v = weight_perturbation(state.params, proxy, self.gamma)
        on = (state.step >= self.warmup_steps).astype(jnp.float32)
        w_pert = jax.tree.map(lambda w, d: w + on * d, state.params, v)
        return w_pert, proxy_opt

    def gradients(self, state, batch, key):
        x, y = batch
        k_adv, k_loss = self._split(key)
        x_adv = lax.stop_gradient(self.base.perturb(state, x, y, k_adv))
        w_pert, _ = self.perturbed_params(state, x, x_adv, y, k_loss)
        grad_fn = jax.value_and_grad(self.base.loss, argnums=1, has_aux=True)
        (loss, (bs, metrics)), grads = grad_fn(state, w_pert, x, x_adv, y, k_loss)
        return loss, grads, bs, metrics

    def step(self, state, batch, key):
        x, y = batch
        k_adv, k_loss = self._split(key)
        x_adv = lax.stop_gradient(self.base.perturb(state, x, y, k_adv))
        w_pert, proxy_opt = self.perturbed_params(state, x, x_adv, y, k_loss)
        grad_fn = jax.value_and_grad(self.base.loss, argnums=1, has_aux=True)
        (loss, (bs, metrics)), grads = grad_fn(state, w_pert, x, x_adv, y, k_loss)
        new_state = state.apply_gradients(grads, batch_stats=bs, update_params=w_pert,
                                          extra={**state.extra, "awp_proxy_opt_state": proxy_opt})
        return new_state, {**metrics, "loss": loss}
