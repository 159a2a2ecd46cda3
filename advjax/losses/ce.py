"""Cross-entropy on logits with integer labels, per example; and the one-logit binary convention.

A binary classifier with ONE logit z (logits of shape ``[N, 1]``, p(y=1) = sigmoid(z), trained with
binary cross-entropy -- the LSA paper's Model A) is read everywhere in advjax as the two logits
``[0, z]``: softmax([0, z])[1] = sigmoid(z), so softmax cross-entropy on [0, z] equals binary
cross-entropy on z, the prediction argmax([0, z]) is ``z > 0``, and the CW margin of [0, z] is
``-z`` for label 1 and ``z`` for label 0. :func:`two_logits` is the one definition; the losses
here, every attack (``advjax.attacks.base.Attack`` wraps the ``apply_fn`` of every subclass's
``run``), the evaluator and the training loop's monitor apply it, so a one-logit model needs no
special case anywhere else. Losses that need more classes (DLR: 3, targeted DLR: 4) raise a clear
error for binary models.
"""
import jax
import jax.numpy as jnp


def two_logits(logits: jax.Array) -> jax.Array:
    """``[N, 1]`` one-logit binary scores z -> the two logits ``[0, z]`` (shape ``[N, 2]``);
    any other shape is returned unchanged."""
    logits = jnp.asarray(logits)
    if logits.ndim >= 1 and logits.shape[-1] == 1:
        return jnp.concatenate([jnp.zeros_like(logits), logits], axis=-1)
    return logits


class _TwoLogitsFn:
    """``apply_fn`` with :func:`two_logits` applied to its output. Equal (and hashing equal) for
    the same wrapped function, so jit caches keyed on a static ``apply_fn`` still hit."""

    __slots__ = ("fn", "__weakref__")

    def __init__(self, fn):
        self.fn = fn

    def __call__(self, variables, x):
        out = self.fn(variables, x)
        # only logits arrays are read: a features_fn's (logits, feats) output passes through unchanged
        return two_logits(out) if hasattr(out, "shape") else out

    def __eq__(self, other):
        return isinstance(other, _TwoLogitsFn) and other.fn == self.fn

    def __hash__(self):
        return hash((_TwoLogitsFn, self.fn))

    def __repr__(self):
        return f"two_logits_fn({self.fn!r})"


def two_logits_fn(apply_fn):
    """``apply_fn(variables, x)`` whose ``[N, 1]`` outputs are read as ``[0, z]`` (idempotent)."""
    return apply_fn if isinstance(apply_fn, _TwoLogitsFn) else _TwoLogitsFn(apply_fn)


def predict(logits: jax.Array) -> jax.Array:
    """Predicted class per example: argmax of the logits (``z > 0`` for one-logit models)."""
    return jnp.argmax(two_logits(logits), axis=-1)


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Per-example cross-entropy ``logsumexp(z) - z_y``; shape ``[N]``.

    Args:
      logits: ``[N, K]`` unnormalized scores (``[N, 1]``: one binary logit, read as ``[0, z]``,
        which makes this the binary cross-entropy of z).
      labels: ``[N]`` integer class indices.
    """
    logits = two_logits(logits)
    lse = jax.nn.logsumexp(logits, axis=-1)
    z_y = jnp.take_along_axis(logits, jnp.asarray(labels)[:, None].astype(jnp.int32), axis=-1)[:, 0]
    return lse - z_y
