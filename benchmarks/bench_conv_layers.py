"""Per-layer convolution times: XLA's (advjax's per-layer plan without oneDNN), oneDNN through
jax.ffi (advjax.native.onednn), and PyTorch's (oneDNN inside ATen), forward / input gradient /
kernel gradient, for every distinct conv layer of Model B, ResNet-18 (32x32), the FGSM-SDI
generator and ResNet-20.

This is the measurement behind ``advjax.models.ops.conv_plan``'s oneDNN rules. Each operation is
jitted alone and timed as the fastest of ``--repeats`` calls (single layers are short, so the
minimum is the least noisy statistic); the "plan" column is what ``conv_plan`` picks with oneDNN
available.

    python benchmarks/bench_conv_layers.py --batch 128
    python benchmarks/bench_conv_layers.py --layers "B conv2,R 64" --repeats 20
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import _common

V = ((0, 0), (0, 0))
S = ((1, 1), (1, 1))
# name, per-example input shape, kernel shape (HWIO), strides, pads
LAYERS = [
    ("B conv1", (28, 28, 1), (5, 5, 1, 16), (1, 1), V),
    ("B conv2", (24, 24, 16), (5, 5, 16, 32), (1, 1), V),
    ("B conv3", (10, 10, 32), (5, 5, 32, 64), (1, 1), V),
    ("R stem", (32, 32, 3), (3, 3, 3, 64), (1, 1), S),
    ("R 64", (32, 32, 64), (3, 3, 64, 64), (1, 1), S),
    ("R 64-128 s2", (32, 32, 64), (3, 3, 64, 128), (2, 2), S),
    ("R 1x1 64-128 s2", (32, 32, 64), (1, 1, 64, 128), (2, 2), V),
    ("R 128", (16, 16, 128), (3, 3, 128, 128), (1, 1), S),
    ("R 128-256 s2", (16, 16, 128), (3, 3, 128, 256), (2, 2), S),
    ("R 256", (8, 8, 256), (3, 3, 256, 256), (1, 1), S),
    ("R 256-512 s2", (8, 8, 256), (3, 3, 256, 512), (2, 2), S),
    ("R 512", (4, 4, 512), (3, 3, 512, 512), (1, 1), S),
    ("G 6-64", (32, 32, 6), (3, 3, 6, 64), (1, 1), S),
    ("G 64-3", (32, 32, 64), (3, 3, 64, 3), (1, 1), S),
    ("R20 16", (32, 32, 16), (3, 3, 16, 16), (1, 1), S),
    ("R20 32", (16, 16, 32), (3, 3, 32, 32), (1, 1), S),
    ("R20 64", (8, 8, 64), (3, 3, 64, 64), (1, 1), S),
]


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="bench_conv_layers", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--batch", type=int, default=128, help="batch size of every layer")
    p.add_argument("--layers", default="", help="comma list of layer names (default: all): "
                   + ", ".join(n for n, *_ in LAYERS))
    _common.add_common_args(p)
    args = p.parse_args(argv)
    args.repeats = args.repeats or (2 if args.quick else 7)
    if args.quick:
        args.batch = min(args.batch, 8)
    names = [n.strip() for n in args.layers.split(",") if n.strip()]
    unknown = set(names) - {n for n, *_ in LAYERS}
    if unknown:
        p.error(f"unknown layers {sorted(unknown)}; known: {[n for n, *_ in LAYERS]}")
    args.layers = names or [n for n, *_ in LAYERS]
    return args


def best_ms(fn, args, repeats: int) -> float:
    _common.block(fn(*args))
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        _common.block(fn(*args))
        best = min(best, time.perf_counter() - t)
    return best * 1e3


def main(argv=None) -> int:
    args = parse_args(argv)
    _common.configure(args.threads, args.xla_flags, "onednn")
    import jax

    from advjax.models import ops
    from advjax.native import onednn

    ok, why = onednn.status()
    if not ok:
        print(f"oneDNN convolutions unavailable: {why}", file=sys.stderr)
        return 1
    torch = None if args.no_torch else _common.setup_torch(args.threads)
    info = _common.machine_info(args.threads)
    rows = []
    key = jax.random.key(args.seed)
    for name, shape, ws, strides, pads in LAYERS:
        if name not in args.layers:
            continue
        xs = (args.batch, *shape)
        x = jax.random.normal(key, xs)
        w = jax.random.normal(key, ws) * 0.1

        def xla(x, w, strides=strides, pads=pads):
            return ops._conv_nhwc(x, w, strides, pads, None)

        os.environ["ADVJAX_CONV"] = "xla"  # read when each function below is traced
        y = jax.jit(xla)(x, w)
        g = jax.random.normal(key, y.shape)
        xla_ms = [
            best_ms(jax.jit(xla), (x, w), args.repeats),
            best_ms(jax.jit(lambda g, w: jax.vjp(lambda x_: xla(x_, w), x)[1](g)[0]), (g, w), args.repeats),
            best_ms(jax.jit(lambda x, g: jax.vjp(lambda w_: xla(x, w_), w)[1](g)[0]), (x, g), args.repeats),
        ]
        xla_plan = ops.conv_plan(xs, ws, strides, pads, native=False)
        os.environ["ADVJAX_CONV"] = "onednn"
        dnn_ms = [
            best_ms(jax.jit(lambda x, w: onednn.conv(x, w, strides, pads)), (x, w), args.repeats),
            best_ms(jax.jit(lambda g, w: onednn.conv_backward_data(g, w, xs, strides, pads)), (g, w), args.repeats),
            best_ms(jax.jit(lambda x, g: onednn.conv_backward_weights(x, g, ws, strides, pads)), (x, g), args.repeats),
        ]
        plan = ops.conv_plan(xs, ws, strides, pads, native=True)
        row = {"layer": name, "batch": args.batch, "xla_plan": "/".join(xla_plan), "plan": "/".join(plan),
               "xla_ms": [round(t, 2) for t in xla_ms], "onednn_ms": [round(t, 2) for t in dnn_ms],
               "xla_over_onednn": [round(a / b, 2) for a, b in zip(xla_ms, dnn_ms)]}
        if torch is not None:
            tx = torch.randn(args.batch, shape[2], shape[0], shape[1])
            tw = torch.randn(ws[3], ws[2], ws[0], ws[1]) * 0.1
            tpad = [pads[0][0], pads[1][0]]
            sym = pads[0][0] == pads[0][1] and pads[1][0] == pads[1][1]
            if sym:
                ty = torch.nn.functional.conv2d(tx, tw, stride=strides, padding=tpad)
                tg = torch.randn_like(ty)

                def back(mask):
                    return lambda: torch.ops.aten.convolution_backward(
                        tg, tx, tw, None, list(strides), tpad, [1, 1], False, [0, 0], 1, mask)

                with torch.no_grad():
                    row["torch_ms"] = [
                        round(best_ms(lambda: torch.nn.functional.conv2d(tx, tw, stride=strides, padding=tpad),
                                      (), args.repeats), 2),
                        round(best_ms(back([True, False, False]), (), args.repeats), 2),
                        round(best_ms(back([False, True, False]), (), args.repeats), 2),
                    ]
        rows.append(row)
        print(f"{name:16s} plan {row['plan']:20s} xla {'/'.join(f'{t:.1f}' for t in xla_ms):17s} "
              f"onednn {'/'.join(f'{t:.1f}' for t in dnn_ms):17s} "
              f"torch {'/'.join(f'{t:.1f}' for t in row.get('torch_ms', [])):17s} ms (fwd/dx/dw)", flush=True)
    table = [{**r, "xla_ms": "/".join(map(str, r["xla_ms"])), "onednn_ms": "/".join(map(str, r["onednn_ms"])),
              "xla_over_onednn": "/".join(map(str, r["xla_over_onednn"])),
              "torch_ms": "/".join(map(str, r.get("torch_ms", [])))} for r in rows]
    _common.print_table(table, ["layer", "batch", "xla_plan", "plan", "xla_ms", "onednn_ms", "torch_ms",
                                "xla_over_onednn"],
                        title=f"conv layers, ms (fwd/dx/dw), fastest of {args.repeats}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"machine": info, "args": vars(args), "rows": rows}, f, indent=1)
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
