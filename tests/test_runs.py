"""Runs that never surprise (issue 19): relative run directories from any working directory, no
silent substitution of checkpoints / schedules / attacks, AutoAttack's per-sub-attack report,
training in memory, the persistent compilation cache, and ``--no-progress`` keeping the log.

One tiny CLI run (Model A on 256 Moon points, 2 epochs) is shared by the tests that need a run
directory; tests that damage it work on a copy."""
from __future__ import annotations

import contextlib
import io
import json
import os
import pathlib
import shutil
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from advjax import attacks, cli
from advjax.eval import robust_accuracy
from advjax.train import checkpoint as ckpt
from advjax.train.command import config_from_args, configure_parser
from advjax.train.config import TrainConfig
from advjax.train.loop import fit
from advjax.train.optim import OptimizerConfig

TRAIN_FLAGS = ["--model", "model_a", "--model-arg", "hidden=[16, 16]", "--dataset", "moons",
               "--train-split", "train[:256]", "--test-split", "test[:64]", "--method", "standard",
               "--eps", "0.1", "--epochs", "1", "--batch-size", "64", "--optimizer", "adam", "--lr", "0.01",
               "--eval-size", "32", "--eval-steps", "1", "--devices", "1"]


def _cli(argv, cwd):
    """``advjax ARGV`` in-process from ``cwd``: (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    old = os.getcwd()
    os.chdir(cwd)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            rc = cli.main([*argv, "--no-compile-cache"])
    finally:
        os.chdir(old)
    return rc, out.getvalue(), err.getvalue()


def _corrupt(step_dir: pathlib.Path) -> None:
    f = max((p for p in (step_dir / "state").rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
    f.write_bytes(b"garbage")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """``advjax train`` with a relative --run-dir and --no-progress, from its own directory."""
    root = tmp_path_factory.mktemp("runs")
    (root / "a").mkdir()
    rc, out, err = _cli(["train", *TRAIN_FLAGS, "--run-dir", "runs/x", "--no-progress"], root / "a")
    assert rc == 0, err[-3000:]
    return root, root / "a" / "runs" / "x", out, err


# ---- 1. relative run directories ------------------------------------------------------------------
def test_relative_run_dir_trains_resumes_and_evaluates_from_another_cwd(run, tmp_path):
    root, run_dir, out, err = run
    assert json.loads(out.strip().splitlines()[-1])["run_dir"] == str(run_dir)
    for kind in ("best", "last"):
        d = run_dir / "checkpoints" / kind
        assert ckpt.list_checkpoints(d) and not [p for p in d.iterdir() if p.name.startswith(".tmp_")]
    metrics = (run_dir / "metrics.jsonl").read_text()
    assert len(metrics.splitlines()) == 1
    work = shutil.copytree(root / "a", tmp_path / "a")  # keep the shared run pristine
    (tmp_path / "b").mkdir()
    # resuming through a relative path from another directory: the checkpoint is valid, not "corrupt"
    rc, out2, err2 = _cli(["train", *TRAIN_FLAGS, "--run-dir", "../a/runs/x", "--no-progress"], tmp_path / "b")
    assert rc == 0, err2[-3000:]
    assert "resuming from" in err2 and "corrupt" not in err2
    assert (work / "runs" / "x" / "metrics.jsonl").read_text() == metrics  # nothing retrained or wiped
    # eval through a relative path from that other directory
    rc, out3, err3 = _cli(["eval", "--checkpoint", "../a/runs/x", "--attacks", "fgsm", "--eps", "0,0.1",
                           "--no-progress", "--no-checks"], tmp_path / "b")
    assert rc == 0, err3[-3000:]
    d = json.loads((work / "runs" / "x" / "eval.json").read_text())
    assert d["meta"]["evaluated_checkpoint"]["kind"] == "best" and "substituted" not in d["meta"]
    assert d["meta"]["evaluated_checkpoint"]["path"].startswith(str(work / "runs" / "x" / "checkpoints" / "best"))


def test_failed_save_leaves_no_tmp_dir(tmp_path, monkeypatch):
    import orbax.checkpoint as ocp

    def boom(self, *a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(ocp.PyTreeCheckpointer, "save", boom)
    with pytest.raises(OSError, match="disk full"):
        ckpt.save_checkpoint(tmp_path / "c", {"w": np.ones(3)}, {"step": 1})
    assert list((tmp_path / "c").iterdir()) == []


# ---- 2. no silent substitutions -------------------------------------------------------------------
def test_eval_says_and_records_which_checkpoint_it_used(run, tmp_path):
    root, run_dir, _, _ = run
    work = pathlib.Path(shutil.copytree(run_dir, tmp_path / "x"))
    (best,) = ckpt.list_checkpoints(work / "checkpoints" / "best")
    _corrupt(best)
    with pytest.warns(ckpt.CheckpointCorruptionWarning):
        rc, out, err = _cli(["eval", "--checkpoint", "x", "--attacks", "fgsm", "--eps", "0.1", "--no-progress",
                             "--no-checks"], tmp_path)
    assert rc == 0, err[-3000:]
    newest_last = ckpt.list_checkpoints(work / "checkpoints" / "last")[0]
    assert "note:" in out and "best/ corrupt" in out and newest_last.name in out
    assert "note:" in (work / "eval.md").read_text()
    meta = json.loads((work / "eval.json").read_text())["meta"]
    assert meta["evaluated_checkpoint"] == {"path": str(newest_last), "kind": "last",
                                            "step": int(newest_last.name[5:])}
    assert "best/ corrupt" in meta["substituted"]


def test_corrupt_last_resumes_from_best_else_stops_without_wiping(run, tmp_path, capsys):
    _, run_dir, _, _ = run
    work = pathlib.Path(shutil.copytree(run_dir, tmp_path / "x"))
    metrics = (work / "metrics.jsonl").read_text()
    cfg = TrainConfig.from_file(work / "config.json").replace(run_dir=str(work))
    for p in ckpt.list_checkpoints(work / "checkpoints" / "last"):
        _corrupt(p)
    with pytest.warns(ckpt.CheckpointCorruptionWarning):
        res = fit(cfg, progress=False)
    err = capsys.readouterr().err
    assert "resuming from the best checkpoint" in err and "are corrupt" in err
    # resumed from best's epoch (retraining any later epoch exactly): the run's records and weights
    strip = lambda line: {k: v for k, v in json.loads(line).items() if k != "images_per_s"}  # noqa: E731
    assert [strip(l) for l in (work / "metrics.jsonl").read_text().splitlines()] == \
        [strip(l) for l in metrics.splitlines()] and [h["epoch"] for h in res.history] == [1]
    _, variables, _ = ckpt.load_for_eval(run_dir, which="last")
    for a, b in zip(jax.tree.leaves(variables["params"]), jax.tree.leaves(jax.device_get(res.state.params))):
        assert np.array_equal(a, b)
    # now every checkpoint is corrupt: an error that says what to do, and the run directory untouched
    for kind in ("last", "best"):
        for p in ckpt.list_checkpoints(work / "checkpoints" / kind):
            _corrupt(p)
    before = (work / "metrics.jsonl").read_text()
    with pytest.warns(ckpt.CheckpointCorruptionWarning), \
            pytest.raises(ckpt.CheckpointError, match="every checkpoint is corrupt.*move or delete"):
        fit(cfg, progress=False)
    assert (work / "metrics.jsonl").read_text() == before


def test_eval_eps_range_and_too_few_classes_rejected_before_any_attack(monkeypatch):
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(16, 4, 4, 1)).astype(np.float32)  # images in [0, 1]
    w2 = jnp.asarray(rng.normal(size=(16, 2)), jnp.float32)
    f = lambda v, z: z.reshape(z.shape[0], -1) @ v  # noqa: E731
    y = np.asarray(jnp.argmax(f(w2, x), -1))
    calls = []
    monkeypatch.setattr(attacks.FGSM, "__call__", lambda self, *a, **k: calls.append(1) or a[2])
    with pytest.raises(ValueError, match=r"eps=8 is out of range.*8/255"):
        robust_accuracy(f, w2, (x, y), ["fgsm"], [0.0, 8.0], progress=False)
    with pytest.raises(ValueError, match=r"'aa' cannot run on this model, which has 2 classes.*apgd-t.*at least 4"
                                         r".*apgd-ce,fab-t,square"):
        robust_accuracy(f, w2, (x, y), ["fgsm", "aa"], [0.1], progress=False)
    with pytest.raises(ValueError, match=r"'apgd-dlr' cannot run on this model, which has 2 classes: its DLR loss"
                                         r".*at least 3"):
        robust_accuracy(f, w2, (x, y), ["fgsm", "apgd-dlr"], [0.1], progress=False)
    assert calls == []  # rejected before fgsm, listed first, ran
    # an L2 radius above 1 is a real threat model on images; FAB-T runs on 2 classes
    # an L2 radius above 1 is a real threat model on images
    res = robust_accuracy(f, w2, (x, y), {"l2": attacks.get_attack("pgd-l2", steps=1)}, [1.5], progress=False,
                          checks=False)
    assert res.table["l2"][1.5] <= res.clean_accuracy and calls == []


def test_piecewise_schedule_needs_milestones():
    with pytest.raises(ValueError, match="piecewise.*needs milestones"):
        TrainConfig(optimizer=OptimizerConfig(schedule="piecewise")).validate()
    TrainConfig(optimizer=OptimizerConfig(schedule="piecewise", milestones=(2,))).validate()
    p = configure_parser(__import__("argparse").ArgumentParser())
    with pytest.raises(ValueError, match="needs milestones"):
        config_from_args(p.parse_args(["--schedule", "piecewise"])).validate()
    with pytest.raises(ValueError, match="only used by the piecewise schedule"):
        config_from_args(p.parse_args(["--schedule", "cyclic", "--milestones", "3"]))


# ---- 4. AutoAttack's report -----------------------------------------------------------------------
def test_autoattack_report_per_sub_attack_with_times():
    rng = np.random.default_rng(1)
    w = jnp.asarray(rng.normal(size=(10, 4)), jnp.float32)
    x = rng.uniform(size=(24, 10)).astype(np.float32)
    f = lambda v, z: z @ v  # noqa: E731
    y = np.asarray(jnp.argmax(f(w, x), -1))
    # the report is the driver's, whatever the sub-attacks: cheap ones here (standard: tests/test_attacks.py)
    aa = attacks.AutoAttack(version="custom", attacks=("fgsm", "bim2"))  # deterministic: shapes reused below
    out = aa.replace(eps=0.05).drive(f, w, x, y, jax.random.PRNGKey(0), with_times=True)
    x_adv, clean, flags, secs = out
    assert list(secs) == list(flags) == ["fgsm", "bim2"]
    assert all(a.is_ready() for a in jax.tree.leaves((x_adv, clean, flags)))  # nothing left in flight
    res = robust_accuracy(f, w, (x, y), {"aa": aa}, [0.05], progress=False, checks=False)
    per, t = res.autoattack["aa"][0.05], res.autoattack_seconds["aa"][0.05]
    assert list(t) == list(per) and all(v >= 0 for v in t.values()) and sum(t.values()) > 0
    d = res.to_dict()
    assert d["autoattack_seconds"]["aa"]["0.05"] == t and d["clean_accuracy"] == res.clean_accuracy
    md = res.to_markdown()
    assert "| R&G (sum over eps) |" in md and "not a percentage" in md
    section = md.split("aa at eps=0.05: robust accuracy after each sub-attack")[1]
    assert f"| clean | {100 * res.clean_accuracy:.2f} |" in section
    for name, acc in per.items():
        assert f"| {name} | {100 * acc:.2f} | {t[name]:.1f} |" in section


# ---- 5. training in memory ------------------------------------------------------------------------
def test_fit_in_memory_writes_nothing_and_matches_the_run_on_disk(run, tmp_path, monkeypatch, capsys):
    _, run_dir, _, _ = run
    cfg = TrainConfig.from_file(run_dir / "config.json")
    monkeypatch.chdir(tmp_path)
    res = fit(cfg, run_dir=None, monitor=False, progress=False)
    assert res.run_dir is None and res.best is None and list(tmp_path.iterdir()) == []
    assert [h["epoch"] for h in res.history] == [1] and "test_pgd_acc" not in res.history[0]
    # the same steps as the run on disk (whose monitor never touches the state): the same weights
    ondisk = [json.loads(l) for l in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [h["train_loss"] for h in res.history] == [h["train_loss"] for h in ondisk]
    _, variables, _ = ckpt.load_for_eval(run_dir, which="last")
    for a, b in zip(jax.tree.leaves(variables["params"]), jax.tree.leaves(jax.device_get(res.state.params))):
        assert np.array_equal(a, b)
    assert "epoch 1/1: loss" in capsys.readouterr().out  # the log line, without a progress bar


# ---- 7. --no-progress keeps the per-epoch lines ---------------------------------------------------
def test_no_progress_keeps_the_epoch_log(run):
    _, _, out, err = run
    lines = [l for l in out.splitlines() if l.startswith("epoch ")]
    assert [l.split(":")[0] for l in lines] == ["epoch 1/1"] and "test clean" in lines[0]
    assert "img/s]" not in err and "it/s]" not in err  # no live bar


# ---- 6. the persistent compilation cache ----------------------------------------------------------
TINY_CACHE_SCRIPT = textwrap.dedent('''
    import json
    import jax, jax.numpy as jnp
    from jax import monitoring
    from advjax.cli import enable_compilation_cache
    events = []
    monitoring.register_event_listener(lambda name, **kw: events.append(name))
    where = enable_compilation_cache(min_compile_time_secs=0)
    f = jax.jit(lambda a: jnp.tanh(a @ a.T).sum(0))
    out = f(jnp.linspace(0.0, 1.0, 64 * 32).reshape(64, 32))
    print(json.dumps({"dir": where, "out": out.tolist(), "hits": sum("cache_hits" in e for e in events),
                      "misses": sum("cache_misses" in e for e in events)}))
''')

CACHE_SCRIPT = textwrap.dedent('''
    import json, sys
    import jax, numpy as np
    from jax import monitoring
    from advjax.cli import enable_compilation_cache
    events = []
    monitoring.register_event_listener(lambda name, **kw: events.append(name))
    where = enable_compilation_cache(min_compile_time_secs=0)
    from advjax import models
    from advjax.attacks import get_attack
    from advjax.native import onednn
    model = models.get_model("model_b")
    v = models.init_variables(model, jax.random.PRNGKey(0))
    f = models.logits_fn(model)
    x = np.asarray(jax.random.uniform(jax.random.PRNGKey(1), (4, 28, 28, 1)))
    y = np.arange(4, dtype=np.int32)
    x_adv = get_attack("pgd2", eps=0.1)(f, v, x, y, jax.random.PRNGKey(2))
    ffi = "custom_call" in jax.jit(f).lower(v, x).as_text()  # the oneDNN convolutions are in the program
    print(json.dumps({"dir": where, "onednn": onednn.status()[0] and ffi, "sum": float(np.asarray(x_adv, np.float64).sum()),
                      "logits": np.asarray(f(v, x_adv)).tolist(),
                      "hits": sum("cache_hits" in e for e in events),
                      "misses": sum("cache_misses" in e for e in events)}))
''')


def _run_twice(script_text, tmp_path):
    script = tmp_path / "cached.py"
    script.write_text(script_text)
    env = {k: v for k, v in os.environ.items() if k != "JAX_COMPILATION_CACHE_DIR"}
    env["XLA_FLAGS"] = " ".join(f for f in env.get("XLA_FLAGS", "").split() if "device_count" not in f)
    env["ADVJAX_COMPILATION_CACHE"] = str(tmp_path / "cache")

    def once():
        r = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=240)
        assert r.returncode == 0, r.stderr[-3000:]
        return json.loads(r.stdout.strip().splitlines()[-1])

    first, second = once(), once()
    assert first["dir"] == str(tmp_path / "cache") and any((tmp_path / "cache").iterdir())
    assert first["misses"] > 0 and second["hits"] >= first["misses"] and second["misses"] == 0
    return first, second


def test_compile_cache_is_written_then_reused(tmp_path):
    first, second = _run_twice(TINY_CACHE_SCRIPT, tmp_path)
    assert second["out"] == first["out"]


@pytest.mark.slow
def test_compile_cache_with_onednn_convolutions_gives_the_same_numbers(tmp_path):
    """Model B's oneDNN FFI convolutions (forward and input gradient) survive the persistent cache."""
    first, second = _run_twice(CACHE_SCRIPT, tmp_path)
    if not first["onednn"]:
        pytest.skip("the [onednn] extra is not available here")
    assert second["onednn"]
    assert second["sum"] == first["sum"] and second["logits"] == first["logits"]  # bit for bit


def test_compile_cache_off_switches():
    # the env var (what the test suite runs with), and the CLI flag
    assert os.environ["ADVJAX_COMPILATION_CACHE"] == "0" and cli.enable_compilation_cache() is None
    parser, _ = cli._command_parser("eval")
    assert parser.parse_args(["--checkpoint", "r", "--no-compile-cache"]).no_compile_cache


def test_compilation_cache_dir_follows_xdg(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert cli.compilation_cache_dir() == tmp_path / "advjax" / "jax"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert cli.compilation_cache_dir() == pathlib.Path.home() / ".cache" / "advjax" / "jax"
