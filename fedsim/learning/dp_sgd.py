"""Client-side DP-SGD through Opacus: a private optimizer for local training and its epsilon.

A client's privacy loss accumulates over every round it trains in. Its sample rate is the same
each round (same records, same batch size), so after T local steps in all its epsilon is the
accountant's for T steps of (noise multiplier, sample rate), whichever rounds they fell in.
Opacus is imported on first use: importing it costs about 2 s (it pulls in torch.distributed),
paid by every Ray actor at start-up even in runs without DP-SGD.
"""

from __future__ import annotations

import math
import warnings

from torch import nn
from torch.optim import Optimizer
from torch.utils.data import DataLoader

from fedsim.core.config import DPSGDConfig
from fedsim.core.errors import FedsimError


def check_model(model: nn.Module, model_name: str) -> None:
    """Refuse, in one line, a model Opacus cannot train privately (e.g. BatchNorm mixes examples)."""
    from opacus.validators import ModuleValidator

    problems = ModuleValidator.validate(model, strict=False)
    if problems:
        raise FedsimError(f"defense.dp_sgd: model {model_name!r} cannot be trained with DP-SGD ({problems[0]}); "
                          f"choose a model without BatchNorm, e.g. fcn or mnist_cnn")


def make_private(model: nn.Module, optimizer: Optimizer, loader: DataLoader, dp: DPSGDConfig) -> tuple[nn.Module, Optimizer, DataLoader, float]:
    """Opacus' private (module, optimizer, Poisson-sampled loader) and the loader's sample rate."""
    from opacus import PrivacyEngine

    model.train()  # Opacus refuses a module in eval mode
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Opacus warns about its non-cryptographic RNG on every call
        engine = PrivacyEngine(accountant=dp.accountant)
        private_model, private_optimizer, private_loader = engine.make_private(
            module=model, optimizer=optimizer, data_loader=loader,
            noise_multiplier=dp.noise_multiplier, max_grad_norm=dp.max_grad_norm,
        )
    return private_model, private_optimizer, private_loader, private_loader.sample_rate


def epsilon(dp: DPSGDConfig, sample_rate: float, steps: int) -> float:
    """Epsilon at `dp.delta` after `steps` DP-SGD steps at `sample_rate` (inf without noise)."""
    if dp.noise_multiplier == 0:
        return math.inf
    from opacus.accountants import create_accountant

    accountant = create_accountant(dp.accountant)
    accountant.history = [(dp.noise_multiplier, sample_rate, steps)]
    return float(accountant.get_epsilon(delta=dp.delta))
