"""Time per epoch of FGSM-SDI, FGSM-RS and PGD-10-AT on ResNet-18 at 32x32, in one run (issue 6).

Jia et al. (IEEE TIP 2022) report FGSM-SDI at about 1.6x the time of FGSM-RS and about 3x faster
than PGD-10-AT; the targets here are SDI / FGSM-RS <= 1.6 and PGD-10-AT / SDI >= 3.

Each method's compiled step (``jax.jit(method.step)``, the same one a training run uses) runs on
the same real CIFAR-10 batch (../shared/data, JPEG copy of the test set) with the same initial
ResNet-18 weights, interleaved in rounds (benchmarks/_common.interleave) so that load from other
processes hits all alike. FGSM-SDI's step has two kinds: with the generator update (1 in k steps,
``state.step % k == 0``) and without; both are timed (by setting the step counter) and combined as
``((k - 1) * t_plain + t_gen) / k``. Time per epoch = time per step x ceil(50000 / batch_size)
(CIFAR-10's training set; extrapolated from the per-step medians, not a full epoch).

The PyTorch peers (unless ``--no-torch``) run the same three steps on the same batch with
ResNet-18 and the generator in torch, in two styles:

* ``torch_ref:*``, as the released code (and Wong et al.'s fast-AT code it builds on) writes
  them: every attack gradient comes from ``loss.backward()``, which also computes every weight
  gradient of the target (and the generator update's backward computes the target's weight
  gradients too). This is what the paper's ~1.6x / ~3x were measured on.
* ``torch_lean:*``: every attack gradient from ``torch.autograd.grad(loss, [input])``, which
  computes only what the input gradient needs -- the work advjax's steps do.

The ratios are printed twice: from the per-variant medians (the headline figure) and round by
round (each round's variants ran back to back), whose range shows how much the shared host's
load moved them. ``--components`` also times the pieces (attack gradient a, training step t,
generator forward g) and prints the ratio's cap (10a + t) / (2a + t + g).

    python benchmarks/bench_sdi.py --quick          # smoke test, meaningless figures
    python benchmarks/bench_sdi.py --repeats 5 --out /tmp/bench_sdi.json
"""
from __future__ import annotations

import argparse
import math
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import _common  # noqa: E402

TRAIN_SIZE = 50_000


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="bench_sdi", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="resnet18", help="advjax model name (default resnet18)")
    p.add_argument("--batch", type=int, default=128,
                   help="batch size (default 128, the training batch of the paper and the released code)")
    p.add_argument("--k", type=int, default=20, help="FGSM-SDI generator period (default 20)")
    p.add_argument("--sdi-mode", default="paper", choices=("paper", "reference"))
    p.add_argument("--components", action="store_true",
                   help="also time the pieces of the steps, interleaved with them: a = one attack gradient "
                        "(forward + input gradient, BN in train mode), t = one training forward + backward + "
                        "update, g = the generator's forward; prints the decomposition and the ratio's cap "
                        "(10a + t) / (2a + t + g)")
    _common.add_common_args(p)
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    _common.configure(args.threads, args.xla_flags, args.conv)
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax

    from advjax.methods.base import get_method
    from advjax.methods.fgsm_sdi import FGSMSDI
    from advjax.models import get_model
    from advjax.train.state import create_train_state

    batch = 8 if args.quick else args.batch
    repeats = 1 if args.quick else (args.repeats or 3)
    model_name = "preact_resnet18" if args.quick and args.no_torch and args.model == "resnet18" else args.model
    x_all, y_all = _common.load_cifar10()
    x, y = jnp.asarray(x_all[:batch]), jnp.asarray(y_all[:batch])
    model = get_model(model_name, num_classes=10)
    tx = optax.chain(optax.add_decayed_weights(5e-4), optax.sgd(0.01, momentum=0.9))
    state0 = create_train_state(model, tx, jax.random.PRNGKey(args.seed), input_shape=(32, 32, 3))

    eps = 8 / 255
    methods = {
        "fgsm_rs": get_method("fgsm_rs", eps=eps),  # alpha = 1.25 eps (Wong et al.)
        "pgd10_at": get_method("pgd_at", eps=eps, alpha=2 / 255, steps=10),
    }
    sdi = FGSMSDI(eps=eps, alpha=eps, k=args.k, mode=args.sdi_mode)
    sdi_state = sdi.init_state(state0, (x, y))
    steps = {name: jax.jit(m.step) for name, m in methods.items()}
    sdi_step = jax.jit(sdi.step)
    key = jax.random.PRNGKey(args.seed + 1)
    st_plain = sdi_state.replace(step=jnp.asarray(1, jnp.int32))  # not a multiple of k
    st_gen = sdi_state.replace(step=jnp.asarray(0, jnp.int32))    # generator update

    variants = {
        "fgsm_rs": lambda: steps["fgsm_rs"](state0, (x, y), key),
        "pgd10_at": lambda: steps["pgd10_at"](state0, (x, y), key),
        "sdi_plain": lambda: sdi_step(st_plain, (x, y), key),
        "sdi_gen": lambda: sdi_step(st_gen, (x, y), key),
    }
    if args.components:
        variants.update(_component_variants(sdi, sdi_state, x, y))
    with_torch = not args.no_torch and model_name == "resnet18"
    if not args.no_torch and not with_torch:
        print(f"[bench_sdi] no torch peer for {model_name}: advjax only", flush=True)
    if with_torch:
        variants.update(_torch_variants(args, model_name, np.asarray(x), np.asarray(y), eps))
    info = _common.machine_info(args.threads)
    print(f"[bench_sdi] {model_name}, batch {batch}, k={args.k}, conv {info['conv']}, load {info['load_average_start']}", flush=True)
    compile_s = {}
    for name, fn in variants.items():
        t, _ = _common.timed_call(fn)  # first call: trace + compile + one run
        compile_s[name] = t
        print(f"  first call (compile) {name}: {t:.1f}s", flush=True)
    times = _common.interleave(variants, repeats=repeats, warmup=args.warmup)
    med = {n: statistics.median(v) for n, v in times.items()}
    k = args.k
    prefixes = [""] + ([] if not with_torch else ["torch_ref:", "torch_lean:"])
    spe = math.ceil(TRAIN_SIZE / batch)
    rows, ratios = [], {}
    for pre in prefixes:
        med[pre + "fgsm_sdi"] = _mean_over_k(med[pre + "sdi_plain"], med[pre + "sdi_gen"], k)
        rows += [{"method": pre + n, "s/step": f"{med[pre + n]:.3f}", "img/s": f"{batch / med[pre + n]:.1f}",
                  "s/epoch (extrap.)": f"{med[pre + n] * spe:.0f}"}
                 for n in ("fgsm_rs", "fgsm_sdi", "sdi_plain", "sdi_gen", "pgd10_at")]
        r = {"sdi_over_fgsm_rs": med[pre + "fgsm_sdi"] / med[pre + "fgsm_rs"],
             "pgd10_over_sdi": med[pre + "pgd10_at"] / med[pre + "fgsm_sdi"]}
        # the same ratios round by round (each round's variants ran back to back, so a slow period of
        # the shared host mostly hits the numerator and the denominator alike)
        per_round = [_mean_over_k(p, g, k) for p, g in zip(times[pre + "sdi_plain"], times[pre + "sdi_gen"])]
        r["per_round_sdi_over_fgsm_rs"] = [s_ / f for s_, f in zip(per_round, times[pre + "fgsm_rs"])]
        r["per_round_pgd10_over_sdi"] = [p / s_ for p, s_ in zip(times[pre + "pgd10_at"], per_round)]
        ratios[pre.rstrip(":") or "advjax"] = r
        pr1, pr2 = r["per_round_sdi_over_fgsm_rs"], r["per_round_pgd10_over_sdi"]
        print(f"{pre.rstrip(':') or 'advjax'}: SDI / FGSM-RS = {r['sdi_over_fgsm_rs']:.2f} (paper ~1.6, "
              f"target <= 1.6); PGD-10-AT / SDI = {r['pgd10_over_sdi']:.2f} (paper ~3, target >= 3); "
              f"per round: {min(pr1):.2f}-{max(pr1):.2f} and {min(pr2):.2f}-{max(pr2):.2f} "
              f"(medians {statistics.median(pr1):.2f}, {statistics.median(pr2):.2f})")
    if args.components:
        a, t, g = med["c:a"], med["c:t"], med["c:g"]
        update = med["sdi_gen"] - med["sdi_plain"]  # the generator's update, once in k steps
        parts = {"a": a, "t": t, "g": g, "t_over_a": t / a,
                 "fgsm_rs_minus_a_t": med["fgsm_rs"] - a - t,
                 "pgd10_minus_10a_t": med["pgd10_at"] - 10 * a - t,
                 "sdi_plain_minus_2a_t_g": med["sdi_plain"] - 2 * a - t - g,
                 "sdi_gen_minus_plain": update,
                 "cap_free_generator": (10 * a + t) / (2 * a + t),
                 "cap_with_generator_forward": (10 * a + t) / (2 * a + t + g),
                 "cap_with_generator_update": (10 * a + t) / (2 * a + t + g + update / k)}
        ratios["components"] = parts
        print(f"components (medians): a = {a:.3f} s (attack gradient), t = {t:.3f} s (training fwd + bwd + "
              f"update), g = {g:.3f} s (generator forward); t / a = {t / a:.2f} (FLOP count: 1.5)")
        print(f"  FGSM-RS - (a + t) = {parts['fgsm_rs_minus_a_t']:+.3f} s; PGD-10-AT - (10a + t) = "
              f"{parts['pgd10_minus_10a_t']:+.3f} s; plain SDI - (2a + t + g) = "
              f"{parts['sdi_plain_minus_2a_t_g']:+.3f} s; generator update = +{parts['sdi_gen_minus_plain']:.3f} s")
        print(f"  cap of PGD-10-AT / SDI: (10a + t) / (2a + t) = {parts['cap_free_generator']:.2f} with a free "
              f"generator, (10a + t) / (2a + t + g) = {parts['cap_with_generator_forward']:.2f} with its forward, "
              f"{parts['cap_with_generator_update']:.2f} with its update once in {k} steps too")
    if with_torch:
        for n in ("fgsm_rs", "fgsm_sdi", "pgd10_at"):
            print(f"{n}: torch_ref time / advjax time = {med['torch_ref:' + n] / med[n]:.2f}, "
                  f"torch_lean / advjax = {med['torch_lean:' + n] / med[n]:.2f}")
    _common.print_table(rows, ["method", "s/step", "img/s", "s/epoch (extrap.)"],
                        title=f"{model_name} 32x32, batch {batch}, {repeats} rounds (medians)")
    info["load_average_end"] = _common.load_average()
    _common.write_json(args.out, {"machine": info, "model": model_name, "batch": batch, "k": k,
                                  "repeats": repeats, "seconds": times, "median_s_per_step": med,
                                  "compile_s": compile_s, "steps_per_epoch": spe, "ratios": ratios,
                                  "quick": bool(args.quick)})
    del np
    return 0


def _mean_over_k(plain: float, gen: float, k: int) -> float:
    """Mean time of an FGSM-SDI step when 1 in k steps also updates the generator."""
    return ((k - 1) * plain + gen) / k


def _component_variants(sdi, state, x, y):
    """c:a, c:t, c:g: the pieces the three steps are made of (see ``--components``); zero-arg callables.

    t is the engine's standard training step (one forward + backward + update on clean x)."""
    import jax

    from advjax.methods.base import get_method

    attack = jax.jit(lambda s: sdi.input_sign(s, x, y)[0])
    train = jax.jit(get_method("standard").step)
    key = jax.random.PRNGKey(0)
    gen = sdi.generator(x.shape[-1])
    gvars = {"params": state.extra["sdi"]["params"], "batch_stats": state.extra["sdi"]["batch_stats"]}
    s_x = jax.block_until_ready(attack(state))
    forward = jax.jit(lambda v, xx, ss: gen.apply(v, xx, ss, train=False))
    return {"c:a": lambda: attack(state), "c:t": lambda: train(state, (x, y), key),
            "c:g": lambda: forward(gvars, x, s_x)}


def _torch_variants(args, model_name, x_nhwc, y, eps):
    """torch_ref:* and torch_lean:* steps (see the module docstring); name -> zero-arg callable."""
    import numpy as np
    torch = _common.setup_torch(args.threads)
    import torch.nn.functional as F
    from _torch_peers import TorchSDIGenerator, nhwc_to_nchw, torch_resnet18

    from advjax.models.ops import CIFAR10_MEAN, CIFAR10_STD

    if model_name != "resnet18":
        raise ValueError("bench_sdi: the torch peers mirror resnet18 only; use --no-torch with --model "
                         f"{model_name}")
    torch.manual_seed(args.seed)
    net = torch_resnet18(10, mean=CIFAR10_MEAN, std=CIFAR10_STD)
    gen = TorchSDIGenerator(3, 64)
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    gopt = torch.optim.Adam(gen.parameters(), lr=1e-3, weight_decay=5e-4)
    x, yt = nhwc_to_nchw(x_nhwc), torch.as_tensor(np.asarray(y), dtype=torch.long)
    alpha_pgd, alpha_rs, alpha_sdi = 2 / 255, 1.25 * eps, eps

    def input_grad(z, lean):
        z = z.detach().requires_grad_(True)
        loss = F.cross_entropy(net(z), yt)
        if lean:
            return torch.autograd.grad(loss, [z])[0]
        net.zero_grad(set_to_none=True)
        loss.backward()  # also every weight gradient, as the released code
        return z.grad

    def train_on(z):
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(net(z.detach()), yt).backward()
        opt.step()

    def random_start():
        delta = torch.empty_like(x).uniform_(-eps, eps)
        return torch.clamp(x + delta, 0, 1) - x

    def fgsm_rs(lean):
        delta = random_start()
        g = input_grad(x + delta, lean)
        delta = torch.clamp(delta + alpha_rs * g.sign(), -eps, eps)
        train_on(torch.clamp(x + delta, 0, 1))

    def pgd10(lean):
        delta = random_start()
        for _ in range(10):
            g = input_grad(x + delta, lean)
            delta = torch.clamp(delta + alpha_pgd * g.sign(), -eps, eps)
            delta = torch.clamp(x + delta, 0, 1) - x
        train_on(x + delta)

    def sdi(lean, gen_update):
        s = input_grad(x, lean).sign()
        if gen_update:
            gen.train()
            eta = eps * gen(x, s)
            xi = torch.clamp(x + eta, 0, 1)
            g = input_grad(xi, lean)
            delta = torch.clamp(eta + alpha_sdi * g.sign(), -eps, eps)
            loss = -F.cross_entropy(net(torch.clamp(x + delta, 0, 1)), yt)
            gopt.zero_grad(set_to_none=True)
            if lean:
                grads = torch.autograd.grad(loss, list(gen.parameters()))
                for prm, gr in zip(gen.parameters(), grads):
                    prm.grad = gr
            else:
                net.zero_grad(set_to_none=True)
                loss.backward()
            gopt.step()
        gen.eval()
        with torch.no_grad():
            eta = eps * gen(x, s)
        g = input_grad(torch.clamp(x + eta, 0, 1), lean)
        delta = torch.clamp(eta + alpha_sdi * g.sign(), -eps, eps)
        train_on(torch.clamp(x + delta, 0, 1))

    net.train()
    out = {}
    for style, lean in (("torch_ref:", False), ("torch_lean:", True)):
        out[style + "fgsm_rs"] = lambda lean=lean: fgsm_rs(lean)
        out[style + "pgd10_at"] = lambda lean=lean: pgd10(lean)
        out[style + "sdi_plain"] = lambda lean=lean: sdi(lean, False)
        out[style + "sdi_gen"] = lambda lean=lean: sdi(lean, True)
    return out


if __name__ == "__main__":
    sys.exit(main())
