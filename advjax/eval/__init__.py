"""Robustness evaluation: robust accuracy over attacks x eps, the R&G score (LSA paper), JSON and
markdown tables, and AutoAttack's sanity checks as warnings. ``advjax eval`` is in
:mod:`advjax.eval.command`."""
from advjax.eval.robust import (RobustnessResult, RobustnessWarning, rg_score, robust_accuracy,
                                sanity_checks)

__all__ = ["RobustnessResult", "RobustnessWarning", "rg_score", "robust_accuracy", "sanity_checks"]
