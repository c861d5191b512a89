"""fedsim: federated-learning simulation with adversarial participants and membership leakage."""

from fedsim.run import Run

__all__ = ["Run"]
