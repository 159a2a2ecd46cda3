"""Training methods: the protocol, the generic adversarial step, and the registry.

A method is a frozen dataclass (hashable settings, so it can be closed over by ``jax.jit``) with

    step(state, batch, key) -> (state, metrics)

compiled once per run; ``batch = (x, y)``, ``metrics`` a dict of scalar arrays (always ``"loss"``
and ``"acc"``). Methods of the form "make x_adv, then one gradient step on a loss" subclass
``AdversarialMethod`` and implement only

    perturb(state, x, y, key) -> x_adv
    loss(state, params, x, x_adv, y, key) -> (loss, (new_batch_stats, metrics))

The generic ``AdversarialMethod.step`` runs ``perturb`` (eval-mode model, batch-norm statistics
untouched, result wrapped in ``stop_gradient``), then ``value_and_grad(loss)`` with respect to
``params``, then one optax update; the batch-norm statistics returned by ``loss`` (its training
forward passes, as each paper specifies) replace the state's.

Methods needing state beyond the TrainState leaves (AWP's proxy optimizer, Free-AT's carried
perturbation, FGSM-SDI's generator) override ``init_state(state, batch) -> state`` to put it in
``state.extra``; the loop calls it once before compiling the step.
"""
from __future__ import annotations

import dataclasses
import importlib
from typing import Any, Callable, Protocol, runtime_checkable

import jax
import jax.numpy as jnp
from jax import lax

from advjax.train.state import TrainState, apply_model
from advjax.methods import _inner

__all__ = [
    "Method", "AdversarialMethod", "get_method", "register_method", "list_methods",
    "eval_apply_fn", "forward", "check_eps",
]


@runtime_checkable
class Method(Protocol):
    """Anything with ``step(state, batch, key) -> (state, metrics)`` (and optionally ``init_state``)."""

    def step(self, state: TrainState, batch, key) -> tuple[TrainState, dict]: ...


def eval_apply_fn(state: TrainState) -> Callable:
    """``apply_fn(variables, x) -> logits`` in eval mode (BN frozen), the callable attacks take."""
    model = state.model
    return lambda variables, x: model.apply(variables, x, train=False)


def forward(state: TrainState, params, x, *, train: bool = True, batch_stats=None):
    """Forward pass with explicit params; see ``advjax.train.state.apply_model``."""
    return apply_model(state, params, x, train=train, batch_stats=batch_stats)


def check_eps(name: str, eps: float, *, upper: float | None = None) -> None:
    if not (isinstance(eps, (int, float)) and eps >= 0 and eps == eps):
        raise ValueError(f"{name}: eps must be a number >= 0, got {eps!r}")
    if upper is not None and eps > upper:
        raise ValueError(f"{name}: eps={eps} is outside [0, {upper}] (pixels live in [0, 1]; "
                         f"did you pass 8 instead of 8/255?)")


@dataclasses.dataclass(frozen=True)
class AdversarialMethod:
    """Base of "perturb, then one gradient step" methods (see module docstring).

    Subclasses implement ``loss`` and either ``default_attack`` (their paper's attack from
    ``advjax.attacks``; an ``attack`` field overrides it) or ``perturb``; ``step`` is generic. ``objective`` evaluates the
    method's own training objective at fixed keys (used by tests and diagnostics).
    """

    def init_state(self, state: TrainState, batch) -> TrainState:
        return state

    def perturb(self, state: TrainState, x, y, key):
        """``inner_attack`` run on the eval-mode model; override for other perturbations."""
        return run_attack(self.inner_attack, state, x, y, key)

    @property
    def inner_attack(self):
        """The method's ``attack`` field when set, else its paper's attack (``default_attack``)."""
        attack = getattr(self, "attack", None)
        return attack if attack is not None else self.default_attack()

    def default_attack(self):
        """The paper's inner maximization as an ``advjax.attacks`` attack, built from the settings."""
        raise NotImplementedError(f"{type(self).__name__} has no default attack: implement "
                                  "default_attack() or perturb()")

    def loss(self, state: TrainState, params, x, x_adv, y, key):
        raise NotImplementedError(f"{type(self).__name__}.loss")

    # -- generic step -----------------------------------------------------------------------
    @staticmethod
    def _split(key):
        k_adv, k_loss = jax.random.split(key)
        return k_adv, k_loss

    def adversarial_examples(self, state: TrainState, x, y, key):
        """``stop_gradient(perturb(state, x, y, k_adv))`` with the step's key split."""
        k_adv, _ = self._split(key)
        return lax.stop_gradient(self.perturb(state, x, y, k_adv))

    def gradients(self, state: TrainState, batch, key):
        """``(loss, grads, new_batch_stats, metrics)`` of one step, without applying the update."""
        x, y = batch
        k_adv, k_loss = self._split(key)
        x_adv = lax.stop_gradient(self.perturb(state, x, y, k_adv))
        grad_fn = jax.value_and_grad(self.loss, argnums=1, has_aux=True)
        (loss, (batch_stats, metrics)), grads = grad_fn(state, state.params, x, x_adv, y, k_loss)
        return loss, grads, batch_stats, metrics

    def step(self, state: TrainState, batch, key):
        loss, grads, batch_stats, metrics = self.gradients(state, batch, key)
        new_state = state.apply_gradients(grads, batch_stats=batch_stats)
        return new_state, {**metrics, "loss": loss}

    def objective(self, state: TrainState, batch, key, params=None):
        """The loss ``step`` differentiates, at ``params`` (default: the state's), with the
        adversarial examples of the current state and the step's keys."""
        x, y = batch
        k_adv, k_loss = self._split(key)
        x_adv = lax.stop_gradient(self.perturb(state, x, y, k_adv))
        p = state.params if params is None else params
        return self.loss(state, p, x, x_adv, y, k_loss)[0]


# -- registry ---------------------------------------------------------------------------------

# name -> "module:attribute" (lazy, so importing the registry imports no method module)
_REGISTRY: dict[str, Any] = {
    "standard": "advjax.methods.standard:Standard",
    "at_fgsm": "advjax.methods.at_fgsm:ATFGSM",
    "pgd_at": "advjax.methods.pgd_at:PGDAT",
    "trades": "advjax.methods.trades:TRADES",
    "mart": "advjax.methods.mart:MART",
    "awp": "advjax.methods.awp:AWP",
    "fast": "advjax.methods.fast:FGSMRS",
    "fgsm_rs": "advjax.methods.fast:FGSMRS",
    "fgsm_ga": "advjax.methods.fgsm_ga:FGSMGA",
    "fgsm_ckpt": "advjax.methods.fgsm_ckpt:FGSMCKPT",
    "free_at": "advjax.methods.free_at:FreeAT",
    "apgd_at": "advjax.methods.apgd_at:APGDAT",
}
# modules written by other engineers that register their methods on import
_PLUGIN_MODULES = ("advjax.methods.at_lr", "advjax.methods.fgsm_sdi")
_plugins_loaded = False


def register_method(name: str, factory) -> None:
    """Register ``factory(**kw) -> Method`` (a class or function) under ``name``."""
    _REGISTRY[_norm(name)] = factory


def _norm(name: str) -> str:
    return name.strip().lower().replace("-", "_")


def _load_plugins() -> None:
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True
    for mod in _PLUGIN_MODULES:
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as e:  # not written yet: that module's own name missing only
            if e.name != mod:
                raise


def list_methods() -> list[str]:
    _load_plugins()
    return sorted(_REGISTRY)


def _resolve(entry):
    if isinstance(entry, str):
        mod, attr = entry.split(":")
        return getattr(importlib.import_module(mod), attr)
    return entry


def get_method(name: str, **kw):
    """Build a method by name with keyword settings, e.g. ``get_method("pgd_at", eps=0.3, steps=40)``.

    ``get_method("awp", base="trades", gamma=5e-3, beta=6.0)``: settings not of AWP go to its base.
    Unknown names and unknown settings raise ValueError listing the valid ones.
    """
    if not isinstance(name, str):
        raise ValueError(f"method name must be a string, got {type(name).__name__}")
    key = _norm(name)
    if key not in _REGISTRY:
        _load_plugins()
    if key not in _REGISTRY:
        raise ValueError(f"unknown method {name!r}; known methods: {', '.join(list_methods())}")
    factory = _resolve(_REGISTRY[key])
    if dataclasses.is_dataclass(factory) and not hasattr(factory, "from_kwargs"):
        fields = {f.name for f in dataclasses.fields(factory) if f.init}
        unknown = sorted(set(kw) - fields)
        if unknown:
            raise ValueError(f"method {name!r} has no setting(s) {unknown}; its settings: {sorted(fields)}")
    if hasattr(factory, "from_kwargs"):
        return factory.from_kwargs(**kw)
    return factory(**kw)


# -- helpers shared by the method files ---------------------------------------------------------

def ce_forward(state: TrainState, params, x, y, *, smoothing: float = 0.0, batch_stats=None):
    """Training-mode forward and mean cross entropy: ``(loss, logits, new_batch_stats)``."""
    logits, bs = apply_model(state, params, x, train=True, batch_stats=batch_stats)
    return jnp.mean(_inner.cross_entropy(logits, y, smoothing)), logits, bs


def run_attack(attack, state: TrainState, x, y, key):
    """Call a contract attack ``attack(apply_fn, variables, x, y, key)`` on the eval-mode model
    (its pure ``run`` method when it has one: no input validation inside the compiled step)."""
    fn = getattr(attack, "run", attack)
    return fn(eval_apply_fn(state), state.variables(), x, y, key)


def check_common(name: str, *, eps=None, alpha=None, steps=None, smoothing=None, domain=(0.0, 1.0)):
    """Validate the usual method settings at construction time (before any compilation)."""
    if eps is not None:
        check_eps(name, eps, upper=1.0 if domain is not None else None)
    if alpha is not None and not (alpha > 0):
        raise ValueError(f"{name}: step size alpha must be > 0, got {alpha!r}")
    if steps is not None and (not isinstance(steps, int) or steps < 1):
        raise ValueError(f"{name}: steps must be an integer >= 1, got {steps!r}")
    if smoothing is not None and not (0.0 <= smoothing < 1.0):
        raise ValueError(f"{name}: label_smoothing must be in [0, 1), got {smoothing!r}")
    if domain is not None and (len(domain) != 2 or not domain[0] < domain[1]):
        raise ValueError(f"{name}: domain must be (low, high) with low < high or None, got {domain!r}")
