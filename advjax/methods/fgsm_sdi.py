"""FGSM-SDI: fast adversarial training with a learnable, sample-dependent initialization.

Jia, Zhang, Wu, Wang, Cao, "Boosting Fast Adversarial Training with Learnable Adversarial
Initialization", IEEE TIP 2022 (thesis "Boosting Adversarial Training in Adversarial Machine
Learning", ch. 3, eq. 24-27, Algorithm 3). Released code: github.com/jiaxiaojunQAQ/FGSM-SDI
(FGSM_SDI.py, FGSM_SDI_loss.py, attacker.py), read for ``mode="reference"``.

The method
----------
For a batch (x, y) and target f(.; w):

- eq. 24: S_x = sign(grad_x L(f(x; w), y)), the sign of the clean input gradient;
- eq. 25: eta_g = eps * g(x, S_x; theta), the generator's initialization (g in [-1, 1]);
- eq. 26: delta_g = Pi_[-eps, eps][eta_g + alpha * sign(grad_x L(f(x + eta_g; w), y))];
- eq. 27: min_w max_theta E L(f(x + delta_g; w), y).

Algorithm 3 (and the released training loop, whose order we follow): per batch, compute S_x with
the current target; if the step counter is a multiple of k, take one ascent step on theta of
L(f(x + delta_g(theta); w), y) (gradients flow through eta_g into delta_g; the sign term is
treated as a constant -- its derivative is zero almost everywhere -- so it is wrapped in
``stop_gradient``); then, with the (possibly just updated) generator, recompute delta_g and take
one descent step on w of L(f(x + delta_g; w), y), delta_g held constant. Both optimizers live in
ONE state pytree (:class:`SDIState`) and ONE jit-compiled :meth:`FGSMSDI.step` updates them, the
generator under ``lax.cond`` on the step counter (no host round-trip).

Paper mode and reference mode, side by side
-------------------------------------------
==========================  ===================================  ===================================
item                        ``mode="paper"`` (default)            ``mode="reference"`` (released code)
==========================  ===================================  ===================================
x + eta_g, x + delta_g      clipped to the domain [0, 1]          not clipped (``clamp`` commented
                                                                  out in FGSM_SDI_loss.py)
target's training loss      cross-entropy                         label-smoothed CE, factor 0.5: the
                                                                  true class gets 0.5, each other
                                                                  class 0.5/(C-1) (not optax's
                                                                  ``smooth_labels``, which gives the
                                                                  true class 1 - s + s/C)
generator's objective       cross-entropy                         the same label-smoothed CE
(maximized)
inner gradients (S_x and    cross-entropy                         cross-entropy (same)
the sign at x + eta_g)
BN running statistics of    only the target's training forward    every target forward in train mode
the target                  updates them; attack forwards use     updates them, in order: clean
                            batch statistics and discard the      (S_x), x + eta_g and x + delta_g in
                            update                                the generator step, x + eta_g and
                                                                  x + delta_g in the target step
"every k steps"             global step % k == 0                  batch index within the epoch % k
                                                                  == 0 when ``steps_per_epoch`` is
                                                                  given (the code uses
                                                                  ``batch_idx``, reset each epoch);
                                                                  global step otherwise
==========================  ===================================  ===================================

The same in both modes (checked against the released code): alpha = eps = 8/255 by default (the
alpha-step is clipped to the eps-ball and then so is the sum); k = 20 (``--att_num``); the generator
is optimized with Adam, lr 1e-3, *coupled* L2 weight decay 5e-4 (PyTorch ``Adam(weight_decay=...)``
adds wd * theta to the gradient; see :func:`generator_optimizer`) -- the released code wraps it in
a MultiStepLR whose milestones are counted in target steps but stepped only on generator updates,
so it never decays; we keep the lr constant; the generator's BN runs in train mode (batch
statistics, running statistics updated) when the generator is updated and in eval mode (running
statistics) when it makes the target's training examples; the target uses batch statistics (train
mode) in every forward of the training step; reported training loss/accuracy are those of the
target's forward on x + delta_g. The target's optimizer (SGD momentum 0.9, wd 5e-4, lr 0.1
piecewise at 100/110 and 105/110 of the steps, or cyclic 0 -> 0.1 -> 0) is the caller's ``tx``.
The generator's architecture differs between the paper's description and the released module; it
is chosen separately with ``SDIGenerator(arch=...)`` (see :mod:`advjax.models.generator`).
"""
from __future__ import annotations

import dataclasses
from typing import Any

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax import struct

from advjax.models.generator import SDIGenerator

__all__ = ["SDIState", "FGSMSDI", "generator_optimizer", "init_sdi_state", "smoothed_targets"]

_MODES = ("paper", "reference")


class SDIState(struct.PyTreeNode):
    """ONE pytree for FGSM-SDI: the target's train state and the generator's, two optax states.

    The target's fields carry the names of ``advjax.train.TrainState`` (``step, params,
    batch_stats, opt_state, key`` + static ``model, tx``), so code that evaluates
    ``state.model.apply({"params": state.params, "batch_stats": state.batch_stats}, x)`` works
    unchanged; the generator's are ``gen_params, gen_batch_stats, gen_opt_state`` + static
    ``generator, gen_tx``.
    """

    step: jax.Array
    params: Any
    batch_stats: Any
    opt_state: Any
    key: jax.Array
    gen_params: Any
    gen_batch_stats: Any
    gen_opt_state: Any
    model: nn.Module = struct.field(pytree_node=False)
    tx: optax.GradientTransformation = struct.field(pytree_node=False)
    generator: nn.Module = struct.field(pytree_node=False)
    gen_tx: optax.GradientTransformation = struct.field(pytree_node=False)

    @property
    def variables(self):
        """The target's variables for ``model.apply`` (what evaluation and attacks take)."""
        if self.batch_stats:
            return {"params": self.params, "batch_stats": self.batch_stats}
        return {"params": self.params}

    @property
    def gen_variables(self):
        return {"params": self.gen_params, "batch_stats": self.gen_batch_stats}


def generator_optimizer(lr: float = 1e-3, weight_decay: float = 5e-4) -> optax.GradientTransformation:
    """Adam with coupled L2 weight decay, as PyTorch ``Adam(lr, weight_decay)`` in the released code."""
    if lr <= 0 or weight_decay < 0:
        raise ValueError(f"generator_optimizer: need lr > 0 and weight_decay >= 0, got {lr}, {weight_decay}")
    return optax.chain(optax.add_decayed_weights(weight_decay), optax.adam(lr))


def init_sdi_state(model: nn.Module, tx: optax.GradientTransformation, key: jax.Array,
                   input_shape, *, generator: nn.Module | None = None,
                   gen_tx: optax.GradientTransformation | None = None,
                   params=None, batch_stats=None, opt_state=None,
                   step=0) -> SDIState:
    """Build an :class:`SDIState`: initialize the generator (and the target unless given).

    ``input_shape`` is the per-example image shape (H, W, C). Pass ``params``/``batch_stats``
    (and optionally ``opt_state``/``step``) to wrap an existing target train state, e.g. one from
    ``advjax.train.create_train_state`` (see :meth:`FGSMSDI.init_state`).
    """
    input_shape = tuple(int(d) for d in input_shape)
    if len(input_shape) != 3:
        raise ValueError(f"init_sdi_state: input_shape must be (H, W, C), got {input_shape}")
    generator = generator if generator is not None else SDIGenerator(out_channels=input_shape[-1])
    gen_tx = gen_tx if gen_tx is not None else generator_optimizer()
    k_target, k_gen, k_state = jax.random.split(key, 3)
    dummy = jnp.zeros((1,) + input_shape, jnp.float32)
    if params is None:
        variables = model.init(k_target, dummy, train=False)
        params = variables["params"]
        batch_stats = variables.get("batch_stats", {})
    batch_stats = {} if batch_stats is None else batch_stats
    gvars = generator.init(k_gen, dummy, dummy, train=False)
    if opt_state is None:
        opt_state = tx.init(params)
    return SDIState(step=jnp.asarray(step, jnp.int32), params=params, batch_stats=batch_stats,
                    opt_state=opt_state, key=k_state, gen_params=gvars["params"],
                    gen_batch_stats=gvars.get("batch_stats", {}),
                    gen_opt_state=gen_tx.init(gvars["params"]), model=model, tx=tx,
                    generator=generator, gen_tx=gen_tx)


def smoothed_targets(y: jax.Array, num_classes: int, smoothing: float) -> jax.Array:
    """Targets of the released code's ``_label_smoothing(y, factor=1 - smoothing)``.

    The true class gets 1 - smoothing, each of the other C - 1 classes smoothing / (C - 1).
    """
    one_hot = jax.nn.one_hot(y, num_classes)
    return one_hot * (1.0 - smoothing) + (1.0 - one_hot) * (smoothing / (num_classes - 1))


def _forward(model, params, batch_stats, x):
    """Target forward in train mode (batch statistics); returns (logits, new_batch_stats)."""
    if batch_stats:
        logits, upd = model.apply({"params": params, "batch_stats": batch_stats}, x, train=True,
                                  mutable=["batch_stats"])
        return logits, upd["batch_stats"]
    return model.apply({"params": params}, x, train=True), batch_stats


@dataclasses.dataclass(frozen=True)
class FGSMSDI:
    """FGSM-SDI training method (eq. 24-27, Algorithm 3); ``step(state, batch, key)``.

    Attributes:
      eps: L-inf radius (8/255).
      alpha: step size of the FGSM step from x + eta_g (8/255 in the paper and code).
      k: the generator is updated once every k steps (20).
      mode: ``"paper"`` or ``"reference"``; see the module docstring for every difference.
      label_smoothing: override of the mode's smoothing (paper 0.0, reference 0.5); the true
        class's target is 1 - label_smoothing (see :func:`smoothed_targets`).
      steps_per_epoch: reference mode only: count "every k" by the batch index within the epoch.
      domain: the input box of paper mode (``None``: no clipping in either mode).
    """

    eps: float = 8 / 255
    alpha: float = 8 / 255
    k: int = 20
    mode: str = "paper"
    label_smoothing: float | None = None
    steps_per_epoch: int | None = None
    domain: tuple[float, float] | None = (0.0, 1.0)

    def __post_init__(self):
        if self.mode not in _MODES:
            raise ValueError(f"FGSMSDI: unknown mode {self.mode!r}; use one of {_MODES}")
        if not self.eps >= 0:
            raise ValueError(f"FGSMSDI: eps must be >= 0, got {self.eps}")
        if not self.alpha >= 0:
            raise ValueError(f"FGSMSDI: alpha must be >= 0, got {self.alpha}")
        if int(self.k) != self.k or self.k < 1:
            raise ValueError(f"FGSMSDI: k (generator update period) must be an integer >= 1, got {self.k}")
        if self.label_smoothing is not None and not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"FGSMSDI: label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if self.steps_per_epoch is not None and self.steps_per_epoch < 1:
            raise ValueError(f"FGSMSDI: steps_per_epoch must be >= 1, got {self.steps_per_epoch}")

    # -- settings that depend on the mode -------------------------------------------------
    @property
    def smoothing(self) -> float:
        if self.label_smoothing is not None:
            return float(self.label_smoothing)
        return 0.5 if self.mode == "reference" else 0.0

    @property
    def clip_domain(self):
        return self.domain if self.mode == "paper" else None

    def init_state(self, train_state, key: jax.Array, *, generator: nn.Module | None = None,
                   gen_tx: optax.GradientTransformation | None = None) -> SDIState:
        """Wrap a target ``TrainState`` (contract fields) into an :class:`SDIState`."""
        model = train_state.model
        shape = getattr(model, "input_shape", None)
        if shape is None:
            raise ValueError("FGSMSDI.init_state: the model has no input_shape field; use init_sdi_state")
        if generator is None:
            generator = SDIGenerator(out_channels=tuple(shape)[-1], arch=self.mode)
        return init_sdi_state(model, train_state.tx, key, shape, generator=generator, gen_tx=gen_tx,
                              params=train_state.params, batch_stats=train_state.batch_stats,
                              opt_state=train_state.opt_state, step=train_state.step)

    # -- pieces -----------------------------------------------------------------------------
    def _loss(self, logits, y, smoothing):
        if smoothing > 0.0:
            t = smoothed_targets(y, logits.shape[-1], smoothing)
            return optax.softmax_cross_entropy(logits, t)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y)

    def _clip(self, x, x_new):
        d = self.clip_domain
        return x_new if d is None else jnp.clip(x_new, d[0], d[1])

    def input_sign(self, model, params, batch_stats, x, y):
        """eq. 24: S_x = sign(grad_x CE(f(x; w), y)), target in train mode.

        Returns (S_x, clean_logits, batch_stats after the clean forward)."""
        def f(xx):
            logits, bs = _forward(model, params, batch_stats, xx)
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).sum(), (logits, bs)
        g, (logits, bs) = jax.grad(f, has_aux=True)(x)
        return jnp.sign(g), logits, bs

    def perturbation(self, model, params, batch_stats, generator, gen_variables, x, y, s,
                     gen_train: bool = False):
        """eq. 25-26: delta_g (differentiable in the generator's params through eta_g).

        Returns (delta, target batch_stats after the x + eta_g forward, generator batch_stats).
        ``x + delta`` lies in the domain in paper mode."""
        if gen_train:
            g, upd = generator.apply(gen_variables, x, s, train=True, mutable=["batch_stats"])
            gen_bs = upd["batch_stats"]
        else:
            g = generator.apply(gen_variables, x, s, train=False)
            gen_bs = gen_variables.get("batch_stats", {})
        eta = self.eps * g                                                  # eq. 25
        x1 = self._clip(x, x + eta)

        def f(xx):
            logits, bs = _forward(model, params, batch_stats, xx)
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).sum(), bs
        g1, bs = jax.grad(f, has_aux=True)(jax.lax.stop_gradient(x1))
        step = jax.lax.stop_gradient(jnp.clip(self.alpha * jnp.sign(g1), -self.eps, self.eps))
        delta = jnp.clip(eta + step, -self.eps, self.eps)                   # eq. 26
        delta = self._clip(x, x + delta) - x
        return delta, bs, gen_bs

    # -- the step ---------------------------------------------------------------------------
    def _generator_due(self, step):
        if self.mode == "reference" and self.steps_per_epoch is not None:
            step = step % self.steps_per_epoch
        return step % self.k == 0

    def step(self, state: SDIState, batch, key: jax.Array):
        """One FGSM-SDI step (Algorithm 3): generator ascent when due, then target descent.

        ``batch`` is (x, y) with x in the domain; ``key`` is unused (FGSM-SDI is deterministic
        given the state) but kept for the Method protocol. Returns (new_state, metrics) with
        metrics ``loss, accuracy`` (target's forward on x + delta_g), ``clean_accuracy``,
        ``attack_success_rate`` (share of the clean-correct training examples that x + delta_g
        misclassifies, Fig. 27), ``gen_loss`` (the generator's objective before its update; 0 when
        not updated), ``gen_updated`` (1.0 / 0.0) and ``delta_linf``.
        """
        del key
        x, y = batch
        chex.assert_rank(x, 4)
        chex.assert_rank(y, 1)
        model, generator = state.model, state.generator
        ref = self.mode == "reference"
        smoothing = self.smoothing
        s, clean_logits, bs_clean = self.input_sign(model, state.params, state.batch_stats, x, y)
        bs = bs_clean if ref else state.batch_stats

        def gen_update(operand):
            gen_params, gen_bs, gen_opt_state, tbs = operand

            def objective(gp):
                delta, tbs1, new_gen_bs = self.perturbation(
                    model, state.params, tbs, generator,
                    {"params": gp, "batch_stats": gen_bs}, x, y, s, gen_train=True)
                logits, tbs2 = _forward(model, state.params, tbs1 if ref else tbs,
                                         self._clip(x, x + delta))
                loss = self._loss(logits, y, smoothing).mean()
                return -loss, (loss, new_gen_bs, tbs2 if ref else tbs)

            grads, (loss, new_gen_bs, new_tbs) = jax.grad(objective, has_aux=True)(gen_params)
            updates, new_opt = state.gen_tx.update(grads, gen_opt_state, gen_params)
            new_params = optax.apply_updates(gen_params, updates)
            return (new_params, new_gen_bs, new_opt, new_tbs), loss.astype(jnp.float32)

        def no_update(operand):
            return operand, jnp.zeros((), jnp.float32)

        due = self._generator_due(state.step)
        (gen_params, gen_bs, gen_opt_state, bs), gen_loss = jax.lax.cond(
            due, gen_update, no_update,
            (state.gen_params, state.gen_batch_stats, state.gen_opt_state, bs))

        # the target's step with the (possibly updated) generator in eval mode
        delta, bs_attack, _ = self.perturbation(
            model, state.params, bs, generator, {"params": gen_params, "batch_stats": gen_bs},
            x, y, s, gen_train=False)
        delta = jax.lax.stop_gradient(delta)
        x_adv = self._clip(x, x + delta)
        bs_in = bs_attack if ref else bs

        def target_loss(params):
            logits, new_bs = _forward(model, params, bs_in, x_adv)
            return self._loss(logits, y, smoothing).mean(), (logits, new_bs)

        (loss, (logits, new_bs)), grads = jax.value_and_grad(target_loss, has_aux=True)(state.params)
        updates, opt_state = state.tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)

        clean_ok = jnp.argmax(clean_logits, -1) == y
        adv_ok = jnp.argmax(logits, -1) == y
        n_ok = clean_ok.sum()
        asr = jnp.where(n_ok > 0, (clean_ok & ~adv_ok).sum() / jnp.maximum(n_ok, 1), 0.0)
        metrics = {
            "loss": loss,
            "accuracy": adv_ok.mean(),
            "clean_accuracy": clean_ok.mean(),
            "attack_success_rate": asr,
            "gen_loss": gen_loss,
            "gen_updated": due.astype(jnp.float32),
            "delta_linf": jnp.max(jnp.abs(delta)),
        }
        new_state = state.replace(step=state.step + 1, params=params, batch_stats=new_bs,
                                  opt_state=opt_state, gen_params=gen_params,
                                  gen_batch_stats=gen_bs, gen_opt_state=gen_opt_state)
        return new_state, metrics
