"""Max pooling's gradient rule: the PGD-10-AT step on Model B with the old and the new max_pool.

``old`` is plain reshape + max (autodiff of ``max`` splits a window's gradient evenly among tied
maxima); ``new`` is ``advjax.models.ops.max_pool`` (a custom JVP giving it to the first maximum in
window order, as flax's ``nn.max_pool`` and PyTorch's ``max_pool2d``). Both steps are compiled in
this process (``ops.max_pool`` is swapped while each one is traced) and timed interleaved on the
same MNIST batch from the same state. Reported: images/s of each and the ratio new / old.

Examples::

    python benchmarks/bench_maxpool.py                 # batch 128, 5 rounds
    python benchmarks/bench_maxpool.py --quick
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import _common  # noqa: E402


def _old_max_pool(x, window: int = 2):
    *lead, h, w, c = x.shape
    ho, wo = h // window, w // window
    x = x[..., : ho * window, : wo * window, :]
    return x.reshape(*lead, ho, window, wo, window, c).max(axis=(-4, -2))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="bench_maxpool", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    _common.add_common_args(p)
    p.add_argument("--batch", type=int, default=128, help="batch size (default 128)")
    p.add_argument("--steps", type=int, default=10, help="PGD steps of the training attack (default 10)")
    args = p.parse_args(argv)
    _common.configure(args.threads, args.xla_flags, args.conv)

    import jax
    import numpy as np
    import optax

    from advjax import models
    from advjax.methods import get_method
    from advjax.models import ops
    from advjax.train.state import create_train_state

    batch = 16 if args.quick else args.batch
    repeats = args.repeats or (1 if args.quick else 5)
    x, y = _common.load_mnist()
    x = (x[:batch].astype(np.float32) / 255.0).reshape(batch, 28, 28, 1)
    y = y[:batch].astype(np.int32)
    model = models.get_model("model_b")
    method = get_method("pgd_at", eps=0.3, steps=args.steps)
    state0 = create_train_state(model, optax.sgd(0.01, momentum=0.9), jax.random.PRNGKey(args.seed))
    key = jax.random.PRNGKey(args.seed + 1)

    new_pool = ops.max_pool
    compiled = {}
    for name, pool in (("old", _old_max_pool), ("new", new_pool)):
        ops.max_pool = pool
        try:
            secs, compiled[name] = _common.compile_seconds(jax.jit(method.step), state0, (x, y), key)
        finally:
            ops.max_pool = new_pool
        print(f"  compiled {name} in {secs:.1f}s", flush=True)

    # same numbers up to the tie rule: the losses of one step agree closely
    losses = {n: float(f(state0, (x, y), key)[1]["loss"]) for n, f in compiled.items()}
    print("  loss of one step: " + ", ".join(f"{n} {v:.5f}" for n, v in losses.items()))
    variants = {n: (lambda f=f: f(state0, (x, y), key)) for n, f in compiled.items()}
    times = _common.interleave(variants, repeats, warmup=args.warmup)
    rows = []
    for n in variants:
        s = _common.summarize(times[n], batch)
        rows.append({"variant": n, "images/s": f"{s['images_per_s']:.1f}", "median s": f"{s['median_s']:.3f}",
                     "spread": f"{s['spread']:.0%}"})
    ratio = (_common.summarize(times["new"], batch)["images_per_s"]
             / _common.summarize(times["old"], batch)["images_per_s"])
    _common.print_table(rows, ["variant", "images/s", "median s", "spread"],
                        title=f"Model B PGD-{args.steps}-AT step, batch {batch}")
    print(f"ratio new / old: {ratio:.3f}")
    _common.write_json(args.out, {"times": times, "ratio": ratio, "batch": batch, "losses": losses})
    return 0


if __name__ == "__main__":
    sys.exit(main())
