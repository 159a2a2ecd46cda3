"""HLDR: latent disparity regularization (Schwartz & Ditzler, "Bolstering Adversarial Robustness with
Latent Disparity Regularization", eq. 1 and 3; fine-tuning pairs D and D_N of §IV).

    x_a = x + eps * sign(grad_x CE(theta, x, y))                           (eq. 1, FGSM)
    L   = (1 - xi) * CE + xi * sum_i ||s_i(x) - s_i(x_a)||_1 / sum_i ||s_i(x)||_1   (eq. 3)

HLDR is not its own training loop: it is :class:`advjax.methods.regularized.Regularized` with

* ``base`` = :class:`FineTuningPairs` -- makes the second member x_a of each fine-tuning pair
  (FGSM at a radius drawn per sample from ``eps`` = {0, 16/255, 32/255}; with ``noise_sigma`` set,
  the noisy pairs (x, x + n), n ~ N(0, sigma), of D_N are one more equally likely kind) and owns
  the (1 - xi)-weighted cross entropy;
* ``regularizer`` = :class:`LatentDisparity` -- xi * :func:`advjax.losses.ldr.latent_disparity`
  on the :func:`advjax.layers.capture` outputs of x and x_a (default: every hidden conv / dense
  output, the logits excluded).

``HLDR.loss`` computes the CE from the logits of the same two capture passes (one training-mode
forward per branch, shared weights, BN statistics threaded clean -> adversarial) instead of running
the base's forward again: two forwards in all, so HLDR costs one forward more than FIMR plus the
FGSM (Table I's comparison).

Sampling the pair kind per sample: the paper's D is the product of the benign set with every eps
(and, for D_N, with one noise draw). We draw the kind uniformly per sample and step, so over an
epoch of ``len(eps)`` passes each (x, eps) pair appears once on average; the protocol driver
(:mod:`advjax.train.cross_validation`) makes an epoch exactly ``len(kinds)`` x the benign samples.

Paper mode (default) vs ``mode="reference"`` (dmschwar/robust-ldr, ``HLDR_VGG_16.py`` and
``fine_tuning_experiment.py``), the deliberate differences:

1. CE: paper ``ce_on="pair"`` -- the mean of CE(x) and CE(x_a) (our reading of "presented as
   training data ... with their benign counterparts"; the paper does not write it out); reference
   ``ce_on="clean"`` -- CE on the clean input only (the Keras loss sees the clean branch's output).
2. The ratio: paper per sample then averaged; reference one ratio over the whole batch and all
   layers (``latent_disparity(mode="reference")``).
3. Layers: paper the learnable-layer outputs (conv / dense, ``kind="learnable"``); reference the
   post-nonlinearity outputs (``kind="activation"``; the code takes each layer after Conv-ReLU-BN).
4. ``kernel_l2=5e-5``: the code's ``regularizers.l2(5e-5)`` on every kernel (0 in the paper).
5. xi: 0.25 in the paper; the code uses 0.5 on CIFAR-10 (set by the experiment).
6. FGSM once on the undefended model (``fgsm_on="pretrained"``: a frozen copy of the variables the
   fine-tuning starts from, stored by ``init_state`` in ``state.extra["pretrained"]``; FGSM is
   deterministic, so this equals precomputing the pairs), in standardized units
   (``eps_scale`` = the data's pixel std: the code adds eps * sign(g) to standardized inputs) and
   without clipping (``clip=False``).
7. BN: the code gives each branch its own BN layers; the adversarial branch's never feed the
   evaluated model. ``mode="reference"`` keeps only the clean branch's running statistics
   (``adv_bn_update=False``); the separate adversarial gamma / beta are NOT reproduced (shared).

The released code's bugs, named here, offered as flags never on by default:

* ``mismatched_pairs=True``: the two Keras generators are shuffled independently, so each clean
  image is paired with ANOTHER image's adversarial version (we roll x_a by one in the batch).
* the adversarial branch's BN (item 7) is partly a bug: its running statistics are never used.
* HGD's loss optimal at D = 0: see :mod:`advjax.methods.hgd` (``clean_input_bug``).
"""
from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from advjax.attacks import FGSM
from advjax.losses.ldr import MODES, hidden_layers, latent_disparity
from advjax.methods import _inner
from advjax.methods.base import AdversarialMethod, box, check_common, eval_apply_fn
from advjax.methods.regularized import Regularized

__all__ = ["FineTuningPairs", "LatentDisparity", "HLDR", "hldr", "fine_tuning_pairs", "PAPER_EPS",
           "check_unit", "kernel_l2_penalty", "store_pretrained"]

#: The paper's training radii (§IV): {0, 16/255, 32/255}.
PAPER_EPS = (0.0, 16 / 255, 32 / 255)
#: The sigma of D_N's noisy pairs and of AGNT (§IV): 32/255.
PAPER_SIGMA = 32 / 255


def check_unit(name: str, what: str, v) -> None:
    """``v`` in [0, 1] (xi, zeta), else a ValueError naming it."""
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 <= float(v) <= 1.0:
        raise ValueError(f"{name}: {what} must be a number in [0, 1] (a convex weight), got {v!r}")


def _check_eps_set(name, eps, sigma, eps_scale):
    if not isinstance(eps, tuple) or not eps:
        raise ValueError(f"{name}: eps must be a non-empty tuple of radii, got {eps!r}")
    for e in eps:
        if isinstance(e, bool) or not isinstance(e, (int, float)) or not 0.0 <= e <= 1.0:
            raise ValueError(f"{name}: every training radius must be in [0, 1] (pixels in [0, 1]; did you pass 16 "
                             f"instead of 16/255?), got {e!r}")
    if sigma is not None and not (isinstance(sigma, (int, float)) and sigma > 0):
        raise ValueError(f"{name}: noise_sigma must be None (pairs D) or > 0 (pairs D_N), got {sigma!r}")
    if not (isinstance(eps_scale, (int, float)) and eps_scale > 0):
        raise ValueError(f"{name}: eps_scale must be > 0, got {eps_scale!r}")


def store_pretrained(state):
    """``state`` with a frozen copy of its variables in ``extra["pretrained"]`` (the undefended model
    the reference code attacks once)."""
    if "pretrained" in state.extra:
        return state
    return state.replace(extra={**state.extra, "pretrained": jax.tree.map(jnp.asarray, state.variables())})


def fine_tuning_pairs(apply_fn, variables, x, y, key, *, eps, noise_sigma=None, domain=(0.0, 1.0),
                      eps_scale=1.0, mismatched_pairs=False):
    """The second members x_a of a batch of fine-tuning pairs (x, x_a): per sample one kind drawn
    uniformly from the radii ``eps`` (FGSM, eq. 1, on ``apply_fn`` / ``variables``) and, when
    ``noise_sigma`` is set, the noise pair x + n (D_N). ``domain=None``: no clipping (reference)."""
    k_kind, k_noise = jax.random.split(key)
    n_kinds = len(eps) + (1 if noise_sigma else 0)
    kind = jax.random.randint(k_kind, (x.shape[0],), 0, n_kinds)
    radii = jnp.asarray(tuple(eps) + ((0.0,) if noise_sigma else ()), x.dtype)[kind] * eps_scale
    radii = radii.reshape((-1,) + (1,) * (x.ndim - 1))
    fgsm = FGSM(eps=float(max(eps)), domain=domain, check_inputs=False).with_eps(radii)
    x_a = fgsm.run(apply_fn, variables, x, y, None)
    if noise_sigma:
        noisy = x + noise_sigma * eps_scale * jax.random.normal(k_noise, x.shape, x.dtype)
        if domain is not None:
            noisy = jnp.clip(noisy, domain[0], domain[1])
        x_a = jnp.where((kind == len(eps)).reshape(radii.shape), noisy, x_a)
    if mismatched_pairs:
        x_a = jnp.roll(x_a, 1, axis=0)
    return x_a


def kernel_l2_penalty(params, coeff: float):
    """coeff * sum of squared conv / dense kernels (Keras ``regularizers.l2``)."""
    if not coeff:
        return jnp.zeros((), jnp.float32)
    leaves = jax.tree_util.tree_flatten_with_path(params)[0]
    return coeff * sum(jnp.sum(jnp.square(v)) for path, v in leaves
                       if getattr(path[-1], "key", None) == "kernel")


@dataclasses.dataclass(frozen=True)
class FineTuningPairs(AdversarialMethod):
    """Makes the pairs (x, x_a) of D (or D_N) and owns HLDR's CE part, ``ce_weight`` * CE.

    ``ce_on``: "pair" (mean of CE(x) and CE(x_a)) or "clean". ``fgsm_on``: "model" (white-box FGSM
    on the model being fine-tuned, eq. 1) or "pretrained" (on the frozen starting model).
    """
    eps: tuple = PAPER_EPS
    noise_sigma: float | None = None
    ce_weight: float = 1.0
    ce_on: str = "pair"
    fgsm_on: str = "model"
    eps_scale: float = 1.0
    clip: bool = True
    mismatched_pairs: bool = False
    domain: Any = "auto"

    def __post_init__(self):
        object.__setattr__(self, "eps", tuple(self.eps) if isinstance(self.eps, (list, tuple)) else self.eps)
        _check_eps_set("hldr", self.eps, self.noise_sigma, self.eps_scale)
        check_common("hldr", domain=self.domain)
        if self.ce_on not in ("pair", "clean"):
            raise ValueError(f"hldr: ce_on must be 'pair' or 'clean', got {self.ce_on!r}")
        if self.fgsm_on not in ("model", "pretrained"):
            raise ValueError(f"hldr: fgsm_on must be 'model' or 'pretrained', got {self.fgsm_on!r}")

    @property
    def kinds(self) -> int:
        return len(self.eps) + (1 if self.noise_sigma else 0)

    def init_state(self, state, batch):
        return store_pretrained(state) if self.fgsm_on == "pretrained" else state

    def perturb(self, state, x, y, key):
        variables = state.extra["pretrained"] if self.fgsm_on == "pretrained" else state.variables()
        return fine_tuning_pairs(eval_apply_fn(state), variables, x, y, key, eps=self.eps,
                                 noise_sigma=self.noise_sigma, domain=box(self.domain) if self.clip else None,
                                 eps_scale=self.eps_scale, mismatched_pairs=self.mismatched_pairs)

    def ce(self, logits_clean, logits_adv, y):
        ce_c = jnp.mean(_inner.cross_entropy(logits_clean, y, 0.0))
        if self.ce_on == "clean":
            return self.ce_weight * ce_c
        return self.ce_weight * 0.5 * (ce_c + jnp.mean(_inner.cross_entropy(logits_adv, y, 0.0)))

    def loss(self, state, params, x, x_adv, y, key):
        from advjax.methods.base import forward

        logits_c, bs = forward(state, params, x)
        logits_a, bs = forward(state, params, x_adv, batch_stats=bs)
        return self.ce(logits_c, logits_a, y), (bs, {"acc": _inner.accuracy(logits_a, y),
                                                     "clean_acc": _inner.accuracy(logits_c, y)})


@dataclasses.dataclass(frozen=True)
class LatentDisparity:
    """``regularizer(feats_clean, feats_adv) = xi * latent_disparity(...)`` (eq. 3's second term)."""
    xi: float = 0.25
    layers: Any = None
    mode: str = "paper"

    def __post_init__(self):
        check_unit("hldr", "xi", self.xi)
        if self.mode not in MODES:
            raise ValueError(f"hldr: unknown mode {self.mode!r}; use one of {MODES}")
        if isinstance(self.layers, list):
            object.__setattr__(self, "layers", tuple(self.layers))

    def __call__(self, feats_clean, feats_adv):
        return self.xi * latent_disparity(feats_clean, feats_adv, self.layers, mode=self.mode)


@dataclasses.dataclass(frozen=True)
class HLDR(Regularized):
    """``Regularized(FineTuningPairs, LatentDisparity)`` with one capture pass per branch (see the
    module docstring). Metrics: ``ce``, ``reg`` (xi * LD), ``ld`` (LD), ``acc`` (on x_a),
    ``clean_acc``."""
    kernel_l2: float = 0.0
    adv_bn_update: bool = True
    name: str = "HLDR"

    def __post_init__(self):
        super().__post_init__()
        if not isinstance(self.base, FineTuningPairs) or not isinstance(self.regularizer, LatentDisparity):
            raise ValueError("HLDR: base must be FineTuningPairs and regularizer LatentDisparity; "
                             "use Regularized(...) for other compositions")

    def init_state(self, state, batch):
        from advjax import layers as layers_mod

        names = layers_mod.names(state.model, kind=self.kind)
        hidden_layers(names, self.regularizer.layers)  # a layer the model lacks: ValueError listing its layers
        return self.base.init_state(state, batch)

    def loss(self, state, params, x, x_adv, y, key):
        from advjax.layers import capture

        (logits_c, f_c), bs = capture(state.model, state.variables(params=params), x, train=True, kind=self.kind)
        (logits_a, f_a), bs_a = capture(state.model, state.variables(params=params, batch_stats=bs or None), x_adv,
                                        train=True, kind=self.kind)
        ce = self.base.ce(logits_c, logits_a, y)
        reg = self.regularizer(f_c, f_a)
        loss = ce + reg + kernel_l2_penalty(params, self.kernel_l2)
        new_bs = bs_a if self.adv_bn_update else bs
        return loss, (new_bs, {"acc": _inner.accuracy(logits_a, y), "clean_acc": _inner.accuracy(logits_c, y),
                               "ce": ce, "reg": reg, "ld": reg / max(self.regularizer.xi, 1e-12)})


def hldr(xi: float = 0.25, eps=PAPER_EPS, noise_sigma: float | None = None, layers=None, mode: str = "paper",
         *, ce_on: str | None = None, fgsm_on: str | None = None, eps_scale: float = 1.0, clip: bool | None = None,
         kernel_l2: float | None = None, mismatched_pairs: bool = False, domain: Any = "auto") -> HLDR:
    """Build HLDR. ``mode="reference"`` switches every deliberate difference of the released code
    (see the module docstring) unless that setting is given explicitly."""
    if mode not in MODES:
        raise ValueError(f"hldr: unknown mode {mode!r}; use one of {MODES}")
    check_unit("hldr", "xi", xi)
    ref = mode == "reference"
    pairs = FineTuningPairs(eps=tuple(eps) if isinstance(eps, (list, tuple)) else eps, noise_sigma=noise_sigma,
                            ce_weight=1.0 - xi, ce_on=ce_on or ("clean" if ref else "pair"),
                            fgsm_on=fgsm_on or ("pretrained" if ref else "model"), eps_scale=eps_scale,
                            clip=(not ref) if clip is None else clip, mismatched_pairs=mismatched_pairs, domain=domain)
    reg = LatentDisparity(xi=xi, layers=tuple(layers) if isinstance(layers, list) else layers, mode=mode)
    return HLDR(base=pairs, regularizer=reg, kind="activation" if ref else "learnable",
                kernel_l2=(5e-5 if ref else 0.0) if kernel_l2 is None else kernel_l2,
                adv_bn_update=not ref, name="HLDR" + ("-ref" if ref else ""))

