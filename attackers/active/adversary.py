"""Puts the configured adversary into the FL loop: a strategy wrapper for a curious server,
a ClientApp mod for a curious participant.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
from flwr.serverapp.strategy import Strategy

from attackers.active.curious_participant import Mod, make_participant_mod
from attackers.active.curious_server import CuriousServer
from fedsim.config import Config
from fedsim.datasets import pool_for
from fedsim.models import model_for


def target_ids(ledger: pd.DataFrame) -> np.ndarray:
    return ledger.loc[ledger["target"], "record_id"].to_numpy()


def server_wrapper(config: Config, ledger: pd.DataFrame) -> Callable[[Strategy, dict[int, int]], Strategy] | None:
    """Wraps the strategy in a CuriousServer when the server is the adversary."""
    if config.adversary.role != "server":
        return None
    ids = target_ids(ledger)

    def wrap(strategy: Strategy, partitions: dict[int, int]) -> Strategy:
        return CuriousServer(strategy, config.adversary, partitions, lambda: model_for(config), pool_for(config.data).take(ids))

    return wrap


def participant_mods(config: Config, ledger: pd.DataFrame) -> list[Mod]:
    """The curious participant's mod, when a participant is the adversary."""
    if config.adversary.role != "participant":
        return []
    ids = target_ids(ledger)

    def load_targets():
        return pool_for(config.data).take(ids)

    return [make_participant_mod(config.adversary, lambda: model_for(config), load_targets)]
