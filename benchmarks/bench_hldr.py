"""HLDR family: fine-tuning step time per sample of HLDR, FIMR, AGNT and HGD against standard
fine-tuning, on the paper's VGG (HLDR VGG-16, BN, ELU, dense 512; 32x32x1 Fashion-MNIST shapes), as
ratios measured interleaved in one run (Table I: HLDR 2.1, FIMR 2.0, HGD 5.3 ms per sample).

Variants (each ``jax.jit(method.step)``, Nadam, state donated and carried): ``standard``; ``FIMR``;
``AGNT``; ``HLDR`` (paper mode: FGSM on the model being fine-tuned at every step, then one capture
forward per branch); ``HLDR-pairs-given`` (reference mode: FGSM on the frozen pretrained model, i.e.
FGSM's forward and backward still run every step); ``HLDR-pairs-precomputed`` (the pairs made
once before timing, as §IV makes the 6000 adversarial examples of a fold before fine-tuning: the
step is the regularized loss alone, what Table I times); ``HGD`` (the denoiser in front of the
frozen VGG). The paper's claim to check: HLDR costs at most one extra forward over FIMR (with the
pairs precomputed), HGD the most.

Examples::

    python benchmarks/bench_hldr.py --quick
    python benchmarks/bench_hldr.py --batch 64 --repeats 5 --out /tmp/hldr.json
    python benchmarks/bench_hldr.py --width-factor 0.25   # the CPU-scale VGG
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import _common  # noqa: E402

METHODS = {
    "standard": ("standard", {}),
    "FIMR": ("fimr", {}),
    "AGNT": ("agnt", {}),
    "HLDR": ("hldr", {}),
    "HLDR-pairs-given": ("hldr", {"fgsm_on": "pretrained"}),
    "HLDR-pairs-precomputed": ("hldr", {"fgsm_on": "pretrained"}),
    "HGD": ("hgd", {}),
}


def pairs_precomputed(method, state, x, y, seed: int = 0):
    """``method`` whose ``perturb`` returns the pairs it made once, here, from ``state``: the
    fine-tuning step on a precomputed paired set (the step then times the loss and update only)."""
    import dataclasses

    import jax

    x_adv = jax.jit(method.perturb)(method.init_state(state, (x, y)), x, y, jax.random.PRNGKey(seed))
    cls = type(method)
    given = type(f"{cls.__name__}PairsPrecomputed", (cls,), {"perturb": lambda self, st, xb, yb, key: x_adv})
    return given(**{f.name: getattr(method, f.name) for f in dataclasses.fields(method) if f.init})


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="bench_hldr", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--methods", default=",".join(METHODS), help=f"comma list of {tuple(METHODS)}")
    p.add_argument("--batch", type=int, default=64, help="batch size (default 64, the code's Fashion-MNIST batch)")
    p.add_argument("--width-factor", type=float, default=1.0,
                   help="VGG and denoiser channel scale (default 1: the paper's); --quick uses 1/8")
    _common.add_common_args(p)
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    _common.configure(args.threads, args.xla_flags, args.conv)
    import jax
    import numpy as np

    from advjax.methods.base import get_method
    from advjax.models import get_model
    from advjax.models.hgd import hgd_defended, numpy_init
    from advjax.train import cross_validation as cv
    from advjax.train.state import create_train_state

    repeats = args.repeats or (1 if args.quick else 5)
    batch = 16 if args.quick else args.batch
    wf = 0.125 if args.quick else args.width_factor
    rng = np.random.default_rng(args.seed)
    x = rng.uniform(size=(batch, 32, 32, 1)).astype(np.float32)
    y = rng.integers(0, 10, batch).astype(np.int32)
    model = get_model("vgg_hldr", input_shape=(32, 32, 1), mean=(0.286,), std=(0.353,), width_factor=wf,
                      hidden=(max(8, int(512 * wf)),) if args.quick else (512,))
    v0 = numpy_init(model, args.seed, model.input_shape)
    wanted = _common.pick(args.methods, METHODS, "standard")
    variants, comp = {}, {}
    for label in wanted:
        name, kw = METHODS[label]
        method = get_method(name, **kw)
        m = hgd_defended(model, width_factor=wf) if name == "hgd" else model
        v = cv._defense_init(method, m, v0, jax.random.PRNGKey(1)) if name == "hgd" else v0
        st = create_train_state(m, cv._nadam(1e-3), jax.random.PRNGKey(args.seed), variables=v)
        if label == "HLDR-pairs-precomputed":
            method = pairs_precomputed(method, st, x, y, args.seed)
        comp[label], variants[label] = _common.step_call(method, st, (x, y))
        print(f"{label}: compiled in {comp[label]:.1f} s", flush=True)
    times = _common.interleave(variants, repeats, warmup=args.warmup)
    summ = {k: _common.summarize(t, batch) for k, t in times.items()}
    base = summ["standard"]["median_s"]
    fimr = summ.get("FIMR", {}).get("median_s")
    rows = []
    paper = {"HLDR-pairs-precomputed": 2.1, "FIMR": 2.0, "HGD": 5.3}
    for label, s in summ.items():
        rows.append({"method": label, "ms/sample": f"{s['ms_per_image']:.3f}",
                     "x standard": f"{s['median_s'] / base:.2f}",
                     "x FIMR": f"{s['median_s'] / fimr:.2f}" if fimr else "",
                     "paper ms": str(paper.get(label, "")),
                     "paper x FIMR": f"{paper[label] / 2.0:.2f}" if label in paper else "",
                     "spread": f"{s['spread']:.2f}", "compile s": f"{comp[label]:.1f}"})
    _common.print_table(rows, list(rows[0]), title=f"HLDR VGG (width x{wf:g}), batch {batch}")
    _common.write_json(args.out, {"machine": _common.machine_info(args.threads), "batch": batch, "width_factor": wf,
                                  "summary": summ, "compile_s": comp})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
