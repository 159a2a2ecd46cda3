"""LAFEAT (Yu et al., CVPR 2021; as used by the SAT paper): the cosine step schedule and the
margin-normalized mixed logits on hand-made cases; one run equals a line-by-line transcription of
the official ``attack_single_run``; the attack contracts (eps-ball, [0, 1], deterministic by key,
eval-mode BN, one compile per shape, with and without jit); LAFEAT-100 with trained heads at least
as strong as PGD-100 on a briefly PGD-trained model; the heads (training on predicted labels,
storage, the record of the model they belong to) and bad input."""
from __future__ import annotations

import dataclasses
import functools
import math
import warnings

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from advjax import data as D
from advjax import models
from advjax.attacks import PGD, base, get_attack
from advjax.attacks import lafeat_heads as lh
from advjax.attacks.lafeat import BETAS, LAFEAT, beta_schedule, lafeat_attack, mixed_logits, output_scale, step_sizes

EPS = 0.2  # digits pixels are in [0, 1]; the MLP below is trained with PGD-5 at this radius
STEPS = 100  # PGD-5-AT steps of batch 128
HEAD_EPOCHS = 3
N = 64  # images per attack call in the contract tests
SMALL = LAFEAT(eps=EPS, steps=5, betas=(0.4, 0.0), loop="rolled")  # one program shared by several tests


# ------------------------------------------------------------------------------------------------
# pieces on hand-made cases
# ------------------------------------------------------------------------------------------------


def test_step_schedule_is_the_cosine_of_the_code():
    # 2 eps (1 + cos(pi i / N)) / 2 for N = 4, eps = 0.1, by hand
    want = [0.2, 0.1 * (1 + math.sqrt(0.5)), 0.1, 0.1 * (1 - math.sqrt(0.5))]
    np.testing.assert_allclose(np.asarray(step_sizes(0.1, 4)), want, rtol=1e-6)
    s = np.asarray(step_sizes(8 / 255, 100))
    assert s.shape == (100,) and s[0] == pytest.approx(16 / 255) and np.all(np.diff(s) < 0) and s[-1] > 0


class MixedLogits(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_mixed_logits_by_hand(self):
        f = jnp.array([[3.0, 1.0, 0.0], [3.0, 1.0, 0.0]])
        h = jnp.array([[0.0, 2.0, 1.0], [2.0, 0.0, 1.0]])  # row 0: the head says y = 1; row 1: it does not
        y = jnp.array([1, 1])
        z = self.variant(mixed_logits)(f, h, y, 0.4)
        # row 0: m = 1, s(h) = 2 - 1, s(f) = 3 - 1: 0.4 h / 1 + 0.6 f / 2
        # row 1: m = 0: f / s(f) = f / 2
        want = np.array([[0.9, 1.1, 0.4], [1.5, 0.5, 0.0]])
        np.testing.assert_allclose(np.asarray(z), want, rtol=1e-6)
        np.testing.assert_allclose(np.asarray(output_scale(f))[:, 0], [2.0, 2.0], rtol=1e-6)
        # the scales carry no gradient: d z / d f at beta = 0 is 1 / s(f) exactly
        g = jax.grad(lambda f: mixed_logits(f, h, y, 0.0)[0, 0])(f)
        np.testing.assert_allclose(np.asarray(g), [[0.5, 0, 0], [0, 0, 0]], rtol=1e-6)


def test_beta_schedule_is_the_codes_interleaved_arange():
    assert BETAS == (0.4, 0.5, 0.3, 0.6, 0.2, 0.7, 0.1, 0.8, 0.0, 0.9)
    assert beta_schedule() == BETAS
    assert beta_schedule(interleave=False) == (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
    assert get_attack("lafeat").betas == BETAS and get_attack("lafeat1000").steps == 1000


# ------------------------------------------------------------------------------------------------
# a briefly PGD-trained MLP on the 8x8 digits, with its heads (shared by the tests below)
# ------------------------------------------------------------------------------------------------


def _np_variables(model, seed=0):
    """He-uniform-ish numpy initialization in the tree of ``model.init`` (no XLA compilation of
    random initializers, the slow part on shared cores)."""
    shapes = jax.eval_shape(lambda k: model.init(k, jnp.zeros((1, *model.input_shape)), train=False),
                            jax.random.key(0))
    rng = np.random.default_rng(seed)

    def fill(path, sd):
        name = str(getattr(path[-1], "key", path[-1]))
        if name in ("scale", "var"):
            return np.ones(sd.shape, sd.dtype)
        if name in ("bias", "mean"):
            return np.zeros(sd.shape, sd.dtype)
        return (rng.normal(size=sd.shape) * np.sqrt(2.0 / np.prod(sd.shape[:-1]))).astype(sd.dtype)

    return jax.tree_util.tree_map_with_path(fill, dict(shapes))


@functools.lru_cache(maxsize=1)
def _trained():
    from advjax.methods.base import get_method
    from advjax.train.state import create_train_state

    tr, te = D.load("digits", "train"), D.load("digits", "test")
    x, y = tr.x.reshape(len(tr), -1), tr.y
    model = models.get_model("model_a", hidden=(64, 64, 64), activation="relu", input_shape=(64,), num_classes=10)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = get_method("pgd_at", eps=EPS, steps=5, dataset=tr)
    m = dataclasses.replace(m, attack=dataclasses.replace(m.inner_attack, loop="rolled"))
    st = create_train_state(model, optax.adam(3e-3), jax.random.PRNGKey(0), variables=_np_variables(model))
    step = jax.jit(m.step)
    order = np.random.default_rng(0).permutation(len(x))
    for i in range(STEPS):
        b = order[(i % 11) * 128:(i % 11 + 1) * 128]
        st, _ = step(st, (x[b], y[b]), np.asarray(jax.random.PRNGKey(i)))
    v = jax.device_get(st.variables())
    heads = lh.train_lafeat_heads(model, v, x, 0, epochs=HEAD_EPOCHS, batch_size=128)
    xt, yt = te.x.reshape(len(te), -1).astype(np.float32), te.y.astype(np.int32)
    return model, v, heads, x, xt, yt


@pytest.fixture(scope="module")
def trained():
    return _trained()


def _acc(model, v, x, y):
    return float(np.mean(np.asarray(jnp.argmax(model.apply(v, x), -1)) == y))


def test_heads_learn_the_backbones_predictions(trained):
    model, v, heads, x, xt, yt = trained
    assert heads.layers == ("Dense_0", "Dense_1", "Dense_2") == tuple(lh.default_head_layers(model))
    agree = lh.head_accuracy(model, v, heads, xt)
    assert agree["output"] == 1.0
    # chance is 10%; after 3 epochs on the backbone's own labels the heads agree far more often
    assert all(agree[name] > 0.6 for name in heads.layers), agree
    rec = heads.info
    assert rec["model"]["digest"] == lh.model_digest(model) and rec["variables"] == lh.variables_digest(v)
    assert rec["train"]["targets"] == "predicted" and rec["train"]["epochs"] == 3


def _reference(model, v, heads, x, y, key, betas, steps, eps, head_name):
    """Line by line the official ``LafeatAttack.attack_single_run`` (L-inf) inside ``LafeatEval``'s
    loop over betas on the points still robust, written with masks; this library's draw of the
    start noise (run r: ``fold_in(key, r)``)."""
    hp = heads.params[head_name]
    head = lh.LafeatHead(heads.num_classes, heads.width, heads.hidden)
    from advjax import layers

    def outputs(z):
        logits, feats = layers.capture(model, v, z)
        return logits, head.apply({"params": hp}, feats[head_name])

    def check_right_index(o):
        return (jnp.argmax(o, -1) == y).astype(jnp.float32)[:, None]

    def scale(o):
        s = jnp.sort(o, axis=-1)
        return (s[:, -1] - s[:, -2] + 1e-8)[:, None]

    def single_run(beta, key, todo):
        t = jax.random.uniform(key, x.shape, x.dtype, -1.0, 1.0)
        x_adv = x + eps * t / jnp.max(jnp.abs(t), axis=1, keepdims=True)
        x_adv = jnp.clip(x_adv, 0.0, 1.0)
        x_best_adv = x_adv
        acc = jnp.argmax(outputs(x_adv)[0], -1) == y
        x_adv_old = x_adv

        def iteration(i, state):  # the body of `for i in range(self.n_iter)`
            x_adv, x_adv_old, x_best_adv, acc = state
            step_size = 2 * eps * (1 + jnp.cos(i / steps * jnp.pi)) * 0.5

            def loss(z):
                out_adv, out_h = outputs(z)
                mask_h = check_right_index(out_h)
                lp = beta * out_h * mask_h / jax.lax.stop_gradient(scale(out_h)) + \
                    (1 - beta * mask_h) * out_adv / jax.lax.stop_gradient(scale(out_adv))
                ce = jax.nn.logsumexp(lp, -1) - jnp.take_along_axis(lp, y[:, None], -1)[:, 0]
                return jnp.sum(ce), out_adv

            grad, logits = jax.grad(loss, has_aux=True)(x_adv)
            mask = check_right_index(logits) * todo[:, None]  # points not being attacked stay put
            grad2 = x_adv - x_adv_old
            x_adv_old = x_adv
            a = jnp.where(i > 0, 0.75, 1.0)
            x1 = x_adv + mask * step_size * jnp.sign(grad)
            x1 = jnp.clip(jnp.minimum(jnp.maximum(x1, x - eps), x + eps), 0.0, 1.0)
            x1 = jnp.clip(jnp.minimum(jnp.maximum(x_adv + mask * ((x1 - x_adv) * a + grad2 * (1 - a)), x - eps),
                                      x + eps), 0.0, 1.0)
            x_adv = x1
            pred = jnp.argmax(logits, -1) == y
            acc = acc & pred
            x_best_adv = jnp.where((~pred)[:, None], x_adv, x_best_adv)
            return x_adv, x_adv_old, x_best_adv, acc

        _, _, x_best_adv, acc = jax.lax.fori_loop(0, steps, iteration, (x_adv, x_adv_old, x_best_adv, acc))
        return acc, x_best_adv

    robust = jnp.argmax(outputs(x)[0], -1) == y  # LafeatEval._init_pass
    x_out = x
    for r, beta in enumerate(betas):
        acc, adv = single_run(beta, jax.random.fold_in(key, r), robust.astype(jnp.float32))
        fooled = robust & ~acc & (jnp.argmax(outputs(adv)[0], -1) != y)  # _attack_batch re-checks
        x_out = jnp.where(fooled[:, None], adv, x_out)
        robust = robust & ~fooled
    return x_out


def test_attack_equals_the_official_code(trained):
    model, v, heads, _, xt, yt = trained
    x, y, key = jnp.asarray(xt[:N]), jnp.asarray(yt[:N]), jax.random.PRNGKey(3)
    ours = SMALL.bind(model, heads)(None, v, x, y, key)
    ref = jax.jit(lambda x, y, key: _reference(model, v, heads, x, y, key, SMALL.betas, SMALL.steps, EPS,
                                               heads.layers[-2]),
                  compiler_options={"xla_backend_optimization_level": 0})(x, y, key)  # compile time dominates
    np.testing.assert_allclose(np.asarray(ours), np.asarray(ref), atol=1e-6)
    assert np.any(np.asarray(ours) != np.asarray(x))  # something was attacked


# ------------------------------------------------------------------------------------------------
# the attack contracts
# ------------------------------------------------------------------------------------------------


def test_contracts_eps_ball_domain_determinism_success_masking(trained):
    model, v, heads, _, xt, yt = trained
    x, y = jnp.asarray(xt[:N]), jnp.asarray(yt[:N])
    atk = SMALL.bind(model, heads)
    a1 = np.asarray(atk(None, v, x, y, jax.random.PRNGKey(0)))
    a2 = np.asarray(atk(None, v, x, y, jax.random.PRNGKey(0)))
    np.testing.assert_array_equal(a1, a2)  # deterministic by key
    assert np.abs(a1 - np.asarray(x)).max() <= EPS + 1e-6 and a1.min() >= 0.0 and a1.max() <= 1.0
    pred = np.asarray(jnp.argmax(model.apply(v, a1), -1))
    moved = np.any(a1 != np.asarray(x), axis=1)
    # success masking + the code's output: a returned point is either fooled or the clean x
    assert np.all(pred[moved] != np.asarray(y)[moved]) and moved.sum() > 0
    clean_ok = np.asarray(jnp.argmax(model.apply(v, x), -1)) == np.asarray(y)
    assert np.all(~moved | clean_ok)  # misclassified clean points are not touched


@pytest.mark.slow
def test_multi_targeted_mode_only_adds_fooled_points(trained):
    """The multi-targeted mode (2 targets here) runs the untargeted runs first, then targeted runs
    on the 2nd and 3rd largest clean logits: it stays in the ball and fools a superset."""
    model, v, heads, _, xt, yt = trained
    x, y = jnp.asarray(xt[:N]), jnp.asarray(yt[:N])
    a1 = np.asarray(SMALL.bind(model, heads)(None, v, x, y, jax.random.PRNGKey(0)))
    mt = np.asarray(SMALL.replace(multi_targeted=True, n_target_classes=2).bind(model, heads)(
        None, v, x, y, jax.random.PRNGKey(0)))
    assert np.abs(mt - np.asarray(x)).max() <= EPS + 1e-6 and mt.min() >= 0.0 and mt.max() <= 1.0
    robust = np.asarray(jnp.argmax(model.apply(v, a1), -1)) == np.asarray(y)
    robust_mt = np.asarray(jnp.argmax(model.apply(v, mt), -1)) == np.asarray(y)
    assert np.all(robust_mt <= robust) and robust_mt.sum() < robust.sum()
    moved = np.any(mt != np.asarray(x), axis=1)
    assert np.all(np.asarray(jnp.argmax(model.apply(v, mt), -1))[moved] != np.asarray(y)[moved])


def test_one_compile_per_shape_and_eps_zero(trained):
    model, v, heads, _, xt, yt = trained
    x, y = jnp.asarray(xt[:N]), jnp.asarray(yt[:N])
    fn, vh = lh.lafeat_features_fn(model, heads), lh.with_heads(v, heads)
    first = SMALL(fn, vh, x, y, jax.random.PRNGKey(0))
    size = base._jit_run._cache_size()
    out = [SMALL.replace(eps=e)(fn, vh, x, y, jax.random.PRNGKey(0)) for e in (0.0, 0.05)]
    assert base._jit_run._cache_size() == size  # eps is traced: one program for every radius
    np.testing.assert_array_equal(np.asarray(out[0]), np.asarray(x))  # eps = 0 returns x exactly
    assert lh.lafeat_features_fn(model, heads) is fn  # cached: equal models reuse one program
    np.testing.assert_array_equal(np.asarray(first), np.asarray(SMALL.bind(model, heads)(None, v, x, y,
                                                                                        jax.random.PRNGKey(0))))


@pytest.mark.slow
class RunVariants(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_run_traceable_with_and_without_jit(self):
        model, v, heads, _, xt, yt = _trained()
        x, y = jnp.asarray(xt[:16]), jnp.asarray(yt[:16])
        atk = LAFEAT(eps=EPS, steps=3, betas=(0.5,))
        fn, vh = lh.lafeat_features_fn(model, heads), lh.with_heads(v, heads)
        out = self.variant(lambda vh, x, y, k: atk.run(fn, vh, x, y, k))(vh, x, y, jax.random.PRNGKey(0))
        ref = atk(fn, vh, x, y, jax.random.PRNGKey(0))
        np.testing.assert_allclose(np.asarray(out), np.asarray(ref), atol=1e-6)


def test_features_are_eval_mode_and_bn_untouched():
    """On a model with batch norm whose running statistics differ from any batch's, the logits the
    attack sees are the eval-mode logits, and the variables are returned unchanged."""
    model = models.ResNet(stage_sizes=(1, 1), widths=(4, 8), shortcut="pad", num_classes=4, input_shape=(8, 8, 3),
                          fast_conv=False)
    v = _np_variables(model)
    v["batch_stats"] = jax.tree_util.tree_map(lambda s: s + 0.5, v["batch_stats"])
    before = jax.tree_util.tree_map(np.array, v)
    layers = lh.default_head_layers(model)
    assert layers == ["layer1/block0/conv1", "layer1/block0/conv2", "layer2/block0/conv1", "layer2/block0/conv2"]
    params, nc = lh.init_heads(model, v, layers, jax.random.PRNGKey(1))
    heads = lh.LafeatHeads(params=params, layers=tuple(layers), kind="learnable", num_classes=nc)
    x = jnp.asarray(np.random.default_rng(0).uniform(size=(4, 8, 8, 3)).astype(np.float32))
    fn = lh.lafeat_features_fn(model, heads)
    both = jax.jit(lambda v, x: (fn(lh.with_heads(v, heads), x), model.apply(v, x, train=False)),
                   compiler_options={"xla_backend_optimization_level": 0})
    (logits, outs), want = both(v, x)
    np.testing.assert_allclose(np.asarray(logits), np.asarray(want), rtol=1e-5, atol=1e-6)
    assert list(outs) == layers and all(o.shape == (4, 4) for o in outs.values())
    chex.assert_trees_all_equal(before, jax.tree_util.tree_map(np.array, v))
    # the head's conv path: 2x2 stride-2 convs down to 1x1 ("SAME" lets a 1x1 map through)
    h = lh.LafeatHead(4)
    for shape in ((2, 4, 4, 8), (2, 1, 1, 8)):
        out = jax.eval_shape(lambda z: h.apply(h.init(jax.random.key(0), z), z), jax.ShapeDtypeStruct(shape, jnp.float32))
        assert out.shape == (2, 4)


# ------------------------------------------------------------------------------------------------
# strength: LAFEAT-100 vs PGD-100 on the PGD-trained model
# ------------------------------------------------------------------------------------------------


def test_lafeat100_at_least_as_strong_as_pgd100(trained):
    """LAFEAT-100 (all ten betas) through the evaluator against PGD-100 on the PGD-trained MLP.

    At the scale of the slow test below (150 AT steps, 5 head epochs, all 360 test images) it
    measured clean 91.1%; eps 0.1: LAFEAT-100 67.5%, PGD-100 71.9%, APGD-CE-100 71.9%; eps 0.2:
    LAFEAT-100 24.2%, PGD-100 36.4%, APGD-CE-100 32.8%. The default run here (100 AT steps, 3 head
    epochs, the first 200 test images, eps 0.2) asserts LAFEAT <= PGD and prints its numbers
    (measured: clean 86.0%, PGD-100 29.0%, LAFEAT-100 20.5%)."""
    model, v, heads, _, xt, yt = trained
    from advjax.eval import robust_accuracy

    atks = {"lafeat100": LAFEAT(steps=100).bind(model, heads), "pgd100": PGD(steps=100)}
    res = robust_accuracy(model, v, (xt[:200], yt[:200]), atks, [EPS], batch_size=200, progress=False, checks=False)
    clean, pgd, laf = res.clean_accuracy, res.table["pgd100"][EPS], res.table["lafeat100"][EPS]
    assert 0.2 < pgd < clean, (clean, pgd)  # robust enough for the comparison to mean something
    assert laf <= pgd, (clean, pgd, laf)
    print(f"clean {clean:.3f} PGD-100 {pgd:.3f} LAFEAT-100 {laf:.3f}")


# ------------------------------------------------------------------------------------------------
# heads: storage, identity, bad input
# ------------------------------------------------------------------------------------------------


def test_heads_save_load_and_wrong_model(trained, tmp_path):
    model, v, heads, _, xt, yt = trained
    d = tmp_path / "heads"
    lh.save_heads(heads, d)
    back = lh.load_heads(d, model, v)
    assert back.layers == heads.layers and back.record == heads.record
    chex.assert_trees_all_close(back.params, heads.params)
    # heads of another model (another definition) and of other weights are clear errors
    other = models.get_model("model_a", hidden=(32, 32, 32), activation="relu", input_shape=(64,), num_classes=10)
    with pytest.raises(ValueError, match="trained for another model"):
        lh.load_heads(d, other)
    with pytest.raises(ValueError, match="trained for another model"):
        LAFEAT(eps=EPS).bind(other, heads)
    v2 = jax.tree_util.tree_map(lambda a: a + 0.01, v)
    with pytest.raises(ValueError, match="other weights"):
        lh.load_heads(d, model, v2)
    with pytest.raises(ValueError, match="other weights"):
        lafeat_attack(model, v2, heads, xt[:4], yt[:4], eps=EPS, steps=2)
    # no heads at all: say how to train them
    with pytest.raises(FileNotFoundError, match="advjax lafeat-heads"):
        lh.load_heads(tmp_path / "empty", model, v)
    with pytest.raises(ValueError, match="train_lafeat_heads"):
        lafeat_attack(model, v, None, xt[:4], yt[:4])
    # heads_dir: beside the checkpoint, per checkpoint
    assert lh.heads_dir(tmp_path / "run" / "checkpoints" / "best" / "step_000000012") == \
        tmp_path / "run" / "lafeat_heads" / "best-step_000000012"


def test_bad_input(trained):
    model, v, heads, _, xt, yt = trained
    f = models.logits_fn(model)
    with pytest.raises(ValueError, match="needs intermediate-layer heads"):
        LAFEAT(eps=EPS, steps=2)(f, v, xt[:4], yt[:4])  # an apply_fn, no heads
    from advjax.eval import robust_accuracy

    with pytest.raises(ValueError, match="attack 'lafeat'.*lafeat-heads"):
        robust_accuracy(model, v, (xt[:8], yt[:8]), ["lafeat"], [EPS], progress=False, checks=False)
    for bad in ({"betas": (1.5,)}, {"betas": ()}, {"momentum": 2.0}, {"steps": 0}, {"loss": "cw"}, {"norm": "l2"},
                {"targeted": True}, {"eps": -1.0}):
        with pytest.raises(ValueError):
            LAFEAT(**bad)
    with pytest.raises(ValueError, match="out of range for the 3 trained heads"):
        lafeat_attack(model, v, heads, xt[:4], yt[:4], head=5, steps=2)
    with pytest.raises(ValueError, match="not among the trained heads"):
        lafeat_attack(model, v, heads, xt[:4], yt[:4], head="Dense_9", steps=2)
    with pytest.raises(ValueError, match=r"has no learnable layer 'nope'; its layers are: \['Dense_0'"):
        lh.train_lafeat_heads(model, v, xt[:8], layers=["nope"])
    with pytest.raises(ValueError, match="must be \\[N, 64\\]"):
        lh.train_lafeat_heads(model, v, xt[:8].reshape(8, 8, 8))
    with pytest.raises(ValueError, match="outside the domain"):
        lafeat_attack(model, v, heads, xt[:4] + 2.0, yt[:4], steps=2)




# ------------------------------------------------------------------------------------------------
# slow: the command line round trip, and the strength comparison at the measured scale
# ------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_cli_eval_lafeat_needs_heads_then_runs(tmp_path, capsys):
    """`advjax eval --attacks lafeat` on a run without heads says how to train them; `advjax
    lafeat-heads` trains and stores them beside the checkpoint; then the evaluation runs."""
    import json

    from advjax.cli import main
    from advjax.train import TrainConfig, fit

    run = tmp_path / "run"
    cfg = TrainConfig(model="model_a", dataset="moons", method="pgd_at", eps=0.2, epochs=2, batch_size=64,
                      run_dir=str(run))
    fit(cfg, progress=False, monitor=False, log=False)
    argv = ["eval", "--checkpoint", str(run), "--attacks", "pgd20,lafeat20", "--eps", "0.2", "--no-progress",
            "--no-checks", "--no-compile-cache"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "advjax lafeat-heads --checkpoint" in err and "lafeat_heads" in err
    assert main(["lafeat-heads", "--checkpoint", str(run), "--epochs", "2", "--no-compile-cache"]) == 0
    assert list((run / "lafeat_heads").iterdir())[0].name.startswith(("best-step_", "last-step_"))
    assert main(["lafeat-heads", "--checkpoint", str(run), "--no-compile-cache"]) == 0  # reused, not retrained
    assert "already in" in capsys.readouterr().out
    assert main(argv) == 0
    table = json.loads((run / "eval.json").read_text())["table"]
    assert set(table) == {"pgd20", "lafeat20"}


@pytest.mark.slow
def test_lafeat100_vs_pgd100_at_the_measured_scale():
    """The docstring figures of test_lafeat100_at_least_as_strong_as_pgd100: 150 AT steps, 5 head
    epochs, all 360 test images, eps 0.1 and 0.2; LAFEAT-100 <= PGD-100 and <= APGD-CE-100 at both."""
    from advjax.attacks import APGD
    from advjax.eval import robust_accuracy
    from advjax.methods.base import get_method
    from advjax.train.state import create_train_state

    tr, te = D.load("digits", "train"), D.load("digits", "test")
    x, y = tr.x.reshape(len(tr), -1), tr.y
    model = models.get_model("model_a", hidden=(64, 64, 64), activation="relu", input_shape=(64,), num_classes=10)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = get_method("pgd_at", eps=EPS, steps=5, dataset=tr)
    st = create_train_state(model, optax.adam(3e-3), jax.random.PRNGKey(0), variables=_np_variables(model))
    step = jax.jit(m.step)
    order = np.random.default_rng(0).permutation(len(x))
    for i in range(150):
        b = order[(i % 11) * 128:(i % 11 + 1) * 128]
        st, _ = step(st, (x[b], y[b]), np.asarray(jax.random.PRNGKey(i)))
    v = jax.device_get(st.variables())
    heads = lh.train_lafeat_heads(model, v, x, 0, epochs=5)
    xt, yt = te.x.reshape(len(te), -1).astype(np.float32), te.y.astype(np.int32)
    atks = {"lafeat100": LAFEAT(steps=100).bind(model, heads), "pgd100": PGD(steps=100), "apgd-ce": APGD(steps=100)}
    res = robust_accuracy(model, v, (xt, yt), atks, [0.1, EPS], batch_size=360, progress=False, checks=False)
    print(res.to_markdown())
    for e in (0.1, EPS):
        assert res.table["lafeat100"][e] <= min(res.table["pgd100"][e], res.table["apgd-ce"][e]), res.table
