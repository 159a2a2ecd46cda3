"""Losses: attack losses (this package's top level) and training regularizers (submodules).

Every loss returns per-example values of shape ``[N]``; reduce them yourself. The attack losses
are re-exported here; regularizers such as ``advjax.losses.mart`` or ``advjax.losses.lsa`` are
imported as submodules.
"""
from advjax.losses.ce import cross_entropy
from advjax.losses.cw import cw_margin
from advjax.losses.dlr import dlr, dlr_targeted
from advjax.losses.kl import trades_kl
from advjax.losses.sat import cluster_loss  # SAT's regularizer (a scalar, not per-example)

__all__ = ["cluster_loss", "cross_entropy", "cw_margin", "dlr", "dlr_targeted", "trades_kl"]
