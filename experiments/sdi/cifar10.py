"""sdi-cifar10: FGSM-SDI against the fast-AT baselines on CIFAR-10 (thesis Tables III / VI).

Jia et al., "Boosting Fast Adversarial Training with Learnable Adversarial Initialization",
IEEE TIP 2022 (thesis "Boosting Adversarial Training in Adversarial Machine Learning", ch. 3).
Methods: FGSM-SDI, FGSM-RS, FGSM-CKPT, FGSM-GA, Free-AT (m=8), PGD-AT (PGD-10), each trained
with the lr schedules of the tables (piecewise: 110 epochs, lr 0.1 decayed x0.1 at epochs 100 and
105; cyclic: 30 epochs, 0 -> 0.1 -> 0 peaking at mid-run as in the released code), SGD momentum
0.9, weight decay 5e-4, batch 128, random crop + flip, eps = 8/255. Per epoch the engine records
clean and PGD-10 accuracy on a training subset and on the test set (Fig. 26) and FGSM-SDI's
training-attack success rate (Fig. 27); the best (by test PGD-10) and last checkpoints are both
evaluated with clean, PGD-10/20/50, CW-20 (L-inf margin), APGD-CE and AutoAttack.

Scales:
* ``paper``: ResNet-18, the full CIFAR-10 training set (50k; ``$ADVJAX_CIFAR10_DIR`` or
  ``--data-dir``, read with ``advjax.data.load("cifar10", ...)``) -- days on this CPU, not run here.
* ``cpu``: ResNet-20 (0.27M params, the CIFAR ResNet of He et al.) on the only CIFAR-10 images on
  these machines, the JPEG-q75 copy of the 10k **test** set (stored sorted by class): a fixed
  stratified split, 9000 train (900 per class) / 1000 held out. 6 epochs, cyclic schedule only, AutoAttack left out (its APGD-T/FAB-T/Square
  ensemble alone would take hours here); robust accuracy on 500 held-out images.
* ``quick``: a smoke test (1000 training images, 2 epochs, FGSM-SDI and FGSM-RS).

Paper values: the thesis' Tables III (piecewise, 110 epochs), IV (the thesis author's
reimplementation) and VI (cyclic, 30 epochs), copied as printed into
``experiments.sdi.paper_values``; results.md shows ``ours (paper)`` per cell against the table of
the schedule run (VI for cyclic, III for piecewise), the other tables as printed, and the thesis'
claims decided from our numbers (one run: the binomial standard error of an accuracy difference
on the evaluated images stands in for the seed spread).

Measured at scale ``cpu`` (2026-11-22, seed 0; robust accuracy % on 500 held-out images, eps 8/255;
the best checkpoint is the last one except for FGSM-CKPT):

=============  =====  ======  ======  ======  =====  =======
method         clean  PGD-10  PGD-20  PGD-50  CW-20  APGD-CE
=============  =====  ======  ======  ======  =====  =======
FGSM-SDI       40.0   29.0    29.0    29.0    24.8   28.0
FGSM-RS        40.8   26.2    26.2    26.2    24.0   26.0
FGSM-CKPT best 34.8   13.6    13.2    13.2    13.8   13.2
FGSM-CKPT last 46.6   12.8    12.2    12.4    13.0   11.6
FGSM-GA        39.0   25.2    25.4    25.4    23.6   25.0
Free-AT (m=8)  26.6   19.4    19.4    19.4    18.0   19.4
PGD-AT         40.6   28.2    28.0    28.0    24.6   26.8
=============  =====  ======  ======  ======  =====  =======

(``MEASURED_CPU`` below holds these numbers; ``measured_cpu_report()`` renders them beside Table VI
with the claims.) FGSM-SDI is the most robust here, PGD-AT second. FGSM-CKPT trains an example clean when the model
already misclassifies it, which at ~40% clean accuracy is most of them, hence its low robustness at
this scale. The run's "time/epoch" column is not a speed measurement: FGSM-SDI's run (277 s/epoch,
above PGD-AT's 228) and others shared the machine with benchmarks that paused them (SIGSTOP),
which the per-epoch throughput counts; use ``benchmarks/bench_sdi.py`` for speed.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import pathlib
import sys
import time

from experiments import claims as C
from experiments._shared_data import load_local
from experiments.base import Experiment, ExperimentResult, fmt
from experiments.sdi import _render as R
from experiments.sdi import paper_values as PV

EPS = 8 / 255

# the baselines (method registry name, settings), as in the thesis' comparison
METHODS = {
    "FGSM-SDI": ("fgsm_sdi", {"eps": EPS, "alpha": EPS, "k": 20}),
    "FGSM-RS": ("fgsm_rs", {"eps": EPS, "alpha": 10 / 255}),
    "FGSM-CKPT": ("fgsm_ckpt", {"eps": EPS, "alpha": 10 / 255, "c": 3}),
    "FGSM-GA": ("fgsm_ga", {"eps": EPS, "lam": 0.5}),
    "Free-AT (m=8)": ("free_at", {"eps": EPS, "m": 8}),
    "PGD-AT": ("pgd_at", {"eps": EPS, "alpha": 2 / 255, "steps": 10}),
}
EVAL_ATTACKS = ("pgd10", "pgd20", "pgd50", "cw20", "apgd-ce", "aa")
PAPER_VALUES = {"Table III": PV.TABLE3, "Table IV": PV.TABLE4, "Table VI": PV.TABLE6}

# the cpu-scale run of 2026-11-22 (seed 0, cyclic, 6 epochs, ResNet-20, 9000 training images,
# 500 held-out images; the module docstring): best checkpoint (= last except FGSM-CKPT)
MEASURED_CPU = {
    "FGSM-SDI": {"clean": 40.0, "pgd10": 29.0, "pgd20": 29.0, "pgd50": 29.0, "cw20": 24.8, "apgd-ce": 28.0},
    "FGSM-RS": {"clean": 40.8, "pgd10": 26.2, "pgd20": 26.2, "pgd50": 26.2, "cw20": 24.0, "apgd-ce": 26.0},
    "FGSM-CKPT": {"clean": 34.8, "pgd10": 13.6, "pgd20": 13.2, "pgd50": 13.2, "cw20": 13.8, "apgd-ce": 13.2},
    "FGSM-GA": {"clean": 39.0, "pgd10": 25.2, "pgd20": 25.4, "pgd50": 25.4, "cw20": 23.6, "apgd-ce": 25.0},
    "Free-AT (m=8)": {"clean": 26.6, "pgd10": 19.4, "pgd20": 19.4, "pgd50": 19.4, "cw20": 18.0, "apgd-ce": 19.4},
    "PGD-AT": {"clean": 40.6, "pgd10": 28.2, "pgd20": 28.0, "pgd50": 28.0, "cw20": 24.6, "apgd-ce": 26.8},
}
MEASURED_CPU_LAST_CKPT = {"clean": 46.6, "pgd10": 12.8, "pgd20": 12.2, "pgd50": 12.4, "cw20": 13.0, "apgd-ce": 11.6}


@dataclasses.dataclass(frozen=True)
class SDIScale:
    model: str
    epochs: dict                  # schedule -> epochs
    n_train: int | None           # None: the whole training split
    n_eval: int                   # test images for the final robust evaluation
    monitor_size: int             # per-epoch monitor subset (train and test)
    batch_size: int = 128
    lr: float = 0.1
    methods: tuple = tuple(METHODS)
    attacks: tuple = EVAL_ATTACKS
    data: str = "cifar10-test-split"  # or "cifar10" (the real training split)
    free_at_epochs_divided: bool = True  # Free-AT: epochs / m passes (same number of updates)


SCALES = {
    "paper": SDIScale(model="resnet18", epochs={"piecewise": 110, "cyclic": 30}, n_train=None,
                      n_eval=10_000, monitor_size=1000, data="cifar10"),
    "cpu": SDIScale(model="resnet20", epochs={"cyclic": 6}, n_train=9000, n_eval=500, monitor_size=500,
                    attacks=("pgd10", "pgd20", "pgd50", "cw20", "apgd-ce")),
    "quick": SDIScale(model="resnet20", epochs={"cyclic": 2}, n_train=1000, n_eval=200, monitor_size=200,
                      methods=("FGSM-SDI", "FGSM-RS"), attacks=("pgd10", "cw20")),
}


# ------------------------------------------------------------------------------------------
# shared by sdi-k and sdi-overfitting
# ------------------------------------------------------------------------------------------
def load_cifar10_split(n_train: int | None, data: str = "cifar10-test-split", data_dir=None):
    """(x_train, y_train), (x_test, y_test) as uint8 / int32 numpy.

    ``"cifar10-test-split"``: the JPEG-q75 CIFAR-10 test set of ../shared/data (stored sorted by
    class), split by a fixed seed into 900 training + 100 held-out images per class; the first
    ``n_train`` of the (shuffled) training part are used.
    ``"cifar10"``: the real train/test splits via ``advjax.data.load`` (``data_dir``)."""
    import numpy as np
    from advjax.data import load

    if data == "cifar10":
        tr = load("cifar10", "train", data_dir=data_dir)
        te = load("cifar10", "test", data_dir=data_dir)
        x_tr, y_tr, x_te, y_te = tr.x, tr.y, te.x, te.y
    else:
        ds = load("cifar10", "test", data_dir=data_dir) if data_dir else load_local("cifar10", "test")
        x, y = np.asarray(ds.x), np.asarray(ds.y).astype(np.int32)
        # the file is sorted by class: a fixed stratified split, 900 + 100 images per class,
        # each part in a fixed shuffled order (so any prefix is class-balanced too)
        rng = np.random.default_rng(20221)
        tr_idx, te_idx = [], []
        for c in range(int(y.max()) + 1):
            idx = rng.permutation(np.flatnonzero(y == c))
            cut = int(round(0.9 * len(idx)))
            tr_idx.append(idx[:cut])
            te_idx.append(idx[cut:])
        tr_idx = rng.permutation(np.concatenate(tr_idx))
        te_idx = rng.permutation(np.concatenate(te_idx))
        x_tr, y_tr, x_te, y_te = x[tr_idx], y[tr_idx], x[te_idx], y[te_idx]
    if n_train is not None:
        x_tr, y_tr = x_tr[:n_train], y_tr[:n_train]
    return (np.asarray(x_tr), np.asarray(y_tr, np.int32)), (np.asarray(x_te), np.asarray(y_te, np.int32))


def optimizer_config(schedule: str, epochs: int, lr: float = 0.1):
    from advjax.train.optim import OptimizerConfig

    if schedule == "piecewise":  # the released code: MultiStepLR at 100/110 and 105/110 of the run
        return OptimizerConfig(name="momentum", lr=lr, momentum=0.9, weight_decay=5e-4, schedule="piecewise",
                               milestones=(round(epochs * 100 / 110), round(epochs * 105 / 110)))
    if schedule == "cyclic":  # CyclicLR 0 -> lr -> 0, up for half the run
        return OptimizerConfig(name="momentum", lr=lr, momentum=0.9, weight_decay=5e-4, schedule="cyclic",
                               cycle_peak=0.5)
    raise ValueError(f"unknown schedule {schedule!r}; use 'piecewise' or 'cyclic'")


def train_one(run_dir, method: str, method_kwargs: dict, *, model: str, train, test, epochs: int,
              schedule: str, batch_size: int = 128, lr: float = 0.1, monitor_size: int = 500,
              augment: bool = True, seed: int = 0, eval_eps: float = EPS, eval_alpha: float = 2 / 255,
              dataset: str = "cifar10", optimizer=None):
    """One training run with the engine's loop (per-epoch clean + PGD-10 monitor, best/last ckpts).

    ``optimizer``: an ``OptimizerConfig``; default SGD with ``schedule`` and peak ``lr``."""
    from advjax.train.config import TrainConfig
    from advjax.train.loop import fit

    kw = dict(method_kwargs)
    if method == "fgsm_sdi" and kw.get("mode") == "reference":
        kw.setdefault("steps_per_epoch", len(train[0]) // batch_size)
    cfg = TrainConfig(model=model, dataset=dataset, method=method, method_kwargs=kw, epochs=epochs,
                      batch_size=batch_size, optimizer=optimizer or optimizer_config(schedule, epochs, lr),
                      augment=augment, seed=seed, eval_size=monitor_size, eval_steps=10, eval_eps=eval_eps,
                      eval_alpha=eval_alpha, run_dir=str(run_dir), num_classes=10,
                      input_shape=tuple(int(d) for d in train[0].shape[1:]))
    print(f"[sdi] training {method} -> {run_dir}: {epochs} epoch(s) on {len(train[0])} images", file=sys.stderr,
          flush=True)
    return fit(cfg, train_data=train, test_data=test, progress=True)


def robust_eval(state, x, y, attacks, *, eps: float = EPS, batch_size: int = 250, seed: int = 0,
                include_clean: bool = True) -> dict:
    """Accuracy (%) on (x, y): clean (unless ``include_clean=False``) and under each named attack
    (``advjax.attacks.get_attack``).

    PGD and CW run with step size eps / 4 (the thesis' evaluation: 2/255 at eps = 8/255)."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    from advjax.attacks import get_attack

    model = state.model
    variables = state.variables()
    apply_fn = lambda v, z: model.apply(v, z, train=False)
    xf = np.asarray(x, np.float32) / (255.0 if np.asarray(x).dtype == np.uint8 else 1.0)
    y = np.asarray(y, np.int32)

    def count_fn(attack):
        run = None if attack is None else getattr(attack, "run", attack)

        @jax.jit
        def f(v, xb, yb, key):
            xa = xb if run is None else run(apply_fn, v, xb, yb, key)
            return jnp.sum(jnp.argmax(apply_fn(v, xa), -1) == yb)
        return f

    out = {}
    for name in (("clean",) if include_clean else ()) + tuple(attacks):
        extra = {"step_size": eps / 4} if name.startswith(("pgd", "cw")) else {}
        attack = None if name == "clean" else get_attack(name, eps=eps, **extra)
        f = count_fn(attack)
        correct, t0 = 0, time.perf_counter()
        for i, s in enumerate(range(0, len(xf), batch_size)):
            xb, yb = jnp.asarray(xf[s:s + batch_size]), jnp.asarray(y[s:s + batch_size])
            correct += int(f(variables, xb, yb, jax.random.PRNGKey(seed * 1000 + i)))
        out[name] = 100.0 * correct / len(xf)
        print(f"[sdi]   eval {name}: {out[name]:.1f}% of {len(xf)} in {time.perf_counter() - t0:.0f} s",
              file=sys.stderr, flush=True)
    return out


def best_state(result):
    """The best-by-test-PGD-10 checkpoint of a ``fit`` result (the last state if none)."""
    from advjax.train import checkpoint as ckpt

    restored = ckpt.restore_checkpoint(pathlib.Path(result.run_dir) / "checkpoints" / "best", result.state)
    return result.state if restored is None else restored[0]


def params_fingerprint(state) -> str:
    """sha256 of a state's parameters and batch-norm statistics (names, shapes and bytes)."""
    import hashlib

    import jax
    import numpy as np

    h = hashlib.sha256()
    for path, leaf in jax.tree_util.tree_leaves_with_path(state.variables()):
        a = np.asarray(leaf)
        h.update(f"{jax.tree_util.keystr(path)}{a.shape}{a.dtype}".encode())
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def _cached_eval(cache: dict, save, state, x, y, attacks, kw) -> dict:
    """robust_eval of ``state``, one attack at a time, each looked up in / stored to ``cache``
    (then ``save()``d) under a key of the state's fingerprint, the attack, the data and the
    settings: a changed state or setting re-evaluates, an interrupted evaluation resumes."""
    import hashlib

    import numpy as np

    data = hashlib.sha256(np.ascontiguousarray(np.asarray(x)).tobytes()
                          + np.ascontiguousarray(np.asarray(y)).tobytes()).hexdigest()[:16]
    fingerprint = params_fingerprint(state)
    out = {}
    for name in ("clean",) + tuple(attacks):
        key = json.dumps({"params": fingerprint, "attack": name, "data": data, **kw}, sort_keys=True, default=float)
        if key in cache:
            print(f"[sdi]   eval {name}: {cache[key]:.1f}% (from the run's evaluations.json)", file=sys.stderr,
                  flush=True)
        else:
            clean = name == "clean"
            cache[key] = robust_eval(state, x, y, () if clean else (name,), include_clean=clean, **kw)[name]
            save()
        out[name] = cache[key]
    return out


def evaluate_best_and_last(result, x, y, attacks, *, cache_path=None, **kw) -> tuple[dict, dict]:
    """(best, last): :func:`robust_eval` of the best-by-test-PGD-10 checkpoint and of the last
    state. When the best checkpoint is the last state (same parameters) it is evaluated once.

    ``cache_path``: a JSON file (e.g. ``<run_dir>/evaluations.json``) of earlier results, keyed by
    the evaluated parameters' fingerprint, the attack, the data and ``kw``; a re-run of an
    experiment then repeats no finished evaluation, and an interrupted one resumes per attack."""
    import jax
    import numpy as np

    cache_path = None if cache_path is None else pathlib.Path(cache_path)
    cache = json.loads(cache_path.read_text()) if cache_path is not None and cache_path.exists() else {}

    def save():
        tmp = cache_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(cache, indent=1, default=float))
        tmp.replace(cache_path)

    def evaluate(state):
        if cache_path is None:
            return robust_eval(state, x, y, attacks, **kw)
        return _cached_eval(cache, save, state, x, y, attacks, kw)

    last = evaluate(result.state)
    best_st = best_state(result)
    same = all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(best_st.params),
                                                    jax.tree.leaves(result.state.params)))
    if same:
        print("[sdi]   best checkpoint = last state: evaluated once", file=sys.stderr, flush=True)
        return dict(last), last
    return evaluate(best_st), last


def train_seconds(result, n_train: int, batch_size: int) -> float:
    """Training time from the run's per-epoch throughput (also right for a run resumed from its
    checkpoints, where the wall time of this call is only the restore)."""
    per_epoch = n_train // batch_size * batch_size
    return float(sum(per_epoch / h["images_per_s"] for h in result.history if h.get("images_per_s")))


def header(sc: SDIScale, key: str, n_train: int, n_eval: int) -> str:
    """The scale paragraph at the top of results.md: what was run and what differs from the thesis."""
    if key == "paper":
        return (f"**Scale: `paper`.** ResNet-18, the full CIFAR-10 training split, {n_eval} test images, eps 8/255, "
                "piecewise 110 epochs and cyclic 30 epochs: the thesis' setting.")
    eps = ", ".join(f"{k} {v} epochs" for k, v in sc.epochs.items())
    return (f"**Scale: `{key}`: do not read these numbers as a failed reproduction.** What differs from the "
            f"thesis' setting: {sc.model} (0.27M parameters; the thesis: ResNet-18, 11M) trained on {n_train} images of "
            "the CIFAR-10 *test-set* JPEG copy (stratified 9000/1000 split; the thesis: the 50k training images), "
            f"{eps} (the thesis: 110 piecewise / 30 cyclic), robust accuracy on {n_eval} held-out images (the thesis: "
            f"10k), attacks {', '.join(sc.attacks)}" + ("" if "aa" in sc.attacks else " (AutoAttack left out: hours here)")
            + ", one seed. As in the thesis: eps 8/255, PGD/CW step 2/255, SGD momentum 0.9, weight decay 5e-4, "
            "batch 128, crop + flip, the same methods and settings (FGSM-SDI k = 20).")


def render(metrics: dict, sc: SDIScale, key: str, n_eval: int) -> list[str]:
    """results.md body from ``metrics["runs"]`` ({"<schedule>/<method>": {"best", "last",
    "epochs", "train_seconds"}}): per schedule the best and last tables ``ours (paper)``, the
    thesis' claims decided, the thesis' other tables as printed."""
    n_train = metrics.get("n_train", sc.n_train or 50000)
    md = [header(sc, key, n_train, n_eval), ""]
    cols = ["clean"] + list(sc.attacks)
    full = key == "paper"
    for schedule, epochs in sc.epochs.items():
        table, tname = (PV.TABLE6, "VI") if schedule == "cyclic" else (PV.TABLE3, "III")
        rows_best, rows_last = {}, {}
        for label in sc.methods:
            r = metrics["runs"].get(f"{schedule}/{label}")
            if r is None:
                continue
            t = r.get("train_seconds")
            rows_best[label] = {**r["best"], "time/epoch (s)": None if t is None else t / max(1, r["epochs"])}
            rows_last[label] = r["last"]
        md += [f"### {schedule} schedule, {epochs} epochs: best checkpoint (by test PGD-10), ours (thesis Table {tname})",
               "", R.method_table(rows_best, cols, table, "Best", time_col="time/epoch (s)"), "",
               f"### {schedule} schedule: last checkpoint, ours (thesis Table {tname}, Last)", "",
               R.method_table(rows_last, cols, table, "Last"), ""]
        noise = R.single_run_noise(rows_best, n_eval)
        verdicts = C.decide_all(R.comparison_claims(table, tname, full_scale=full and schedule == "piecewise",
                                                    timing_reliable=False),
                                [R.numbers(metrics["runs"], schedule)], noise=noise)
        md += [f"### The thesis' claims (Table {tname}), decided from this run", "",
               *([R.QUICK_NOTE, ""] if key == "quick" else []),
               f"One run: the binomial standard error of a difference of two accuracies on {n_eval} images "
               f"({noise:.2f} points) stands in for the seed spread.", "", C.table(verdicts), "",
               f"Summary: {C.summary(verdicts)}.", ""]
        metrics.setdefault("claims", {})[schedule] = [{"claim": v.claim.text, "verdict": v.verdict, "mean": v.mean}
                                                      for v in verdicts]
    md += ["### The thesis' tables as printed (ResNet-18, CIFAR-10, eps 8/255)", "",
           R.paper_only_table(PV.TABLE3, "Table III (piecewise, 110 epochs; Original [111])"), "",
           R.paper_only_table(PV.TABLE4, "Table IV (the thesis author's reimplementation)"), "",
           R.paper_only_table(PV.TABLE6, "Table VI (cyclic learning rate, 30 epochs)"), "",
           "Our time column is seconds per epoch on this machine (monitor included); the thesis' is total "
           "minutes on a GPU: not comparable. Free-AT runs epochs/m passes (same number of parameter updates)."]
    return md


def measured_cpu_report() -> str:
    """The cpu-scale numbers of the module docstring rendered beside Table VI, with the claims."""
    sc = SCALES["cpu"]
    runs = {f"cyclic/{m}": {"best": v, "last": (MEASURED_CPU_LAST_CKPT if m == "FGSM-CKPT" else v),
                            "epochs": 6, "train_seconds": None} for m, v in MEASURED_CPU.items()}
    return "\n".join(render({"runs": runs, "n_train": 9000}, sc, "cpu", 500))


def _row_table(rows: dict, cols) -> str:
    head = ["method"] + list(cols)
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, vals in rows.items():
        lines.append(f"| {name} | " + " | ".join(fmt(vals.get(c)) for c in cols) + " |")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------
def run(scale: str = "cpu", quick: bool = False, out_dir=".", seed: int = 0) -> ExperimentResult:
    key = "quick" if quick else scale
    if key not in SCALES:
        raise ValueError(f"sdi-cifar10: unknown scale {scale!r}; use one of {sorted(set(SCALES) - {'quick'})}")
    sc = SCALES[key]
    out_dir = pathlib.Path(out_dir)
    data_dir = os.environ.get("ADVJAX_CIFAR10_DIR") if sc.data == "cifar10" else None
    (x_tr, y_tr), (x_te, y_te) = load_cifar10_split(sc.n_train, sc.data, data_dir)
    x_ev, y_ev = x_te[:sc.n_eval], y_te[:sc.n_eval]
    metrics: dict = {"runs": {}, "n_train": len(x_tr)}
    md = []
    for schedule, epochs in sc.epochs.items():
        for label in sc.methods:
            name, kw = METHODS[label]
            ep = epochs
            if name == "free_at" and sc.free_at_epochs_divided:
                ep = max(1, math.ceil(epochs / kw["m"]))
            res = train_one(out_dir / "runs" / f"{schedule}_{name}", name, kw, model=sc.model,
                            train=(x_tr, y_tr), test=(x_ev, y_ev), epochs=ep, schedule=schedule,
                            batch_size=sc.batch_size, lr=sc.lr, monitor_size=sc.monitor_size, seed=seed)
            train_s = train_seconds(res, len(x_tr), sc.batch_size)
            best, last = evaluate_best_and_last(res, x_ev, y_ev, sc.attacks, seed=seed,
                                                cache_path=pathlib.Path(res.run_dir) / "evaluations.json")
            metrics["runs"][f"{schedule}/{label}"] = {"best": best, "last": last, "epochs": ep,
                                                      "train_seconds": train_s, "history": res.history,
                                                      "best_epoch": (res.best or {}).get("epoch")}
            (out_dir / "partial.json").write_text(json.dumps(metrics, indent=1, default=float))
    md += render(metrics, sc, key, len(x_ev))
    config = {"scale": key, **dataclasses.asdict(sc), "methods_settings": {m: METHODS[m] for m in sc.methods},
              "seed": seed}
    return ExperimentResult(markdown="\n".join(md), config=config, metrics=metrics, plots=())


EXPERIMENT = Experiment(
    name="sdi-cifar10",
    description="FGSM-SDI vs FGSM-RS/CKPT/GA, Free-AT, PGD-AT on CIFAR-10, ours beside thesis Tables III/IV/VI, claims",
    paper='Jia et al., "Boosting Fast Adversarial Training with Learnable Adversarial Initialization", '
          "IEEE TIP 2022; thesis ch. 3, Tables III and VI",
    expected_runtime={"quick": "~10 min on 2 shared cores", "cpu": "~6-10 h on 2 cores (6 methods x 6 epochs, "
                      "ResNet-20, 9k images)", "paper": "days on CPU; ~1 GPU-day (ResNet-18, 110 + 30 epochs x 6)"},
    paper_values=PAPER_VALUES,
    run=run,
)
