"""Several JAX processes as one run, tested as processes on 127.0.0.1 (2 processes x 2 simulated
CPU devices = one 4-device mesh, gloo collectives):

- standard training ends with the parameters of 1 process x 4 devices and of 1 process x 1 device
  (float tolerance), and both processes hold identical parameters; PGD-AT (with augmentation)
  and FGSM-SDI (generator and its optimizer in the state) the same (slow);
- each process feeds only its rows of every global batch, which concatenate to the 1-process batch;
- a 2-process ``robust_accuracy`` (AutoAttack's eager driver on sharded batches) gives the
  1-process table;
- processes launched with different configurations fail fast, with process 0 naming the key;
- ``advjax train --distributed`` (slow): one process killed mid-run, both relaunched, the resumed
  run (per-epoch monitor included) ends bit-identical to an uninterrupted 2-process run.

Cost: every launch pays two Python + JAX start-ups and compiles its programs on a 2-core machine,
so the default run holds one training launch (standard training, then the evaluation) and the
fail-fast launch; PGD-AT, FGSM-SDI and the kill/resume test (three launches) are ``slow``.

This file is also the worker: ``python tests/test_distributed.py '<json spec>'``. Every launch is
bounded by a timeout (the processes are killed and the test fails with their logs).
"""
from __future__ import annotations

import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time

import flax.linen as nn
import numpy as np
import pytest

HERE = pathlib.Path(__file__).resolve()

# ---- what the workers and the in-process references share ------------------------------------


class TinyCNN(nn.Module):
    """Conv + batch norm (statistics over the global batch) + Dense: 4 classes on 8x8x1 images."""
    num_classes: int = 4
    input_shape: tuple = (8, 8, 1)

    @nn.compact
    def __call__(self, x, train: bool = False):
        h = nn.Conv(4, (3, 3))(x)
        h = nn.BatchNorm(use_running_average=not train, momentum=0.9)(h)
        h = nn.relu(h).reshape(x.shape[0], -1)
        return nn.Dense(self.num_classes)(h)


def synthetic(n: int, seed: int):
    """Images in [0, 1] whose class (0..3) is the brightest quadrant."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 4, n).astype(np.int32)
    x = rng.uniform(0, 0.5, (n, 8, 8, 1)).astype(np.float32)
    for i, c in enumerate(y):
        r, q = divmod(int(c), 2)
        x[i, 4 * r:4 * r + 4, 4 * q:4 * q + 4] += 0.5
    return x, y


TRAIN, TEST = synthetic(64, 0), synthetic(32, 1)
METHODS = {"standard": {}, "pgd_at": dict(eps=0.1, alpha=0.05, steps=2),
           "fgsm_sdi": dict(eps=0.1, k=1, generator_features=4)}


def _config(name: str, devices=None):
    from advjax.train.config import TrainConfig
    from advjax.train.optim import OptimizerConfig

    return TrainConfig(model="tiny_cnn", dataset="synthetic", method=name, method_kwargs=dict(METHODS[name]),
                       epochs=8 if name == "standard" else 1, batch_size=32, augment=name == "pgd_at", eval_size=32,
                       eval_steps=1, eval_eps=0.1,
                       eval_batch_size=16, optimizer=OptimizerConfig(name="momentum", lr=0.05), devices=devices,
                       run_dir=None, seed=3)


_REFS: dict = {}


def _reference(name: str, devices: int):
    """A one-process fit (cached: several tests compare with it)."""
    if (name, devices) not in _REFS:
        _REFS[name, devices] = _fit(name, devices)
    return _REFS[name, devices]


def _fit(name: str, devices=None):
    from advjax.train.loop import fit

    return fit(_config(name, devices), train_data=TRAIN, test_data=TEST, model=TinyCNN(), run_dir=None,
               monitor=False, progress=False, log=False)


def _flat(tree) -> dict:
    import jax
    from advjax.train.distributed import to_host

    flat, _ = jax.tree_util.tree_flatten_with_path(tree)
    return {jax.tree_util.keystr(p): np.asarray(to_host(v)) for p, v in flat}


EVAL_EPS = [0.3]


def _eval_attacks():
    from advjax.attacks import get_attack

    return {"aa": get_attack("aa", version="custom", attacks=("apgd-ce",), steps=2)}


def _evaluate(variables, mesh=None):
    from advjax.eval import robust_accuracy

    return robust_accuracy(TinyCNN(), variables, TEST, _eval_attacks(), EVAL_EPS, batch_size=16, key=7,
                           progress=False, checks=False, mesh=mesh)


def _table(res) -> dict:
    return {"table": {a: {str(e): v for e, v in row.items()} for a, row in res.table.items()},
            "autoattack": {a: {str(e): d for e, d in per.items()} for a, per in res.autoattack.items()},
            "clean": res.clean_accuracy, "robust": {a: {str(e): v.astype(int).tolist() for e, v in row.items()}
                                                    for a, row in res.robust.items()}}


RESUME_EPOCHS, RESUME_SPE = 3, 4
RESUME_ARGS = ["--model", "model_a", "--model-arg", "hidden=[16,16]", "--dataset", "moons",
               "--train-split", f"train[:{32 * RESUME_SPE}]", "--test-split", "test[:32]", "--method", "pgd_at",
               "--eps", "0.1", "--method-arg", "steps=2", "--epochs", str(RESUME_EPOCHS), "--batch-size", "32",
               "--eval-size", "16", "--eval-steps", "1", "--ckpt-every", "2", "--optimizer", "adam", "--lr", "0.01",
               "--no-progress"]
RESUME_FINAL_STEP = RESUME_EPOCHS * RESUME_SPE


# ---- the worker --------------------------------------------------------------------------------


def _worker(spec: dict) -> None:
    from advjax.train import distributed as dist

    dist.initialize(spec["coordinator"], spec["num_processes"], spec["process_id"])
    import jax

    out = pathlib.Path(spec["out"])
    pid = jax.process_index()
    assert jax.device_count() == 4 and jax.local_device_count() == 2, (jax.device_count(), jax.local_device_count())
    from advjax.data.iterate import batches
    from advjax.train.mesh import make_mesh

    mesh = make_mesh()
    rows = dist.local_rows(mesh, 32)
    share = next(batches(TRAIN, 32, seed=3, process_index=pid, process_count=2))[1]
    results = {"rows": [rows.start, rows.stop], "share": share.tolist()}
    for name in spec["methods"]:
        res = _fit(name)
        np.savez(out / f"{name}_p{pid}.npz", **_flat({"params": res.state.params, "batch_stats": res.state.batch_stats,
                                                     "extra": res.state.extra}))
        results[f"{name}_history"] = [{k: v for k, v in h.items() if k != "images_per_s"} for h in res.history]
        if name == "standard" and spec.get("eval"):
            results["eval"] = _table(_evaluate(res.state.variables()))
    (out / f"results_p{pid}.json").write_text(json.dumps(results))


# ---- launching -----------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(devices: int = 2) -> dict:
    env = dict(os.environ)
    flags = [f for f in env.get("XLA_FLAGS", "").split() if "xla_force_host_platform_device_count" not in f]
    env["XLA_FLAGS"] = " ".join(flags + [f"--xla_force_host_platform_device_count={devices}"])
    env.update(JAX_PLATFORMS="cpu", ADVJAX_COMPILATION_CACHE="0", PYTHONUNBUFFERED="1")
    for k in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID"):
        env.pop(k, None)
    return env


def _start(argvs, logdir: pathlib.Path, tag: str):
    procs = []
    for i, argv in enumerate(argvs):
        out = open(logdir / f"{tag}_p{i}.out", "w")
        err = open(logdir / f"{tag}_p{i}.err", "w")
        procs.append((subprocess.Popen(argv, stdout=out, stderr=err, env=_env(), cwd=HERE.parent),
                      logdir / f"{tag}_p{i}"))
    return procs


def _log(path) -> str:
    return pathlib.Path(f"{path}.err").read_text() + pathlib.Path(f"{path}.out").read_text()


def _kill(procs) -> None:
    for p, _ in procs:
        if p.poll() is None:
            p.kill()
    for p, _ in procs:
        p.wait()


def _wait(procs, timeout: float) -> list[int]:
    """Return codes; on timeout kill every process and fail with their logs (never hangs)."""
    deadline = time.monotonic() + timeout
    while any(p.poll() is None for p, _ in procs):
        if time.monotonic() > deadline:
            _kill(procs)
            logs = "\n".join(f"--- {path.name}\n{_log(path)[-3000:]}" for _, path in procs)
            pytest.fail(f"processes did not finish within {timeout} s:\n{logs}")
        time.sleep(0.05)
    return [p.returncode for p, _ in procs]


def _cli(port: int, extra_per_process) -> list[list[str]]:
    return [[sys.executable, "-m", "advjax", "train", *RESUME_ARGS, *extra, "--coordinator-address",
             f"127.0.0.1:{port}", "--num-processes", "2", "--process-id", str(i)]
            for i, extra in enumerate(extra_per_process)]


def _launch_workers(out: pathlib.Path, timeout: float, **spec) -> pathlib.Path:
    port = _free_port()
    argvs = [[sys.executable, str(HERE), json.dumps({"coordinator": f"127.0.0.1:{port}", "num_processes": 2,
                                                     "process_id": i, "out": str(out), **spec})] for i in range(2)]
    procs = _start(argvs, out, "launch")
    rcs = _wait(procs, timeout=timeout)
    if rcs != [0, 0]:
        pytest.fail(f"workers exited with {rcs}:\n" + "\n".join(_log(path)[-4000:] for _, path in procs))
    return out


@pytest.fixture(scope="module")
def launch(tmp_path_factory):
    """One 2-process launch: standard training, then an evaluation of the trained model."""
    return _launch_workers(tmp_path_factory.mktemp("dist"), 300, methods=["standard"], eval=True)


@pytest.fixture(scope="module")
def launch_slow(tmp_path_factory):
    """PGD-AT and FGSM-SDI."""
    return _launch_workers(tmp_path_factory.mktemp("dist_slow"), 600, methods=["pgd_at", "fgsm_sdi"])


def _load(path) -> dict:
    with np.load(path) as z:
        return dict(z)


def _close(a: dict, b: dict, atol: float, rtol: float, what: str) -> None:
    assert a.keys() == b.keys(), what
    for k in a:
        np.testing.assert_allclose(a[k], b[k], atol=atol, rtol=rtol, err_msg=f"{what}: {k}")


@pytest.mark.parametrize("name", ["standard", pytest.param("pgd_at", marks=pytest.mark.slow),
                                  pytest.param("fgsm_sdi", marks=pytest.mark.slow)])
def test_two_processes_train_like_one(request, name):
    launch = request.getfixturevalue("launch" if name == "standard" else "launch_slow")
    p0, p1 = _load(launch / f"{name}_p0.npz"), _load(launch / f"{name}_p1.npz")
    for k in p0:  # every process holds the same (replicated) state
        np.testing.assert_array_equal(p0[k], p1[k], err_msg=k)
    res4, res1 = _reference(name, 4), _reference(name, 1)
    flat4 = _flat({"params": res4.state.params, "batch_stats": res4.state.batch_stats, "extra": res4.state.extra})
    flat1 = _flat({"params": res1.state.params, "batch_stats": res1.state.batch_stats, "extra": res1.state.extra})
    _close(p0, flat4, 2e-6, 2e-5, f"{name}: 2 processes x 2 devices vs 1 x 4")
    _close(p0, flat1, 2e-6, 2e-5, f"{name}: 2 processes x 2 devices vs 1 x 1")
    init = _flat({"params": _fit_init_params()})
    moved = max(float(np.abs(p0[k] - init[k]).max()) for k in init)
    assert moved > 1e-3, "training did not move the parameters: the comparison would be vacuous"
    if name == "fgsm_sdi":  # the generator is in the state and was trained too (k=1: every step)
        assert any("sdi" in k for k in p0)
    hist = json.loads((launch / "results_p0.json").read_text())[f"{name}_history"]
    ref = [{k: v for k, v in h.items() if k != "images_per_s"} for h in res4.history]
    assert hist[0].keys() == ref[0].keys()
    for k in hist[0]:  # the per-epoch sums of the metrics
        assert hist[0][k] == pytest.approx(ref[0][k], rel=1e-5, abs=1e-6), k


def _fit_init_params():
    """The parameters ``fit`` starts from (same model, seed and initializer)."""
    import jax
    import optax
    from advjax.train.state import create_train_state

    return create_train_state(TinyCNN(), optax.sgd(0.1), jax.random.PRNGKey(3)).params


def test_each_process_feeds_its_rows_of_the_global_batch(launch):
    from advjax.data.iterate import batches

    r0 = json.loads((launch / "results_p0.json").read_text())
    r1 = json.loads((launch / "results_p1.json").read_text())
    assert r0["rows"] == [0, 16] and r1["rows"] == [16, 32]
    whole = next(batches(TRAIN, 32, seed=3))[1]
    np.testing.assert_array_equal(np.concatenate([r0["share"], r1["share"]]), whole)


def test_two_process_evaluation_equals_one_process(launch):
    import jax
    from advjax.train.mesh import make_mesh

    r0 = json.loads((launch / "results_p0.json").read_text())
    r1 = json.loads((launch / "results_p1.json").read_text())
    assert r0["eval"] == r1["eval"]  # every process reports the same global result
    p = _load(launch / "standard_p0.npz")
    res = _reference("standard", 1)  # the same structure, then the 2-process run's exact values
    flat, treedef = jax.tree_util.tree_flatten_with_path({"params": res.state.params,
                                                          "batch_stats": res.state.batch_stats})
    values = [p[jax.tree_util.keystr(path)] for path, _ in flat]
    variables = jax.tree_util.tree_unflatten(jax.tree_util.tree_structure({"params": res.state.params,
                                                                            "batch_stats": res.state.batch_stats}),
                                             values)
    one = _table(_evaluate(variables, mesh=make_mesh(1)))
    assert r0["eval"] == one
    assert 0.3 < one["clean"] and one["table"]["aa"]["0.3"] < one["clean"]  # an informative comparison
    assert set(one["autoattack"]["aa"]["0.3"]) == {"apgd-ce"}


@pytest.mark.slow
def test_killed_process_then_relaunch_resumes_exactly(tmp_path):
    from advjax.train.checkpoint import list_checkpoints, load_for_eval

    ref_dir, run = tmp_path / "ref", tmp_path / "run"
    procs = _start(_cli(_free_port(), [["--run-dir", str(ref_dir)]] * 2), tmp_path, "ref")  # uninterrupted
    assert _wait(procs, timeout=400) == [0, 0], "\n".join(_log(path)[-3000:] for _, path in procs)
    procs = _start(_cli(_free_port(), [["--run-dir", str(run)]] * 2), tmp_path, "first")
    last = run / "checkpoints" / "last"
    deadline = time.monotonic() + 400
    try:
        while not list_checkpoints(last):
            if time.monotonic() > deadline or any(p.poll() is not None for p, _ in procs):
                pytest.fail("no checkpoint appeared:\n" + "\n".join(_log(path)[-3000:] for _, path in procs))
            time.sleep(0.02)
        procs[1][0].send_signal(signal.SIGKILL)  # one process dies mid-run ...
        procs[1][0].wait()
        finished = any(p.name == f"step_{RESUME_FINAL_STEP:09d}" for p in list_checkpoints(last))
    finally:
        _kill(procs)  # ... and the launcher takes the other one down
    assert not finished, "the run finished before the kill: the test would not test a resume"
    procs = _start(_cli(_free_port(), [["--run-dir", str(run)]] * 2), tmp_path, "again")
    rcs = _wait(procs, timeout=400)
    assert rcs == [0, 0], "\n".join(_log(path)[-3000:] for _, path in procs)
    assert "resuming from" in _log(procs[0][1])
    _, v_res, _ = load_for_eval(run, which="last")
    _, v_ref, _ = load_for_eval(ref_dir, which="last")
    a, b = _flat(v_res), _flat(v_ref)
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)  # bit-identical to the uninterrupted run
    hist = [json.loads(s) for s in (run / "metrics.jsonl").read_text().splitlines()]
    ref = [json.loads(s) for s in (ref_dir / "metrics.jsonl").read_text().splitlines()]
    strip = lambda h: [{k: v for k, v in r.items() if k != "images_per_s"} for r in h]  # noqa: E731
    assert len(hist) == RESUME_EPOCHS and strip(hist) == strip(ref)


def test_mismatched_configurations_fail_fast_with_process_0_naming_the_key(tmp_path):
    procs = _start(_cli(_free_port(), (["--run-dir", str(tmp_path / "run"), "--seed", "0"],
                                       ["--run-dir", str(tmp_path / "run"), "--seed", "1"])), tmp_path, "mismatch")
    rcs = _wait(procs, timeout=90)
    assert rcs[0] != 0 and rcs[1] != 0
    err0 = _log(procs[0][1])
    assert "process 0: the training configuration differs" in err0 and "seed" in err0, err0[-2000:]
    assert "see process 0's error" in _log(procs[1][1])
    assert not (tmp_path / "run").exists()  # failed before anything was written


# ---- in-process checks (no launch) -----------------------------------------------------------------


def test_bad_distributed_settings_are_clear_errors_before_any_connection():
    from advjax.train.distributed import DistributedError, initialize

    with pytest.raises(DistributedError, match="process_id 2 is out of range for 2 processes"):
        initialize("127.0.0.1:1", 2, 2)
    with pytest.raises(DistributedError, match="must be host:port"):
        initialize("localhost", 2, 0)
    with pytest.raises(DistributedError, match="num_processes must be a non-negative integer"):
        initialize("127.0.0.1:1", -1, 0)


def test_one_process_helpers_are_the_single_process_behaviour():
    import jax
    from advjax.data.iterate import batches
    from advjax.train import distributed as dist
    from advjax.train.mesh import make_mesh

    mesh = make_mesh(4)
    assert dist.local_rows(mesh, 8) == slice(0, 8)
    g = dist.global_batch((TRAIN[0][:8], TRAIN[1][:8]), mesh)
    assert g[0].sharding.spec == jax.sharding.PartitionSpec("data") and g[0].shape == (8, 8, 8, 1)
    np.testing.assert_array_equal(dist.to_host(g[1]), TRAIN[1][:8])
    dist.check_same_config({"seed": 0})  # nothing to compare with
    with pytest.raises(ValueError, match="does not split evenly over 3 processes"):
        batches(TRAIN, 32, process_index=0, process_count=3)
    with pytest.raises(ValueError, match="not divisible by the number of devices \\(4\\)"):
        dist.local_rows(mesh, 6)


if __name__ == "__main__":
    _worker(json.loads(sys.argv[1]))
