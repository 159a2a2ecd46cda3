"""A fused trainer for the LSA reproductions: every AT-LR variant of a base method trained at once.

For Table 2 the variants of one base method (no LR, LR-L0, LR-L1, LR-L2) differ only in the
gamma vector of the AT-LR regularizer (eq. 13-15), so they are trained side by side with
``jax.vmap`` over that vector: one compiled program per base method trains all its variants for
all epochs (``lax.scan`` over epochs and batches). All variants start from the same initial
weights and see the same batches and the same attack noise, so a difference between a base
method and its LR variant comes from the regularizer alone.

Each variant is ``at_lr(engine_method(base), layers, gamma_row)`` -- the engine's
``AdversarialMethod`` (advjax.methods: Standard, ATFGSM, PGDAT, TRADES, FGSMRS, APGDAT) wrapped by
``Regularized`` -- stepped with its own ``step(state, batch, key)`` inside the scan; evaluation uses
the library's attacks with a traced eps (``Attack.with_eps``), vmapped over variants and radii.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from advjax.attacks import FGSM, PGD

BASE_METHODS = ("normal", "at_fgsm", "pgd", "trades", "fast", "apgd")
# the row names of the paper's tables (Table 2: AT-TRADE, AT-FAST, ...)
PAPER_NAMES = {"normal": "Normal", "at_fgsm": "AT-FGSM", "pgd": "AT-PGD", "trades": "AT-TRADE",
               "fast": "AT-FAST", "apgd": "AT-APGD"}
ENGINE_NAMES = {"normal": "standard", "at_fgsm": "at_fgsm", "pgd": "pgd_at", "trades": "trades",  # get_method names
                "fast": "fgsm_rs", "apgd": "apgd_at"}


# --------------------------------------------------------------------------- models


def model_fns(name: str, num_classes: int, input_shape: tuple[int, ...]):
    """(init_fn(key) -> variables, features_fn, source, module) for a model of the registry
    (``num_classes=1``: Model A's one-logit head)."""
    from advjax.layers import features_fn as lib_features_fn
    from advjax.models import get_model, init_variables

    model = get_model(name, num_classes=num_classes)
    init = lambda key: init_variables(model, key)  # noqa: E731
    return init, lib_features_fn(model, kind="learnable"), "advjax.models + advjax.layers", model


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


def train_variants(base: str, init_fn, x_train, y_train, gammas, layers: tuple[int, ...],
                   cfg: TrainConfig, key, model):
    """Train V variants (rows of ``gammas`` [V, len(layers)]) of ``base`` at once; one compile.

    Variant v is the engine's method ``at_lr(engine_method(base), layers, gammas[v])``
    (``Regularized``; the bare base method for "normal" or no layers) stepped with its own
    ``step(state, batch, key)``. Returns the stacked variables (leading axis V) and the per-epoch
    mean loss [V, epochs].

    Seeds: with ``key`` of shape [S, 2] (``jax.random.split(k, S)``) and ``x_train`` [S, n, ...],
    ``y_train`` [S, n] (one data sample per seed), the S seeds are trained in the same compiled
    program too; the outputs then have leading axes [S, V]."""
    from advjax.methods.at_lr import at_lr
    from advjax.train.state import create_train_state

    key = jnp.asarray(key)
    seeded = key.ndim == 2
    x_train = jnp.asarray(x_train, jnp.float32)
    y_train = jnp.asarray(y_train, jnp.int32)
    if not seeded:
        x_train, y_train, key = x_train[None], y_train[None], key[None]
    n = x_train.shape[1]
    steps = n // cfg.batch_size
    if steps < 1:
        raise ValueError(f"train_variants: {n} training samples < batch size {cfg.batch_size}")
    gammas = jnp.asarray(gammas, jnp.float32)
    if gammas.ndim != 2 or (layers and gammas.shape[1] != len(layers)):
        raise ValueError(f"gammas must be [V, {len(layers)}], got {gammas.shape}")
    tx = make_optimizer(cfg)
    base_m = engine_method(base, cfg)

    def make_step(g):
        m = base_m if (base == "normal" or not layers) else at_lr(base_m, tuple(layers), g)

        def step(st, xb, yb, sk):
            st, metrics = m.step(st, (xb, yb), sk)
            return st, metrics["loss"]
        return step

    def train_one(g, xs, ys, k):
        k_init, k_train = jax.random.split(k)
        carry0 = create_train_state(model, tx, k_init, variables=init_fn(k_init))
        step_fn = make_step(g)

        def epoch(carry, ek):
            kp, ks = jax.random.split(ek)
            perm = jax.random.permutation(kp, n)[: steps * cfg.batch_size].reshape(steps, cfg.batch_size)

            def step(c, inp):
                idx, sk = inp
                return step_fn(c, xs[idx], ys[idx], sk)

            carry, ls = jax.lax.scan(step, carry, (perm, jax.random.split(ks, steps)))
            return carry, jnp.mean(ls)

        carry, losses = jax.lax.scan(epoch, carry0, jax.random.split(k_train, cfg.epochs))
        return carry.variables(), losses

    per_seed = jax.vmap(train_one, in_axes=(0, None, None, None))       # variants share init, data, noise
    v, losses = jax.jit(jax.vmap(per_seed, in_axes=(None, 0, 0, 0)))(gammas, x_train, y_train, key)
    if not seeded:
        v, losses = jax.tree_util.tree_map(lambda a: a[0], v), losses[0]
    return v, losses


def evaluate_variants(stacked_vars, features_fn, x, y, eps_list, key, attack="pgd", steps: int = 20,
                      domain=None):
    """Accuracy (%) of each variant under ``attack`` at each eps: "pgd" (the library's L-inf
    PGD-``steps``, step 2.5 eps / steps, random start), "fgsm", or any ``advjax.attacks`` Attack
    instance (its eps is replaced). Returns numpy [V, len(eps_list)]; one compile (the radius is
    traced: ``Attack.with_eps``).

    Seeds: with variables of leading axes [S, V] and x [S, m, ...], y [S, m] (one test sample per
    seed) the result is [S, V, len(eps_list)], still one compile."""
    x = jnp.asarray(x, jnp.float32)
    y = jnp.asarray(y, jnp.int32)
    eps_arr = jnp.asarray(eps_list, jnp.float32)
    if isinstance(attack, str):
        atk = FGSM(domain=domain, check_inputs=False) if attack == "fgsm" else \
            PGD(steps=steps, domain=domain, check_inputs=False)
    else:
        atk = attack.replace(domain=domain, check_inputs=False)
    apply_fn = lambda v, z: features_fn(v, z)[0]  # noqa: E731

    def acc_one(variables, xs, ys, eps):
        xa = atk.with_eps(eps).run(apply_fn, variables, xs, ys, key)
        return 100.0 * jnp.mean(jnp.argmax(apply_fn(variables, xa), -1) == ys)

    over_eps = jax.vmap(acc_one, in_axes=(None, None, None, 0))
    over_variants = jax.vmap(over_eps, in_axes=(0, None, None, None))
    seeded = y.ndim == 2
    f = jax.vmap(over_variants, in_axes=(0, 0, 0, None)) if seeded else over_variants
    return np.asarray(jax.jit(f)(stacked_vars, x, y, eps_arr))


def unstack(tree: Any, i: int):
    return jax.tree_util.tree_map(lambda a: a[i], tree)
