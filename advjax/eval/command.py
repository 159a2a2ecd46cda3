"""``advjax eval``: robust accuracy of a trained checkpoint over attacks x eps.

Example::

    advjax eval --checkpoint runs/mnist_pgd --attacks fgsm,pgd20,apgd-ce,aa --eps 0,0.1,0.2,0.3

The checkpoint is read with ``advjax.train.checkpoint.load_for_eval(path) -> (model, variables,
config)``; the data set, split and directory default to the run's config. Prints a markdown table
and writes ``eval.json`` / ``eval.md`` next to ``--out`` (default: the checkpoint directory).
"""
from __future__ import annotations

import argparse
import fractions
import os
import pathlib
import sys


def parse_eps(text: str) -> list[float]:
    """'0,8/255,0.1' -> [0.0, 0.0313..., 0.1]; fractions are allowed. ValueError on bad items."""
    out = []
    for item in str(text).replace(" ", ",").split(","):
        if not item:
            continue
        try:
            v = float(fractions.Fraction(item))
        except (ValueError, ZeroDivisionError):
            raise ValueError(f"bad eps value {item!r} (use numbers or fractions like 8/255)") from None
        if v < 0:
            raise ValueError(f"eps must be >= 0, got {item}")
        out.append(v)
    if not out:
        raise ValueError("no eps values given")
    return out


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, help="run directory or checkpoint directory")
    parser.add_argument("--attacks", default="fgsm,pgd20,apgd-ce,aa",
                        help="comma-separated attack names (see advjax.attacks.list_attacks())")
    parser.add_argument("--eps", default=None,
                        help="comma-separated eps values, fractions allowed (default: 0 and the run's eval eps)")
    parser.add_argument("--dataset", default=None, help="data set (default: the run's)")
    parser.add_argument("--split", default=None, help="split (default: the run's test split)")
    parser.add_argument("--data-dir", default=None, help="data directory (default: the run's)")
    parser.add_argument("--shuffle-seed", type=int, default=None,
                        help="permute the split with this seed before slicing (default: the run's; see advjax train)")
    parser.add_argument("--n-examples", type=int, default=None, help="evaluate the first N examples only")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--loop", default=None, help="loop form for iterative attacks: auto|unroll|rolled|INT")
    parser.add_argument("--which", default="best", choices=("best", "last"), help="which checkpoint of a run")
    parser.add_argument("--out", default=None, help="directory for eval.json and eval.md (default: --checkpoint)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--no-checks", action="store_true", help="skip AutoAttack's sanity checks")
    from advjax.train.command import add_distributed_flags
    add_distributed_flags(parser)  # several processes: the same command in each; process 0 writes


def _load_checkpoint(path: str, which: str):
    """``(model, variables, config, info)``; ``info`` (which checkpoint was read, and any
    substitution) is None from a loader without ``with_info``."""
    try:
        from advjax.train.checkpoint import load_for_eval
    except ImportError as e:
        raise RuntimeError("advjax eval needs advjax.train.checkpoint.load_for_eval(path) -> "
                           f"(model, variables, config), which is not available: {e}") from None
    try:
        return load_for_eval(path, which=which, with_info=True)
    except TypeError:  # an implementation without `with_info` / `which`
        try:
            return (*load_for_eval(path, which=which), None)
        except TypeError:
            return (*load_for_eval(path), None)


def _cfg(config, name, default=None):
    if config is None:
        return default
    if isinstance(config, dict):
        return config.get(name, default)
    return getattr(config, name, default)


def _bind_lafeat(attacks: dict, model, variables, checkpoint_path, kind, given=None, which="best") -> dict:
    """LAFEAT attacks get the heads stored beside the checkpoint (``advjax lafeat-heads``);
    missing heads or heads of another model are an error saying how to train them."""
    from advjax.attacks.lafeat import LAFEAT

    if not any(isinstance(a, LAFEAT) for a in attacks.values()):
        return attacks
    from advjax.attacks import lafeat_heads

    where = lafeat_heads.heads_dir(checkpoint_path, kind)
    try:
        heads = lafeat_heads.load_heads(where, model, variables)
    except FileNotFoundError:
        raise FileNotFoundError(f"LAFEAT needs heads trained for this checkpoint and none are in {where}; train "
                                f"them with `advjax lafeat-heads --checkpoint {given or checkpoint_path}"
                                f"{'' if which == 'best' else ' --which ' + which}` (then rerun)") from None
    return {n: a.bind(model, heads) if isinstance(a, LAFEAT) else a for n, a in attacks.items()}


def run(args: argparse.Namespace) -> int:
    from advjax.attacks import get_attack
    from advjax.eval.robust import robust_accuracy

    try:
        from advjax.train.command import start_distributed
        if start_distributed(args, "eval"):
            from advjax.train.distributed import check_same_config
            check_same_config({k: v for k, v in sorted(vars(args).items()) if k != "process_id"}, "evaluation flags")
        names = [a.strip() for a in args.attacks.split(",") if a.strip()]
        if not names:
            raise ValueError("no attacks given")
        overrides = {}
        if args.loop is not None:
            overrides["loop"] = int(args.loop) if args.loop.isdigit() else args.loop
        attacks = {}
        for n in names:
            atk = get_attack(n)
            if "loop" in overrides and hasattr(atk, "loop"):
                atk = atk.replace(**overrides)
            attacks[n] = atk
        checkpoint = os.path.abspath(os.path.expanduser(args.checkpoint))  # resolved once, here
        model, variables, config, info = _load_checkpoint(checkpoint, args.which)
        if info and info.get("substituted"):
            print(f"advjax eval: note: {info['substituted']}", file=sys.stderr)
        attacks = _bind_lafeat(attacks, model, variables, (info or {}).get("path", checkpoint), (info or {}).get("kind"),
                               args.checkpoint, args.which)
        if args.eps is not None:
            eps_list = parse_eps(args.eps)
        else:
            e = None
            if hasattr(config, "resolved_eval_eps"):
                try:
                    e = config.resolved_eval_eps()
                except Exception:  # noqa: BLE001 - a config without an eps
                    e = None
            e = e if e is not None else _cfg(config, "eval_eps") or _cfg(config, "eps")
            if e is None:
                raise ValueError("no --eps given and the run's config has no eps")
            eps_list = [0.0, float(e)]
        dataset = args.dataset or _cfg(config, "dataset")
        if dataset is None:
            raise ValueError("no --dataset given and the run's config names none")
        split = args.split or _cfg(config, "test_split", "test")
        data_dir = args.data_dir or _cfg(config, "data_dir")
        from advjax.data import load

        shuffle_seed = args.shuffle_seed if getattr(args, "shuffle_seed", None) is not None \
            else _cfg(config, "shuffle_seed")
        data = load(dataset, split, data_dir=data_dir,
                    **({} if shuffle_seed is None else {"shuffle_seed": shuffle_seed}))
        result = robust_accuracy(model, variables, data, attacks, eps_list, args.batch_size, key=args.seed,
                                 n_examples=args.n_examples, progress=not args.no_progress,
                                 checks=not args.no_checks)
    except (ValueError, FileNotFoundError, RuntimeError) as e:
        print(f"advjax eval: error: {e}", file=sys.stderr)
        return 2
    result.meta.update({"checkpoint": checkpoint, "dataset": dataset, "split": split})
    if info:
        result.meta["evaluated_checkpoint"] = {k: info[k] for k in ("path", "step", "kind")}
        if info.get("substituted"):
            result.meta["substituted"] = info["substituted"]
    from advjax.train.distributed import is_main
    if not is_main():  # every process computed the same global result; process 0 reports it
        return 0
    md = result.to_markdown()
    if info:
        head = f"checkpoint: {info['path']} (step {info['step']})\n"
        if info.get("substituted"):
            head += f"note: {info['substituted']}\n"
        md = head + "\n" + md
    print(md)
    out = pathlib.Path(os.path.abspath(os.path.expanduser(args.out or checkpoint)))
    if out.is_dir() or args.out is not None:
        out.mkdir(parents=True, exist_ok=True)
        result.to_json(str(out / "eval.json"))
        (out / "eval.md").write_text(md)
        print(f"wrote {out / 'eval.json'} and {out / 'eval.md'}")
    return 0
