"""Label-smoothed cross entropy (Szegedy et al., "Rethinking the Inception Architecture", Sec. 7):
target q' = (1 − s)·onehot(y) + s/K, loss = −Σ_k q'_k log p_k. Training-only."""
from __future__ import annotations


from advjax.methods._inner import cross_entropy as _ce

__all__ = ["smoothed_cross_entropy"]


def smoothed_cross_entropy(logits, y, smoothing: float = 0.0):
    """Per-example label-smoothed cross entropy; ``smoothing`` in [0, 1)."""
    if not 0.0 <= smoothing < 1.0:
        raise ValueError(f"label smoothing must be in [0, 1), got {smoothing}")
    return _ce(logits, y, smoothing)
