"""The HLDR paper's evaluation protocol (Schwartz & Ditzler, §IV-V) as a reusable driver.

1. Pretrain the classifier on ``n_pretrain`` samples drawn (stratified) from the pool, with early
   stopping on the loss of a held-out ``val_fraction`` of them (patience ``pretrain_patience``
   epochs, at most ``pretrain_max_epochs``; the best-validation-loss weights are kept); then those
   samples are discarded.
2. Split the rest with scikit-learn's ``StratifiedKFold(n_folds, shuffle=True, random_state=seed)``.
3. In every fold, fine-tune each defense with Nadam from the SAME pretrained variables on the pairs
   made from ``n_pairs`` benign samples of the fold's training part (D, or D_N when the defense has
   ``noise_sigma``; one epoch = ``n_pairs`` x the defense's pair kinds samples, so each (x, eps) pair
   is visited once per epoch on average; AGNT and other single-input defenses see as many samples as
   D has pairs). The undefended model is the pretrained model itself.
4. Evaluate on the fold's test part (its first ``n_eval`` samples): benign accuracy, FGSM accuracy
   vs eps (white-box against each defended model; ``transfer=True``: the FGSM examples of the
   undefended model, the released code's setting, labelled "transfer"), Gaussian-noise accuracy vs
   sigma, the per-layer mean relative error at ``layer_error_eps`` (Fig. 6) and the fine-tuning time
   per sample (Table I).
5. Summaries over folds: mean and a 95 % Student-t interval, mean +- t_{0.975, k-1} * s / sqrt(k)
   (s the sample standard deviation over the k folds); the gain over the undefended model is the
   per-fold difference summarized the same way (paired).

Each finished fold is written to ``out_dir/folds/fold_<k>.json`` (atomically) and the pretrained
variables to ``out_dir/pretrained`` (orbax, :mod:`advjax.train.checkpoint`): a killed run resumes at
the next unfinished fold. ``out_dir/config.json`` records the configuration and the defenses; a
different configuration in the same directory is a ValueError naming the differing keys.

Defenses are any :class:`advjax.methods.base.AdversarialMethod`; an :class:`advjax.methods.hgd.HGD`
is fine-tuned on :func:`advjax.models.hgd.hgd_defended` (a fresh denoiser in front of the frozen
pretrained target) and evaluated as that one module.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import pathlib
import time
import zlib
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["CVConfig", "stratified_folds", "pretrain_split", "train_epochs", "evaluate_defense",
           "interval95", "summarize", "cross_validate", "CVResult"]


@dataclasses.dataclass(frozen=True)
class CVConfig:
    """Settings of the protocol (defaults: the paper's where it states them)."""
    n_folds: int = 10
    n_pretrain: int = 10000
    val_fraction: float = 0.05  # of the pretraining samples, for early stopping (not stated; the code's 5 %)
    pretrain_max_epochs: int = 1000
    pretrain_patience: int = 100
    pretrain_lr: float = 1e-3
    n_pairs: int = 2000  # benign samples per fold: 2000 x {0, 16, 32}/255 = the paper's 6000 pairs
    finetune_epochs: int = 10  # not stated in the paper; the code's 10
    batch_size: int = 64
    lr: float = 1e-3  # Nadam's Keras default
    eval_eps: tuple = (0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25)  # the code's FGSM budgets
    eval_sigma: tuple = (0.05, 0.15, 0.25)  # the code's noise powers
    n_eval: int | None = None  # test samples per fold evaluated (None: all)
    layer_error_eps: float = 8 / 255
    transfer: bool = False
    hgd_width_factor: float = 1.0
    seed: int = 0

    def validate(self):
        def pos_int(name, v, lo=1):
            if isinstance(v, bool) or not isinstance(v, int) or v < lo:
                raise ValueError(f"CVConfig.{name} must be an integer >= {lo}, got {v!r}")
        pos_int("n_folds", self.n_folds, 2)
        pos_int("n_pretrain", self.n_pretrain)
        pos_int("n_pairs", self.n_pairs)
        pos_int("finetune_epochs", self.finetune_epochs, 0)
        pos_int("pretrain_max_epochs", self.pretrain_max_epochs, 0)
        pos_int("pretrain_patience", self.pretrain_patience)
        pos_int("batch_size", self.batch_size)
        if not 0 < self.val_fraction < 1:
            raise ValueError(f"CVConfig.val_fraction must be in (0, 1), got {self.val_fraction}")
        for name in ("lr", "pretrain_lr"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and 0 < v <= 10):
                raise ValueError(f"CVConfig.{name} must be in (0, 10], got {v!r}")
        for e in tuple(self.eval_eps) + (self.layer_error_eps,):
            if not 0 <= e <= 1:
                raise ValueError(f"CVConfig: FGSM budgets must be in [0, 1] (pixels), got {e}")
        for s in self.eval_sigma:
            if not s > 0:
                raise ValueError(f"CVConfig.eval_sigma must be > 0, got {s}")
        if self.n_eval is not None:
            pos_int("n_eval", self.n_eval)

    def to_dict(self):
        d = dataclasses.asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


# -------------------------------------------------------------------------- splits


def pretrain_split(y, n_pretrain: int, seed: int = 0):
    """(pretraining indices, the rest): a stratified random subset of ``n_pretrain`` samples."""
    from sklearn.model_selection import train_test_split

    y = np.asarray(y)
    if not 0 < n_pretrain < len(y):
        raise ValueError(f"n_pretrain={n_pretrain} must be in (0, {len(y)}) (the number of samples)")
    idx = np.arange(len(y))
    pre, rest = train_test_split(idx, train_size=n_pretrain, stratify=y, random_state=seed)
    return np.sort(pre), np.sort(rest)


def stratified_folds(y, n_folds: int, seed: int = 0):
    """``[(train_idx, test_idx)]`` of ``StratifiedKFold(n_folds, shuffle=True, random_state=seed)``.
    More folds than samples in some class is a ValueError naming the class and its count."""
    from sklearn.model_selection import StratifiedKFold

    y = np.asarray(y)
    if isinstance(n_folds, bool) or not isinstance(n_folds, int) or n_folds < 2:
        raise ValueError(f"n_folds must be an integer >= 2, got {n_folds!r}")
    classes, counts = np.unique(y, return_counts=True)
    if counts.min() < n_folds:
        c = classes[int(np.argmin(counts))]
        raise ValueError(f"n_folds={n_folds} is more than the {counts.min()} samples of class {c}: every fold's test "
                         f"part needs each class; use at most {counts.min()} folds or more data")
    skf = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    return [(tr, te) for tr, te in skf.split(np.zeros(len(y)), y)]


# -------------------------------------------------------------------------- training


def _to_float(x):
    x = np.asarray(x)
    return x.astype(np.float32) / 255.0 if x.dtype == np.uint8 else x.astype(np.float32)


@functools.lru_cache(maxsize=16)
def _nadam(lr):
    """One optax Nadam per learning rate (cached: the TrainState's static ``tx`` must be the same
    object for a compiled step to be reused across folds)."""
    from advjax.train.optim import OptimizerConfig, make_optimizer

    tx, _ = make_optimizer(OptimizerConfig(name="nadam", lr=lr), total_steps=1)
    return tx


@functools.lru_cache(maxsize=64)
def _compiled_step(method):
    """``jit(step)`` with the per-step key ``fold_in(state.key, state.step)``, one per method (the
    model is part of the state's treedef): every fold reuses the compiled program."""
    return jax.jit(lambda s, batch: method.step(s, batch, jax.random.fold_in(s.key, s.step)))


@functools.lru_cache(maxsize=64)
def _val_loss_fn(model):
    from advjax.models import logits_fn
    from advjax.losses import cross_entropy

    apply_fn = logits_fn(model)
    return jax.jit(lambda v, x, y: jnp.sum(cross_entropy(apply_fn(v, x), y)))


def train_epochs(method, model, variables, x, y, *, epochs: int, batch_size: int, lr: float, key,
                 repeat: int = 1, x_val=None, y_val=None, patience: int | None = None, log: Callable | None = None):
    """Train ``method`` (its compiled ``step``) with Nadam from ``variables`` for ``epochs`` epochs over
    ``repeat`` shuffled copies of (x, y) per epoch; with validation data, stop after ``patience``
    epochs without a lower validation loss and return the best variables.

    Returns ``(variables, info)`` with ``info = {"epochs", "val_loss" (list), "seconds_per_sample"}``
    (wall time of the steps after the first, i.e. without compilation, per training sample).
    """
    from advjax.train.state import create_train_state

    x = _to_float(x)
    y = np.asarray(y, np.int32)
    n = len(y) * repeat
    if n < batch_size:
        raise ValueError(f"train_epochs: {n} training samples are fewer than one batch of {batch_size}")
    state = create_train_state(model, _nadam(lr), key, variables=variables)
    state = method.init_state(state, (jnp.asarray(x[:batch_size]), jnp.asarray(y[:batch_size])))
    step = _compiled_step(method)
    val_fn = _val_loss_fn(model) if x_val is not None else None
    best, best_loss, since, history = variables, math.inf, 0, []
    rng = np.random.default_rng(int(jax.random.randint(jax.random.fold_in(key, 1), (), 0, 2**31 - 1)))
    t_steps, n_timed, done = 0.0, 0, 0
    for epoch in range(epochs):
        order = np.concatenate([rng.permutation(len(y)) for _ in range(repeat)])
        for b in range(n // batch_size):
            idx = order[b * batch_size:(b + 1) * batch_size]
            t0 = time.perf_counter()
            state, metrics = step(state, (jnp.asarray(x[idx]), jnp.asarray(y[idx])))
            if done:
                jax.block_until_ready(state.params)
                t_steps += time.perf_counter() - t0
                n_timed += batch_size
            else:
                jax.block_until_ready(state.params)
            done += 1
        if val_fn is not None:
            vl = _batched_sum(val_fn, state.variables(), _to_float(x_val), np.asarray(y_val, np.int32), 500) / len(y_val)
            history.append(vl)
            if log:
                log(f"epoch {epoch + 1}: val loss {vl:.4f}")
            if vl < best_loss - 1e-6:
                best, best_loss, since = state.variables(), vl, 0
            else:
                since += 1
                if patience is not None and since >= patience:
                    break
        else:
            best = state.variables()
    if val_fn is None and epochs == 0:
        best = variables
    variables_out = jax.tree.map(np.asarray, {k: v for k, v in best.items() if k in ("params", "batch_stats")})
    return variables_out, {"epochs": epoch + 1 if epochs else 0, "val_loss": history,
                           "seconds_per_sample": t_steps / n_timed if n_timed else None}


def _batched_sum(fn, variables, x, y, bs):
    return float(sum(float(fn(variables, jnp.asarray(x[i:i + bs]), jnp.asarray(y[i:i + bs])))
                     for i in range(0, len(y), bs)))


# -------------------------------------------------------------------------- evaluation


@functools.lru_cache(maxsize=64)
def _predict_fn(apply_fn):
    return jax.jit(lambda v, z: jnp.argmax(apply_fn(v, z), -1))


def _accuracy(apply_fn, variables, x, bs=500):
    f = _predict_fn(apply_fn)
    return np.concatenate([np.asarray(f(variables, jnp.asarray(x[i:i + bs]))) for i in range(0, len(x), bs)])


def _attack_all(attack, apply_fn, variables, x, y, key, bs=500):
    return np.concatenate([np.asarray(attack(apply_fn, variables, jnp.asarray(x[i:i + bs]), jnp.asarray(y[i:i + bs]),
                                             jax.random.fold_in(key, i))) for i in range(0, len(x), bs)])


def conv_layers(model):
    """Fig. 6's layers: the hidden conv outputs of ``model`` (of its target, for an HGD module)."""
    from advjax import layers as layers_mod

    names = layers_mod.names(model, kind="learnable")
    out = [n for n in names if "conv" in n.split("/")[-1].lower()]
    if any(n.startswith("target/") for n in out):
        out = [n for n in out if n.startswith("target/")]
    return out


@functools.lru_cache(maxsize=64)
def _layer_error_fn(model):
    import collections

    from advjax.layers import capture
    from advjax.losses.ldr import latent_disparity_per_layer

    names = conv_layers(model)

    @jax.jit
    def f(v, a, b):
        _, fa = capture(model, v, a)
        _, fb = capture(model, v, b)
        fa = collections.OrderedDict((k, fa[k]) for k in names)
        fb = collections.OrderedDict((k, fb[k]) for k in names)
        return latent_disparity_per_layer(fa, fb, layers=list(names))

    return f, names


def layer_errors(model, variables, x, x_a, bs=250):
    """Fig. 6: per hidden conv layer, mean_n ||s_i(x_n) - s_i(x_a,n)||_1 / ||s_i(x_n)||_1 (eval mode)."""
    f, names = _layer_error_fn(model)
    sums, count = None, 0
    for i in range(0, len(x), bs):
        a, b = jnp.asarray(x[i:i + bs]), jnp.asarray(x_a[i:i + bs])
        r = f(variables, a, b)
        w = a.shape[0]
        vals = np.array([float(r[k]) for k in names]) * w
        sums = vals if sums is None else sums + vals
        count += w
    short = [n[len("target/"):] if n.startswith("target/") else n for n in names]
    return dict(zip(short, (sums / count).tolist()))


def evaluate_defense(model, variables, x, y, cfg: CVConfig, key, *, transfer_from=None):
    """One defended model on one fold's test samples: ``{"benign", "fgsm": {eps: acc}, "noise":
    {sigma: acc}, "layer_error": {layer: value}}`` (accuracies in %). ``transfer_from``:
    ``(model, variables)`` whose FGSM examples are used instead of the model's own (labelled)."""
    from advjax.attacks import FGSM
    from advjax.attacks.noise import GaussianNoise
    from advjax.models import logits_fn

    apply_fn = logits_fn(model)
    x = _to_float(x)
    y = np.asarray(y, np.int32)
    src_fn, src_vars = (apply_fn, variables) if transfer_from is None else (logits_fn(transfer_from[0]), transfer_from[1])
    out = {"benign": 100.0 * float(np.mean(_accuracy(apply_fn, variables, x) == y)), "fgsm": {}, "noise": {},
           "fgsm_source": "white-box" if transfer_from is None else "transfer (FGSM of the undefended model)"}
    for i, e in enumerate(cfg.eval_eps):
        x_adv = _attack_all(FGSM(eps=float(e)), src_fn, src_vars, x, y, jax.random.fold_in(key, i))
        out["fgsm"][f"{e:.6g}"] = 100.0 * float(np.mean(_accuracy(apply_fn, variables, x_adv) == y))
    for i, s in enumerate(cfg.eval_sigma):
        x_n = _attack_all(GaussianNoise(eps=float(s)), apply_fn, variables, x, y, jax.random.fold_in(key, 100 + i))
        out["noise"][f"{s:.6g}"] = 100.0 * float(np.mean(_accuracy(apply_fn, variables, x_n) == y))
    x_a = _attack_all(FGSM(eps=float(cfg.layer_error_eps)), src_fn, src_vars, x, y, jax.random.fold_in(key, 200))
    out["layer_error"] = layer_errors(model, variables, x, x_a)
    return out


# -------------------------------------------------------------------------- summaries


def interval95(values):
    """(mean, half-width) of the 95 % Student-t interval over folds: t_{0.975, k-1} * s / sqrt(k)
    (s the sample std, ddof=1); half-width None for k = 1."""
    v = np.asarray([float(a) for a in values], np.float64)
    if v.size == 0:
        return None, None
    m = float(v.mean())
    if v.size < 2:
        return m, None
    from scipy import stats

    return m, float(stats.t.ppf(0.975, v.size - 1) * v.std(ddof=1) / math.sqrt(v.size))


def summarize(folds: list, undefended: str = "undefended") -> dict:
    """``{defense: {"benign": (m, h), "fgsm": {eps: (m, h)}, "noise": {...}, "gain_fgsm": {...},
    "gain_noise": {...}, "gain_benign": (m, h), "layer_error": {layer: (m, h)}, "seconds_per_sample"}}``."""
    names = list(folds[0]["defenses"])
    out = {}
    for name in names:
        rows = [f["defenses"][name] for f in folds]
        base = [f["defenses"][undefended] for f in folds] if undefended in folds[0]["defenses"] else None
        d = {"benign": interval95([r["benign"] for r in rows])}
        for part in ("fgsm", "noise", "layer_error"):
            d[part] = {k: interval95([r[part][k] for r in rows]) for k in rows[0][part]}
        if base is not None:
            d["gain_benign"] = interval95([r["benign"] - b["benign"] for r, b in zip(rows, base)])
            for part in ("fgsm", "noise"):
                d[f"gain_{part}"] = {k: interval95([r[part][k] - b[part][k] for r, b in zip(rows, base)])
                                     for k in rows[0][part]}
        secs = [r.get("seconds_per_sample") for r in rows if r.get("seconds_per_sample") is not None]
        d["seconds_per_sample"] = interval95(secs) if secs else (None, None)
        out[name] = d
    return out


# -------------------------------------------------------------------------- the driver


@dataclasses.dataclass
class CVResult:
    folds: list  # per fold: {"fold", "n_train_pairs", "n_test", "defenses": {name: evaluation}}
    summary: dict
    pretrain: dict
    out_dir: str | None


def _write_json(path: pathlib.Path, obj):
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _is_hgd(method):
    from advjax.methods.hgd import HGD

    return isinstance(method, HGD)


def _check_defense(name, method, model):
    """Layer settings the model lacks, before anything is compiled."""
    from advjax import layers as layers_mod
    from advjax.losses.ldr import hidden_layers
    from advjax.methods.hldr import HLDR

    if isinstance(method, HLDR):
        hidden_layers(layers_mod.names(model, kind=method.kind), method.regularizer.layers)
    elif _is_hgd(method):
        method._layer(model)
    if not hasattr(method, "step"):
        raise ValueError(f"cross_validate: defense {name!r} is not a training method (no step)")


def _defense_model(method, model, cfg):
    if not _is_hgd(method):
        return model
    from advjax.models.hgd import hgd_defended

    return hgd_defended(model, width_factor=cfg.hgd_width_factor)


def _defense_init(method, dmodel, pretrained, key):
    if not _is_hgd(method):
        return pretrained
    from advjax.models.hgd import numpy_init

    fresh = numpy_init(dmodel, int(jax.random.randint(key, (), 0, 2**31 - 1)), dmodel.input_shape)
    out = {"params": {"denoiser": fresh["params"]["denoiser"], "target": pretrained["params"]}}
    bs = {}
    if "batch_stats" in fresh:
        bs["denoiser"] = fresh["batch_stats"]["denoiser"]
    if "batch_stats" in pretrained:
        bs["target"] = pretrained["batch_stats"]
    if bs:
        out["batch_stats"] = bs
    return out


def _pair_kinds(method):
    base = getattr(method, "base", method)
    eps = getattr(base, "eps", None)
    if isinstance(eps, tuple):
        return len(eps) + (1 if getattr(base, "noise_sigma", None) else 0)
    pk = getattr(method, "pair_kinds", None)
    if isinstance(pk, int):
        return pk + (1 if getattr(method, "noise_sigma", None) else 0)
    # AGNT and other single-input methods: as many samples per epoch as D has pairs (the paper's AGNT
    # trains on AGN versions of the benign analogs of D's 6000 adversarial samples)
    from advjax.methods.hldr import PAPER_EPS

    return len(PAPER_EPS)


def _seed_of(name):
    return zlib.crc32(name.encode()) & 0x7FFFFFFF


def cross_validate(cfg: CVConfig, x, y, model, defenses: Mapping[str, Any], *, out_dir=None,
                   fold_limit: int | None = None, log: Callable | None = print, extra_config: dict | None = None
                   ) -> CVResult:
    """Run the protocol (module docstring) on the pool (x, y) with classifier ``model`` and the
    ``defenses`` ({name: method}); ``"undefended"`` (the pretrained model) is always evaluated.
    ``fold_limit``: run only the first folds (the others are neither run nor required).
    """
    from advjax.methods.standard import Standard
    from advjax.models.hgd import numpy_init

    cfg.validate()
    log = log or (lambda *_: None)
    y = np.asarray(y, np.int32)
    if len(x) != len(y):
        raise ValueError(f"cross_validate: {len(x)} images but {len(y)} labels")
    if "undefended" in defenses:
        raise ValueError("cross_validate: 'undefended' is reserved for the pretrained model; rename that defense")
    for name, m in defenses.items():
        _check_defense(name, m, model)
    pre_idx, rest = pretrain_split(y, cfg.n_pretrain, cfg.seed)
    folds = stratified_folds(y[rest], cfg.n_folds, cfg.seed)
    min_train = min(len(tr) for tr, _ in folds)
    if cfg.n_pairs > min_train:
        raise ValueError(f"CVConfig.n_pairs={cfg.n_pairs} is more than a fold's {min_train} training samples")
    k_run = fold_limit if fold_limit is not None else cfg.n_folds
    if not 1 <= k_run <= cfg.n_folds:
        raise ValueError(f"fold_limit={fold_limit} must be in [1, {cfg.n_folds}]")

    record = {"cv": cfg.to_dict(), "model": repr(model), "defenses": {k: repr(v) for k, v in defenses.items()},
              "n_samples": int(len(y)), **(extra_config or {})}
    record = json.loads(json.dumps(record))
    out = pathlib.Path(out_dir).absolute() if out_dir is not None else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "folds").mkdir(exist_ok=True)
        cpath = out / "config.json"
        if cpath.exists():
            from advjax.train.config import config_diff

            old = json.loads(cpath.read_text())
            diff = config_diff(old, record, ignore=())
            if diff:
                raise ValueError(f"cross_validate: {out} holds a run of another configuration (differs in: "
                                 f"{', '.join(diff)}); use another out_dir or delete that one")
        else:
            _write_json(cpath, record)

    # 1. pretraining (checkpointed)
    key = jax.random.PRNGKey(cfg.seed)
    template = numpy_init(model, cfg.seed, model.input_shape)
    pretrained, pre_info = None, {}
    if out is not None and (out / "pretrained").exists():
        from advjax.train.checkpoint import restore_checkpoint

        got = restore_checkpoint(out / "pretrained", {"variables": template})
        if got is not None:
            pretrained, meta, _ = got
            pretrained, pre_info = pretrained["variables"], meta
            log(f"pretrained model restored from {out / 'pretrained'}")
    if pretrained is None:
        from sklearn.model_selection import train_test_split

        tr, va = train_test_split(pre_idx, test_size=cfg.val_fraction, stratify=y[pre_idx], random_state=cfg.seed)
        log(f"pretraining on {len(tr)} samples (validation {len(va)}), at most {cfg.pretrain_max_epochs} epochs, "
            f"patience {cfg.pretrain_patience}")
        t0 = time.perf_counter()
        pretrained, info = train_epochs(Standard(), model, template, x[tr], y[tr], epochs=cfg.pretrain_max_epochs,
                                        batch_size=cfg.batch_size, lr=cfg.pretrain_lr,
                                        key=jax.random.fold_in(key, 1), x_val=x[va], y_val=y[va],
                                        patience=cfg.pretrain_patience, log=log)
        pre_info = {"epochs": info["epochs"], "best_val_loss": min(info["val_loss"]) if info["val_loss"] else None,
                    "seconds": time.perf_counter() - t0}
        if out is not None:
            from advjax.train.checkpoint import save_checkpoint

            save_checkpoint(out / "pretrained", {"variables": pretrained}, meta={**pre_info, "step": 0})
    pretrained = jax.tree.map(np.asarray, pretrained)

    # 2-4. folds
    results = []
    for k in range(k_run):
        fpath = out / "folds" / f"fold_{k}.json" if out is not None else None
        if fpath is not None and fpath.exists():
            results.append(json.loads(fpath.read_text()))
            log(f"fold {k + 1}/{cfg.n_folds}: done earlier, read from {fpath}")
            continue
        tr, te = rest[folds[k][0]], rest[folds[k][1]]
        te = te[: cfg.n_eval] if cfg.n_eval else te
        rng = np.random.default_rng(cfg.seed + 1000 + k)
        pairs = np.sort(rng.choice(tr, size=cfg.n_pairs, replace=False))
        k_fold = jax.random.fold_in(key, 10 + k)
        ev_key = jax.random.fold_in(k_fold, 0)
        fold = {"fold": k, "n_pairs_benign": int(len(pairs)), "n_test": int(len(te)), "defenses": {}}
        t0 = time.perf_counter()
        fold["defenses"]["undefended"] = evaluate_defense(model, pretrained, x[te], y[te], cfg, ev_key)
        for name, method in defenses.items():
            dmodel = _defense_model(method, model, cfg)
            init = _defense_init(method, dmodel, pretrained, jax.random.fold_in(k_fold, 1 + _seed_of(name)))
            repeat = _pair_kinds(method)
            variables, info = train_epochs(method, dmodel, init, x[pairs], y[pairs], epochs=cfg.finetune_epochs,
                                           batch_size=cfg.batch_size, lr=cfg.lr, repeat=repeat,
                                           key=jax.random.fold_in(k_fold, 2 + _seed_of(name)))
            ev = evaluate_defense(dmodel, variables, x[te], y[te], cfg, ev_key,
                                  transfer_from=(model, pretrained) if cfg.transfer else None)
            ev["seconds_per_sample"] = info["seconds_per_sample"]
            ev["n_train_samples"] = int(len(pairs) * repeat * cfg.finetune_epochs)
            fold["defenses"][name] = ev
            log(f"fold {k + 1}/{cfg.n_folds} {name}: benign {ev['benign']:.1f}%, FGSM "
                + ", ".join(f"{e}: {a:.1f}" for e, a in ev["fgsm"].items()))
        fold["seconds"] = time.perf_counter() - t0
        if fpath is not None:
            _write_json(fpath, fold)
        results.append(fold)
    return CVResult(folds=results, summary=summarize(results), pretrain=pre_info,
                    out_dir=None if out is None else str(out))
