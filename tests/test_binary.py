"""One-logit binary models (the LSA paper's Model A head, Linear(1)): the [0, z] convention of
``advjax.losses.ce.two_logits``, read by the losses, every attack and the evaluator."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from advjax import losses
from advjax.attacks import get_attack, list_attacks
from advjax.eval import robust_accuracy
from advjax.losses.ce import predict, two_logits, two_logits_fn
from advjax.models import get_model, init_variables


def test_one_logit_losses_are_the_binary_ones():
    z = jnp.asarray([[-2.0], [0.5], [3.0], [-0.1]])
    y = jnp.asarray([0, 1, 0, 1])
    bce = -(y * jax.nn.log_sigmoid(z[:, 0]) + (1 - y) * jax.nn.log_sigmoid(-z[:, 0]))
    np.testing.assert_allclose(losses.cross_entropy(z, y), bce, rtol=1e-6)
    np.testing.assert_allclose(losses.cross_entropy(two_logits(z), y), bce, rtol=1e-6)
    # margin: positive exactly when misclassified; -z for label 1, z for label 0
    np.testing.assert_allclose(losses.cw_margin(z, y), np.where(y == 1, -z[:, 0], z[:, 0]))
    np.testing.assert_array_equal(predict(z), (z[:, 0] > 0).astype(int))
    np.testing.assert_array_equal(two_logits(jnp.ones((3, 4))), jnp.ones((3, 4)))  # >= 2 logits: unchanged
    for shape in ((4, 1), (4, 2)):
        with pytest.raises(ValueError, match="binary"):
            losses.dlr(jnp.zeros(shape), y)
    with pytest.raises(ValueError, match="binary"):
        losses.dlr_targeted(jnp.zeros((4, 1)), y, 1 - y)
    f = lambda v, x: x  # noqa: E731
    assert two_logits_fn(two_logits_fn(f)) == two_logits_fn(f) and hash(two_logits_fn(f)) == hash(two_logits_fn(f))


@pytest.fixture(scope="module")
def trained_model_a():
    """Model A with the paper's Linear(1) head, PGD-AT-trained for a few epochs on Moon."""
    from advjax.data import load
    from advjax.methods.pgd_at import PGDAT
    from advjax.train.state import create_train_state
    import optax

    ds = load("moons", "train", n_samples=600, noise=0.1, seed=0)
    x, y = np.asarray(ds.x, np.float32), np.asarray(ds.y, np.int32)
    model = get_model("model_a", num_classes=1)
    state = create_train_state(model, optax.adam(3e-3), jax.random.PRNGKey(0))
    method = PGDAT(eps=0.1, alpha=0.05, steps=3, domain=None)
    step = jax.jit(method.step)
    key = jax.random.PRNGKey(1)
    first = None
    for i in range(40):
        idx = np.random.default_rng(i).choice(len(x), 128, replace=False)
        state, m = step(state, (x[idx], y[idx]), jax.random.fold_in(key, i))
        first = float(m["loss"]) if first is None else first
    return model, state.variables(), x[:32], y[:32], first, float(m["loss"])


def test_model_a_paper_head_is_one_logit_and_trains(trained_model_a):
    model, v, x, y, first, last = trained_model_a
    assert v["params"]["Dense_3"]["kernel"].shape == (100, 1)           # Linear(1)
    out = model.apply(v, x)
    np.testing.assert_array_equal(out[:, 0], 0.0)                         # [0, z]
    raw = get_model("model_a", num_classes=1, raw_logit=True).apply(v, x)
    assert raw.shape == (32, 1)
    np.testing.assert_allclose(out[:, 1:], raw)
    assert last < first                                                   # BCE through the engine's PGD-AT
    assert float(jnp.mean(predict(raw) == y)) > 0.8
    with pytest.raises(ValueError, match="num_classes=1"):
        get_model("model_a", raw_logit=True).apply(v, x)


def test_every_attack_of_the_evaluator_runs_on_a_one_logit_model(trained_model_a):
    """The raw one-logit model ([N, 1] output) through robust_accuracy with every registered attack
    that applies to 2-D features; DLR-based ones are rejected before running; the [N, 1] and
    [0, z] forms give identical adversarial examples."""
    model, v, x, y, _, _ = trained_model_a
    raw = get_model("model_a", num_classes=1, raw_logit=True)
    dlr_based = {"apgd-dlr", "apgd-t", "aa"}           # DLR needs >= 3 classes, targeted DLR >= 4
    image_only = {"square"}                             # Square perturbs NHWC images
    bounded = {"salt", "pepper", "salt-and-pepper"}     # set inputs to the domain's bounds: need one
    names = [n for n in list_attacks() if n not in dlr_based | image_only | bounded]
    assert {"fgsm", "pgd", "apgd-ce", "cw-inf", "fab", "fab-t", "trades-kl", "bim"} <= set(names)
    attacks = {}
    for n in names:
        a = get_attack(n)
        if hasattr(a, "steps"):
            a = a.replace(steps=2)
        attacks[n] = a
    attacks["aa (apgd-ce, fab-t)"] = get_attack("aa", version="custom", attacks=("apgd-ce", "fab-t"), steps=3)
    res = robust_accuracy(raw, v, (x, y), attacks, [0.0, 0.3], batch_size=32, domain=None, progress=False,
                          checks=False)
    assert res.meta["num_classes"] == 2
    assert res.clean_accuracy > 0.8
    for label in attacks:
        assert res.table[label][0.0] == pytest.approx(res.clean_accuracy) or label in (
            "gaussian", "uniform", "speckle")
    for label in ("pgd", "apgd-ce", "cw-inf", "fab", "aa (apgd-ce, fab-t)"):
        assert res.table[label][0.3] < res.clean_accuracy, label          # gradients reach the single logit
    for n in sorted(dlr_based):
        with pytest.raises(ValueError, match="classes"):
            robust_accuracy(raw, v, (x, y), [n], [0.3], domain=None, progress=False, checks=False)
    with pytest.raises(ValueError, match=r"'apgd-dlr' cannot run on this model, which has 2 classes: its DLR loss "
                                         r"uses the 3rd largest logit, so it needs at least 3"):
        robust_accuracy(raw, v, (x, y), ["apgd-dlr"], [0.3], domain=None, progress=False, checks=False)
    # the wrapper is exact: the [N, 1] model and Model A's [0, z] output give the same x_adv
    apply_raw = lambda vv, z: raw.apply(vv, z)  # noqa: E731
    apply_two = lambda vv, z: model.apply(vv, z)  # noqa: E731
    for n in ("pgd", "fab"):
        a = get_attack(n, eps=0.3, domain=None, steps=3)
        k = jax.random.PRNGKey(3)
        np.testing.assert_allclose(a(apply_raw, v, x, y, k), a(apply_two, v, x, y, k), atol=1e-6)


def test_square_on_a_one_logit_image_model():
    import flax.linen as nn

    class OneLogit(nn.Module):
        @nn.compact
        def __call__(self, x, train=False):
            return nn.Dense(1)(x.reshape(x.shape[0], -1))

    m = OneLogit()
    x = jax.random.uniform(jax.random.PRNGKey(0), (16, 4, 4, 1))
    v = m.init(jax.random.PRNGKey(1), x)
    y = (m.apply(v, x)[:, 0] > 0).astype(jnp.int32)                       # all clean-correct
    xa = get_attack("square", eps=0.3, n_queries=10)(lambda vv, z: m.apply(vv, z), v, x, y, jax.random.PRNGKey(2))
    assert float(jnp.max(jnp.abs(xa - x))) <= 0.3 + 1e-6
    assert float(jnp.mean(predict(m.apply(v, xa)) == y)) < 1.0
