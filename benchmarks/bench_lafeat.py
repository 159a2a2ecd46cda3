"""LAFEAT-100 against APGD-CE-100, seconds per image, measured in one run (advjax only).

LAFEAT (Yu et al., CVPR 2021; advjax.attacks.lafeat) runs 100 iterations per beta of its schedule
(10 betas), each on the points still robust; APGD-CE-100 runs 100 iterations once. Variants, all
interleaved on the same real CIFAR-10 batch and the same weights:

* ``apgd-ce-100``: ``APGD(loss="ce", steps=100)`` (AutoAttack's first sub-attack);
* ``lafeat-100 x1``: one LAFEAT run (one beta, 100 iterations): the per-iteration cost of the
  attack itself (the forward through the heads, the margin normalization, momentum, masking);
* ``lafeat-100``: the full attack, 10 betas. Its cost depends on how many points stay robust:
  later runs are skipped once no point of the batch is robust, but a run with any robust point
  computes the whole batch (masks, static shapes). With ``--robust-model`` (default off) the
  weights are a quick PGD-AT fine-tune so some points survive; otherwise the random weights are
  fooled at once and the figure is close to the ``x1`` one. ``--run-dir`` measures a trained model
  instead: the weights of an advjax run (e.g. ``results/sat-runs/cpu/PGD-AT_s0`` of
  ``advjax reproduce sat-cifar10``) and the LAFEAT heads trained for them
  (``<run>/lafeat_heads/final``), attacked on the held-out images of the SAT CPU split with their
  true labels: the cost a Table 1 evaluation pays.

Labels are the model's own predictions unless ``--true-labels``: every point starts correctly
classified, as most do on a trained model (random weights misclassify ~90% of CIFAR-10, and
LAFEAT, like the official code, attacks only correctly classified points). The heads are freshly
initialized (their cost does not depend on training; the attack's strength
does, see tests/test_lafeat.py). Reported: ms per image (median over rounds), the ratio to
APGD-CE-100, and compile seconds.

Examples::

    python benchmarks/bench_lafeat.py --quick            # seconds: a smoke test, meaningless figures
    python benchmarks/bench_lafeat.py --model resnet18 --batch 64 --out /tmp/lafeat.json
    python benchmarks/bench_lafeat.py --run-dir results/sat-runs/cpu/PGD-AT_s0 --batch 128
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import _common  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="bench_lafeat", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--model", default="resnet18", help="model name (default resnet18)")
    p.add_argument("--batch", type=int, default=64, help="images per attack call (default 64)")
    p.add_argument("--steps", type=int, default=100, help="iterations per run (default 100)")
    p.add_argument("--eps", type=float, default=8 / 255)
    p.add_argument("--robust-model", action="store_true",
                   help="fine-tune the weights with a few PGD-AT steps first, so some points stay robust")
    p.add_argument("--run-dir", default=None,
                   help="a trained advjax run directory with LAFEAT heads in <run>/lafeat_heads/final (as "
                        "`advjax reproduce sat-cifar10` leaves them): its last weights, the held-out SAT CPU-split "
                        "images, true labels (overrides --model, --robust-model)")
    p.add_argument("--true-labels", action="store_true",
                   help="attack the CIFAR-10 labels (default: the model's own predictions, so every point starts "
                        "robust and no run is skipped at the start, as on a trained model)")
    _common.add_common_args(p)
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    _common.configure(args.threads, args.xla_flags, args.conv)
    import jax
    import jax.numpy as jnp
    import numpy as np

    from advjax import models
    from advjax.attacks import APGD
    from advjax.attacks import lafeat_heads as lh
    from advjax.attacks.lafeat import LAFEAT

    repeats = args.repeats or (1 if args.quick else 3)
    batch = 4 if args.quick else args.batch
    steps = 3 if args.quick else args.steps
    trained_heads = None
    if args.run_dir:
        import pathlib

        from advjax.train.checkpoint import load_for_eval
        from experiments._cifar_cpu import cifar10_test_split

        model, variables, _ = load_for_eval(args.run_dir, "last")
        model_name = f"{getattr(model, 'name', None) or type(model).__name__} ({pathlib.Path(args.run_dir).name})"
        hd = pathlib.Path(args.run_dir) / "lafeat_heads" / "final"
        if not hd.is_dir():
            raise SystemExit(f"bench_lafeat: no LAFEAT heads in {hd}; train them with `advjax lafeat-heads "
                             f"--checkpoint {args.run_dir}` or run `advjax reproduce sat-cifar10`, which stores them there")
        trained_heads = lh.load_heads(hd, model, variables)
        _, (xe, ye) = cifar10_test_split(2023)
        x, y = jnp.asarray(xe[:batch], jnp.float32) / 255.0, jnp.asarray(ye[:batch])
        args.true_labels = True
    else:
        model_name = "model_b" if args.quick and args.model == "resnet18" else args.model
        kw = {"input_shape": (32, 32, 3)} if model_name == "model_b" else {}
        model = models.get_model(model_name, **kw)
        variables = models.init_variables(model, jax.random.PRNGKey(args.seed))
        x_all, y_all = _common.load_cifar10()
        x, y = jnp.asarray(x_all[:batch]), jnp.asarray(y_all[:batch])
    apply_fn = models.logits_fn(model)
    if args.robust_model and not args.run_dir:
        import optax

        from advjax.methods.base import get_method
        from advjax.train.state import create_train_state

        st = create_train_state(model, optax.sgd(0.01, momentum=0.9), jax.random.PRNGKey(args.seed),
                                variables=variables)
        step = jax.jit(get_method("pgd_at", eps=args.eps, steps=3).step)
        xt, yt = x_all[batch:batch + 512], y_all[batch:batch + 512]
        for i in range(2 if args.quick else 20):
            b = slice((i % 4) * 128, (i % 4 + 1) * 128)
            st, _ = step(st, (xt[b], yt[b]), jax.random.PRNGKey(i))
        variables = jax.device_get(st.variables())
    if not args.true_labels:  # every point starts correctly classified (as on a trained model): the attack's full cost
        y = jnp.argmax(apply_fn(variables, x), -1).astype(jnp.int32)
    if trained_heads is not None:
        heads = trained_heads
    else:
        layers = lh.default_head_layers(model)
        params, nc = lh.init_heads(model, variables, layers, jax.random.PRNGKey(1))
        heads = lh.LafeatHeads(params=params, layers=tuple(layers), kind="learnable", num_classes=nc)
    fn, vh = lh.lafeat_features_fn(model, heads), lh.with_heads(variables, heads)

    attacks = {
        f"apgd-ce-{steps}": (APGD(eps=args.eps, steps=steps, loss="ce"), apply_fn, variables),
        f"lafeat-{steps} x1": (LAFEAT(eps=args.eps, steps=steps, betas=(0.5,)), fn, vh),
        f"lafeat-{steps}": (LAFEAT(eps=args.eps, steps=steps), fn, vh),
    }
    copts = {"xla_backend_optimization_level": 0} if args.quick else None
    variants, compile_s, fooled = {}, {}, {}
    key = jax.random.PRNGKey(2)
    for label, (atk, f, v) in attacks.items():
        jitted = jax.jit(lambda v, x, y, k, atk=atk, f=f: atk.run(f, v, x, y, k))
        secs, compiled = _common.compile_seconds(jitted, v, x, y, key, compiler_options=copts)
        compile_s[label] = secs
        x_adv = compiled(v, x, y, key)
        fooled[label] = float(np.mean(np.asarray(jnp.argmax(apply_fn(variables, x_adv), -1)) != np.asarray(y)))
        variants[label] = lambda compiled=compiled, v=v: compiled(v, x, y, key)
        print(f"  compiled {label}: {secs:.1f} s (fooled {fooled[label]:.0%})", flush=True)
    clean_wrong = float(np.mean(np.asarray(jnp.argmax(apply_fn(variables, x), -1)) != np.asarray(y)))
    times = _common.interleave(variants, repeats, args.warmup)
    ref = _common.summarize(times[f"apgd-ce-{steps}"], batch)["ms_per_image"]
    rows, results = [], {"machine": _common.machine_info(args.threads), "args": vars(args), "model": model_name,
                         "batch": batch, "clean_error": clean_wrong, "attacks": {}}
    for label, t in times.items():
        s = _common.summarize(t, batch)
        rows.append({"attack": label, "ms/image": s["ms_per_image"], "vs apgd-ce": s["ms_per_image"] / ref,
                     "fooled": fooled[label], "compile s": compile_s[label]})
        results["attacks"][label] = {**s, "compile_seconds": compile_s[label], "fooled": fooled[label]}
    _common.print_table(rows, ["attack", "ms/image", "vs apgd-ce", "fooled", "compile s"],
                        title=f"LAFEAT vs APGD-CE, {model_name}, batch {batch}, eps {args.eps:.4f} "
                              f"(clean error {clean_wrong:.0%})")
    _common.write_json(args.out, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
