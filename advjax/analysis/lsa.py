"""Layer Sustainability Analysis (LSA), Khalooei et al., "Layer-wise Regularized Adversarial
Training using Layers Sustainability Analysis".

* :func:`layer_cms` -- the comparison measure CM (eq. 11) of every layer for a clean batch and its
  perturbed copy (per sample and layer in paper mode, one batch ratio per layer in reference mode).
* :func:`most_vulnerable_layers` -- Algorithm 1: mu and sigma over M samples x L layers (eq. 12); a
  layer is vulnerable when ``CM_l - mu > eta * sigma``; the MVL list is sorted by CM (largest first).
* :func:`mvl_versus_eta` / :func:`format_mvl_versus_eta` -- how the MVL list changes with eta.
* :func:`perturbation_cms` -- LSA under adversarial (FGSM, PGD) and statistical (Gaussian, salt,
  pepper, speckle) perturbations, as in the paper's Fig. 4 and 5.
* :func:`algorithm2` -- Algorithm 2 end to end: train (or take) a model, attack M test samples,
  compute the CMs and return the MVL list.

Everything works on a ``features_fn(variables, x) -> (logits, {layer name: output})`` in layer
order (``advjax.layers.features_fn``); "layer l" is an index into that ordered dict.

Paper vs reference mode: see :mod:`advjax.losses.lsa`. In reference mode (the authors' code) there
is one CM value per layer for the whole batch, so mu and sigma are taken over the L layer values.
"""
from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from advjax.losses.lsa import layer_comparison_measures

Array = Any

# ----------------------------------------------------------------------------------------------
# Perturbations: the library's attacks (advjax.attacks), plus statistical noise for the unbounded
# Moon domain, all with the attack call shape ``perturb(apply_fn, variables, x, y, key) -> x_pert``.
# ----------------------------------------------------------------------------------------------


def _clip(x, domain):
    return x if domain is None else jnp.clip(x, domain[0], domain[1])


@dataclasses.dataclass(frozen=True)
class StatisticalNoise:
    """Statistical perturbations of the paper's Fig. 4/5: gaussian (x + s*n), speckle (x + x*s*n),
    salt / pepper (a fraction ``amount`` of the entries set to the domain's max / min; for an
    unbounded domain the batch max / min of x)."""
    kind: str
    amount: float = 0.1
    domain: tuple[float, float] | None = (0.0, 1.0)

    def __post_init__(self):
        if self.kind not in ("gaussian", "speckle", "salt", "pepper"):
            raise ValueError(f"unknown noise kind {self.kind!r}; use gaussian, speckle, salt or pepper")
        if self.amount < 0:
            raise ValueError(f"noise amount must be >= 0, got {self.amount}")

    def __call__(self, apply_fn, variables, x, y, key):
        del apply_fn, variables, y
        if self.kind == "gaussian":
            return _clip(x + self.amount * jax.random.normal(key, x.shape, x.dtype), self.domain)
        if self.kind == "speckle":
            return _clip(x + x * self.amount * jax.random.normal(key, x.shape, x.dtype), self.domain)
        hit = jax.random.bernoulli(key, self.amount, x.shape)
        if self.kind == "salt":
            v = self.domain[1] if self.domain is not None else jnp.max(x)
        else:
            v = self.domain[0] if self.domain is not None else jnp.min(x)
        return jnp.where(hit, jnp.asarray(v, x.dtype), x)


def default_perturbations(eps: float, domain=(0.0, 1.0), noise_std: float | None = None,
                          noise_amount: float = 0.1) -> dict[str, Callable]:
    """The six perturbations of the paper's LSA figures: FGSM, PGD, Gaussian, salt, pepper, speckle.

    Gaussian and speckle noise have standard deviation ``noise_std`` (default: eps); salt and
    pepper hit a fraction ``noise_amount`` of the entries.

    FGSM and PGD come from ``advjax.attacks``; the noise is the library's for a bounded domain and
    ``StatisticalNoise`` for the unbounded Moon features (the library's salt / pepper need a box)."""
    from advjax.attacks import get_attack

    std = eps if noise_std is None else noise_std
    kinds = ("gaussian", "salt", "pepper", "speckle")
    adv = {"FGSM": get_attack("fgsm", eps=eps, domain=domain), "PGD": get_attack("pgd", eps=eps, domain=domain)}
    if domain is not None:
        stat = {k.capitalize(): get_attack(k, eps=std if k in ("gaussian", "speckle") else noise_amount,
                                           domain=domain) for k in kinds}
    else:
        stat = {k.capitalize(): StatisticalNoise(k, std if k in ("gaussian", "speckle") else noise_amount, domain)
                for k in kinds}
    return {**adv, **stat}


# ----------------------------------------------------------------------------------------------
# CM and MVL (Algorithm 1)
# ----------------------------------------------------------------------------------------------


def layer_cms(features_fn: Callable, variables, x, x_pert, mode: str = "paper"):
    """CM (eq. 11) of every layer: returns (layer names, CMs) with CMs of shape [N, L] (paper mode)
    or [L] (reference mode: one Frobenius ratio over the batch per layer)."""
    if x.shape != x_pert.shape:
        raise ValueError(f"layer_cms: clean {x.shape} and perturbed {x_pert.shape} inputs differ in shape")
    _, fc = features_fn(variables, x)
    _, fa = features_fn(variables, x_pert)
    return list(fc.keys()), layer_comparison_measures(fc, fa, mode=mode)


@dataclasses.dataclass(frozen=True)
class MVL:
    """Result of Algorithm 1.

    layers: indices of the vulnerable layers, sorted by CM (largest first) -- the MVL list.
    names: their names. cm: the per-layer CM (mean over the M samples), all layers.
    mu, sigma: eq. 12 over the M x L values. eta: the cut-off.
    """
    layers: tuple[int, ...]
    names: tuple[str, ...]
    cm: tuple[float, ...]
    all_names: tuple[str, ...]
    mu: float
    sigma: float
    eta: float

    def __str__(self):
        rows = [f"mu={self.mu:.4f} sigma={self.sigma:.4f} eta={self.eta:g} "
                f"(vulnerable: CM - mu > eta*sigma = {self.eta * self.sigma:.4f})"]
        for i, (n, c) in enumerate(zip(self.all_names, self.cm)):
            mark = " <- MVL" if i in self.layers else ""
            rows.append(f"  L{i:<3d} {n:<30s} CM={c:.4f}{mark}")
        rows.append("MVL (sorted by CM): " + (", ".join(f"L{i}" for i in self.layers) or "(empty)"))
        return "\n".join(rows)


def most_vulnerable_layers(cms, eta: float = 1.0, names: Sequence[str] | None = None) -> MVL:
    """Algorithm 1 of the LSA paper.

    Args:
      cms: CM values, shape [M, L] (M samples x L layers) or [L] (one value per layer).
      eta: cut-off; layer l is vulnerable when ``mean_m CM[m, l] - mu > eta * sigma``.
      names: optional layer names.
    mu and sigma are the mean and (population) standard deviation over all M x L values (eq. 12).
    """
    c = np.asarray(cms, dtype=np.float64)
    if c.ndim == 1:
        c = c[None, :]
    if c.ndim != 2 or c.shape[1] == 0:
        raise ValueError(f"most_vulnerable_layers: cms must be [M, L] or [L], got shape {np.shape(cms)}")
    if not np.all(np.isfinite(c)):
        raise ValueError("most_vulnerable_layers: cms contain NaN or inf")
    mu, sigma = float(c.mean()), float(c.std())
    per_layer = c.mean(axis=0)
    names = tuple(names) if names is not None else tuple(f"layer{i}" for i in range(c.shape[1]))
    if len(names) != c.shape[1]:
        raise ValueError(f"most_vulnerable_layers: {len(names)} names for {c.shape[1]} layers")
    vul = [i for i in range(c.shape[1]) if per_layer[i] - mu > eta * sigma]
    vul.sort(key=lambda i: -per_layer[i])
    return MVL(layers=tuple(vul), names=tuple(names[i] for i in vul), cm=tuple(float(v) for v in per_layer),
               all_names=names, mu=mu, sigma=sigma, eta=float(eta))


def mvl_versus_eta(cms, etas: Sequence[float] = (0.0, 0.25, 0.5, 1.0, 1.5, 2.0), names=None) -> list[MVL]:
    """The MVL list for each eta (a larger eta keeps fewer, more vulnerable layers)."""
    return [most_vulnerable_layers(cms, e, names) for e in etas]


def format_mvl_versus_eta(mvls: Sequence[MVL]) -> str:
    """A markdown table: eta -> MVL list."""
    lines = ["| eta | eta*sigma | MVL (sorted by CM) |", "|---|---|---|"]
    for m in mvls:
        lst = ", ".join(f"L{i}" for i in m.layers) or "(empty)"
        lines.append(f"| {m.eta:g} | {m.eta * m.sigma:.4f} | {lst} |")
    return "\n".join(lines)


@functools.lru_cache(maxsize=64)
def _cms_program(features_fn: Callable, perts: tuple, mode: str):
    """One jitted program: {perturbation: per-layer CMs} for (variables, x, y, key); cached so
    that analysing several models of the same architecture compiles once."""
    apply_fn = lambda v, z: features_fn(v, z)[0]  # noqa: E731

    def run(variables, x, y, key):
        out = {}
        for i, (pname, pert) in enumerate(perts):
            xp = pert(apply_fn, variables, x, y, jax.random.fold_in(key, i))
            _, fc = features_fn(variables, x)
            _, fa = features_fn(variables, xp)
            out[pname] = layer_comparison_measures(fc, fa, mode=mode)
        return out

    return jax.jit(run)


def _names(features_fn, variables, x) -> list[str]:
    return list(jax.eval_shape(lambda v, z: features_fn(v, z)[1], variables, x[:1]).keys())


def perturbation_cms(features_fn: Callable, variables, x, y, key, perturbations: Mapping[str, Callable],
                     mode: str = "paper") -> tuple[list[str], dict[str, np.ndarray]]:
    """Per-layer CM (mean over the samples) for each perturbation (the curves of Fig. 4/5).

    Perturbations are ``perturb(apply_fn, variables, x, y, key) -> x_pert`` (attacks or noise).
    Returns (layer names, {perturbation name: array [L]}). One compile per (features_fn,
    perturbations, mode), reused across models."""
    x, y = jnp.asarray(x), jnp.asarray(y)
    try:
        prog = _cms_program(features_fn, tuple(perturbations.items()), mode)
    except TypeError:  # unhashable perturbation: no caching
        prog = _cms_program.__wrapped__(features_fn, tuple(perturbations.items()), mode)
    res = prog(variables, x, y, key)
    out = {}
    for k in perturbations:
        c = np.asarray(res[k])
        out[k] = c.mean(axis=0) if c.ndim == 2 else c
    return _names(features_fn, variables, x), out


def algorithm2(features_fn: Callable, variables_or_train: Any, x_test, y_test, attack: Callable, key,
               num_samples: int = 1000, eta: float = 1.0, mode: str = "paper"):
    """Algorithm 2 of the LSA paper, end to end.

    Args:
      features_fn: ``(variables, x) -> (logits, {name: output})``.
      variables_or_train: trained variables, or a zero-argument callable that trains the model and
        returns them ("train (or load) a model").
      x_test, y_test: the test data; M = ``num_samples`` random samples of it are attacked.
      attack: ``attack(apply_fn, variables, x, y, key) -> x_adv``.
    Returns: (MVL, cms) with cms the [M, L] (or [L]) comparison measures.
    """
    variables = variables_or_train() if callable(variables_or_train) else variables_or_train
    n = x_test.shape[0]
    if num_samples < 1:
        raise ValueError(f"algorithm2: num_samples must be >= 1, got {num_samples}")
    k_sel, k_att = jax.random.split(key)
    idx = np.asarray(jax.random.permutation(k_sel, n))[: min(num_samples, n)]
    x, y = jnp.asarray(x_test)[idx], jnp.asarray(y_test)[idx]
    try:
        prog = _cms_program(features_fn, (("attack", attack),), mode)
    except TypeError:  # unhashable attack: no caching
        prog = _cms_program.__wrapped__(features_fn, (("attack", attack),), mode)
    cms = np.asarray(prog(variables, x, y, k_att)["attack"])
    return most_vulnerable_layers(cms, eta, _names(features_fn, variables, x)), cms
