"""The training loop: ``fit(config, ...)`` runs a method over a dataset into one run directory.

Per run: one jitted step (state donated, batch sharded on ``"data"``, state replicated; compiled
once), per-step keys ``fold_in(state.key, state.step)`` (no host randomness), epoch order from
``advjax.data.epoch_order(n, seed, epoch)``. After every epoch: clean and PGD accuracy (``eval_steps``
steps, ``eval_eps``, step ``eval_alpha``, random start) on a fixed held-out subset of the training
data and on the test data: the catastrophic-overfitting monitor of the fast-AT papers.

Run directory::

    config.json          the resolved TrainConfig (a different one there is an error)
    metrics.jsonl        one JSON record per epoch
    checkpoints/last/    every ``ckpt_every`` steps and at each epoch end (exact resume point)
    checkpoints/best/    by test PGD accuracy
    curves.png           loss and clean/PGD accuracy curves, written at the end

Exact resume: checkpoints hold the TrainState, the data position (epoch, batch) and the running
epoch sums; re-running the same command continues from the newest good checkpoint and ends with
bit-identical parameters to an uninterrupted run on the same machine.
"""
from __future__ import annotations

import dataclasses
import json
import pathlib
import sys
import time
from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np

from advjax.train import checkpoint as ckpt
from advjax.train.config import TrainConfig, config_diff
from advjax.train.mesh import batch_sharding, check_batch_size, make_mesh, replicated
from advjax.train.optim import make_optimizer
from advjax.train.state import TrainState, create_train_state

__all__ = ["fit", "FitResult", "evaluate", "plot_curves", "prepare_run_dir"]


@dataclasses.dataclass
class FitResult:
    state: TrainState
    history: list
    run_dir: pathlib.Path
    best: Optional[dict]


def _xy(data):
    if hasattr(data, "x") and hasattr(data, "y"):
        return np.asarray(data.x), np.asarray(data.y)
    x, y = data
    return np.asarray(x), np.asarray(y)


def _to_float(x):
    return x.astype(np.float32) / np.float32(255.0) if x.dtype == np.uint8 else x.astype(np.float32, copy=False)


def _epoch_order(n, seed, epoch):
    try:
        from advjax.data import epoch_order
        return epoch_order(n, seed=seed, epoch=epoch)
    except ImportError:
        return np.random.default_rng(np.random.SeedSequence([seed, epoch])).permutation(n)


def prepare_run_dir(config: TrainConfig) -> pathlib.Path:
    """Create the run dir and write config.json, or check an existing one equals ``config``."""
    run_dir = pathlib.Path(config.run_dir)
    cfg_path = run_dir / "config.json"
    if cfg_path.is_file():
        try:
            old = json.loads(cfg_path.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"run directory {run_dir} has an unreadable config.json ({e})") from None
        diff = config_diff(old, config.to_dict())
        if diff:
            raise ValueError(f"run directory {run_dir} holds a different configuration (differs in {diff}); "
                             f"use another run_dir or the same settings to resume")
    else:
        run_dir.mkdir(parents=True, exist_ok=True)
        tmp = cfg_path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(config.to_dict(), indent=2))
        tmp.rename(cfg_path)
    return run_dir


def _pgd_attack(eps, steps, alpha, domain=(0.0, 1.0)):
    from advjax.attacks import PGD
    return PGD(eps=eps, steps=steps, step_size=alpha, random_start=True, domain=domain, check_inputs=False).run


def make_eval_fn(model, mesh, eps, steps, alpha, domain=(0.0, 1.0)):
    """Jitted ``(variables, x, y, mask, key) -> (clean correct count, PGD correct count)``."""
    attack = _pgd_attack(eps, steps, alpha, domain)
    apply_fn = lambda v, x: model.apply(v, x, train=False)

    def fn(variables, x, y, mask, key):
        clean = jnp.argmax(apply_fn(variables, x), -1) == y
        x_adv = attack(apply_fn, variables, x, y, key) if eps > 0 else x
        adv = jnp.argmax(apply_fn(variables, x_adv), -1) == y
        return jnp.sum(clean * mask), jnp.sum(adv * mask)

    return jax.jit(fn, in_shardings=(replicated(mesh),) + (batch_sharding(mesh),) * 3 + (replicated(mesh),),
                   out_shardings=replicated(mesh))


def evaluate(eval_fn, variables, x, y, batch_size, key, mesh) -> tuple[float, float]:
    """Clean and PGD accuracy over (x, y), padding the last batch (masked)."""
    n = len(x)
    if n == 0:
        return float("nan"), float("nan")
    clean = adv = 0
    outs = []
    for i, s in enumerate(range(0, n, batch_size)):
        xb, yb = _to_float(x[s:s + batch_size]), y[s:s + batch_size].astype(np.int32)
        m = np.ones(len(xb), np.float32)
        pad = batch_size - len(xb)
        if pad:
            xb = np.concatenate([xb, np.zeros((pad, *xb.shape[1:]), xb.dtype)])
            yb = np.concatenate([yb, np.zeros(pad, yb.dtype)])
            m = np.concatenate([m, np.zeros(pad, np.float32)])
        batch = jax.device_put((xb, yb, m), batch_sharding(mesh))
        outs.append(eval_fn(variables, *batch, jax.random.fold_in(key, i)))
    for c, a in outs:
        clean += int(c)
        adv += int(a)
    return clean / n, adv / n


def plot_curves(history: list, path) -> None:
    """Loss and clean/PGD accuracy (train subset, test) per epoch, saved to ``path``."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not history:
        return
    ep = [h["epoch"] for h in history]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
    a1.plot(ep, [h["train_loss"] for h in history], marker="o")
    a1.set(xlabel="epoch", ylabel="training loss", title="loss")
    for k, st in (("train_clean_acc", "C0--"), ("train_pgd_acc", "C1--"), ("test_clean_acc", "C0-"), ("test_pgd_acc", "C1-")):
        a2.plot(ep, [h[k] for h in history], st, marker="o", label=k)
    a2.set(xlabel="epoch", ylabel="accuracy", ylim=(0, 1), title="clean / PGD accuracy")
    a2.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _load_data(config: TrainConfig, split: str):
    from advjax.data import load
    return load(config.dataset, split, data_dir=config.data_dir)


def _resolve(config: TrainConfig, train_data) -> TrainConfig:
    changes = {}
    if config.num_classes is None:
        nc = getattr(train_data, "num_classes", None)
        if nc is None:
            nc = int(np.max(_xy(train_data)[1])) + 1
        changes["num_classes"] = int(nc)
    if config.input_shape is None:
        changes["input_shape"] = tuple(int(s) for s in _xy(train_data)[0].shape[1:])
    return config.replace(**changes) if changes else config


def fit(config: TrainConfig, *, train_data=None, test_data=None, model=None, method=None,
        progress: bool = True, log_every: int = 10) -> FitResult:
    """Train ``config.method`` on ``config.model`` x ``config.dataset`` into ``config.run_dir``.

    ``train_data`` / ``test_data``: an ``advjax.data.Dataset`` or an ``(x, y)`` pair (uint8 images
    are scaled to [0, 1]); loaded with ``advjax.data.load`` from the config when None. ``model`` /
    ``method`` override the config's (the config still names the run). Resumes from the run dir's
    newest good checkpoint. Every check of the settings happens before anything is compiled.
    """
    if not isinstance(config, TrainConfig):
        raise ValueError(f"fit: config must be a TrainConfig, got {type(config).__name__}")
    config.validate()
    mesh = make_mesh(config.devices)
    check_batch_size(config.batch_size, mesh)
    eval_bs = config.eval_batch_size or config.batch_size
    check_batch_size(eval_bs, mesh)
    if train_data is None:
        train_data = _load_data(config, config.train_split)
    if test_data is None:
        test_data = _load_data(config, config.test_split)
    config = _resolve(config, train_data)
    x_tr, y_tr = _xy(train_data)
    x_te, y_te = _xy(test_data)
    n = len(x_tr)
    spe = n // config.batch_size
    if spe < 1:
        raise ValueError(f"the training set has {n} examples, fewer than one batch of {config.batch_size}")
    if method is None:
        method = config.build_method()
    if model is None:
        model = config.build_model()
    run_dir = prepare_run_dir(config)

    ups = int(getattr(method, "updates_per_step", 1))
    tx, schedule = make_optimizer(config.optimizer, config.epochs * spe * ups, spe * ups)
    state = create_train_state(model, tx, jax.random.PRNGKey(config.seed), batch_size=1)
    example = (_to_float(x_tr[: config.batch_size]), y_tr[: config.batch_size].astype(np.int32))
    if hasattr(method, "init_state"):
        state = method.init_state(state, example)

    # -- resume ---------------------------------------------------------------------------------
    meta: dict[str, Any] = {"epoch": 0, "batch": 0, "history": [], "best": None, "sums": None}
    restored = ckpt.restore_checkpoint(run_dir / "checkpoints" / "last", state)
    if restored is not None:
        state, meta, path = restored
        print(f"[advjax] resuming from {path} (epoch {meta['epoch']}, batch {meta['batch']})", file=sys.stderr)
    history = list(meta["history"])
    best = meta["best"]
    with open(run_dir / "metrics.jsonl", "w") as f:  # exactly the records of completed epochs
        for rec in history:
            f.write(json.dumps(rec) + "\n")

    repl, data_sh = replicated(mesh), batch_sharding(mesh)
    state = jax.device_put(state, repl)

    augment = None
    if config.augment:
        from advjax.data import augment as _augment
        augment = _augment

    def train_step(state, sums, batch):
        key = jax.random.fold_in(state.key, state.step)
        x, y = batch
        if augment is not None:
            key, k_aug = jax.random.split(key)
            x = augment(k_aug, x)
        new_state, metrics = method.step(state, (x, y), key)
        metrics = {k: jnp.asarray(v, jnp.float32) for k, v in metrics.items()}
        sums = {k: sums[k] + metrics[k] for k in sums} if sums else metrics
        return new_state, sums, metrics

    # one compile: metric names fixed by an abstract evaluation (no FLOPs)
    _, _, m_shape = jax.eval_shape(train_step, state, {}, jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), example))
    zero_sums = {k: np.zeros((), np.float32) for k in m_shape}
    step_fn = jax.jit(train_step, in_shardings=(repl, repl, data_sh), out_shardings=(repl, repl, repl),
                      donate_argnums=(0, 1))
    eval_eps = config.resolved_eval_eps(method)
    eval_alpha = config.eval_alpha if config.eval_alpha is not None else eval_eps / 4
    domain = getattr(train_data, "domain", "auto")
    if domain == "auto":  # (x, y) arrays: images if uint8 or already in [0, 1]
        domain = (0.0, 1.0) if x_tr.dtype == np.uint8 or (x_tr.min() >= 0 and x_tr.max() <= 1) else None
    eval_fn = make_eval_fn(model, mesh, eval_eps, config.eval_steps, eval_alpha,
                           None if domain is None else tuple(float(v) for v in domain))
    hold = _epoch_order(n, config.seed, 2**31 - 1)[: config.eval_size]  # fixed monitoring subset of train
    x_hold, y_hold = x_tr[hold], y_tr[hold]
    x_test, y_test = x_te[: config.eval_size], y_te[: config.eval_size]
    eval_key = jax.random.PRNGKey(config.seed + 1)

    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=config.epochs * spe * config.batch_size, unit="img", unit_scale=True, dynamic_ncols=True,
                   initial=(meta["epoch"] * spe + meta["batch"]) * config.batch_size, file=sys.stderr)

    def save_last(epoch, batch, sums_host):
        m = {"epoch": epoch, "batch": batch, "history": history, "best": best, "sums": sums_host}
        ckpt.save_checkpoint(run_dir / "checkpoints" / "last", state, m, keep=config.keep)

    compiled = False
    try:
        for epoch in range(meta["epoch"], config.epochs):
            order = _epoch_order(n, config.seed, epoch)
            start = meta["batch"] if epoch == meta["epoch"] else 0
            if start and meta.get("sums"):
                sums = {k: np.asarray(meta["sums"][k], np.float32) for k in zero_sums}
            else:
                sums = dict(zero_sums)
            sums = jax.device_put(sums, repl)
            t0, timed_from = time.perf_counter(), start
            for b in range(start, spe):
                idx = order[b * config.batch_size:(b + 1) * config.batch_size]
                batch = jax.device_put((_to_float(x_tr[idx]), y_tr[idx].astype(np.int32)), data_sh)
                state, sums, metrics = step_fn(state, sums, batch)
                if not compiled:  # images/s excludes the one compilation
                    jax.block_until_ready(metrics)
                    compiled, t0, timed_from = True, time.perf_counter(), b + 1
                if bar is not None:
                    bar.update(config.batch_size)
                    if (b + 1) % log_every == 0 or b + 1 == spe:
                        bar.set_postfix(epoch=epoch + 1, loss=f"{float(metrics['loss']):.4f}",
                                        acc=f"{float(metrics.get('acc', jnp.nan)):.3f}")
                if config.ckpt_every and (b + 1) % config.ckpt_every == 0 and b + 1 < spe:
                    save_last(epoch, b + 1, {k: float(v) for k, v in jax.device_get(sums).items()})
            sums_host = {k: float(v) for k, v in jax.device_get(sums).items()}
            train_time = time.perf_counter() - t0
            done = spe - timed_from
            variables = state.variables()
            tr_clean, tr_adv = evaluate(eval_fn, variables, x_hold, y_hold, eval_bs, jax.random.fold_in(eval_key, 2 * epoch), mesh)
            te_clean, te_adv = evaluate(eval_fn, variables, x_test, y_test, eval_bs, jax.random.fold_in(eval_key, 2 * epoch + 1), mesh)
            rec = {"epoch": epoch + 1, "step": int(state.step),
                   "lr": float(schedule(max(int(state.step) - 1, 0))),
                   "train_loss": sums_host["loss"] / spe,
                   **{f"train_{k}": v / spe for k, v in sums_host.items() if k != "loss"},
                   "train_clean_acc": tr_clean, "train_pgd_acc": tr_adv,
                   "test_clean_acc": te_clean, "test_pgd_acc": te_adv,
                   "eval_eps": eval_eps, "eval_steps": config.eval_steps,
                   "images_per_s": done * config.batch_size / train_time if done and train_time > 0 else float("nan")}
            history.append(rec)
            with open(run_dir / "metrics.jsonl", "a") as f:
                f.write(json.dumps(rec) + "\n")
            if best is None or te_adv > best["test_pgd_acc"]:
                best = {"epoch": epoch + 1, "test_pgd_acc": te_adv, "test_clean_acc": te_clean}
                ckpt.save_checkpoint(run_dir / "checkpoints" / "best", state, {"epoch": epoch + 1, "batch": 0, "best": best,
                                                                              "history": history, "sums": None}, keep=1)
            save_last(epoch + 1, 0, None)
            if bar is not None:
                bar.write(f"epoch {epoch + 1}/{config.epochs}: loss {rec['train_loss']:.4f} | train clean {tr_clean:.3f} "
                          f"pgd {tr_adv:.3f} | test clean {te_clean:.3f} pgd {te_adv:.3f} | {rec['images_per_s']:.0f} img/s")
    finally:
        if bar is not None:
            bar.close()
    plot_curves(history, run_dir / "curves.png")
    return FitResult(state=state, history=history, run_dir=run_dir, best=best)
