"""What the adversary infers after (or beside) the run: threat-model views of the recorded
rounds, per-example white-box features, membership inference attacks and the leakage table.

Everything here reads a recorded run (`fedsim.Run`); nothing here runs inside the FL loop.
The face is lazy (PEP 562): `from attackers.inference import ATTACKS` imports the attacks
(and torch) only then.
"""

from __future__ import annotations

from typing import Any

_LAZY = {
    "ATTACKS": "attackers.inference.registry",
    "make_attack": "attackers.inference.registry",
    "check_attacks": "attackers.inference.registry",
    "measure_leakage": "attackers.inference.leakage",
    "attacker_view": "attackers.inference.threat_models",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
