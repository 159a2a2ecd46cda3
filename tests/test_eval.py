"""Tests of advjax.eval: the robust-accuracy table, R&G score, JSON / markdown, the AutoAttack-style
sanity checks (warnings), and the `advjax eval` command (with a stand-in checkpoint loader)."""
import argparse
import json
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from advjax import attacks
from advjax.eval import RobustnessWarning, rg_score, robust_accuracy, sanity_checks
from advjax.eval import command
from advjax.eval.robust import _square_check


def _linear(d=10, k=4, n=37, seed=0):
    kw, kx = jax.random.split(jax.random.PRNGKey(seed))
    w = jax.random.normal(kw, (d, k))
    x = jax.random.uniform(kx, (n, d))
    y = jnp.argmax(x @ w, -1).at[:3].set((jnp.argmax(x[:3] @ w, -1) + 1) % k)  # 3 clean errors
    return (lambda v, z: z @ v), w, np.asarray(x), np.asarray(y)


def test_table_rg_score_and_flags():
    apply_fn, w, x, y = _linear()
    res = robust_accuracy(apply_fn, w, (x, y), {"fgsm": attacks.FGSM(), "pgd": attacks.PGD(steps=3)},
                          [0.0, 0.05, 0.2], batch_size=16, key=0,
                          progress=False, checks=False)
    assert res.n == 37 and res.attacks == ["fgsm", "pgd"]
    assert res.clean_accuracy == pytest.approx(34 / 37)
    for a in res.attacks:
        assert res.table[a][0.0] == pytest.approx(res.clean_accuracy)  # eps = 0 is the clean accuracy
        assert res.rg_score[a] == pytest.approx(sum(res.table[a].values()))
        for e in res.eps_list:
            r = res.robust[a][e]
            assert r.shape == (37,) and r.dtype == bool
            assert not (r & ~res.clean_correct).any()  # robust implies clean-correct
            assert res.table[a][e] == pytest.approx(r.mean())
        accs = [res.table[a][e] for e in res.eps_list]
        assert accs == sorted(accs, reverse=True)  # larger eps, lower accuracy (linear model)
    assert res.table["pgd"][0.2] <= res.table["fgsm"][0.2]
    assert rg_score([0.5, 0.25]) == 0.75


def test_padding_does_not_change_results():
    apply_fn, w, x, y = _linear()
    a = robust_accuracy(apply_fn, w, (x, y), ["fgsm"], [0.1], batch_size=10, progress=False, checks=False)
    b = robust_accuracy(apply_fn, w, (x, y), ["fgsm"], [0.1], batch_size=37, progress=False, checks=False)
    np.testing.assert_array_equal(a.robust["fgsm"][0.1], b.robust["fgsm"][0.1])


def test_json_and_markdown(tmp_path):
    apply_fn, w, x, y = _linear()
    res = robust_accuracy(apply_fn, w, (x, y), {"FGSM": attacks.FGSM(), "PGD-5": attacks.PGD(steps=5)},
                          [0.0, 0.1], batch_size=64, progress=False, checks=False)
    text = res.to_json(str(tmp_path / "r.json"), per_sample=True)
    d = json.loads((tmp_path / "r.json").read_text())
    assert d == json.loads(text)
    assert set(d["table"]) == {"FGSM", "PGD-5"} and set(d["table"]["FGSM"]) == {"0", "0.1"}
    assert d["rg_score"]["PGD-5"] == pytest.approx(res.rg_score["PGD-5"])
    assert len(d["robust"]["FGSM"]["0.1"]) == 37
    md = res.to_markdown()
    assert "| PGD-5 |" in md and "eps=0.1" in md and "R&G" in md
    assert f"{100 * res.table['FGSM'][0.1]:.2f}" in md


def test_dataset_object_uint8_and_domain():
    apply_fn, w, _, _ = _linear(d=4)
    rng = np.random.default_rng(0)
    x8 = rng.integers(0, 256, (20, 2, 2, 1)).astype(np.uint8)
    ds = types.SimpleNamespace(x=x8, y=rng.integers(0, 4, 20).astype(np.int32), domain=(0.0, 1.0))
    f = lambda v, z: z.reshape(z.shape[0], -1) @ v  # noqa: E731
    res = robust_accuracy(f, w, ds, ["fgsm"], [0.1], batch_size=8, progress=True, checks=False)
    assert 0.0 <= res.table["fgsm"][0.1] <= res.clean_accuracy


def test_bad_inputs():
    apply_fn, w, x, y = _linear()
    with pytest.raises(ValueError, match="labels out of range"):
        robust_accuracy(apply_fn, w, (x, y + 10), ["fgsm"], [0.1], progress=False, checks=False)
    with pytest.raises(ValueError, match="outside the domain"):
        robust_accuracy(apply_fn, w, (x + 2, y), ["fgsm"], [0.1], progress=False, checks=False)
    with pytest.raises(ValueError, match="eps must be"):
        robust_accuracy(apply_fn, w, (x, y), ["fgsm"], [-0.1], progress=False, checks=False)
    with pytest.raises(ValueError, match="unknown attack"):
        robust_accuracy(apply_fn, w, (x, y), ["nope"], [0.1], progress=False, checks=False)


def test_sanity_check_warnings():
    _, w, x, y = _linear()
    x, y = jnp.asarray(x[:8]), jnp.asarray(y[:8])
    logits = lambda v, z: z @ v  # noqa: E731
    with pytest.warns(RobustnessWarning, match="probability distribution"):
        sanity_checks(lambda v, z: jax.nn.softmax(z @ v), w, x, y)
    rng = np.random.default_rng(0)
    with pytest.warns(RobustnessWarning, match="randomized"):
        sanity_checks(lambda v, z: z @ v + jnp.asarray(rng.normal(size=(z.shape[0], 4)), jnp.float32), w, x, y)
    with pytest.warns(RobustnessWarning, match="zero gradient"):
        sanity_checks(lambda v, z: jnp.round(z @ v), w, x, y)
    import warnings as _w
    with _w.catch_warnings():
        _w.simplefilter("error", RobustnessWarning)
        assert sanity_checks(logits, w, x, y) == []  # a plain logit model passes
    msgs = []
    with pytest.warns(RobustnessWarning, match="Square"):
        _square_check(msgs, {"apgd-ce": 0.5, "apgd-t": 0.48, "square": 0.40}, "here")
    _square_check(msgs, {"apgd-ce": 0.5, "square": 0.499}, "here")
    assert len(msgs) == 1


def test_autoattack_entry_records_sub_attacks():
    apply_fn, w, x, y = _linear(n=12)
    aa = attacks.AutoAttack(steps=2, n_target_classes=1, n_queries=4)
    f = lambda v, z: z.reshape(z.shape[0], -1) @ v  # noqa: E731
    xi = x.reshape(12, 1, 10, 1)
    res = robust_accuracy(f, w, (xi, y), {"aa": aa}, [0.1], progress=False, checks=True)
    per = res.autoattack["aa"][0.1]
    assert list(per) == ["apgd-ce", "apgd-t", "fab-t", "square"]
    assert list(per.values()) == sorted(per.values(), reverse=True)  # cumulative
    assert per["square"] == pytest.approx(res.table["aa"][0.1])


def test_command_parse_and_errors(capsys):
    assert command.parse_eps("0, 8/255,0.3") == [0.0, 8 / 255, 0.3]
    with pytest.raises(ValueError, match="bad eps"):
        command.parse_eps("abc")
    p = argparse.ArgumentParser()
    command.configure_parser(p)
    args = p.parse_args(["--checkpoint", "/nonexistent/run", "--attacks", "fgsm", "--eps", "0.1"])
    assert command.run(args) == 2
    assert "error" in capsys.readouterr().err


def test_command_end_to_end(tmp_path, monkeypatch, capsys):
    """`advjax eval` with the checkpoint loader and data loader stubbed (the contract's signatures)."""
    import advjax.data
    import advjax.train.checkpoint as ckpt

    apply_fn, w, x, y = _linear(d=4, n=20)

    class Lin:  # stands in for a flax module: advjax.eval accepts an apply_fn
        pass

    f = lambda v, z: z.reshape(z.shape[0], -1) @ v  # noqa: E731
    monkeypatch.setattr(ckpt, "load_for_eval", lambda path, which="best": (f, w, {"dataset": "toy", "eps": 0.1}),
                        raising=False)
    ds = types.SimpleNamespace(x=x.reshape(20, 2, 2, 1), y=y, domain=(0.0, 1.0))
    monkeypatch.setattr(advjax.data, "load", lambda name, split, data_dir=None: ds)
    p = argparse.ArgumentParser()
    command.configure_parser(p)
    out = tmp_path / "out"
    args = p.parse_args(["--checkpoint", str(tmp_path), "--attacks", "fgsm,pgd2", "--eps", "0.1",
                         "--out", str(out), "--no-progress"])
    assert command.run(args) == 0
    d = json.loads((out / "eval.json").read_text())
    assert set(d["table"]) == {"fgsm", "pgd2"} and d["meta"]["dataset"] == "toy"
    assert "| pgd2 |" in capsys.readouterr().out
