"""SAT's training step against PGD-10-AT's on ResNet-18, as ratios measured in one run.

SAT (Jin et al., ICCV 2023) adds two things to a PGD-10-AT step: the shift term of eq. 9 in every
inner step (the SAT layers' outputs, captured in the same forward as the logits, and their norm's
gradient) and the cluster loss of eq. 10 (one-hot matmuls on the same training forward). Both
should add little: the target is SAT <= 1.15x PGD-10-AT. Also timed: SAT-TRADES (its extra
capture forward) and SAT-AWP-AT (AWP's proxy step), and PGD-10-AT with the shift term only
(``LGen`` as PGD-AT's attack, no cluster loss) to split the two costs.

All steps are ``jax.jit(get_method(...).step)`` with the state donated and carried from call to
call, run interleaved on the same real CIFAR-10 batch from the same initial weights; reported:
median seconds per step, images/s, ratio to PGD-10-AT. ``--widths`` narrows ResNet-18 for a quick
look (``--quick``: widths 8-16-32-64, batch 16, one round).

Examples::

    python benchmarks/bench_sat.py --quick
    python benchmarks/bench_sat.py --batch 128 --repeats 7 --out /tmp/sat.json
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import _common  # noqa: E402

SAT_KW = {"steps": 10, "alpha": 2 / 255, "lam": 0.087, "beta": 0.1}
METHODS = {
    "PGD-10-AT": ("pgd_at", {"steps": 10, "alpha": 2 / 255}),
    "SAT": ("sat", SAT_KW),
    "PGD-10-AT + shift term": ("pgd_at_lgen", {}),
    "SAT-TRADES": ("sat_trades", SAT_KW),
    "SAT-AWP-AT": ("sat_awp", SAT_KW),
}
TARGETS = {"SAT": 1.15}


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="bench_sat", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--methods", default="PGD-10-AT,SAT,PGD-10-AT + shift term",
                   help=f"comma list of {tuple(METHODS)} (PGD-10-AT is always included)")
    p.add_argument("--batch", type=int, default=128, help="batch size (default 128)")
    p.add_argument("--widths", default="64,128,256,512", help="ResNet-18 stage widths (default: the real one)")
    _common.add_common_args(p)
    return p.parse_args(argv)


def _method(name, kw):
    from advjax.methods.base import get_method

    if name == "pgd_at_lgen":  # PGD-AT whose attack is L_Gen: the shift term's cost alone
        from advjax.methods.pgd_at import PGDAT
        from advjax.methods.sat import SAT

        class _ShiftOnly(PGDAT):
            def perturb(self, state, x, y, key):
                return SAT(**SAT_KW).perturb(state, x, y, key)

        return _ShiftOnly(steps=10, alpha=2 / 255)
    return get_method(name, **kw)


def main(argv=None) -> int:
    args = parse_args(argv)
    _common.configure(args.threads, args.xla_flags, args.conv)
    import jax
    import optax

    from advjax import models
    from advjax.train.state import create_train_state

    repeats = args.repeats or (1 if args.quick else 7)
    batch = 16 if args.quick else args.batch
    widths = (8, 16, 32, 64) if args.quick else tuple(int(w) for w in args.widths.split(","))
    x, y = _common.cifar10_sample(batch, args.seed)
    wanted = _common.pick(args.methods, METHODS, "PGD-10-AT")
    model = models.get_model("resnet18", widths=widths)
    variants, comp = {}, {}
    for label in wanted:
        name, mkw = METHODS[label]
        method = _method(name, mkw)
        st = create_train_state(model, optax.sgd(0.01, momentum=0.9), jax.random.PRNGKey(args.seed))
        comp[label], variants[label] = _common.step_call(method, st, (x, y))
    print(f"resnet18 widths {widths}: batch {batch}, {repeats} round(s)", flush=True)
    times = _common.interleave(variants, repeats, warmup=args.warmup)
    summ = {k: _common.summarize(v, batch) for k, v in times.items()}
    base = summ["PGD-10-AT"]["median_s"]
    rows = []
    for label, s in summ.items():
        ratio = s["median_s"] / base
        target = TARGETS.get(label)
        rows.append({"method": label, "s/step": f"{s['median_s']:.4f}", "images/s": f"{s['images_per_s']:.1f}",
                     "x PGD-10-AT": f"{ratio:.3f}", "target": f"<= {target}" if target else "",
                     "met": ("yes" if ratio <= target else "NO") if target else "",
                     "spread": f"{s['spread']:.2f}", "compile s": f"{comp[label]:.1f}"})
        s["ratio"] = ratio
    _common.print_table(rows, list(rows[0]), title=f"ResNet-18 {widths} (batch {batch})")
    _common.write_json(args.out, {"machine": _common.machine_info(args.threads), "batch": batch,
                                  "widths": widths, "summary": summ, "compile_s": comp})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
