"""Smooth AT costs: training-step images/s of each activation against ReLU, and ReLU's smooth
backward op against plain ReLU, as ratios measured in one run (advjax only, no PyTorch peer).

The thesis' point (Xie et al.) is that smoothness is "free": a smooth activation, or ReLU with a
smooth backward, adds no computation to adversarial training. Measured here:

* **steps**: one compiled SAT training step (``SmoothAT``: PGD-1 with random start, eps = step =
  8/255, one SGD-momentum update) of ResNet-18 (CIFAR stem, 32x32) per activation (relu,
  parametric_softplus, softplus, silu, gelu, elu, celu(1.4), smooth_relu) and for ReLU with the
  smooth backward for the attacker, the optimizer and both (Table X rows), all interleaved on the
  same real CIFAR-10 batch. Reported: images/s and the ratio to the ReLU step.
* **op**: forward + backward of the activation alone on a [batch, 32, 32, 64] tensor (the size of
  ResNet-18's first stage), ``jax.nn.relu`` vs ``relu_smooth_backward`` vs the smooth activations.

Examples::

    python benchmarks/bench_smooth_at.py --quick          # seconds: a smoke test, meaningless figures
    python benchmarks/bench_smooth_at.py --out /tmp/smooth_at.json
    python benchmarks/bench_smooth_at.py --model model_b --batch 128
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import _common  # noqa: E402

ACTIVATIONS = ("relu", "parametric_softplus", "softplus", "silu", "gelu", "elu", "celu(1.4)", "smooth_relu")
SWITCHES = {"relu+sb:attacker": (True, False), "relu+sb:optimizer": (False, True), "relu+sb:both": (True, True)}


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="bench_smooth_at", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--model", default="resnet18", help="model name (default resnet18)")
    p.add_argument("--batch", type=int, default=64, help="batch size of the training step (default 64)")
    p.add_argument("--activations", default=",".join(ACTIVATIONS), help="comma list of activation specs")
    p.add_argument("--op-batch", type=int, default=128, help="batch of the op benchmark (default 128)")
    p.add_argument("--skip-steps", action="store_true", help="only the op benchmark")
    _common.add_common_args(p)
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    _common.configure(args.threads, args.xla_flags, args.conv)
    import jax
    import jax.numpy as jnp
    import optax

    from advjax import models
    from advjax.methods.smooth_at import SmoothAT
    from advjax.models import activations as A
    from advjax.train.state import create_train_state

    repeats = args.repeats or (1 if args.quick else 5)
    model_name = "model_b" if args.quick and args.model == "resnet18" else args.model
    batch = 8 if args.quick else args.batch
    acts = [a.strip() for a in args.activations.split(",") if a.strip()]
    switches = dict(SWITCHES)
    copts = None
    if args.quick:  # a smoke test: two activations, one switch row, LLVM optimization off
        acts, switches = acts[:2], {"relu+sb:both": SWITCHES["relu+sb:both"]}
        copts = {"xla_backend_optimization_level": 0}
    x_all, y_all = _common.load_cifar10()
    x, y = jnp.asarray(x_all[:batch]), jnp.asarray(y_all[:batch])
    results = {"machine": _common.machine_info(args.threads), "args": vars(args), "steps": {}, "op": {}}

    # ---- training steps -----------------------------------------------------------------------
    if not args.skip_steps:
        variants, compile_s = {}, {}
        kw = {"input_shape": (32, 32, 3)} if model_name == "model_b" else {}
        configs = {a: (a, False, False) for a in acts}
        configs.update({k: ("relu", att, opt) for k, (att, opt) in switches.items()})
        for label, (act, att, opt) in configs.items():
            model = models.get_model(model_name, activation=act, **kw)
            st = create_train_state(model, optax.sgd(0.01, momentum=0.9), jax.random.PRNGKey(args.seed))
            method = SmoothAT(eps=8 / 255, smooth_attacker=att, smooth_optimizer=opt)
            step = jax.jit(method.step)
            secs, compiled = _common.compile_seconds(step, st, (x, y), jax.random.PRNGKey(1), compiler_options=copts)
            compile_s[label] = secs
            holder = {"st": st}

            def run(compiled=compiled, holder=holder):
                holder["st"], m = compiled(holder["st"], (x, y), jax.random.PRNGKey(1))
                return m["loss"]

            variants[label] = run
            print(f"  compiled {label}: {secs:.1f} s", flush=True)
        times = _common.interleave(variants, repeats, args.warmup)
        base = _common.summarize(times["relu"], batch)["images_per_s"] if "relu" in times else None
        rows = []
        for label, t in times.items():
            s = _common.summarize(t, batch)
            rows.append({"variant": label, "images/s": s["images_per_s"],
                         "vs relu": None if base is None else s["images_per_s"] / base,
                         "compile s": compile_s[label]})
            results["steps"][label] = {**s, "compile_seconds": compile_s[label]}
        _common.print_table(rows, ["variant", "images/s", "vs relu", "compile s"],
                            title=f"SAT (PGD-1) training step, {model_name}, batch {batch}")

    # ---- the op ---------------------------------------------------------------------------------
    shape = (2 if args.quick else args.op_batch, 32, 32, 64)
    z = jax.random.normal(jax.random.PRNGKey(0), shape)
    g = jax.random.normal(jax.random.PRNGKey(1), shape)
    fns = {"relu": jax.nn.relu, "relu_smooth_backward": A.relu_smooth_backward}
    fns.update({a: A.get_activation(a) for a in acts if a not in ("relu", "smooth_relu")})
    fns["smooth_relu"] = lambda t: A.smooth_relu(t, 400.0)
    op_vars = {}
    for label, f in fns.items():
        fb = jax.jit(lambda t, c, f=f: jax.vjp(f, t)[1](c)[0])
        fb(z, g).block_until_ready()
        op_vars[label] = lambda fb=fb: fb(z, g)
    times = _common.interleave(op_vars, max(repeats, 3) * 4, args.warmup)
    base = _common.summarize(times["relu"], shape[0])["median_s"]
    rows = []
    for label, t in times.items():
        s = _common.summarize(t, shape[0])
        rows.append({"op": label, "ms (fwd+bwd)": 1e3 * s["median_s"], "vs relu": s["median_s"] / base})
        results["op"][label] = s
    _common.print_table(rows, ["op", "ms (fwd+bwd)", "vs relu"], title=f"activation forward + backward on {shape}")
    _common.write_json(args.out, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
