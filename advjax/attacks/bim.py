"""Basic Iterative Method (Kurakin, Goodfellow & Bengio 2017, Eq. 1): PGD from x itself (no random
start). The default step makes steps * alpha = 1.25 eps, as the paper's choice of
min(eps + 4, 1.25 eps) iterations of alpha = 1 (in 0-255 units)."""
from __future__ import annotations

import dataclasses
from typing import ClassVar

from advjax.attacks.pgd import PGD


@dataclasses.dataclass(frozen=True, kw_only=True)
class BIM(PGD):
    """PGD with ``random_start=False`` and default step ``1.25 * eps / steps``."""

    random_start: bool = False
    name: ClassVar[str] = "bim"
    default_step_factor: ClassVar[float] = 1.25
