"""Training state: one flax struct pytree holding everything a compiled step reads and writes.

``TrainState`` carries the model parameters, the batch-norm statistics, the optax state, the step
counter and the run's base PRNG key; the flax Module and the optax transformation are static fields
(part of the treedef, not leaves), so a ``jax.jit`` of a step compiles once per run. Methods that
need more state (AWP's proxy optimizer, Free-AT's carried perturbation, FGSM-SDI's generator and
its optimizer) keep it in ``extra``, a dict pytree, and update it inside the same compiled step.
"""
from __future__ import annotations

from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax
from flax import struct

__all__ = ["TrainState", "create_train_state", "apply_model", "check_key"]


class TrainState(struct.PyTreeNode):
    """State of one training run.

    Leaves: ``step`` (int32 scalar, number of optimizer updates applied), ``params``,
    ``batch_stats`` (``{}`` for models without batch norm), ``opt_state`` (of ``tx``), ``key``
    (the run's base PRNG key as :func:`create_train_state` was given it: a raw uint32 key of the
    default implementation, ``uint32[2]`` for threefry, ``uint32[4]`` under
    ``jax_default_prng_impl=rbg``, or a typed key from ``jax.random.key``; per-step keys are
    ``fold_in(key, step)``; checkpoints store a typed key as its key data plus the implementation's
    name and restore it as the same typed key, :mod:`advjax.train.checkpoint`) and ``extra`` (a dict of method-owned state, ``{}`` by default).
    Static: ``model`` (flax.linen Module) and ``tx`` (optax.GradientTransformation).
    """

    step: jax.Array
    params: Any
    batch_stats: Any
    opt_state: Any
    key: jax.Array
    extra: Any = struct.field(default_factory=dict)
    model: Any = struct.field(pytree_node=False, default=None)
    tx: Any = struct.field(pytree_node=False, default=None)

    def variables(self, params=None, batch_stats=None) -> dict:
        """The flax variables dict ``{"params": ..., "batch_stats": ...}`` (no batch_stats if empty)."""
        params = self.params if params is None else params
        batch_stats = self.batch_stats if batch_stats is None else batch_stats
        out = {"params": params}
        if batch_stats is not None and jax.tree_util.tree_leaves(batch_stats):
            out["batch_stats"] = batch_stats
        return out

    def apply_gradients(self, grads, *, batch_stats=None, update_params=None, **changes) -> "TrainState":
        """One optax update: ``updates = tx.update(grads, opt_state, update_params or params)``,
        ``params <- params + updates``, ``step <- step + 1``.

        ``update_params`` is what weight decay and other parameter-dependent transformations see;
        AWP passes the perturbed weights there (as its reference code's optimizer step does) while
        the update is applied to the unperturbed ones.
        """
        ref = self.params if update_params is None else update_params
        updates, opt_state = self.tx.update(grads, self.opt_state, ref)
        params = optax.apply_updates(self.params, updates)
        return self.replace(
            step=self.step + 1,
            params=params,
            opt_state=opt_state,
            batch_stats=self.batch_stats if batch_stats is None else batch_stats,
            **changes,
        )

    def apply_fn(self, variables, x):
        """Eval-mode logits ``apply_fn(variables, x)`` (BN frozen): the function attacks take."""
        return self.model.apply(variables, x, train=False)


def apply_model(state: TrainState, params, x, *, train: bool, batch_stats=None):
    """Forward pass with explicit params.

    ``train=False``: returns ``(logits, batch_stats)`` with the statistics unchanged.
    ``train=True``: batch norm uses batch statistics and the running averages are updated; returns
    ``(logits, new_batch_stats)``. ``batch_stats`` defaults to ``state.batch_stats`` (methods with
    several training forward passes thread the statistics through them).
    """
    bs = state.batch_stats if batch_stats is None else batch_stats
    variables = state.variables(params=params, batch_stats=bs)
    if not train:
        return state.model.apply(variables, x, train=False), bs
    if "batch_stats" not in variables:
        return state.model.apply(variables, x, train=True), bs
    logits, mutated = state.model.apply(variables, x, train=True, mutable=["batch_stats"])
    return logits, mutated["batch_stats"]


def _init_variables(model, key, input_shape, batch_size):
    try:  # the models engineer's initializer, when present
        from advjax.models import init_variables  # type: ignore

        return init_variables(model, key, batch_size=batch_size)
    except ImportError:
        pass
    if input_shape is None:
        input_shape = getattr(model, "input_shape", None)
    if input_shape is None:
        raise ValueError("create_train_state: pass input_shape (the model has no input_shape field)")
    x = jnp.zeros((batch_size, *tuple(input_shape)), jnp.float32)
    return model.init(key, x, train=False)


def check_key(key, where: str = "create_train_state"):
    """``key`` as a JAX array if it is a PRNG key JAX can split, else a ValueError saying what is
    accepted.

    Accepted: a typed key (``jax.random.key(seed)``, ``jax.random.key(seed, impl="rbg")``, any
    implementation; a scalar) or a raw key of the *default* implementation (``jax.random.PRNGKey``:
    ``uint32[2]`` for threefry2x32, ``uint32[4]`` for ``rbg`` / ``unsafe_rbg``, which TPU users
    often set with ``jax.config.update("jax_default_prng_impl", "rbg")``). A raw key of another
    implementation's shape would be misread, so it is refused: wrap it with
    ``jax.random.wrap_key_data(data, impl=...)``."""
    dtype = getattr(key, "dtype", None)
    if dtype is not None and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key):
        if key.shape != ():
            raise ValueError(f"{where}: expected one typed PRNG key (shape ()), got a key array of shape {key.shape}")
        return key
    key = jnp.asarray(key)
    want = tuple(jax.eval_shape(lambda: jax.random.PRNGKey(0)).shape)
    impl = jax.config.jax_default_prng_impl
    if key.dtype != jnp.uint32 or key.shape != want:
        raise ValueError(
            f"{where}: key must be a PRNG key: jax.random.PRNGKey(seed) (raw uint32{list(want)} for the "
            f"default implementation {impl!r}) or a typed jax.random.key(seed[, impl=...]); got "
            f"{key.dtype}{list(key.shape)}")
    return key


def create_train_state(model, tx, key, *, input_shape=None, variables=None, batch_size: int = 1,
                       extra=None) -> TrainState:
    """Initialize a TrainState.

    ``key`` (a raw PRNG key of the default implementation or a typed key, see :func:`check_key`)
    is split into the init key and the run key stored in the state (same kind as given). ``variables`` (a flax variables dict) overrides initialization (e.g. fine-tuning).
    ``input_shape`` (per example) is only needed when the model has no ``input_shape`` field and
    ``advjax.models.init_variables`` is unavailable.
    """
    if not isinstance(tx, optax.GradientTransformation):
        raise ValueError(f"create_train_state: tx must be an optax.GradientTransformation, got {type(tx).__name__}")
    key = check_key(key)
    init_key, run_key = jax.random.split(key)
    if variables is None:
        variables = _init_variables(model, init_key, input_shape, batch_size)
    variables = flax.core.unfreeze(variables)
    params = variables["params"]
    batch_stats = variables.get("batch_stats", {})
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        batch_stats=batch_stats,
        opt_state=tx.init(params),
        key=run_key,
        extra={} if extra is None else extra,
        model=model,
        tx=tx,
    )
