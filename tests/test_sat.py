"""SAT (Jin et al., ICCV 2023): the cluster loss against a hand computation in both modes (with a
one-sample class), masks and jit; L_Gen with lambda = 0 equals PGD for the same key, the attack
contracts, and the shift penalty shrinking the shift; SAT / SAT-TRADES / SAT-AWP steps (loss =
CE + beta * cluster loss, one compile, 8 devices = 1 device); Clu.Acc on synthetic clusters; the
layer-output gradient against its closed form; the greedy lambda search; bad input."""
from __future__ import annotations

import chex
import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from advjax import layers, models
from advjax.analysis import clustering as clu
from advjax.analysis.lambda_search import greedy_lambda_search, shift_distribution
from advjax.attacks import PGD
from advjax.attacks.l_gen import LGen, default_layers, sat_features_fn
from advjax.losses.sat import cluster_loss
from advjax.methods import sat as sat_mod
from advjax.methods.base import get_method
from advjax.train.state import TrainState

_FAST = {"xla_backend_optimization_level": 0}
B = 8
RNG = np.random.default_rng(0)
X = RNG.uniform(size=(B, 8, 8, 3)).astype(np.float32)
Y = np.array([0, 0, 1, 1, 1, 2, 3, 3], np.int32)  # class 2 has one sample
X2 = RNG.uniform(size=(B, 8, 8, 3)).astype(np.float32)
Y2 = np.array([1, 0, 2, 2, 3, 3, 0, 1], np.int32)


def _resnet():  # stages (1, 2): the last stage has two blocks, like ResNet-18's layer4
    return models.ResNet(stage_sizes=(1, 2), widths=(4, 8), shortcut="pad", num_classes=4, input_shape=(8, 8, 3),
                         fast_conv=False)


def _np_variables(model, seed=0):
    shapes = jax.eval_shape(lambda k: model.init(k, jnp.zeros((1, *model.input_shape)), train=False),
                            jax.random.key(0))
    rng = np.random.default_rng(seed)

    def fill(path, s):
        name = str(getattr(path[-1], "key", path[-1]))
        if name in ("scale", "var"):
            return np.ones(s.shape, s.dtype)
        if name in ("bias", "mean"):
            return np.zeros(s.shape, s.dtype)
        return (rng.normal(size=s.shape) * np.sqrt(2.0 / np.prod(s.shape[:-1]))).astype(s.dtype)

    return jax.tree_util.tree_map_with_path(fill, flax.core.unfreeze(shapes))


MODEL = _resnet()
VARS = _np_variables(MODEL)
_TX = optax.sgd(0.1, momentum=0.9)


def _state(seed=0):
    v = _np_variables(MODEL, seed)
    return TrainState(step=np.zeros((), np.int32), params=v["params"], batch_stats=v["batch_stats"],
                      opt_state=jax.jit(_TX.init)(v["params"]), key=np.asarray(jax.random.PRNGKey(seed)),
                      extra={}, model=MODEL, tx=_TX)


# ------------------------------------------------------------------------------------------------
# the cluster loss
# ------------------------------------------------------------------------------------------------
def _hand(feats, y, C, mode):
    """Eq. 10's regularizer / the code's make_var, written out with Python loops."""
    total, terms = 0.0, 0
    for f in feats:
        f = f.reshape(len(f), -1).astype(np.float64)
        for c in range(C):
            fc = f[y == c]
            if len(fc) < 2:
                spread = 0.0  # explicit: fewer than two samples -> no spread
            elif mode == "paper":
                spread = np.sqrt(((fc - fc.mean(0)) ** 2).mean(0)).sum()
            else:
                spread = np.linalg.norm(fc.var(0, ddof=1))
            total += spread * (1 if mode == "paper" else len(fc))
    if mode == "paper":
        return total / (len(feats) * C)
    return total / (len(feats) * len(y))


class TestClusterLoss(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_equals_hand_computation(self):
        # one layer, d = 1, class 0 = {0, 2}, class 1 = {5} (alone), class 2 absent, |Y| = 3
        f1 = [np.array([[0.0], [2.0], [5.0]], np.float32)]
        y1 = np.array([0, 0, 1], np.int32)
        expect = {"paper": 1.0 / (1 * 3),  # std of {0, 2} = 1; the lone sample adds 0; / (n |Y|) = 3
                  "reference": 2 * 2.0 / (1 * 3)}  # unbiased var = 2, once per sample (2); / (n N) = 3
        for mode in ("paper", "reference"):
            fn = self.variant(lambda f, y, mode=mode: cluster_loss(f, y, 3, mode=mode))
            np.testing.assert_allclose(float(fn(f1, y1)), expect[mode], rtol=1e-6)


def test_cluster_loss_mask_gradient_and_errors():
    rng = np.random.default_rng(2)
    feats = [rng.normal(size=(B, 2, 2, 3)).astype(np.float32), rng.normal(size=(B, 5)).astype(np.float32)]
    keep = np.array([1, 1, 1, 0, 1, 1, 0, 1], bool)  # drops a sample of class 1 and one of class 3
    both = jax.jit(lambda f, y, m: {mode: (cluster_loss(f, y, 5, mode=mode), cluster_loss(f, y, 5, mode=mode, mask=m))
                                    for mode in ("paper", "reference")}, compiler_options=_FAST)
    got, got_kept = both(feats, Y, keep), both([f[keep] for f in feats], Y[keep], np.ones(keep.sum(), bool))
    for mode in ("paper", "reference"):  # two layers with a one-sample class, against Python loops
        np.testing.assert_allclose(float(got[mode][0]), _hand(feats, Y, 5, mode), rtol=2e-5)
        np.testing.assert_allclose(float(got[mode][1]), float(got_kept[mode][0]), rtol=1e-6)
        np.testing.assert_allclose(float(got_kept[mode][0]), _hand([f[keep] for f in feats], Y[keep], 5, mode),
                                   rtol=2e-5)
    # identical features in a class (zero spread) and a lone class: finite, zero gradient there
    g = jax.jit(jax.grad(lambda z: cluster_loss([z], Y, 4)), compiler_options=_FAST)(np.ones((B, 3), np.float32))
    assert np.all(np.isfinite(np.asarray(g))) and float(jnp.abs(g).sum()) == 0.0
    with pytest.raises(ValueError, match="mode"):
        cluster_loss(feats, Y, 4, mode="bogus")
    with pytest.raises(ValueError, match="out of range"):
        cluster_loss(feats, Y, 3)


# ------------------------------------------------------------------------------------------------
# the L_Gen attack
# ------------------------------------------------------------------------------------------------
FEATS_FN = sat_features_fn(MODEL)
APPLY_FN = models.logits_fn(MODEL)


def _run(attack, fn):
    return jax.jit(lambda v, x, y, k: attack.run(fn, v, x, y, k), compiler_options=_FAST)


def test_default_layers_are_the_last_stage_block_outputs():
    assert default_layers(MODEL) == ("layer2/block0/act2", "layer2/block1/act2")
    # the block output is what the block returns: the next block's input
    _, feats = layers.capture(MODEL, VARS, X, kind="activation")
    assert feats["layer2/block1/act2"].shape == (B, 4, 4, 8)


def test_lgen_with_lambda_zero_is_pgd_for_the_same_key():
    key = jax.random.PRNGKey(3)
    pgd = PGD(eps=8 / 255, steps=3, step_size=2 / 255, check_inputs=False)
    lg = LGen(eps=8 / 255, steps=3, step_size=2 / 255, lam=0.0, check_inputs=False)
    a = _run(pgd, APPLY_FN)(VARS, X, Y, key)
    b = _run(lg, FEATS_FN)(VARS, X, Y, key)
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.slow
def test_lgen_shift_penalty_shrinks_the_shift():
    from advjax.attacks.l_gen import shift_norms

    key = jax.random.PRNGKey(4)
    base = dict(eps=8 / 255, steps=3, step_size=2 / 255, check_inputs=False)
    xa = _run(LGen(lam=50.0, lambda_draw="fixed", **base), FEATS_FN)(VARS, X, Y, key)
    xp = _run(PGD(**base), APPLY_FN)(VARS, X, Y, key)
    shifts = jax.jit(lambda a, b: shift_norms(FEATS_FN(VARS, a)[1], FEATS_FN(VARS, b)[1]), compiler_options=_FAST)
    # a large shift weight finds points that move the layers less than PGD's (per layer, on average)
    assert np.all(np.asarray(shifts(xa, X)).mean(0) < np.asarray(shifts(xp, X)).mean(0))


def test_lgen_contracts():
    eps = 8 / 255
    key = jax.random.PRNGKey(4)
    # the checked entry point (validation, jit with eps traced): eps-ball, [0, 1], deterministic by key,
    # batch-norm statistics untouched; per-sample Lambda and the code's batch-Frobenius shift
    lg = LGen(lam=0.5, eps=eps, steps=2, step_size=2 / 255, shift_reduce="batch", lambda_draw="sample")
    before = jax.tree.map(np.array, VARS)
    xa = np.asarray(lg(FEATS_FN, VARS, X, Y, key))
    assert np.abs(xa - X).max() <= eps + 1e-6 and xa.min() >= 0 and xa.max() <= 1
    np.testing.assert_array_equal(xa, np.asarray(lg(FEATS_FN, VARS, X, Y, key)))
    assert not np.array_equal(xa, np.asarray(lg(FEATS_FN, VARS, X, Y, jax.random.PRNGKey(5))))
    from advjax.attacks import l_gen

    n_programs = l_gen._jit_run_lam._cache_size()
    small = np.asarray(lg.replace(eps=2 / 255, lam=0.9)(FEATS_FN, VARS, X, Y, key))  # another radius and lambda:
    assert np.abs(small - X).max() <= 2 / 255 + 1e-6
    assert l_gen._jit_run_lam._cache_size() == n_programs  # the same compiled program (both traced)
    chex.assert_trees_all_equal(VARS, before)
    with pytest.raises(ValueError, match="outside the domain"):
        lg(FEATS_FN, VARS, X + 1.0, Y, key)
    with pytest.raises(ValueError, match="lam"):
        LGen(lam=-0.1)
    with pytest.raises(ValueError, match="lambda_draw"):
        LGen(lambda_draw="epoch")


# ------------------------------------------------------------------------------------------------
# the methods
# ------------------------------------------------------------------------------------------------
_METHOD = sat_mod.SAT(eps=8 / 255, steps=1, lam=0.5, beta=0.5)
_BATCHES = [(X, Y), (X2, Y2), (X[::-1].copy(), Y[::-1].copy())]


def _train_step(s, batch):
    return _METHOD.step(s, batch, jax.random.fold_in(s.key, s.step))


_TRACES = []


def _counted_step(s, batch):
    _TRACES.append(1)
    return _train_step(s, batch)


@pytest.fixture(scope="module")
def one_device_step():
    s0 = _METHOD.init_state(_state(), (X, Y))
    return s0, jax.jit(_counted_step, compiler_options=_FAST)


def _parts(s, k_adv, k_loss):
    """SAT's loss at the step's adversarial examples, with the training-mode logits and features."""
    x_adv = _METHOD.perturb(s, X, Y, k_adv)
    loss, (_, m) = _METHOD.loss(s, s.params, X, x_adv, Y, k_loss)
    (logits, feats), _ = layers.capture(MODEL, s.variables(), x_adv, train=True, kind="activation")
    return loss, m, logits, feats


_PARTS = jax.jit(_parts, compiler_options=_FAST)


def test_sat_loss_is_ce_plus_beta_cluster_loss(one_device_step):
    s0, fn = one_device_step
    key = jax.random.fold_in(s0.key, s0.step)
    k_adv, k_loss = _METHOD._split(key)
    loss, m, logits, feats = _PARTS(s0, k_adv, k_loss)
    ce = float(optax.softmax_cross_entropy_with_integer_labels(logits, Y).mean())
    cl = _hand([np.asarray(feats[k]) for k in default_layers(MODEL)], Y, 4, "paper")
    np.testing.assert_allclose(float(loss), ce + 0.5 * cl, rtol=1e-4)
    np.testing.assert_allclose(float(m["cluster"]), cl, rtol=1e-4)
    s = s0
    for b in _BATCHES:
        s, metrics = fn(s, b)
    assert np.isfinite(float(metrics["loss"])) and int(s.step) == len(_BATCHES)
    assert len(_TRACES) == 1  # SAT's step compiles once for the run
    # the inner attack is LGen built from the method's settings (paper mode: per-sample shifts)
    att = _METHOD.inner_attack
    assert isinstance(att, LGen) and att.lam == 0.5 and att.shift_reduce == "sample"
    assert sat_mod.SAT(mode="reference").inner_attack.shift_reduce == "batch"


@pytest.mark.skipif(jax.device_count() < 8, reason="needs 8 (simulated) devices; see conftest")
def test_sat_eight_devices_equal_one_device(one_device_step):
    from advjax.train.mesh import batch_sharding, make_mesh, replicated, shard_batch

    s0, fn = one_device_step
    ref = s0
    for b in _BATCHES:
        ref, _ = fn(ref, b)
    mesh = make_mesh(8)
    s8 = jax.device_put(s0, replicated(mesh))
    batches = [shard_batch(b, mesh) for b in _BATCHES]
    fn8 = jax.jit(_train_step, in_shardings=(replicated(mesh), batch_sharding(mesh)),
                  out_shardings=replicated(mesh)).lower(s8, batches[0]).compile(_FAST)
    out = s8
    for b in batches:
        out, _ = fn8(out, b)
    assert out.params["fc"]["kernel"].sharding.is_fully_replicated
    chex.assert_trees_all_close(jax.device_get(out.params), jax.device_get(ref.params), atol=2e-5, rtol=2e-4)


def test_sat_trades_and_sat_awp_compose():
    from advjax.methods.awp import AWP
    from advjax.methods.trades import TRADES

    st = get_method("sat_trades", eps=8 / 255, steps=1, lam=0.5, beta=0.1)
    assert isinstance(st.base, TRADES) and st.inner_attack.loss == "trades-kl" and st.base.beta == 6.0
    sa = get_method("sat_awp", eps=8 / 255, steps=1, gamma=5e-3, beta=0.1)
    assert isinstance(sa, AWP) and isinstance(sa.base, sat_mod.SAT) and sa.base.base is None
    # the second reading: eq. 9 unchanged (its CE), TRADES' loss in eq. 10 only: the same inner
    # maximization as SAT's for the same key
    st_ce = get_method("sat_trades", eps=8 / 255, steps=1, lam=0.5, beta=0.1, inner="ce")
    assert isinstance(st_ce.base, TRADES) and st_ce.inner_attack.loss == "ce"
    plain = sat_mod.SAT(eps=8 / 255, steps=1, lam=0.5, beta=0.1)
    s0, key = _state(), jax.random.PRNGKey(3)
    xa_ce, xa_sat = st_ce.perturb(s0, X, Y, key), plain.perturb(s0, X, Y, key)
    np.testing.assert_array_equal(np.asarray(xa_ce), np.asarray(xa_sat))
    assert not np.array_equal(np.asarray(st.perturb(s0, X, Y, key)), np.asarray(xa_sat))  # the KL reading differs


@pytest.mark.slow
def test_sat_awp_on_sat_trades_step_runs():
    from advjax.methods.trades import TRADES

    # one compiled step covers both compositions: AWP's weight perturbation on SAT-TRADES
    both = sat_mod.sat_awp(base=TRADES(eps=8 / 255, steps=1), eps=8 / 255, steps=1, lam=0.5, beta=0.1)
    s0 = _state()
    s = both.init_state(s0, (X, Y))
    s1, metrics = jax.jit(lambda s, b: both.step(s, b, jax.random.PRNGKey(0)), compiler_options=_FAST)(s, (X, Y))
    assert np.isfinite(float(metrics["loss"])) and float(metrics["cluster"]) > 0 and "robust_kl" in metrics
    assert not np.allclose(np.asarray(s1.params["fc"]["kernel"]), np.asarray(s0.params["fc"]["kernel"]))


def test_bad_input_names_the_problem():
    with pytest.raises(ValueError, match="unknown layer 'layer9'.*known"):
        sat_mod.SAT(layers=["layer9"]).init_state(_state(), (X, Y))
    with pytest.raises(ValueError, match="lam"):
        sat_mod.SAT(lam=-1.0)
    with pytest.raises(ValueError, match="beta"):
        sat_mod.SAT(beta=-0.1)
    with pytest.raises(ValueError, match="inner must be one of"):
        sat_mod.SAT(inner="kl")
    with pytest.raises(ValueError, match="needs TRADES.*sat_trades"):
        sat_mod.SAT(inner="trades-kl")
    with pytest.raises(ValueError, match="no default layers.*layers="):
        default_layers(models.get_model("model_b"))


# ------------------------------------------------------------------------------------------------
# analyses
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("p", [1, 2, "inf"])
def test_clustering_accuracy_on_synthetic_clusters(p):
    rng = np.random.default_rng(5)
    C, n, d = 4, 400, 6
    centers = 10.0 * np.eye(C, d)
    y = rng.integers(0, C, n).astype(np.int32)
    f = (centers[y] + rng.normal(scale=0.5, size=(n, d))).astype(np.float32)
    sums, counts = clu.class_centroids({"l": f}, y, C)
    cents = {"l": np.asarray(sums["l"]) / np.asarray(counts)[:, None]}
    acc = float(clu.clustering_accuracy({"l": f}, y, cents, p)["l"]) / n
    assert acc == 1.0
    y_shuf = rng.permutation(y)  # labels unrelated to the features: centroids all near the mean
    sums, counts = clu.class_centroids({"l": f}, y_shuf, C)
    cents = {"l": np.asarray(sums["l"]) / np.asarray(counts)[:, None]}
    y_test = rng.integers(0, C, n).astype(np.int32)
    f_test = (centers[rng.integers(0, C, n)] + rng.normal(scale=0.5, size=(n, d))).astype(np.float32)
    acc = float(clu.clustering_accuracy({"l": f_test}, y_test, cents, p)["l"]) / n
    assert abs(acc - 1 / C) < 0.1  # labels independent of the features: chance (binomial sd 0.03)


def test_layer_output_gradient_closed_form():
    name = default_layers(MODEL)[-1]
    # d CE / d (last block output) in closed form: logits = mean_hw(f) @ W + b
    g = jax.jit(lambda v, x: clu.layer_output_gradients(MODEL, v, x, Y, [name])[1], compiler_options=_FAST)(VARS, X)
    logits = np.asarray(MODEL.apply(VARS, X))
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    dz = p - np.eye(4)[Y]
    W = np.asarray(VARS["params"]["fc"]["kernel"])
    expect = np.broadcast_to((dz @ W.T)[:, None, None, :] / 16.0, (B, 4, 4, 8))
    np.testing.assert_allclose(np.asarray(g[name]), expect, rtol=1e-4, atol=1e-6)


@pytest.mark.slow
def test_resnet18_default_layers():
    assert default_layers(models.get_model("resnet18")) == ("layer4/block0/act2", "layer4/block1/act2")


@pytest.mark.slow
def test_layer_drivers():
    names = list(default_layers(MODEL))
    cents = clu.layer_centroids(MODEL, VARS, X, Y, 4, layers=names, batch_size=3)  # padded last batch
    _, feats = layers.capture(MODEL, VARS, X, kind="activation")
    f = np.asarray(feats[names[-1]]).reshape(B, -1)
    np.testing.assert_allclose(cents[names[-1]][3], f[Y == 3].mean(0), rtol=1e-5, atol=1e-6)
    accs = clu.layer_clustering_accuracy(MODEL, VARS, X, Y, cents, p=2, batch_size=B)
    assert set(accs) == set(names) | {"output"} and all(0 <= v <= 100 for v in accs.values())
    cos = clu.shift_gradient_cosine(MODEL, VARS, X, Y, jax.random.PRNGKey(0), layers=names,
                                    attack=PGD(steps=2, step_size=2 / 255))
    assert all(v.shape == (2,) and np.all(np.abs(v) <= 1 + 1e-6) for v in cos.values())
    sizes = clu.shift_sizes(MODEL, VARS, X, X, layers=names, batch_size=3)
    assert all(np.all(v == 0) and v.shape == (B,) for v in sizes.values())


def test_greedy_lambda_search_moves_towards_ila_and_returns_its_path():
    rng = np.random.default_rng(6)
    ola = rng.normal(10.0, 1.0, 2000)
    ila = rng.normal(6.0, 1.0, 2000)

    def eq7(lam):  # a stand-in attack whose shifts shrink with lambda from OLA's towards ILA's
        return rng.normal(10.0 - 40.0 * lam, 1.0, 2000)

    res = greedy_lambda_search(eq7, ola, ila, step=0.01)
    lams = [s.lam for s in res.path]
    assert lams[0] == 0.0 and lams[1] == 0.01  # increases from 0 (the rule as printed would go negative)
    assert res.path[0].ip_ola > res.path[0].ip_ila
    assert 0.04 <= res.lam <= 0.06  # the products cross halfway (mean 8 at lambda = 0.05)
    assert "reversed" in res.stopped
    assert abs(shift_distribution(ola, res.edges).sum() - 1) < 1e-12
    with pytest.raises(ValueError, match="step"):
        greedy_lambda_search(eq7, ola, ila, step=0.0)


def test_sat_cifar10_renders_table1_with_paper_values(monkeypatch, tmp_path):
    """The experiment's table and claims from stubbed training / evaluation (no compute): every
    cell is `ours (paper)` and the claims are decided from the stubbed numbers."""
    import types

    from experiments.sat import _common as SC
    from experiments.sat import cifar10 as exp

    fake = types.SimpleNamespace(state=types.SimpleNamespace(step=1, model=None, variables=lambda: None),
                                 run_dir=str(tmp_path))
    monkeypatch.setattr(SC, "load_data", lambda sc: ((X, Y), (X, Y)))
    monkeypatch.setattr(SC, "train", lambda *a, **k: fake)
    monkeypatch.setattr(SC, "lafeat_heads", lambda *a, **k: None)
    monkeypatch.setattr(SC, "evaluate", lambda model, v, x, y, sc, heads, seed: {
        c: 40.0 for c in SC.COLUMNS})
    res = exp.run("cpu", quick=True, out_dir=tmp_path / "sat-cifar10")
    assert "| SAT-AWP-AT | 40.00 (82.68) |" in res.markdown
    assert "40.00 (48.95)" in res.markdown  # the LAFEAT-100 column, paper value beside ours
    assert "not run" not in res.markdown and "Claims" in res.markdown
    # our readings: marked, with the paper numbers of the row they read, compared with its baseline
    assert "| SAT-TRADES (eq. 9 inner) * | 40.00 (82.25) |" in res.markdown
    assert "| SAT (lambda 0.01) * | 40.00 (81.77) |" in res.markdown
    assert "our reading of SAT-TRADES (settings" in res.markdown
    assert "SAT-TRADES (eq. 9 inner) beats TRADES against LAFEAT-100 (our reading of SAT-TRADES) | Table 1 | " \
        "45.35 vs 42.02" in res.markdown
    assert "SAT (lambda 0.01) beats PGD-AT against PGD-100 (our reading of SAT) | Table 1 | 42.92 vs 38.75" in res.markdown


def test_shared_trainings_go_to_the_runs_nobody_is_training(monkeypatch, tmp_path):
    """train_all trains first the runs no other process holds and comes back to the busy ones, so
    two SAT experiments started together split their shared trainings."""
    from advjax.train.lock import run_dir_lock
    from experiments.sat import _common as SC

    order = []
    monkeypatch.setattr(SC, "train", lambda out_dir, label, sc, data, seed=0: order.append(label) or label)
    out = tmp_path / "sat-cifar10"
    with run_dir_lock(SC.runs_root(out, SC.CPU) / "TRADES_s0"):  # "another process" trains TRADES
        got = SC.train_all(out, ["PGD-AT", "TRADES", "MART"], SC.CPU, None)
        assert order == ["PGD-AT", "MART", "TRADES"]
        assert list(got) == ["PGD-AT", "TRADES", "MART"] and got["TRADES"] == "TRADES"
        # wait=False (sat-cifar10: evaluate the finished runs meanwhile) leaves the busy one out
        order.clear()
        assert list(SC.train_all(out, ["PGD-AT", "TRADES", "MART"], SC.CPU, None, wait=False)) == ["PGD-AT", "MART"]
        assert order == ["PGD-AT", "MART"]
        # a label is busy when any of its lock directories is held
        seen = SC.split_work(["PGD-AT", "TRADES"], lambda l: [out / "free", SC.runs_root(out, SC.CPU) / f"{l}_s0"],
                             lambda l: l, wait=False)
        assert list(seen) == ["PGD-AT"]


@pytest.mark.slow
@pytest.mark.parametrize("name", ["lambda_search", "shift", "clustering"])
def test_sat_analysis_experiments_run_end_to_end_on_an_untrained_model(name, monkeypatch, tmp_path, shared_data):
    """sat-lambda / sat-shift / sat-clustering on a tiny untrained ResNet-18 (training stubbed, every
    analysis real, LAFEAT included when importable): they render their tables, plots and claims."""
    import dataclasses
    import importlib
    import types

    from advjax.train.state import create_train_state
    from experiments.sat import _common as SC

    exp = importlib.import_module(f"experiments.sat.{name}")
    tiny = dataclasses.replace(SC.QUICK, widths=(4, 8, 8, 8), n_train=64, n_eval=16, n_aa=4, batch_size=32,
                               attack_steps=2, n_cos=4)
    model = models.get_model("resnet18", widths=(4, 8, 8, 8))
    state = create_train_state(model, optax.sgd(0.1), jax.random.PRNGKey(0))
    fake = types.SimpleNamespace(state=state, run_dir=str(tmp_path / "run"))
    monkeypatch.setattr(SC, "pick_scale", lambda scale, quick: tiny)
    monkeypatch.setattr(SC, "train", lambda *a, **k: fake)
    if name == "clustering":
        monkeypatch.setattr(exp, "_epoch_states", lambda run_dir, target: [(2, state)])
    res = exp.run("cpu", quick=True, out_dir=tmp_path / name)
    assert "Claims" in res.markdown or "Checks" in res.markdown
    for p in res.plots:
        assert (tmp_path / name / p).is_file()
