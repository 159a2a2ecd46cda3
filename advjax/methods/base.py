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
import warnings
from typing import Any, Callable, Protocol, runtime_checkable

import jax
import jax.numpy as jnp
from jax import lax

from advjax.train.state import TrainState, apply_model
from advjax.methods import _inner

__all__ = [
    "Method", "AdversarialMethod", "get_method", "register_method", "list_methods",
    "eval_apply_fn", "forward", "check_eps", "check_step", "AUTO", "box", "with_domain", "declared_domains",
    "dataset_domain", "for_data",
]

#: ``domain="auto"`` (every method's default): the input box is the dataset's. ``fit``, ``advjax train``
#: and ``get_method(..., dataset=...)`` replace it by the dataset's domain (``with_domain``); a method
#: used on its own (``jax.jit(method.step)``) clips to the image box (0, 1).
AUTO = "auto"


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


def check_step(name: str, eps, step, steps: int = 1, what: str = "alpha") -> None:
    """Warn when ``steps`` steps of size ``step`` cannot reach the boundary of the eps-ball from x
    (``step * steps < eps``): the inner maximization is then silently weak (e.g. alpha = 2/255 with
    10 steps at eps = 0.3 moves at most 0.078 from its start)."""
    if step is None or eps is None or not isinstance(eps, (int, float)) or not isinstance(step, (int, float)):
        return
    if eps > 0 and step * steps < eps * (1 - 1e-6):
        warnings.warn(f"{name}: {what}={step:.4g} x {steps} step(s) = {step * steps:.4g} cannot reach the boundary of the "
                      f"eps-ball (eps={eps:.4g}); the inner attack is weaker than the threat model. Leave {what} unset "
                      f"to derive it from eps, or raise it / the number of steps", UserWarning,
                      **_outside_advjax())


def _outside_advjax() -> dict:
    """warnings.warn keywords attributing a warning to the first caller outside advjax."""
    import os
    import sys

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if sys.version_info >= (3, 12):
        return {"skip_file_prefixes": (root,)}
    level, frame = 1, sys._getframe(1)  # frame 1 = check_step, the caller of warnings.warn
    while frame is not None and (frame.f_code.co_filename.startswith(root)
                                 or frame.f_code.co_filename.startswith("<")
                                 or frame.f_code.co_filename.endswith("dataclasses.py")):
        frame, level = frame.f_back, level + 1
    return {"stacklevel": level}


# -- the input domain -----------------------------------------------------------------------------

def _norm_domain(domain):
    """"auto", None or a (low, high) float tuple (lists from JSON/TOML configs become tuples)."""
    if isinstance(domain, str):
        if domain.strip().lower() == AUTO:
            return AUTO
        raise ValueError(f"domain must be 'auto', None or (low, high), got {domain!r}")
    if domain is None:
        return None
    try:
        lo, hi = domain
        return (float(lo), float(hi))
    except (TypeError, ValueError):
        raise ValueError(f"domain must be 'auto', None or (low, high), got {domain!r}") from None


def box(domain):
    """The box a method clips to for its ``domain`` setting: "auto" (not resolved from a dataset)
    is the image box (0, 1); None is unbounded."""
    d = _norm_domain(domain)
    return (0.0, 1.0) if d == AUTO else d


def dataset_domain(dataset):
    """The domain of ``dataset``: an ``advjax.data.Dataset`` (its ``domain``) or a dataset name
    (its ``DatasetSpec``); ``"unknown"`` for names advjax does not know."""
    if isinstance(dataset, str):
        from advjax.data.dataset import get_spec
        try:
            return get_spec(dataset).domain
        except ValueError:
            return "unknown"
    if hasattr(dataset, "domain"):
        return _norm_domain(dataset.domain)
    raise ValueError(f"dataset must be a Dataset or a dataset name, got {type(dataset).__name__}")


def _is_method(v) -> bool:
    return dataclasses.is_dataclass(v) and not isinstance(v, type) and hasattr(v, "step")


def declared_domains(method, where: str = "") -> list[tuple[str, Any]]:
    """Every domain a method (and the methods and attacks it wraps) declares, as
    ``(where, domain)``: its own ``domain`` fields ("auto" included) and its ``attack`` fields'."""
    out = []
    if not _is_method(method):
        return out
    name = where or type(method).__name__
    for f in dataclasses.fields(method):
        v = getattr(method, f.name, None)
        if f.name == "domain":
            out.append((f"{name}.domain", _norm_domain(v)))
        elif f.name == "attack" and v is not None and hasattr(v, "domain"):
            out.append((f"{name}.attack ({type(v).__name__}).domain", _norm_domain(v.domain)))
        elif _is_method(v):
            out += declared_domains(v, f"{name}.{f.name}")
    return out


def for_data(method, data, x=None):
    """``method`` on ``data`` (what ``fit`` does before compiling): for an ``advjax.data.Dataset``,
    ``with_domain(method, data.domain)`` (a disagreement is an error); for raw ``(x, y)`` arrays,
    whose domain is only inferred ((0, 1) if uint8 or inside [0, 1], else unbounded), every "auto"
    becomes the inferred box and an explicit box is an error only if the data lie outside it."""
    if hasattr(data, "domain") and hasattr(data, "x"):
        return with_domain(method, data.domain, source=f"dataset {getattr(data, 'name', '')!r}")
    import numpy as np

    xa = np.asarray(data[0] if x is None else x)
    inside01 = xa.dtype == np.uint8 or (xa.size and xa.min() >= 0 and xa.max() <= 1)
    inferred = (0.0, 1.0) if inside01 else None
    if xa.dtype == np.uint8:
        xa = xa.astype(np.float32) / 255.0
    lo, hi = (float(xa.min()), float(xa.max())) if xa.size else (0.0, 0.0)
    for where, d in declared_domains(method):
        if d is not None and d != AUTO and (lo < d[0] or hi > d[1]):
            raise ValueError(f"{where}={d} disagrees with the data, whose values span [{lo:.4g}, {hi:.4g}]; set "
                             f"domain=None (unbounded) or the data's box, or pass an advjax.data.Dataset")
    return with_domain(method, inferred, source="the data (inferred)", strict=False)


def with_domain(method, domain, *, source: str = "the dataset", strict: bool = True):
    """``method`` with every ``domain="auto"`` (its own and those of the methods it wraps) set to
    ``domain``, the dataset's. An explicit domain (or an ``attack`` field's) that differs from it is
    a ValueError naming both: a method clipping to another box than its data's moves points the
    evaluation would not (e.g. Moon features clipped into [0, 1]^2). ``strict=False`` only fills
    in the "auto" ones."""
    target = _norm_domain(domain)
    if target == AUTO:
        raise ValueError("with_domain: the dataset's domain must be None or (low, high), not 'auto'")
    if not _is_method(method):
        return method
    changes = {}
    for f in dataclasses.fields(method):
        if not f.init:
            continue
        v = getattr(method, f.name)
        if f.name == "domain":
            d = _norm_domain(v)
            if d == AUTO:
                changes["domain"] = target
            elif d != target and strict:
                raise ValueError(f"{type(method).__name__}: domain={d} disagrees with the domain of {source}, "
                                 f"{target}; leave domain unset ('auto') to take it from the data, or set "
                                 f"domain={target}")
        elif f.name == "attack" and v is not None and hasattr(v, "domain"):
            d = _norm_domain(v.domain)
            if d != target and strict:
                raise ValueError(f"{type(method).__name__}: its attack {type(v).__name__} has domain={d}, which "
                                 f"disagrees with the domain of {source}, {target}; build the attack with "
                                 f"domain={target}")
        elif _is_method(v):
            nv = with_domain(v, target, source=source, strict=strict)
            if nv is not v:
                changes[f.name] = nv
    return dataclasses.replace(method, **changes) if changes else method


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
    "smooth_at": "advjax.methods.smooth_at:SmoothAT",
    "hldr": "advjax.methods.hldr:hldr",
    "fimr": "advjax.methods.fimr:FIMR",
    "agnt": "advjax.methods.agnt:AGNT",
    "hgd": "advjax.methods.hgd:HGD",
}
# modules written by other engineers that register their methods on import
_PLUGIN_MODULES = ("advjax.methods.at_lr", "advjax.methods.fgsm_sdi", "advjax.methods.layerwise",
                   "advjax.methods.sat")
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


def get_method(name: str, dataset=None, **kw):
    """Build a method by name with keyword settings, e.g. ``get_method("pgd_at", eps=0.3, steps=40)``.

    ``get_method("awp", base="trades", gamma=5e-3, beta=6.0)``: settings not of AWP go to its base.
    ``dataset`` (a name or an ``advjax.data.Dataset``): the method's input domain is the dataset's
    (``with_domain``), unless ``domain`` is given, which must then agree with it. Without it a
    method keeps ``domain="auto"`` (the image box (0, 1) when used on its own). Step sizes left
    unset follow eps (each method's docstring states its rule).
    Unknown names and unknown settings raise ValueError listing the valid ones.
    """
    if dataset is not None:
        dom = dataset_domain(dataset)
        if dom != "unknown":
            label = f"dataset {dataset!r}" if isinstance(dataset, str) else f"dataset {getattr(dataset, 'name', '')!r}"
            try:  # pass the domain at construction (eps range checks see the real box) when accepted
                method = get_method(name, **kw) if "domain" in kw else get_method(name, **kw, domain=dom)
            except (ValueError, TypeError) as e:  # a method without a domain setting (e.g. standard)
                if "domain" not in str(e) or "domain" in kw:
                    raise
                method = get_method(name, **kw)
            return with_domain(method, dom, source=label)
        return get_method(name, **kw)
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
    """Validate the usual method settings at construction time (before any compilation).
    ``domain="auto"`` is checked as the image box (0, 1) it stands for until resolved."""
    domain = box(domain)
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
