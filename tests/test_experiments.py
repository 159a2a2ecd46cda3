"""The reproduction runner (``advjax reproduce``) and the quick Moon experiment (LSA paper, Table 2)."""
import argparse
import dataclasses
import json
import sys
import textwrap

import numpy as np
import pytest

from experiments import base, runner


def test_discovers_the_lsa_experiments():
    exps = runner.discover()
    assert {"lsa-moons", "lsa-mnist", "lsa-cifar10"} <= set(exps)
    for e in exps.values():
        assert isinstance(e, base.Experiment) and e.description and callable(e.run)
        assert set(e.expected_runtime) & {"cpu", "quick", "paper"}
    text = runner.list_text()
    assert "lsa-moons" in text and "expected" in text


def test_a_new_experiment_file_is_found_and_run(tmp_path, monkeypatch):
    pkg = tmp_path / "extra"
    pkg.mkdir()
    (pkg / "zz_dummy_table.py").write_text(textwrap.dedent('''
        from experiments.base import Experiment, ExperimentResult

        def run(scale, quick, out_dir, seed):
            return ExperimentResult(markdown="| a | b |\\n|---|---|\\n| 1 | 2 |", config={"scale": scale},
                                    metrics={"seed": seed, "quick": quick})

        EXPERIMENT = Experiment(name="zz-dummy", description="a test table", paper="none",
                                expected_runtime={"cpu": "1 s"}, paper_values={}, run=run)
    '''))
    import experiments

    monkeypatch.setattr(experiments, "__path__", list(experiments.__path__) + [str(pkg)])
    try:
        assert "zz-dummy" in runner.discover()
        out_dir, result, wall = runner.run_experiment("zz-dummy", quick=True, out=tmp_path / "results", seed=7)
        rec = json.loads((out_dir / "results.json").read_text())
        assert rec["seed"] == 7 and rec["quick"] is True and rec["metrics"]["seed"] == 7
        assert rec["versions"]["jax"] and rec["wall_time_s"] >= 0
        assert "| 1 | 2 |" in (out_dir / "results.md").read_text()
    finally:
        sys.modules.pop("experiments.zz_dummy_table", None)


def test_unknown_experiment_and_scale():
    with pytest.raises(ValueError, match="unknown experiment"):
        runner.get_experiment("no-such-table")
    with pytest.raises(ValueError, match="scale"):
        runner.run_experiment("lsa-moons", scale="huge")


def test_cli_list(capsys):
    from experiments import command

    p = argparse.ArgumentParser()
    command.configure_parser(p)
    assert command.run(p.parse_args(["--list"])) == 0
    assert "lsa-moons" in capsys.readouterr().out


def test_accuracy_table_format():
    t = base.accuracy_table({"A": [90.0, 50.0]}, (0.0, 0.1), {"A": [91.0, 40.0]})
    assert "90.00 (91.00)" in t and "140.00 (131.00)" in t and "eps=0.1" in t and "R&G" in t
    with pytest.raises(ValueError, match="values"):
        base.accuracy_table({"A": [1.0]}, (0.0, 0.1))


def test_quick_moon_experiment_produces_complete_table(tmp_path, monkeypatch):
    from experiments import lsa_moons

    tiny = dataclasses.replace(lsa_moons.QUICK, epochs=1, n_samples=420, pgd_steps=2, eval_steps=2,
                               lsa_samples=64, adv_points=16, plots=False)
    monkeypatch.setattr(lsa_moons, "QUICK", tiny)
    out_dir, result, wall = runner.run_experiment("lsa-moons", quick=True, out=tmp_path, seed=0)
    rows = lsa_moons.row_names()
    assert len(rows) == 17 and rows[0] == "Normal" and "AT-PGD-LR-L2" in rows and "FAST-LR-L0" in rows
    md = (out_dir / "results.md").read_text()
    header = next(line for line in md.splitlines() if line.startswith("| method"))
    assert header.count("eps=") == 6 and "R&G" in header
    table_lines = [line for line in md.splitlines() if line.startswith("| ")]
    for r in rows:
        line = next(l for l in table_lines if l.startswith(f"| {r} |"))
        assert len(line.strip("|").split("|")) == 1 + 6 + 1  # name, 6 eps, R&G
    rec = json.loads((out_dir / "results.json").read_text())
    acc = rec["metrics"]["accuracy_pgd"]
    assert list(acc) == rows and all(len(v) == 6 for v in acc.values())
    for r in rows:
        assert all(0.0 <= a <= 100.0 for a in acc[r])
        assert rec["metrics"]["rg_pgd"][r] == pytest.approx(sum(acc[r]))
    # eps = 0 is clean accuracy: both attacks agree there
    assert all(rec["metrics"]["accuracy_fgsm"][r][0] == pytest.approx(acc[r][0]) for r in rows)
    assert rec["config"]["epochs"] == 1 and rec["seed"] == 0 and "jax" in rec["versions"]


def test_sdi_overfitting_collapse_detector():
    """Catastrophic overfitting is detected by either signature, and a robust run is not flagged."""
    from experiments.sdi_overfitting import collapsed

    def h(e, test_pgd, train_pgd, own):
        return {"epoch": e, "test_pgd_acc": test_pgd, "train_pgd_acc": train_pgd, "train_acc": own}

    # (a) robust, then PGD accuracy falls from 40% to 1%
    assert collapsed([h(1, 0.3, 0.3, 0.4), h(2, 0.4, 0.4, 0.5), h(3, 0.01, 0.02, 0.9)]) == 3
    # (b) never robust, but fits its own FGSM examples (96%) while PGD stays at 0 (MNIST eps 0.4)
    assert collapsed([h(1, 0.03, 0.03, 0.1), h(2, 0.0, 0.0, 0.23), h(3, 0.0, 0.0, 0.82)]) == 3
    # a slow but honest run: own-example accuracy tracks PGD accuracy
    assert collapsed([h(1, 0.03, 0.03, 0.07), h(2, 0.1, 0.11, 0.4), h(3, 0.16, 0.18, 0.88)]) is None
    # the signature for one epoch, then recovery (FGSM-SDI at eps 0.4): not a collapse
    assert collapsed([h(1, 0.02, 0.02, 0.3), h(2, 0.016, 0.018, 0.73), h(3, 0.15, 0.19, 0.87)]) is None


def test_image_table_trains_base_and_lr_variant_with_fit(tmp_path, shared_data):
    """The LSA image tables (lsa-mnist, lsa-cifar10) on the engine's fit: both rows complete, one
    monitor record per epoch and variant, the R&G score is the row sum, one run directory each."""
    from experiments._lsa_images import ImageTableConfig, run_image_table

    cfg = ImageTableConfig(model="model_b", dataset="mnist", train_split="test[:128]", test_split="test[8000:]",
                           epochs=1, batch_size=64, steps=2, eval_steps=2, n_eval=64, lsa_samples=32,
                           plots=False)
    res = run_image_table(cfg, tmp_path, 0, "tiny", [])
    acc = res.metrics["accuracy_pgd"]
    assert list(acc) == ["AT-APGD", "AT-APGD-LR-L0"]
    for name, row in acc.items():
        assert len(row) == len(cfg.eval_eps) and all(0.0 <= a <= 100.0 for a in row)
        assert res.metrics["rg_pgd"][name] == pytest.approx(sum(row))
        assert len(res.metrics["per_epoch"][name]) == 1
    runs = sorted(p.name for p in (tmp_path / "runs").iterdir())
    assert len(runs) == 2 and sum(r.startswith("AT-APGD-LR-L0-") for r in runs) == 1
    assert "| AT-APGD-LR-L0 |" in res.markdown


def test_robust_eval_steps_scale_with_eps(monkeypatch):
    """sdi-* evaluation: PGD / CW take steps of eps/4 (2/255 at 8/255; 0.075 at MNIST's 0.3), so
    the attack can cross the ball at every radius, and a stronger radius lowers the accuracy."""
    import types

    import flax.linen as nn
    import jax
    import numpy as np

    from advjax import attacks
    from experiments.sdi_cifar10 import robust_eval

    seen = []
    real = attacks.get_attack

    def spy(name, **kw):
        seen.append((name, kw))
        return real(name, **kw)

    monkeypatch.setattr(attacks, "get_attack", spy)
    model = nn.Dense(3)
    x = np.random.default_rng(0).uniform(0, 1, (16, 4)).astype(np.float32)
    v = model.init(jax.random.PRNGKey(0), x)
    y = np.asarray(jax.numpy.argmax(model.apply(v, x), -1), np.int32)  # all clean-correct
    state = types.SimpleNamespace(model=types.SimpleNamespace(apply=lambda vv, z, train=False: model.apply(vv, z)),
                                  variables=lambda: v)
    small = robust_eval(state, x, y, ("pgd10", "cw20"), eps=0.01, batch_size=8)
    big = robust_eval(state, x, y, ("pgd10", "cw20"), eps=0.3, batch_size=8)
    steps = {(n, kw["eps"]): kw["step_size"] for n, kw in seen}
    assert steps[("pgd10", 0.3)] == pytest.approx(0.075) and steps[("cw20", 0.01)] == pytest.approx(0.0025)
    assert small["clean"] == big["clean"] == 100.0
    assert big["pgd10"] <= small["pgd10"] and big["pgd10"] < 100.0


def test_best_and_last_evaluated_once_when_they_are_the_same_state(monkeypatch):
    from types import SimpleNamespace

    import experiments.sdi_cifar10 as sdi

    calls = []

    def fake_eval(state, x, y, attacks, **kw):
        calls.append(state)
        return {"clean": float(np.sum(state.params["w"]))}

    monkeypatch.setattr(sdi, "robust_eval", fake_eval)
    result = SimpleNamespace(state=SimpleNamespace(params={"w": np.ones(3)}))
    monkeypatch.setattr(sdi, "best_state", lambda r: SimpleNamespace(params={"w": np.ones(3)}))
    best, last = sdi.evaluate_best_and_last(result, None, None, ())
    assert len(calls) == 1 and best == last == {"clean": 3.0}
    monkeypatch.setattr(sdi, "best_state", lambda r: SimpleNamespace(params={"w": np.zeros(3)}))
    best, last = sdi.evaluate_best_and_last(result, None, None, ())
    assert len(calls) == 3 and best == {"clean": 0.0} and last == {"clean": 3.0}


def test_train_seconds_from_the_per_epoch_throughput():
    from types import SimpleNamespace

    from experiments.sdi_cifar10 import train_seconds

    # 1000 images at batch 128: 7 full batches = 896 images per epoch
    result = SimpleNamespace(history=[{"images_per_s": 100.0}, {"images_per_s": 50.0}])
    assert train_seconds(result, 1000, 128) == pytest.approx(896 / 100 + 896 / 50)


def test_evaluations_are_cached_per_attack_and_keyed_by_the_parameters(monkeypatch, tmp_path):
    """A re-run of an sdi experiment repeats no finished evaluation (an interrupted one resumes
    per attack); a different state, attack list or setting is evaluated afresh."""
    from types import SimpleNamespace

    import experiments.sdi_cifar10 as sdi

    calls = []

    def fake_eval(state, x, y, attacks, include_clean=True, **kw):
        calls.append((tuple(attacks), include_clean))
        w = float(np.sum(state.params["w"]))
        out = {a: w + i for i, a in enumerate(attacks)}
        return {"clean": w, **out} if include_clean else out

    def make(w):
        params = {"w": np.full(3, w)}
        return SimpleNamespace(params=params, variables=lambda: {"params": params})

    monkeypatch.setattr(sdi, "robust_eval", fake_eval)
    result = SimpleNamespace(state=make(1.0))
    monkeypatch.setattr(sdi, "best_state", lambda r: make(1.0))
    x, y, cache = np.zeros((2, 4)), np.zeros(2), tmp_path / "evaluations.json"
    first = sdi.evaluate_best_and_last(result, x, y, ("pgd10", "cw20"), cache_path=cache, seed=0)
    assert first == ({"clean": 3.0, "pgd10": 3.0, "cw20": 3.0},) * 2 and len(calls) == 3
    again = sdi.evaluate_best_and_last(result, x, y, ("pgd10", "cw20"), cache_path=cache, seed=0)
    assert again == first and len(calls) == 3
    # one new attack: only it is run
    sdi.evaluate_best_and_last(result, x, y, ("pgd10", "pgd20"), cache_path=cache, seed=0)
    assert calls[3:] == [(("pgd20",), False)]
    # another setting, or other parameters: evaluated afresh
    sdi.evaluate_best_and_last(result, x, y, ("pgd10",), cache_path=cache, seed=1)
    assert len(calls) == 6
    sdi.evaluate_best_and_last(SimpleNamespace(state=make(2.0)), x, y, ("pgd10",), cache_path=cache, seed=0)
    # the last state (w=2) is new: clean + pgd10; the best (w=1) was evaluated with seed 0 before
    assert len(calls) == 8
