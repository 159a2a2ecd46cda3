"""Checkpoints: exact round trip, corruption detection with fallback, configuration mismatch, and
exact resume of a SIGKILLed training run (subprocess) against an uninterrupted one."""
from __future__ import annotations

import json
import os
import pathlib
import signal
import subprocess
import sys
import textwrap
import time
import warnings

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from advjax.methods.awp import AWP
from advjax.train.checkpoint import (CheckpointCorruptionWarning, list_checkpoints, load_for_eval,
                                     restore_checkpoint, save_checkpoint)
from advjax.train.state import create_train_state
from advjax.models import get_model


def _state(seed=0, hidden=(8,)):
    model = get_model("model_a", input_shape=(4,), hidden=hidden, num_classes=3)
    st = create_train_state(model, optax.adam(1e-2), jax.random.PRNGKey(seed))
    st = AWP().init_state(st, (np.zeros((2, 4), np.float32), np.zeros(2, np.int32)))  # extra optax state
    return st.replace(step=jnp.asarray(7, jnp.int32), extra={**st.extra, "carried": jnp.arange(6.0).reshape(2, 3)})


def test_round_trip_is_exact(tmp_path):
    st = _state()
    save_checkpoint(tmp_path, st, {"epoch": 3, "batch": 5})
    restored, meta, path = restore_checkpoint(tmp_path, _state(seed=1))
    assert meta == {"epoch": 3, "batch": 5} and path.name == "step_000000007"
    fields = lambda s: (s.step, s.params, s.batch_stats, s.opt_state, s.key, s.extra)
    chex.assert_trees_all_equal(jax.device_get(fields(restored)), jax.device_get(fields(st)))
    assert restored.model == st.model and restored.tx is not None


def _bigger_file(ckpt_dir: pathlib.Path) -> pathlib.Path:
    files = [p for p in (ckpt_dir / "state").rglob("*") if p.is_file()]
    return max(files, key=lambda p: p.stat().st_size)


@pytest.mark.parametrize("damage", ["truncate", "flip", "manifest", "no_manifest"])
def test_corrupt_checkpoint_falls_back_to_previous(tmp_path, damage):
    st = _state()
    save_checkpoint(tmp_path, st, {"n": 1}, keep=3)
    st2 = st.replace(step=st.step + 1, params=jax.tree.map(lambda a: a + 1, st.params))
    newest = save_checkpoint(tmp_path, st2, {"n": 2}, keep=3)
    if damage == "truncate":
        f = _bigger_file(newest)
        f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    elif damage == "flip":
        f = _bigger_file(newest)
        b = bytearray(f.read_bytes())
        b[len(b) // 2] ^= 0xFF
        f.write_bytes(bytes(b))
    elif damage == "manifest":
        (newest / "manifest.json").write_text('{"format": "advjax-checkpoint-v1", "step"')
    else:
        (newest / "manifest.json").unlink()
    with pytest.warns(CheckpointCorruptionWarning, match="step_000000008.*falling back"):
        restored, meta, path = restore_checkpoint(tmp_path, st)
    assert meta == {"n": 1} and path.name == "step_000000007"
    chex.assert_trees_all_equal(jax.device_get(restored.params), jax.device_get(st.params))


def test_all_corrupt_gives_none_and_keep_limits(tmp_path):
    st = _state()
    for i in range(3):
        save_checkpoint(tmp_path, st.replace(step=jnp.asarray(i, jnp.int32)), {}, keep=2)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_000000002", "step_000000001"]
    for p in list_checkpoints(tmp_path):
        f = _bigger_file(p)
        f.write_bytes(b"")
    with pytest.warns(CheckpointCorruptionWarning):
        assert restore_checkpoint(tmp_path, st) is None


def test_checkpoint_of_another_configuration_is_an_error(tmp_path):
    save_checkpoint(tmp_path, _state(), {})
    with pytest.raises(ValueError, match="different configuration|does not match this configuration"):
        restore_checkpoint(tmp_path, _state(hidden=(16,)))


# ---- exact resume after SIGKILL -------------------------------------------------------------------
SCRIPT = textwrap.dedent('''
    import sys, time, json
    import numpy as np, jax
    import advjax.train.checkpoint as ck
    import advjax.train.loop as loop
    from advjax.train.config import TrainConfig, OptimizerConfig
    run_dir, slow = sys.argv[1], sys.argv[2] == "slow"
    if slow:  # widen the window in which the parent kills us (test harness only)
        _save = ck.save_checkpoint
        def save(*a, **k):
            out = _save(*a, **k)
            time.sleep(0.4)
            return out
        ck.save_checkpoint = save
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(192, 6)).astype(np.float32)
    y = (x[:, 0] + x[:, 1] > x[:, 2] + 0.5).astype(np.int32)
    cfg = TrainConfig(model="model_a", model_kwargs={"hidden": [16], "activation": "relu"}, dataset="features",
                      method="pgd_at", eps=0.1, method_kwargs={"alpha": 0.05, "steps": 2}, epochs=3, batch_size=32,
                      optimizer=OptimizerConfig(name="momentum", lr=0.2, schedule="cyclic"), eval_size=32,
                      eval_steps=2, ckpt_every=2, devices=1, run_dir=run_dir)
    res = loop.fit(cfg, train_data=(x, y), test_data=(x[:64], y[:64]), progress=False)
    leaves = [np.asarray(a) for a in jax.tree.leaves(jax.device_get(res.state.params))]
    np.savez(run_dir + "/final.npz", *leaves)
    print("DONE", json.dumps(res.history[-1]))
''')


def _env():
    env = dict(os.environ)
    env["XLA_FLAGS"] = " ".join(f for f in env.get("XLA_FLAGS", "").split() if "device_count" not in f)
    return env


def test_sigkilled_run_resumes_bit_exactly(tmp_path):
    script = tmp_path / "run.py"
    script.write_text(SCRIPT)
    killed, clean = tmp_path / "killed", tmp_path / "clean"
    ref = subprocess.Popen([sys.executable, str(script), str(clean), "fast"], env=_env(),
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    victim = subprocess.Popen([sys.executable, str(script), str(killed), "slow"], env=_env(),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    last = killed / "checkpoints" / "last"
    deadline = time.time() + 300
    while time.time() < deadline and victim.poll() is None:
        done = list_checkpoints(last)
        if done and int(done[0].name[5:]) >= 8:  # mid-epoch 2 (6 steps per epoch)
            break
        time.sleep(0.05)
    assert victim.poll() is None, "the run finished before it could be killed: " + victim.stderr.read()[-2000:]
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert not (killed / "final.npz").exists()
    killed_at = int(list_checkpoints(last)[0].name[5:])
    assert 8 <= killed_at < 18
    resumed = subprocess.run([sys.executable, str(script), str(killed), "fast"], env=_env(), capture_output=True,
                             text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming from" in resumed.stderr
    out, err = ref.communicate(timeout=600)
    assert ref.returncode == 0, err[-3000:]
    a, b = np.load(killed / "final.npz"), np.load(clean / "final.npz")
    assert len(a.files) == len(b.files) > 0
    for k in a.files:
        assert np.array_equal(a[k], b[k]), k  # bit for bit
    # the metrics file holds each epoch exactly once, identical to the uninterrupted run's
    ma = [json.loads(l) for l in (killed / "metrics.jsonl").read_text().splitlines()]
    mb = [json.loads(l) for l in (clean / "metrics.jsonl").read_text().splitlines()]
    strip = lambda r: {k: v for k, v in r.items() if k != "images_per_s"}
    assert [strip(r) for r in ma] == [strip(r) for r in mb] and [r["epoch"] for r in ma] == [1, 2, 3]
    assert (killed / "curves.png").stat().st_size > 1000
    # load_for_eval: the model and the final ("last") variables of the run
    model, variables, cfg = load_for_eval(killed, which="last")
    assert cfg.method == "pgd_at" and cfg.num_classes == 2
    for got, want in zip(jax.tree.leaves(variables["params"]), [a[k] for k in a.files]):
        assert np.array_equal(got, want)
    logits = model.apply(variables, np.zeros((3, 6), np.float32))
    assert logits.shape == (3, 2)
    _, best_vars, _ = load_for_eval(killed / "checkpoints" / "best")
    assert "params" in best_vars
