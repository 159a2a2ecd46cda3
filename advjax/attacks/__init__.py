"""Attacks: pure functions ``attack(apply_fn, variables, x, y, key) -> x_adv`` with their settings
in frozen (hashable) dataclasses. One attack per module; ``get_attack(name, **overrides)`` builds
one by name, ``list_attacks()`` lists the names.

Names: fgsm, fgsm-rs, bim (bimN), pgd (= pgd10; pgdN for N steps), pgd-l2, cw-inf (cwN),
apgd-ce, apgd-dlr, apgd-t, fab, fab-t, square, aa (autoattack), trades-kl (TRADES' inner
maximization), lafeat (lafeatN for N iterations per run; needs trained heads, see
``advjax.attacks.lafeat_heads``), and the statistical perturbations
gaussian, uniform, speckle, salt, pepper, salt-and-pepper.
"""
from __future__ import annotations

import re

from advjax.attacks.apgd import APGD, APGDT
from advjax.attacks.autoattack import AutoAttack
from advjax.attacks.base import Attack, project_to_ball, random_start
from advjax.attacks.bim import BIM
from advjax.attacks.cw import CWInf
from advjax.attacks.fab import FAB, FABT
from advjax.attacks.fgsm import FGSM
from advjax.attacks.fgsm_rs import FGSMRS
from advjax.attacks.lafeat import LAFEAT, lafeat_attack
from advjax.attacks.l_gen import LGen  # SAT's L_Gen (eq. 7/9); takes a features_fn, not by name
from advjax.attacks.noise import (GaussianNoise, PepperNoise, SaltAndPepperNoise, SaltNoise, SpeckleNoise,
                                  UniformNoise)
from advjax.attacks.pgd import PGD
from advjax.attacks.square import Square
from advjax.attacks.trades_kl import TradesKL

# name -> (class, preset settings)
_REGISTRY: dict[str, tuple[type, dict]] = {
    "fgsm": (FGSM, {}),
    "fgsm-rs": (FGSMRS, {}),
    "bim": (BIM, {}),
    "pgd": (PGD, {}),
    "pgd-l2": (PGD, {"norm": "l2"}),
    "cw-inf": (CWInf, {}),
    "apgd-ce": (APGD, {"loss": "ce"}),
    "apgd-dlr": (APGD, {"loss": "dlr"}),
    "apgd-t": (APGDT, {}),
    "fab": (FAB, {}),
    "fab-t": (FABT, {}),
    "square": (Square, {}),
    "trades-kl": (TradesKL, {}),
    "aa": (AutoAttack, {}),
    "gaussian": (GaussianNoise, {}),
    "uniform": (UniformNoise, {}),
    "speckle": (SpeckleNoise, {}),
    "salt": (SaltNoise, {}),
    "pepper": (PepperNoise, {}),
    "salt-and-pepper": (SaltAndPepperNoise, {}),
}
# attacks that need more than (apply_fn, variables): built by name, but not in list_attacks(), which
# lists what any model can run as it is (LAFEAT needs heads trained for the model: LAFEAT.bind)
_NEEDS_MORE: dict[str, tuple[type, dict]] = {"lafeat": (LAFEAT, {})}
_ALIASES = {"autoattack": "aa", "cw": "cw-inf", "fgsm_rs": "fgsm-rs", "fast": "fgsm-rs", "apgd": "apgd-ce",
            "s&p": "salt-and-pepper", "trades": "trades-kl", "kl": "trades-kl", "salt_and_pepper": "salt-and-pepper"}
_STEPS_RE = re.compile(r"^(pgd|bim|cw|lafeat)(\d+)$")


def list_attacks() -> list[str]:
    """The registered attack names (``pgdN`` / ``bimN`` / ``cwN`` also work for any N). ``get_attack``
    also builds ``lafeat`` / ``lafeatN``, which needs trained heads (``LAFEAT.bind``) and is not listed."""
    return list(_REGISTRY)


def get_attack(name: str, **overrides) -> Attack:
    """The attack registered as ``name`` with settings overridden, e.g.
    ``get_attack("pgd20", eps=8/255)`` or ``get_attack("apgd-ce", eps=0.3, loop="rolled")``.

    Raises ValueError for an unknown name (listing the known ones) or a bad setting.
    """
    if not isinstance(name, str):
        raise ValueError(f"attack name must be a string, got {name!r}")
    key = name.strip().lower()
    key = _ALIASES.get(key, key)
    preset: dict = {}
    m = _STEPS_RE.match(key)
    if m:
        key = {"cw": "cw-inf"}.get(m.group(1), m.group(1))
        preset["steps"] = int(m.group(2))
    if key not in _REGISTRY and key not in _NEEDS_MORE:
        raise ValueError(f"unknown attack {name!r}; known attacks: {', '.join(list_attacks() + list(_NEEDS_MORE))} "
                         "(and pgdN / bimN / cwN / lafeatN for N steps)")
    cls, base_preset = _REGISTRY[key] if key in _REGISTRY else _NEEDS_MORE[key]
    settings = {**base_preset, **preset, **overrides}
    try:
        return cls(**settings)
    except TypeError as e:  # an unknown setting
        raise ValueError(f"bad settings for attack {name!r}: {e}") from None


__all__ = ["Attack", "APGD", "APGDT", "AutoAttack", "BIM", "CWInf", "FAB", "FABT", "FGSM", "FGSMRS", "LAFEAT",
           "GaussianNoise", "LGen", "PGD", "PepperNoise", "SaltAndPepperNoise", "SaltNoise", "SpeckleNoise", "Square", "TradesKL",
           "UniformNoise", "get_attack", "lafeat_attack", "list_attacks", "project_to_ball", "random_start"]
