"""CW-inf: PGD on the Carlini-Wagner margin loss (Carlini & Wagner 2017, f_6), as used in the
TRADES/MART evaluations ("CW-inf, 20 steps")."""
from __future__ import annotations

import dataclasses
from typing import ClassVar

from advjax.attacks.pgd import PGD


@dataclasses.dataclass(frozen=True, kw_only=True)
class CWInf(PGD):
    """PGD maximizing ``max_{j != y} z_j - z_y`` (targeted: ``z_t - max_{j != t} z_j``);
    20 steps of ``2.5 * eps / steps`` from a random start by default. L2 works too ("CW-2 PGD")."""

    steps: int = 20
    loss: str = "cw"
    name: ClassVar[str] = "cw-inf"
