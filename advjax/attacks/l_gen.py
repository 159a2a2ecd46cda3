"""SAT's generalized inner maximization (Jin et al., ICCV 2023, eq. 7 and 9) as an attack:

    r* = argmax_{||r||_inf <= eps} CE(f(x + r), y) - (Lambda / n) sum_l ||f^l(x + r) - f^l(x)||_2,
    Lambda ~ U(0, lambda),

solved by L-inf PGD (eps 8/255, step 2/255, 10 steps, uniform random start, eval-mode model: the
batch-norm statistics are never touched). The shift term pulls the perturbation towards points
that move the chosen intermediate layers little (what an intermediate-layer attack such as LAFEAT
finds, §4); Lambda drawn in [0, lambda] mixes such points with PGD's (§5.1).

Call shape: ``LGen(...)(features_fn, variables, x, y, key)`` with
``features_fn(variables, x) -> (logits, {layer: output})`` (``advjax.layers.features_fn`` or
:func:`sat_features_fn`, which picks the paper's default layers). ``layers`` (names or indices into
the features ``features_fn`` returns) selects among them; None uses them all.

``lam = 0`` is exactly PGD on the CE (``advjax.attacks.PGD`` with the same settings and key: the
same random start, the same steps; the shift term is not even traced).

Settings that the paper leaves open, with the released code's choice available:
  * ``lambda_draw``: "step" (one Lambda per PGD step for the whole batch, as the code's
    ``beta * random.random()`` in every ``impl_loss`` call), "sample" (one per sample per step),
    or "fixed" (Lambda = lambda: eq. 7 with a fixed weight, what the lambda search of §6.1 probes).
  * ``shift_reduce``: "sample" (default: each sample's objective is its CE minus Lambda / n times
    its own shift norms, i.e. per-sample norms, summed over the batch for the gradient) or "batch"
    (the code: mean CE over the batch minus Lambda times the mean over layers of ONE Frobenius norm
    of the whole batch's shift). For sign steps only the ratio of the two gradients matters; under
    "batch" a sample's shift gradient is divided by the batch's Frobenius norm (~ sqrt(N) times its
    own) while its CE gradient is divided by N, so a given lambda weighs the shift ~ sqrt(N) times
    more than under "sample" (lambda = 0.087 at N = 128 is ~ 1.0 per sample).
  * ``loss``: "ce" (eq. 9) or "trades-kl" (SAT-TRADES: TRADES' KL to the clean prediction in place
    of the CE, starting from x + 0.001 N(0, I) as TRADES' attack).

Differences from the released code (``attacks/fat.py``): its random start is
``eps * (2 randn - 1)`` (Gaussian, clipped to [0, 1] but not to the eps-ball); we start uniformly
in the ball as PGD does (Madry et al.), which keeps lam = 0 identical to our PGD.
"""
from __future__ import annotations

import collections
import copy
import dataclasses
import re
from typing import Any, ClassVar, Optional

import jax
import jax.numpy as jnp

from advjax import losses as _losses
from advjax.attacks import base
from advjax.layers import features_fn as _features_fn, names as _layer_names, select

__all__ = ["LGen", "LAMBDA_DRAWS", "SHIFT_REDUCES", "default_layers", "resolve_layers", "sat_features_fn",
           "shift_norms"]

LAMBDA_DRAWS = ("step", "sample", "fixed")
SHIFT_REDUCES = ("sample", "batch")
_BLOCK_OUT = re.compile(r"^layer(\d+)/block(\d+)/act2$")


def default_layers(model, kind: str = "activation") -> tuple[str, ...]:
    """The paper's layers: the outputs of the last residual stage's blocks (ResNet-18:
    ``layer4/block0/act2``, ``layer4/block1/act2``, the code's ``layer4.0`` / ``layer4.1``).

    Only :class:`advjax.models.ResNet` exposes its block outputs as captured activations (``act2``
    is the block's last op); for other models pass ``layers`` explicitly (the error lists them).
    """
    from advjax.models.resnet import ResNet

    found = _layer_names(model, kind="activation")
    if kind == "activation" and isinstance(model, ResNet):
        blocks = [(int(m.group(1)), n) for n in found if (m := _BLOCK_OUT.match(n))]
        if blocks:
            last = max(s for s, _ in blocks)
            return tuple(n for s, n in blocks if s == last)
    raise ValueError(f"SAT: no default layers for {type(model).__name__} (the default, the last residual stage's "
                     f"block outputs, is defined for advjax.models.ResNet with kind='activation'); pass layers=[...] "
                     f"by name or index, e.g. from the activation outputs {found} or the learnable layers "
                     f"{_layer_names(model, kind='learnable')}")


def resolve_layers(model, layers=None, kind: str = "activation") -> tuple[str, ...]:
    """Layer names for ``layers`` (None: :func:`default_layers`; ints index the ``kind`` capture
    list, negative allowed; names must exist). A layer the model does not have is a ValueError
    listing the layers it has."""
    if layers is None:
        return default_layers(model, kind)
    known = _layer_names(model, kind=kind)
    dummy = collections.OrderedDict((n, None) for n in known)
    try:
        return tuple(select(dummy, layers))
    except ValueError as e:
        raise ValueError(f"SAT layers: {e} (kind={kind!r}; the other kind is "
                         f"{'learnable' if kind == 'activation' else 'activation'})") from None


def sat_features_fn(model, layers=None, kind: str = "activation"):
    """``features_fn(variables, x) -> (logits, {layer: output})`` at SAT's layers (eval mode)."""
    return _features_fn(model, kind=kind, layers=list(resolve_layers(model, layers, kind)))


def _safe_norm(v, axis):
    sq = jnp.sum(v * v, axis=axis)
    pos = sq > 0
    return jnp.where(pos, jnp.sqrt(jnp.where(pos, sq, 1.0)), 0.0)


def shift_norms(feats_adv, feats_clean) -> jax.Array:
    """||f^l(x + r) - f^l(x)||_2 per sample and layer: [N, n] (zero gradient at a zero shift)."""
    cols = []
    for fa, fc in zip(feats_adv.values(), feats_clean.values()):
        d = jnp.reshape(fa - fc, (fa.shape[0], -1)).astype(jnp.float32)
        cols.append(_safe_norm(d, axis=-1))
    return jnp.stack(cols, axis=-1)


@dataclasses.dataclass(frozen=True, kw_only=True)
class LGen(base.Attack):
    """PGD on L_Gen (eq. 7/9); see the module docstring.

    Attributes (beyond :class:`base.Attack`):
      lam: lambda, the upper end of Lambda's U(0, lambda) (>= 0; 0 is PGD on the CE). Default 0.087,
        the released code's value (with its "batch" reduction).
      layers: names / indices into ``features_fn``'s features; None = all of them.
      lambda_draw: "step" | "sample" | "fixed".
      shift_reduce: "sample" | "batch".
      loss: "ce" | "trades-kl".
      steps, step_size (None: 2.5 eps / steps = 2/255 at 8/255 and 10 steps), random_start, loop:
        as :class:`advjax.attacks.PGD`.
    """

    lam: float = 0.087
    layers: Any = None
    lambda_draw: str = "step"
    shift_reduce: str = "sample"
    loss: str = "ce"
    steps: int = 10
    step_size: Optional[float] = None
    random_start: bool = True
    init_std: float = 0.001
    loop: base.Loop = "auto"
    name: ClassVar[str] = "l-gen"
    supported_norms: ClassVar[tuple[str, ...]] = ("linf",)
    supports_targeted: ClassVar[bool] = False

    def __post_init__(self):
        super().__post_init__()
        if isinstance(self.lam, bool) or not isinstance(self.lam, (int, float)) or not self.lam >= 0 \
                or self.lam != self.lam or self.lam == float("inf"):
            raise ValueError(f"LGen: lam (lambda) must be a finite number >= 0, got {self.lam!r}")
        object.__setattr__(self, "lam", float(self.lam))
        if self.lambda_draw not in LAMBDA_DRAWS:
            raise ValueError(f"LGen: lambda_draw must be one of {LAMBDA_DRAWS}, got {self.lambda_draw!r}")
        if self.shift_reduce not in SHIFT_REDUCES:
            raise ValueError(f"LGen: shift_reduce must be one of {SHIFT_REDUCES}, got {self.shift_reduce!r}")
        if self.loss not in ("ce", "trades-kl"):
            raise ValueError(f"LGen: loss must be 'ce' or 'trades-kl', got {self.loss!r}")
        if isinstance(self.layers, list):
            object.__setattr__(self, "layers", tuple(self.layers))
        object.__setattr__(self, "steps", base.check_positive("steps", self.steps, integer=True))
        object.__setattr__(self, "step_size", base.check_positive("step_size", self.step_size))

    @property
    def alpha(self):
        return self.step_size if self.step_size is not None else 2.5 * self.eps / self.steps

    def validate(self, features_fn, variables, x, y) -> None:
        num_classes = None
        if self.check_inputs and not isinstance(y, jax.core.Tracer):
            logits, feats = jax.eval_shape(features_fn, variables, jax.ShapeDtypeStruct(x.shape, x.dtype))
            num_classes = int(logits.shape[-1])
            if self.lam > 0:
                sel = select(feats, self.layers)
                if not sel:
                    raise ValueError("LGen: features_fn returned no features; build it with "
                                     "advjax.attacks.l_gen.sat_features_fn(model) or layers.features_fn(model)")
        base.check_inputs(x, y, self.domain, num_classes)

    def _loss_value(self, logits, y, clean_logits):
        if self.loss == "ce":
            return _losses.cross_entropy(logits, y)
        return _losses.trades_kl(logits, clean_logits)

    def run(self, features_fn, variables, x, y, key):
        logits_only = lambda v, z: features_fn(v, z)[0]  # noqa: E731
        clean_logits = None
        if self.loss == "trades-kl":
            clean_logits = jax.lax.stop_gradient(logits_only(variables, x))
        k_start = jax.random.split(key, 1)[0]  # PGD's key path (restarts = 1)
        if not self.random_start:
            x0 = x
        elif self.loss == "ce":
            x0 = base.random_start(k_start, x, self.eps, self.norm, self.domain)
        else:  # TradesKL's start and key path
            x0 = x + self.init_std * jax.random.normal(key, x.shape, x.dtype)

        if isinstance(self.lam, float) and self.lam == 0.0:  # exactly PGD on the loss: no shift term traced
            def body(i, xa):
                def total(z):
                    return jnp.sum(self._loss_value(logits_only(variables, z), y, clean_logits))

                g = jax.grad(total)(xa)
                return base.project_to_ball(xa + self.alpha * base.steepest_direction(g, self.norm), x, self.eps,
                                            self.norm, self.domain)

            out = base.fori(self.steps, body, x0, self.loop)
            return base.project_to_ball(out, x, self.eps, self.norm, self.domain)

        clean_feats = jax.lax.stop_gradient(select(features_fn(variables, x)[1], self.layers))
        k_lam = jax.random.fold_in(key, 0x5A7)
        n = x.shape[0]

        def draw(i):
            if self.lambda_draw == "fixed":
                return jnp.full((n,), self.lam, jnp.float32)
            ki = jax.random.fold_in(k_lam, i)
            if self.lambda_draw == "step":
                return jnp.full((n,), self.lam, jnp.float32) * jax.random.uniform(ki, ())
            return self.lam * jax.random.uniform(ki, (n,))

        def body(i, xa):
            lam_i = draw(i)

            def total(z):
                logits, feats = features_fn(variables, z)
                feats = select(feats, self.layers)
                main = self._loss_value(logits, y, clean_logits)
                if self.shift_reduce == "sample":
                    shift = jnp.mean(shift_norms(feats, clean_feats), axis=-1)  # (1/n) sum_l, per sample
                    return jnp.sum(main - lam_i * shift)
                # the code: mean loss - Lambda * mean_l ||F_l(x + r) - F_l(x)||_F (whole batch)
                fro = [_safe_norm(jnp.reshape(fa - fc, (-1,)).astype(jnp.float32), axis=-1)
                       for fa, fc in zip(feats.values(), clean_feats.values())]
                return jnp.mean(main) - lam_i[0] * (sum(fro) / len(fro))

            g = jax.grad(total)(xa)
            return base.project_to_ball(xa + self.alpha * base.steepest_direction(g, self.norm), x, self.eps,
                                        self.norm, self.domain)

        out = base.fori(self.steps, body, x0, self.loop)
        return base.project_to_ball(out, x, self.eps, self.norm, self.domain)

    # The attack takes a features_fn, not an apply_fn: the one-logit wrapper of
    # Attack.__init_subclass__ (which wraps an apply_fn's output) must leave it alone.
    run._reads_one_logit = True

    def with_lam(self, lam) -> "LGen":
        """A copy with weight ``lam`` as given (a traced scalar is allowed; no validation)."""
        out = copy.copy(self)
        object.__setattr__(out, "lam", lam)
        return out

    def __call__(self, features_fn, variables, x, y, key=None):
        """Validated, jitted; eps and (for lam > 0) lam are traced arguments, so a sweep over radii
        or over lambda (the search of §6.1) compiles once per shape. lam = 0 keeps its own program
        (PGD on the loss, no shift term)."""
        if self.lam == 0.0:
            return super().__call__(features_fn, variables, x, y, key)
        x, y = jnp.asarray(x), jnp.asarray(y)
        key = jax.random.PRNGKey(0) if key is None else key
        if self.check_inputs:
            self.validate(features_fn, variables, x, y)
        static = self.with_eps(0.0).with_lam(1.0)
        return _jit_run_lam(static, features_fn, variables, x, y, key, jnp.asarray(self.eps, x.dtype),
                            jnp.asarray(self.lam, jnp.float32))


def _run_lam(attack, features_fn, variables, x, y, key, eps, lam):
    return attack.with_eps(eps).with_lam(lam).run(features_fn, variables, x, y, key)


_jit_run_lam = jax.jit(_run_lam, static_argnums=(0, 1))
