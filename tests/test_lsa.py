"""Layer Sustainability Analysis (Khalooei et al.): CM (eq. 11), MVL (Alg. 1), AT-LR (eq. 13-15)."""
import collections

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from advjax.analysis import lsa
from advjax.losses.lsa import at_lr_name, comparison_measure, layer_comparison_measures, lsa_lr
from advjax.attacks import get_attack

# ----------------------------------------------------------------------------------- CM, eq. 11


class TestComparisonMeasure(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_hand_made_values(self):
        a = jnp.array([[3.0, 4.0], [0.0, 2.0]])
        b = jnp.array([[0.0, 0.0], [0.0, 1.0]])
        per_sample = self.variant(lambda p, q: comparison_measure(p, q, "sample"))(a, b)
        # sample 0: ||(3,4)|| / ||(3,4)|| = 1; sample 1: ||(0,1)|| / ||(0,2)|| = 0.5
        chex.assert_trees_all_close(per_sample, jnp.array([1.0, 0.5]), rtol=1e-6)
        mean = self.variant(lambda p, q: comparison_measure(p, q, "mean"))(a, b)
        chex.assert_trees_all_close(mean, 0.75, rtol=1e-6)
        # reference mode: one Frobenius ratio over the batch = sqrt(25 + 1) / sqrt(25 + 4)
        batch = self.variant(lambda p, q: comparison_measure(p, q, "batch"))(a, b)
        chex.assert_trees_all_close(batch, np.sqrt(26.0) / np.sqrt(29.0), rtol=1e-6)

    def test_image_shaped_and_identical(self):
        x = jax.random.normal(jax.random.PRNGKey(0), (3, 4, 4, 2))
        chex.assert_trees_all_close(comparison_measure(x, x), jnp.zeros(3))
        # a relative error: scaling phi(x_hat) - phi(x) by 2 doubles CM; scaling both leaves it
        d = jax.random.normal(jax.random.PRNGKey(1), x.shape)
        c1 = comparison_measure(x, x + d)
        chex.assert_trees_all_close(comparison_measure(x, x + 2 * d), 2 * c1, rtol=1e-5)
        chex.assert_trees_all_close(comparison_measure(5 * x, 5 * (x + d)), c1, rtol=1e-5)

    def test_gradient_finite_when_nothing_changes(self):
        a = jnp.array([[1.0, 2.0], [0.0, 0.0]])
        for red in ("mean", "batch"):
            g = jax.grad(lambda p, q: comparison_measure(p, q, red), argnums=(0, 1))(a, a)
            assert all(np.all(np.isfinite(np.asarray(x))) for x in g)
            chex.assert_trees_all_close(comparison_measure(a, a, red), 0.0, atol=1e-12)

    def test_layer_cms_modes(self):
        fc = collections.OrderedDict(a=jnp.ones((4, 3)), b=jnp.ones((4, 2, 2)))
        fa = collections.OrderedDict(a=jnp.zeros((4, 3)), b=2 * jnp.ones((4, 2, 2)))
        paper = layer_comparison_measures(fc, fa, "paper")
        chex.assert_shape(paper, (4, 2))
        chex.assert_trees_all_close(paper, jnp.ones((4, 2)), rtol=1e-6)
        ref = layer_comparison_measures(fc, fa, "reference")
        chex.assert_shape(ref, (2,))

    def test_errors(self):
        with pytest.raises(ValueError, match="shape"):
            comparison_measure(jnp.ones((2, 3)), jnp.ones((2, 4)))
        with pytest.raises(ValueError, match="reduction"):
            comparison_measure(jnp.ones((2, 3)), jnp.ones((2, 3)), "sum")
        with pytest.raises(ValueError, match="mode"):
            layer_comparison_measures({"a": jnp.ones((1, 2))}, {"a": jnp.ones((1, 2))}, "other")
        with pytest.raises(ValueError, match="empty"):
            lsa_lr([])
        with pytest.raises(ValueError, match="gammas"):
            lsa_lr([0, 1], gammas=[1.0])
        with pytest.raises(ValueError, match="out of range"):
            lsa_lr([5])({"a": jnp.ones((1, 2))}, {"a": jnp.ones((1, 2))})


# ----------------------------------------------------------------------------------- MVL, Alg. 1


def test_mvl_planted_vulnerable_layer():
    rng = np.random.default_rng(0)
    cms = 0.1 + 0.01 * rng.standard_normal((200, 6))
    cms[:, 3] = 1.0  # the planted vulnerable layer
    names = [f"Dense_{i}" for i in range(6)]
    m = lsa.most_vulnerable_layers(cms, eta=1.0, names=names)
    assert m.layers == (3,)
    assert m.names == ("Dense_3",)
    np.testing.assert_allclose(m.mu, cms.mean())
    np.testing.assert_allclose(m.sigma, cms.std())
    assert "L3" in str(m)


def test_mvl_sorted_by_cm_and_eta_sweep():
    cms = np.full((10, 5), 0.1)
    cms[:, 1] = 0.8
    cms[:, 4] = 1.0
    m = lsa.most_vulnerable_layers(cms, eta=0.5)
    assert m.layers == (4, 1)  # sorted by CM, largest first
    sweep = lsa.mvl_versus_eta(cms, (0.0, 0.5, 1.0, 1.5, 3.0))
    sizes = [len(s.layers) for s in sweep]
    assert sizes == sorted(sizes, reverse=True) and sizes[0] == 2 and sizes[-1] == 0
    table = lsa.format_mvl_versus_eta(sweep)
    assert "L4, L1" in table and "(empty)" in table


def test_mvl_errors():
    with pytest.raises(ValueError, match="NaN"):
        lsa.most_vulnerable_layers(np.array([[0.1, np.nan]]))
    with pytest.raises(ValueError, match="names"):
        lsa.most_vulnerable_layers(np.ones((2, 3)), names=["a"])


# ----------------------------------------------------------------------------------- AT-LR


def _model_a():
    from advjax.layers import capture
    from advjax.models import get_model, init_variables

    model = get_model("model_a")
    return model, init_variables(model, jax.random.PRNGKey(0)), capture


def test_regularizer_gradient_reaches_chosen_layer_and_earlier_only():
    model, variables, capture = _model_a()
    x = jax.random.normal(jax.random.PRNGKey(1), (16, 2))
    x_adv = x + 0.3 * jnp.sign(jax.random.normal(jax.random.PRNGKey(2), x.shape))

    @jax.jit
    def grads_for(gammas):  # gammas one-hot over L0..L2: one compile for the three cases
        reg = lsa_lr([0, 1, 2], gammas=gammas)

        def f(params):
            v = {"params": params}
            return reg(capture(model, v, x)[1], capture(model, v, x_adv)[1])

        return jax.grad(f)(variables["params"])

    for layer in range(3):
        grads = grads_for(jnp.eye(3)[layer])
        for i in range(4):
            g = np.concatenate([np.ravel(a) for a in jax.tree_util.tree_leaves(grads[f"Dense_{i}"])])
            if i <= layer:
                assert np.abs(g).max() > 0, f"layer {i} <= {layer} should get gradient"
            else:
                assert np.all(g == 0), f"layer {i} > {layer} got gradient from the regularizer on L{layer}"


def test_at_lr_composes_with_engine_methods():
    from advjax.methods.at_fgsm import ATFGSM
    from advjax.methods.at_lr import at_lr
    from advjax.methods.base import get_method
    from advjax.methods.fast import FGSMRS
    from advjax.methods.pgd_at import PGDAT
    from advjax.methods.trades import TRADES
    from advjax.train.state import create_train_state

    base = PGDAT(eps=0.3, alpha=0.1, steps=3, domain=None)
    m = at_lr(base, layers=[1], gammas=2.0)
    assert m.name == "AT-PGD-LR-L1"
    assert at_lr(FGSMRS(eps=0.3, domain=None), 0).name == "FAST-LR-L0"
    assert at_lr(TRADES(eps=0.3, domain=None), 2).name == "TRADES-LR-L2"
    assert at_lr(ATFGSM(eps=0.3, domain=None), [0, 2]).name == "AT-FGSM-LR-L0-L2"
    assert at_lr_name("AT-APGD", 0) == "AT-APGD-LR-L0"
    assert get_method("at_lr", base="pgd_at", layers=[2], eps=0.3, domain=None).name == "AT-PGD-LR-L2"
    with pytest.raises(ValueError, match="AdversarialMethod"):
        at_lr("pgd", [0])

    model, variables, _ = _model_a()
    state = create_train_state(model, optax.adam(1e-3), jax.random.PRNGKey(0), variables=variables)
    x = jax.random.normal(jax.random.PRNGKey(3), (32, 2))
    y = (x[:, 0] > 0).astype(jnp.int32)
    key = jax.random.PRNGKey(4)
    g_base = jax.jit(base.gradients)(state, (x, y), key)[1]
    loss, g_lr, _, metrics = jax.jit(m.gradients)(state, (x, y), key)
    assert float(metrics["reg"]) > 0
    np.testing.assert_allclose(float(loss), float(metrics["base_loss"] + metrics["reg"]), rtol=1e-6)
    diff = jax.tree_util.tree_map(lambda a, b: a - b, g_lr, g_base)
    # the regularizer (on L1) changes the gradients of Dense_0/Dense_1 and leaves Dense_2/3 alone
    assert float(jnp.abs(diff["Dense_1"]["kernel"]).max()) > 0
    for later in ("Dense_2", "Dense_3"):
        chex.assert_trees_all_close(diff[later], jax.tree_util.tree_map(jnp.zeros_like, diff[later]), atol=1e-7)
    new_state, _ = jax.jit(m.step)(state, (x, y), key)
    assert int(new_state.step) == 1


def test_reference_mode_uses_activations():
    from advjax.methods.at_lr import at_lr
    from advjax.methods.pgd_at import PGDAT

    m = at_lr(PGDAT(eps=0.3, domain=None), [0], mode="reference")
    assert m.kind == "activation" and m.regularizer.mode == "reference"


# ----------------------------------------------------------------------------------- perturbations


def test_statistical_noise_stays_in_domain():
    x = jax.random.uniform(jax.random.PRNGKey(0), (8, 6, 6, 1))
    k = jax.random.PRNGKey(1)
    salt = lsa.StatisticalNoise("salt", 0.3)(None, None, x, None, k)
    assert set(np.unique(np.asarray(salt)[np.asarray(salt != x)])) <= {1.0}
    pepper = lsa.StatisticalNoise("pepper", 0.3)(None, None, x, None, k)
    assert set(np.unique(np.asarray(pepper)[np.asarray(pepper != x)])) <= {0.0}
    for kind in ("gaussian", "speckle"):
        z = lsa.StatisticalNoise(kind, 0.5)(None, None, x, None, k)
        assert float(z.min()) >= 0 and float(z.max()) <= 1 and not np.allclose(z, x)
    with pytest.raises(ValueError, match="noise kind"):
        lsa.StatisticalNoise("uniformish")


# ----------------------------------------------------------------------------------- LSA on Model B


def _mnist_or_digits(shared_dir):
    from advjax.data import load

    try:
        ds = load("mnist", "test[:256]", data_dir=shared_dir)
        x = np.asarray(ds.x, np.float32) / (255.0 if ds.x.dtype == np.uint8 else 1.0)
        return x, np.asarray(ds.y, np.int32), "mnist"
    except Exception:  # noqa: BLE001 - the shared data is optional
        pytest.skip("MNIST not available")


def test_lsa_pass_on_trained_model_b(shared_data):
    from advjax.layers import features_fn
    from advjax.methods.standard import Standard
    from advjax.models import get_model
    from advjax.train.state import create_train_state

    x, y, _ = _mnist_or_digits(shared_data)
    model = get_model("model_b")
    state = create_train_state(model, optax.adam(1e-3), jax.random.PRNGKey(0))
    step = jax.jit(Standard().step)
    for i in range(4):
        sl = slice(32 * i, 32 * (i + 1))
        state, metrics = step(state, (jnp.asarray(x[sl]), jnp.asarray(y[sl])), jax.random.PRNGKey(i))
    ffn = features_fn(model)
    assert float(metrics["loss"]) < 2.5
    mvl, cms = lsa.algorithm2(ffn, state.variables(), x[128:], y[128:], get_attack("fgsm", eps=0.1), jax.random.PRNGKey(9),
                              num_samples=48, eta=0.5)
    n_layers = len(mvl.all_names)
    assert n_layers == 5  # Conv_0..2, Dense_0..1 of Model B
    chex.assert_shape(cms, (48, n_layers))
    assert np.all(np.isfinite(cms)) and np.all(cms >= 0) and cms.max() > 0
    assert all(mvl.cm[i] - mvl.mu > mvl.eta * mvl.sigma for i in mvl.layers)
    assert list(mvl.layers) == sorted(mvl.layers, key=lambda i: -mvl.cm[i])
    perts = {**lsa.default_perturbations(0.1), "PGD": get_attack("pgd", eps=0.1, steps=3)}  # short PGD: fast test
    names, curves = lsa.perturbation_cms(ffn, state.variables(), x[128:144], y[128:144], jax.random.PRNGKey(3),
                                         perts)
    assert set(curves) == {"FGSM", "PGD", "Gaussian", "Salt", "Pepper", "Speckle"}
    assert all(c.shape == (n_layers,) for c in curves.values()) and len(names) == n_layers
    # the worst-case perturbation moves the logit layer more than FGSM (PGD is the stronger attack)
    assert curves["PGD"][-1] >= 0.9 * curves["FGSM"][-1]


def test_cm_plot_writes_png(tmp_path):
    from advjax.analysis import plots

    p = plots.plot_lsa_before_after(tmp_path / "cm.png", ["a", "b", "c"],
                                    {"before": {"FGSM": [0.1, 0.5, 0.2]}, "after": {"FGSM": [0.1, 0.2, 0.2]}},
                                    {"before": [1]})
    assert p.exists() and p.stat().st_size > 1000
