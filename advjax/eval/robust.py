"""Robust accuracy over attacks x eps, the R&G score, and AutoAttack's sanity checks.

R&G score (robustness and generalization, Khalooei et al., LSA paper, Sec. 4): the sum of a
method's accuracies over the eps list of one attack (eps = 0 included if listed), so one number
rewards both clean accuracy and robustness. Accuracies here are fractions in [0, 1]; the R&G score
is in the same unit (multiply by 100 for the paper's percentages).

Placement (accelerators, several devices or processes): ``robust_accuracy`` puts the variables on
the devices once, replicated on a mesh (``advjax.train.mesh``), shards every evaluation batch on
``"data"`` as the training monitor does (with several processes each process places only its rows
of a batch), and fetches the per-example flags to the host after the loop; the only reads inside
it are AutoAttack's robust flags between sub-attacks (which points the next one attacks). Counts
and accuracies are global. The numbers do not depend on the device or process count.
"""
from __future__ import annotations

import dataclasses
import json
import math
import time
import warnings
from typing import Any, Callable, Iterable, Mapping, Sequence, Union

import jax
import jax.numpy as jnp
import numpy as np

from advjax import attacks as _attacks
from advjax import losses as _losses
from advjax import precision as _precision
from advjax.attacks.autoattack import AutoAttack
from advjax.attacks.square import Square


class RobustnessWarning(UserWarning):
    """A sanity check (as in the official AutoAttack ``checks.py``) failed."""


def rg_score(accuracies: Iterable[float]) -> float:
    """R&G score: the sum of the accuracies over the eps list (LSA paper)."""
    return float(sum(float(a) for a in accuracies))


def _eps_key(e: float) -> str:
    return f"{e:.6g}"


@dataclasses.dataclass
class RobustnessResult:
    """Result of :func:`robust_accuracy`.

    Attributes:
      attacks: attack labels in order. eps_list: the eps values.
      table: {attack: {eps: accuracy}} (fractions; a point counts as robust if it is classified
        correctly both clean and under the attack).
      robust: {attack: {eps: bool [N]}} per-sample robust flags.
      clean_correct: bool [N]. clean_accuracy: float.
      rg_score: {attack: sum of accuracies over eps_list}.
      autoattack: {attack: {eps: {sub-attack: robust accuracy after it}}} for AutoAttack entries.
      autoattack_seconds: {attack: {eps: {sub-attack: its wall time, summed over batches}}}.
      warnings: the sanity-check messages raised. seconds: {attack: wall time}.
    """

    attacks: list[str]
    eps_list: list[float]
    table: dict[str, dict[float, float]]
    robust: dict[str, dict[float, np.ndarray]]
    clean_correct: np.ndarray
    clean_accuracy: float
    rg_score: dict[str, float]
    n: int
    autoattack: dict[str, dict[float, dict[str, float]]] = dataclasses.field(default_factory=dict)
    autoattack_seconds: dict[str, dict[float, dict[str, float]]] = dataclasses.field(default_factory=dict)
    warnings: list[str] = dataclasses.field(default_factory=list)
    seconds: dict[str, float] = dataclasses.field(default_factory=dict)
    meta: dict[str, Any] = dataclasses.field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "n": self.n,
            "clean_accuracy": self.clean_accuracy,
            "eps": list(self.eps_list),
            "attacks": list(self.attacks),
            "table": {a: {_eps_key(e): v for e, v in row.items()} for a, row in self.table.items()},
            "rg_score": dict(self.rg_score),
            "autoattack": {a: {_eps_key(e): d for e, d in per.items()} for a, per in self.autoattack.items()},
            "autoattack_seconds": {a: {_eps_key(e): d for e, d in per.items()}
                                   for a, per in self.autoattack_seconds.items()},
            "warnings": list(self.warnings),
            "seconds": dict(self.seconds),
            "meta": dict(self.meta),
        }

    def to_json(self, path: str | None = None, per_sample: bool = False) -> str:
        """JSON text (optionally written to ``path``); ``per_sample`` adds the robust flags."""
        d = self.to_dict()
        if per_sample:
            d["robust"] = {a: {_eps_key(e): v.astype(int).tolist() for e, v in row.items()}
                           for a, row in self.robust.items()}
            d["clean_correct"] = self.clean_correct.astype(int).tolist()
        text = json.dumps(d, indent=2, sort_keys=False)
        if path is not None:
            with open(path, "w") as f:
                f.write(text + "\n")
        return text

    def to_markdown(self) -> str:
        """A markdown table: one row per attack, one column per eps (accuracy in %), the R&G score
        (the sum of those accuracies over the eps list); then, for each AutoAttack entry, the robust
        accuracy after each sub-attack and its time, as the official verbose log shows them."""
        head = "| attack | " + " | ".join(f"eps={_eps_key(e)}" for e in self.eps_list) + " | R&G (sum over eps) |"
        sep = "|---|" + "---|" * len(self.eps_list) + "---|"
        lines = [f"clean accuracy: {100 * self.clean_accuracy:.2f}% (n = {self.n})", "",
                 "robust accuracy (%) per attack and eps:", "", head, sep]
        for a in self.attacks:
            cells = " | ".join(f"{100 * self.table[a][e]:.2f}" for e in self.eps_list)
            lines.append(f"| {a} | {cells} | {100 * self.rg_score[a]:.2f} |")
        lines += ["", f"R&G: the sum of the {len(self.eps_list)} accuracies (in %) over the eps list (LSA paper); "
                      f"not a percentage (at most {100 * len(self.eps_list)})."]
        for a, per_eps in self.autoattack.items():
            for e, per in per_eps.items():
                secs = self.autoattack_seconds.get(a, {}).get(e, {})
                lines += ["", f"{a} at eps={_eps_key(e)}: robust accuracy after each sub-attack", "",
                          "| after | robust accuracy (%) | time (s) | total time (s) |", "|---|---|---|---|",
                          f"| clean | {100 * self.clean_accuracy:.2f} | | |"]
                total = 0.0
                for sub, acc in per.items():
                    t = secs.get(sub)
                    total += t or 0.0
                    lines.append(f"| {sub} | {100 * acc:.2f} | {'' if t is None else f'{t:.1f}'} | "
                                 f"{'' if t is None else f'{total:.1f}'} |")
        if self.warnings:
            lines += ["", "warnings:"] + [f"- {w}" for w in self.warnings]
        return "\n".join(lines) + "\n"


def _as_apply_fn(model_or_apply_fn) -> Callable:
    try:
        import flax.linen as nn
    except ImportError:  # pragma: no cover
        nn = None
    if nn is not None and isinstance(model_or_apply_fn, nn.Module):
        try:
            from advjax.models import logits_fn
            return logits_fn(model_or_apply_fn)
        except ImportError:  # pragma: no cover - models package not there yet
            model = model_or_apply_fn
            return lambda variables, x: model.apply(variables, x, train=False)
    if not callable(model_or_apply_fn):
        raise ValueError(f"expected a flax Module or apply_fn(variables, x) -> logits, got {type(model_or_apply_fn)}")
    return model_or_apply_fn


def _as_arrays(data) -> tuple[np.ndarray, np.ndarray, Any]:
    """(x float32, y int32, domain or 'unknown') from a Dataset or an (x, y) pair."""
    if hasattr(data, "x") and hasattr(data, "y"):
        x, y, domain = data.x, data.y, getattr(data, "domain", "unknown")
    else:
        try:
            x, y = data
        except (TypeError, ValueError):
            raise ValueError("data must be a Dataset (with .x, .y) or an (x, y) pair") from None
        domain = "unknown"
    x = np.asarray(x)
    if x.dtype == np.uint8:
        x = x.astype(np.float32) / 255.0
    x = x.astype(np.float32, copy=False)
    y = np.asarray(y)
    if not np.issubdtype(y.dtype, np.integer) or y.ndim != 1 or y.shape[0] != x.shape[0]:
        raise ValueError(f"labels must be integer [N] matching x, got y {y.dtype} {y.shape} for x {x.shape}")
    return x, y.astype(np.int32), domain


def _resolve_attacks(attacks) -> list[tuple[str, _attacks.Attack]]:
    if isinstance(attacks, (str, _attacks.Attack)):
        attacks = [attacks]
    items = attacks.items() if isinstance(attacks, Mapping) else [(None, a) for a in attacks]
    out = []
    for label, a in items:
        if isinstance(a, str):
            label = label or a
            a = _attacks.get_attack(a)
        elif not isinstance(a, _attacks.Attack):
            raise ValueError(f"attacks must be names or Attack instances, got {a!r}")
        out.append((label or a.name, a))
    labels = [l for l, _ in out]
    if len(set(labels)) != len(labels):
        raise ValueError(f"duplicate attack labels {labels}; pass a dict label -> attack")
    return out


def _check_eps_range(named, eps_list, domain) -> None:
    """An L-inf radius wider than the input box covers the whole box: a mistaken unit (8 for
    8/255), caught before anything runs, with the same wording as ``TrainConfig.validate``."""
    if domain is None:
        return
    width = float(domain[1]) - float(domain[0])
    for label, atk in named:
        if getattr(atk, "norm", None) != "linf":
            continue
        for e in eps_list:
            if e > width:
                raise ValueError(f"eps={e:g} is out of range for the L-inf attack {label!r} on inputs in "
                                 f"{tuple(domain)}: pixels live in [0, 1], so eps must be in [0, 1] "
                                 f"(e.g. 8/255 = {8 / 255:.4f}, not 8)")


def _min_classes(atk) -> tuple[int, str]:
    """(fewest classes ``atk`` can run on, why)."""
    if isinstance(atk, AutoAttack):
        need, why, name = max(((*_min_classes(sub), name) for name, sub in atk.sub_attacks()), default=(1, "", ""))
        return need, f"its sub-attack {name}'s {why}"
    if isinstance(atk, _attacks.APGDT):
        return 4, "targeted DLR loss uses the 3rd and 4th largest logits"
    if getattr(atk, "loss", None) == "dlr":
        return 3, "DLR loss uses the 3rd largest logit"
    return 1, ""


def _check_classes(named, num_classes: int) -> None:
    """Reject, before any attack runs, an attack that cannot run on a model with this many classes."""
    for label, atk in named:
        need, why = _min_classes(atk)
        if num_classes >= need:
            continue
        if isinstance(atk, AutoAttack):
            instead = ("run the sub-attacks that work here on their own (e.g. --attacks apgd-ce,fab-t,square), or "
                       "AutoAttack(version='custom', attacks=('apgd-ce', 'fab-t', 'square')) from Python")
        else:
            instead = "use e.g. apgd-ce, fab-t, square, pgd20 or fgsm instead"
        why = why if isinstance(atk, AutoAttack) else f"its {why}"
        raise ValueError(f"attack {label!r} cannot run on this model, which has {num_classes} classes: {why}, so it "
                         f"needs at least {need}; {instead}")


# ------------------------------------------------------------------------------------------------
# sanity checks (fra31/auto-attack checks.py)
# ------------------------------------------------------------------------------------------------


def _warn(msgs: list[str], msg: str) -> None:
    msgs.append(msg)
    warnings.warn(msg, RobustnessWarning, stacklevel=3)


def sanity_checks(apply_fn, variables, x, y, key=None, msgs: list[str] | None = None) -> list[str]:
    """AutoAttack's checks on one batch: randomized model, non-logit output, zero gradients.
    ``x``, ``y`` may be host arrays or (sharded, several-process) jax arrays."""
    from advjax.train.distributed import to_host

    msgs = [] if msgs is None else msgs
    x = jnp.asarray(x)
    y = jnp.asarray(y)
    # eager (a model randomized on the host shows it), traced only for arrays that span other
    # processes (eager input checks cannot read those)
    forward = apply_fn if getattr(x, "is_fully_addressable", True) else jax.jit(apply_fn)
    out1 = to_host(forward(variables, x))
    out2 = to_host(forward(variables, x))
    norm = lambda o: o / (np.linalg.norm(o, axis=-1, keepdims=True) + 1e-10)  # noqa: E731
    if (np.argmax(out1, -1) != np.argmax(out2, -1)).any() or np.abs(norm(out1) - norm(out2)).max() > 1e-4:
        _warn(msgs, "the model seems randomized: two clean forward passes disagree (evaluate with "
                    "EOT / the 'rand' version of AutoAttack)")
    if out1.max() < 1 + 1e-5 and out1.min() > -1e-5 and (np.abs(out1.sum(-1) - 1) < 1e-5).all():
        _warn(msgs, "the model output seems to be a probability distribution: attacks need logits")
    k = out1.shape[-1]
    loss = _losses.dlr if k >= 3 else _losses.cross_entropy
    g = to_host(_grad_fn(apply_fn, loss)(variables, x, y))
    # only the correctly classified points, the ones the attacks run on (as the official APGD checks
    # its first gradient): DLR is constant, so its gradient exactly zero, wherever the true class is
    # the third-largest logit, which flags a sound model otherwise
    right = np.argmax(out1, -1) == to_host(y)
    zero = int(((np.abs(g.reshape(g.shape[0], -1)).sum(-1) == 0) & right).sum())
    if zero > 0:
        _warn(msgs, f"there are {zero}/{int(right.sum())} correctly classified points with zero gradient: "
                    "gradient-based attacks may be unreliable (gradient masking?)")
    return msgs


def _grad_fn(apply_fn, loss):
    return jax.jit(jax.grad(lambda v, x, y: jnp.sum(loss(apply_fn(v, x), y)), argnums=1))


def _square_check(msgs, accs: Mapping[str, float], where: str, alpha: float = 0.002) -> None:
    """Square stronger than the gradient attacks hints at gradient masking (checks.check_square_sr)."""
    if "square" in accs and len(accs) > 1:
        others = [v for k, v in accs.items() if k != "square"]
        if accs["square"] < min(others) - alpha:
            _warn(msgs, f"{where}: Square lowered the robust accuracy by {min(others) - accs['square']:.2%} below "
                        "the gradient-based attacks: the gradient-based evaluation may be unreliable")


# ------------------------------------------------------------------------------------------------
# the evaluator
# ------------------------------------------------------------------------------------------------


def _eval_mesh(bs: int, mesh=None):
    """The mesh of an evaluation with batches of ``bs``: ``mesh`` (checked), else every device with
    several processes (checked), else one device on the CPU (several CPU devices of one process
    share the same cores: splitting gains nothing there), else the most devices that divide ``bs``
    (the same numbers as one)."""
    from advjax.train.mesh import check_batch_size, make_mesh

    if mesh is not None:
        check_batch_size(bs, mesh)
        return mesh
    if jax.process_count() > 1:
        mesh = make_mesh()
        check_batch_size(bs, mesh)
        return mesh
    if jax.default_backend() == "cpu":
        return make_mesh(1)
    return make_mesh(max(d for d in range(1, jax.device_count() + 1) if bs % d == 0))


@_precision.evaluation  # full float32 on GPU/TPU unless a precision was chosen (advjax.precision)
def robust_accuracy(
    model_or_apply_fn,
    variables,
    data,
    attacks: Union[Sequence[Union[str, _attacks.Attack]], Mapping[str, _attacks.Attack], str],
    eps_list: Sequence[float],
    batch_size: int = 128,
    key: jax.Array | int | None = None,
    *,
    domain: Any = "auto",
    n_examples: int | None = None,
    progress: bool = True,
    checks: bool = True,
    mesh=None,
) -> RobustnessResult:
    """Accuracy of a model under each attack at each eps.

    Args:
      model_or_apply_fn: a flax Module (eval-mode logits via ``advjax.models.logits_fn``) or
        ``apply_fn(variables, x) -> logits``.
      variables: the model's variables.
      data: an ``advjax.data.Dataset`` (uint8 pixels are scaled to [0, 1]; its ``domain`` is
        used) or an ``(x, y)`` pair of arrays.
      attacks: names (``get_attack``), Attack instances, or {label: Attack}; each is run with
        ``eps`` and ``domain`` replaced.
      eps_list: the eps values (0 gives the clean accuracy).
      batch_size: examples per attack call; the last batch is padded (no recompilation).
      key: PRNG key or int seed (default 0); each (attack, eps, batch) gets its own fold.
      domain: the input box; "auto" = the dataset's domain, else (0, 1).
      n_examples: evaluate only the first n examples.
      progress: show a tqdm bar. checks: run AutoAttack's sanity checks (warnings).
      mesh: the device mesh (``advjax.train.mesh.make_mesh``) the variables are replicated on and
        each batch is sharded over; default: with several processes every device (the batch size
        must then divide by the global device count: ValueError before anything runs), with one
        process on GPU/TPU the most devices that divide the batch size, on the CPU one device.
    """
    # one-logit binary models (logits [N, 1]) are read as [0, z] (advjax.losses.ce.two_logits)
    apply_fn = _losses.ce.two_logits_fn(_as_apply_fn(model_or_apply_fn))
    x_all, y_all, data_domain = _as_arrays(data)
    if n_examples is not None:
        x_all, y_all = x_all[:n_examples], y_all[:n_examples]
    n = int(x_all.shape[0])
    if n == 0:
        raise ValueError("no examples to evaluate")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
    eps_list = [float(_attacks.base.check_eps(e)) for e in eps_list]
    if not eps_list:
        raise ValueError("eps_list is empty")
    if domain == "auto":
        domain = (0.0, 1.0) if data_domain == "unknown" else data_domain
    domain = _attacks.base.check_domain(domain)
    named = _resolve_attacks(attacks)
    _check_eps_range(named, eps_list, domain)
    _attacks.lafeat.require_heads(named)  # LAFEAT needs trained heads (LAFEAT.bind): say how, before anything runs
    if key is None:
        key = jax.random.PRNGKey(0)
    elif isinstance(key, int):
        key = jax.random.PRNGKey(key)

    bs = min(batch_size, n)
    n_batches = math.ceil(n / bs)
    pad = n_batches * bs - n
    x_pad = np.concatenate([x_all, x_all[:pad]], 0) if pad else x_all
    y_pad = np.concatenate([y_all, y_all[:pad]], 0) if pad else y_all
    # validate the data once (NaN, domain, labels); attacks then skip their own checks
    _attacks.base.check_inputs(jnp.asarray(x_all[:1]), jnp.asarray(y_all[:1]), domain, None)
    if np.isnan(x_all).any():
        raise ValueError("x contains NaN")
    if domain is not None and (x_all.min() < domain[0] or x_all.max() > domain[1]):
        raise ValueError(f"x is outside the domain {domain}: values in [{x_all.min():.4g}, {x_all.max():.4g}]")

    mesh = _eval_mesh(bs, mesh)
    from advjax.train import distributed as dist
    from advjax.train.mesh import replicated

    variables = jax.device_put(variables, replicated(mesh))  # once: replicated on every device of the mesh
    # predictions come back replicated (readable on every process), fetched after the loops
    predict = jax.jit(lambda v, x: jnp.argmax(apply_fn(v, x), axis=-1), out_shardings=replicated(mesh))

    def batch(b):  # one evaluation batch, sharded on "data" (each process places only its rows)
        return dist.shard_host_batch((x_pad[b * bs:(b + 1) * bs], y_pad[b * bs:(b + 1) * bs]), mesh)

    num_classes = int(jax.eval_shape(apply_fn, variables, jax.ShapeDtypeStruct((1,) + x_all.shape[1:],
                                                                                jnp.float32)).shape[-1])
    if y_all.min() < 0 or y_all.max() >= num_classes:
        raise ValueError(f"labels out of range [0, {num_classes}): min {y_all.min()}, max {y_all.max()}")
    _check_classes(named, num_classes)

    msgs: list[str] = []
    if checks:
        sanity_checks(apply_fn, variables, *batch(0), msgs=msgs)

    clean = np.concatenate(dist.to_host([predict(variables, batch(b)[0]) for b in range(n_batches)]))
    clean_correct = (clean == y_pad)[:n]

    table: dict[str, dict[float, float]] = {}
    robust: dict[str, dict[float, np.ndarray]] = {}
    aa_info: dict[str, dict[float, dict[str, float]]] = {}
    aa_seconds: dict[str, dict[float, dict[str, float]]] = {}
    seconds: dict[str, float] = {}
    bar = None
    if progress:
        try:
            from tqdm.auto import tqdm
            bar = tqdm(total=len(named) * len(eps_list) * n_batches, desc="robust accuracy", leave=False)
        except ImportError:  # pragma: no cover
            bar = None
    try:
        for ai, (label, atk0) in enumerate(named):
            t0 = time.perf_counter()
            table[label], robust[label] = {}, {}
            for ei, eps in enumerate(eps_list):
                atk = atk0.replace(eps=eps, domain=domain, check_inputs=False)
                flags = []
                sub_flags: dict[str, list[np.ndarray]] = {}
                sub_secs: dict[str, float] = {}
                for b in range(n_batches):
                    xb, yb = batch(b)
                    kb = jax.random.fold_in(jax.random.fold_in(jax.random.fold_in(key, ai), ei), b)
                    if bar is not None:
                        bar.set_postfix_str(f"{label} eps={eps:.4g}")
                    if isinstance(atk, AutoAttack):
                        x_adv, _, per, secs = atk.drive(apply_fn, variables, xb, yb, kb, with_times=True)
                        for name, f in per.items():
                            sub_flags.setdefault(name, []).append(f)  # on device: fetched after the batches
                            sub_secs[name] = sub_secs.get(name, 0.0) + float(secs.get(name, 0.0))
                    else:
                        x_adv = atk(apply_fn, variables, xb, yb, kb)
                    flags.append(predict(variables, x_adv))
                    if bar is not None:
                        bar.update(1)
                sub_flags = {k: dist.to_host(v) for k, v in sub_flags.items()}
                r = (np.concatenate(dist.to_host(flags)) == y_pad)[:n] & clean_correct
                robust[label][eps] = r
                table[label][eps] = float(r.mean())
                if sub_flags:
                    per_acc = {k: float(np.concatenate(v)[:n].mean()) for k, v in sub_flags.items()}
                    aa_info.setdefault(label, {})[eps] = per_acc
                    aa_seconds.setdefault(label, {})[eps] = sub_secs
                    if checks:
                        _square_check(msgs, per_acc, f"{label} at eps={eps:.4g}")
            seconds[label] = time.perf_counter() - t0
    finally:
        if bar is not None:
            bar.close()

    if checks:  # a standalone Square against standalone gradient attacks
        sq = [l for l, a in named if isinstance(a, Square)]
        grad_attacks = [l for l, a in named if not isinstance(a, (Square, AutoAttack))
                        and not type(a).__module__.endswith("noise")]
        if sq and grad_attacks:
            for eps in eps_list:
                if eps == 0:
                    continue
                accs = {l: table[l][eps] for l in grad_attacks}
                accs["square"] = min(table[l][eps] for l in sq)
                _square_check(msgs, accs, f"eps={eps:.4g}")

    return RobustnessResult(
        attacks=[l for l, _ in named], eps_list=eps_list, table=table, robust=robust,
        clean_correct=clean_correct, clean_accuracy=float(clean_correct.mean()),
        rg_score={l: rg_score(table[l][e] for e in eps_list) for l, _ in named}, n=n,
        autoattack=aa_info, autoattack_seconds=aa_seconds, warnings=msgs, seconds=seconds,
        meta={"batch_size": bs, "domain": domain, "num_classes": num_classes},
    )
