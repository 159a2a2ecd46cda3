"""Layerwise adversarial training: the cost of a training step against the standard step, as ratios.

Sankaranarayanan et al.'s point (Table 4's time column) is that Ours-orig costs what the baseline
costs: the perturbation comes from the previous batch's cached gradient, so a step is still ONE
forward and ONE backward. For each model (VGG-16-BN and ResNet-20, CIFAR shapes) the compiled
steps of ``standard``, ``layerwise`` (Ours-orig), ``layerwise_joint`` (Ours-joint), ``fgs_orig``
and ``fgs_inter`` (``jax.jit(get_method(...).step)``, state donated and carried from call to
call) run interleaved on the same real CIFAR-10 batch, the same initial weights. Reported: the
median seconds per step, images/s and the ratio to the standard step's. Targets: Ours-orig
<= 1.1x, Ours-joint / FGS-orig / FGS-inter <= 2.1x.

Examples::

    python benchmarks/bench_layerwise.py --quick
    python benchmarks/bench_layerwise.py --out /tmp/layerwise.json
    python benchmarks/bench_layerwise.py --models resnet20 --batch 128 --repeats 10
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import _common  # noqa: E402

MODELS = ("vgg16_bn", "resnet20")
METHODS = {
    "standard": ("standard", {}),
    "Ours-orig": ("layerwise", {"eps": 10.0}),
    "Ours-joint": ("layerwise_joint", {"eps": 10.0}),
    "FGS-orig": ("fgs_orig", {"input_eps": 0.05}),
    "FGS-inter": ("fgs_inter", {"eps": 10.0}),
}
TARGETS = {"Ours-orig": 1.1, "Ours-joint": 2.1, "FGS-orig": 2.1, "FGS-inter": 2.1}


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="bench_layerwise", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--models", default=",".join(MODELS), help=f"comma list of {MODELS} (default: both)")
    p.add_argument("--methods", default=",".join(METHODS), help=f"comma list of {tuple(METHODS)}")
    p.add_argument("--batch", type=int, default=128, help="batch size (default 128)")
    p.add_argument("--width-factor", type=float, default=1.0,
                   help="VGG channel scale (default 1: the real VGG-16-BN); --quick uses 1/8")
    _common.add_common_args(p)
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    _common.configure(args.threads, args.xla_flags, args.conv)
    import jax
    import optax

    from advjax import models
    from advjax.methods.base import get_method
    from advjax.train.state import create_train_state

    repeats = args.repeats or (1 if args.quick else 7)
    batch = 16 if args.quick else args.batch
    steps_per_call = 1 if args.quick else 3
    x, y = _common.cifar10_sample(batch, args.seed)
    wanted = _common.pick(args.methods, METHODS, "standard")
    results = {"machine": _common.machine_info(args.threads), "batch": batch, "models": {}}
    for model_name in [m for m in args.models.split(",") if m]:
        kw = {}
        if model_name.startswith("vgg"):
            kw["width_factor"] = 0.125 if args.quick else args.width_factor
        model = models.get_model(model_name, **kw)
        variants, comp = {}, {}
        for label in wanted:
            name, mkw = METHODS[label]
            method = get_method(name, **mkw)
            st = create_train_state(model, optax.sgd(0.01, momentum=0.9, nesterov=True),
                                    jax.random.PRNGKey(args.seed))
            comp[label], variants[label] = _common.step_call(method, st, (x, y), steps_per_call=steps_per_call)
        print(f"{model_name}: batch {batch}, {steps_per_call} step(s) per timed call, {repeats} round(s)", flush=True)
        times = _common.interleave(variants, repeats, warmup=args.warmup)
        rows, base = [], None
        summ = {k: _common.summarize([t / steps_per_call for t in v], batch) for k, v in times.items()}
        base = summ["standard"]["median_s"]
        for label, s in summ.items():
            ratio = s["median_s"] / base
            target = TARGETS.get(label)
            rows.append({"method": label, "s/step": f"{s['median_s']:.4f}", "images/s": f"{s['images_per_s']:.0f}",
                         "x standard": f"{ratio:.3f}", "target": f"<= {target}" if target else "",
                         "met": ("yes" if ratio <= target else "NO") if target else "",
                         "spread": f"{s['spread']:.2f}", "compile s": f"{comp[label]:.1f}"})
            s["ratio"] = ratio
        _common.print_table(rows, list(rows[0]), title=f"{model_name} (batch {batch})")
        results["models"][model_name] = {"summary": summ, "compile_s": comp}
    _common.write_json(args.out, results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
