"""``advjax demo``: Model A on the 2-D Moon data, standard training vs PGD-AT, in about a minute.

The smallest end-to-end use of the core: ``data.load("moons")`` -> ``models.get_model("model_a")``
-> ``methods.get_method(...)`` stepped under one ``jax.jit`` -> ``eval.robust_accuracy`` over
FGSM and PGD-20 at the LSA paper's eps list (feature units; the Moon domain is unbounded).
The full paper reproduction is ``advjax reproduce lsa-moons``.
"""
from __future__ import annotations

import argparse
import time

EPS_LIST = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5)


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--epochs", type=int, default=20, help="training epochs per method")
    parser.add_argument("--batch-size", type=int, default=128, help="training batch size")
    parser.add_argument("--eps", type=float, default=0.3, help="PGD-AT training eps (feature units)")
    parser.add_argument("--samples", type=int, default=2000, help="Moon points (80%% train, 20%% test)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the data, the init and the attacks")


def train(method_name: str, train_ds, *, epochs: int, batch_size: int, seed: int, **method_kw):
    """Train Model A with one registered method; returns the final TrainState."""
    import jax

    from advjax import data, models
    from advjax.methods.base import get_method
    from advjax.train.optim import OptimizerConfig, make_optimizer
    from advjax.train.state import create_train_state

    model = models.get_model("model_a", num_classes=train_ds.num_classes)
    method = get_method(method_name, **method_kw)
    steps_per_epoch = len(train_ds) // batch_size
    tx, _ = make_optimizer(OptimizerConfig(name="adam", lr=1e-3), epochs * steps_per_epoch, steps_per_epoch)
    state = create_train_state(model, tx, jax.random.PRNGKey(seed))
    state = method.init_state(state, (train_ds.x[:batch_size], train_ds.y[:batch_size])) \
        if hasattr(method, "init_state") else state
    step = jax.jit(method.step, donate_argnums=0)
    for epoch in range(epochs):
        for x, y in data.batches(train_ds, batch_size, seed=seed, epoch=epoch):
            state, _ = step(state, (x, y), jax.random.fold_in(state.key, state.step))
    return state


def run(args: argparse.Namespace) -> int:
    import jax.numpy as jnp  # noqa: F401  (import jax before timing)

    from advjax import data
    from advjax.attacks import get_attack
    from advjax.eval import robust_accuracy

    if args.epochs < 1 or args.batch_size < 1 or args.samples < 10:
        raise ValueError("--epochs and --batch-size must be >= 1 and --samples >= 10")
    train_ds = data.load("moons", "train", n_samples=args.samples, seed=args.seed)
    test_ds = data.load("moons", "test", n_samples=args.samples, seed=args.seed)
    attacks = {"fgsm": get_attack("fgsm", domain=None), "pgd20": get_attack("pgd20", domain=None)}
    rows = []
    for name, kw in (("standard", {}), ("pgd_at", {"eps": args.eps, "domain": None})):
        t0 = time.perf_counter()
        state = train(name, train_ds, epochs=args.epochs, batch_size=args.batch_size, seed=args.seed, **kw)
        res = robust_accuracy(state.model, state.variables(), test_ds, attacks, EPS_LIST,
                              batch_size=len(test_ds), progress=False)
        rows.append((name, res, time.perf_counter() - t0))
    print(f"Model A on Moon ({len(train_ds)} train / {len(test_ds)} test points), "
          f"{args.epochs} epochs, Adam 1e-3; accuracy (%) under attack, eps in feature units\n")
    header = "| method | attack | " + " | ".join(f"{e:g}" for e in EPS_LIST) + " | R&G |"
    print(header)
    print("|" + "---|" * (len(EPS_LIST) + 3))
    for name, res, _ in rows:
        for atk in attacks:
            accs = [100 * res.table[atk][e] for e in EPS_LIST]
            print(f"| {name} | {atk} | " + " | ".join(f"{a:.1f}" for a in accs) + f" | {sum(accs):.1f} |")
    print("\n" + ", ".join(f"{n}: {t:.1f} s" for n, _, t in rows))
    return 0
