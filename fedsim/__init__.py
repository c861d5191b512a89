"""fedsim: federated-learning simulation with adversarial participants and membership leakage.

The face is lazy (PEP 562): `import fedsim` or `import fedsim.errors` loads neither torch nor
Flower; `fedsim.Run` imports the run reader on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fedsim.run import Run

__all__ = ["Run"]


def __getattr__(name: str) -> Any:
    if name == "Run":
        from fedsim.run import Run

        return Run
    raise AttributeError(f"module 'fedsim' has no attribute {name!r}")
