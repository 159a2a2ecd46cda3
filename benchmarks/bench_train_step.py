"""Training-step throughput: advjax methods vs the same step in PyTorch (+ torchattacks), as ratios.

For each model (Model B on MNIST shape, ResNet-18 CIFAR stem at 32x32) and method (standard,
FGSM-RS, PGD-10-AT, TRADES-10), one compiled advjax step (``advjax.methods.get_method(...).step``
under ``jax.jit``, the state carried from call to call) and the same step written in PyTorch
(torchattacks FFGSM / PGD / TPGD for the attack, eval-mode attack, one SGD-momentum update) run
interleaved on the same real batch, same weights at the start, same threads. Reported: images/s
of each, the ratio advjax / PyTorch (the issue's target is >= 1.2), and the achieved fraction of
this CPU's peak float32 matmul FLOP/s (the best call of a 3072^3 matmul in numpy, jax or torch, measured
at the start and at the end of the run; the higher one is used), counting the matmul work as
2 x forward FLOPs per attack gradient and 3 x forward FLOPs per weight gradient (the issue's
convention): standard 3F, FGSM-RS 5F, PGD-k 2kF + 3F, TRADES-k F + 2kF + 6F per image.

Extra advjax variants (``--jax-variants``) run in the same rounds, so each lever is a ratio
measured against the same peer at the same moment:

* ``default``  the method as shipped (its built-in unrolled inner loop);
* ``rolled``   PGD-AT with ``attack=advjax.attacks.PGD(loop="rolled")`` (``lax.fori_loop``);
* ``unroll2``/``unroll5`` the same with a partial unroll factor;
* ``donate``   the default step jitted with ``donate_argnums=0`` (state buffers reused);
* ``opt:NAME=VALUE[;NAME=VALUE]`` the default step compiled with these XLA options for this
  executable only (e.g. ``opt:xla_cpu_enable_fast_math=true``), every method.

Examples::

    python benchmarks/bench_train_step.py --quick
    python benchmarks/bench_train_step.py --out /tmp/train_step.json
    python benchmarks/bench_train_step.py --models model_b --methods pgd_at --jax-variants default,rolled,donate
    python benchmarks/bench_train_step.py --xla-flags ''      # XLA's default flags, for comparison
"""
from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import _common  # noqa: E402

METHODS = ("standard", "fgsm_rs", "pgd_at", "trades")
MODELS = ("model_b", "resnet18")
JAX_VARIANTS = ("default", "rolled", "unroll2", "unroll5", "donate")


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        prog="bench_train_step", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--models", default=",".join(MODELS), help=f"comma list of {MODELS} (default: both)")
    p.add_argument("--methods", default=",".join(METHODS), help=f"comma list of {METHODS} (default: all)")
    p.add_argument("--batch-b", type=int, default=128, help="batch size for Model B (default 128)")
    p.add_argument("--batch-r", type=int, default=32,
                   help="batch size for ResNet-18 (default 32: a PGD-10 step at 128 takes ~20 s on 2 cores)")
    p.add_argument("--attack-steps", type=int, default=10, help="PGD / TRADES inner steps (default 10)")
    p.add_argument("--resnet-repeats", type=int, default=None,
                   help="timed rounds for ResNet-18 (default: min(repeats, 3))")
    p.add_argument("--jax-variants", default="default",
                   help=f"comma list of advjax variants timed in the same rounds, from {JAX_VARIANTS} or "
                        "opt:NAME=VALUE[;NAME=VALUE] (per-executable XLA options); loop variants apply to "
                        "pgd_at only, donate and opt: to every method")
    p.add_argument("--peak-n", type=int, default=3072, help="matrix size of the peak matmul measurement")
    _common.add_common_args(p)
    args = p.parse_args(argv)
    args.models = [m.strip() for m in args.models.split(",") if m.strip()]
    args.methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    args.jax_variants = [v.strip() for v in args.jax_variants.split(",") if v.strip()]
    for m in args.models:
        if m not in MODELS:
            p.error(f"unknown model {m!r}; known: {', '.join(MODELS)}")
    for m in args.methods:
        if m not in METHODS:
            p.error(f"unknown method {m!r}; known: {', '.join(METHODS)}")
    for v in args.jax_variants:
        if v.startswith("opt:"):
            try:
                _common.parse_compiler_options(v[4:])
            except ValueError as e:
                p.error(str(e))
        elif v not in JAX_VARIANTS:
            p.error(f"unknown advjax variant {v!r}; known: {', '.join(JAX_VARIANTS)}")
    if args.quick:
        args.batch_b, args.batch_r = min(args.batch_b, 16), min(args.batch_r, 4)
        args.attack_steps = min(args.attack_steps, 2)
        args.repeats = 1 if args.repeats is None else args.repeats
        args.peak_n = min(args.peak_n, 512)
    if args.repeats is None:
        args.repeats = 5
    if args.resnet_repeats is None:
        args.resnet_repeats = min(args.repeats, 3)
    return args


# ------------------------------------------------------------------------------------------------
# settings per model (MNIST: eps 0.3; CIFAR: 8/255), shared by both frameworks
# ------------------------------------------------------------------------------------------------
def attack_settings(model_name):
    if model_name == "model_b":
        return dict(eps=0.3, alpha=0.01, fgsm_alpha=0.375)
    return dict(eps=8 / 255, alpha=2 / 255, fgsm_alpha=10 / 255)


def flops_per_image(method, fwd, k):
    """Matmul FLOPs per image (issue 4's convention) for one training step."""
    return {"standard": 3 * fwd, "fgsm_rs": 2 * fwd + 3 * fwd, "pgd_at": 2 * k * fwd + 3 * fwd,
            "trades": fwd + 2 * k * fwd + 2 * 3 * fwd}[method]


def build_jax_step(method_name, variant, model, st, k):
    import jax
    import optax

    from advjax.attacks import PGD
    try:
        from advjax.methods import get_method
    except ImportError:  # registry not re-exported from the package yet
        from advjax.methods.base import get_method
    try:
        from advjax.train import create_train_state
    except ImportError:
        from advjax.train.state import create_train_state

    s = st
    if method_name == "standard":
        method = get_method("standard")
    elif method_name == "fgsm_rs":
        method = get_method("fast", eps=s["eps"], alpha=s["fgsm_alpha"])
    elif method_name == "pgd_at":
        attack = None
        if variant in ("rolled", "unroll2", "unroll5"):
            loop = {"rolled": "rolled", "unroll2": 2, "unroll5": 5}[variant]
            attack = PGD(eps=s["eps"], step_size=s["alpha"], steps=k, random_start=True, loop=loop,
                         check_inputs=False)
        method = get_method("pgd_at", eps=s["eps"], alpha=s["alpha"], steps=k, attack=attack)
    else:
        method = get_method("trades", eps=s["eps"], alpha=s["alpha"], steps=k, beta=6.0)
    donate = (0,) if variant == "donate" else ()
    step = jax.jit(method.step, donate_argnums=donate)
    tx = optax.sgd(0.01, momentum=0.9)
    return method, step, tx, create_train_state


def torch_step_fn(torch, torchattacks, method_name, module, opt, x, y, s, k):
    import torch.nn.functional as F

    if method_name == "standard":
        attack = None
    elif method_name == "fgsm_rs":
        attack = torchattacks.FFGSM(module, eps=s["eps"], alpha=s["fgsm_alpha"])
    elif method_name == "pgd_at":
        attack = torchattacks.PGD(module, eps=s["eps"], alpha=s["alpha"], steps=k, random_start=True)
    else:
        attack = torchattacks.TPGD(module, eps=s["eps"], alpha=s["alpha"], steps=k)

    def step():
        module.train()
        if method_name == "trades":
            x_adv = attack(x, y)
            opt.zero_grad(set_to_none=True)
            logits_c = module(x)
            logits_a = module(x_adv)
            natural = F.cross_entropy(logits_c, y)
            robust = F.kl_div(F.log_softmax(logits_a, 1), F.softmax(logits_c, 1), reduction="batchmean")
            loss = natural + 6.0 * robust
        else:
            x_adv = x if attack is None else attack(x, y)
            opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(module(x_adv), y)
        loss.backward()
        opt.step()
        return loss

    return step


def main(argv=None) -> int:
    args = parse_args(argv)
    _common.configure(args.threads, args.xla_flags, args.conv)
    import jax
    import jax.numpy as jnp
    import numpy as np

    from advjax.models import get_model, init_variables

    torch = torchattacks = None
    if not args.no_torch:
        torch = _common.setup_torch(args.threads)
        import torchattacks  # noqa: F401

        import _torch_peers as peers
    info = _common.machine_info(args.threads)
    print(f"# bench_train_step  {info['date_utc']}  {info.get('cpu', '?')}  threads={args.threads}  "
          f"XLA_FLAGS={info['xla_flags']!r}  conv={info['conv']}  load={info['load_average_start']}", flush=True)

    peak = _common.peak_matmul(args.peak_n, repeats=3 if args.quick else 5, torch=torch)
    print(f"peak float32 matmul ({args.peak_n}^3): numpy {peak['numpy']:.1f}, jax {peak['jax']:.1f}"
          + (f", torch {peak['torch']:.1f}" if "torch" in peak else "") + " GFLOP/s", flush=True)

    results = {"machine": info, "args": vars(args), "peak_matmul": peak, "rows": []}
    rows = results["rows"]
    for model_name in args.models:
        model = get_model(model_name)
        batch = args.batch_b if model_name == "model_b" else args.batch_r
        repeats = args.repeats if model_name == "model_b" else args.resnet_repeats
        xs, ys = _common.load_mnist() if model_name == "model_b" else _common.load_cifar10()
        x_np, y_np = xs[:batch], ys[:batch]
        x, y = jnp.asarray(x_np), jnp.asarray(y_np)
        s = attack_settings(model_name)
        variables = init_variables(model, jax.random.PRNGKey(args.seed))
        fwd = None
        module = None
        if torch is not None:
            module = peers.copy_flax_to_torch(variables, peers.torch_peer(model_name, model))
            diff = peers.max_logit_diff(lambda v, z: model.apply(v, z, train=False), variables, module, x_np[:8])
            print(f"\n## {model_name}  batch {batch}  max |logit diff| flax vs torch = {diff:.2e}", flush=True)
            fwd = peers.forward_flops(module, (x_np.shape[3], x_np.shape[1], x_np.shape[2]))
            results.setdefault("logit_diff", {})[model_name] = diff
            init_state_dict = {k: v.clone() for k, v in module.state_dict().items()}
            tx_ = torch.from_numpy(np.ascontiguousarray(x_np.transpose(0, 3, 1, 2)))
            ty_ = torch.from_numpy(y_np.astype(np.int64))
        for method_name in args.methods:
            variants = {}
            compile_s = {}
            k = args.attack_steps
            for var in args.jax_variants:
                if var not in ("default", "donate") and not var.startswith("opt:") and method_name != "pgd_at":
                    continue
                method, step, tx, create_train_state = build_jax_step(method_name, var, model, s, k)
                state = create_train_state(model, tx, jax.random.PRNGKey(args.seed), variables=variables)
                if var == "donate":  # own buffers: donation deletes them, the other variants share `variables`
                    state = jax.tree.map(jnp.copy, state)
                key = jax.random.PRNGKey(args.seed + 1)
                opts = _common.parse_compiler_options(var[4:]) if var.startswith("opt:") else None
                c_s, compiled = _common.compile_seconds(step, state, (x, y), key, compiler_options=opts)
                compile_s[f"advjax:{var}"] = c_s
                holder = {"state": state, "i": 0}

                def run(compiled=compiled, holder=holder, key=key):
                    holder["i"] += 1
                    st_, metrics = compiled(holder["state"], (x, y), jax.random.fold_in(key, holder["i"]))
                    holder["state"] = st_
                    return metrics["loss"]

                variants[f"advjax:{var}"] = run
            if module is not None:
                module.load_state_dict(init_state_dict)
                opt = torch.optim.SGD(module.parameters(), lr=0.01, momentum=0.9)
                variants["torch"] = torch_step_fn(torch, torchattacks, method_name, module, opt, tx_, ty_, s, k)
            print(f"  {method_name}: compile " + ", ".join(f"{n} {c:.1f}s" for n, c in compile_s.items()),
                  flush=True)
            times = _common.interleave(variants, repeats=repeats, warmup=args.warmup)
            torch_ips = None
            if "torch" in times:
                torch_ips = _common.summarize(times["torch"], batch)["images_per_s"]
            for name, t in times.items():
                summ = _common.summarize(t, batch)
                row = {"model": model_name, "method": method_name, "variant": name, "batch": batch,
                       "images_per_s": summ["images_per_s"], "spread": summ["spread"],
                       "compile_s": compile_s.get(name),
                       "ratio_vs_torch": (summ["images_per_s"] / torch_ips) if torch_ips and name != "torch" else None}
                if fwd is not None:
                    gflops = flops_per_image(method_name, fwd, k) * summ["images_per_s"] / 1e9
                    row["gflop_s"] = gflops
                    row["frac_peak"] = gflops / peak["peak_gflops"]
                row["timing"] = summ
                rows.append(row)
                print(f"    -> {name}: {row['images_per_s']:.1f} images/s"
                      + (f", x{row['ratio_vs_torch']:.2f} vs torch" if row["ratio_vs_torch"] else "")
                      + (f", {100 * row['frac_peak']:.0f}% of the start peak" if row.get("frac_peak") is not None else ""),
                      flush=True)
    # the peak again at the end; the fractions use the higher of the two (a conservative denominator)
    peak_end = _common.peak_matmul(args.peak_n, repeats=3 if args.quick else 5, torch=torch)
    peak = results["peak_matmul"] = _common.combine_peaks(peak, peak_end)
    print(f"peak float32 matmul at the end: {peak_end['peak_gflops']:.1f} GFLOP/s; fractions use "
          f"{peak['peak_gflops']:.1f}", flush=True)
    for row in rows:
        if row.get("gflop_s") is not None:
            row["frac_peak"] = row["gflop_s"] / peak["peak_gflops"]
    info["load_average_end"] = _common.load_average()
    _common.print_table(rows, ["model", "method", "variant", "batch", "images_per_s", "ratio_vs_torch",
                               "frac_peak", "gflop_s", "compile_s", "spread"],
                        title=f"training step throughput (peak {peak['peak_gflops']:.1f} GFLOP/s; "
                              f"load {info['load_average_start'][0]:.2f} -> {info['load_average_end'][0]:.2f})")
    _common.write_json(args.out, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
