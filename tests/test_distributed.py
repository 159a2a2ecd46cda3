"""Several JAX processes as one run, tested as processes on 127.0.0.1 (2 processes x 2 simulated
CPU devices = one 4-device mesh, gloo collectives). All of it is in the default run:

- standard training, PGD-AT (with augmentation) and FGSM-SDI (generator and its optimizer in the
  state) end with the parameters of 1 process x 4 devices and of 1 process x 1 device (float
  tolerance), and both processes hold identical parameters; AWP (its weight perturbation, an
  ascent step inside the compiled step; its proxy's sgd state holds no arrays), layerwise AT (its gradient cache sharded on the batch axis across the processes) and Free-AT
  (its carried perturbation, sharded the same way; trained into a run directory with the per-epoch
  monitor and checkpoints) end with the 1 x 1 parameters;
- each process feeds only its rows of every global batch, which concatenate to the 1-process batch;
- a 2-process ``robust_accuracy`` (AutoAttack's eager driver on sharded batches) gives the
  1-process table;
- ``runner.run_experiment`` in 2 processes: one results.md / results.json / plot / cache, written
  by process 0; the run the experiment trains checkpoints into the shared directory;
- one process killed (SIGKILL, at its second checkpoint of the Free-AT run), both relaunched: the
  resumed run (per-epoch monitor, best epoch, carried perturbation, optimizer state) ends
  bit-identical to the uninterrupted 2-process run;
- ``advjax train --distributed`` and ``advjax reproduce --distributed`` launched with different
  configurations fail fast, with process 0 naming the key;
- (in-process, 8 simulated devices) Free-AT's perturbation is sharded on the batch axis and 8
  devices give the 1-device parameters.

Cost: every launch pays two Python + JAX start-ups and compiles its programs on a 2-core machine,
so one launch (the "main" worker) does all the training, evaluation and reproduction checks, the
models are tiny and initialised from numpy (XLA:CPU compiles threefry draws slowly), the JAX
persistent compilation cache is off, and the in-process references are computed while the
workers run.

This file is also the worker: ``python tests/test_distributed.py '<json spec>'``. Every launch is
bounded by a timeout (the processes are killed and the test fails with their logs); ports are
chosen free.
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


def _np_init(seed: int):
    """A flax initializer drawing from numpy (no threefry program to compile): N(0, 1/fan_in)."""
    def init(key, shape, dtype=np.float32):
        import jax.numpy as jnp

        fan_in = int(np.prod(shape[:-1])) or 1
        return jnp.asarray(np.random.default_rng(seed).normal(0.0, fan_in ** -0.5, shape), dtype)
    return init


class TinyCNN(nn.Module):
    """Conv + batch norm (statistics over the global batch) + a layerwise-AT perturbation point
    (the identity for every other method) + Dense: 4 classes on 8x8x1 images."""
    num_classes: int = 4
    input_shape: tuple = (8, 8, 1)

    @nn.compact
    def __call__(self, x, train: bool = False):
        from advjax.models.ops import perturbation_point

        h = nn.Conv(4, (3, 3), kernel_init=_np_init(1))(x)
        h = nn.BatchNorm(use_running_average=not train, momentum=0.9)(h)
        h = perturbation_point(self, "g_bn0", h)
        h = nn.relu(h).reshape(x.shape[0], -1)
        return nn.Dense(self.num_classes, kernel_init=_np_init(2))(h)


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
           "fgsm_sdi": dict(eps=0.1, k=1, generator_features=4),
           "awp": dict(base="pgd_at", eps=0.1, alpha=0.1, steps=1, gamma=0.01),
           "layerwise": dict(eps=0.5), "free_at": dict(eps=0.1, m=2)}
IN_MEMORY = ("standard", "pgd_at", "fgsm_sdi", "awp", "layerwise")  # trained without a run directory
VS_FOUR = ("standard", "pgd_at", "fgsm_sdi")  # also compared with 1 process x 4 devices
RESUME = "free_at"  # trained into a run directory (monitor, checkpoints), then killed and resumed
RESUME_EPOCHS = 2


def _config(name: str, devices=None):
    from advjax.train.config import TrainConfig
    from advjax.train.optim import OptimizerConfig

    resume = name == RESUME
    return TrainConfig(model="tiny_cnn", dataset="synthetic", method=name, method_kwargs=dict(METHODS[name]),
                       epochs=RESUME_EPOCHS if resume else 2 if name == "standard" else 1, batch_size=32,
                       augment=name == "pgd_at", eval_size=32, eval_steps=1, eval_eps=0.1, eval_batch_size=16,
                       ckpt_every=1 if resume else 0,
                       optimizer=OptimizerConfig(name="momentum", lr=0.05), devices=devices, run_dir=None, seed=3)


def _numpy_filled(tree, seed: int):
    """Arrays for a tree of ShapeDtypeStructs of flax variables: kernels N(0, 1/fan_in) from numpy,
    batch-norm scales and variances ones, biases and means zeros."""
    import jax
    import jax.numpy as jnp

    rng = np.random.default_rng(seed)

    def fill(path, s):
        name = str(getattr(path[-1], "key", path[-1]))
        if name == "kernel":
            return jnp.asarray(rng.normal(0.0, (int(np.prod(s.shape[:-1])) or 1) ** -0.5, s.shape), s.dtype)
        return (jnp.ones if name in ("scale", "var") else jnp.zeros)(s.shape, s.dtype)
    return jax.tree_util.tree_map_with_path(fill, tree)


def _method(name: str):
    """The configured method; FGSM-SDI's generator initialised from numpy (``gen.init``'s threefry
    draws compile slowly on XLA:CPU), the same in every process and in the references."""
    if name != "fgsm_sdi":
        return None
    import dataclasses

    import jax
    from advjax.methods.fgsm_sdi import EXTRA_KEY

    base = _config(name).build_method(dataset=False)

    @dataclasses.dataclass(frozen=True)
    class NumpyInitSDI(type(base)):
        def init_state(self, state, batch, key=None):
            shapes = jax.eval_shape(lambda s: super(NumpyInitSDI, self).init_state(s, batch, key), state)
            params = _numpy_filled(shapes.extra[EXTRA_KEY]["params"], 4)
            sdi = {"params": params, "batch_stats": _numpy_filled(shapes.extra[EXTRA_KEY]["batch_stats"], 5),
                   "opt_state": self.gen_tx.init(params)}
            return state.replace(extra={**dict(state.extra), EXTRA_KEY: sdi})

    return NumpyInitSDI(**{f.name: getattr(base, f.name) for f in dataclasses.fields(base)})


def _fit(name: str, devices=None, run_dir=None):
    from advjax.train.loop import fit

    return fit(_config(name, devices), train_data=TRAIN, test_data=TEST, model=TinyCNN(), method=_method(name),
               run_dir=run_dir, monitor=name == RESUME, progress=False, log=False)


_REFS: dict = {}


def _reference(name: str, devices: int):
    """A one-process fit (cached: several tests compare with it)."""
    if (name, devices) not in _REFS:
        _REFS[name, devices] = _fit(name, devices)
    return _REFS[name, devices]


def _state_tree(state) -> dict:
    return {"params": state.params, "batch_stats": state.batch_stats, "extra": state.extra,
            "opt_state": state.opt_state, "step": state.step}


def _flat(tree) -> dict:
    import jax
    from advjax.train.distributed import to_host

    flat, _ = jax.tree_util.tree_flatten_with_path(tree)
    return {jax.tree_util.keystr(p): np.asarray(to_host(v)) for p, v in flat}


def _history(res) -> list:
    return [{k: v for k, v in h.items() if k != "images_per_s"} for h in res.history]


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


def _tiny_experiment():
    """An experiment for ``runner.run_experiment``: trains into ``out_dir/runs`` (checkpoints from
    every process), writes a plot, a cache and a file saying which process wrote it."""
    from experiments.base import Experiment, ExperimentResult

    def run(scale, quick, out_dir, seed):
        import jax
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        from advjax.train.loop import fit

        cfg = _config("standard").replace(epochs=1, seed=seed)
        res = fit(cfg, train_data=TRAIN, model=TinyCNN(), run_dir=pathlib.Path(out_dir) / "runs" / "standard",
                  monitor=False, progress=False, log=False)
        loss = res.history[-1]["train_loss"]
        (pathlib.Path(out_dir) / "written_by.txt").write_text(str(jax.process_index()))
        cache = pathlib.Path(out_dir) / "cache.json"
        store = json.loads(cache.read_text()) if cache.exists() else {}
        store[f"loss_p{jax.process_index()}"] = loss
        cache.write_text(json.dumps(store))
        fig, ax = plt.subplots()
        ax.plot([0, 1], [loss, loss])
        fig.savefig(pathlib.Path(out_dir) / "loss.png")
        plt.close(fig)
        return ExperimentResult(markdown=f"| loss |\n|---|\n| {loss:.6f} |", config={"scale": scale},
                                metrics={"loss": loss, "process": jax.process_index()}, plots=["loss.png"])

    return Experiment(name="zz-dist", description="a 2-process test table", paper="none",
                      expected_runtime={"cpu": "1 s"}, paper_values={}, run=run)


# ---- the worker --------------------------------------------------------------------------------


def _worker(spec: dict) -> None:
    from advjax.train import distributed as dist

    dist.initialize(spec["coordinator"], spec["num_processes"], spec["process_id"])
    import jax

    out = pathlib.Path(spec["out"])
    pid = jax.process_index()
    assert jax.device_count() == 4 and jax.local_device_count() == 2, (jax.device_count(), jax.local_device_count())
    if spec["mode"] == "resume":
        if spec.get("die_at_last_save") and pid == 1:  # SIGKILL itself at the start of its n-th save
            from advjax.train import checkpoint as ckpt

            save, calls = ckpt.save_checkpoint, []

            def dying_save(directory, *a, **kw):
                if pathlib.Path(directory).name == "last":
                    calls.append(directory)
                    if len(calls) == spec["die_at_last_save"]:
                        os.kill(os.getpid(), signal.SIGKILL)
                return save(directory, *a, **kw)
            ckpt.save_checkpoint = dying_save
        res = _fit(RESUME, run_dir=out / "run")
        np.savez(out / f"resumed_p{pid}.npz", **_flat(_state_tree(res.state)))
        return

    from advjax.data.iterate import batches
    from advjax.train.mesh import make_mesh

    t0 = time.perf_counter()
    mesh = make_mesh()
    rows = dist.local_rows(mesh, 32)
    share = next(batches(TRAIN, 32, seed=3, process_index=pid, process_count=2))[1]
    results = {"rows": [rows.start, rows.stop], "share": share.tolist(), "seconds": {}}
    for name in IN_MEMORY:
        t = time.perf_counter()
        res = _fit(name)
        np.savez(out / f"{name}_p{pid}.npz", **_flat(_state_tree(res.state)))
        results[f"{name}_history"] = _history(res)
        if name == "layerwise":  # the gradient cache: sharded on the batch axis across the processes
            results["layerwise_sharding"] = sorted({str(a.sharding.spec) for a in jax.tree.leaves(res.state.extra)})
        if name == "standard":
            results["eval"] = _table(_evaluate(res.state.variables()))
        results["seconds"][name] = time.perf_counter() - t
    t = time.perf_counter()
    res = _fit(RESUME, run_dir=out / "ref_run")  # the uninterrupted run the resume test compares with
    np.savez(out / f"{RESUME}_p{pid}.npz", **_flat(_state_tree(res.state)))
    results[f"{RESUME}_history"] = _history(res)
    results[f"{RESUME}_sharding"] = str(res.state.extra["free_at_delta"].sharding.spec)
    results["seconds"][RESUME] = time.perf_counter() - t

    t = time.perf_counter()
    from experiments import runner

    exp = _tiny_experiment()
    runner.discover = lambda: {exp.name: exp}
    out_dir, result, _ = runner.run_experiment(exp.name, out=out / "results", seed=3)
    results["reproduce"] = {"out_dir": str(out_dir), "metrics": dict(result.metrics)}
    results["seconds"]["reproduce"] = time.perf_counter() - t
    results["seconds"]["all"] = time.perf_counter() - t0
    (out / f"results_p{pid}.json").write_text(json.dumps(results))


# ---- launching -----------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(devices: int = 2) -> dict:
    env = dict(os.environ)
    flags = [f for f in env.get("XLA_FLAGS", "").split()
             if "xla_force_host_platform_device_count" not in f and "xla_backend_optimization_level" not in f]
    # tiny programs: compiling dominates; -O0 took the main worker from ~118 s to ~70 s here (the
    # in-process references compile at the default level: the comparisons are to float tolerance)
    env["XLA_FLAGS"] = " ".join(flags + [f"--xla_force_host_platform_device_count={devices}",
                                         "--xla_backend_optimization_level=0"])
    root = str(HERE.parents[1])  # the worker imports the experiments package
    env["PYTHONPATH"] = os.pathsep.join([root] + [q for q in env.get("PYTHONPATH", "").split(os.pathsep) if q])
    env.update(JAX_PLATFORMS="cpu", ADVJAX_COMPILATION_CACHE="0", PYTHONUNBUFFERED="1",
               JAX_ENABLE_COMPILATION_CACHE="false")
    for k in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID", "JAX_COMPILATION_CACHE_DIR"):
        env.pop(k, None)
    return env


def _start(argvs, logdir: pathlib.Path, tag: str):
    procs = []
    for i, argv in enumerate(argvs):
        out = open(logdir / f"{tag}_p{i}.out", "w")
        err = open(logdir / f"{tag}_p{i}.err", "w")
        procs.append((subprocess.Popen(argv, stdout=out, stderr=err, env=_env(), cwd=HERE.parents[1]),
                      logdir / f"{tag}_p{i}"))
    return procs


def _log(path) -> str:
    return pathlib.Path(f"{path}.err").read_text() + pathlib.Path(f"{path}.out").read_text()


def _logs(procs, n: int = 4000) -> str:
    return "\n".join(f"--- {path.name}\n{_log(path)[-n:]}" for _, path in procs)


def _kill(procs) -> None:
    for p, _ in procs:
        if p.poll() is None:
            p.kill()
    for p, _ in procs:
        p.wait()


def _wait(procs, timeout: float, until_any: bool = False) -> list:
    """Return codes (None: still running); on timeout kill every process and fail with their logs
    (never hangs). ``until_any``: return as soon as one process has exited."""
    deadline = time.monotonic() + timeout
    while (not any(p.poll() is not None for p, _ in procs)) if until_any else \
            any(p.poll() is None for p, _ in procs):
        if time.monotonic() > deadline:
            _kill(procs)
            pytest.fail(f"processes did not finish within {timeout} s:\n{_logs(procs, 3000)}")
        time.sleep(0.05)
    return [p.poll() for p, _ in procs]


def _workers(out: pathlib.Path, tag: str, **spec):
    port = _free_port()
    argvs = [[sys.executable, str(HERE), json.dumps({"coordinator": f"127.0.0.1:{port}", "num_processes": 2,
                                                     "process_id": i, "out": str(out), **spec})] for i in range(2)]
    return _start(argvs, out, tag)


def _cli(port: int, command: list, extra_per_process) -> list:
    return [[sys.executable, "-m", "advjax", *command, *extra, "--coordinator-address", f"127.0.0.1:{port}",
             "--num-processes", "2", "--process-id", str(i)] for i, extra in enumerate(extra_per_process)]


@pytest.fixture(scope="module")
def launch(tmp_path_factory):
    """The main 2-process launch (see ``_worker``); the 1-process references are computed here
    while it runs."""
    out = tmp_path_factory.mktemp("dist")
    procs = _workers(out, "main", mode="main")
    try:
        for name in IN_MEMORY + (RESUME,):
            _reference(name, 1)
            if name in VS_FOUR:
                _reference(name, 4)
    except BaseException:
        _kill(procs)
        raise
    rcs = _wait(procs, timeout=240)
    if rcs != [0, 0]:
        pytest.fail(f"workers exited with {rcs}:\n{_logs(procs)}")
    return out


def _load(path) -> dict:
    with np.load(path) as z:
        return dict(z)


def _close(a: dict, b: dict, atol: float, rtol: float, what: str) -> None:
    assert a.keys() == b.keys(), what
    for k in a:
        np.testing.assert_allclose(a[k], b[k], atol=atol, rtol=rtol, err_msg=f"{what}: {k}", equal_nan=False)


def _init_params() -> dict:
    """The parameters ``fit`` starts from (same model and initializer; numpy draws: no key needed)."""
    import jax

    variables = TinyCNN().init(jax.random.PRNGKey(0), TRAIN[0][:1])
    return _flat({"params": variables["params"]})


@pytest.mark.parametrize("name", IN_MEMORY + (RESUME,))
def test_two_processes_train_like_one(launch, name):
    p0, p1 = _load(launch / f"{name}_p0.npz"), _load(launch / f"{name}_p1.npz")
    for k in p0:  # every process holds the same state (sharded leaves gathered), and it is finite
        np.testing.assert_array_equal(p0[k], p1[k], err_msg=k)
        assert np.isfinite(p0[k]).all(), k
    refs = {1: _reference(name, 1)}
    if name in VS_FOUR:
        refs[4] = _reference(name, 4)
    for devices, ref in refs.items():
        _close(p0, _flat(_state_tree(ref.state)), 2e-6, 2e-5, f"{name}: 2 processes x 2 devices vs 1 x {devices}")
    init = _init_params()
    moved = max(float(np.abs(p0[k] - init[k]).max()) for k in init)
    assert moved > 1e-3, "training did not move the parameters: the comparison would be vacuous"
    extra = {"fgsm_sdi": "['sdi']['params']", "layerwise": "['layerwise']",
             "free_at": "['free_at_delta']"}.get(name)
    if extra is not None:  # the method's own state is compared too, and it is not all zeros
        keys = [k for k in p0 if k.startswith("['extra']" + extra)]
        assert keys and max(float(np.abs(p0[k]).max()) for k in keys) > 0, (name, sorted(p0)[:8])
    hist = json.loads((launch / "results_p0.json").read_text())[f"{name}_history"]
    ref = _history(refs[1])
    assert len(hist) == len(ref) and hist[0].keys() == ref[0].keys()
    for h, r in zip(hist, ref):  # the per-epoch sums of the metrics (and, for Free-AT, the monitor)
        for k in h:
            assert h[k] == pytest.approx(r[k], rel=1e-5, abs=1e-6), (name, k)
    data = str(__import__("jax").sharding.PartitionSpec("data"))
    if name == RESUME:
        assert "test_pgd_acc" in hist[0]
        assert json.loads((launch / "results_p0.json").read_text())[f"{RESUME}_sharding"] == data
    if name == "layerwise":
        assert json.loads((launch / "results_p0.json").read_text())["layerwise_sharding"] == [data]


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
    tree = {"params": res.state.params, "batch_stats": res.state.batch_stats}
    flat, treedef = jax.tree_util.tree_flatten_with_path(tree)
    variables = jax.tree_util.tree_unflatten(treedef, [p[jax.tree_util.keystr(path)] for path, _ in flat])
    one = _table(_evaluate(variables, mesh=make_mesh(1)))
    assert r0["eval"] == one
    assert 0.3 < one["clean"] and one["table"]["aa"]["0.3"] < one["clean"]  # an informative comparison
    assert set(one["autoattack"]["aa"]["0.3"]) == {"apgd-ce"}


def test_two_process_reproduction_writes_its_files_once_from_process_0(launch):
    from advjax.train.checkpoint import list_checkpoints

    r0 = json.loads((launch / "results_p0.json").read_text())
    r1 = json.loads((launch / "results_p1.json").read_text())
    out_dir = pathlib.Path(r0["reproduce"]["out_dir"])
    assert r1["reproduce"]["out_dir"] == str(out_dir)
    assert r0["reproduce"]["metrics"]["loss"] == r1["reproduce"]["metrics"]["loss"]  # one computation
    rec = json.loads((out_dir / "results.json").read_text())
    assert rec["processes"] == 2 and rec["metrics"]["process"] == 0 and rec["seed"] == 3
    assert "4 x cpu in 2 processes" in (out_dir / "results.md").read_text()
    assert (out_dir / "written_by.txt").read_text() == "0"  # process 1's write was skipped
    assert json.loads((out_dir / "cache.json").read_text()) == {"loss_p0": rec["metrics"]["loss"]}
    assert (out_dir / "loss.png").stat().st_size > 0
    assert not [p for p in out_dir.rglob("*.part")]  # the atomic writes left no temporary file
    assert list_checkpoints(out_dir / "runs" / "standard" / "checkpoints" / "last")  # written by both


def test_killed_process_then_relaunch_resumes_exactly(launch, tmp_path):
    from advjax.train.checkpoint import list_checkpoints

    (tmp_path / "run").mkdir()
    procs = _workers(tmp_path, "first", mode="resume", die_at_last_save=2)
    try:
        rcs = _wait(procs, timeout=120, until_any=True)  # process 1 kills itself at its 2nd checkpoint ...
        assert rcs[1] == -9, f"process 1 was to die by SIGKILL, got {rcs}:\n{_logs(procs)}"
    finally:
        _kill(procs)  # ... and the launcher takes the other one down
    last = tmp_path / "run" / "checkpoints" / "last"
    kept = list_checkpoints(last)
    assert len(kept) == 1, f"one checkpoint was to be committed before the kill: {kept}"
    procs = _workers(tmp_path, "again", mode="resume")
    rcs = _wait(procs, timeout=120)
    assert rcs == [0, 0], _logs(procs)
    assert "resuming from" in _log(procs[0][1]) and "(epoch 0, batch 1)" in _log(procs[0][1])
    ref = _load(launch / f"{RESUME}_p0.npz")
    for pid in (0, 1):
        got = _load(tmp_path / f"resumed_p{pid}.npz")
        assert got.keys() == ref.keys()
        for k in got:  # bit-identical to the uninterrupted run: parameters, δ, optimizer state, step
            np.testing.assert_array_equal(got[k], ref[k], err_msg=k)
    strip = lambda path: [{k: v for k, v in json.loads(s).items() if k != "images_per_s"}  # noqa: E731
                          for s in path.read_text().splitlines()]
    hist, ref_hist = strip(tmp_path / "run" / "metrics.jsonl"), strip(launch / "ref_run" / "metrics.jsonl")
    assert len(hist) == RESUME_EPOCHS and hist == ref_hist
    assert "test_pgd_acc" in hist[0]


CLI_TRAIN = ["train", "--model", "model_a", "--model-arg", "hidden=[8]", "--dataset", "moons", "--train-split",
             "train[:64]", "--test-split", "test[:32]", "--method", "standard", "--epochs", "1", "--batch-size", "32",
             "--no-progress"]


def test_mismatched_configurations_fail_fast_with_process_0_naming_the_key(tmp_path):
    procs = _start(_cli(_free_port(), CLI_TRAIN, (["--run-dir", str(tmp_path / "run"), "--seed", "0"],
                                                  ["--run-dir", str(tmp_path / "run"), "--seed", "1"])),
                   tmp_path, "mismatch")
    rcs = _wait(procs, timeout=90)
    assert rcs[0] == 2 and rcs[1] == 2, (rcs, _logs(procs))
    err0 = _log(procs[0][1])
    assert "process 0: the training configuration differs" in err0 and "seed" in err0, err0[-2000:]
    assert "see process 0's error" in _log(procs[1][1])
    assert not (tmp_path / "run").exists()  # failed before anything was written


def test_reproduce_distributed_checks_the_settings_across_processes(tmp_path):
    """``advjax reproduce --distributed`` joins the processes (the coordinator flags) and refuses
    processes launched with different settings before the experiment runs or writes anything."""
    procs = _start(_cli(_free_port(), ["reproduce", "lsa-moons", "--quick", "--out", str(tmp_path / "results")],
                        (["--seed", "0"], ["--seed", "1"])), tmp_path, "reproduce")
    rcs = _wait(procs, timeout=90)
    assert rcs == [2, 2], (rcs, _logs(procs))
    err0 = _log(procs[0][1])
    assert "process 0: the reproduction configuration differs" in err0 and "seed" in err0, err0[-2000:]
    assert "see process 0's error" in _log(procs[1][1])
    assert not (tmp_path / "results" / "lsa-moons" / "results.md").exists()


# ---- in-process checks (no launch) -----------------------------------------------------------------


def test_free_at_perturbation_is_batch_sharded_and_eight_devices_equal_one():
    import jax
    from jax.sharding import PartitionSpec as P

    if jax.device_count() < 8:
        pytest.skip("needs 8 (simulated) devices; see conftest")
    from advjax.methods.free_at import FreeAT

    assert FreeAT.batch_sharded_extra == ("free_at_delta",)
    cfg = _config("free_at").replace(ckpt_every=0)
    from advjax.train.loop import fit

    res = {d: fit(cfg.replace(devices=d), train_data=TRAIN, model=TinyCNN(), run_dir=None, monitor=False,
                  progress=False, log=False) for d in (1, 8)}
    delta8 = res[8].state.extra["free_at_delta"]
    assert delta8.sharding.spec == P("data") and len(delta8.sharding.device_set) == 8
    assert delta8.addressable_shards[0].data.shape == (4, 8, 8, 1)  # each device: its 4 examples' δ
    a, b = _flat(_state_tree(res[8].state)), _flat(_state_tree(res[1].state))
    _close(a, b, 2e-6, 2e-5, "free_at: 8 devices vs 1")
    assert float(np.abs(a["['extra']['free_at_delta']"]).max()) > 0  # δ was updated
    init = _init_params()
    assert max(float(np.abs(a[k] - init[k]).max()) for k in init) > 1e-3


def test_main_writes_only_guard(tmp_path):
    """The runner's guard (``experiments.runner.main_writes_only``) with 2 processes: the non-main
    process's writes under the root are skipped, the main process's are atomic; outside the root
    and with one process nothing changes."""
    from experiments.runner import main_writes_only

    root, outside = tmp_path / "root", tmp_path / "elsewhere"
    root.mkdir()
    outside.mkdir()
    (root / "old.json").write_text("old")
    with main_writes_only(root, main=False, processes=2):
        assert (root / "a.json").write_text("from 1") == 6
        (root / "b.bin").write_bytes(b"x")
        (root / "old.json").replace(root / "new.json")
        (outside / "c.txt").write_text("kept")
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig = plt.figure()
        fig.savefig(root / "p.png")
        fig.savefig(outside / "p.png")
        plt.close(fig)
    assert sorted(p.name for p in root.iterdir()) == ["old.json"]
    assert (outside / "c.txt").read_text() == "kept" and (outside / "p.png").exists()
    with main_writes_only(root, main=True, processes=2):
        (root / "a.json").write_text("from 0")
        (root / "old.json").replace(root / "new.json")
    assert (root / "a.json").read_text() == "from 0" and (root / "new.json").read_text() == "old"
    assert not list(root.glob(".*.part"))
    with main_writes_only(root, main=False, processes=1):  # one process: the guard is off
        (root / "d.json").write_text("one")
    assert (root / "d.json").read_text() == "one"
    assert pathlib.Path.write_text.__qualname__ == "Path.write_text"  # restored


def test_reproduce_cli_takes_the_distributed_flags():
    import argparse

    from experiments import command

    p = argparse.ArgumentParser()
    command.configure_parser(p)
    args = p.parse_args(["lsa-moons", "--distributed", "--coordinator-address", "127.0.0.1:1234",
                         "--num-processes", "2", "--process-id", "1"])
    assert (args.distributed, args.coordinator_address, args.num_processes, args.process_id) == \
        (True, "127.0.0.1:1234", 2, 1)
    args = p.parse_args(["lsa-moons"])
    from advjax.train.command import start_distributed

    assert start_distributed(args, "reproduce") is False  # no flag: one process, nothing initialized
    bad = p.parse_args(["lsa-moons", "--coordinator-address", "127.0.0.1:1", "--num-processes", "2",
                        "--process-id", "2"])
    assert command.run(bad) == 2  # a clear error before any connection


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
