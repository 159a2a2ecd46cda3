"""The reproduction runner (``advjax reproduce``), the claims helper, and the experiments' results.md
with the papers' values (LSA Tables 2-4, the thesis' FGSM-SDI Tables II, III, IV, VI and Fig. 26)."""
import argparse
import dataclasses
import json
import re
import sys
import textwrap

import numpy as np
import pytest

from experiments import base, runner


def test_discovers_the_experiments_in_the_family_subpackages():
    exps = runner.discover()
    assert {"lsa-moons", "lsa-mnist", "lsa-cifar10", "sdi-cifar10", "sdi-k", "sdi-overfitting"} <= set(exps)
    for e in exps.values():
        assert isinstance(e, base.Experiment) and e.description and callable(e.run)
        assert set(e.expected_runtime) & {"cpu", "quick", "paper"}
    for name in ("lsa-moons", "lsa-mnist", "lsa-cifar10", "sdi-cifar10", "sdi-k", "sdi-overfitting"):
        assert exps[name].paper_values, name
        assert exps[name].run.__module__.startswith(("experiments.lsa.", "experiments.sdi.")), name
    text = runner.list_text()
    block = text[text.index("lsa-moons"):].split("\n")[:3]
    assert "paper values: attached (Table 2)" in block[1] and block[2].strip().startswith("expected: cpu:")


def test_a_new_experiment_file_is_found_and_run(tmp_path, monkeypatch):
    pkg = tmp_path / "extra"
    pkg.mkdir()
    (pkg / "zz_dummy_table.py").write_text(textwrap.dedent('''
        import time

        from experiments.base import Experiment, ExperimentResult, cached

        def run(scale, quick, out_dir, seed):
            cached(out_dir, "slow", {"seed": seed}, lambda: time.sleep(0.3) or 1.0)
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
        md = (out_dir / "results.md").read_text()
        assert "| 1 | 2 |" in md and "reused" not in md
        assert rec["cache"]["computed"] == 1 and rec["cache"]["reused"] == 0 and rec["cache"]["computed_s"] >= 0.3
        # a rerun reuses the cached evaluation and its header says so, with the time it took when computed
        _, _, wall2 = runner.run_experiment("zz-dummy", quick=True, out=tmp_path / "results", seed=7)
        rec2 = json.loads((out_dir / "results.json").read_text())
        assert rec2["cache"]["reused"] == 1 and rec2["cache"]["computed"] == 0 and wall2 < 0.3
        assert rec2["cache"]["reused_compute_s"] >= 0.3 and rec2["cache"]["reused_untimed"] == 0
        assert re.search(r"wall time [0-9.]+ s \(this invocation; 1 result reused from cache\.json, computed earlier "
                         r"in 0\.[3-9] s\)", (out_dir / "results.md").read_text())
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


def test_quick_moon_experiment_renders_table2_with_paper_values(tmp_path, monkeypatch):
    """lsa-moons end to end on a tiny budget (2 seeds, 1 epoch, one base method to keep it fast):
    the FGSM headline with ``mean ± std (paper)`` cells, the stronger attacks, the claims."""
    from experiments.lsa import moons as lsa_moons

    rows = lsa_moons.row_names()
    assert len(rows) == 17 and rows[0] == "Normal" and "AT-PGD-LR-L2" in rows and "AT-FAST-LR-L0" in rows
    assert set(rows) == set(lsa_moons.PV.TABLE2)                          # the paper's row names
    tiny = dataclasses.replace(lsa_moons.QUICK, epochs=1, n_samples=300, pgd_steps=1, eval_steps=2, apgd_steps=1,
                               paper_pgd_steps=1, seeds=2, lsa_samples=32, adv_points=16, plots=False,
                               autoattack=False)
    monkeypatch.setattr(lsa_moons, "QUICK", tiny)
    monkeypatch.setattr(lsa_moons, "BASES", ("pgd",))
    out_dir, result, wall = runner.run_experiment("lsa-moons", quick=True, out=tmp_path, seed=0)
    trained = ["Normal", "AT-PGD", "AT-PGD-LR-L0", "AT-PGD-LR-L1", "AT-PGD-LR-L2"]
    md = (out_dir / "results.md").read_text()
    assert "Scale: `cpu` (quick), 2 seed(s)" in md and "What differs from the paper's setting" in md
    header = next(line for line in md.splitlines() if line.startswith("| Training type"))
    assert header.count("| 0.") == 5 and "R&G" in header
    normal = next(line for line in md.splitlines() if line.startswith("| Normal |"))
    assert "(97.07)" in normal and "(466.17)" in normal and " ± " in normal
    assert "FGSM overstates robustness" in md and "### PGD-2" in md and "### APGD-CE (1 steps)" in md
    assert "| AT-PGD-LR-L2 beats AT-PGD on R&G | Table 2 / Sec. 4.2.2 | 473.36 vs 460.46 (+12.90) |" in md
    # the claim about a row not trained here is "not decidable", never guessed
    assert "AT-TRADE-LR-L2 has the highest R&G of the 17 rows" in md
    rec = json.loads((out_dir / "results.json").read_text())
    acc = rec["metrics"]["accuracy"]
    assert set(acc) >= {"FGSM", "PGD-2", "APGD-CE (1 steps)", "PGD-1 (step 0.005, the paper's PGD setting)"}
    for attack, table in acc.items():
        assert list(table) == trained
        for r in trained:
            a = np.asarray(table[r])
            assert a.shape == (2, 6) and ((0 <= a) & (a <= 100)).all()
    for r in trained:   # eps = 0 is clean accuracy: every attack agrees there
        assert all(np.allclose(np.asarray(acc[k][r])[:, 0], np.asarray(acc["FGSM"][r])[:, 0]) for k in acc)
        assert rec["metrics"]["rg_fgsm"][r] == pytest.approx(np.mean(np.sum(acc["FGSM"][r], 1)))
    verdicts = {c["claim"]: c["verdict"] for c in rec["metrics"]["claims"]}
    assert verdicts["AT-TRADE-LR-L2 has the highest R&G of the 17 rows"] == "not decidable at this scale"
    assert verdicts["AT-PGD-LR-L2 beats AT-PGD on R&G"] in ("yes", "no", "undecided (within seed noise)")
    assert rec["config"]["epochs"] == 1 and rec["config"]["num_classes"] == 1 and rec["seed"] == 0


def test_claims_are_computed_from_the_numbers():
    from experiments import claims as C

    c = C.Claim("A beats B", "Table 0", C.greater("a", "b"), paper="2 vs 1")
    assert C.decide(c, [{"a": 2.0, "b": 1.0}, {"a": 2.2, "b": 1.0}, {"a": 1.9, "b": 1.1}]).verdict == C.YES
    planted = [{"a": 1.0, "b": 2.0}, {"a": 1.1, "b": 2.2}, {"a": 0.9, "b": 1.8}]   # the claim fails
    v = C.decide(c, planted)
    assert v.verdict == C.NO == "no" and v.mean == pytest.approx(-1.0) and v.std == pytest.approx(0.1, abs=1e-9)
    noisy = [{"a": 1.0, "b": 0.0}, {"a": -1.0, "b": 0.0}, {"a": 1.5, "b": 0.0}]     # mean 0.5 < std 1.3
    assert C.decide(c, noisy).verdict == C.NOISE
    assert C.decide(c, [{"a": 2.0, "b": 1.0}]).verdict == C.ONE_RUN
    assert C.decide(c, [{"a": 2.0, "b": 1.0}], noise=0.5).verdict == C.YES
    assert C.decide(c, [{"a": 2.0, "b": 1.0}], noise=1.5).verdict == C.NOISE
    assert C.decide(c, [{"a": 2.0}]).verdict == C.NOT_DECIDABLE                     # a number is missing
    u = C.Claim("needs 110 epochs", "Table III", C.below("x", 5.0), undecidable="a 6-epoch run")
    assert C.decide(u, [{"x": 0.0}]).verdict == C.NOT_DECIDABLE
    m = C.Claim("A is the best", "T", C.is_max("a", ["a", "b", "c"]))
    assert C.decide(m, [{"a": 3.0, "b": 4.0, "c": 1.0}], noise=0.0).verdict == C.NO
    md = C.table([v])
    assert "| A beats B | Table 0 | 2 vs 1 | -1.00 ± 0.10 points (3 seeds) | **no** |" in md
    assert C.summary([v, C.decide(c, noisy)]) == "1 no, 1 undecided (within seed noise)"
    assert C.accuracy_diff_se(50.0, 50.0, 500) == pytest.approx(100 * np.sqrt(0.5 / 500))


def test_lsa_paper_values_are_the_printed_tables():
    """The R&G column as printed equals the row sum (a check of the transcription)."""
    from experiments.lsa import paper_values as PV

    tables = [PV.TABLE2, PV.TABLE3, PV.TABLE4["Model C"], PV.TABLE4["Model D"]]
    for t, eps in zip(tables, (PV.TABLE2_EPS, PV.TABLE3_EPS, PV.TABLE4_EPS, PV.TABLE4_EPS)):
        for row, (accs, rg) in t.items():
            assert len(accs) == len(eps) and sum(accs) == pytest.approx(rg, abs=0.02), row
    assert max(PV.rg(PV.TABLE2), key=PV.rg(PV.TABLE2).get) == "AT-TRADE-LR-L2" == "AT-TRADE-LR-L2"
    assert PV.TABLE3["AT-APGD-LR-L0"][1] == 541.73 and PV.TABLE4["Model D"]["AT-APGD"][0][0] == 82.60


def test_sdi_overfitting_collapse_detector():
    """Catastrophic overfitting is detected by either signature, and a robust run is not flagged."""
    from experiments.sdi.overfitting import collapsed

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


def test_lsa_mnist_quick_trains_the_rows_with_fit_and_renders_table3(tmp_path, shared_data, monkeypatch):
    """lsa-mnist on a tiny budget through the runner: Normal, AT-APGD and AT-APGD-LR-L0 trained with
    the engine's fit (one run directory each), FGSM at the paper's eps with ``ours (paper)`` cells,
    the claims decided."""
    from experiments.lsa import mnist

    tiny = dataclasses.replace(mnist.QUICK, train_split="test[:64]", epochs=1, batch_size=64, steps=1, eval_steps=1,
                               paper_pgd_steps=1, n_eval=32, lsa_samples=8, plots=False, monitor_size=0,
                               eps_warmup_epochs=0.0)
    monkeypatch.setattr(mnist, "QUICK", tiny)
    out_dir, res, _ = runner.run_experiment("lsa-mnist", quick=True, out=tmp_path, seed=0)
    md = (out_dir / "results.md").read_text()
    rows = ["Normal", "AT-APGD", "AT-APGD-LR-L0"]
    acc = res.metrics["accuracy_fgsm"]
    assert list(acc) == rows
    for name, row in acc.items():
        assert len(row) == 6 and all(0.0 <= a <= 100.0 for a in row)
        assert res.metrics["rg_fgsm"][name] == pytest.approx(sum(row))
        assert len(res.metrics["per_epoch"][name]) == 1
        assert f"| {name} |" in md
    assert "(99.36)" in md and "(541.73)" in md and "What differs from the paper's setting" in md
    assert "AT-APGD-LR-L0 beats AT-APGD on R&G" in md and "(step 0.005, the paper's PGD setting)" in md
    runs = sorted(p.name for p in (tmp_path / "lsa-mnist" / "runs").iterdir())
    assert len(runs) == 3 and sum(r.startswith("AT-APGD-LR-L0-") for r in runs) == 1


def test_lsa_cifar10_renders_table4_and_marks_the_smoke_claims_undecidable(monkeypatch, tmp_path):
    from experiments.lsa import cifar10
    from experiments.lsa import paper_values as PV

    seen = {}

    def fake(cfg, out_dir, seed, title, notes, paper=None, claims=None, header=""):
        seen.update(cfg=cfg, paper=paper, claims=claims, header=header)
        return base.ExperimentResult(markdown=header, config={}, metrics={})

    monkeypatch.setattr(cifar10, "run_image_table", fake)
    cifar10.run("cpu", quick=True, out_dir=tmp_path)
    assert seen["paper"] is PV.TABLE4["Model C"] and seen["cfg"].eval_eps == (0.0, 0.01, 0.03, 0.1, 0.2)
    assert all(c.undecidable for c in seen["claims"]) and "do not compare" in seen["header"]
    from experiments.lsa._tables import seed_table

    t = seed_table({"AT-APGD": np.asarray([[80.0, 70.0, 60.0, 40.0, 30.0]])}, PV.TABLE4_EPS, PV.TABLE4["Model C"])
    assert "| AT-APGD | 80.00 (83.68) | 70.00 (74.69) | 60.00 (72.21) | 40.00 (50.04) | 30.00 (41.45) | 280.00 (322.07) |" in t


def _fake_sdi_result(tmp_path, label):
    from types import SimpleNamespace

    return SimpleNamespace(run_dir=str(tmp_path / label), history=[{"epoch": 1, "images_per_s": 100.0}],
                           best={"epoch": 1}, state=None)


def test_sdi_cifar10_renders_tables_iii_iv_vi_and_claims(monkeypatch, tmp_path):
    """sdi-cifar10 (training and evaluation replaced by planted numbers): ours (Table VI) cells,
    the thesis' tables as printed, claims computed from the numbers -- a planted failure says no."""
    import experiments.sdi.cifar10 as sdi

    planted = {"FGSM-SDI": 20.0, "FGSM-RS": 30.0}      # FGSM-SDI below FGSM-RS by 10 points: "no"
    monkeypatch.setattr(sdi, "load_cifar10_split", lambda n, data, d=None: (
        (np.zeros((64, 32, 32, 3), np.uint8), np.zeros(64, np.int32)),
        (np.zeros((200, 32, 32, 3), np.uint8), np.zeros(200, np.int32))))
    monkeypatch.setattr(sdi, "train_one", lambda run_dir, name, kw, **k: _fake_sdi_result(tmp_path, name))
    labels = {"fgsm_sdi": "FGSM-SDI", "fgsm_rs": "FGSM-RS"}
    monkeypatch.setattr(sdi, "evaluate_best_and_last", lambda res, x, y, attacks, **k: (
        {"clean": 50.0, **{a: planted[labels[pathlib.Path(res.run_dir).name]] for a in attacks}},) * 2)
    import pathlib

    out_dir, res, _ = runner.run_experiment("sdi-cifar10", quick=True, out=tmp_path, seed=0)
    md = (out_dir / "results.md").read_text()
    assert "do not read these numbers as a failed reproduction" in md
    sdi_row = next(l for l in md.splitlines() if l.startswith("| FGSM-SDI | 50.00 (82.08)"))
    assert "20.00 (51.63)" in sdi_row
    assert "| FGSM-RS | Last | 83.82 | 0.09 |" in md and "Table IV (the thesis author's reimplementation)" in md
    verdicts = {c["claim"]: c["verdict"] for c in res.metrics["claims"]["cyclic"]}
    assert verdicts["FGSM-SDI's PGD-10 accuracy is above FGSM-RS's (best checkpoint)"] == "no"
    assert verdicts["FGSM-SDI's AA accuracy is above FGSM-RS's (best checkpoint)"] == "not decidable at this scale"
    assert verdicts["FGSM-RS's Last checkpoint collapses (PGD-10 below 5%)"] == "not decidable at this scale"


def test_sdi_k_and_overfitting_render_the_thesis_values(monkeypatch, tmp_path):
    import experiments.sdi.k as K
    import experiments.sdi.overfitting as O

    small = ((np.zeros((32, 28, 28, 1), np.uint8), np.zeros(32, np.int32)),
             (np.zeros((64, 28, 28, 1), np.uint8), np.zeros(64, np.int32)))
    monkeypatch.setattr(K, "load_split", lambda sc: small)
    monkeypatch.setattr(K, "train_one", lambda run_dir, name, kw, **k: _fake_sdi_result(tmp_path, f"k{kw['k']}"))
    monkeypatch.setattr(K, "train_seconds", lambda res, n, b: 10.0)
    pgd = {"k1": 40.0, "k20": 60.0}                    # k=20 more robust than k=1 by 20 points: "yes"
    import pathlib

    monkeypatch.setattr(K, "evaluate_best_and_last", lambda res, x, y, attacks, **k: (
        {"clean": 90.0, **{a: pgd[pathlib.Path(res.run_dir).name] for a in attacks}},) * 2)
    out_dir, res, _ = runner.run_experiment("sdi-k", quick=True, out=tmp_path, seed=0)
    md = (out_dir / "results.md").read_text()
    assert "| 20 | 90.00 (84.86) | 60.00 (53.73) |" in md and "compare directions, not values" in md
    assert "| k=20 is more robust than k=1 (pgd10, best checkpoint) | Table II / Sec. 3.4.2 | 53.73 vs 52.95 | +20.00" in md

    def hist(test):
        return [{"epoch": e, "test_pgd_acc": t, "train_pgd_acc": t, "train_acc": 0.9 if t < 0.05 else t,
                 "test_clean_acc": 0.9} for e, t in enumerate(test, 1)]

    hists = {"fgsm_rs": hist([0.2, 0.01, 0.0]), "fgsm_sdi": hist([0.2, 0.3, 0.35])}
    monkeypatch.setattr(O, "load_split", lambda sc: small)
    monkeypatch.setattr(O, "plot", lambda h, path, eps: None)
    from types import SimpleNamespace

    monkeypatch.setattr(O, "train_one", lambda run_dir, name, kw, **k: SimpleNamespace(history=hists[name]))
    out_dir, res, _ = runner.run_experiment("sdi-overfitting", quick=True, out=tmp_path, seed=0)
    md = (out_dir / "results.md").read_text()
    assert "| FGSM-SDI | 35.00 (64.14) | 35.00 (52.81) |" in md
    assert "| FGSM-RS overfits catastrophically: its PGD-10 accuracy drops to ~0 and stays there | Fig. 26 / Sec. 3.4.3 | after about epoch 70 of 110 |" in md
    assert [c for c in md.splitlines() if c.startswith("| FGSM-SDI does not overfit")][0].endswith("**yes** |")


def test_robust_eval_steps_scale_with_eps(monkeypatch):
    """sdi-* evaluation: PGD / CW take steps of eps/4 (2/255 at 8/255; 0.075 at MNIST's 0.3), so
    the attack can cross the ball at every radius, and a stronger radius lowers the accuracy."""
    import types

    import flax.linen as nn
    import jax
    import numpy as np

    from advjax import attacks
    from experiments.sdi.cifar10 import robust_eval

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

    import experiments.sdi.cifar10 as sdi

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

    from experiments.sdi.cifar10 import train_seconds

    # 1000 images at batch 128: 7 full batches = 896 images per epoch
    result = SimpleNamespace(history=[{"images_per_s": 100.0}, {"images_per_s": 50.0}])
    assert train_seconds(result, 1000, 128) == pytest.approx(896 / 100 + 896 / 50)


def test_evaluations_are_cached_per_attack_and_keyed_by_the_parameters(monkeypatch, tmp_path):
    """A re-run of an sdi experiment repeats no finished evaluation (an interrupted one resumes
    per attack); a different state, attack list or setting is evaluated afresh."""
    from types import SimpleNamespace

    import experiments.sdi.cifar10 as sdi

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


def test_lsa_mnist_paper_scale_says_where_it_looked_for_the_training_split(monkeypatch, tmp_path):
    import advjax.data

    from experiments.lsa import mnist

    def missing(name, split, data_dir=None, **kw):
        raise FileNotFoundError(f"mnist split {split!r} not found; searched: /nowhere/mnist [data_dir]")

    monkeypatch.setattr(advjax.data, "load", missing)
    with pytest.raises(FileNotFoundError, match=r"(?s)split 'train'.*searched: /nowhere/mnist"):
        mnist.run("paper", quick=True, out_dir=tmp_path)
    assert mnist.PAPER.train_split == "train" and mnist.PAPER.test_split == "test" and mnist.PAPER.n_eval == 10000


def test_cached_keeps_entries_another_writer_added_while_it_computed(tmp_path):
    """Two experiments sharing one --out (the SAT family's) write cache.json while the other is
    computing: an entry written in the meantime survives, and a hit does not recompute."""
    from experiments.base import cached

    def slow_a():
        # "another process" finishes and writes its entry while this one computes
        assert cached(tmp_path, "b", {"k": 1}, lambda: 2.0) == 2.0
        return 1.0

    assert cached(tmp_path, "a", {"k": 1}, slow_a) == 1.0
    store = json.loads((tmp_path / "cache.json").read_text())
    assert sorted(store) == ["__seconds__", 'a {"k": 1}', 'b {"k": 1}']
    assert sorted(store["__seconds__"]) == ['a {"k": 1}', 'b {"k": 1}']  # each entry's compute time is kept
    assert store["__seconds__"]['a {"k": 1}'] >= store["__seconds__"]['b {"k": 1}']  # a's time includes b's
    assert cached(tmp_path, "b", {"k": 1}, lambda: pytest.fail("recomputed a cached entry")) == 2.0
