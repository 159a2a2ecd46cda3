"""Ten minutes on a GPU or TPU: is advjax on XLA's fast path there, how fast is it, and are the
numbers the CPU's? (issue 25, item 7)

Run it on the accelerator host (``pip install -e .`` with a CUDA / TPU jaxlib), nothing else to set:

    python benchmarks/accelerator_check.py --out accel.json      # ~10 min on one GPU / TPU chip
    python benchmarks/accelerator_check.py --tiny                # smoke test, any machine (CPU too; compile-bound)

What it does, in order (each part prints as it finishes; ``--out`` writes everything as JSON):

1. **Kernels.** Compiles the input gradient of a stride-2 3x3 convolution (ResNet-18's 64 -> 128
   layer at batch 128) for the default device and looks at the optimized HLO
   (``compile().as_text()``): on CUDA it must call cuDNN's backward-data kernel
   (``__cudnn$convBackwardInput``; ROCm: MIOpen's, same name), on TPU it is a native
   ``convolution``; no oneDNN FFI call may appear off CPU. On the CPU it reports which path
   (oneDNN / XLA) was taken.
2. **Training steps.** ResNet-18, CIFAR-10 shape, batch 128: the standard step, PGD-10-AT and
   FGSM-SDI (the generator update every step here, the dearest case), each ``jax.jit`` of the
   method's ``step``: compile seconds, images/s (median of ``--repeats`` timed runs after a
   warm-up) and the device's peak memory (``memory_stats()["peak_bytes_in_use"]``, cumulative:
   the peak so far, where the backend reports it).
3. **AutoAttack.** ResNet-18 trained for ``--train-steps`` standard steps (on the CIFAR-10
   training split when it is found, else on test images 1000+; synthetic data when no CIFAR-10 is
   found, which the report says), then the standard AutoAttack at ``--eps`` (default 1/255, so
   that a briefly trained model keeps some robust points) on ``--images`` (256) test images, at
   precision "highest" (advjax.precision.EVAL_DEFAULT), on the device and then, for the first
   ``--cpu-images`` (64) of them, on this host's CPU with the same weights, images and key. It
   reports both robust accuracies, the per-sub-attack times and how many per-example verdicts
   differ (expected: none or a handful at the decision boundary; float summation order differs
   between backends).

Nothing here was measured on a GPU or TPU by the authors: the figures are for the person who runs
it (please paste the printed summary into an issue).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def _parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tiny", action="store_true",
                   help="smoke test: ResNet-20 at batch 8, 16 images, a cheap AutoAttack (figures meaningless; on a "
                        "loaded 2-core CPU host it took 24 min, nearly all XLA:CPU compilation)")
    p.add_argument("--batch", type=int, default=128, help="training batch size (default 128)")
    p.add_argument("--images", type=int, default=256, help="AutoAttack images on the device (default 256)")
    p.add_argument("--cpu-images", type=int, default=64,
                   help="of those, how many to attack again on the CPU for the comparison (0: skip; default 64)")
    p.add_argument("--eps", default="1/255", help="AutoAttack L-inf radius (default 1/255)")
    p.add_argument("--train-steps", type=int, default=300, help="standard steps before AutoAttack (default 300)")
    p.add_argument("--repeats", type=int, default=10, help="timed runs per training step (default 10)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="write the results as JSON here")
    args = p.parse_args(argv)
    num, _, den = args.eps.partition("/")
    args.eps = float(num) / float(den or 1)
    if args.tiny:
        args.batch, args.images, args.cpu_images = 8, 16, min(args.cpu_images, 8)
        args.train_steps, args.repeats = min(args.train_steps, 5), min(args.repeats, 2)
    return args


def _block(x):
    import jax

    return jax.block_until_ready(x)


def _peak_bytes(device):
    stats = getattr(device, "memory_stats", lambda: None)()
    return None if not stats else stats.get("peak_bytes_in_use")


def _mib(b):
    return None if b is None else round(b / 2**20, 1)


def check_kernels(device, tiny: bool) -> dict:
    """Part 1: the stride-2 conv's input gradient, compiled for ``device``'s platform."""
    import jax
    import jax.numpy as jnp

    from advjax.models import ops
    from advjax.native import onednn

    n, hw, cin, cout = (8, 8, 8, 16) if tiny else (128, 32, 64, 128)
    x = jnp.ones((n, hw, hw, cin), jnp.float32)
    w = jnp.ones((3, 3, cin, cout), jnp.float32) * 0.01
    dn = ("NHWC", "HWIO", "NHWC")
    grad = jax.jit(jax.grad(lambda x, w: ops.fast_conv_general_dilated(
        x, w, (2, 2), ((1, 1), (1, 1)), dimension_numbers=dn).sum(), argnums=0))
    hlo = grad.lower(x, w).compile().as_text()
    platform = device.platform
    onednn_calls = [t for t, _ in onednn._TARGETS.values() if t in hlo]
    out = {"platform": platform, "oneDNN_calls": onednn_calls, "hlo_convolutions": hlo.count("convolution(")}
    if platform == "gpu" or "cuda" in str(device).lower() or "rocm" in str(device).lower():
        out["cudnn_backward_input"] = "convBackwardInput" in hlo
        out["ok"] = out["cudnn_backward_input"] and not onednn_calls
        out["expect"] = "a __cudnn$convBackwardInput custom call, no oneDNN call"
    elif platform == "tpu":
        out["ok"] = out["hlo_convolutions"] > 0 and not onednn_calls
        out["expect"] = "native convolution ops, no oneDNN call"
    else:
        out["path"] = "oneDNN" if onednn_calls else "XLA:CPU convolutions"
        out["ok"] = True
        out["expect"] = "CPU: oneDNN where installed (advjax[onednn]), else XLA's convolutions"
    return out


def _resnet(tiny: bool):
    from advjax import models

    return models.get_model("resnet20" if tiny else "resnet18")


def train_steps(args, device) -> dict:
    """Part 2: standard, PGD-10-AT and FGSM-SDI steps."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax

    from advjax.methods.base import get_method
    from advjax.train.state import create_train_state

    model = _resnet(args.tiny)
    rng = np.random.default_rng(args.seed)
    x = jnp.asarray(rng.uniform(size=(args.batch, 32, 32, 3)).astype(np.float32))
    y = jnp.asarray(rng.integers(0, 10, size=(args.batch,)).astype(np.int32))
    state0 = create_train_state(model, optax.sgd(0.1, momentum=0.9), jax.random.PRNGKey(args.seed))
    eps = 8 / 255
    methods = {
        "standard": get_method("standard"),
        "pgd10_at": get_method("pgd_at", eps=eps, alpha=2 / 255, steps=10, domain=(0.0, 1.0)),
        "fgsm_sdi": get_method("fgsm_sdi", eps=eps, domain=(0.0, 1.0)),
    }
    rows = {}
    for name, method in methods.items():
        state = method.init_state(state0, (x, y)) if hasattr(method, "init_state") else state0
        step = jax.jit(method.step)
        key = jax.random.PRNGKey(1)
        t0 = time.perf_counter()
        compiled = step.lower(state, (x, y), key).compile()
        compile_s = time.perf_counter() - t0
        st, m = compiled(state, (x, y), key)  # warm-up
        _block(m)
        times = []
        for i in range(args.repeats):
            t0 = time.perf_counter()
            st, m = compiled(st, (x, y), jax.random.fold_in(key, i))
            _block(m)
            times.append(time.perf_counter() - t0)
        med = float(np.median(times))
        rows[name] = {"compile_s": round(compile_s, 2), "step_ms": round(1e3 * med, 2),
                      "images_per_s": round(args.batch / med, 1), "peak_mib": _mib(_peak_bytes(device)),
                      "loss": float(m["loss"])}
        print(f"  {name:9s} compile {compile_s:6.1f} s   {args.batch / med:8.1f} images/s   "
              f"peak {rows[name]['peak_mib']} MiB", flush=True)
    return rows


def _data(args):
    """(x_train, y_train, x_test, y_test, source) as float32 [0, 1] / int32 numpy arrays."""
    import numpy as np

    n_train = max(args.batch * 4, 512)
    try:
        from advjax import data

        test = data.load("cifar10", f"test[:{args.images}]")
        try:
            train = data.load("cifar10", "train")
            src = "CIFAR-10 train / test"
        except Exception:  # noqa: BLE001 -- no training split here: train on other test images
            train = data.load("cifar10", f"test[1000:{1000 + n_train}]")
            src = "CIFAR-10 test[1000:] / test"
        return (train.x.astype(np.float32) / 255.0, train.y, test.x.astype(np.float32) / 255.0, test.y, src)
    except Exception as e:  # noqa: BLE001
        rng = np.random.default_rng(0)
        xs = rng.uniform(size=(n_train + args.images, 32, 32, 3)).astype(np.float32)
        ys = rng.integers(0, 10, size=(n_train + args.images,)).astype(np.int32)
        return xs[:n_train], ys[:n_train], xs[n_train:], ys[n_train:], f"synthetic (no CIFAR-10: {e})"


def autoattack(args, device) -> dict:
    """Part 3: a briefly trained ResNet-18, AutoAttack on the device and again on the CPU."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax

    from advjax import models, precision
    from advjax.attacks import AutoAttack
    from advjax.methods.base import get_method
    from advjax.train.state import create_train_state

    xtr, ytr, xte, yte, source = _data(args)
    model = _resnet(args.tiny)
    state = create_train_state(model, optax.sgd(0.05, momentum=0.9, nesterov=True), jax.random.PRNGKey(args.seed))
    step = jax.jit(get_method("standard").step)
    rng = np.random.default_rng(args.seed)
    t0 = time.perf_counter()
    for i in range(args.train_steps):
        idx = rng.integers(0, len(xtr), size=args.batch)
        state, m = step(state, (jnp.asarray(xtr[idx]), jnp.asarray(ytr[idx])), jax.random.PRNGKey(i))
    _block(state.params)
    train_s = time.perf_counter() - t0
    variables = jax.device_get(state.variables())
    apply_fn = models.logits_fn(model)
    if args.tiny:
        aa = AutoAttack(eps=args.eps, steps=5, n_target_classes=2, n_queries=20)
    else:
        aa = AutoAttack(eps=args.eps)
    key = jax.random.PRNGKey(args.seed + 7)

    def run(dev, n):
        with jax.default_device(dev), precision.use(precision.EVAL_DEFAULT):
            v = jax.device_put(variables, dev)
            t0 = time.perf_counter()
            _, clean, after, secs = aa.drive(apply_fn, v, jnp.asarray(xte[:n]), jnp.asarray(yte[:n]), key,
                                            with_times=True)
            total = time.perf_counter() - t0
        last = np.asarray(list(after.values())[-1]) if after else np.asarray(clean)
        return {"n": n, "clean_acc": float(np.mean(clean)), "robust_acc": float(np.mean(last)),
                "after": {k: float(np.mean(v)) for k, v in after.items()},
                "seconds": {k: round(s, 2) for k, s in secs.items()}, "total_s": round(total, 2)}, last

    out = {"data": source, "train_steps": args.train_steps, "train_s": round(train_s, 1), "eps": args.eps,
           "precision": precision.EVAL_DEFAULT}
    res, flags = run(device, args.images)
    out["device"] = res
    print(f"  device: clean {res['clean_acc']:.3f}  robust {res['robust_acc']:.3f}  ({res['total_s']} s; "
          f"{res['seconds']})", flush=True)
    n_cpu = min(args.cpu_images, args.images)
    if n_cpu > 0:
        cpu = jax.devices("cpu")[0]
        res_cpu, flags_cpu = run(cpu, n_cpu)
        out["cpu"] = res_cpu
        out["verdicts_differing"] = int(np.sum(flags[:n_cpu] != flags_cpu))
        out["device_robust_acc_on_cpu_subset"] = float(np.mean(flags[:n_cpu]))
        print(f"  cpu:    clean {res_cpu['clean_acc']:.3f}  robust {res_cpu['robust_acc']:.3f} on the first {n_cpu} "
              f"(device: {out['device_robust_acc_on_cpu_subset']:.3f}); verdicts differing: "
              f"{out['verdicts_differing']}/{n_cpu}  ({res_cpu['total_s']} s)", flush=True)
    return out


def main(argv=None) -> int:
    args = _parse(argv)
    import jax

    from advjax.native import onednn

    device = jax.devices()[0]
    t_start = time.perf_counter()
    info = {"jax": jax.__version__, "device": str(device), "platform": device.platform,
            "device_kind": getattr(device, "device_kind", None), "devices": jax.device_count(),
            "ADVJAX_CONV": onednn.mode(), "XLA_FLAGS": os.environ.get("XLA_FLAGS", ""), "tiny": args.tiny}
    print(f"advjax accelerator check on {device} ({info['device_kind']}), jax {jax.__version__}", flush=True)
    print("1. kernels", flush=True)
    kernels = check_kernels(device, args.tiny)
    print(f"  {json.dumps(kernels)}", flush=True)
    print(f"2. training steps (batch {args.batch})", flush=True)
    steps = train_steps(args, device)
    print(f"3. AutoAttack (eps {args.eps:.4g}, {args.images} images)", flush=True)
    aa = autoattack(args, device)
    result = {"info": info, "kernels": kernels, "steps": steps, "autoattack": aa,
              "total_s": round(time.perf_counter() - t_start, 1)}
    print(f"done in {result['total_s']} s; kernel check {'OK' if kernels['ok'] else 'FAILED: ' + kernels['expect']}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)
        print(f"wrote {args.out}")
    return 0 if kernels["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
