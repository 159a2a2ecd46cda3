"""LAFEAT's heads: small classifiers on intermediate layers of a frozen model (Yu et al., CVPR 2021;
official code lafeat/lafeat ``frozen.py`` and ``train.py``), trained once per checkpoint and reused
by the attack (:mod:`advjax.attacks.lafeat`).

* Architecture (``frozen.py``, per head): Conv 2x2 stride 2 to 64 channels (no bias), ReLU, Conv
  2x2 stride 2 (64), ReLU, flatten, Dense 256, ReLU, Dense C. The convs use "SAME" padding, which
  equals the code's unpadded convs on even sizes (WRN's 8x8 -> 4 -> 2; ResNet-18's 4x4 -> 2 -> 1)
  and lets odd or 1x1 maps through. A flat feature [N, D] (an MLP's hidden layer) skips the convs.
* Training (``train.py``): the backbone is frozen and in eval mode; each head is trained with CE
  against the backbone's *predicted* labels (``argmax`` of the output on the same augmented batch),
  the loss summed over heads; Adam, lr 1e-3, cosine decay to 1e-5 (``CosineAnnealingLR``,
  ``eta_min=1e-5``), no weight decay; random crop (pad 4) + horizontal flip.
* Layers (:func:`default_head_layers`): the official code puts four heads on the last four block
  outputs of WRN-34-10's last stage; the SAT repository's ResNet-18 copy on the four conv outputs
  of ``layer4`` (``layer4.{0,1}.conv{1,2}``). The default here is the SAT choice made generic: the
  last four conv outputs of :func:`advjax.layers.capture` other than shortcut convs (for ResNet-18
  exactly ``layer4/block{0,1}/conv{1,2}``), or the last four hidden Dense outputs of an MLP. Any
  captured layer can be named instead (``kind="activation"`` for post-activation block outputs such
  as ``layer4/block0/act2``).

Differences from the official training, and why: the cosine decay is per step rather than per
epoch (the same curve, smoother); no AutoAugment (the code adds the CIFAR-10 AutoAugment policy; it
only changes the data the heads see, not the attack); epochs are a setting (the code's default 50,
its README 100: a CPU-scale run uses fewer). The SAT repository's copy (``clustering/lafeat_eval.py``,
``models/frozen.py``) trains on the true labels, with a constant Adam 1e-3 for 100 epochs, and its
heads have no convs (flatten + Dense 256 + Dense C); ``targets=y`` gives the first of these.

Heads are a :class:`LafeatHeads` record: parameters per layer plus which model and checkpoint they
were trained for (a digest of the model's definition and of its variables), so heads of another
model are a clear error (:func:`check_heads`). :func:`save_heads` / :func:`load_heads` store them
with the project's checkpoint format (orbax + sha256 manifest, no pickle); :func:`heads_dir` is
their place beside a run's checkpoint, where ``advjax eval --attacks lafeat`` looks for them and
``advjax lafeat-heads --checkpoint RUN`` (this module's :func:`run`) writes them.
"""
from __future__ import annotations

import argparse
import collections
import dataclasses
import functools
import hashlib
import json
import math
import os
import pathlib
import sys
import time
from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from advjax import layers as _layers
from advjax import losses as _losses

__all__ = ["LafeatHead", "LafeatHeads", "default_head_layers", "model_digest", "variables_digest",
           "init_heads", "train_lafeat_heads", "lafeat_features_fn", "with_heads", "head_accuracy",
           "check_heads", "save_heads", "load_heads", "heads_dir", "HEADS_COLLECTION", "FORMAT",
           "configure_parser", "run"]

HEADS_COLLECTION = "lafeat_heads"
FORMAT = "advjax-lafeat-heads-v1"
NUM_HEADS = 4


class LafeatHead(nn.Module):
    """One head (``frozen.py``): [conv 2x2/2 -> ReLU] x 2 (4-D inputs only), Dense 256 -> ReLU -> Dense C."""

    num_classes: int
    width: int = 64
    hidden: int = 256

    @nn.compact
    def __call__(self, f):
        if f.ndim == 4:
            for i in range(2):
                f = nn.relu(nn.Conv(self.width, (2, 2), strides=(2, 2), padding="SAME", use_bias=False,
                                    name=f"conv{i}")(f))
        f = jnp.reshape(f, (f.shape[0], -1))
        f = nn.relu(nn.Dense(self.hidden, name="fc1")(f))
        return nn.Dense(self.num_classes, name="fc2")(f)


@dataclasses.dataclass(frozen=True)
class LafeatHeads:
    """Trained heads. ``params``: {layer: head params} (numpy or jax arrays); ``layers``: the layer
    names in order; ``kind``: the capture kind they are read with; ``record``: JSON text saying what
    they were trained for (``model``: the model's class and definition digest, ``variables``: the
    digest of the backbone's variables, ``checkpoint``: path and step when known) and how
    (``train``: epochs, steps, final loss, agreement of each head with the backbone)."""

    params: dict
    layers: tuple
    kind: str
    num_classes: int
    width: int = 64
    hidden: int = 256
    record: str = "{}"

    @property
    def info(self) -> dict:
        return json.loads(self.record)

    @property
    def static(self) -> tuple:
        """What the features function depends on besides the parameters (hashable)."""
        return (self.layers, self.kind, self.num_classes, self.width, self.hidden)


# ------------------------------------------------------------------------------------------------
# identity of a model / checkpoint
# ------------------------------------------------------------------------------------------------


def model_digest(model: nn.Module) -> str:
    """sha256 of the model's class and field values (its definition, not its weights)."""
    return hashlib.sha256(f"{type(model).__module__}.{type(model).__qualname__}:{model!r}".encode()).hexdigest()[:16]


_DIGESTS: collections.OrderedDict = collections.OrderedDict()  # id(variables) -> (variables, digest)


def variables_digest(variables) -> str:
    """sha256 over the model's variables (``params`` and ``batch_stats``; other collections such as
    the heads' own are ignored), in tree order. Cached for the last few variables objects."""
    hit = _DIGESTS.get(id(variables))
    if hit is not None and hit[0] is variables:
        return hit[1]
    h = hashlib.sha256()
    core = {k: variables[k] for k in ("params", "batch_stats") if k in variables}
    flat, _ = jax.tree_util.tree_flatten_with_path(core)
    for path, leaf in flat:
        a = np.ascontiguousarray(np.asarray(leaf))
        h.update(jax.tree_util.keystr(path).encode())
        h.update(str(a.dtype).encode() + str(a.shape).encode())
        h.update(a.tobytes())
    d = h.hexdigest()[:16]
    _DIGESTS[id(variables)] = (variables, d)
    while len(_DIGESTS) > 4:
        _DIGESTS.popitem(last=False)
    return d


def _model_name(model) -> str:
    return type(model).__name__


def check_heads(heads, model, variables=None) -> None:
    """ValueError unless ``heads`` were trained for ``model`` (and, when given, these ``variables``:
    heads of another checkpoint of the same architecture are an error too)."""
    if heads is None:
        from advjax.attacks.lafeat import MISSING_HEADS_HELP

        raise ValueError(MISSING_HEADS_HELP)
    if not isinstance(heads, LafeatHeads):
        raise ValueError(f"LAFEAT heads must be a LafeatHeads record (train_lafeat_heads / load_heads), "
                         f"got {type(heads).__name__}")
    rec = heads.info
    trained = rec.get("model", {})
    how = ("train heads for it with advjax.attacks.lafeat_heads.train_lafeat_heads(model, variables, x, key), "
           "or `advjax lafeat-heads --checkpoint RUN`")
    if trained.get("digest") != model_digest(model):
        raise ValueError(f"these LAFEAT heads were trained for another model ({trained.get('name')}, definition "
                         f"{trained.get('digest')}), not this {_model_name(model)} (definition "
                         f"{model_digest(model)}); {how}")
    if variables is not None:
        vd = variables_digest(variables)
        if rec.get("variables") != vd:
            ck = rec.get("checkpoint") or {}
            where = f" (checkpoint {ck.get('path')}, step {ck.get('step')})" if ck.get("path") else ""
            raise ValueError(f"these LAFEAT heads were trained for other weights of this {_model_name(model)}"
                             f"{where}: variables digest {rec.get('variables')} != {vd}; {how}")


# ------------------------------------------------------------------------------------------------
# layers, init, the features function
# ------------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=64)
def _feature_shapes(model, kind: str):
    """(logits, OrderedDict{layer: output}) as ShapeDtypeStructs, from an abstract trace."""
    x = jax.ShapeDtypeStruct((1, *tuple(model.input_shape)), jnp.float32)

    def f(x):
        variables = model.init(jax.random.key(0), x, train=False)
        return _layers.capture(model, variables, x, kind=kind)

    logits, feats = jax.eval_shape(f, x)
    return logits, feats


def default_head_layers(model: nn.Module, n: int = NUM_HEADS, kind: str = "learnable") -> list[str]:
    """The last ``n`` conv outputs other than shortcut convs (ResNet-18: ``layer4/block{0,1}/conv{1,2}``,
    the SAT repository's choice), or for a model without convs its last ``n`` hidden Dense outputs."""
    _, feats = _feature_shapes(model, kind)
    names = list(feats)
    convs = [k for k in names if len(feats[k].shape) == 4 and "shortcut" not in k.split("/")[-1]]
    pool = convs if convs else names[:-1]  # MLP: every learnable layer but the output
    if not pool:
        raise ValueError(f"{_model_name(model)} has no intermediate layer to put LAFEAT heads on (layers: {names})")
    return pool[-n:]


def _resolve_layers(model, layers, kind) -> tuple[str, ...]:
    if layers is None:
        return tuple(default_head_layers(model, kind=kind))
    _, feats = _feature_shapes(model, kind)
    known = list(feats)
    if isinstance(layers, (str, int)):
        layers = [layers]
    out = []
    for l in layers:
        if isinstance(l, bool) or not isinstance(l, (int, str)):
            raise ValueError(f"LAFEAT head layers must be names or indices, got {l!r}")
        if isinstance(l, int):
            if not -len(known) <= l < len(known):
                raise ValueError(f"layer index {l} out of range for {_model_name(model)}'s {len(known)} {kind} "
                                 f"layers: {known}")
            l = known[l]
        elif l not in feats:
            raise ValueError(f"{_model_name(model)} has no {kind} layer {l!r}; its layers are: {known}")
        out.append(l)
    if len(set(out)) != len(out):
        raise ValueError(f"LAFEAT head layers repeat: {out}")
    return tuple(out)


def _head(heads_static) -> LafeatHead:
    _, _, num_classes, width, hidden = heads_static
    return LafeatHead(num_classes, width, hidden)


@functools.lru_cache(maxsize=64)
def _features_fn_cached(model, static):
    layers, kind = static[0], static[1]
    head = _head(static)

    def fn(variables, x):
        hp = variables[HEADS_COLLECTION]
        core = {k: v for k, v in variables.items() if k != HEADS_COLLECTION}
        logits, feats = _layers.capture(model, core, x, train=False, kind=kind)
        out = collections.OrderedDict()
        for name in layers:
            out[name] = head.apply({"params": hp[name]}, feats[name])
        return logits, out

    return fn


def lafeat_features_fn(model, heads: LafeatHeads):
    """``features_fn(variables, x) -> (logits, OrderedDict{layer: head logits})`` in eval mode, where
    ``variables`` = :func:`with_heads` (model variables + the heads' parameters). Cached per (model,
    head layout), so every call with equal models and layouts reuses one compiled program."""
    return _features_fn_cached(model, heads.static)


def with_heads(variables, heads: LafeatHeads) -> dict:
    """The model's variables with the heads' parameters added under ``"lafeat_heads"``."""
    return {**{k: v for k, v in variables.items() if k != HEADS_COLLECTION}, HEADS_COLLECTION: heads.params}


def _key_seed(key) -> list[int]:
    """Integers from a PRNG key (raw or typed), to seed numpy's generator deterministically."""
    if jnp.issubdtype(getattr(key, "dtype", np.uint32), jax.dtypes.prng_key):
        key = jax.random.key_data(key)
    return [int(v) for v in np.asarray(key).ravel()]


def init_heads(model, variables, layers, key, kind: str = "learnable", width: int = 64, hidden: int = 256):
    """Fresh head parameters {layer: params} for the given layers and the class count.

    PyTorch's default initialization (the code's ``nn.Conv2d`` / ``nn.Linear``): every weight and
    bias ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)), drawn with numpy from a generator seeded by ``key``
    (shapes from an abstract trace: no XLA compilation of random initializers, which costs seconds
    on a CPU).
    """
    logits, feats = _feature_shapes(model, kind)
    num_classes = int(logits.shape[-1])
    head = LafeatHead(num_classes, width, hidden)
    rng = np.random.default_rng(_key_seed(key))
    params = {}
    for name in layers:
        shapes = jax.eval_shape(head.init, jax.random.key(0), jax.ShapeDtypeStruct((1, *feats[name].shape[1:]),
                                                                                   jnp.float32))["params"]
        def fill(path, sd):
            module = tuple(str(getattr(k, "key", k)) for k in path[:-1])
            kernel = shapes
            for part in module:
                kernel = kernel[part]
            fan_in = int(np.prod(kernel["kernel"].shape[:-1]))
            bound = 1.0 / math.sqrt(fan_in)
            return rng.uniform(-bound, bound, sd.shape).astype(sd.dtype)

        params[name] = jax.tree_util.tree_map_with_path(fill, shapes)
    return params, num_classes


# ------------------------------------------------------------------------------------------------
# training
# ------------------------------------------------------------------------------------------------


def _check_images(x, model) -> np.ndarray:
    x = np.asarray(x)
    if x.dtype == np.uint8:
        x = x.astype(np.float32) / 255.0
    if not np.issubdtype(x.dtype, np.floating):
        raise ValueError(f"x must be float pixels in [0, 1] (or uint8), got dtype {x.dtype}")
    shape = tuple(getattr(model, "input_shape", x.shape[1:]))
    if x.ndim != len(shape) + 1 or tuple(x.shape[1:]) != shape:
        raise ValueError(f"x must be [N, {', '.join(map(str, shape))}] for {_model_name(model)}, got {x.shape}")
    if x.shape[0] == 0:
        raise ValueError("x is empty: LAFEAT heads need training images")
    if np.isnan(x).any():
        raise ValueError("x contains NaN")
    return x.astype(np.float32)


def train_lafeat_heads(model, variables, x, key=None, *, layers=None, kind: str = "learnable", epochs: int = 10,
                       batch_size: int = 128, lr: float = 1e-3, final_lr: float = 1e-5, augment: bool = True,
                       targets=None, width: int = 64, hidden: int = 256, checkpoint: Optional[dict] = None,
                       log: bool = False) -> LafeatHeads:
    """Train LAFEAT heads on the frozen ``model`` (eval mode) over the training images ``x``.

    Args:
      model, variables: the backbone (never updated; batch norm in eval mode).
      x: training images [N, H, W, C], float in [0, 1] or uint8 (labels are not needed).
      key: PRNG key (or int seed) for the initialization, shuffling and augmentation.
      layers: layer names or indices of :func:`advjax.layers.capture` (``kind``); default
        :func:`default_head_layers`.
      epochs, batch_size: passes over ``x`` (the last partial batch is dropped, as the code's
        loader keeps it; for N < batch_size the whole set is one batch).
      lr, final_lr: Adam's learning rate, decayed by a cosine to ``final_lr`` (code: 1e-3 -> 1e-5).
      augment: random crop (pad 4) + flip of 3-channel / image inputs (code: also AutoAugment).
      targets: None = the backbone's predictions on each augmented batch (the code); an int array
        [N] = those labels (the SAT copy trains on the true labels).
      checkpoint: ``{"path", "step"}`` of the backbone's checkpoint, stored in the record.
      log: print one line per epoch.

    Returns a :class:`LafeatHeads` whose record also holds each head's agreement with the
    backbone's predictions over the last epoch.
    """
    from advjax.attacks import base as _base

    x = _check_images(x, model)
    for name, v in (("epochs", epochs), ("batch_size", batch_size)):
        _base.check_positive(name, v, integer=True)
    _base.check_positive("lr", lr)
    _base.check_positive("final_lr", final_lr)
    if key is None:
        key = jax.random.PRNGKey(0)
    elif isinstance(key, int):
        key = jax.random.PRNGKey(key)
    layers = _resolve_layers(model, layers, kind)
    logits_shape, _ = _feature_shapes(model, kind)
    if int(logits_shape.shape[-1]) < 2:
        raise ValueError("LAFEAT heads need a model with >= 2 logits")
    n = x.shape[0]
    if targets is not None:
        targets = np.asarray(targets)
        if targets.shape != (n,) or not np.issubdtype(targets.dtype, np.integer):
            raise ValueError(f"targets must be integer labels [N] = [{n}], got {targets.dtype} {targets.shape}")
        targets = targets.astype(np.int32)
    bs = min(batch_size, n)
    per_epoch = n // bs
    total = per_epoch * epochs
    k_init = k_run = key  # numpy streams seeded by (key, purpose); augmentation keys folded inside the step
    params, num_classes = init_heads(model, variables, layers, k_init, kind, width, hidden)
    schedule = optax.cosine_decay_schedule(lr, decay_steps=total, alpha=final_lr / lr)
    tx = optax.adam(schedule)
    opt_state = jax.jit(tx.init)(params)
    head = LafeatHead(num_classes, width, hidden)
    core = {k: variables[k] for k in ("params", "batch_stats") if k in variables}
    image_like = x.ndim == 4

    def step(params, opt_state, xb, tb, k_run, epoch, b):
        if augment and image_like:
            from advjax.data.augment import augment as _augment

            xb = _augment(jax.random.fold_in(jax.random.fold_in(k_run, epoch), b + 1), xb)
        logits, feats = _layers.capture(model, core, xb, train=False, kind=kind)
        labels = jnp.argmax(logits, axis=-1) if tb is None else tb
        feats = jax.lax.stop_gradient(feats)

        def loss_fn(p):
            outs = [head.apply({"params": p[name]}, feats[name]) for name in layers]
            per = [jnp.mean(_losses.cross_entropy(o, labels)) for o in outs]
            return sum(per), jnp.stack([jnp.mean(jnp.argmax(o, -1) == labels) for o in outs])

        (loss, agree), g = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, opt_state = tx.update(g, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss, agree

    step_fn = jax.jit(step)
    seed = [*_key_seed(k_run), 1]
    loss = float("nan")
    agree_epoch = np.zeros(len(layers))
    t0 = time.perf_counter()
    for epoch in range(epochs):
        perm = np.random.default_rng([*seed, epoch]).permutation(n)
        losses, agrees = [], []
        for b in range(per_epoch):
            idx = perm[b * bs:(b + 1) * bs]
            tb = None if targets is None else targets[idx]
            params, opt_state, l, a = step_fn(params, opt_state, x[idx], tb, k_run, epoch, b)
            losses.append(l)
            agrees.append(a)
        loss = float(np.mean(np.asarray(losses)))
        agree_epoch = np.mean(np.stack([np.asarray(a) for a in agrees]), axis=0)
        if log:
            print(f"lafeat heads epoch {epoch + 1}/{epochs}: loss {loss:.4f}, agreement "
                  + ", ".join(f"{l}: {a:.1%}" for l, a in zip(layers, agree_epoch)), flush=True)
    params = jax.tree_util.tree_map(np.asarray, params)
    record = {
        "format": FORMAT,
        "model": {"name": _model_name(model), "digest": model_digest(model)},
        "variables": variables_digest(variables),
        "checkpoint": dict(checkpoint) if checkpoint else None,
        "train": {"epochs": epochs, "steps": total, "batch_size": bs, "n_examples": n, "lr": lr, "final_lr": final_lr,
                  "augment": bool(augment and image_like), "targets": "predicted" if targets is None else "given",
                  "final_loss": loss, "seconds": round(time.perf_counter() - t0, 2),
                  "agreement": {l: float(a) for l, a in zip(layers, agree_epoch)}},
    }
    return LafeatHeads(params=params, layers=layers, kind=kind, num_classes=num_classes, width=width,
                       hidden=hidden, record=json.dumps(record, sort_keys=True))


def head_accuracy(model, variables, heads: LafeatHeads, x, y=None, batch_size: int = 256) -> dict:
    """{layer: accuracy of its head} and ``"output"``: the model's own, against ``y`` (default:
    the model's predictions, i.e. each head's agreement with the backbone)."""
    check_heads(heads, model, variables)
    x = _check_images(x, model)
    fn = jax.jit(lafeat_features_fn(model, heads))
    v = with_heads(variables, heads)
    preds = {"output": []}
    for name in heads.layers:
        preds[name] = []
    for b in range(0, x.shape[0], batch_size):
        logits, outs = fn(v, jnp.asarray(x[b:b + batch_size]))
        preds["output"].append(np.asarray(jnp.argmax(logits, -1)))
        for name, o in outs.items():
            preds[name].append(np.asarray(jnp.argmax(o, -1)))
    preds = {k: np.concatenate(p) for k, p in preds.items()}
    ref = preds["output"] if y is None else np.asarray(y)
    return {k: float(np.mean(p == ref)) for k, p in preds.items()}


# ------------------------------------------------------------------------------------------------
# storage beside a checkpoint
# ------------------------------------------------------------------------------------------------


def heads_dir(checkpoint_path, kind: Optional[str] = None) -> pathlib.Path:
    """Where the heads of one checkpoint live: ``<run>/lafeat_heads/<best|last>-step_<N>`` for a
    checkpoint ``<run>/checkpoints/<best|last>/step_<N>`` (any other directory: ``<it>/lafeat_heads``)."""
    p = pathlib.Path(os.path.abspath(os.path.expanduser(os.fspath(checkpoint_path))))
    if p.name.startswith("step_") and p.parent.parent.name == "checkpoints":
        return p.parent.parent.parent / "lafeat_heads" / f"{kind if kind in ('best', 'last') else p.parent.name}-{p.name}"
    return p / "lafeat_heads"


def save_heads(heads: LafeatHeads, directory) -> pathlib.Path:
    """Write ``heads`` under ``directory`` (orbax + sha256 manifest, the checkpoint format; the
    record and layout in the manifest's meta). Returns the written directory."""
    from advjax.train.checkpoint import save_checkpoint

    meta = {"format": FORMAT, "layers": list(heads.layers), "kind": heads.kind, "num_classes": heads.num_classes,
            "width": heads.width, "hidden": heads.hidden, "record": heads.record, "step": 0}
    return save_checkpoint(directory, {"params": heads.params}, meta=meta, keep=1)


def load_heads(directory, model, variables=None, *, check: bool = True) -> LafeatHeads:
    """Read heads written by :func:`save_heads`. FileNotFoundError (saying how to train them) when
    there are none; ValueError when they belong to another model / checkpoint (``check``)."""
    from advjax.attacks.lafeat import MISSING_HEADS_HELP
    from advjax.train.checkpoint import latest_valid_checkpoint, restore_checkpoint

    d = pathlib.Path(os.path.abspath(os.path.expanduser(os.fspath(directory))))
    found = latest_valid_checkpoint(d) if d.is_dir() else None
    if found is None:
        raise FileNotFoundError(f"no LAFEAT heads in {d}. {MISSING_HEADS_HELP}")
    _, manifest = found
    meta = manifest.get("meta", {})
    if meta.get("format") != FORMAT:
        raise ValueError(f"{d} does not hold LAFEAT heads (format {meta.get('format')!r})")
    heads0 = LafeatHeads(params={}, layers=tuple(meta["layers"]), kind=meta["kind"],
                         num_classes=int(meta["num_classes"]), width=int(meta["width"]), hidden=int(meta["hidden"]),
                         record=meta["record"])
    if check:
        check_heads(heads0, model)  # the architecture first: another model cannot even be restored
    target, _ = init_heads(model, variables, heads0.layers, jax.random.PRNGKey(0), heads0.kind, heads0.width,
                           heads0.hidden)
    try:
        restored = restore_checkpoint(d, {"params": target})
    except ValueError as e:
        raise ValueError(f"the LAFEAT heads in {d} do not fit this {_model_name(model)}: {e}") from None
    if restored is None:
        raise FileNotFoundError(f"no intact LAFEAT heads in {d}. {MISSING_HEADS_HELP}")
    heads = dataclasses.replace(heads0, params=restored[0]["params"])
    if check and variables is not None:
        check_heads(heads, model, variables)
    return heads


# ------------------------------------------------------------------------------------------------
# `advjax lafeat-heads`
# ------------------------------------------------------------------------------------------------


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, help="run directory or checkpoint directory")
    parser.add_argument("--which", default="best", choices=("best", "last"), help="which checkpoint of a run")
    parser.add_argument("--epochs", type=int, default=10, help="passes over the training split (code: 50-100)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--n-examples", type=int, default=None, help="train on the first N training images only")
    parser.add_argument("--split", default=None, help="training split (default: the run's train split)")
    parser.add_argument("--data-dir", default=None, help="data directory (default: the run's)")
    parser.add_argument("--layers", default=None, help="comma-separated layer names (default: the last 4 convs)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--force", action="store_true", help="retrain even if heads exist")


def run(args: argparse.Namespace) -> int:
    """Train LAFEAT heads for a checkpoint and store them beside it (:func:`heads_dir`)."""
    try:
        from advjax.eval.command import _cfg, _load_checkpoint
        from advjax.data import load

        checkpoint = os.path.abspath(os.path.expanduser(args.checkpoint))
        model, variables, config, info = _load_checkpoint(checkpoint, args.which)
        ck_path = (info or {}).get("path", checkpoint)
        out = heads_dir(ck_path, (info or {}).get("kind"))
        if not args.force:
            try:
                load_heads(out, model, variables)
                print(f"LAFEAT heads for {ck_path} already in {out} (use --force to retrain)")
                return 0
            except FileNotFoundError:
                pass
            except ValueError as e:  # heads of other weights (the run went on): replace them
                print(f"advjax lafeat-heads: replacing the heads in {out}: {e}", file=sys.stderr)
        dataset = _cfg(config, "dataset")
        split = args.split or _cfg(config, "train_split", "train")
        data = load(dataset, split, data_dir=args.data_dir or _cfg(config, "data_dir"))
        x = data.x if args.n_examples is None else data.x[:args.n_examples]
        layers = [s.strip() for s in args.layers.split(",")] if args.layers else None
        heads = train_lafeat_heads(model, variables, x, args.seed, layers=layers, epochs=args.epochs,
                                   batch_size=args.batch_size, log=True,
                                   checkpoint={"path": str(ck_path), "step": (info or {}).get("step")})
    except (ValueError, FileNotFoundError, RuntimeError) as e:
        print(f"advjax lafeat-heads: error: {e}", file=sys.stderr)
        return 2
    path = save_heads(heads, out)
    print(f"wrote LAFEAT heads ({', '.join(heads.layers)}) to {path}")
    return 0
