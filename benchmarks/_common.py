"""Shared helpers of the advjax benchmarks (not part of the package; never run by pytest).

* :func:`configure` sets the process environment *before* jax and torch are imported: XLA_FLAGS
  (by default ``--xla_cpu_experimental_ynn_fusion_type=``, DESIGN.md lever 2) and the thread
  counts, so that both frameworks use the same cores (torch intra-op threads = ``threads``,
  inter-op threads = 1; XLA:CPU uses one intra-op pool sized to the visible cores).
* :func:`interleave` times several variants (advjax and its PyTorch peer) in rounds: after a
  warm-up, every round runs each variant once, in a rotating order, so machine noise (other
  processes on the shared cores) hits all of them alike. Summaries are medians.
* :func:`compile_seconds` measures trace + lower + XLA compile of a jitted function.
* :func:`peak_matmul` measures this CPU's float32 matmul peak with one big square matmul in
  numpy, jax and torch (interleaved), the denominator of the "fraction of peak" figures.
* :func:`load_mnist` / :func:`load_cifar10` read the real data in ``../shared/data`` (or
  ``$ADVJAX_SHARED_DATA``) with numpy only.
* :func:`machine_info`, :func:`print_table`, :func:`write_json` report.
"""
from __future__ import annotations

import datetime as _dt
import gzip
import json
import os
import pathlib
import platform
import statistics
import subprocess
import sys
import time
from typing import Callable, Mapping, Sequence

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
DEFAULT_XLA_FLAGS = "--xla_cpu_experimental_ynn_fusion_type="


# ------------------------------------------------------------------------------------------------
# environment (must run before `import jax` / `import torch`)
# ------------------------------------------------------------------------------------------------
def add_common_args(parser) -> None:
    """Flags every benchmark script shares."""
    parser.add_argument("--quick", action="store_true",
                        help="smoke test: tiny batches, few steps, 1 timed round (seconds, not minutes); "
                             "the figures are meaningless")
    parser.add_argument("--repeats", type=int, default=None,
                        help="timed rounds per variant (each round runs every variant once, interleaved); "
                             "default depends on the script, 1 with --quick")
    parser.add_argument("--warmup", type=int, default=1,
                        help="untimed runs of each variant after compilation (default 1)")
    parser.add_argument("--threads", type=int, default=2,
                        help="CPU threads of the PyTorch peer (torch.set_num_threads; OMP/MKL pools). XLA:CPU "
                             "always uses one thread per visible core, so keep this equal to the core count "
                             "(default 2 = the cores of these machines) for a like-for-like comparison")
    parser.add_argument("--xla-flags", default=DEFAULT_XLA_FLAGS,
                        help=f"XLA_FLAGS for this run (default {DEFAULT_XLA_FLAGS!r}: YNNPACK fusion off, "
                             "DESIGN.md lever 2); pass '' for XLA's defaults. Appended to any XLA_FLAGS "
                             "already in the environment")
    parser.add_argument("--conv", choices=("auto", "xla", "onednn"), default=None,
                        help="advjax's CPU convolutions (sets ADVJAX_CONV for this run): 'xla' = XLA's own, "
                             "'onednn' = oneDNN through jax.ffi where it was measured faster (needs "
                             "`pip install 'advjax[onednn]'`), 'auto' = oneDNN when installed. Default: the "
                             "environment's ADVJAX_CONV, else auto. One setting per process: compare the two "
                             "by their ratios to the PyTorch peer in two runs")
    parser.add_argument("--no-torch", action="store_true", help="skip the PyTorch peers (advjax only, no ratios)")
    parser.add_argument("--out", default=None, help="write all results as JSON to this file")
    parser.add_argument("--seed", type=int, default=0, help="seed of data order, initial weights and attack keys")


def configure(threads: int = 2, xla_flags: str | None = DEFAULT_XLA_FLAGS, conv: str | None = None) -> None:
    """Set XLA_FLAGS, ADVJAX_CONV and thread environment variables. Call before importing jax or torch."""
    if "jax" in sys.modules or "torch" in sys.modules:
        raise RuntimeError("benchmarks._common.configure must run before jax / torch are imported")
    if conv is not None:
        os.environ["ADVJAX_CONV"] = conv
    flags = os.environ.get("XLA_FLAGS", "")
    for flag in (xla_flags or "").split():
        if flag not in flags.split():
            flags = (flags + " " + flag).strip()
    if flags:
        os.environ["XLA_FLAGS"] = flags
    # OpenMP / MKL pools of torch (and of numpy's BLAS for the peak measurement).
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ.setdefault(var, str(threads))
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def setup_torch(threads: int):
    """Import torch with ``threads`` intra-op threads and 1 inter-op thread; returns the module."""
    import torch

    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # already set (only allowed once per process)
        pass
    return torch


# ------------------------------------------------------------------------------------------------
# timing
# ------------------------------------------------------------------------------------------------
def block(x):
    """Wait for a result: jax arrays (block_until_ready) or anything else (no-op)."""
    try:
        import jax

        return jax.block_until_ready(x)
    except Exception:  # noqa: BLE001 - torch tensors / numpy
        return x


def interleave(variants: Mapping[str, Callable[[], object]], repeats: int, warmup: int = 1,
               verbose: bool = True, before_round: Callable[[int], None] | None = None) -> dict[str, list[float]]:
    """Time each zero-argument callable ``repeats`` times, in interleaved rounds.

    Each callable must do the whole unit of work and wait for it (call :func:`block` on jax
    results). Round r runs the variants in the order rotated by r, so a slow period of the shared
    machine does not systematically fall on one variant. ``before_round(r)`` (if given) runs
    before round r, untimed (r = -1 before the warm-up), e.g. to select that round's batch.
    Returns name -> list of seconds.
    """
    names = list(variants)
    if before_round is not None and warmup:
        before_round(-1)
    for _ in range(warmup):
        for n in names:
            block(variants[n]())
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(repeats):
        if before_round is not None:
            before_round(r)
        order = names[r % len(names):] + names[: r % len(names)]
        for n in order:
            t0 = time.perf_counter()
            block(variants[n]())
            times[n].append(time.perf_counter() - t0)
        if verbose:
            print(f"    round {r + 1}/{repeats}: " + ", ".join(f"{n} {times[n][-1]:.3f}s" for n in names),
                  flush=True)
    return times


def summarize(seconds: Sequence[float], n_images: int) -> dict:
    """Median / min / max seconds per call, images/s and ms per image (from the median)."""
    med = statistics.median(seconds)
    spread = (max(seconds) - min(seconds)) / med if med > 0 else 0.0
    return {
        "median_s": med,
        "min_s": min(seconds),
        "max_s": max(seconds),
        "spread": spread,  # (max - min) / median: the noise of this measurement
        "n": len(seconds),
        "images": n_images,
        "images_per_s": n_images / med if med > 0 else float("inf"),
        "ms_per_image": 1e3 * med / n_images,
        "all_s": list(seconds),
    }


def compile_seconds(jitted, *args, compiler_options: dict | None = None, **kwargs) -> tuple[float, object]:
    """(seconds to trace, lower and compile ``jitted(*args)``, the compiled executable).

    ``compiler_options`` (e.g. ``{"xla_cpu_enable_fast_math": True}``) override XLA debug options
    for this executable only, so XLA:CPU levers can be compared inside one process.
    """
    t0 = time.perf_counter()
    lowered = jitted.lower(*args, **kwargs)
    compiled = lowered.compile(compiler_options=compiler_options) if compiler_options else lowered.compile()
    return time.perf_counter() - t0, compiled


def parse_compiler_options(spec: str) -> dict:
    """``"name=value;name2=value2"`` -> dict (true/false -> bool, integers -> int, else str)."""
    out: dict = {}
    for item in filter(None, (t.strip() for t in spec.split(";"))):
        name, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"compiler option {item!r} must be name=value")
        if value.lower() in ("true", "false"):
            out[name] = value.lower() == "true"
        elif value.lstrip("-").isdigit():
            out[name] = int(value)
        else:
            out[name] = value
    return out


def timed_call(fn: Callable[[], object]) -> tuple[float, object]:
    t0 = time.perf_counter()
    out = block(fn())
    return time.perf_counter() - t0, out


# ------------------------------------------------------------------------------------------------
# peak matmul FLOP/s
# ------------------------------------------------------------------------------------------------
def peak_matmul(n: int = 3072, repeats: int = 5, torch=None, verbose: bool = False) -> dict:
    """float32 ``[n, n] @ [n, n]`` (2 n^3 FLOPs) in numpy, jax and torch, interleaved.

    Returns ``{"n": n, "numpy": GFLOP/s, "jax": ..., "torch": ..., "median": {...},
    "peak_gflops": ...}``: per library the rate of its fastest call (a peak is the best the cores
    reach, so the best call, not the median, which a moment of load pulls down), and the max over
    the libraries as ``peak_gflops``, the denominator of the achieved-fraction figures. Combine a
    measurement at the start and at the end of a run with :func:`combine_peaks`.
    """
    import jax
    import jax.numpy as jnp

    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    ja, jb = jnp.asarray(a), jnp.asarray(b)
    mm = jax.jit(jnp.matmul)
    mm(ja, jb).block_until_ready()
    variants = {"numpy": lambda: a @ b, "jax": lambda: mm(ja, jb)}
    if torch is not None:
        ta, tb = torch.from_numpy(a), torch.from_numpy(b)
        variants["torch"] = lambda: torch.mm(ta, tb)
    times = interleave(variants, repeats=repeats, warmup=1, verbose=verbose)
    flops = 2.0 * n ** 3
    out = {"n": n, "repeats": repeats, "median": {}}
    for k, v in times.items():
        out[k] = flops / min(v) / 1e9
        out["median"][k] = flops / statistics.median(v) / 1e9
    out["peak_gflops"] = max(out[k] for k in variants)
    return out


def combine_peaks(*peaks: dict) -> dict:
    """The higher of several :func:`peak_matmul` measurements (e.g. the start and the end of a
    run): ``peak_gflops`` is their max, and every measurement is kept under ``"measurements"``."""
    best = max(peaks, key=lambda p: p["peak_gflops"])
    return {**best, "measurements": [dict(p) for p in peaks]}


# ------------------------------------------------------------------------------------------------
# data (numpy only, real files in ../shared/data)
# ------------------------------------------------------------------------------------------------
def shared_data_dir() -> pathlib.Path:
    d = pathlib.Path(os.environ.get("ADVJAX_SHARED_DATA", ROOT.parent / "shared" / "data"))
    if not d.is_dir():
        raise FileNotFoundError(f"shared data directory {d} not found (set ADVJAX_SHARED_DATA)")
    return d


def _read_idx(path: pathlib.Path) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        raw = f.read()
    magic = int.from_bytes(raw[:4], "big")
    ndim = magic & 0xFF
    if magic >> 8 != 0x08:
        raise ValueError(f"{path}: not an unsigned-byte IDX file (magic {magic:#x})")
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    data = np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise ValueError(f"{path}: truncated IDX file ({data.size} bytes for shape {dims})")
    return data.reshape(dims)


def load_mnist() -> tuple[np.ndarray, np.ndarray]:
    """The real MNIST test split (10k): x float32 [N, 28, 28, 1] in [0, 1], y int32 [N]."""
    d = shared_data_dir() / "mnist"
    x = _read_idx(d / "t10k-images-idx3-ubyte.gz").astype(np.float32)[..., None] / 255.0
    y = _read_idx(d / "t10k-labels-idx1-ubyte.gz").astype(np.int32)
    return x, y


def load_cifar10() -> tuple[np.ndarray, np.ndarray]:
    """The CIFAR-10 test set (JPEG q75 copy, 10k): x float32 [N, 32, 32, 3] in [0, 1], y int32."""
    with np.load(shared_data_dir() / "cifar10" / "test_jpeg_q75.npz") as z:
        return z["x"].astype(np.float32) / 255.0, z["y"].astype(np.int32)


def cifar10_sample(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` images of :func:`load_cifar10` drawn without replacement (float32 in [0, 1], int32)."""
    x_all, y_all = load_cifar10()
    idx = np.random.default_rng(seed).choice(len(x_all), n, replace=False)
    return x_all[idx], y_all[idx]


def pick(spec: str, known: Mapping, first: str | None = None) -> list[str]:
    """The names of the comma list ``spec`` (each must be in ``known``: SystemExit naming them),
    with the baseline ``first`` put in front when it is missing (ratios are taken against it)."""
    wanted = [m.strip() for m in spec.split(",") if m.strip()]
    for m in wanted:
        if m not in known:
            raise SystemExit(f"unknown method {m!r}; known: {', '.join(known)}")
    if first is not None and first not in wanted:
        wanted.insert(0, first)
    return wanted


def step_call(method, state, batch, *, steps_per_call: int = 1, seed: int = 1) -> tuple[float, Callable[[], object]]:
    """(compile seconds, a call for :func:`interleave`) of ``method.step`` compiled once with the
    state donated: each call runs ``steps_per_call`` steps, carrying the state and a fresh key per
    step, and returns what to block on. ``method.init_state`` runs first where the method has one."""
    import jax

    if hasattr(method, "init_state"):
        state = method.init_state(state, batch)
    fn = jax.jit(lambda s, b, k: method.step(s, b, k), donate_argnums=(0,))
    secs, fn = compile_seconds(fn, state, batch, jax.random.PRNGKey(seed))
    box = {"state": state, "i": 0}

    def call():
        out = None
        for _ in range(steps_per_call):
            box["i"] += 1
            box["state"], out = fn(box["state"], batch, jax.random.PRNGKey(box["i"]))
        return box["state"].params, out

    return secs, call


# ------------------------------------------------------------------------------------------------
# reporting
# ------------------------------------------------------------------------------------------------
def load_average() -> tuple[float, float, float]:
    try:
        return os.getloadavg()
    except OSError:
        return (float("nan"),) * 3


def machine_info(threads: int) -> dict:
    info = {
        "date_utc": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "host": platform.node(),
        "python": platform.python_version(),
        "cpus_visible": os.cpu_count(),
        "threads": threads,
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "load_average_start": load_average(),
    }
    try:
        from advjax.native import onednn

        ok, where = onednn.status()
        info["conv"] = {"ADVJAX_CONV": onednn.mode(), "onednn_available": ok, "onednn": where,
                        "onednn_used": onednn.enabled()}
    except Exception as e:  # noqa: BLE001 -- informational only
        info["conv"] = {"error": f"{type(e).__name__}: {e}"}
    try:
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    for mod in ("jax", "jaxlib", "flax", "torch", "torchattacks"):
        m = sys.modules.get(mod)
        if m is not None:
            info[mod] = getattr(m, "__version__", "?")
    try:
        info["git"] = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                                     capture_output=True, text=True, timeout=5).stdout.strip()
    except Exception:  # noqa: BLE001
        pass
    return info


def print_table(rows: Sequence[Mapping], columns: Sequence[str], title: str | None = None) -> None:
    """A plain fixed-width table of ``rows`` (dicts) on stdout; floats get 3 significant digits."""

    def fmt(v):
        if v is None:
            return "-"
        if isinstance(v, float):
            if v != v:
                return "nan"
            if abs(v) >= 100:
                return f"{v:.0f}"
            if abs(v) >= 10:
                return f"{v:.1f}"
            return f"{v:.3g}" if abs(v) >= 0.01 or v == 0 else f"{v:.2e}"
        return str(v)

    cells = [[fmt(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) if cells else len(c) for i, c in enumerate(columns)]
    if title:
        print(f"\n{title}")
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths)))
    print("  ".join("-" * w for w in widths))
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths)))
    sys.stdout.flush()


def write_json(path: str | None, payload: dict) -> None:
    if not path:
        return
    p = pathlib.Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    payload = dict(payload)
    payload.setdefault("machine", {})["load_average_end"] = load_average()
    p.write_text(json.dumps(payload, indent=2, default=_json_default))
    print(f"\nwrote {p}")


def _json_default(o):
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)
