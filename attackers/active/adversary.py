"""Puts the configured adversary into the FL loop: a strategy wrapper for a curious server,
a ClientApp mod for a curious participant.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
from flwr.clientapp.typing import Mod
from flwr.serverapp.strategy import Strategy

from attackers.active.crafted_model import centre
from attackers.active.curious_participant import make_participant_mod
from attackers.active.curious_server import CuriousServer
from fedsim.core.config import Config, ParticipantAdversary, ServerAdversary
from fedsim.learning.datasets import Pool, pool_for
from fedsim.learning.membership import attacker_known
from fedsim.learning.models import build_model, model_for


def target_ids(ledger: pd.DataFrame) -> np.ndarray:
    """`(n_targets,)` record ids of the targets the attacker is evaluated on."""
    return ledger.loc[ledger["target"], "record_id"].to_numpy()


def ascended_ids(ledger: pd.DataFrame, config: Config) -> np.ndarray:
    """`(n,)` record ids the active attacker manipulates: the targets and its known records.

    It cannot tell members from non-members, so it treats every record it will score or learn
    from alike: the attack model then trains on records that got the treatment it is evaluated on.
    """
    return ledger.loc[ledger["target"] | attacker_known(ledger, config), "record_id"].to_numpy()


def server_wrapper(config: Config, ledger: pd.DataFrame) -> Callable[[Strategy, dict[int, int]], Strategy] | None:
    """Wraps the strategy in a CuriousServer when the server is the adversary.

    The crafted-model server traps the targets (in ledger order) and centres its neurons at the
    midpoint of the records it holds (targets and known records).
    """
    adversary = config.adversary
    if not isinstance(adversary, ServerAdversary):
        return None
    ids = ascended_ids(ledger, config)

    def wrap(strategy: Strategy, partitions: dict[int, int]) -> Strategy:
        pool = pool_for(config.data)
        if adversary.mode == "crafted-model":
            return CuriousServer(strategy, adversary, partitions, lambda: model_for(config), pool.take(target_ids(ledger)),
                                 centre=centre(pool.take(ids)[0]))
        return CuriousServer(strategy, adversary, partitions, lambda: model_for(config), pool.take(ids))

    return wrap


def participant_mods(config: Config, ledger: pd.DataFrame, pool: Pool | None = None) -> list[Mod]:
    """The curious participant's mod, when a participant is the adversary; `pool` holds the
    records where the config's data section cannot load them (an audited app's client).
    """
    adversary = config.adversary
    if not isinstance(adversary, ParticipantAdversary):
        return []
    ids = ascended_ids(ledger, config)

    def load_targets():
        return (pool or pool_for(config.data)).take(ids)

    def make_model():
        if pool is None:
            return model_for(config)
        return build_model(config.model.name, pool.input_shape, pool.num_classes, config.model.args)

    return [make_participant_mod(adversary, make_model, load_targets)]
