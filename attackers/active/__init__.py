"""What the adversary does inside the FL loop: the curious server (a strategy wrapper), the
curious participant (a ClientApp mod), and their manipulations (gradient ascent on the target
records, isolation of a victim). Everything recorded about them lands in the run folder, where
`attackers.inference` reads it afterwards.

The face is lazy (PEP 562), so importing the package imports neither Flower nor torch.
"""

from __future__ import annotations

from typing import Any

_LAZY = {
    "server_wrapper": "attackers.active.adversary",
    "participant_mods": "attackers.active.adversary",
    "CuriousServer": "attackers.active.curious_server",
    "make_participant_mod": "attackers.active.curious_participant",
    "ascent_step": "attackers.active.gradient_ascent",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
