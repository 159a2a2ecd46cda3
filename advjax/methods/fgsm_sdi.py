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
ONE state pytree and ONE jit-compiled :meth:`FGSMSDI.step` updates them, the
generator under ``lax.cond`` on the step counter (no host round-trip).

State layout: the engine's ``advjax.train.TrainState`` (target ``params, batch_stats, opt_state,
step``) with the generator's three pieces in ``state.extra["sdi"] = {"params", "batch_stats",
"opt_state"}`` -- one pytree, checkpointed and sharded like any TrainState. The generator module
and its optimizer are settings of the method (static), built from its fields.

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
generator architecture      ``SDIGenerator(arch="paper")``:       ``arch="reference"``: the released
(``generator_arch=None``    conv-BN-ReLU, ResBlock, conv-BN,      ``One_Layer_Attacker`` (PReLU
follows the mode)           tanh                                  pre-activation block, affine-free
                                                                  BNs, no BN after the last conv)
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
piecewise at 100/110 and 105/110 of the steps, or cyclic 0 -> 0.1 -> 0 peaking at mid-run) is
the caller's ``tx``. The released code trains on unnormalized pixels (mean 0, std 1 in its
utils.py), so its eps and alpha are pixel units, as here; its test-time PGD uses step 2/255 and
picks the "best" checkpoint by test PGD-10 accuracy, as the engine's loop does.
"""
from __future__ import annotations

import dataclasses
from typing import Optional
import chex
import jax
import jax.numpy as jnp
import optax

from advjax.models.generator import SDIGenerator
from advjax.train.state import TrainState, apply_model, create_train_state

__all__ = ["FGSMSDI", "generator_optimizer", "init_sdi_state", "smoothed_targets", "EXTRA_KEY"]

_MODES = ("paper", "reference")
EXTRA_KEY = "sdi"  # state.extra[EXTRA_KEY] = {"params", "batch_stats", "opt_state"} of the generator


def generator_optimizer(lr: float = 1e-3, weight_decay: float = 5e-4) -> optax.GradientTransformation:
    """Adam with coupled L2 weight decay, as PyTorch ``Adam(lr, weight_decay)`` in the released code."""
    if not lr > 0 or not weight_decay >= 0:
        raise ValueError(f"generator_optimizer: need lr > 0 and weight_decay >= 0, got {lr}, {weight_decay}")
    return optax.chain(optax.add_decayed_weights(weight_decay), optax.adam(lr))


def smoothed_targets(y: jax.Array, num_classes: int, smoothing: float) -> jax.Array:
    """Targets of the released code's ``_label_smoothing(y, factor=1 - smoothing)``.

    The true class gets 1 - smoothing, each of the other C - 1 classes smoothing / (C - 1).
    """
    one_hot = jax.nn.one_hot(y, num_classes)
    return one_hot * (1.0 - smoothing) + (1.0 - one_hot) * (smoothing / (num_classes - 1))


@dataclasses.dataclass(frozen=True)
class FGSMSDI:
    """FGSM-SDI training method (eq. 24-27, Algorithm 3); ``step(state, batch, key)``.

    Attributes:
      eps: L-inf radius (8/255).
      alpha: step size of the FGSM step from x + eta_g; None (default): alpha = eps, the paper's and
        the code's rule (8/255 at eps 8/255), so the step follows eps.
      k: the generator is updated once every k steps (20).
      mode: ``"paper"`` or ``"reference"``; see the module docstring for every difference.
      label_smoothing: override of the mode's smoothing (paper 0.0, reference 0.5); the true
        class's target is 1 - label_smoothing (see :func:`smoothed_targets`).
      steps_per_epoch: reference mode only: count "every k" by the batch index within the epoch.
      domain: the input box of paper mode (``None``: no clipping in either mode; ``"auto"``, the
        default: the dataset's, filled in by ``fit`` / ``advjax train`` / ``get_method(...,
        dataset=...)``, else (0, 1)).
      generator_features: hidden width of the generator (64).
      generator_arch: ``"paper"``/``"reference"``; ``None`` follows ``mode``.
      gen_lr, gen_weight_decay: the generator's Adam (1e-3, coupled L2 5e-4).
    """

    eps: float = 8 / 255
    alpha: Optional[float] = None
    k: int = 20
    mode: str = "paper"
    label_smoothing: float | None = None
    steps_per_epoch: int | None = None
    domain: tuple[float, float] | None | str = "auto"
    generator_features: int = 64
    generator_arch: str | None = None
    gen_lr: float = 1e-3
    gen_weight_decay: float = 5e-4

    def __post_init__(self):
        if self.mode not in _MODES:
            raise ValueError(f"FGSMSDI: unknown mode {self.mode!r}; use one of {_MODES}")
        if self.generator_arch not in (None,) + _MODES:
            raise ValueError(f"FGSMSDI: unknown generator_arch {self.generator_arch!r}; use None or one of {_MODES}")
        if not (isinstance(self.eps, (int, float)) and 0 <= self.eps <= 1):
            raise ValueError(f"FGSMSDI: eps must be in [0, 1] (pixels live in [0, 1]; 8/255, not 8), got {self.eps!r}")
        if self.alpha is not None and not self.alpha >= 0:
            raise ValueError(f"FGSMSDI: alpha must be >= 0, got {self.alpha}")
        if int(self.k) != self.k or self.k < 1:
            raise ValueError(f"FGSMSDI: k (generator update period) must be an integer >= 1, got {self.k}")
        if self.label_smoothing is not None and not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"FGSMSDI: label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if self.steps_per_epoch is not None and self.steps_per_epoch < 1:
            raise ValueError(f"FGSMSDI: steps_per_epoch must be >= 1, got {self.steps_per_epoch}")
        if self.domain != "auto" and self.domain is not None and (len(self.domain) != 2 or not self.domain[0] < self.domain[1]):
            raise ValueError(f"FGSMSDI: domain must be (low, high) with low < high, or None; got {self.domain!r}")
        if self.generator_features < 1:
            raise ValueError(f"FGSMSDI: generator_features must be >= 1, got {self.generator_features}")
        generator_optimizer(self.gen_lr, self.gen_weight_decay)  # validates

    # -- settings that depend on the mode -------------------------------------------------
    @property
    def smoothing(self) -> float:
        if self.label_smoothing is not None:
            return float(self.label_smoothing)
        return 0.5 if self.mode == "reference" else 0.0

    @property
    def clip_domain(self):
        from advjax.methods.base import box

        return box(self.domain) if self.mode == "paper" else None

    def generator(self, out_channels: int) -> SDIGenerator:
        return SDIGenerator(features=self.generator_features, out_channels=out_channels,
                            arch=self.generator_arch or self.mode)

    @property
    def gen_tx(self) -> optax.GradientTransformation:
        return generator_optimizer(self.gen_lr, self.gen_weight_decay)

    def init_state(self, state: TrainState, batch, key: jax.Array | None = None) -> TrainState:
        """Add the generator's params, BN statistics and Adam state to ``state.extra["sdi"]``.

        ``batch`` is an example ``(x, y)`` (only x's shape is used); ``key`` defaults to one
        folded from the state's run key."""
        x = jnp.asarray(batch[0])
        if x.ndim != 4:
            raise ValueError(f"FGSMSDI.init_state: expects NHWC images, got x of shape {x.shape}")
        if key is None:
            key = jax.random.fold_in(state.key, 0x5D1)
        gen = self.generator(x.shape[-1])
        dummy = jnp.zeros((1,) + x.shape[1:], jnp.float32)
        gvars = gen.init(key, dummy, dummy, train=False)
        sdi = {"params": gvars["params"], "batch_stats": gvars.get("batch_stats", {}),
               "opt_state": self.gen_tx.init(gvars["params"])}
        return state.replace(extra={**dict(state.extra), EXTRA_KEY: sdi})

    # -- pieces -----------------------------------------------------------------------------
    def _loss(self, logits, y, smoothing):
        if smoothing > 0.0:
            t = smoothed_targets(y, logits.shape[-1], smoothing)
            return optax.softmax_cross_entropy(logits, t)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y)

    def _clip(self, x_new):
        d = self.clip_domain
        return x_new if d is None else jnp.clip(x_new, d[0], d[1])

    def input_sign(self, state: TrainState, x, y, batch_stats=None):
        """eq. 24: S_x = sign(grad_x CE(f(x; w), y)), target in train mode (batch statistics).

        Returns (S_x, clean_logits, batch_stats after the clean forward)."""
        def f(xx):
            logits, bs = apply_model(state, state.params, xx, train=True, batch_stats=batch_stats)
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).sum(), (logits, bs)
        g, (logits, bs) = jax.grad(f, has_aux=True)(x)
        return jnp.sign(g), logits, bs

    def perturbation(self, state: TrainState, gen_vars, x, y, s, *, gen_train: bool = False,
                     batch_stats=None):
        """eq. 25-26: delta_g, differentiable in ``gen_vars["params"]`` through eta_g.

        Returns (delta, target batch_stats after the x + eta_g forward, generator batch_stats).
        In paper mode ``x + delta`` lies in the domain."""
        gen = self.generator(x.shape[-1])
        gen_vars = {"params": gen_vars["params"], "batch_stats": gen_vars.get("batch_stats", {})}
        if gen_train:
            g, upd = gen.apply(gen_vars, x, s, train=True, mutable=["batch_stats"])
            gen_bs = upd["batch_stats"]
        else:
            g = gen.apply(gen_vars, x, s, train=False)
            gen_bs = gen_vars.get("batch_stats", {})
        eta = self.eps * g                                                  # eq. 25
        x1 = self._clip(x + eta)

        def f(xx):
            logits, bs = apply_model(state, state.params, xx, train=True, batch_stats=batch_stats)
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).sum(), bs
        g1, bs = jax.grad(f, has_aux=True)(jax.lax.stop_gradient(x1))
        alpha = self.eps if self.alpha is None else self.alpha
        fgsm = jax.lax.stop_gradient(jnp.clip(alpha * jnp.sign(g1), -self.eps, self.eps))
        delta = jnp.clip(eta + fgsm, -self.eps, self.eps)                   # eq. 26
        delta = self._clip(x + delta) - x
        return delta, bs, gen_bs

    def _check_generator(self, gen_params, x):
        """Trace-time check that the state's generator matches this method's architecture."""
        gen = self.generator(x.shape[-1])
        d = jax.ShapeDtypeStruct((1,) + tuple(x.shape[1:]), jnp.float32)
        want = jax.eval_shape(lambda a: gen.init(jax.random.PRNGKey(0), a, a), d)["params"]
        if jax.tree_util.tree_structure(want) != jax.tree_util.tree_structure(gen_params) or any(
                a.shape != b.shape for a, b in zip(jax.tree_util.tree_leaves(want),
                                                   jax.tree_util.tree_leaves(gen_params))):
            raise ValueError(
                f"FGSMSDI.step: the generator in state.extra[{EXTRA_KEY!r}] does not match this method's "
                f"generator (arch={self.generator_arch or self.mode!r}, features={self.generator_features}); "
                f"initialize the state with this method's init_state")

    # -- the step ---------------------------------------------------------------------------
    def _generator_due(self, step):
        if self.mode == "reference" and self.steps_per_epoch is not None:
            step = step % self.steps_per_epoch
        return step % self.k == 0

    def step(self, state: TrainState, batch, key: jax.Array):
        """One FGSM-SDI step (Algorithm 3): generator ascent when due, then target descent.

        ``batch`` is (x, y) with x in the domain; ``key`` is unused (FGSM-SDI is deterministic
        given the state) but kept for the Method protocol. Returns (new_state, metrics) with
        ``loss, acc`` (the target's forward on x + delta_g), ``clean_acc``,
        ``attack_success_rate`` (share of the clean-correct training examples that x + delta_g
        misclassifies, Fig. 27), ``gen_loss`` (the generator's objective before its update, 0 when
        not updated), ``gen_updated`` (1.0 / 0.0) and ``delta_linf``.
        """
        del key
        if EXTRA_KEY not in state.extra:
            raise ValueError("FGSMSDI.step: state.extra has no generator; call method.init_state(state, batch) first")
        x, y = batch
        chex.assert_rank(x, 4)
        chex.assert_rank(y, 1)
        self._check_generator(state.extra[EXTRA_KEY]["params"], x)
        ref = self.mode == "reference"
        smoothing = self.smoothing
        gen_tx = self.gen_tx
        sdi = state.extra[EXTRA_KEY]
        s, clean_logits, bs_clean = self.input_sign(state, x, y)
        bs = bs_clean if ref else state.batch_stats

        def gen_update(operand):
            g, tbs = operand

            def objective(gp):
                delta, tbs1, new_gen_bs = self.perturbation(
                    state, {"params": gp, "batch_stats": g["batch_stats"]}, x, y, s,
                    gen_train=True, batch_stats=tbs)
                logits, tbs2 = apply_model(state, state.params, self._clip(x + delta), train=True,
                                           batch_stats=tbs1 if ref else tbs)
                loss = self._loss(logits, y, smoothing).mean()
                return -loss, (loss, new_gen_bs, tbs2 if ref else tbs)

            grads, (loss, new_gen_bs, new_tbs) = jax.grad(objective, has_aux=True)(g["params"])
            updates, new_opt = gen_tx.update(grads, g["opt_state"], g["params"])
            new_g = {"params": optax.apply_updates(g["params"], updates), "batch_stats": new_gen_bs,
                     "opt_state": new_opt}
            return (new_g, new_tbs), loss.astype(jnp.float32)

        def no_update(operand):
            return operand, jnp.zeros((), jnp.float32)

        due = self._generator_due(state.step)
        (sdi, bs), gen_loss = jax.lax.cond(due, gen_update, no_update, (sdi, bs))

        # the target's step with the (possibly just updated) generator in eval mode
        delta, bs_attack, _ = self.perturbation(state, sdi, x, y, s, gen_train=False, batch_stats=bs)
        x_adv = jax.lax.stop_gradient(self._clip(x + delta))
        bs_in = bs_attack if ref else bs

        def target_loss(params):
            logits, new_bs = apply_model(state, params, x_adv, train=True, batch_stats=bs_in)
            return self._loss(logits, y, smoothing).mean(), (logits, new_bs)

        (loss, (logits, new_bs)), grads = jax.value_and_grad(target_loss, has_aux=True)(state.params)
        new_state = state.apply_gradients(grads, batch_stats=new_bs,
                                          extra={**dict(state.extra), EXTRA_KEY: sdi})

        clean_ok = jnp.argmax(clean_logits, -1) == y
        adv_ok = jnp.argmax(logits, -1) == y
        n_ok = clean_ok.sum()
        asr = jnp.where(n_ok > 0, (clean_ok & ~adv_ok).sum() / jnp.maximum(n_ok, 1), 0.0)
        metrics = {
            "loss": loss,
            "acc": adv_ok.mean(),
            "clean_acc": clean_ok.mean(),
            "attack_success_rate": asr,
            "gen_loss": gen_loss,
            "gen_updated": due.astype(jnp.float32),
            "delta_linf": jnp.max(jnp.abs(delta)),
        }
        return new_state, metrics


def init_sdi_state(model, tx: optax.GradientTransformation, key: jax.Array, input_shape,
                   method: FGSMSDI | None = None) -> TrainState:
    """A TrainState for ``model`` (``advjax.train.create_train_state``) with the generator added."""
    input_shape = tuple(int(d) for d in input_shape)
    if len(input_shape) != 3:
        raise ValueError(f"init_sdi_state: input_shape must be (H, W, C), got {input_shape}")
    method = FGSMSDI() if method is None else method
    k_init, k_run = jax.random.split(key)
    variables = model.init(k_init, jnp.zeros((1,) + input_shape, jnp.float32), train=False)
    state = create_train_state(model, tx, k_run, input_shape=input_shape, variables=variables)
    return method.init_state(state, (jnp.zeros((1,) + input_shape), jnp.zeros((1,), jnp.int32)))


def _register():
    try:
        from advjax.methods.base import register_method
    except ImportError:  # the engine is optional for this module
        return
    register_method("fgsm_sdi", FGSMSDI)
    register_method("sdi", FGSMSDI)


_register()
