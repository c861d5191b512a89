"""fedsim: federated-learning simulation with adversarial participants and membership leakage.

The face is lazy (PEP 562): `import fedsim` or `import fedsim.core.errors` loads neither torch nor
Flower; `fedsim.Run`, `fedsim.simulate` and `fedsim.measure` import what they need
on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fedsim.app.api import measure, simulate
    from fedsim.core.errors import FedsimError
    from fedsim.recording.run import Run

__all__ = ["FedsimError", "Run", "measure", "simulate"]
_HOMES = {"Run": "fedsim.recording.run", "simulate": "fedsim.app.api", "measure": "fedsim.app.api", "FedsimError": "fedsim.core.errors"}


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        import importlib

        return getattr(importlib.import_module(_HOMES[name]), name)
    raise AttributeError(f"module 'fedsim' has no attribute {name!r}")
