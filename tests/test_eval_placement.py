"""Where the data lives during evaluation and training (issue 25, items 3 and 6):

- ``robust_accuracy`` sends the variables to the devices once (replicated on the mesh), counted with
  ``jax.transfer_guard("log_explicit")``, which logs every host-to-device transfer per device;
- its table does not depend on the mesh (1 device or 2, batches sharded on "data");
- a batch that does not divide over an explicit mesh is an error before anything runs;
- the training loop places batch b + 1 before it reads step b's loss, shows every step's loss once
  (one step late) and trains the same numbers with or without the live bar.
"""
from __future__ import annotations

import re

import flax.linen as nn
import jax
import numpy as np
import pytest

from advjax.attacks import get_attack
from advjax.eval import robust_accuracy
from advjax.train.mesh import make_mesh

pytestmark = pytest.mark.skipif(jax.device_count() < 2, reason="needs 2 (simulated) devices; see conftest")


class TinyMLP(nn.Module):
    num_classes: int = 4
    input_shape: tuple = (6,)

    @nn.compact
    def __call__(self, x, train: bool = False):
        return nn.Dense(self.num_classes)(nn.elu(nn.Dense(13)(x)))


RNG = np.random.default_rng(0)
X = RNG.uniform(size=(24, 6)).astype(np.float32)  # features in [0, 1]
W = RNG.normal(size=(6, 4)).astype(np.float32)
Y = np.argmax((X - 0.5) @ W, -1).astype(np.int32)


@pytest.fixture(scope="module")
def trained():
    """A few Adam steps so the model is right on most points (robust accuracy is then informative)."""
    import optax

    model = TinyMLP()
    v = model.init(jax.random.PRNGKey(0), X[:1])
    tx = optax.adam(0.1)
    opt = tx.init(v)

    @jax.jit
    def step(v, opt):
        g = jax.grad(lambda v: optax.softmax_cross_entropy_with_integer_labels(model.apply(v, X), Y).mean())(v)
        u, opt = tx.update(g, opt, v)
        return optax.apply_updates(v, u), opt

    for _ in range(40):
        v, opt = step(v, opt)
    return model, jax.device_get(v)  # numpy: what load_for_eval returns


ATTACKS = {"pgd": get_attack("pgd", steps=2), "aa": get_attack("aa", version="custom", attacks=("apgd-ce",), steps=2)}


def _kernel_transfers(text: str) -> int:
    return len(re.findall(r"host-to-device transfer: aval=ShapedArray\(float32\[6,13\]\)", text))


def test_variables_are_sent_once_and_the_table_does_not_depend_on_the_mesh(trained, capfd):
    model, v = trained
    capfd.readouterr()
    with jax.transfer_guard("log_explicit"):
        res2 = robust_accuracy(model, v, (X, Y), ATTACKS, [0.1], batch_size=8, key=3, domain=(0.0, 1.0),
                               progress=False, checks=True, mesh=make_mesh(2))
    err = capfd.readouterr().err
    # the first Dense kernel ([6, 13], no other leaf has that shape) crossed once per device of the mesh;
    # before: once for every jitted call (2 attacks x 3 batches, AutoAttack's several per batch)
    assert _kernel_transfers(err) == 2, err[-2000:]
    assert "host-to-device transfer" in err  # the guard's log was captured (the count above is meaningful)
    res1 = robust_accuracy(model, v, (X, Y), ATTACKS, [0.1], batch_size=8, key=3, domain=(0.0, 1.0),
                           progress=False, checks=False, mesh=make_mesh(1))
    assert res2.table == res1.table and res2.autoattack == res1.autoattack
    for a in ATTACKS:
        np.testing.assert_array_equal(res2.robust[a][0.1], res1.robust[a][0.1])
    np.testing.assert_array_equal(res2.clean_correct, res1.clean_correct)
    assert res1.clean_accuracy > 0.8 and res1.table["pgd"][0.1] < res1.clean_accuracy  # informative


def test_batch_that_does_not_divide_over_the_mesh_is_an_error_before_any_attack(trained, monkeypatch):
    model, v = trained
    calls = []
    monkeypatch.setattr(type(get_attack("fgsm")), "__call__", lambda self, *a, **k: calls.append(1) or a[2])
    with pytest.raises(ValueError, match=r"batch size 6 is not divisible by the number of devices \(4\)"):
        robust_accuracy(model, v, (X, Y), ["fgsm"], [0.1], batch_size=6, progress=False, mesh=make_mesh(4))
    assert calls == []


class _Bar:
    """Stands in for tqdm: records each loss shown and how many batches were placed by then."""
    shown: list = []

    def __init__(self, *a, **k):
        pass

    def update(self, n):
        pass

    def set_postfix(self, **kw):
        _Bar.shown.append((float(kw["loss"]), _PUTS[0]))

    def write(self, *a, **k):
        pass

    def close(self):
        pass


_PUTS = [0]


def test_loop_prefetches_the_next_batch_and_shows_each_loss_one_step_late(monkeypatch):
    import tqdm.auto

    from advjax.train import distributed
    from advjax.train.config import TrainConfig
    from advjax.train.loop import fit

    cfg = TrainConfig(model="model_a", model_kwargs={"hidden": [8]}, dataset="features", method="standard",
                      epochs=1, batch_size=4, devices=1, run_dir=None, seed=1)
    x, y = X[:20, :2], (X[:20, 0] > X[:20, 1]).astype(np.int32)
    plain = fit(cfg, train_data=(x, y), run_dir=None, monitor=False, progress=False, log=False)
    real_put = distributed.global_batch

    def counting_put(*a, **k):
        _PUTS[0] += 1
        return real_put(*a, **k)

    monkeypatch.setattr(distributed, "global_batch", counting_put)
    monkeypatch.setattr(tqdm.auto, "tqdm", _Bar)
    _Bar.shown = []
    shown = fit(cfg, train_data=(x, y), run_dir=None, monitor=False, progress=True, log=False, log_every=1)
    spe = 20 // 4
    # step j's loss is read after step j + 1 was launched and batch j + 2 placed (the prefetch)
    assert [p for _, p in _Bar.shown] == [min(j + 3, spe) for j in range(spe)]
    # every step's loss shown exactly once: their mean is the epoch's training loss
    assert np.mean([l for l, _ in _Bar.shown]) == pytest.approx(shown.history[0]["train_loss"], abs=1e-4)
    chex_equal = jax.tree.map(lambda a, b: np.array_equal(np.asarray(a), np.asarray(b)),
                              plain.state.params, shown.state.params)
    assert all(jax.tree.leaves(chex_equal))  # the same numbers with or without the bar
