"""Layerwise adversarial training (Sankaranarayanan et al. 2018): perturbation points are the
identity by default; the cache after a step is the sign of the gradient at that step's perturbed
points (against jax.grad of the perturbed forward); the first step perturbs nothing; eps_l; stage
selection; bad input; exact resume and 8 devices equal the uninterrupted 1-device run; the
test-time previous-sample attack and the Jacobian spectrum."""
from __future__ import annotations

import chex
import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from advjax import models
from advjax.analysis.jacobian import jacobian_singular_values, mean_spectrum
from advjax.methods import layerwise as lw
from advjax.methods.base import get_method
from advjax.models import ops
from advjax.train.state import TrainState

B = 8
RNG = np.random.default_rng(0)
X = RNG.uniform(size=(B, 8, 8, 3)).astype(np.float32)
Y = (np.arange(B) % 4).astype(np.int32)
X2 = RNG.uniform(size=(B, 8, 8, 3)).astype(np.float32)
Y2 = ((np.arange(B) + 1) % 4).astype(np.int32)
_FAST = {"xla_backend_optimization_level": 0}  # tiny programs: compile time dominates


def _jit(f):
    return jax.jit(f, compiler_options=_FAST)


def _resnet():  # a CIFAR ResNet with one block per stage, width 4-8: points in the stem and 3 stages
    return models.ResNet(stage_sizes=(1, 1, 1), widths=(4, 4, 8), shortcut="pad", num_classes=4,
                         input_shape=(8, 8, 3), fast_conv=False)


def _np_variables(model, seed=0):
    """Variables from numpy (He-normal kernels, BN at its defaults) in the tree of ``model.init``:
    no XLA compilation of random initializers (the slow part on shared cores)."""
    shape = (1, *model.input_shape)
    shapes = jax.eval_shape(lambda k: model.init(k, jnp.zeros(shape), train=False), jax.random.key(0))
    rng = np.random.default_rng(seed)

    def fill(path, s):
        name = str(getattr(path[-1], "key", path[-1]))
        if name in ("scale", "var"):
            return np.ones(s.shape, s.dtype)
        if name in ("bias", "mean"):
            return np.zeros(s.shape, s.dtype)
        return (rng.normal(size=s.shape) * np.sqrt(2.0 / np.prod(s.shape[:-1]))).astype(s.dtype)

    return jax.tree_util.tree_map_with_path(fill, flax.core.unfreeze(shapes))


_TX = optax.sgd(0.1, momentum=0.9, nesterov=True)
_TX_INIT = jax.jit(_TX.init)


def _state(model=None, seed=0):
    model = _resnet() if model is None else model
    v = _np_variables(model, seed)
    return TrainState(step=np.zeros((), np.int32), params=v["params"], batch_stats=v.get("batch_stats", {}),
                      opt_state=_TX_INIT(v["params"]), key=np.asarray(jax.random.PRNGKey(seed)), extra={},
                      model=model, tx=_TX)


@_jit
def _perturbed_grad(state, x, y, delta):
    """Independent reference: jax.grad of the training-mode perturbed forward with respect to the
    passed "perturbations" collection (flax's own nesting of the paths)."""
    nested = flax.traverse_util.unflatten_dict({tuple(k.split("/")): v for k, v in delta.items()})

    def loss(pert):
        v = {"params": state.params, "batch_stats": state.batch_stats, "perturbations": pert}
        logits, _ = state.model.apply(v, x, train=True, mutable=["batch_stats"])
        return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, y))

    value, g = jax.value_and_grad(loss)(nested)
    return value, {"/".join(k): v for k, v in flax.traverse_util.flatten_dict(g).items()}


# ------------------------------------------------------------------------------------------
# 1. the points
# ------------------------------------------------------------------------------------------
_MODELS = {
    "vgg11_bn": (lambda: models.get_model("vgg11_bn", width_factor=1 / 16), (2, 32, 32, 3),
                 ["block1/g_bn0", "block3/g_bn1", "block5/g_bn1"], 5),
    "vgg11": (lambda: models.get_model("vgg11", width_factor=1 / 16), (2, 32, 32, 3), ["block1/g_conv0"], 5),
    "resnet": (_resnet, (2, 8, 8, 3), ["g_bn1", "layer1/block0/g_bn1", "layer3/block0/g_bn2"], 3),
    "preact": (lambda: models.PreActResNet(stage_sizes=(1, 1), widths=(4, 8), input_shape=(8, 8, 3)),
               (2, 8, 8, 3), ["layer1/block0/g_bn1", "layer2/block0/g_bn2", "g_bn"], 2),
    "wrn": (lambda: models.get_model("wide_resnet", depth=10, widen_factor=1, input_shape=(8, 8, 3)),
            (2, 8, 8, 3), ["layer1/block0/g_bn1", "layer3/block0/g_bn2", "g_bn"], 3),
    "mlp": (lambda: models.get_model("model_a", input_shape=(12,), hidden=(6, 5), activation="tanh",
                                     num_classes=3), (2, 12), ["g_dense0", "g_dense1"], 2),
}


@pytest.mark.parametrize("name", list(_MODELS))
def test_points_are_identity_and_absent_from_init(name, monkeypatch):
    make, shape, expect, n_stages = _MODELS[name]
    model = make()
    shapes = jax.eval_shape(lambda k: model.init(k, jnp.zeros(shape), train=False), jax.random.key(0))
    assert set(shapes) <= {"params", "batch_stats"}  # init never creates the collection
    variables = _np_variables(model)
    x = jnp.asarray(RNG.uniform(size=shape).astype(np.float32))
    pts = lw.perturbation_points(model, shape)
    for p in expect:
        assert p in pts and pts[p].shape[0] == shape[0], (p, list(pts))
    stages = lw.point_stages(pts)
    assert max(stages.values()) == n_stages
    def programs(v):
        ev = str(jax.make_jaxpr(lambda vv, xx: model.apply(vv, xx, train=False))(v, x))
        mut = ["batch_stats"] if "batch_stats" in v else []
        tr = str(jax.make_jaxpr(lambda vv, xx: model.apply(vv, xx, train=True, mutable=mut))(v, x))
        return ev, tr

    ours = programs(variables)
    # the same model with the points removed: identical programs (eval and training mode), so
    # bit-identical logits, and a perturbation that is present changes the program
    monkeypatch.setattr(ops, "perturbation_point", lambda module, n, v: v)
    assert programs(variables) == ours
    monkeypatch.undo()
    zeros = flax.traverse_util.unflatten_dict({tuple(k.split("/")): jnp.zeros(v.shape) for k, v in pts.items()})
    assert programs({**variables, "perturbations": zeros})[0] != ours[0]


def test_eval_logits_bit_identical_and_zero_perturbation_is_identity(monkeypatch):
    model = _resnet()
    v = _np_variables(model)
    pts = lw.perturbation_points(model, X.shape)
    zeros = flax.traverse_util.unflatten_dict({tuple(k.split("/")): np.zeros(s.shape, np.float32)
                                               for k, s in pts.items()})
    ours = np.asarray(_jit(lambda vv, xx: model.apply(vv, xx, train=False))(v, X))
    with monkeypatch.context() as mp:  # the model without the points: the same logits, bit for bit
        mp.setattr(ops, "perturbation_point", lambda module, n, x: x)
        plain = np.asarray(_jit(lambda vv, xx: model.apply(vv, xx, train=False))(v, X))
    np.testing.assert_array_equal(ours, plain)
    # passing zeros adds x + 0 (exact), though XLA may then fuse (and sum) in another order
    with_zeros = np.asarray(_jit(lambda vv, xx: model.apply(vv, xx, train=False))({**v, "perturbations": zeros}, X))
    np.testing.assert_allclose(with_zeros, plain, rtol=1e-6, atol=1e-6)
    # a trained layerwise state evaluates through the plain model (no perturbation collection)
    method = lw.LayerwiseAT(eps=10.0)
    s0 = method.init_state(_state(), (X, Y))
    assert set(s0.variables()) == {"params", "batch_stats"}


def test_point_stages_rule():
    st = lw.point_stages(lw.perturbation_points(_resnet(), (2, 8, 8, 3)))
    assert st["g_bn1"] == 1 and st["layer1/block0/g_bn2"] == 1 and st["layer3/block0/g_sum"] == 3
    pre = _MODELS["preact"][0]()
    st = lw.point_stages(lw.perturbation_points(pre, (2, 8, 8, 3)))
    assert st["g_bn"] == 2 and st["layer1/block0/g_bn1"] == 1


# ------------------------------------------------------------------------------------------
# 2. the method
# ------------------------------------------------------------------------------------------
class TestEpsFormula(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_layer_eps_and_cache_from_gradient(self):
        g = jnp.array([[[0.3, -0.2]], [[0.5, 0.1]], [[-0.1, -0.4]]])  # 3 examples
        c = self.variant(lw._cache_from_grads)({"p": g})
        np.testing.assert_array_equal(np.asarray(c["r"]["p"]), np.sign(np.asarray(g)).astype(np.int8))
        e = self.variant(lambda a, b: lw.layer_eps(10.0, a, b))(c["gmax"]["p"], c["gmin"]["p"])
        np.testing.assert_allclose(float(e), 10.0 * (0.5 - (-0.4)), rtol=1e-6)


def test_layer_eps_formula():
    gmax = jnp.array([0.3, 0.5, -0.1])
    gmin = jnp.array([-0.2, 0.1, -0.4])
    np.testing.assert_allclose(lw.layer_eps(10.0, gmax, gmin), 10.0 * (0.5 - (-0.4)), rtol=1e-6)
    np.testing.assert_allclose(lw.layer_eps(10.0, gmax, gmin, reduce="example"), 10.0 * np.array([0.5, 0.4, 0.3]),
                               rtol=1e-6)
    np.testing.assert_allclose(lw.layer_eps(0.2, gmax, gmin, mode="fixed"), 0.2)


def _check_cache_and_first_step(variant):
    method = lw.LayerwiseAT(eps=10.0)
    s0 = method.init_state(_state(), (X, Y))
    cache0 = s0.extra[lw.EXTRA_KEY]  # R^0 = 0, the batch's shape, no g_sum points by default
    assert all(int(jnp.abs(r).sum()) == 0 and r.shape[0] == B for r in cache0["r"].values())
    assert "layer2/block0/g_sum" not in cache0["r"] and "layer2/block0/g_bn2" in cache0["r"]
    step = variant(method.step)
    key = jax.random.PRNGKey(3)
    s1, m1 = step(s0, (X, Y), key)
    # step 1 perturbs nothing: the standard step's parameters and loss
    std = get_method("standard")
    s1_std, m1_std = variant(std.step)(_state(), (X, Y), key)
    chex.assert_trees_all_close(s1.params, s1_std.params, atol=1e-6, rtol=1e-6)
    np.testing.assert_allclose(float(m1["loss"]), float(m1_std["loss"]), rtol=1e-6)
    # its cache: the sign (and range) of the gradient at the (unperturbed) points of step 1
    zeros = {p: jnp.zeros(r.shape, jnp.float32) for p, r in s0.extra[lw.EXTRA_KEY]["r"].items()}
    _, g1 = _perturbed_grad(s0, X, Y, zeros)
    c1 = s1.extra[lw.EXTRA_KEY]
    for p, g in g1.items():
        np.testing.assert_array_equal(np.asarray(c1["r"][p]), np.sign(np.asarray(g)).astype(np.int8))
    # step 2 perturbs by eps * (max - min) * r of step 1's gradient; its cache is the sign of the
    # gradient at the PERTURBED points of step 2 (computed here independently)
    delta2 = {}
    for p, g in g1.items():
        g = np.asarray(g)
        delta2[p] = jnp.asarray(10.0 * (g.max() - g.min()) * np.sign(g), jnp.float32)
    assert any(float(jnp.abs(d).max()) > 0 for d in delta2.values())
    loss2, g2 = _perturbed_grad(s1, X2, Y2, delta2)
    clean2, _ = _perturbed_grad(s1, X2, Y2, zeros)
    s2, m2 = step(s1, (X2, Y2), key)
    c2 = s2.extra[lw.EXTRA_KEY]
    agree = [np.mean(np.asarray(c2["r"][p]) == np.sign(np.asarray(g))) for p, g in g2.items()]
    assert min(agree) > 0.999, agree  # float32 summation order may flip a sign of a ~0 entry
    for p, g in g2.items():
        g = np.asarray(g).reshape(B, -1)
        np.testing.assert_allclose(np.asarray(c2["gmax"][p]), g.max(1), rtol=1e-4, atol=1e-9)
        np.testing.assert_allclose(np.asarray(c2["gmin"][p]), g.min(1), rtol=1e-4, atol=1e-9)
    # step 2's loss is the perturbed forward's, not the clean one (the perturbation is applied)
    np.testing.assert_allclose(float(m2["loss"]), float(loss2), rtol=1e-5)
    assert abs(float(loss2) - float(clean2)) > 1e-3


def test_first_step_clean_then_cache_is_sign_of_gradient_at_perturbed_points():
    _check_cache_and_first_step(_jit)


def test_stage_selection_and_bad_input():
    vgg = models.get_model("vgg11_bn", width_factor=1 / 16, num_classes=4)
    xv = RNG.uniform(size=(4, 32, 32, 3)).astype(np.float32)
    st = _state(vgg)
    m2 = lw.LayerwiseAT(stages=2)
    s = m2.init_state(st, (xv, Y[:4]))
    assert sorted(s.extra[lw.EXTRA_KEY]["r"]) == ["block1/g_bn0", "block2/g_bn0"]
    all_pts = lw.LayerwiseAT().active_points(vgg, xv.shape)
    assert len(all_pts) == 8
    with pytest.raises(ValueError, match="stages=6 but VGG has only 5"):
        lw.LayerwiseAT(stages=6).init_state(st, (xv, Y[:4]))
    with pytest.raises(ValueError, match="eps must be a number >= 0"):
        lw.LayerwiseAT(eps=-1.0)
    with pytest.raises(ValueError, match="variant"):
        get_method("layerwise", variant="nope")
    with pytest.raises(ValueError, match="stages must be"):
        lw.LayerwiseAT(stages=0)
    # a cache for another batch size (e.g. a changed batch size on resume): a clear error
    method = lw.LayerwiseAT()
    s8 = method.init_state(_state(), (X, Y))
    with pytest.raises(ValueError, match="every batch must have the same shape"):
        method.step(s8, (X[:4], Y[:4]), jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match="init_state"):
        method.step(_state(), (X, Y), jax.random.PRNGKey(0))


def test_only_selected_stages_are_perturbed():
    """With stages=1 a step's perturbed forward equals the reference forward with the cached
    perturbation at the stage-1 points only (the others stay the identity)."""
    method = lw.LayerwiseAT(eps=10.0, stages=1)
    s0 = method.init_state(_state(), (X, Y))
    assert sorted(s0.extra[lw.EXTRA_KEY]["r"]) == ["g_bn1", "layer1/block0/g_bn1", "layer1/block0/g_bn2"]
    step = _jit(method.step)
    s1, _ = step(s0, (X, Y), jax.random.PRNGKey(0))
    _, m2 = step(s1, (X2, Y2), jax.random.PRNGKey(0))
    c1 = s1.extra[lw.EXTRA_KEY]
    delta = {p: lw.layer_eps(10.0, c1["gmax"][p], c1["gmin"][p]) * c1["r"][p].astype(jnp.float32) for p in c1["r"]}
    ref, _ = _perturbed_grad(s1, X2, Y2, delta)  # the stage-1 points only
    np.testing.assert_allclose(float(m2["loss"]), float(ref), rtol=1e-5)


def _mlp():  # the toy net's shape in miniature: dense-tanh-dense-tanh, points after each dense
    return models.get_model("model_a", input_shape=(12,), hidden=(6, 5), activation="tanh", num_classes=4)


XM = RNG.uniform(size=(B, 12)).astype(np.float32)


@_jit
def _fgs_reference(s):
    """0.5 CE(x) + 0.5 CE(clip(x + 0.05 sign grad_x CE(x))), and the clean CE alone."""
    ce = lambda lg: jnp.mean(optax.softmax_cross_entropy_with_integer_labels(lg, Y))  # noqa: E731
    lc, gx = jax.value_and_grad(lambda xx: ce(s.model.apply(s.variables(), xx, train=True)))(jnp.asarray(XM))
    xa = jnp.clip(XM + 0.05 * jnp.sign(gx), 0, 1)
    return 0.5 * lc + 0.5 * ce(s.model.apply(s.variables(), xa, train=True)), lc


def test_variants_joint_losses():
    s = _state(_mlp())
    key = jax.random.PRNGKey(0)
    joint_ref, lc = _fgs_reference(s)
    _, met = _jit(get_method("fgs_orig", input_eps=0.05).step)(s, (XM, Y), key)
    np.testing.assert_allclose(float(met["loss"]), float(joint_ref), rtol=1e-5)
    # FGS-inter perturbs the very first step (its own gradients); Ours-joint's first step is clean
    _, mi = _jit(get_method("fgs_inter", eps=10.0).step)(s, (XM, Y), key)
    assert float(mi["loss"]) > float(lc) + 1e-3
    mj = get_method("layerwise_joint")
    _, mjm = _jit(mj.step)(mj.init_state(s, (XM, Y)), (XM, Y), key)
    np.testing.assert_allclose(float(mjm["loss"]), float(lc), rtol=1e-5)


# ------------------------------------------------------------------------------------------
# resume and 8 devices
# ------------------------------------------------------------------------------------------
_METHOD = lw.LayerwiseAT(eps=10.0)
_BATCHES = [(X, Y), (X2, Y2), (X[::-1].copy(), Y[::-1].copy()), (X2[::-1].copy(), Y2)]


def _train(state, batches, fn):
    for b in batches:
        state, _ = fn(state, b)
    return state


def _train_step(s, batch):
    return _METHOD.step(s, batch, jax.random.fold_in(s.key, s.step))


@pytest.fixture(scope="module")
def one_device_step():
    s0 = _METHOD.init_state(_state(), (X, Y))
    return s0, jax.jit(_train_step).lower(s0, (X, Y)).compile(_FAST)


def test_resume_equals_uninterrupted(one_device_step, tmp_path):
    from advjax.train import checkpoint as ckpt

    s0, fn = one_device_step
    full = _train(s0, _BATCHES, fn)
    half = _train(s0, _BATCHES[:2], fn)
    ckpt.save_checkpoint(tmp_path / "last", half, {"epoch": 0, "batch": 2})
    target = _METHOD.init_state(_state(), (X, Y))  # a fresh run: zero cache, then restore
    restored, meta, _ = ckpt.restore_checkpoint(tmp_path / "last", target)
    assert int(np.abs(restored.extra[lw.EXTRA_KEY]["r"]["g_bn1"]).sum()) > 0  # the cache is saved
    resumed = _train(jax.device_put(restored), _BATCHES[2:], fn)
    chex.assert_trees_all_equal(jax.device_get(resumed.params), jax.device_get(full.params))
    chex.assert_trees_all_equal(jax.device_get(resumed.extra), jax.device_get(full.extra))
    # resuming with another batch size: the checkpoint does not match the state (clear error)
    other = _METHOD.init_state(_state(), (X[:4], Y[:4]))
    with pytest.raises(ValueError, match="does not match"):
        ckpt.restore_checkpoint(tmp_path / "last", other)


@pytest.mark.skipif(jax.device_count() < 8, reason="needs 8 (simulated) devices; see conftest")
def test_eight_devices_equal_one_device(one_device_step):
    from advjax.train.mesh import batch_sharding, make_mesh, replicated, shard_batch, state_sharding

    s0, fn = one_device_step
    full = _train(s0, _BATCHES, fn)
    mesh = make_mesh(8)
    sh = state_sharding(s0, mesh, _METHOD.batch_sharded_extra)
    s8 = jax.device_put(s0, sh)
    batches = [shard_batch(b, mesh) for b in _BATCHES]
    fn8 = jax.jit(_train_step, in_shardings=(sh, batch_sharding(mesh)), out_shardings=(sh, replicated(mesh))
                  ).lower(s8, batches[0]).compile(_FAST)
    out = _train(s8, batches, fn8)
    r = out.extra[lw.EXTRA_KEY]["r"]["g_bn1"]
    assert r.sharding.spec[0] == "data" and not r.sharding.is_fully_replicated  # sharded like the batch
    assert out.params["fc"]["kernel"].sharding.is_fully_replicated
    chex.assert_trees_all_close(jax.device_get(out.params), jax.device_get(full.params), atol=2e-5, rtol=2e-4)
    agree = np.mean(np.asarray(jax.device_get(r)) == np.asarray(full.extra[lw.EXTRA_KEY]["r"]["g_bn1"]))
    assert agree > 0.999


# ------------------------------------------------------------------------------------------
# 3. analyses
# ------------------------------------------------------------------------------------------
def test_previous_sample_attack():
    model = _mlp()
    variables = _np_variables(model, 1)
    x = RNG.uniform(size=(16, 12)).astype(np.float32)
    y = np.asarray(jnp.argmax(model.apply(variables, x), -1))  # the model is 100% right on these
    assert lw.previous_sample_attack(model, variables, x, y, 0.0, batch_size=8) == 100.0
    assert lw.previous_sample_attack(model, variables, x, y, 5.0, batch_size=8) < 100.0
    with pytest.raises(ValueError, match="eps"):
        lw.previous_sample_attack(model, variables, x, y, -0.1, batch_size=8)


def test_jacobian_spectrum_of_a_known_map():
    w = RNG.normal(size=(5, 7)).astype(np.float32)
    f = lambda xi: jnp.tanh(0.0 * xi.sum()) + w @ xi  # linear: J = w everywhere
    x = RNG.normal(size=(5, 7)).astype(np.float32)
    sv = jacobian_singular_values(f, x, top_k=6, batch_size=2)
    ref = np.linalg.svd(w, compute_uv=False)
    assert sv.shape == (5, 6)
    np.testing.assert_allclose(sv[:, :5], np.broadcast_to(ref, (5, 5)), rtol=1e-4)
    np.testing.assert_array_equal(sv[:, 5], 0.0)
    # a per-sample map: the mean spectrum averages the samples' spectra
    g = lambda xi: xi[:3] * xi[0]
    xs = np.array([[1.0, 2, 3, 0], [2.0, 0, 0, 1]], np.float32)
    spec = mean_spectrum(g, xs, top_k=3, batch_size=1)
    per = [np.linalg.svd(np.asarray(jax.jacrev(g)(xi)), compute_uv=False) for xi in xs]
    np.testing.assert_allclose(spec, np.mean(per, 0), rtol=1e-5)
