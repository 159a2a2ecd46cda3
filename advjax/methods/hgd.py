"""HGD training: the feature guided denoiser's loss (Liao et al. 2018, FGD; Schwartz & Ditzler §V):

    min_D  || s_f(x) - s_f(x_a - D(x_a)) ||_1,     the target f frozen

where s_f is the output of the target's final convolutional layer (``layer=None``; any layer name
or index of the target's :func:`advjax.layers.capture` order can be given, e.g. the penultimate
dense layer, which the paper reports made no difference), x_a the second member of a fine-tuning
pair of D or D_N (:func:`advjax.methods.hldr.fine_tuning_pairs`, the same pairs HLDR uses). The
state's model is :class:`advjax.models.hgd.HGDDefended` (denoiser then target): the pairs' FGSM is
white-box through the denoiser (``fgsm_on="model"``) or on the frozen starting model
(``"pretrained"``, i.e. the undefended target behind an untrained denoiser: the code's transfer
setting). The target's parameters get exactly zero gradient (``stop_gradient``) and its batch norm
runs in eval mode, so an optax step leaves it unchanged; the denoiser's batch norm trains.

Reduction: paper mode averages the per-sample L1 norm over the batch; ``mode="reference"`` sums it
over the batch (the code's ``K.sum``). The code's bug, offered as a flag never on by default:
``clean_input_bug=True`` subtracts D(x_a) from the CLEAN input (``duOutput = x - D(x_a)``), so the
loss is minimized by D = 0 and the denoiser learns nothing useful. (The code also compares the
target's log-softmax outputs, not the final conv layer the paper names; use ``layer=-1``.)
"""
from __future__ import annotations

import dataclasses
from typing import Any

import jax.numpy as jnp
from jax import lax

from advjax.methods import _inner
from advjax.methods.base import AdversarialMethod, box, check_common, eval_apply_fn
from advjax.methods.hldr import PAPER_EPS, _check_eps_set, fine_tuning_pairs, store_pretrained

__all__ = ["HGD", "final_conv_layer"]


def final_conv_layer(target) -> str:
    """Name (in ``capture`` order) of the target's last ``nn.Conv`` output."""
    from advjax import layers as layers_mod

    names = layers_mod.names(target, kind="learnable")
    convs = [n for n in names if "conv" in n.split("/")[-1].split("#")[0].lower()]
    if not convs:
        raise ValueError(f"HGD: the target has no conv layer (layers: {names}); pass layer=...")
    return convs[-1]


@dataclasses.dataclass(frozen=True)
class HGD(AdversarialMethod):
    eps: tuple = PAPER_EPS
    noise_sigma: float | None = None
    layer: Any = None
    mode: str = "paper"
    fgsm_on: str = "model"
    eps_scale: float = 1.0
    clip: bool = True
    clean_input_bug: bool = False
    domain: Any = "auto"
    name: str = "HGD"

    def __post_init__(self):
        object.__setattr__(self, "eps", tuple(self.eps) if isinstance(self.eps, (list, tuple)) else self.eps)
        _check_eps_set("hgd", self.eps, self.noise_sigma, self.eps_scale)
        check_common("hgd", domain=self.domain)
        if self.mode not in ("paper", "reference"):
            raise ValueError(f"hgd: unknown mode {self.mode!r}; use 'paper' or 'reference'")
        if self.fgsm_on not in ("model", "pretrained"):
            raise ValueError(f"hgd: fgsm_on must be 'model' or 'pretrained', got {self.fgsm_on!r}")

    def _layer(self, target):
        from advjax import layers as layers_mod

        if self.layer is None:
            return final_conv_layer(target)
        names = layers_mod.names(target, kind="learnable")
        if isinstance(self.layer, int):
            if not -len(names) <= self.layer < len(names):
                raise ValueError(f"hgd: layer index {self.layer} out of range; the target has {len(names)} layers: {names}")
            return names[self.layer]
        if self.layer not in names:
            raise ValueError(f"hgd: unknown layer {self.layer!r}; the target has: {names}")
        return self.layer

    def init_state(self, state, batch):
        from advjax.models.hgd import HGDDefended

        if not isinstance(state.model, HGDDefended):
            raise ValueError(f"hgd: the state's model must be an advjax.models.hgd.HGDDefended (denoiser then "
                             f"target), got {type(state.model).__name__}; build it with hgd_defended(target)")
        self._layer(state.model.target)
        return store_pretrained(state) if self.fgsm_on == "pretrained" else state

    def perturb(self, state, x, y, key):
        variables = state.extra["pretrained"] if self.fgsm_on == "pretrained" else state.variables()
        return fine_tuning_pairs(eval_apply_fn(state), variables, x, y, key, eps=self.eps,
                                 noise_sigma=self.noise_sigma, domain=box(self.domain) if self.clip else None,
                                 eps_scale=self.eps_scale)

    def loss(self, state, params, x, x_adv, y, key):
        from advjax.layers import capture

        model = state.model
        layer = self._layer(model.target)
        p_t = lax.stop_gradient(params["target"])
        bs = state.batch_stats
        t_vars = {"params": p_t, **({"batch_stats": bs["target"]} if bs and "target" in bs else {})}
        d_vars = {"params": params["denoiser"], **({"batch_stats": bs["denoiser"]} if bs and "denoiser" in bs else {})}
        _, f_clean = capture(model.target, t_vars, x)
        noise, mutated = model.denoiser.apply(d_vars, x_adv, train=True, mutable=["batch_stats"])
        src = x if self.clean_input_bug else x_adv
        x_hat = src - noise
        if model.clip:
            x_hat = jnp.clip(x_hat, 0.0, 1.0)
        logits_hat, f_hat = capture(model.target, t_vars, x_hat)
        diff = jnp.abs(f_clean[layer] - f_hat[layer]).reshape(x.shape[0], -1).sum(axis=1)
        loss = jnp.mean(diff) if self.mode == "paper" else jnp.sum(diff)
        new_bs = dict(bs) if bs else {}
        if "batch_stats" in mutated:
            new_bs["denoiser"] = mutated["batch_stats"]
        return loss, (new_bs, {"acc": _inner.accuracy(logits_hat, y), "feature_l1": jnp.mean(diff)})
