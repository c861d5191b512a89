"""Adversaries, in two rooms, after the threat models of Nasr, Shokri and Houmansadr (S&P 2019).

- `attackers.active`: what the adversary does inside the FL loop (curious server wrapper,
  curious participant mod, gradient ascent, isolation);
- `attackers.inference`: what it infers afterwards from the recorded rounds (threat-model
  views, per-example features, membership inference attacks, leakage).

Imports point one way: `attackers` may import `fedsim`'s core and engine and `strategies`,
never the report or CLI. The face is lazy (PEP 562); `ATTACKS` and `make_attack` are kept here
for callers of the first release.
"""

from __future__ import annotations

from typing import Any

__all__ = ["ATTACKS", "make_attack"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from attackers.inference import registry

        return getattr(registry, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
