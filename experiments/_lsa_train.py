"""A fused trainer for the LSA reproductions: every AT-LR variant of a base method trained at once.

For Table 2 the variants of one base method (no LR, LR-L0, LR-L1, LR-L2) differ only in the
gamma vector of the AT-LR regularizer (eq. 13-15), so they are trained side by side with
``jax.vmap`` over that vector: one compiled program per base method trains all its variants for
all epochs (``lax.scan`` over epochs and batches). All variants start from the same initial
weights and see the same batches and the same attack noise, so a difference between a base
method and its LR variant comes from the regularizer alone.

Library path (default): each variant is ``at_lr(engine_method(base), layers, gamma_row)`` -- the
engine's ``AdversarialMethod`` (advjax.methods) wrapped by ``Regularized`` -- stepped with its own
``step(state, batch, key)`` inside the scan. Fallback path (engine not importable, or no flax
module given): compact functional forms of the same methods, for models without batch norm, with an
optional unbounded input domain (the Moon features, ``domain=None``):

* ``normal``   -- CE on clean data.
* ``at_fgsm``  -- Goodfellow et al.: 0.5 CE(x) + 0.5 CE(x_fgsm).
* ``pgd``      -- Madry et al.: CE(x_pgd), L-inf PGD with random start.
* ``trades``   -- Zhang et al.: CE(x) + beta KL(p(x) || p(x_adv)), x_adv maximizes the KL.
* ``fast``     -- Wong et al. (FGSM-RS): uniform start, one step of 1.25 eps, CE(x_adv).
* ``apgd``     -- AT with an APGD-CE adversary when ``advjax.attacks`` provides one, else PGD
  (the fallback is reported in the experiment's output).

plus ``sum_l gamma_l CM_l(phi_l(x), phi_l(x_adv))`` (advjax.losses.lsa.lsa_lr, paper mode).
"""
from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from advjax.losses.lsa import lsa_lr

BASE_METHODS = ("normal", "at_fgsm", "pgd", "trades", "fast", "apgd")
PAPER_NAMES = {"normal": "Normal", "at_fgsm": "AT-FGSM", "pgd": "AT-PGD", "trades": "TRADES",
               "fast": "FAST", "apgd": "AT-APGD"}


# --------------------------------------------------------------------------- models


class _MLP(nn.Module):
    """Private fallback for Model A (MLP 100-100-100, ELU) when advjax.models is not available."""
    num_classes: int = 2
    hidden: tuple[int, ...] = (100, 100, 100)

    @nn.compact
    def __call__(self, x, train: bool = False):
        for h in self.hidden:
            x = nn.elu(nn.Dense(h)(x))
        return nn.Dense(self.num_classes)(x)


def _flax_features_fn(model):
    """(variables, x) -> (logits, {name: output of each Dense/Conv}) via capture_intermediates."""

    def filt(mdl, method_name):
        return isinstance(mdl, (nn.Dense, nn.Conv)) and method_name == "__call__"

    def features_fn(variables, x):
        logits, state = model.apply(variables, x, capture_intermediates=filt, mutable=["intermediates"])
        feats = {}

        def walk(prefix, d):
            for k, v in d.items():
                if k == "__call__":
                    feats[prefix] = v[0]
                elif isinstance(v, dict) or hasattr(v, "items"):
                    walk(f"{prefix}/{k}" if prefix else k, v)

        walk("", state["intermediates"])
        return logits, feats

    return features_fn


def model_fns(name: str, num_classes: int, input_shape: tuple[int, ...]):
    """(init_fn(key) -> variables, features_fn, source, module) for a model of the registry.

    Uses advjax.models / advjax.layers when they are importable; Model A has a private fallback."""
    try:
        from advjax.layers import features_fn as lib_features_fn  # type: ignore
        from advjax.models import get_model, init_variables  # type: ignore

        model = get_model(name, num_classes=num_classes)
        init = lambda key: init_variables(model, key)  # noqa: E731
        return init, lib_features_fn(model, kind="learnable"), "advjax.models + advjax.layers", model
    except (ImportError, AttributeError):
        if name != "model_a":
            raise
    model = _MLP(num_classes=num_classes)
    init = lambda key: model.init(key, jnp.zeros((1,) + tuple(input_shape)))  # noqa: E731
    return init, _flax_features_fn(model), "private fallback MLP (advjax.models not available)", model


# --------------------------------------------------------------------------- attacks (traced eps)


def _clip(x, domain):
    return x if domain is None else jnp.clip(x, domain[0], domain[1])


def _ce(logits, y):
    return -jnp.sum(jax.nn.log_softmax(logits) * jax.nn.one_hot(y, logits.shape[-1]), axis=-1)


def _kl(p_logits, q_logits):
    lp, lq = jax.nn.log_softmax(p_logits), jax.nn.log_softmax(q_logits)
    return jnp.sum(jnp.exp(lp) * (lp - lq), axis=-1)


def pgd_linf(logits_fn, x, y, key, eps, steps: int, alpha=None, random_start=True, domain=None):
    """L-inf PGD on CE; eps may be traced. steps=1, alpha=eps, random_start=False is FGSM."""
    alpha = eps if alpha is None and steps == 1 else (2.5 * eps / steps if alpha is None else alpha)
    loss = lambda z: jnp.sum(_ce(logits_fn(z), y))  # noqa: E731
    z = x
    if random_start:
        z = _clip(x + jax.random.uniform(key, x.shape, x.dtype, -1.0, 1.0) * eps, domain)
    for _ in range(steps):
        z = z + alpha * jnp.sign(jax.grad(loss)(z))
        z = _clip(x + jnp.clip(z - x, -eps, eps), domain)
    return jax.lax.stop_gradient(z)


def _apgd_or_pgd(logits_fn, x, y, key, eps, steps, domain):
    return pgd_linf(logits_fn, x, y, key, eps, steps, domain=domain)


# --------------------------------------------------------------------------- training


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    eps: float = 0.3            # AT eps (feature units on Moon)
    epochs: int = 100
    batch_size: int = 128
    lr: float = 1e-3            # Adam
    pgd_steps: int = 10
    trades_beta: float = 6.0
    domain: tuple[float, float] | None = None
    optimizer: str = "adam"     # "adam" or "sgd" (momentum 0.9, weight decay 5e-4)


def make_optimizer(cfg: TrainConfig):
    if cfg.optimizer == "adam":
        return optax.adam(cfg.lr)
    if cfg.optimizer == "sgd":
        return optax.chain(optax.add_decayed_weights(5e-4), optax.sgd(cfg.lr, momentum=0.9))
    raise ValueError(f"unknown optimizer {cfg.optimizer!r}; use 'adam' or 'sgd'")


def _perturb(base: str, logits_fn, x, y, key, cfg: TrainConfig):
    eps = cfg.eps
    if base == "at_fgsm":
        return pgd_linf(logits_fn, x, y, key, eps, 1, alpha=eps, random_start=False, domain=cfg.domain)
    if base == "pgd":
        return pgd_linf(logits_fn, x, y, key, eps, cfg.pgd_steps, domain=cfg.domain)
    if base == "apgd":
        return _apgd_or_pgd(logits_fn, x, y, key, eps, cfg.pgd_steps, cfg.domain)
    if base == "fast":
        return pgd_linf(logits_fn, x, y, key, eps, 1, alpha=1.25 * eps, random_start=True, domain=cfg.domain)
    if base == "trades":
        p_clean = jax.lax.stop_gradient(logits_fn(x))
        z = x + 0.001 * jax.random.normal(key, x.shape, x.dtype)
        alpha = 2.5 * eps / cfg.pgd_steps
        loss = lambda q: jnp.sum(_kl(p_clean, logits_fn(q)))  # noqa: E731
        for _ in range(cfg.pgd_steps):
            z = z + alpha * jnp.sign(jax.grad(loss)(z))
            z = _clip(x + jnp.clip(z - x, -eps, eps), cfg.domain)
        return jax.lax.stop_gradient(z)
    raise ValueError(f"unknown base method {base!r}; known: {BASE_METHODS}")


def make_loss(base: str, features_fn, cfg: TrainConfig, layers: tuple[int, ...]):
    """loss(params_vars, gammas, x, y, key) -> scalar: the base method's loss + AT-LR term."""

    def loss(variables, gammas, x, y, key):
        logits_fn = lambda z: features_fn(variables, z)[0]  # noqa: E731
        if base == "normal":
            return jnp.mean(_ce(logits_fn(x), y))
        x_adv = _perturb(base, logits_fn, x, y, key, cfg)  # returns a stop_gradient'ed x_adv
        lc, fc = features_fn(variables, x)
        la, fa = features_fn(variables, x_adv)
        if base == "at_fgsm":
            j = 0.5 * jnp.mean(_ce(lc, y)) + 0.5 * jnp.mean(_ce(la, y))
        elif base == "trades":
            j = jnp.mean(_ce(lc, y)) + cfg.trades_beta * jnp.mean(_kl(lc, la))
        else:
            j = jnp.mean(_ce(la, y))
        reg = lsa_lr(layers, gammas, mode="paper")(fc, fa) if layers else 0.0
        return j + reg

    return loss


def engine_method(base: str, cfg: TrainConfig):
    """The engine's AdversarialMethod for ``base`` with the experiment's settings."""
    alpha = 2.5 * cfg.eps / cfg.pgd_steps
    if base == "normal":
        from advjax.methods.standard import Standard
        return Standard()
    if base == "at_fgsm":
        from advjax.methods.at_fgsm import ATFGSM
        return ATFGSM(eps=cfg.eps, domain=cfg.domain)
    if base == "pgd":
        from advjax.methods.pgd_at import PGDAT
        return PGDAT(eps=cfg.eps, alpha=alpha, steps=cfg.pgd_steps, domain=cfg.domain)
    if base == "trades":
        from advjax.methods.trades import TRADES
        return TRADES(beta=cfg.trades_beta, eps=cfg.eps, alpha=alpha, steps=cfg.pgd_steps, domain=cfg.domain)
    if base == "fast":
        from advjax.methods.fast import FGSMRS
        return FGSMRS(eps=cfg.eps, domain=cfg.domain)
    if base == "apgd":
        from advjax.methods.apgd_at import APGDAT
        return APGDAT(eps=cfg.eps, steps=cfg.pgd_steps, domain=cfg.domain)
    raise ValueError(f"unknown base method {base!r}; known: {BASE_METHODS}")


def engine_available() -> bool:
    try:
        import advjax.methods.at_lr  # noqa: F401
        import advjax.train.state  # noqa: F401
        return True
    except ImportError:
        return False


def train_variants(base: str, init_fn, features_fn, x_train, y_train, gammas, layers: tuple[int, ...],
                   cfg: TrainConfig, key, model=None):
    """Train V variants (rows of ``gammas`` [V, len(layers)]) of ``base`` at once; one compile.

    With ``model`` (a flax Module) and the engine importable, each variant is the engine's method
    ``at_lr(engine_method(base), layers, gammas[v])`` (``Regularized``) stepped with its own
    ``step(state, batch, key)`` -- the library path. Otherwise the private losses of this module.
    Returns the stacked variables (leading axis V) and the per-epoch mean loss [V, epochs]."""
    x_train = jnp.asarray(x_train, jnp.float32)
    y_train = jnp.asarray(y_train, jnp.int32)
    n = x_train.shape[0]
    steps = n // cfg.batch_size
    if steps < 1:
        raise ValueError(f"train_variants: {n} training samples < batch size {cfg.batch_size}")
    gammas = jnp.asarray(gammas, jnp.float32)
    if gammas.ndim != 2 or (layers and gammas.shape[1] != len(layers)):
        raise ValueError(f"gammas must be [V, {len(layers)}], got {gammas.shape}")
    tx = make_optimizer(cfg)
    k_init, k_train = jax.random.split(key)
    use_engine = model is not None and engine_available()

    if use_engine:
        from advjax.methods.at_lr import at_lr
        from advjax.train.state import create_train_state

        state0 = create_train_state(model, tx, k_init, variables=init_fn(k_init))
        base_m = engine_method(base, cfg)

        def make_step(g):
            m = base_m if (base == "normal" or not layers) else at_lr(base_m, tuple(layers), g)

            def step(st, xb, yb, sk):
                st, metrics = m.step(st, (xb, yb), sk)
                return st, metrics["loss"]
            return step

        carry0 = state0
        finish = lambda st: st.variables()  # noqa: E731
    else:
        loss_fn = make_loss(base, features_fn, cfg, tuple(layers))
        v0 = init_fn(k_init)

        def make_step(g):
            def step(c, xb, yb, sk):
                p, o = c
                l, grads = jax.value_and_grad(loss_fn)(p, g, xb, yb, sk)
                upd, o = tx.update(grads, o, p)
                return (optax.apply_updates(p, upd), o), l
            return step

        carry0 = (v0, tx.init(v0))
        finish = lambda c: c[0]  # noqa: E731

    def train_one(g):
        step_fn = make_step(g)

        def epoch(carry, ek):
            kp, ks = jax.random.split(ek)
            perm = jax.random.permutation(kp, n)[: steps * cfg.batch_size].reshape(steps, cfg.batch_size)

            def step(c, inp):
                idx, sk = inp
                return step_fn(c, x_train[idx], y_train[idx], sk)

            carry, ls = jax.lax.scan(step, carry, (perm, jax.random.split(ks, steps)))
            return carry, jnp.mean(ls)

        carry, losses = jax.lax.scan(epoch, carry0, jax.random.split(k_train, cfg.epochs))
        return finish(carry), losses

    return jax.jit(jax.vmap(train_one))(gammas)


def evaluate_variants(stacked_vars, features_fn, x, y, eps_list, key, attack: str = "pgd", steps: int = 20,
                      domain=None):
    """Accuracy (%) of each variant under ``attack`` ("pgd": L-inf PGD-``steps`` with random start;
    "fgsm") at each eps. Returns numpy [V, len(eps_list)]; one compile."""
    x = jnp.asarray(x, jnp.float32)
    y = jnp.asarray(y, jnp.int32)
    eps_arr = jnp.asarray(eps_list, jnp.float32)

    def acc_one(variables, eps):
        logits_fn = lambda z: features_fn(variables, z)[0]  # noqa: E731
        if attack == "fgsm":
            xa = pgd_linf(logits_fn, x, y, key, eps, 1, alpha=eps, random_start=False, domain=domain)
        else:
            xa = pgd_linf(logits_fn, x, y, key, eps, steps, domain=domain)
        return 100.0 * jnp.mean(jnp.argmax(logits_fn(xa), -1) == y)

    f = jax.jit(jax.vmap(jax.vmap(acc_one, in_axes=(None, 0)), in_axes=(0, None)))
    return np.asarray(f(stacked_vars, eps_arr))


def unstack(tree: Any, i: int):
    return jax.tree_util.tree_map(lambda a: a[i], tree)
