"""Efficient layerwise adversarial training (Sankaranarayanan, Jain, Chellappa & Lim, "Regularizing
deep networks using efficient layerwise adversarial training", AAAI 2018; §3.2, Algorithm 1).

Perturbation points ("gradient accumulation layers" G_c) sit after the batch norm of every
conv-BN-activation block (after the conv where there is no BN, after each hidden dense layer of
the MLP): :func:`advjax.models.ops.perturbation_point`, named ``.../g_bn{j}`` (``g_conv{j}``,
``g_dense{i}``) in each model. They are the identity unless a ``"perturbations"`` collection is
passed to ``apply``, so nothing changes at test time or for any other method.

Algorithm 1 ("Ours-orig", ``variant="orig"``), per training step t and point c (eq. 5, 6):

    G_c(X_c^t) = X_c^t + eps_c^t * r_c^t,      r_c^{t+1} = sign(grad_c J(theta^t, X^t + R^t, Y^t)),
    eps_c^t = eps * (M - m)   with M, m the max and min of the cached gradient (appendix),

R^0 = 0 (the first step perturbs nothing). The perturbations enter ``apply`` as the
``"perturbations"`` collection, so ONE forward and ONE backward (``jax.value_and_grad`` with
respect to ``(params, perturbations)``) give the parameter gradients and the next cache: the
gradient with respect to a passed perturbation IS the gradient at the perturbed activation.

Variants (§4.1, Fig. 1), all in one compiled step each:

* ``"joint"`` (Ours-joint): eq. 3 with alpha = 0.5, alpha J(clean) + (1 - alpha) J(perturbed); the
  cache is the sign of the perturbed pass's gradient (two forwards, two backwards).
* ``"fgs_orig"`` (FGS-orig): Goodfellow's input FGS with the joint loss; the clean pass's backward
  gives both its parameter gradients and the input gradient, x_adv = clip(x + input_eps sign g_x),
  then the adversarial pass (2 forwards + 2 backwards; BN in training mode in both).
* ``"fgs_inter"`` (FGS-inter): the current batch's own sign-gradients at the points, taken from
  the clean pass (whose parameter gradients are reused), then the perturbed pass; joint loss.
* ``"random"``: the Fig. 1 baseline, r_c ~ N(0, 1) at every point with the magnitude of
  Ours-orig (eps_c from the cached gradient's range, kept up to date the same way).

Choices where the paper is silent (each a setting):

* ``eps`` (default 10): the paper chose eps in {10, 20, 30} by validation and does not say which;
  ``eps_mode="range"`` (default) is the appendix's eps * (M - m), ``"fixed"`` uses eps as is
  (Fig. 1, Table 1 and the test-time attack below).
* ``range_reduce``: M and m over the whole batch tensor at the point (``"layer"``, default: one
  eps per point, "normalized by the range of the gradients generated at the respective layers")
  or per example (``"example"``).
* The gradient is that of the batch-MEAN cross entropy (what a backward pass of Torch's averaged
  criterion gives), so M - m, and eps_c, scale with 1 / batch size.
* ``reset_every`` (default 0): the cache survives epoch boundaries (a random shuffle keeps
  successive batches' classes unrelated, which is all eq. 4's constraint needs); k > 0 zeroes it
  after every k steps (pass the steps per epoch for a per-epoch reset).
* ``points``: ``"bn"`` (default) = after every BN of a conv-BN-activation block, so inside a
  residual block after ``bn1`` and after ``bn2`` (the residual branch, before the shortcut sum);
  ``"bn+sum"`` adds a point on each block's sum before its final activation (ResNet only).
* ``stages`` (default None = all): only the points of stages 1..k (Table 6's depth ablation: VGG
  stages are the blocks ending in pool1..pool5; ResNets' ``layer{s}``; a top-level point before
  the first stage (the ResNet stem) belongs to stage 1, one after the last (the pre-activation
  nets' final BN) to the last stage; the MLP's hidden layers are one stage each).
* ``alpha`` (None: 0 for orig/random, 0.5 for the joint variants, as in §4.1).
* ``input_eps`` (FGS-orig's radius, default 0.05, the middle of Table 4's eps list: not reported).
* The BN statistics are threaded through the passes (clean first); BN is in training mode in
  every pass, including FGS-orig's input-gradient pass (it IS the clean training pass).
* The cache is kept as ``int8`` signs plus each example's gradient max and min (float32), all
  with the batch as leading axis (``state.extra["layerwise"]``); the training loop shards it on
  the batch axis like the data (``batch_sharded_extra``), so 8 devices give the 1-device numbers,
  and checkpoints (exact resume) include it.
"""
from __future__ import annotations

import dataclasses
import functools
import re
from typing import Any

import flax
import jax
import jax.numpy as jnp
from jax import lax

from advjax.methods import _inner
from advjax.methods.base import check_eps
from advjax.models.ops import PERTURBATIONS
from advjax.train.state import TrainState

__all__ = [
    "EXTRA_KEY", "VARIANTS", "LayerwiseAT", "perturbation_points", "point_stages", "layer_eps",
    "init_cache", "previous_sample_attack",
]

EXTRA_KEY = "layerwise"
VARIANTS = ("orig", "joint", "fgs_orig", "fgs_inter", "random")
_STAGE_RE = re.compile(r"^(?:block|layer)(\d+)$")
_SEP = "/"


# ---------------------------------------------------------------------------------------------
# the points of a model
# ---------------------------------------------------------------------------------------------
def _variables_shape(model, x_shape):
    x = jax.ShapeDtypeStruct(x_shape, jnp.float32)
    return jax.eval_shape(lambda k, xx: model.init(k, xx, train=False), jax.random.key(0), x)


def perturbation_points(model, x_shape, *, train: bool = True) -> dict[str, jax.ShapeDtypeStruct]:
    """``{"path/to/g_bn0": ShapeDtypeStruct, ...}`` of every perturbation point of ``model`` for
    inputs of shape ``x_shape`` (with the batch axis), in execution order. No FLOPs (eval_shape)."""
    x_shape = tuple(int(d) for d in x_shape)
    shapes = _variables_shape(model, x_shape)

    order = []  # execution order, read while tracing (pytree outputs come back with sorted keys)

    def f(variables, xx):
        mutable = [PERTURBATIONS] + (["batch_stats"] if "batch_stats" in variables else [])
        # a fixed dropout key: models with dropout need one in training mode (shapes only: eval_shape)
        _, mut = model.apply(variables, xx, train=train, mutable=mutable, rngs={"dropout": jax.random.key(0)})
        pts = flax.traverse_util.flatten_dict(flax.core.unfreeze(mut.get(PERTURBATIONS, {})))
        order.extend(_SEP.join(k) for k in pts)
        return {_SEP.join(k): v for k, v in pts.items()}

    out = jax.eval_shape(f, dict(shapes), jax.ShapeDtypeStruct(x_shape, jnp.float32))
    return {k: out[k] for k in order}


def point_stages(paths) -> dict[str, int]:
    """Stage (1-based) of each point path (see the module docstring for the rule)."""
    paths = list(paths)
    staged = {}
    for p in paths:
        m = _STAGE_RE.match(p.split(_SEP)[0])
        if m:
            staged[p] = int(m.group(1))
    if not staged:  # no stage modules (the MLP): each point is its own stage
        return {p: i + 1 for i, p in enumerate(paths)}
    first = min(i for i, p in enumerate(paths) if p in staged)
    last = max(staged.values())
    return {p: staged.get(p, 1 if i < first else last) for i, p in enumerate(paths)}


def layer_eps(eps, gmax, gmin, *, mode: str = "range", reduce: str = "layer"):
    """eps_l of the appendix: ``eps * (M - m)`` of the cached gradient (``mode="range"``), or ``eps``
    (``"fixed"``). ``gmax``/``gmin``: each example's max/min of the gradient at the point ([N]);
    ``reduce="layer"``: M, m over the whole batch tensor (a scalar), ``"example"``: per example ([N])."""
    if mode == "fixed":
        return jnp.asarray(eps, jnp.float32)
    if reduce == "layer":
        return eps * (jnp.max(gmax) - jnp.min(gmin))
    return eps * (gmax - gmin)


def _bcast(e, like):
    e = jnp.asarray(e, jnp.float32)
    return e.reshape(e.shape + (1,) * (like.ndim - e.ndim)) if e.ndim else e


def _per_example_extrema(g):
    axes = tuple(range(1, g.ndim))
    gf = g.astype(jnp.float32)
    return jnp.max(gf, axis=axes), jnp.min(gf, axis=axes)


def init_cache(points: dict) -> dict:
    """The zero cache for ``points`` (R^0 = 0): int8 signs and float32 per-example max / min."""
    import numpy as np  # host zeros: no device computation (and no compilation) at set-up

    return {
        "r": {p: np.zeros(s.shape, np.int8) for p, s in points.items()},
        "gmax": {p: np.zeros(s.shape[:1], np.float32) for p, s in points.items()},
        "gmin": {p: np.zeros(s.shape[:1], np.float32) for p, s in points.items()},
    }


def _cache_from_grads(g: dict) -> dict:
    out = {"r": {}, "gmax": {}, "gmin": {}}
    for p, gp in g.items():
        out["r"][p] = jnp.sign(gp).astype(jnp.int8)
        out["gmax"][p], out["gmin"][p] = _per_example_extrema(gp)
    return out


def _nest(flat: dict) -> dict:
    return flax.traverse_util.unflatten_dict({tuple(k.split(_SEP)): v for k, v in flat.items()})


def _flat(tree) -> dict:
    return {_SEP.join(k): v for k, v in flax.traverse_util.flatten_dict(tree).items()}


def _apply(model, params, batch_stats, x, delta=None, *, train: bool = True, rng=None):
    """Forward with optional perturbations (flat dict path -> array): ``(logits, batch_stats)``.
    ``rng``: the "dropout" PRNG key of a training-mode pass (models with dropout)."""
    variables = {"params": params}
    has_bs = batch_stats is not None and bool(jax.tree_util.tree_leaves(batch_stats))
    if has_bs:
        variables["batch_stats"] = batch_stats
    if delta:
        variables[PERTURBATIONS] = _nest(delta)
    rngs = {"dropout": rng} if (train and rng is not None) else None
    if train and has_bs:
        logits, mut = model.apply(variables, x, train=True, mutable=["batch_stats"], rngs=rngs)
        return logits, mut["batch_stats"]
    return model.apply(variables, x, train=train, rngs=rngs), batch_stats


# ---------------------------------------------------------------------------------------------
# the method
# ---------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class LayerwiseAT:
    """Layerwise adversarial training (module docstring): Ours-orig / Ours-joint / FGS-orig /
    FGS-inter / random. ``get_method("layerwise", eps=10)``; the variants are also registered as
    ``layerwise_joint``, ``fgs_orig``, ``fgs_inter``, ``layerwise_random``."""

    eps: float = 10.0
    variant: str = "orig"
    alpha: float | None = None
    eps_mode: str = "range"
    range_reduce: str = "layer"
    stages: int | None = None
    points: str = "bn"
    reset_every: int = 0
    input_eps: float = 0.05
    domain: Any = "auto"  # FGS-orig's clip box; "auto": the dataset's (the image box by default)

    batch_sharded_extra = (EXTRA_KEY,)  # state.extra keys the loop shards on the batch axis

    def __post_init__(self):
        if self.variant not in VARIANTS:
            raise ValueError(f"layerwise: variant must be one of {VARIANTS}, got {self.variant!r}")
        check_eps("layerwise", self.eps)
        check_eps("layerwise (input_eps)", self.input_eps, upper=None if self.domain is None else 1.0)
        if self.eps_mode not in ("range", "fixed"):
            raise ValueError(f"layerwise: eps_mode must be 'range' or 'fixed', got {self.eps_mode!r}")
        if self.range_reduce not in ("layer", "example"):
            raise ValueError(f"layerwise: range_reduce must be 'layer' or 'example', got {self.range_reduce!r}")
        if self.points not in ("bn", "bn+sum"):
            raise ValueError(f"layerwise: points must be 'bn' or 'bn+sum', got {self.points!r}")
        if self.stages is not None and (isinstance(self.stages, bool) or not isinstance(self.stages, int)
                                        or self.stages < 1):
            raise ValueError(f"layerwise: stages must be None (all) or an integer >= 1, got {self.stages!r}")
        if not isinstance(self.reset_every, int) or self.reset_every < 0:
            raise ValueError(f"layerwise: reset_every must be an integer >= 0, got {self.reset_every!r}")
        if not 0.0 <= self.weight < 1.0:
            raise ValueError(f"layerwise: alpha (weight of the clean loss) must be in [0, 1), got {self.alpha}")
        if self.domain not in (None, "auto") and (len(self.domain) != 2 or not self.domain[0] < self.domain[1]):
            raise ValueError(f"layerwise: domain must be (low, high) or None, got {self.domain!r}")

    @classmethod
    def from_kwargs(cls, **kw):
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(kw) - fields)
        if unknown:
            raise ValueError(f"method 'layerwise' has no setting(s) {unknown}; its settings: {sorted(fields)}")
        return cls(**kw)

    # -- settings ---------------------------------------------------------------------------
    @property
    def weight(self) -> float:
        """alpha of eq. 3 (weight of the clean loss)."""
        if self.alpha is not None:
            return float(self.alpha)
        return 0.0 if self.variant in ("orig", "random") else 0.5

    @property
    def uses_cache(self) -> bool:
        return self.variant in ("orig", "joint", "random")

    def active_points(self, model, x_shape) -> dict[str, jax.ShapeDtypeStruct]:
        """The points this method perturbs for inputs of shape ``x_shape``; ValueError when
        ``stages`` exceeds the model's depth or the model has no points."""
        pts = perturbation_points(model, x_shape)
        if not pts:
            raise ValueError(f"layerwise: {type(model).__name__} has no perturbation points "
                             "(advjax.models.ops.perturbation_point)")
        if self.points == "bn":
            pts = {p: s for p, s in pts.items() if not p.endswith("g_sum")}
        st = point_stages(pts)
        n = max(st.values())
        if self.stages is not None:
            if self.stages > n:
                raise ValueError(f"layerwise: stages={self.stages} but {type(model).__name__} has only "
                                 f"{n} stage(s) of perturbation points")
            pts = {p: s for p, s in pts.items() if st[p] <= self.stages}
        return pts

    # -- state ------------------------------------------------------------------------------
    def init_state(self, state: TrainState, batch) -> TrainState:
        """Put the zero cache (R^0 = 0, the batch's shapes) in ``state.extra["layerwise"]``."""
        x = batch[0]
        pts = self.active_points(state.model, x.shape)
        if not self.uses_cache:
            return state
        return state.replace(extra={**dict(state.extra), EXTRA_KEY: init_cache(pts)})

    def _check_cache(self, cache, pts, x_shape):
        want = set(pts)
        have = set(cache["r"])
        if want != have:
            raise ValueError(f"layerwise.step: the cached state's points {sorted(have)[:4]}... do not match "
                             f"this method's points {sorted(want)[:4]}... (other stages/model?): "
                             "initialize the state with this method's init_state")
        for p, s in pts.items():
            if tuple(cache["r"][p].shape) != tuple(s.shape):
                raise ValueError(
                    f"layerwise.step: the cached gradient at {p!r} has shape {tuple(cache['r'][p].shape)} but "
                    f"this batch (x {tuple(x_shape)}) gives {tuple(s.shape)} there: the cache holds the "
                    "previous batch's gradients, so every batch must have the same shape (a changed "
                    "batch size on resume, or a smaller last batch: use drop_remainder)")

    # -- the step ---------------------------------------------------------------------------
    def _deltas(self, cache, pts, key):
        out = {}
        keys = jax.random.split(key, max(len(pts), 1))
        for i, (p, s) in enumerate(pts.items()):
            e = layer_eps(self.eps, cache["gmax"][p], cache["gmin"][p], mode=self.eps_mode,
                          reduce=self.range_reduce)
            if self.variant == "random":
                direction = jax.random.normal(keys[i], s.shape, jnp.float32)
            else:
                direction = cache["r"][p].astype(jnp.float32)
            out[p] = (_bcast(e, direction) * direction).astype(s.dtype)
        return out

    def step(self, state: TrainState, batch, key):
        x, y = batch
        model = state.model
        a = self.weight
        pts = self.active_points(model, x.shape)
        bs0 = state.batch_stats
        metrics = {}
        key, k_drop_c, k_drop_p = jax.random.split(key, 3)  # perturbation / dropout (clean, perturbed)

        def ce(logits):
            return jnp.mean(_inner.cross_entropy(logits, y))

        if self.uses_cache:
            if EXTRA_KEY not in state.extra:
                raise ValueError("layerwise.step: state.extra has no cache; call method.init_state(state, batch) first")
            cache = state.extra[EXTRA_KEY]
            self._check_cache(cache, pts, x.shape)
            delta = self._deltas(cache, pts, key)

            def total(params, d):
                bs = bs0
                l_clean = jnp.zeros((), jnp.float32)
                if a > 0:
                    logits_c, bs = _apply(model, params, bs, x, rng=k_drop_c)
                    l_clean = ce(logits_c)
                else:
                    logits_c = None
                logits_p, bs = _apply(model, params, bs, x, d, rng=k_drop_p)
                l_pert = ce(logits_p)
                return a * l_clean + (1 - a) * l_pert, (bs, logits_p, logits_c, l_pert)

            (loss, (bs, logits_p, logits_c, _)), (g_params, g_delta) = jax.value_and_grad(
                total, argnums=(0, 1), has_aux=True)(state.params, delta)
            if a > 0:  # the gradient of the perturbed pass's own loss (a positive rescale)
                g_delta = jax.tree.map(lambda g: g / (1 - a), g_delta)
            new_cache = _cache_from_grads(g_delta)
            if self.reset_every:
                keep = ((state.step + 1) % self.reset_every) != 0
                new_cache = jax.tree.map(lambda c: jnp.where(keep, c, jnp.zeros_like(c)), new_cache)
            extra = {**dict(state.extra), EXTRA_KEY: new_cache}
            e_mean = jnp.mean(jnp.stack([jnp.mean(layer_eps(self.eps, cache["gmax"][p], cache["gmin"][p],
                                                            mode=self.eps_mode, reduce=self.range_reduce))
                                         for p in pts]))
            metrics["eps_layer_mean"] = e_mean
        else:
            # FGS-orig / FGS-inter: the clean pass gives its parameter gradients AND the direction
            def clean(params, probe):
                if self.variant == "fgs_orig":
                    logits, bs = _apply(model, params, bs0, probe, rng=k_drop_c)
                else:
                    logits, bs = _apply(model, params, bs0, x, probe, rng=k_drop_c)
                return ce(logits), (bs, logits)

            probe = x if self.variant == "fgs_orig" else {p: jnp.zeros(s.shape, s.dtype) for p, s in pts.items()}
            (l_clean, (bs1, logits_c)), (g_clean, g_probe) = jax.value_and_grad(
                clean, argnums=(0, 1), has_aux=True)(state.params, probe)
            g_probe = lax.stop_gradient(g_probe)
            if self.variant == "fgs_orig":
                x_adv = x + self.input_eps * jnp.sign(g_probe)
                dom = (0.0, 1.0) if self.domain == "auto" else self.domain  # "auto": the image box
                if dom is not None:
                    x_adv = jnp.clip(x_adv, dom[0], dom[1])
                delta = None
            else:
                x_adv = x
                delta = {}
                for p, g in g_probe.items():
                    gmax, gmin = _per_example_extrema(g)
                    e = layer_eps(self.eps, gmax, gmin, mode=self.eps_mode, reduce=self.range_reduce)
                    delta[p] = (_bcast(e, g) * jnp.sign(g)).astype(g.dtype)

            def pert(params):
                logits, bs = _apply(model, params, bs1, x_adv, delta, rng=k_drop_p)
                return ce(logits), (bs, logits)

            (l_pert, (bs, logits_p)), g_pert = jax.value_and_grad(pert, has_aux=True)(state.params)
            loss = a * l_clean + (1 - a) * l_pert
            g_params = jax.tree.map(lambda gc, gp: a * gc + (1 - a) * gp, g_clean, g_pert)
            extra = state.extra

        metrics["acc"] = _inner.accuracy(logits_p, y)
        if logits_c is not None:
            metrics["clean_acc"] = _inner.accuracy(logits_c, y)
        new_state = state.apply_gradients(g_params, batch_stats=bs, extra=extra)
        return new_state, {**metrics, "loss": loss}


def _variant(v):
    def factory(**kw):
        kw.setdefault("variant", v)
        return LayerwiseAT.from_kwargs(**kw)
    factory.__name__ = f"layerwise_{v}"
    return factory


def _register():
    from advjax.methods.base import register_method

    register_method("layerwise", LayerwiseAT)
    register_method("layerwise_orig", _variant("orig"))
    register_method("ours_orig", _variant("orig"))
    register_method("layerwise_joint", _variant("joint"))
    register_method("ours_joint", _variant("joint"))
    register_method("fgs_orig", _variant("fgs_orig"))
    register_method("fgs_inter", _variant("fgs_inter"))
    register_method("layerwise_random", _variant("random"))


_register()


# ---------------------------------------------------------------------------------------------
# the test-time "previous-sample layerwise attack" (§3.3, Table 1)
# ---------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=32)
def _attack_step(model, direction: str, eps_mode: str, input_only: bool):
    """Jitted ``(variables, x, y, g_prev, gx_prev, eps, key) -> (g, gx, #correct)``: one batch of
    the previous-sample attack on the eval-mode model (one compile per model, options and shape)."""

    @jax.jit
    def step(variables, xb, yb, g_prev, gx_prev, eps, key):
        if input_only:
            x_in = jnp.clip(xb + eps * jnp.sign(gx_prev), 0.0, 1.0)
            delta = {p: jnp.zeros_like(g) for p, g in g_prev.items()}
        else:
            x_in = xb
            delta = {}
            for i, (p, g) in enumerate(g_prev.items()):
                gmax, gmin = _per_example_extrema(g)
                e = _bcast(layer_eps(eps, gmax, gmin, mode=eps_mode), g)
                d = (jax.random.normal(jax.random.fold_in(key, i), g.shape, jnp.float32) if direction == "random"
                     else jnp.sign(g))
                delta[p] = (e * d).astype(g.dtype)

        def f(d, xx):
            logits, _ = _apply(model, variables["params"], variables.get("batch_stats"), xx, d, train=False)
            return jnp.mean(_inner.cross_entropy(logits, yb)), logits
        (_, logits), (g, gx) = jax.value_and_grad(f, argnums=(0, 1), has_aux=True)(delta, x_in)
        return g, gx, jnp.sum(jnp.argmax(logits, -1) == yb)

    return step


def previous_sample_attack(model, variables, x, y, eps, *, batch_size: int = 100, points: str = "bn",
                           stages: int | None = None, direction: str = "previous", eps_mode: str = "fixed",
                           input_only: bool = False, key=None) -> float:
    """Accuracy (%) of the eval-mode ``model`` on ``(x, y)`` when each batch's activations at the
    perturbation points are perturbed by ``eps_l * sign`` of the PREVIOUS batch's gradient there
    (eq. 5-6 at test time: example i of batch t gets example i of batch t - 1's direction; the first
    batch gets the unperturbed gradient of the last batch, so every example is attacked; the
    gradient of batch t is taken at its perturbed points). ``eps_mode="fixed"`` (Table 1, Fig. 1):
    eps_l = eps; ``"range"``: eps * (max - min) of that gradient. ``direction="random"``: N(0, 1)
    directions instead (the Fig. 1 baseline). ``input_only``: the previous batch's sign of the INPUT
    gradient added to the input instead, clipped to [0, 1] (the §3.3 control experiment). ``x``:
    float in [0, 1] (or uint8). A ragged tail (len(x) % batch_size) is dropped."""
    import numpy as np

    check_eps("previous_sample_attack", eps)
    if direction not in ("previous", "random"):
        raise ValueError(f"previous_sample_attack: direction must be 'previous' or 'random', got {direction!r}")
    x = np.asarray(x)
    x = x.astype(np.float32) / 255.0 if x.dtype == np.uint8 else x.astype(np.float32)
    y = np.asarray(y, np.int32)
    nb = len(x) // batch_size
    if nb < 1:
        raise ValueError(f"previous_sample_attack: {len(x)} examples, fewer than one batch of {batch_size}")
    method = LayerwiseAT(eps=float(eps), eps_mode=eps_mode, points=points, stages=stages)
    pts = method.active_points(model, (batch_size,) + x.shape[1:])
    key = jax.random.PRNGKey(0) if key is None else key
    step = _attack_step(model, direction, eps_mode, bool(input_only))
    zeros = {p: np.zeros(s.shape, s.dtype) for p, s in pts.items()}
    eps_arr = np.float32(eps)
    # seed: the unperturbed gradients of the last batch (eps = 0 on a zero direction)
    last = slice((nb - 1) * batch_size, nb * batch_size)
    g_prev, gx_prev, _ = step(variables, x[last], y[last], zeros, np.zeros_like(x[last]), np.float32(0.0), key)
    correct = 0
    for b in range(nb):
        sl = slice(b * batch_size, (b + 1) * batch_size)
        g_prev, gx_prev, c = step(variables, x[sl], y[sl], g_prev, gx_prev, eps_arr, jax.random.fold_in(key, b))
        correct += int(c)
    return 100.0 * correct / (nb * batch_size)
