"""Accelerator readiness (issue 25), checked on this CPU by lowering for CUDA and TPU.

``jax.export.export(jax.jit(f), platforms=(...))`` lowers for a platform this host does not have;
the StableHLO is what that backend would be given. The checks: no CPU-only piece (oneDNN FFI calls,
their custom partitioning) leaks into accelerator programs; convolution gradients are JAX's own
rule (a backward-data convolution whose kernel operand is a ``reverse``, what XLA:GPU maps to
cuDNN); the portable (off-CPU) implementation gives the CPU path's numbers; Square runs several
queries per while trip off CPU with the same result; Free-AT's replays are one loop; attacks'
``loop="auto"`` follows the lowering platform; TrainState takes rbg / typed keys and checkpoints
keep them; attack input checks read only addressable shards; forward mode through the fast-conv
models; the precision and XLA-flag settings. (Evaluation sending the variables once is
tests/test_eval_placement.py's.)

Cost: XLA:CPU compiles threefry draws and deep ``model.init`` slowly here, so the models are tiny
(8x8 inputs, batch 2-4), variables come from numpy (:func:`_init`), programs are exported once per
module (fixtures) and several properties are read from the same text; the default set runs in well
under a minute single-process.
"""
from __future__ import annotations

import re

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from absl.testing import parameterized

from advjax import models, precision, xla_flags
from advjax.attacks.pgd import PGD
from advjax.attacks.square import QUERIES_PER_TRIP_OFF_CPU, Square
from advjax.methods.base import get_method
from advjax.methods.free_at import FreeAT
from advjax.models import ops
from advjax.models.generator import SDIGenerator
from advjax.models.platform import portable_ops
from advjax.models.resnet import ResNet
from advjax.native import onednn
from advjax.train.state import create_train_state

ACCELERATORS = ("cuda", "tpu")
# custom calls that carry no compatibility guarantee or only exist on XLA:CPU
CPU_ONLY = tuple(t for t, _ in onednn._TARGETS.values()) + ("CustomSPMDPartitioning",)


def _tiny_resnet():
    """Stride-2 3x3 and 1x1 shortcut convolutions, batch norm: ResNet's pieces at 8x8."""
    return ResNet(stage_sizes=(1, 1), widths=(8, 16), input_shape=(8, 8, 3))


class _PoolNet(nn.Module):
    """conv (3 channels: the CPU 'taps' forward) -> BN -> max pool -> conv (16 -> 16: oneDNN's
    input gradient when installed) -> dense."""

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = ops.Conv(16, 3, padding="SAME")(x)
        x = ops.batch_norm(train, jnp.float32)(x)
        x = ops.max_pool(nn.relu(x), 2)
        x = ops.Conv(16, 3, strides=2, padding="SAME")(x)
        return nn.Dense(10)(x.reshape(x.shape[0], -1))


def _init(model, x, seed=0) -> dict:
    """Random variables of ``model`` drawn with numpy (the shapes from ``jax.eval_shape``): XLA:CPU
    takes 10-70 s to compile a threefry ``model.init`` here, none of which these tests need."""
    shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), x))
    rng = np.random.default_rng(seed)

    def leaf(path, s):
        name = str(path[-1])
        if "var" in name or "scale" in name:
            return jnp.asarray(rng.uniform(0.5, 1.5, s.shape).astype(s.dtype))
        return jnp.asarray((0.3 * rng.standard_normal(s.shape)).astype(s.dtype))

    return dict(jax.tree_util.tree_map_with_path(leaf, shapes))


def _custom_calls(text: str) -> set[str]:
    return set(re.findall(r"custom_call @([\w$.]+)", text)) | set(re.findall(r'call_target_name = "([^"]+)"', text))


def _export(f, *args, platforms=("cuda",)):
    return jax.export.export(jax.jit(f), platforms=platforms)(*args).mlir_module()


def _xy(n=2, hw=8, c=3, seed=0):
    kx, ky = jax.random.split(jax.random.PRNGKey(seed))
    return jax.random.uniform(kx, (n, hw, hw, c)), jax.random.randint(ky, (n,), 0, 10)


def _ce(apply_fn, variables, x, y):
    return optax.softmax_cross_entropy_with_integer_labels(apply_fn(variables, x), y).mean()


# ------------------------------------------------------------------------------------------
# no CPU-only piece in accelerator programs
# ------------------------------------------------------------------------------------------
def test_model_b_input_gradient_exports_for_accelerators_without_cpu_calls():
    """The issue's reproducer: this failed with "Cannot serialize code with custom calls whose
    targets have no compatibility guarantees" while the oneDNN calls were chosen at trace time."""
    model = models.get_model("model_b")
    x = jnp.full((2, 28, 28, 1), 0.5)
    v = _init(model, x)
    y = jnp.array([1, 2])
    g = jax.grad(lambda x: _ce(models.logits_fn(model), v, x, y))
    for plat in ACCELERATORS:
        text = _export(g, x, platforms=(plat,))
        assert not _custom_calls(text) & set(CPU_ONLY), plat
        assert "reduce_window" in text and "select_and_scatter" in text, "off CPU, max pool is reduce_window"
    cpu = jax.jit(g).lower(x).as_text()
    if onednn.enabled("cpu"):  # the same function lowered for this CPU does use the fast path
        assert _custom_calls(cpu) & set(CPU_ONLY)
    assert "select_and_scatter" not in cpu, "on CPU, max pool is reshape + max (a select, no scatter)"


@pytest.fixture(scope="module")
def tiny_resnet():
    """(model, variables, x, y) of the 8x8 ResNet, variables drawn with numpy (no threefry init)."""
    model = _tiny_resnet()
    x, y = _xy()
    return model, _init(model, x), x, y


@pytest.fixture(scope="module")
def input_gradient_programs(tiny_resnet):
    """The tiny ResNet's input gradient exported for each accelerator, and lowered for this CPU."""
    model, v, x, y = tiny_resnet
    g = jax.grad(lambda x: _ce(models.logits_fn(model), v, x, y))
    return {**{plat: _export(g, x, platforms=(plat,)) for plat in ACCELERATORS}, "cpu": jax.jit(g).lower(x).as_text()}


def test_training_and_attack_programs_have_no_cpu_only_calls(tiny_resnet):
    model, v, x, y = tiny_resnet
    state = create_train_state(model, optax.sgd(0.1), jax.random.PRNGKey(0), variables=v)
    step = get_method("pgd_at", eps=8 / 255, steps=1, domain=(0.0, 1.0)).step
    key = jax.random.PRNGKey(1)
    text = _export(step, state, (x, y), key, platforms=ACCELERATORS)  # one multi-platform program
    assert not _custom_calls(text) & set(CPU_ONLY)
    assert "stablehlo.convolution" in text

    model = models.get_model("model_b")
    xb = jnp.full((2, 28, 28, 1), 0.5)
    v = _init(model, xb)
    attack = PGD(eps=0.1, steps=3, loop="rolled")
    text = _export(lambda v, x, y, k: attack.run(models.logits_fn(model), v, x, y, k), v, xb, y, key,
                   platforms=ACCELERATORS)
    assert not _custom_calls(text) & set(CPU_ONLY) and "stablehlo.while" in text

    gen = SDIGenerator(features=8)
    gv = dict(jax.tree_util.tree_map(
        lambda s: jnp.full(s.shape, 0.1, s.dtype), jax.eval_shape(lambda: gen.init(jax.random.PRNGKey(0), x, x))))
    g = jax.grad(lambda p: jnp.sum(gen.apply({**gv, "params": p}, x, jnp.sign(x - 0.5), train=True,
                                             mutable=["batch_stats"])[0] ** 2))
    text = _export(g, gv["params"], platforms=ACCELERATORS)
    assert not _custom_calls(text) & set(CPU_ONLY)
    assert "dot_general" not in text, "off CPU the generator's kernel gradient is a convolution, not 9 matmuls"


# ------------------------------------------------------------------------------------------
# JAX's own convolution gradient off CPU
# ------------------------------------------------------------------------------------------
def _backward_data_convs(text: str):
    """(line, rhs operand's defining line) of every convolution whose kernel layout is [0, 1, o, i]
    (a conv's input gradient as JAX writes it)."""
    lines = text.splitlines()
    found = []
    for i, line in enumerate(lines):
        m = re.search(r"stablehlo\.convolution\((%[\w#]+), (%[\w#]+)\) dim_numbers = \[b, 0, 1, f\]x\[0, 1, o, i\]", line)
        if not m:
            continue
        rhs = m.group(2).split("#")[0]
        define = next((lines[j] for j in range(i - 1, -1, -1) if re.match(rf"\s*{re.escape(rhs)}(:\d+)? = ", lines[j])), "")
        found.append((line, define))
    return found


def test_conv_gradient_off_cpu_is_a_reversed_kernel_convolution(input_gradient_programs):
    """cuDNN's backward-data kernel needs the gradient convolution's kernel operand to be a plain
    ``reverse``; the stride-2 layer's gradient dilates the cotangent in the convolution itself
    (lhs_dilate) instead of padding zeros into a 4x larger tensor."""
    for plat in ACCELERATORS:
        text = input_gradient_programs[plat]
        assert not _custom_calls(text) & set(CPU_ONLY), plat
        bwd = _backward_data_convs(text)
        assert len(bwd) == 6, f"{plat}: expected the 6 convolutions' input gradients, got {len(bwd)}"
        for line, define in bwd:
            assert "stablehlo.reverse" in define, f"{plat}: kernel operand not a reverse: {define.strip()}"
        assert any("lhs_dilate = [2, 2]" in line for line, _ in bwd), "the stride-2 gradient dilates in the conv"
        assert not re.search(r"stablehlo\.pad .*interior = \[0, 1, 1, 0\]", text), "no zero-interleaved cotangent"
    cpu = input_gradient_programs["cpu"]
    assert not [d for _, d in _backward_data_convs(cpu) if "stablehlo.reverse" in d], (
        "the CPU program keeps the custom-VJP gradient (ordinary HWIO convolutions)")
    if onednn.enabled("cpu"):
        assert _custom_calls(cpu) & set(CPU_ONLY), "the same gradient lowered for this CPU uses oneDNN"


# ------------------------------------------------------------------------------------------
# the portable path gives the CPU path's numbers
# ------------------------------------------------------------------------------------------
def _compare_portable_with_cpu(variant, which):
    """Logits, loss, batch statistics and parameter / input gradients of the CPU path against
    the portable (off-CPU) path, both run here."""
    model = _tiny_resnet() if which == "resnet" else _PoolNet()
    x, y = _xy(n=2, hw=8)
    if which == "pool":
        x = x.at[:, :4, :4].set(0.5)  # ties in the pooling windows
    v = _init(model, x)

    def train_loss(params, x):
        logits, new = model.apply({**v, "params": params}, x, train=True, mutable=["batch_stats"])
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), (logits, new)

    def run(params, x):
        (loss, aux), grads = jax.value_and_grad(train_loss, argnums=(0, 1), has_aux=True)(params, x)
        return loss, aux, grads, model.apply(v, x, train=False)

    cpu = variant(run)(v["params"], x)
    with portable_ops():
        portable = variant(lambda *a: run(*a))(v["params"], x)  # a new function: traced afresh
    chex.assert_trees_all_close(portable, cpu, rtol=2e-4, atol=2e-5)
    # the gradients are not trivially zero (the comparison means something)
    assert float(jnp.abs(cpu[2][1]).max()) > 1e-4


class PortableMatchesCpu(chex.TestCase):
    """Conv (taps / col2im / oneDNN on CPU), training-mode BN, max pool with ties, stride 2."""

    @chex.variants(with_jit=True)
    def test_logits_gradients_and_statistics(self):
        _compare_portable_with_cpu(self.variant, "pool")

    @pytest.mark.slow
    def test_portable_jaxpr_has_no_custom_rule_and_forward_mode_works(self):
        model = _PoolNet()
        x, _ = _xy(n=2)
        v = _init(model, x)
        f = lambda x: model.apply(v, x)  # noqa: E731
        assert "custom_vjp_call" in str(jax.make_jaxpr(f)(x))
        with portable_ops():
            f = lambda x: model.apply(v, x)  # noqa: E731  (a new function: JAX caches traces per function)
            jaxpr = str(jax.make_jaxpr(f)(x))
            assert "custom_vjp_call" not in jaxpr and "platform_index" not in jaxpr
            ek = jnp.zeros((2, 10)).at[0, 3].set(1.0)
            t, back = jax.jit(lambda x: (jax.jvp(f, (x,), (jnp.ones_like(x),))[1], jax.vjp(f, x)[1](ek)[0]))(x)
        # forward mode agrees with reverse mode: <J 1, e_k> = <1, J^T e_k>
        np.testing.assert_allclose(float((t * ek).sum()), float(back.sum()), rtol=1e-4)


@pytest.mark.slow
class PortableMatchesCpuEverywhere(chex.TestCase):
    """The same comparison for ResNet's pieces (1x1 stride-2 shortcut) and without jit (slow:
    eager dispatch of every op)."""

    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.named_parameters(("resnet", "resnet"), ("pool_net", "pool"))
    def test_logits_gradients_and_statistics(self, which):
        _compare_portable_with_cpu(self.variant, which)


def test_portable_max_pool_keeps_the_first_maximum_rule():
    """The CPU rule (first maximum in row-major window order) is tests/test_trust.py's; off CPU the
    same: a constant window's gradient goes to its top-left pixel, a tie elsewhere to the first."""
    z = jnp.ones((1, 4, 4, 1)).at[0, 2, 3, 0].set(2.0).at[0, 3, 2, 0].set(2.0)  # a tie in window (1, 1)
    with portable_ops():
        g = jax.jit(jax.grad(lambda z: ops.max_pool(z, 2).sum()))(z)[0, :, :, 0]
    want = np.zeros((4, 4), np.float32)
    want[0, 0] = want[0, 2] = want[2, 0] = 1.0
    want[2, 3] = 1.0  # row 2 comes before row 3 in window order
    np.testing.assert_array_equal(np.asarray(g), want)


# ------------------------------------------------------------------------------------------
# loops that do not stall the device
# ------------------------------------------------------------------------------------------
def _square_setup():
    """A linear classifier on 8x8x3 images (Square only calls apply_fn; a small program compiles fast)."""
    x, _ = _xy(n=4, hw=8)
    rng = np.random.default_rng(0)
    v = {"w": jnp.asarray(rng.standard_normal((8 * 8 * 3, 10)).astype(np.float32)), "b": jnp.zeros((10,))}
    apply_fn = lambda v, x: x.reshape(x.shape[0], -1) @ v["w"] + v["b"]  # noqa: E731
    y = jnp.argmax(apply_fn(v, x), -1)  # all correctly classified: every point is attacked
    return apply_fn, v, x, y


def test_square_runs_several_queries_per_trip_off_cpu():
    apply_fn, v, x, y = _square_setup()
    key = jax.random.key(3, impl="rbg")
    sq = Square(eps=0.05, n_queries=30)
    f = lambda v, x, y, k: sq.run(apply_fn, v, x, y, k)  # noqa: E731
    n_cpu = jax.jit(f).lower(v, x, y, key).as_text().count("stablehlo.dot_general")
    n_gpu = _export(f, v, x, y, key).count("stablehlo.dot_general")
    # one matmul per model call: the while body holds 1 call on CPU, 8 off CPU
    assert n_gpu >= n_cpu + QUERIES_PER_TRIP_OFF_CPU - 1, (n_cpu, n_gpu)


@pytest.mark.slow
def test_square_gives_the_same_result_for_every_trip_length(monkeypatch):
    apply_fn, v, x, y = _square_setup()
    # an rbg key: XLA:CPU compiles 8 unrolled queries' threefry draws for minutes on this host
    key = jax.random.key(3, impl="rbg")
    sq = Square(eps=0.05, n_queries=30)
    run = lambda atk: jax.jit(lambda v, x, y, k: atk.run(apply_fn, v, x, y, k))(v, x, y, key)  # noqa: E731
    base = run(sq)
    assert int(jnp.sum(jnp.argmax(apply_fn(v, base), -1) != y)) >= 1, "some point was fooled (queries stopped early for it)"
    from advjax.attacks import square

    monkeypatch.setattr(square, "QUERIES_PER_TRIP_OFF_CPU", 3)  # a smaller body: XLA:CPU compiles it faster
    with portable_ops():  # the off-CPU program (3 queries per trip, 30 = 10 trips), run here
        np.testing.assert_allclose(np.asarray(run(sq)), np.asarray(base), atol=1e-6)
    monkeypatch.undo()
    assert float(jnp.abs(base - x).max()) > 0.04, "the attack moved the points"


def _free_at_setup():
    model = models.get_model("model_a")
    x = jnp.asarray(np.random.default_rng(0).standard_normal((16, 2)).astype(np.float32))
    y = (x[:, 0] > 0).astype(jnp.int32)
    state = create_train_state(model, optax.sgd(0.1), jax.random.PRNGKey(0), variables=_init(model, x))
    return FreeAT(eps=0.1, m=2, domain=None).init_state(state, (x, y)), x, y


@pytest.mark.slow
def test_free_at_rolled_replays_give_the_unrolled_numbers():
    s0, x, y = _free_at_setup()
    kw = dict(eps=0.1, m=2, domain=None)
    out_r = jax.jit(FreeAT(**kw).step)(s0, (x, y), jax.random.PRNGKey(1))
    out_u = jax.jit(FreeAT(**kw, loop="unroll").step)(s0, (x, y), jax.random.PRNGKey(1))
    chex.assert_trees_all_close(out_r, out_u, rtol=1e-5, atol=1e-6)
    assert int(out_r[0].step) == 2


def test_free_at_replays_are_one_loop():
    s0, x, y = _free_at_setup()
    # compile size does not grow with m
    lowered = lambda m, **k: jax.jit(FreeAT(eps=0.1, m=m, domain=None, **k).step).lower(  # noqa: E731
        s0, (x, y), jax.random.PRNGKey(1)).as_text()
    rolled2 = lowered(2)
    assert "stablehlo.while" in rolled2
    assert rolled2.count("dot_general") == lowered(6).count("dot_general")
    assert lowered(6, loop="unroll").count("dot_general") > 2 * rolled2.count("dot_general")
    with pytest.raises(ValueError, match="loop must be"):
        FreeAT(loop="scan")


# ------------------------------------------------------------------------------------------
# keys, precision, XLA flags, the oneDNN setting
# ------------------------------------------------------------------------------------------
def _mlp_state(key):
    """Model A (an MLP) with numpy variables, SGD; a batch of 8 Moon-like points."""
    model = models.get_model("model_a")
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((8, 2)).astype(np.float32))
    y = (x[:, 0] > 0).astype(jnp.int32)
    return create_train_state(model, optax.sgd(0.1), key, variables=_init(model, x)), x, y


@jax.jit
def _noisy_step(state, x, y):
    """One SGD step on inputs noised with a draw from ``fold_in(state.key, state.step)``: the result
    depends on the key, so a wrongly restored key changes it."""
    k = jax.random.fold_in(state.key, state.step)
    xn = x + 0.3 * jax.random.normal(k, x.shape)
    g = jax.grad(lambda p: _ce(state.apply_fn, state.variables(p), xn, y))(state.params)
    return state.apply_gradients(g)


def test_train_state_accepts_rbg_and_typed_keys():
    method = get_method("pgd_at", eps=0.1, steps=1, domain=None)  # its random start uses the key
    for key in (jax.random.key(0), jax.random.key(0, impl="rbg")):
        st, x, y = _mlp_state(key)
        assert st.key.dtype == key.dtype and st.key.shape == ()
        jax.eval_shape(method.step, st, (x, y), jax.random.fold_in(st.key, 0))  # traces with it
    prev = jax.config.jax_default_prng_impl
    try:
        jax.config.update("jax_default_prng_impl", "rbg")
        raw = jax.random.PRNGKey(0)
        assert raw.shape == (4,)
        st, x, y = _mlp_state(raw)
        jax.eval_shape(method.step, st, (x, y), jax.random.fold_in(st.key, 0))
        st2 = _noisy_step(st, x, y)
        assert st2.key.shape == (4,) and int(st2.step) == 1
        assert np.isfinite(np.asarray(jax.tree_util.tree_leaves(st2.params)[0])).all()
        with pytest.raises(ValueError, match=r"uint32\[4\].*'rbg'"):
            create_train_state(st.model, optax.sgd(0.1), jnp.zeros((2,), jnp.uint32), variables=st.variables())
    finally:
        jax.config.update("jax_default_prng_impl", prev)
    with pytest.raises(ValueError, match="PRNG key"):
        create_train_state(st.model, optax.sgd(0.1), jnp.zeros((3,), jnp.float32), variables=st.variables())


@pytest.mark.parametrize("impl", ["threefry2x32", "rbg"])
def test_typed_keys_checkpoint_and_resume_exactly(tmp_path, impl):
    from advjax.train.checkpoint import restore_checkpoint, save_checkpoint

    key = jax.random.key(7, impl=impl)
    s0, x, y = _mlp_state(key)
    s = _noisy_step(_noisy_step(s0, x, y), x, y)
    save_checkpoint(tmp_path, s, {"epoch": 0})
    uninterrupted = _noisy_step(_noisy_step(s, x, y), x, y)
    restored, meta, _ = restore_checkpoint(tmp_path, s0)  # a fresh state as the target, as fit does
    assert meta == {"epoch": 0} and int(restored.step) == 2
    assert restored.key.dtype == key.dtype and str(jax.random.key_impl(restored.key)) == impl
    np.testing.assert_array_equal(jax.random.key_data(restored.key), jax.random.key_data(s.key))
    resumed = _noisy_step(_noisy_step(restored, x, y), x, y)
    chex.assert_trees_all_equal(jax.random.key_data(resumed.key), jax.random.key_data(uninterrupted.key))
    chex.assert_trees_all_equal(resumed.params, uninterrupted.params)
    assert not np.array_equal(np.asarray(resumed.params["Dense_0"]["kernel"]),
                              np.asarray(s0.params["Dense_0"]["kernel"])), "the steps changed the parameters"
    # another key kind in the target is another configuration, said so
    other, _, _ = _mlp_state(jax.random.key(7, impl="rbg" if impl != "rbg" else "threefry2x32"))
    with pytest.raises(ValueError, match="PRNG key"):
        restore_checkpoint(tmp_path, other)
    raw, _, _ = _mlp_state(jax.random.PRNGKey(7))
    with pytest.raises(ValueError, match=f"saved a typed '{impl}' PRNG key, expected a raw array"):
        restore_checkpoint(tmp_path, raw)


# ------------------------------------------------------------------------------------------
# attacks: loop="auto" by lowering platform, input checks of multi-host arrays
# ------------------------------------------------------------------------------------------
def _linear_setup(n=4, d=12, k=10):
    rng = np.random.default_rng(0)
    v = {"w": jnp.asarray(rng.standard_normal((d, k)).astype(np.float32))}
    x = jnp.asarray(rng.uniform(size=(n, d)).astype(np.float32))
    return (lambda v, x: x @ v["w"]), v, x, jnp.arange(n) % k


def test_auto_loop_form_follows_the_lowering_platform():
    """loop="auto" unrolls <= 20 steps in programs lowered for the CPU and rolls them in programs
    lowered for CUDA / TPU from this same host (not chosen by jax.default_backend() at trace time):
    the CPU program grows with the steps, the accelerator one does not; an outer loop (APGD-T's
    targets) likewise."""
    from advjax.attacks.apgd import APGDT

    apply_fn, v, x, y = _linear_setup()
    key = jax.random.PRNGKey(0)

    def dots(attack, platform):
        f = lambda v, x, y, k: attack.run(apply_fn, v, x, y, k)  # noqa: E731
        text = jax.jit(f).lower(v, x, y, key).as_text() if platform == "cpu" else _export(f, v, x, y, key, platforms=(platform,))
        return text.count("stablehlo.dot_general"), text.count("stablehlo.while")

    pgd = lambda steps, **kw: PGD(eps=0.1, steps=steps, random_start=False, **kw)  # noqa: E731
    (c3, cw3), (c6, _) = dots(pgd(3), "cpu"), dots(pgd(6), "cpu")
    assert c6 > c3 and cw3 == 0, "unrolled on the CPU: one copy of the body per step, no while"
    (g3, gw3), (g6, _) = dots(pgd(3), "cuda"), dots(pgd(6), "cuda")
    assert g3 == g6 < c3 and gw3 >= 1, "cuda: rolled (the body once, in a while loop)"
    assert dots(pgd(6), "tpu") == (g6, gw3), "tpu: the same rolled program"
    assert dots(pgd(6, loop="rolled"), "cpu")[0] == g6  # an explicit form is the same everywhere
    apgdt = lambda n: APGDT(eps=0.1, steps=2, n_target_classes=n)  # noqa: E731
    assert dots(apgdt(3), "cuda")[0] == dots(apgdt(2), "cuda")[0], "off CPU the loop over targets is rolled too"
    assert dots(apgdt(3), "cpu")[0] > dots(apgdt(2), "cpu")[0]
    from advjax.attacks.base import resolve_loop
    assert resolve_loop("auto", 10, "cpu") == ("unroll", 0) and resolve_loop("auto", 10, "tpu") == ("rolled", 1)
    assert resolve_loop("auto", 21, "cpu") == ("rolled", 1)


class _NotFullyAddressable:
    """A global array as another process sees it: only the shards on ``local`` devices are
    addressable and fetching the whole value raises (as jax does for multi-host arrays)."""

    def __init__(self, a, local):
        self._a, self._local = a, set(local)
        self.shape, self.dtype, self.ndim = a.shape, a.dtype, a.ndim
        self.is_fully_addressable = False

    @property
    def addressable_shards(self):
        return [s for s in self._a.addressable_shards if s.device in self._local]

    def __array__(self, *a, **k):
        raise RuntimeError("Fetching value for `jax.Array` that spans non-addressable devices is not possible")


def test_attack_input_checks_read_only_addressable_shards():
    from jax.sharding import NamedSharding, PartitionSpec as P

    from advjax.attacks.base import check_inputs

    devices = jax.devices()
    assert len(devices) == 8, "tests/conftest.py simulates 8 CPU devices"
    mesh = jax.sharding.Mesh(np.array(devices), ("data",))
    rows = NamedSharding(mesh, P("data"))
    x = np.full((8, 3), 0.5, np.float32)
    y = np.arange(8, dtype=np.int32)
    put = lambda a: jax.device_put(a, rows)  # noqa: E731
    check_inputs(put(x), put(y), (0.0, 1.0), num_classes=8)  # a sharded, fully addressable array
    bad = x.copy()
    bad[6, 1] = np.nan
    with pytest.raises(ValueError, match=r"^x contains NaN \(1 values\)$"):  # the single-process message
        check_inputs(put(bad), put(y), (0.0, 1.0))
    # half of the devices "belong to another process": their rows are neither read nor gathered
    local = devices[:4]
    check_inputs(_NotFullyAddressable(put(bad), local), _NotFullyAddressable(put(y), local), (0.0, 1.0), 8)
    bad[1, 0] = 2.0  # a row on this process
    with pytest.raises(ValueError, match=r"outside the domain \(0.0, 1.0\): values in this process's shards in \[0.5, 2\]"):
        check_inputs(_NotFullyAddressable(put(bad), local), put(y), (0.0, 1.0))
    y_bad = y.copy()
    y_bad[0] = 9
    with pytest.raises(ValueError, match=r"labels out of range \[0, 8\): min 1, max 9 \(this process's shards\)"):
        check_inputs(put(x), _NotFullyAddressable(put(y_bad), local), (0.0, 1.0), num_classes=8)
    with pytest.raises(ValueError, match="same N"):  # shapes are global: always checked
        check_inputs(_NotFullyAddressable(put(x), local), jnp.zeros((4,), jnp.int32), (0.0, 1.0))


# ------------------------------------------------------------------------------------------
# forward mode through the fast-conv models
# ------------------------------------------------------------------------------------------
class _ConvBN(nn.Module):
    """A fast conv (oneDNN input gradient when installed) + training-mode batch norm + dense."""

    @nn.compact
    def __call__(self, x):
        x = ops.Conv(8, 3, padding="SAME")(x)
        x = ops.batch_norm(True, jnp.float32)(x)
        return nn.Dense(4)(nn.relu(x).reshape(x.shape[0], -1))


def test_forward_mode_through_fast_conv_models():
    """jax.jvp / jacfwd trace the portable layers (their CPU custom VJPs have no JVP rule); reverse
    mode keeps the custom VJPs; forward and reverse mode agree."""
    model = _ConvBN()
    x, _ = _xy(n=2, hw=4)
    v = _init(model, x)
    f = lambda x: model.apply(v, x, mutable=["batch_stats"])[0]  # noqa: E731
    t = jnp.ones_like(x)
    fwd = str(jax.make_jaxpr(lambda x: jax.jvp(f, (x,), (t,)))(x))
    rev = str(jax.make_jaxpr(jax.grad(lambda x: f(x).sum()))(x))
    assert "custom_vjp_call" not in fwd and "branches_platforms" not in fwd, "forward mode: the portable layers"
    assert "branches_platforms" in rev, "reverse mode keeps the per-platform choice (the CPU custom VJPs)"
    ek = jnp.zeros((2, 4)).at[1, 2].set(1.0)
    tan, back = jax.jit(lambda x: (jax.jvp(f, (x,), (t,))[1], jax.vjp(f, x)[1](ek)[0]))(x)
    # <J t, e_k> = <t, J^T e_k>
    np.testing.assert_allclose(float((tan * ek).sum()), float((back * t).sum()), rtol=1e-4, atol=1e-6)
    assert abs(float(back.sum())) > 1e-4


def test_precision_setting_reaches_accelerator_programs():
    from advjax.eval.robust import robust_accuracy

    x = jnp.ones((1, 6, 6, 3))
    w = jnp.ones((3, 3, 3, 4))
    conv = lambda x, w: ops.fast_conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))  # noqa: E731
    assert "HIGHEST" not in _export(conv, x, w)
    with precision.use("highest"):
        assert "precision HIGHEST" in _export(conv, x, w)
    seen = precision.evaluation(precision.current)
    assert seen() == "highest"
    with precision.use("default"):
        assert seen() == "default"  # a choice made by the caller wins
    assert robust_accuracy.__wrapped__ is not None  # evaluation runs at "highest" by default
    with pytest.raises(ValueError, match="highest"):
        precision.check("double")


def test_xla_flags_are_set_only_where_jaxlib_knows_them(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))  # known() caches its scans there
    lib = tmp_path / "libfake.so"
    lib.write_bytes(b"\0junk xla_cpu_some_flag junk\0")
    assert xla_flags.known("--xla_cpu_some_flag=", libraries=(str(lib),))
    assert not xla_flags.known("--xla_cpu_gone_flag=1", libraries=(str(lib),))
    assert xla_flags.known("--xla_force_host_platform_device_count=8")  # the real jaxlib
    env = {"XLA_FLAGS": "--xla_foo=1"}
    assert xla_flags.add("--xla_foo=2", env=env) and env["XLA_FLAGS"] == "--xla_foo=1"  # the user's wins
    with pytest.raises(ValueError, match="not an XLA flag"):
        xla_flags.known("--")


def test_onednn_required_where_computation_runs_elsewhere_is_an_error(monkeypatch):
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    monkeypatch.setenv("ADVJAX_CONV", "onednn")
    with pytest.raises(RuntimeError, match="cannot run there"):
        onednn.enabled()
    with pytest.raises(RuntimeError, match="cannot run there"):
        onednn.enabled("cpu")
    monkeypatch.setenv("ADVJAX_CONV", "auto")
    assert not onednn.enabled("cpu")


@pytest.mark.slow
def test_accelerator_check_script_runs_on_cpu(tmp_path):
    """benchmarks/accelerator_check.py is for a person with a GPU/TPU; its tiny setting must work here
    (on CPU, 'device' and 'cpu' are the same backend: every verdict agrees)."""
    import json
    import pathlib
    import subprocess
    import sys

    script = pathlib.Path(__file__).resolve().parents[1] / "benchmarks" / "accelerator_check.py"
    out = tmp_path / "check.json"
    res = subprocess.run([sys.executable, str(script), "--tiny", "--out", str(out)], capture_output=True, text=True,
                         timeout=1800)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    data = json.loads(out.read_text())
    assert data["kernels"]["ok"] and set(data["steps"]) == {"standard", "pgd10_at", "fgsm_sdi"}
    assert all(r["images_per_s"] > 0 for r in data["steps"].values())
    assert data["autoattack"]["verdicts_differing"] == 0
