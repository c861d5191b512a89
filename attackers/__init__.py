"""Adversaries: threat models, manipulations of the FL loop and membership inference attacks.

Inference attacks follow one protocol, sklearn style:
`attack.fit(observation, ids, members)` on the attacker's known records, then
`attack.score(observation, ids)` (higher means member), with `attack.threshold` the decision
threshold fitted on the known records and `attack.multi_round` whether it combines snapshots.
"""

from __future__ import annotations

from typing import Any

from attackers.baselines import ConfidenceAttack, EntropyAttack, GradientNormAttack, LossAttack, TrajectoryAttack
from attackers.nasr import NasrAttack, NasrBlackBoxAttack
from attackers.unsupervised import UnsupervisedNasrAttack

ATTACKS: dict[str, type] = {
    cls.name: cls
    for cls in (LossAttack, ConfidenceAttack, EntropyAttack, GradientNormAttack, TrajectoryAttack,
                NasrAttack, NasrBlackBoxAttack, UnsupervisedNasrAttack)
}


def make_attack(name: str, seed: int = 0, **kwargs: Any):
    """A fresh attack by registry name (learned attacks are seeded)."""
    cls = ATTACKS[name]
    return cls(seed=seed, **kwargs) if issubclass(cls, (NasrAttack, UnsupervisedNasrAttack)) else cls(**kwargs)
