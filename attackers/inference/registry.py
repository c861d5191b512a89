"""The inference attacks by registry name (config `attacks:`, `fedsim attack --attack`)."""

from __future__ import annotations

from typing import Any

from attackers.inference.baselines import ConfidenceAttack, EntropyAttack, GradientNormAttack, LossAttack, TrajectoryAttack
from attackers.inference.nasr import NasrAttack, NasrBlackBoxAttack
from attackers.inference.unsupervised import UnsupervisedNasrAttack
from fedsim.registry import Registry

ATTACKS: Registry[type] = Registry("attack", "attacks")
for _cls in (LossAttack, ConfidenceAttack, EntropyAttack, GradientNormAttack, TrajectoryAttack,
             NasrAttack, NasrBlackBoxAttack, UnsupervisedNasrAttack):
    ATTACKS.add(_cls.name, _cls)


def make_attack(name: str, seed: int = 0, **kwargs: Any):
    """A fresh attack by registry name (learned attacks are seeded)."""
    cls = ATTACKS.get_or_fail(name)
    return cls(seed=seed, **kwargs) if issubclass(cls, (NasrAttack, UnsupervisedNasrAttack)) else cls(**kwargs)


def check_attacks(names: list[str], key: str = "attacks") -> None:
    """Raise FedsimError (one line) for the first name that is not a registered attack."""
    for name in names:
        ATTACKS.get_or_fail(name, key)
