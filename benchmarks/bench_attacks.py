"""Attack speed and agreement: advjax vs torchattacks on the same weights and data, as ratios.

Attacks: PGD-20 (L-inf, random start, step eps/8 in both), PGD-20-fixed (the same from x itself,
no random start: both frameworks then attack from the same point, so their robust accuracies
differ only where a float-noise gradient sign differs -- the agreement check; PGD-20's random
starts come from two different generators), APGD-CE (100 iterations, 1 restart)
and AutoAttack standard (APGD-CE, APGD-T, FAB-T, Square 5000; on the torch side a MultiAttack of
torchattacks APGD / APGDT / FAB(multi_targeted) / Square with 100 iterations, as the official
AutoAttack -- torchattacks' own ``AutoAttack`` class runs only 10). Models: Model B on MNIST
(trained here, briefly, on the first 8000 images of the real MNIST test split; cached) and
ResNet-18 (CIFAR stem, 32x32, random weights; labels = the model's own clean predictions by
default, so every point is attacked by both frameworks).

Each round attacks one new batch with advjax and with torchattacks (interleaved, same batch);
time per image is the median over rounds and robust accuracy is pooled over all attacked images.
The advjax attacks are compiled once before timing (compile time reported separately); AutoAttack
runs through its eager driver ``AutoAttack.drive`` (sub-attacks compiled on first use, counted as
warm-up).

Loop forms (issue 3): PGD-20 and APGD-CE on Model B (and PGD-20 on ResNet-18 with
``--loop-models``) in each ``--loops`` form -- unrolled, partly unrolled (int k), rolled
(``lax.fori_loop``) -- each with its compile time and time per image against the same peer.

Examples::

    python benchmarks/bench_attacks.py --quick
    python benchmarks/bench_attacks.py --out /tmp/attacks.json
    python benchmarks/bench_attacks.py --models model_b --attacks pgd20,apgd-ce --loops unroll,rolled,5
"""
from __future__ import annotations

import argparse
import hashlib
import os
import pathlib
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import _common  # noqa: E402

MODELS = ("model_b", "resnet18")
ATTACKS = ("pgd20", "pgd20-fixed", "apgd-ce", "aa")


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        prog="bench_attacks", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--models", default=",".join(MODELS), help=f"comma list of {MODELS} (default: both)")
    p.add_argument("--attacks", default=",".join(ATTACKS), help=f"comma list of {ATTACKS} (default: all)")
    p.add_argument("--batch-b", type=int, default=128, help="Model B batch per round (default 128)")
    p.add_argument("--batch-r", type=int, default=8, help="ResNet-18 batch per round (default 8)")
    p.add_argument("--aa-batch-b", type=int, default=32,
                   help="Model B batch for AutoAttack (default 32: a round of the full AutoAttack, Square's "
                        "5000 queries included, costs minutes; both sides run each sub-attack on the points "
                        "still robust only)")
    p.add_argument("--eps-b", type=float, default=0.1,
                   help="L-inf radius for Model B (default 0.1: the briefly trained, non-robust model keeps "
                        "a robust accuracy far from 0 and 100%%, so agreement is informative)")
    p.add_argument("--eps-r", type=float, default=8 / 255, help="L-inf radius for ResNet-18 (default 8/255)")
    p.add_argument("--rounds-b", default="pgd20=8,pgd20-fixed=4,apgd-ce=5,aa=1",
                   help="rounds (= distinct batches) per attack on Model B (default pgd20=8,pgd20-fixed=4,apgd-ce=5,aa=1)")
    p.add_argument("--rounds-r", default="pgd20=3,pgd20-fixed=1,apgd-ce=2,aa=1",
                   help="rounds per attack on ResNet-18 (default pgd20=3,pgd20-fixed=1,apgd-ce=2,aa=1)")
    p.add_argument("--loops", default="unroll,5,rolled",
                   help="loop forms to compare (unroll, rolled, int partial-unroll factor); '' to skip")
    p.add_argument("--loop-attacks", default="pgd20,apgd-ce", help="attacks for the loop-form table")
    p.add_argument("--loop-models", default="model_b", help="models for the loop-form table")
    p.add_argument("--loop-rounds", type=int, default=2,
                   help="timed rounds per loop form (default 2; no warm-up: the auto rows warmed both up)")
    p.add_argument("--resnet-labels", choices=("pred", "true"), default="pred",
                   help="ResNet-18 labels: the random model's own clean predictions (default; every point "
                        "is then attacked by both frameworks) or the true CIFAR-10 labels")
    p.add_argument("--train-steps", type=int, default=300,
                   help="Adam steps (batch 128) training Model B on MNIST test images 0..7999 (default 300)")
    p.add_argument("--cache-dir", default=os.path.join(tempfile.gettempdir(), "advjax_bench_cache"),
                   help="where the trained Model B weights are cached (default: $TMPDIR/advjax_bench_cache)")
    p.add_argument("--aa-steps", type=int, default=100, help="APGD / FAB iterations inside AutoAttack (default 100)")
    p.add_argument("--aa-queries", type=int, default=5000, help="Square queries inside AutoAttack (default 5000)")
    p.add_argument("--apgd-steps", type=int, default=100, help="APGD-CE iterations (default 100)")
    _common.add_common_args(p)
    args = p.parse_args(argv)
    split = lambda s: [t.strip() for t in s.split(",") if t.strip()]  # noqa: E731
    args.models, args.attacks = split(args.models), split(args.attacks)
    args.loop_attacks, args.loop_models = split(args.loop_attacks), split(args.loop_models)
    args.loops = [int(t) if t.isdigit() else t for t in split(args.loops)]
    for m in args.models + args.loop_models:
        if m not in MODELS:
            p.error(f"unknown model {m!r}; known: {', '.join(MODELS)}")
    for a in args.attacks + args.loop_attacks:
        if a not in ATTACKS:
            p.error(f"unknown attack {a!r}; known: {', '.join(ATTACKS)}")
    for lp in args.loops:
        if lp not in ("unroll", "rolled") and not isinstance(lp, int):
            p.error(f"bad loop form {lp!r}: unroll, rolled or an int")

    def rounds(spec):
        out = {}
        for item in split(spec):
            k, _, v = item.partition("=")
            if k not in ATTACKS or not v.isdigit():
                p.error(f"bad rounds spec {item!r} (want e.g. pgd20=8)")
            out[k] = int(v)
        return out

    args.rounds_b, args.rounds_r = rounds(args.rounds_b), rounds(args.rounds_r)
    if args.quick:
        args.batch_b, args.batch_r, args.aa_batch_b = min(args.batch_b, 32), min(args.batch_r, 4), min(args.aa_batch_b, 8)
        args.rounds_b = {a: 1 for a in ATTACKS}
        args.rounds_r = {a: 1 for a in ATTACKS}
        args.loop_rounds = 1
        args.train_steps = min(args.train_steps, 30)
        args.aa_steps, args.aa_queries, args.apgd_steps = min(args.aa_steps, 5), min(args.aa_queries, 20), min(
            args.apgd_steps, 10)
        args.warmup = 0
    return args


# ------------------------------------------------------------------------------------------------
# Model B weights: trained briefly on real MNIST, cached
# ------------------------------------------------------------------------------------------------
def trained_model_b(model, args, x_train, y_train):
    import flax.serialization
    import jax
    import numpy as np
    import optax

    from advjax.models import init_variables

    tag = hashlib.sha1(f"model_b|steps={args.train_steps}|seed={args.seed}|adam1e-3|b128|v1".encode()).hexdigest()[:12]
    path = pathlib.Path(args.cache_dir) / f"model_b_mnist_{tag}.msgpack"
    variables = init_variables(model, jax.random.PRNGKey(args.seed))
    if path.exists():
        try:
            return flax.serialization.from_bytes(variables, path.read_bytes()), str(path), 0.0
        except Exception as e:  # noqa: BLE001 - corrupt cache: retrain
            print(f"  cache {path} unreadable ({e}); retraining", flush=True)
    tx = optax.adam(1e-3)
    params = variables["params"]
    opt = tx.init(params)

    def loss_fn(p, x, y):
        logits = model.apply({"params": p}, x)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    @jax.jit
    def step(p, o, x, y):
        loss, g = jax.value_and_grad(loss_fn)(p, x, y)
        u, o = tx.update(g, o, p)
        return optax.apply_updates(p, u), o, loss

    t0 = time.perf_counter()
    rng = np.random.default_rng(args.seed)
    n = x_train.shape[0]
    for i in range(args.train_steps):
        idx = rng.integers(0, n, 128)
        params, opt, loss = step(params, opt, x_train[idx], y_train[idx])
    jax.block_until_ready(params)
    secs = time.perf_counter() - t0
    variables = {"params": params}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(flax.serialization.to_bytes(variables))
    print(f"  trained Model B: {args.train_steps} Adam steps in {secs:.1f}s, last loss {float(loss):.3f}; "
          f"cached at {path}", flush=True)
    return variables, str(path), secs


# ------------------------------------------------------------------------------------------------
# attack builders
# ------------------------------------------------------------------------------------------------
def jax_attack(name, eps, args, loop="auto"):
    from advjax.attacks import APGD, PGD, AutoAttack

    if name in ("pgd20", "pgd20-fixed"):
        return PGD(eps=eps, steps=20, step_size=eps / 8, random_start=name == "pgd20", loop=loop, check_inputs=False)
    if name == "apgd-ce":
        return APGD(eps=eps, steps=args.apgd_steps, loss="ce", restarts=1, loop=loop, check_inputs=False)
    return AutoAttack(eps=eps, steps=args.aa_steps, n_queries=args.aa_queries, loop=loop, check_inputs=False)


def torch_attack(name, module, eps, args, n_classes=10):
    import torchattacks as ta

    if name in ("pgd20", "pgd20-fixed"):
        return ta.PGD(module, eps=eps, alpha=eps / 8, steps=20, random_start=name == "pgd20")
    if name == "apgd-ce":
        return ta.APGD(module, norm="Linf", eps=eps, steps=args.apgd_steps, n_restarts=1, loss="ce", seed=args.seed)
    return ta.MultiAttack([
        ta.APGD(module, norm="Linf", eps=eps, steps=args.aa_steps, n_restarts=1, loss="ce", seed=args.seed),
        ta.APGDT(module, norm="Linf", eps=eps, steps=args.aa_steps, n_restarts=1, n_classes=n_classes, seed=args.seed),
        ta.FAB(module, norm="Linf", eps=eps, steps=args.aa_steps, n_restarts=1, multi_targeted=True,
               n_classes=n_classes, seed=args.seed),
        ta.Square(module, norm="Linf", eps=eps, n_queries=args.aa_queries, n_restarts=1, seed=args.seed),
    ])


def _progress(row, out, results) -> None:
    """Print a finished row and save the partial results (a long run can be stopped any time)."""
    keys = ("advjax_ms_img", "torch_ms_img", "speedup", "advjax_rob_acc", "torch_rob_acc", "compile_s")
    print("    -> " + ", ".join(f"{k} {row[k]:.4g}" for k in keys if row.get(k) is not None), flush=True)
    if out:
        import json

        pathlib.Path(out).parent.mkdir(parents=True, exist_ok=True)
        pathlib.Path(out + ".partial").write_text(json.dumps(results, indent=1, default=_common._json_default))


def main(argv=None) -> int:
    args = parse_args(argv)
    _common.configure(args.threads, args.xla_flags, args.conv)
    import jax
    import jax.numpy as jnp
    import numpy as np

    from advjax.models import get_model, init_variables, logits_fn

    torch = None
    if not args.no_torch:
        torch = _common.setup_torch(args.threads)
        import torchattacks  # noqa: F401

        import _torch_peers as peers
    info = _common.machine_info(args.threads)
    print(f"# bench_attacks  {info['date_utc']}  {info.get('cpu', '?')}  threads={args.threads}  "
          f"XLA_FLAGS={info['xla_flags']!r}  conv={info['conv']}  load={info['load_average_start']}", flush=True)
    results = {"machine": info, "args": vars(args), "models": {}, "rows": [], "loop_rows": []}

    for model_name in dict.fromkeys(args.models + args.loop_models):
        model = get_model(model_name)
        apply_fn = logits_fn(model)
        meta = {}
        if model_name == "model_b":
            xs, ys = _common.load_mnist()
            variables, meta["weights"], meta["train_s"] = trained_model_b(model, args, xs[:8000], ys[:8000])
            x_eval, y_eval = xs[8000:], ys[8000:]
            eps, main_batch, rounds = args.eps_b, args.batch_b, args.rounds_b
        else:
            xs, ys = _common.load_cifar10()
            variables = init_variables(model, jax.random.PRNGKey(args.seed))
            meta["weights"] = f"random init, seed {args.seed}"
            x_eval, y_eval = xs, ys
            eps, main_batch, rounds = args.eps_r, args.batch_r, args.rounds_r
        n_need = main_batch * max([rounds.get(a, 0) for a in args.attacks] + [args.loop_rounds, 1])
        x_eval = x_eval[:n_need]
        y_eval = y_eval[:n_need]
        pred = np.asarray(jax.jit(apply_fn)(variables, jnp.asarray(x_eval))).argmax(-1)
        meta["clean_acc_true_labels"] = float((pred == y_eval).mean())
        if model_name == "resnet18" and args.resnet_labels == "pred":
            y_eval = pred.astype(np.int32)
        meta["clean_acc"] = float((pred == y_eval).mean())
        module = None
        if torch is not None:
            module = peers.copy_flax_to_torch(variables, peers.torch_peer(model_name, model)).eval()
            meta["max_logit_diff"] = peers.max_logit_diff(apply_fn, variables, module, x_eval[:32])
        results["models"][model_name] = meta
        print(f"\n## {model_name}: eps {eps:.4g}, batch {main_batch}, clean acc {meta['clean_acc']:.3f}, "
              f"max |logit diff| {meta.get('max_logit_diff', float('nan')):.2e}", flush=True)
        predict = jax.jit(lambda v, z: jnp.argmax(apply_fn(v, z), -1))

        def compare(attack_name, n_rounds, loop="auto", warmup=args.warmup):
            """Interleave advjax and torch on n_rounds batches; returns a result row."""
            batch = main_batch
            if attack_name == "aa" and model_name == "model_b":
                batch = args.aa_batch_b

            def batch_at(r):
                sl = slice(r * batch, (r + 1) * batch)
                return x_eval[sl], y_eval[sl]

            atk = jax_attack(attack_name, eps, args, loop=loop)
            cur = {"r": 0}
            x0, y0 = batch_at(0)
            key0 = jax.random.PRNGKey(args.seed)
            compile_s = None
            if attack_name == "aa":
                def run_jax():
                    x, y = batch_at(cur["r"])
                    adv, _, _ = atk.drive(apply_fn, variables, jnp.asarray(x), jnp.asarray(y),
                                          jax.random.fold_in(key0, cur["r"]))
                    return adv
                t0 = time.perf_counter()
                _common.block(run_jax())  # compiles every sub-attack it needs (data-dependent)
                compile_s = time.perf_counter() - t0
                compile_note = "first call (compile + run)"
            else:
                fn = jax.jit(lambda v, x, y, k: atk.run(apply_fn, v, x, y, k))
                compile_s, compiled = _common.compile_seconds(fn, variables, jnp.asarray(x0), jnp.asarray(y0), key0)
                compile_note = "lower + compile"

                def run_jax():
                    x, y = batch_at(cur["r"])
                    return compiled(variables, jnp.asarray(x), jnp.asarray(y), jax.random.fold_in(key0, cur["r"]))
            outs = {}
            variants = {"advjax": lambda: outs.__setitem__("advjax", _common.block(run_jax()))}
            if module is not None:
                t_atk = torch_attack(attack_name, module, eps, args)

                def run_torch():
                    x, y = batch_at(cur["r"])
                    adv = t_atk(peers.nhwc_to_nchw(x), torch.from_numpy(y.astype(np.int64)))
                    outs["torch"] = adv
                    return adv
                variants["torch"] = run_torch
            correct = {k: 0 for k in variants}
            seen = {"n": 0}
            linf = {k: 0.0 for k in variants}

            def before_round(r):
                # score the previous round's outputs, then select this round's batch
                if r > 0:
                    score(r - 1)
                cur["r"] = max(r, 0)

            def score(r):
                x, y = batch_at(r)
                adv_j = np.asarray(outs["advjax"])
                correct["advjax"] += int((np.asarray(predict(variables, jnp.asarray(adv_j))) == y).sum())
                linf["advjax"] = max(linf["advjax"], float(np.abs(adv_j - x).max()))
                if "torch" in outs:
                    adv_t = outs["torch"].detach().numpy().transpose(0, 2, 3, 1)
                    correct["torch"] += int((np.asarray(predict(variables, jnp.asarray(adv_t))) == y).sum())
                    linf["torch"] = max(linf["torch"], float(np.abs(adv_t - x).max()))
                seen["n"] += len(y)

            times = _common.interleave(variants, repeats=n_rounds, warmup=warmup, before_round=before_round)
            score(n_rounds - 1)
            row = {"model": model_name, "attack": attack_name, "loop": str(loop), "batch": batch,
                   "images": seen["n"], "eps": eps, "compile_s": compile_s, "compile_note": compile_note}
            sj = _common.summarize(times["advjax"], batch)
            row.update(advjax_ms_img=sj["ms_per_image"], advjax_spread=sj["spread"],
                       advjax_rob_acc=100.0 * correct["advjax"] / seen["n"], advjax_max_linf=linf["advjax"])
            if "torch" in times:
                st = _common.summarize(times["torch"], batch)
                row.update(torch_ms_img=st["ms_per_image"], torch_spread=st["spread"],
                           torch_rob_acc=100.0 * correct["torch"] / seen["n"], torch_max_linf=linf["torch"],
                           speedup=st["ms_per_image"] / sj["ms_per_image"])
                row["acc_diff_pts"] = row["advjax_rob_acc"] - row["torch_rob_acc"]
                row["torch_timing"] = st
            row["advjax_timing"] = sj
            return row

        if model_name in args.models:
            for attack_name in args.attacks:
                n_rounds = rounds.get(attack_name, 1)
                print(f"  {attack_name} ({n_rounds} rounds)", flush=True)
                # AutoAttack: the first (compiling) call is its warm-up
                results["rows"].append(compare(attack_name, n_rounds,
                                               warmup=0 if attack_name == "aa" else args.warmup))
                _progress(results["rows"][-1], args.out, results)
        if model_name in args.loop_models:
            for attack_name in args.loop_attacks:
                for loop in args.loops:
                    print(f"  loop form {attack_name} loop={loop}", flush=True)
                    row = compare(attack_name, args.loop_rounds, loop=loop, warmup=0)
                    results["loop_rows"].append(row)
                    _progress(row, args.out, results)

    info["load_average_end"] = _common.load_average()
    cols = ["model", "attack", "loop", "batch", "images", "advjax_ms_img", "torch_ms_img", "speedup",
            "advjax_rob_acc", "torch_rob_acc", "acc_diff_pts", "compile_s", "advjax_spread", "torch_spread"]
    _common.print_table(results["rows"], cols,
                        title=f"attacks: time per image (ms), speedup = torch / advjax time, robust accuracy (%) "
                              f"(load {info['load_average_start'][0]:.2f} -> {info['load_average_end'][0]:.2f})")
    if results["loop_rows"]:
        _common.print_table(results["loop_rows"], cols, title="loop forms (same peer in each row)")
    for name, meta in results["models"].items():
        print(f"{name}: {meta}")
    _common.write_json(args.out, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
