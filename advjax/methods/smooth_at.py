"""Smooth Adversarial Training (Xie, Tan, Gong, Yuille & Le, "Smooth Adversarial Training", 2020;
thesis "Boosting Adversarial Training in Adversarial Machine Learning", ch. 4).

SAT is the ordinary PGD adversarial-training objective

    min_θ E [ max_{‖δ‖∞ ≤ ε} CE(f_θ(x + δ), y) ]

with a smooth activation in the model (``get_model(..., activation="silu")``, see
``advjax.models.activations``): the smoothness is a model setting, not a new loss. The paper's
training attacker is PGD-1 with a random start, eps = step = 4/255 on ImageNet and 8/255 on
CIFAR-10 (Sec. 4.3.1, 4.7), i.e. the engine's FGSM-RS with step eps. :class:`SmoothAT` is that
recipe (``steps=2`` is Sec. 4.3.3's PGD-2 alternative; the "2x schedule" alternative is twice the
epochs, a training-loop setting) with the two switches of Table X:

* ``smooth_attacker``: the attacker's input gradient (inner maximization) uses ReLU's smooth
  backward, ``sigmoid(10 x)`` (eq. 29) in place of ReLU's step;
* ``smooth_optimizer``: the parameter gradient (outer minimization) does.

The forward pass stays ReLU in all four combinations (bit for bit), the model and its parameters
are the same: the switch is ``advjax.models.activations.smooth_relu_backward``, a block read at
trace time, entered around the attack's trace (``perturb``) and/or the loss's (``loss``), so one
compiled step holds both backwards. :class:`SmoothBackward` applies the same two switches to any
other attack-based method (``SmoothBackward(PGDAT(...), attacker=True, optimizer=False)``).

Asking for the smooth backward on a model with no ReLU activation is an error (raised by
``init_state`` before compilation, and again at trace time).

Settings the thesis does not give [inf]: PGD-k for k > 1 uses step 2.5 eps / k (the engine's PGD
rule) unless ``alpha`` is set; the attack runs on the eval-mode model (BN frozen), as every engine
method does.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Optional

import jax
import jax.numpy as jnp

from advjax.attacks import PGD
from advjax.methods import _inner
from advjax.methods.base import AdversarialMethod, box, ce_forward, check_common, check_step
from advjax.models.activations import SMOOTH_BACKWARD_ALPHA, smooth_relu_backward

__all__ = ["SmoothAT", "SmoothBackward", "TABLE_X_ROWS"]

# (smooth attacker, smooth optimizer) for the four rows of the thesis' Table X, in its order
TABLE_X_ROWS = ((False, False), (True, False), (False, True), (True, True))


def _no_relu_error(who: str, model) -> ValueError:
    act = getattr(model, "activation", "?")
    return ValueError(f"{who}: a smooth ReLU backward was requested, but the model "
                      f"{type(model).__name__} (activation={act!r}) has no ReLU activation to replace; "
                      "use activation='relu', or turn the smooth_attacker / smooth_optimizer switches off "
                      "(a smooth activation already has a smooth backward)")


def _count_relus(model, variables, x) -> int:
    """How many ReLU activations one eval-mode forward of ``model`` traces (shape-only)."""
    with smooth_relu_backward(True) as scope:
        jax.eval_shape(lambda v, z: model.apply(v, z, train=False), variables, x)
    return scope.relu_calls


class _Switches:
    """perturb / loss of ``inner`` with the smooth backward on or off for each."""

    def _switched(self, enabled: bool, fn, state, *args):
        with smooth_relu_backward(enabled, self._alpha) as scope:
            out = fn(state, *args)
        if enabled and scope.relu_calls == 0:
            raise _no_relu_error(type(self).__name__, state.model)
        return out

    def _check_model(self, state, batch):
        if self._attacker_on or self._optimizer_on:
            x = jnp.asarray(batch[0])[:1]
            if _count_relus(state.model, state.variables(), x) == 0:
                raise _no_relu_error(type(self).__name__, state.model)


@dataclasses.dataclass(frozen=True)
class SmoothAT(_Switches, AdversarialMethod):
    """PGD-``steps`` AT with random start and step ``alpha`` (default: eps for PGD-1, the paper's
    eps = step; 2.5 eps / steps otherwise), plus Table X's two smooth-backward switches."""

    eps: float = 8 / 255
    alpha: Optional[float] = None
    steps: int = 1
    random_start: bool = True
    smooth_attacker: bool = False
    smooth_optimizer: bool = False
    backward_alpha: float = SMOOTH_BACKWARD_ALPHA
    label_smoothing: float = 0.0
    domain: Any = "auto"  # the dataset's input box (advjax.methods.base.with_domain); None = unbounded
    attack: Any = None  # optional contract attack replacing the built-in PGD

    def __post_init__(self):
        check_common("smooth_at", eps=self.eps, alpha=self.alpha, steps=self.steps,
                     smoothing=self.label_smoothing, domain=self.domain)
        check_step("smooth_at", self.eps, self.alpha, self.steps)
        for f in ("smooth_attacker", "smooth_optimizer", "random_start"):
            if not isinstance(getattr(self, f), bool):
                raise ValueError(f"smooth_at: {f} must be True or False, got {getattr(self, f)!r}")
        if not (isinstance(self.backward_alpha, (int, float)) and self.backward_alpha > 0):
            raise ValueError(f"smooth_at: backward_alpha must be > 0 (eq. 29's a; the thesis uses 10), "
                             f"got {self.backward_alpha!r}")

    _alpha = property(lambda self: float(self.backward_alpha))
    _attacker_on = property(lambda self: self.smooth_attacker)
    _optimizer_on = property(lambda self: self.smooth_optimizer)

    @property
    def step_size(self) -> float:
        if self.alpha is not None:
            return self.alpha
        return self.eps if self.steps == 1 else 2.5 * self.eps / self.steps

    def default_attack(self):
        """L-inf PGD-``steps`` with random start (``advjax.attacks.PGD``)."""
        return PGD(eps=self.eps, steps=self.steps, step_size=self.step_size, random_start=self.random_start,
                   domain=box(self.domain), check_inputs=False)

    def init_state(self, state, batch):
        self._check_model(state, batch)
        return state

    def perturb(self, state, x, y, key):
        return self._switched(self.smooth_attacker, super().perturb, state, x, y, key)

    def _ce_loss(self, state, params, x, x_adv, y, key):
        loss, logits, bs = ce_forward(state, params, x_adv, y, smoothing=self.label_smoothing)
        return loss, (bs, {"acc": _inner.accuracy(logits, y)})

    def loss(self, state, params, x, x_adv, y, key):
        return self._switched(self.smooth_optimizer, self._ce_loss, state, params, x, x_adv, y, key)


@dataclasses.dataclass(frozen=True)
class SmoothBackward(_Switches, AdversarialMethod):
    """Any attack-based ``base`` method with ReLU's backward replaced by ``sigmoid(alpha x)`` in its
    attack (``attacker``) and/or its loss's parameter gradient (``optimizer``)."""

    base: AdversarialMethod
    attacker: bool = True
    optimizer: bool = True
    alpha: float = SMOOTH_BACKWARD_ALPHA

    def __post_init__(self):
        if not isinstance(self.base, AdversarialMethod):
            raise ValueError(f"SmoothBackward: base must be an AdversarialMethod, got {type(self.base).__name__}")
        if type(self.base).step is not AdversarialMethod.step:
            raise ValueError(f"SmoothBackward: {type(self.base).__name__} has its own step, which would bypass "
                             "the switches; only methods using the generic perturb-then-loss step can be wrapped")
        if not (isinstance(self.alpha, (int, float)) and self.alpha > 0):
            raise ValueError(f"SmoothBackward: alpha must be > 0 (eq. 29's a), got {self.alpha!r}")

    _alpha = property(lambda self: float(self.alpha))
    _attacker_on = property(lambda self: self.attacker)
    _optimizer_on = property(lambda self: self.optimizer)

    @property
    def eps(self):
        return getattr(self.base, "eps", None)

    @property
    def inner_attack(self):
        return self.base.inner_attack

    def init_state(self, state, batch):
        self._check_model(state, batch)
        return self.base.init_state(state, batch)

    def perturb(self, state, x, y, key):
        return self._switched(self.attacker, self.base.perturb, state, x, y, key)

    def loss(self, state, params, x, x_adv, y, key):
        return self._switched(self.optimizer, self.base.loss, state, params, x, x_adv, y, key)
