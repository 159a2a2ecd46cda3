"""The training loop: ``fit(config, ...)`` runs a method over a dataset into one run directory.

Per run: one jitted step (state donated, batch sharded on ``"data"``, state replicated; compiled
once), per-step keys ``fold_in(state.key, state.step)`` (no host randomness), epoch order from
``advjax.data.epoch_order(n, seed, epoch)``. After every epoch: clean and PGD accuracy (``eval_steps``
steps, ``eval_eps``, step ``eval_alpha``, random start) on a fixed held-out subset of the training
data and on the test data: the catastrophic-overfitting monitor of the fast-AT papers.

Run directory::

    config.json          the resolved TrainConfig (a different one there is an error)
    .lock                held while a process trains here (a second one waits; advjax.train.lock)
    metrics.jsonl        one JSON record per epoch
    checkpoints/last/    every ``ckpt_every`` steps and at each epoch end (exact resume point)
    checkpoints/best/    by test PGD accuracy
    curves.png           loss and clean/PGD accuracy curves, written at the end

Exact resume: checkpoints hold the TrainState, the data position (epoch, batch) and the running
epoch sums; re-running the same command continues from the newest good checkpoint and ends with
bit-identical parameters to an uninterrupted run on the same machine. If no ``last/`` checkpoint
is intact the run resumes from ``best/`` (saying so); if no checkpoint at all is intact it stops
with an error rather than starting again from step 0 over the old metrics.

In memory: ``fit(config, train_data=..., run_dir=None, monitor=False)`` (or ``run_dir=None`` in
the config) writes and reads no files and returns the trained state and the per-epoch history.

Feeding the device: while step ``b`` runs (dispatch is asynchronous), the host gathers and places
batch ``b + 1``; the progress bar shows the loss of the step before the newest one, so the loop
never waits on ``float(loss)`` of the step it just launched. The numbers are those of a loop that
waits (same steps, same order).

Several processes (after ``advjax.train.distributed.initialize``): the same ``fit`` call in every
process. The configurations must agree (checked first; process 0's error names the differing
keys); the mesh spans every process's devices; each process converts and transfers only its rows
of every global batch (the same global order as one process) and the batch is assembled with
``jax.make_array_from_process_local_data``; the monitor shards its batches the same way and counts
globally; checkpoints are written and restored by all processes together
(``advjax.train.checkpoint``); only process 0 writes config.json, metrics.jsonl and curves.png and
prints. Parameters equal a one-process run on the same global batch to float tolerance (XLA may sum
the gradient in another order).
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import pathlib
import sys
import time
from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np

from advjax.train import checkpoint as ckpt
from advjax.train import distributed as dist
from advjax.train.config import TrainConfig, config_diff
from advjax.train.lock import run_dir_lock
from advjax.train.mesh import batch_sharding, check_batch_size, make_mesh, replicated, state_sharding
from advjax.train.optim import make_optimizer
from advjax.train.state import TrainState, create_train_state

__all__ = ["fit", "FitResult", "evaluate", "plot_curves", "prepare_run_dir"]


@dataclasses.dataclass
class FitResult:
    """``state``: the trained TrainState; ``history``: one record per epoch (what metrics.jsonl
    holds); ``run_dir``: the absolute run directory, or None for an in-memory run; ``best``: epoch
    and test accuracies of the best epoch by test PGD accuracy (None without the monitor)."""
    state: TrainState
    history: list
    run_dir: Optional[pathlib.Path]
    best: Optional[dict]


_FROM_CONFIG = object()  # fit(run_dir=...) default: config.run_dir


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


def _absolute(path) -> pathlib.Path:
    return pathlib.Path(os.path.abspath(os.path.expanduser(os.fspath(path))))


def prepare_run_dir(config: TrainConfig) -> pathlib.Path:
    """Create the run dir and write config.json, or check an existing one equals ``config``.
    Returns the run directory as an absolute path (a relative one is taken from the current
    working directory, once)."""
    run_dir = _absolute(config.run_dir)
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
    from advjax.losses.ce import two_logits_fn  # one-logit binary models read as [0, z]

    apply_fn = two_logits_fn(lambda v, x: model.apply(v, x, train=False))

    def fn(variables, x, y, mask, key):
        clean = jnp.argmax(apply_fn(variables, x), -1) == y
        x_adv = attack(apply_fn, variables, x, y, key) if eps > 0 else x
        adv = jnp.argmax(apply_fn(variables, x_adv), -1) == y
        return jnp.sum(clean * mask), jnp.sum(adv * mask)

    return jax.jit(fn, in_shardings=(replicated(mesh),) + (batch_sharding(mesh),) * 3 + (replicated(mesh),),
                   out_shardings=replicated(mesh))


def evaluate(eval_fn, variables, x, y, batch_size, key, mesh) -> tuple[float, float]:
    """Clean and PGD accuracy over (x, y), padding the last batch (masked). The counts are global
    (summed over every process's rows) and read once, after the last batch was launched."""
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
        batch = dist.shard_host_batch((xb, yb, m), mesh)  # each process places only its rows
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
    for k, st in (("train_clean_acc", "C0--"), ("train_pgd_acc", "C1--"), ("test_clean_acc", "C0-"), ("test_pgd_acc", "C1-"),
                  ("train_acc", "C2:")):
        if all(k in h for h in history):  # train_acc (the method's own) only without the monitor
            if k == "train_acc" and "test_clean_acc" in history[0]:
                continue
            a2.plot(ep, [h[k] for h in history], st, marker="o", label=k)
    a2.set(xlabel="epoch", ylabel="accuracy", ylim=(0, 1), title="clean / PGD accuracy")
    a2.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _load_data(config: TrainConfig, split: str):
    from advjax.data import load
    kw = {} if getattr(config, "shuffle_seed", None) is None else {"shuffle_seed": config.shuffle_seed}
    return load(config.dataset, split, data_dir=config.data_dir, **kw)


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


def _restore_for_resume(run_dir: pathlib.Path, state):
    """The checkpoint to resume from: the newest intact ``last/``; if ``last/`` holds none, the
    intact ``best/`` (also a complete epoch-end state, so the resumed run is still exact). None for
    a fresh run; CheckpointError when checkpoints exist but none of them is intact (a restart from
    step 0 would silently throw the run away)."""
    last, best = run_dir / "checkpoints" / "last", run_dir / "checkpoints" / "best"
    restored = ckpt.restore_checkpoint(last, state)
    if restored is not None:
        return restored
    n_last = len(ckpt.list_checkpoints(last))
    restored = ckpt.restore_checkpoint(best, state)
    if restored is not None:
        why = f"all {n_last} checkpoint(s) under {last} are corrupt" if n_last else f"{last} holds no checkpoint"
        if jax.process_index() == 0:
            print(f"[advjax] {why}: resuming from the best checkpoint {restored[2]} instead (epoch "
              f"{restored[1]['epoch']}); later epochs are trained again", file=sys.stderr)
        return restored
    n_best = len(ckpt.list_checkpoints(best))
    if n_last or n_best:
        raise ckpt.CheckpointError(
            f"run directory {run_dir}: every checkpoint is corrupt ({n_last} under checkpoints/last, {n_best} "
            f"under checkpoints/best), so there is nothing to resume from; nothing was changed. To start "
            f"this run again from scratch, move or delete {run_dir} (or use another run directory)")
    return None


def fit(config: TrainConfig, *, train_data=None, test_data=None, model=None, method=None,
        progress: bool = True, log_every: int = 10, run_dir=_FROM_CONFIG, monitor: bool = True,
        log: bool = True) -> FitResult:
    """Train ``config.method`` on ``config.model`` x ``config.dataset`` into ``config.run_dir``.

    ``train_data`` / ``test_data``: an ``advjax.data.Dataset`` or an ``(x, y)`` pair (uint8 images
    are scaled to [0, 1]); loaded with ``advjax.data.load`` from the config when None. ``model`` /
    ``method`` override the config's (the config still names the run). Resumes from the run dir's
    newest good checkpoint. Every check of the settings happens before anything is compiled.

    ``run_dir``: overrides ``config.run_dir``; ``None`` (here or in the config) trains in memory:
    no files are read or written, nothing is resumed, and the result's ``state`` and ``history``
    are all there is. ``monitor=False`` skips the per-epoch clean/PGD evaluation (then
    ``test_data`` is not needed and ``best`` is None). ``progress``: the live tqdm bar;
    ``log``: the one summary line per epoch (stdout), independent of the bar.
    """
    if not isinstance(config, TrainConfig):
        raise ValueError(f"fit: config must be a TrainConfig, got {type(config).__name__}")
    if run_dir is not _FROM_CONFIG:
        config = config.replace(run_dir=None if run_dir is None else str(run_dir))
    if config.run_dir is not None:  # resolved once, here: relative to the current directory
        config = config.replace(run_dir=str(_absolute(config.run_dir)))
    config.validate()
    dist.check_same_config(config.to_dict(), "training configuration")  # (several processes only)
    # one writer per run directory (a second process waits, then resumes from where it finished)
    lock = (run_dir_lock(config.run_dir) if config.run_dir is not None and dist.is_main()
            else contextlib.nullcontext())
    with lock:
        return _fit(config, train_data=train_data, test_data=test_data, model=model, method=method,
                    progress=progress, log_every=log_every, monitor=monitor, log=log)


def _fit(config, *, train_data, test_data, model, method, progress, log_every, monitor, log) -> FitResult:
    main = dist.is_main()
    if not main:  # process 0 reports; the others only compute
        progress = log = False
    mesh = make_mesh(config.devices)
    check_batch_size(config.batch_size, mesh)
    eval_bs = config.eval_batch_size or config.batch_size
    check_batch_size(eval_bs, mesh)
    if train_data is None:
        train_data = _load_data(config, config.train_split)
    if test_data is None and monitor:
        test_data = _load_data(config, config.test_split)
    config = _resolve(config, train_data)
    x_tr, y_tr = _xy(train_data)
    x_te, y_te = _xy(test_data) if test_data is not None else (x_tr[:0], y_tr[:0])
    n = len(x_tr)
    spe = n // config.batch_size
    if spe < 1:
        raise ValueError(f"the training set has {n} examples, fewer than one batch of {config.batch_size}")
    if method is None:
        method = config.build_method(dataset=train_data if hasattr(train_data, "domain") else False)
    from advjax.data.dataset import warn_missing_classes
    from advjax.methods.base import for_data
    method = for_data(method, train_data, x_tr)  # the dataset's domain; a disagreement is an error
    warn_missing_classes(y_tr, config.num_classes, f"the training split ({config.train_split})")
    if test_data is not None:
        warn_missing_classes(y_te, config.num_classes, f"the test split ({config.test_split})")
        warn_missing_classes(y_te[: config.eval_size], config.num_classes,
                             f"the monitor's test subset (first {config.eval_size} of {config.test_split})")
    if model is None:
        model = config.build_model()
    in_memory = config.run_dir is None
    run_dir = None
    if not in_memory:  # process 0 creates the directory and config.json; the others then check it
        run_dir = prepare_run_dir(config) if main else None
        dist.barrier("advjax-run-dir")
        if not main:
            run_dir = prepare_run_dir(config)

    ups = int(getattr(method, "updates_per_step", 1))
    tx, schedule = make_optimizer(config.optimizer, config.epochs * spe * ups, spe * ups)
    state = create_train_state(model, tx, jax.random.PRNGKey(config.seed), batch_size=1)
    example = (_to_float(x_tr[: config.batch_size]), y_tr[: config.batch_size].astype(np.int32))
    if hasattr(method, "init_state"):
        state = method.init_state(state, example)

    # -- resume ---------------------------------------------------------------------------------
    meta: dict[str, Any] = {"epoch": 0, "batch": 0, "history": [], "best": None, "sums": None}
    restored = None if in_memory else _restore_for_resume(run_dir, state)
    if restored is not None:
        state, meta, path = restored
        if main:
            print(f"[advjax] resuming from {path} (epoch {meta['epoch']}, batch {meta['batch']})", file=sys.stderr)
    history = list(meta["history"])
    best = meta["best"]
    if not in_memory and main:
        with open(run_dir / "metrics.jsonl", "w") as f:  # exactly the records of completed epochs
            for rec in history:
                f.write(json.dumps(rec) + "\n")

    repl, data_sh = replicated(mesh), batch_sharding(mesh)
    # replicated, except method state with a batch axis (e.g. layerwise AT's gradient cache)
    state_sh = state_sharding(state, mesh, getattr(method, "batch_sharded_extra", ()))
    state = jax.device_put(state, state_sh)

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
    step_fn = jax.jit(train_step, in_shardings=(state_sh, repl, data_sh), out_shardings=(state_sh, repl, repl),
                      donate_argnums=(0, 1))
    eval_eps = config.resolved_eval_eps(method)
    eval_alpha = config.eval_alpha if config.eval_alpha is not None else eval_eps / 4
    domain = getattr(train_data, "domain", "auto")
    if domain == "auto":  # (x, y) arrays: images if uint8 or already in [0, 1]
        domain = (0.0, 1.0) if x_tr.dtype == np.uint8 or (x_tr.min() >= 0 and x_tr.max() <= 1) else None
    eval_fn = make_eval_fn(model, mesh, eval_eps, config.eval_steps, eval_alpha,
                           None if domain is None else tuple(float(v) for v in domain)) if monitor else None
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
        if in_memory:
            return
        m = {"epoch": epoch, "batch": batch, "history": history, "best": best, "sums": sums_host}
        ckpt.save_checkpoint(run_dir / "checkpoints" / "last", state, m, keep=config.keep)

    rows = dist.local_rows(mesh, config.batch_size)  # this process's block of every global batch

    def put_batch(epoch_order_, b):
        """Batch ``b`` of the epoch as global arrays; this process converts and sends only its rows."""
        idx = epoch_order_[b * config.batch_size:(b + 1) * config.batch_size][rows]
        return dist.global_batch((_to_float(x_tr[idx]), y_tr[idx].astype(np.int32)), mesh, config.batch_size)

    def log_line(line):  # the per-epoch log: kept with or without the live bar
        if bar is not None:
            bar.write(line, file=sys.stdout)
        else:
            print(line, flush=True)

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
            batch = put_batch(order, start) if start < spe else None
            shown = None  # the metrics of the previous step: read once the next step is queued
            for b in range(start, spe):
                state, sums, metrics = step_fn(state, sums, batch)
                if b + 1 < spe:  # prefetch: placed while this step runs
                    batch = put_batch(order, b + 1)
                if not compiled:  # images/s excludes the one compilation
                    jax.block_until_ready(metrics)
                    compiled, t0, timed_from = True, time.perf_counter(), b + 1
                if bar is not None:
                    bar.update(config.batch_size)
                    if shown is not None:
                        bar.set_postfix(epoch=epoch + 1, loss=f"{float(shown['loss']):.4f}",
                                        acc=f"{float(shown.get('acc', jnp.nan)):.3f}")
                        shown = None
                    if (b + 1) % log_every == 0 or b + 1 == spe:
                        shown = metrics
                if config.ckpt_every and (b + 1) % config.ckpt_every == 0 and b + 1 < spe:
                    save_last(epoch, b + 1, {k: float(v) for k, v in jax.device_get(sums).items()})
            if bar is not None and shown is not None:  # the epoch's last step: done once its sums are read
                bar.set_postfix(epoch=epoch + 1, loss=f"{float(shown['loss']):.4f}",
                                acc=f"{float(shown.get('acc', jnp.nan)):.3f}")
            sums_host = {k: float(v) for k, v in jax.device_get(sums).items()}
            train_time = time.perf_counter() - t0
            done = spe - timed_from
            rec = {"epoch": epoch + 1, "step": int(state.step),
                   "lr": float(schedule(max(int(state.step) - 1, 0))),
                   "train_loss": sums_host["loss"] / spe,
                   **{f"train_{k}": v / spe for k, v in sums_host.items() if k != "loss"}}
            if monitor:
                variables = state.variables()
                tr_clean, tr_adv = evaluate(eval_fn, variables, x_hold, y_hold, eval_bs, jax.random.fold_in(eval_key, 2 * epoch), mesh)
                te_clean, te_adv = evaluate(eval_fn, variables, x_test, y_test, eval_bs, jax.random.fold_in(eval_key, 2 * epoch + 1), mesh)
                rec.update({"train_clean_acc": tr_clean, "train_pgd_acc": tr_adv,
                            "test_clean_acc": te_clean, "test_pgd_acc": te_adv,
                            "eval_eps": eval_eps, "eval_steps": config.eval_steps})
            rec["images_per_s"] = done * config.batch_size / train_time if done and train_time > 0 else float("nan")
            history.append(rec)
            if not in_memory and main:
                with open(run_dir / "metrics.jsonl", "a") as f:
                    f.write(json.dumps(rec) + "\n")
            if monitor and (best is None or te_adv > best["test_pgd_acc"]):
                best = {"epoch": epoch + 1, "test_pgd_acc": te_adv, "test_clean_acc": te_clean}
                dist.agree(best, "the best epoch")  # global counts: every process chose the same
                if not in_memory:
                    ckpt.save_checkpoint(run_dir / "checkpoints" / "best", state, {"epoch": epoch + 1, "batch": 0, "best": best,
                                                                                  "history": history, "sums": None}, keep=1)
            save_last(epoch + 1, 0, None)
            if log:
                line = f"epoch {epoch + 1}/{config.epochs}: loss {rec['train_loss']:.4f}"
                if monitor:
                    line += (f" | train clean {tr_clean:.3f} pgd {tr_adv:.3f} | test clean {te_clean:.3f} "
                             f"pgd {te_adv:.3f}")
                elif "train_acc" in rec:
                    line += f" | train acc {rec['train_acc']:.3f}"
                log_line(line + f" | {rec['images_per_s']:.0f} img/s")
    finally:
        if bar is not None:
            bar.close()
    if not in_memory and main and (len(history) > len(meta["history"]) or not (run_dir / "curves.png").exists()):
        plot_curves(history, run_dir / "curves.png")  # (not redrawn by a rerun that had nothing to train)
    return FitResult(state=state, history=history, run_dir=run_dir, best=best)
