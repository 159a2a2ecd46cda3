"""Shared body of the image tables of the LSA paper (Table 3: MNIST, Table 4: CIFAR-10): normal
training, a base adversarial training method and its AT-LR variant, trained one after the other
with the engine's ``fit`` (same seed: same initial weights, batches and attack noise), evaluated
as the paper evaluates -- accuracy under **FGSM** over the paper's eps list and the R&G score,
``ours (paper)`` -- with the paper's PGD setting (7 iterations of step 0.005) and a stronger
PGD-``eval_steps`` beside it, the paper's claims decided (one seed: the binomial standard error of
the test accuracies stands in for the seed spread), then LSA of the models (MVL list, per-layer CM
curves for FGSM / PGD / statistical perturbations)."""
from __future__ import annotations

import dataclasses
import hashlib
import pathlib
import time

import jax
import numpy as np

from advjax.analysis import lsa as lsa_analysis
from advjax.analysis import plots
from advjax.losses.lsa import at_lr_name
from experiments.lsa import _train as T
from experiments._shared_data import load_local
from experiments.base import ExperimentResult, accuracy_table
from advjax.attacks import PGD, get_attack
from advjax.eval import robust_accuracy



@dataclasses.dataclass(frozen=True)
class ImageTableConfig:
    model: str                       # registry name, e.g. "model_b", "vgg19"
    dataset: str                     # advjax.data name
    train_split: str
    test_split: str
    base: str = "apgd"               # _lsa_train base method
    lr_layer: int = 0                # the AT-LR layer (L0 for Table 3, L1 for Table 4)
    gamma: float = 1.0
    train_eps: float = 0.3
    eval_eps: tuple[float, ...] = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5)   # Table 3's; Table 4: 0, .01, .03, .1, .2
    epochs: int = 1
    batch_size: int = 128
    lr: float = 1e-3
    optimizer: str = "adam"
    steps: int = 10                  # attack steps in training
    eval_steps: int = 10             # PGD steps in evaluation
    n_eval: int = 500                # test samples evaluated
    lsa_samples: int = 200
    eta: float = 0.5
    shuffle_seed: int | None = None  # for class-sorted files (the shared CIFAR-10 npz)
    plots: bool = True
    monitor_size: int = 500          # per-epoch clean + PGD-10 monitor of fit (train and test subsets);
                                     # 0 skips it (and its compile: minutes for VGG-19 on CPU)
    eps_warmup_epochs: float = 0.0   # > 0: the training eps ramps up linearly over this many epochs
                                     # (advjax.methods.EpsWarmup)
    normal: bool = True              # also train the "Normal" row (standard training)
    paper_pgd_steps: int = 7         # the paper's PGD evaluation setting (Sec. 4.1.3)
    paper_pgd_step: float = 0.005


def _load(cfg: ImageTableConfig):
    kw = {} if cfg.shuffle_seed is None else {"shuffle_seed": cfg.shuffle_seed}
    try:
        tr = load_local(cfg.dataset, cfg.train_split, **kw)
    except (FileNotFoundError, ValueError) as e:
        raise FileNotFoundError(
            f"this configuration trains on {cfg.dataset} split {cfg.train_split!r} (e.g. the full training split, "
            f"as the paper), which was not found. Where advjax.data looked, and how to get it:\n{e}") from None
    te = load_local(cfg.dataset, cfg.test_split, **kw)

    def f(x):
        x = np.asarray(x)
        return (x.astype(np.float32) / 255.0) if x.dtype == np.uint8 else x.astype(np.float32)

    return f(tr.x), np.asarray(tr.y, np.int32), f(te.x), np.asarray(te.y, np.int32), tr, te


def _fit_variants(cfg: ImageTableConfig, tcfg, model, x, y, xt, yt, out_dir, seed):
    """Train the base method and its AT-LR variant one after the other with the engine's ``fit``
    (same seed: same initial weights, same batches, same attack noise). Returns the variables by
    name, the per-epoch mean training loss [2, epochs] and the per-epoch monitor records."""
    from advjax.methods.at_lr import at_lr, paper_name
    from advjax.train.config import TrainConfig
    from advjax.train.loop import fit
    from advjax.train.optim import OptimizerConfig

    base_m = T.engine_method(cfg.base, tcfg)
    if cfg.eps_warmup_epochs > 0:
        from advjax.methods.eps_warmup import EpsWarmup

        base_m = EpsWarmup(base_m, warmup_steps=max(1, round(cfg.eps_warmup_epochs * (len(x) // cfg.batch_size))))
    methods = ([T.engine_method("normal", tcfg)] if cfg.normal else []) + [base_m, at_lr(base_m, (cfg.lr_layer,), cfg.gamma)]
    # the same optimizers as _lsa_train.make_optimizer: Adam, or SGD momentum 0.9 + weight decay 5e-4
    opt = OptimizerConfig(name="adam", lr=cfg.lr) if cfg.optimizer == "adam" else \
        OptimizerConfig(name="momentum", lr=cfg.lr, momentum=0.9, weight_decay=5e-4)
    variables, losses, history = {}, [], {}
    tag = hashlib.sha1(repr(sorted(dataclasses.asdict(cfg).items())).encode()).hexdigest()[:8]  # one dir per config
    for i, m in enumerate(methods):
        name = "Normal" if i == 0 and cfg.normal else paper_name(m)
        reg = ("standard" if name == "Normal" else
               T.ENGINE_NAMES[cfg.base] if m is base_m else "at_lr")  # the registry's name (the run's label)
        tc = TrainConfig(model=cfg.model, dataset=cfg.dataset, method=reg, epochs=cfg.epochs,
                         batch_size=cfg.batch_size, optimizer=opt, seed=seed, eval_size=min(cfg.monitor_size, len(xt)),
                         eval_steps=10, eval_eps=cfg.train_eps, run_dir=str(pathlib.Path(out_dir) / "runs" / f"{name}-{tag}"),
                         num_classes=int(np.max(y)) + 1, input_shape=tuple(int(d) for d in x.shape[1:]))
        print(f"[lsa] training {name}: {cfg.epochs} epoch(s) on {len(x)} images", flush=True)
        res = fit(tc, train_data=(x, y), test_data=(xt, yt), model=model, method=m, progress=True)
        variables[name] = res.state.variables()
        history[name] = res.history
        losses.append([float(h["train_loss"]) for h in res.history])
    return variables, np.asarray(losses), history


def run_image_table(cfg: ImageTableConfig, out_dir, seed: int, title: str, notes: list[str],
                    paper: dict | None = None, claims: list | None = None,
                    header: str = "") -> ExperimentResult:
    """Train, evaluate (FGSM headline, PGD extras), decide ``claims`` and run LSA.

    paper: {row: ([accs at cfg.eval_eps], R&G as printed)}; claims: ``experiments.claims.Claim``s
    over the numbers ``rg/<row>`` and ``acc/<row>/<eps>`` of the FGSM table; header: the
    scale / what-differs paragraph put at the top."""
    from advjax.attacks import FGSM

    from experiments import claims as C
    from experiments.lsa import _tables as TB

    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    x, y, xt, yt, tr, te = _load(cfg)
    xt, yt = xt[: cfg.n_eval], yt[: cfg.n_eval]
    _, features_fn, model_src, model = T.model_fns(cfg.model, tr.num_classes, tuple(x.shape[1:]))
    domain = getattr(tr, "domain", (0.0, 1.0))
    tcfg = T.TrainConfig(eps=cfg.train_eps, epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr,
                         pgd_steps=cfg.steps, domain=domain, optimizer=cfg.optimizer)
    base_name = T.PAPER_NAMES[cfg.base]
    names = (["Normal"] if cfg.normal else []) + [base_name, at_lr_name(base_name, cfg.lr_layer)]
    variables, losses, history = _fit_variants(cfg, tcfg, model, x, y, xt, yt, out_dir, seed)
    t_train = time.perf_counter() - t0

    t1 = time.perf_counter()
    attacks = {"FGSM": FGSM(),
               f"PGD-{cfg.paper_pgd_steps} (step {cfg.paper_pgd_step:g}, the paper's PGD setting)":
                   PGD(steps=cfg.paper_pgd_steps, step_size=cfg.paper_pgd_step),
               f"PGD-{cfg.eval_steps}": PGD(steps=cfg.eval_steps)}
    tables = {a: {} for a in attacks}
    for n in names:
        res = robust_accuracy(model, variables[n], (xt, yt), attacks, cfg.eval_eps,
                              batch_size=250, key=seed + 1, domain=domain, progress=False, checks=False)
        for a in attacks:
            tables[a][n] = np.asarray([[100.0 * res.table[a][e] for e in res.eps_list]])  # [1 seed, E], percent
    t_eval = time.perf_counter() - t1
    fgsm = tables["FGSM"]
    rg = {n: float(fgsm[n].sum()) for n in names}
    pgd_label = f"PGD-{cfg.eval_steps}"

    verdicts, verdicts_pgd, noise = [], [], None
    if claims:
        # one seed: the binomial SE of an accuracy difference on n test images, summed over the eps
        # list (as if fully correlated: conservative), stands in for the seed spread of an R&G margin
        a, b = names[-1], names[-2]
        noise = sum(C.accuracy_diff_se(p, q, len(xt)) for p, q in zip(fgsm[a][0], fgsm[b][0]))
        verdicts = C.decide_all(claims, TB.numbers_per_seed(fgsm, cfg.eval_eps), noise=noise)
        verdicts_pgd = C.decide_all(claims, TB.numbers_per_seed(tables[pgd_label], cfg.eval_eps), noise=noise)

    t2 = time.perf_counter()
    lk = jax.random.PRNGKey(seed + 2)
    probe_eps = cfg.train_eps
    mvl_rows, mvls, panels, layer_names = [], {}, {}, None
    m_samples = min(cfg.lsa_samples, len(xt))
    for n in names:
        m, _ = lsa_analysis.algorithm2(features_fn, variables[n], xt, yt, get_attack("fgsm", eps=probe_eps, domain=domain), lk,
                                       num_samples=m_samples, eta=cfg.eta)
        mvls[n] = list(m.layers)
        layer_names = m.all_names
        mvl_rows.append(f"| {n} | " + " | ".join(f"{c:.3f}" for c in m.cm) +
                        f" | {', '.join(f'L{i}' for i in m.layers) or '(empty)'} |")
    plot_files = []
    if cfg.plots:
        perts = lsa_analysis.default_perturbations(probe_eps, domain=domain)
        xs, ys = xt[: min(64, len(xt))], yt[: min(64, len(yt))]
        for n in names:
            _, c = lsa_analysis.perturbation_cms(features_fn, variables[n], xs, ys, lk, perts)
            panels[n] = {k: v.tolist() for k, v in c.items()}
        plots.plot_lsa_before_after(out_dir / "lsa_cm_per_layer.png", layer_names, panels, mvls)
        plot_files.append("lsa_cm_per_layer.png")
    t_lsa = time.perf_counter() - t2

    stronger = {pgd_label: tables[pgd_label]}
    md = ([header, ""] if header else []) + [
        f"## {title}: accuracy (%) under FGSM and R&G score (one seed)", "",
        "Cells: ours (the paper's value as printed).", "",
        TB.seed_table(fgsm, cfg.eval_eps, paper), "",
        TB.overstatement(fgsm, stronger, cfg.eval_eps), ""]
    if claims:
        md += ["### The paper's claims (FGSM table)", "",
               f"One seed: the seed spread is unknown, so the binomial standard error of the accuracy differences "
               f"on {len(xt)} test images, summed over the eps list ({noise:.2f} R&G points), stands in for it.", "",
               C.table(verdicts), "", f"Summary: {C.summary(verdicts)}. Under {pgd_label} instead of FGSM: "
               f"{C.summary(verdicts_pgd)}.", ""]
    md += ["### Stronger attacks (not in the paper's tables)", ""]
    for a in attacks:
        if a != "FGSM":
            md += [f"#### {a}", "", TB.seed_table(tables[a], cfg.eval_eps, None), ""]
    md += [f"## LSA: FGSM eps={probe_eps:g}, M={m_samples}, eta={cfg.eta:g}", "",
           "| model | " + " | ".join(f"L{i}" for i in range(len(layer_names))) + " | MVL |",
           "|---|" + "---|" * (len(layer_names) + 1), *mvl_rows, "",
           f"Layers: {', '.join(f'L{i}={n}' for i, n in enumerate(layer_names))}", "",
           "## Setup", "",
           f"- data: train `{cfg.dataset}` split `{cfg.train_split}` ({len(x)} images, {tr.source}); "
           f"evaluate on split `{cfg.test_split}` (first {len(xt)} images)",
           *[f"- {n}" for n in notes],
           f"- model: {cfg.model} ({model_src}); methods: advjax.methods + at_lr",
           f"- training: {cfg.optimizer} lr {cfg.lr:g}, batch {cfg.batch_size}, {cfg.epochs} epoch(s), "
           f"{base_name} eps {cfg.train_eps:.4g} with {cfg.steps} steps; AT-LR gamma {cfg.gamma:g} on L{cfg.lr_layer} "
           "(our choice: the paper gives no gamma)"
           + (f"; eps ramped linearly from 0 over the first {cfg.eps_warmup_epochs:g} epoch(s) (both AT rows)"
              if cfg.eps_warmup_epochs > 0 else ""),
           f"- time: training {t_train:.1f} s, evaluation {t_eval:.1f} s, LSA + plots {t_lsa:.1f} s"]
    config = dict(dataclasses.asdict(cfg), rows=names)
    metrics = {"accuracy": {a: {n: v[0].tolist() for n, v in t.items()} for a, t in tables.items()},
               "accuracy_fgsm": {n: v[0].tolist() for n, v in fgsm.items()}, "rg_fgsm": rg,
               "accuracy_pgd": {n: v[0].tolist() for n, v in tables[pgd_label].items()},
               "rg_pgd": {n: float(v.sum()) for n, v in tables[pgd_label].items()},
               "claims": [{"claim": v.claim.text, "verdict": v.verdict, "mean": v.mean} for v in verdicts],
               "mvl": mvls, "cm_curves": panels,
               "training_loss": {n: np.asarray(losses[i]).tolist() for i, n in enumerate(names)},
               "per_epoch": history,
               "times_s": {"train": t_train, "eval": t_eval, "lsa": t_lsa}}
    return ExperimentResult(markdown="\n".join(md), config=config, metrics=metrics, plots=plot_files)
