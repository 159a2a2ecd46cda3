"""``advjax train``: any model x dataset x method from flags and/or a JSON/TOML config file.

    advjax train --config run.toml
    advjax train --model model_b --dataset mnist --train-split 'test[:8000]' --test-split 'test[8000:]' \
        --method pgd_at --eps 0.3 --method-arg alpha=0.01 --method-arg steps=40 \
        --epochs 10 --optimizer adam --lr 1e-3 --run-dir runs/mnist_pgd

Flags override the file. Everything is written under ``--run-dir``; re-running the same command
resumes from the newest good checkpoint.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys

from advjax.train.config import TrainConfig

__all__ = ["configure_parser", "run", "config_from_args", "add_distributed_flags", "start_distributed"]


def _number(s: str) -> float:
    """A float, or a fraction such as ``8/255``."""
    try:
        if "/" in s:
            a, b = s.split("/")
            return float(a) / float(b)
        return float(s)
    except (ValueError, ZeroDivisionError):
        raise argparse.ArgumentTypeError(f"expected a number or a fraction like 8/255, got {s!r}") from None


def _activation(s: str) -> str:
    """An activation spec (``advjax.models.activations.parse_activation``), checked at parse time."""
    from advjax.models.activations import parse_activation

    try:
        return str(parse_activation(s))
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _kv(s: str):
    if "=" not in s:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {s!r}")
    k, v = s.split("=", 1)
    try:
        val = json.loads(v)
    except json.JSONDecodeError:
        try:
            val = _number(v)
        except argparse.ArgumentTypeError:
            val = v
    return k.strip().replace("-", "_"), val


def configure_parser(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p = parser
    p.add_argument("--config", help="a .json or .toml TrainConfig file (flags override it)")
    p.add_argument("--model", help="model name from advjax.models.list_models(), e.g. model_b, resnet18, wrn34_10")
    p.add_argument("--model-arg", action="append", type=_kv, default=[], metavar="KEY=VALUE",
                   help="model setting, e.g. activation=\"elu\" (repeatable)")
    p.add_argument("--activation", type=_activation,
                   help="the model's activation: a name or name(a), e.g. relu, silu, gelu, parametric_softplus, "
                        "softplus(10), elu(1.4), celu(1.4), smooth_relu (learnable a, initial 400); "
                        "same as --model-arg activation=... (see advjax.models.activations)")
    p.add_argument("--dataset", help="dataset name: moons, digits, mnist, fashion_mnist, cifar10, cifar100, svhn_cropped, tiny_imagenet")
    p.add_argument("--data-dir", help="directory holding the dataset files (only it is searched when given; see "
                   "advjax.data.load)")
    p.add_argument("--shuffle-seed", type=int, help="permute the dataset's split with this seed before slicing "
                   "--train-split / --test-split (default: slices of a source stored in a non-random order, "
                   "e.g. sorted by class, are taken after a deterministic stratified shuffle)")
    p.add_argument("--train-split", help="e.g. train, test[:8000]")
    p.add_argument("--test-split", help="held-out split for the per-epoch clean/PGD-10 monitor, e.g. test[8000:]")
    p.add_argument("--method", help="standard, at_fgsm, pgd_at, trades, mart, awp, fast, fgsm_ga, fgsm_ckpt, free_at, apgd_at, ...")
    p.add_argument("--method-arg", action="append", type=_kv, default=[], metavar="KEY=VALUE",
                   help="method setting, e.g. steps=10, beta=6.0, base=\"trades\" (repeatable)")
    p.add_argument("--eps", type=_number, help="threat-model radius in pixel units, e.g. 8/255")
    p.add_argument("--epochs", type=int, help="number of passes over the training split")
    p.add_argument("--batch-size", type=int, help="global batch size (must divide by the number of devices)")
    p.add_argument("--optimizer", help="sgd, momentum, nesterov, adam, adamw, nadam")
    p.add_argument("--lr", type=_number, help="peak learning rate, in (0, 10]")
    p.add_argument("--momentum", type=float, help="SGD momentum in [0, 1)")
    p.add_argument("--weight-decay", type=float, help="L2 weight decay added to the gradients (>= 0)")
    p.add_argument("--clip-norm", type=float, help="clip gradients to this global norm (default: no clipping)")
    p.add_argument("--schedule", help="constant, piecewise, cyclic, cosine")
    p.add_argument("--milestones", help="comma-separated epochs for the piecewise schedule")
    p.add_argument("--augment", action="store_true", default=None, help="random crop (pad 4) + horizontal flip, for image datasets")
    p.add_argument("--seed", type=int, help="seed of the init, the data order and every attack")
    p.add_argument("--eval-size", type=int, help="examples of train and of test used by the per-epoch monitor")
    p.add_argument("--eval-steps", type=int, help="PGD steps of the per-epoch robust-accuracy monitor (10 = PGD-10)")
    p.add_argument("--eval-eps", type=_number, help="eps of the per-epoch PGD monitor (default: the training eps)")
    p.add_argument("--ckpt-every", type=int, help="also checkpoint every N steps inside an epoch (for exact resume after a kill)")
    p.add_argument("--devices", type=int, help="use the first N devices for data parallelism (default: all)")
    p.add_argument("--run-dir", help="run directory for metrics, checkpoints and plots (relative: to the current "
                   "directory; default runs/default); rerunning with it resumes")
    p.add_argument("--no-progress", action="store_true",
                   help="no live progress bar (for logs); the one-line summary of each epoch is still printed")
    add_distributed_flags(p)
    return p


def add_distributed_flags(p: argparse.ArgumentParser) -> None:
    """``--distributed`` and the coordinator flags (shared by ``advjax train`` and ``advjax eval``)."""
    g = p.add_argument_group("several processes (README, Multi-host)")
    g.add_argument("--distributed", action="store_true",
                   help="run as one of several processes (jax.distributed.initialize): the coordinator from the flags "
                        "below, else JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID, else jax's "
                        "auto-detection (SLURM, Open MPI, cloud TPU); launch every process with the same flags")
    g.add_argument("--coordinator-address", help="HOST:PORT of process 0 (implies --distributed)")
    g.add_argument("--num-processes", type=int, help="number of processes (implies --distributed)")
    g.add_argument("--process-id", type=int, help="this process's id, 0 .. N-1 (implies --distributed)")


def start_distributed(args, command: str) -> bool:
    """Initialize several-process JAX if the flags ask for it; a bad set-up is a ValueError."""
    flags = (getattr(args, "coordinator_address", None), getattr(args, "num_processes", None),
             getattr(args, "process_id", None))
    if not getattr(args, "distributed", False) and all(f is None for f in flags):
        return False
    from advjax.train.distributed import initialize

    return initialize(*flags)


_TOP = ("model", "dataset", "data_dir", "shuffle_seed", "train_split", "test_split", "method", "eps", "epochs",
        "batch_size",
        "augment", "seed", "eval_size", "eval_steps", "eval_eps", "ckpt_every", "devices", "run_dir")
_OPT = {"optimizer": "name", "lr": "lr", "momentum": "momentum", "weight_decay": "weight_decay",
        "clip_norm": "clip_norm", "schedule": "schedule"}


def config_from_args(args) -> TrainConfig:
    cfg = TrainConfig.from_file(args.config) if getattr(args, "config", None) else TrainConfig()
    top = {k: getattr(args, k) for k in _TOP if getattr(args, k, None) is not None}
    opt = {v: getattr(args, k) for k, v in _OPT.items() if getattr(args, k, None) is not None}
    if getattr(args, "milestones", None):
        try:
            opt["milestones"] = tuple(float(m) for m in args.milestones.split(",") if m.strip())
        except ValueError:
            raise ValueError(f"--milestones must be comma-separated epochs, e.g. 100,105; got {args.milestones!r}") from None
        schedule = opt.get("schedule", cfg.optimizer.schedule)
        if schedule != "piecewise":
            raise ValueError(f"--milestones is only used by the piecewise schedule, but the schedule is {schedule!r} "
                             "(add --schedule piecewise)")
    if args.method_arg:
        top["method_kwargs"] = {**cfg.method_kwargs, **dict(args.method_arg)}
    if args.model_arg:
        top["model_kwargs"] = {**cfg.model_kwargs, **dict(args.model_arg)}
    if getattr(args, "activation", None):
        top["model_kwargs"] = {**top.get("model_kwargs", cfg.model_kwargs), "activation": args.activation}
    if opt:
        top["optimizer"] = dataclasses.replace(cfg.optimizer, **opt)
    return cfg.replace(**top)


def run(args) -> int:
    try:
        cfg = config_from_args(args)
        cfg.validate()
    except (ValueError, FileNotFoundError) as e:
        print(f"advjax train: error: {e}", file=sys.stderr)
        return 2
    try:
        start_distributed(args, "train")
    except ValueError as e:
        print(f"advjax train: error: {e}", file=sys.stderr)
        return 2
    from advjax.train.loop import fit

    try:
        result = fit(cfg, progress=not args.no_progress)
    except (ValueError, FileNotFoundError) as e:
        print(f"advjax train: error: {e}", file=sys.stderr)
        return 2
    last = result.history[-1] if result.history else {}
    from advjax.train.distributed import is_main
    if is_main():  # one summary line per run, not one per process
        print(json.dumps({"run_dir": str(result.run_dir), "best": result.best, "last": last}))
    return 0


def main(argv=None) -> int:
    parser = configure_parser(argparse.ArgumentParser("advjax train"))
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
