"""``advjax lsa``: Layer Sustainability Analysis (Khalooei et al., Algorithm 2) from the command line.

Trains a model briefly (or restores a checkpoint when ``advjax.train`` provides a restore
function), attacks M test samples, prints the CM per learnable layer (eq. 11), the MVL list
(Algorithm 1) and how it changes with eta, and writes the per-layer CM plot for FGSM, PGD and the
statistical perturbations (Fig. 4/5) plus a JSON record to ``--out``.

    advjax lsa --model model_a --dataset moons --epochs 20 --eps 0.3 --eta 0.5
    advjax lsa --model model_b --dataset mnist --split "test[8000:]" --train-split "test[:8000]" --eps 0.3
"""
from __future__ import annotations

import argparse
import json
import pathlib


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="model_a", help="model name (advjax.models registry)")
    parser.add_argument("--dataset", default="moons", help="dataset name (advjax.data)")
    parser.add_argument("--train-split", default="train", help="split to train on when no checkpoint is given")
    parser.add_argument("--split", default="test", help="split the M analysed samples come from")
    parser.add_argument("--checkpoint", default=None, help="restore this checkpoint instead of training")
    parser.add_argument("--method", default="standard", help="training method when training (advjax.methods name)")
    parser.add_argument("--epochs", type=int, default=20, help="training epochs when training")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate when training")
    parser.add_argument("--attack", default="fgsm", help="perturbation for Algorithm 2 (advjax.attacks name)")
    parser.add_argument("--eps", type=float, default=0.3, help="attack eps (pixels in [0,1]; feature units on moons)")
    parser.add_argument("--samples", type=int, default=1000, help="M, the number of analysed samples")
    parser.add_argument("--eta", type=float, default=1.0, help="MVL cut-off: vulnerable when CM - mu > eta*sigma")
    parser.add_argument("--etas", default="0,0.25,0.5,1,1.5,2", help="eta values for the MVL-versus-eta table")
    parser.add_argument("--mode", choices=("paper", "reference"), default="paper",
                        help="paper: learnable layers, per-sample CM; reference: activations, one batch ratio")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs/lsa", help="directory for lsa.json and lsa_cm_per_layer.png")


def _restore(path: str, state):
    try:
        from advjax.train import checkpoint  # type: ignore
    except ImportError as e:
        raise ValueError("--checkpoint needs advjax.train.checkpoint, which this version does not have") from e
    for fn in ("restore", "restore_state", "load"):
        if hasattr(checkpoint, fn):
            return getattr(checkpoint, fn)(path, state)
    raise ValueError("advjax.train.checkpoint has no restore function")


def run(args: argparse.Namespace) -> int:
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax

    from advjax.analysis import lsa, plots
    from advjax.attacks import get_attack
    from advjax.data import batches, load
    from advjax.layers import features_fn
    from advjax.methods.base import get_method
    from advjax.models import get_model
    from advjax.train.state import create_train_state

    if args.eps < 0:
        raise ValueError(f"--eps must be >= 0, got {args.eps}")
    etas = [float(e) for e in args.etas.split(",") if e.strip()]
    test = load(args.dataset, args.split)
    domain = test.domain
    model = get_model(args.model, num_classes=test.num_classes)
    state = create_train_state(model, optax.adam(args.lr), jax.random.PRNGKey(args.seed))
    if args.checkpoint:
        state = _restore(args.checkpoint, state)
    else:
        train = load(args.dataset, args.train_split)
        kw = {} if args.method == "standard" else {"domain": domain}
        method = get_method(args.method, **kw)
        step = jax.jit(method.step)
        k = jax.random.PRNGKey(args.seed + 1)
        for epoch in range(args.epochs):
            for i, (xb, yb) in enumerate(batches(train, args.batch_size, seed=args.seed, epoch=epoch)):
                state, metrics = step(state, (jnp.asarray(xb), jnp.asarray(yb)), jax.random.fold_in(k, epoch * 100003 + i))
        print(f"trained {args.model} on {args.dataset}:{args.train_split} for {args.epochs} epochs with "
              f"{args.method} (last loss {float(metrics['loss']):.4f})")
    x = np.asarray(test.x)
    x = x.astype(np.float32) / 255.0 if x.dtype == np.uint8 else x.astype(np.float32)
    y = np.asarray(test.y, np.int32)
    ffn = features_fn(model, kind="learnable" if args.mode == "paper" else "activation")
    attack = get_attack(args.attack, eps=args.eps, domain=domain)
    mvl, cms = lsa.algorithm2(ffn, state.variables(), x, y, attack, jax.random.PRNGKey(args.seed + 2),
                              num_samples=args.samples, eta=args.eta, mode=args.mode)
    print(mvl)
    sweep = lsa.mvl_versus_eta(cms, etas, mvl.all_names)
    print(lsa.format_mvl_versus_eta(sweep))
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    n = min(args.samples, len(x), 256)
    names, curves = lsa.perturbation_cms(ffn, state.variables(), x[:n], y[:n], jax.random.PRNGKey(args.seed + 3),
                                         lsa.default_perturbations(args.eps, domain=domain), mode=args.mode)
    plots.plot_layer_cms(out / "lsa_cm_per_layer.png", names, curves,
                         f"LSA of {args.model} on {args.dataset} (eps={args.eps:g})", mvl.layers)
    record = {"model": args.model, "dataset": args.dataset, "attack": args.attack, "eps": args.eps,
              "mode": args.mode, "samples": int(np.shape(cms)[0]) if np.ndim(cms) == 2 else None,
              "layers": list(mvl.all_names), "cm": list(mvl.cm), "mu": mvl.mu, "sigma": mvl.sigma,
              "eta": mvl.eta, "mvl": list(mvl.layers),
              "mvl_versus_eta": {str(m.eta): list(m.layers) for m in sweep},
              "cm_per_perturbation": {k: np.asarray(v).tolist() for k, v in curves.items()}}
    (out / "lsa.json").write_text(json.dumps(record, indent=2))
    print(f"wrote {out}/lsa.json and {out}/lsa_cm_per_layer.png")
    return 0
