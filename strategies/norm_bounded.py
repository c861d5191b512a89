"""FedAvg with norm-bounded updates: the worked example of a custom strategy.

Each client's update (its returned parameters minus the global model it was sent) is scaled
down to at most `max_update_norm` in L2 norm before averaging (Sun et al. 2019, "Can you really
backdoor federated learning?"). An active participant that adds a large step to its upload,
such as the gradient-ascent attacker, then moves the global model no further than an honest
client can, while honest updates below the bound pass unchanged.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg

from fedsim.core.messages import array_record


class NormBoundedFedAvg(FedAvg):
    def __init__(self, max_update_norm: float = 1.0, **fedavg_args):
        if not max_update_norm > 0:
            raise ValueError(f"max_update_norm must be positive, got {max_update_norm}")
        super().__init__(**fedavg_args)
        self.max_update_norm = float(max_update_norm)
        self.sent: dict[str, np.ndarray] = {}

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid) -> Iterable[Message]:
        self.sent = {key: array.numpy() for key, array in arrays.items()}
        return super().configure_train(server_round, arrays, config, grid)

    def bound(self, returned: ArrayRecord) -> ArrayRecord:
        """`returned` with its update from the sent model scaled to norm <= max_update_norm."""
        update = {key: array.numpy().astype(np.float64) - self.sent[key] for key, array in returned.items()}
        norm = float(np.sqrt(sum(np.sum(u * u) for u in update.values())))
        scale = min(1.0, self.max_update_norm / norm) if norm > 0 else 1.0
        return ArrayRecord({
            key: Array((self.sent[key] + scale * u).astype(returned[key].numpy().dtype)) for key, u in update.items()
        })

    def aggregate_train(self, server_round: int, replies: Iterable[Message]) -> tuple[ArrayRecord | None, MetricRecord | None]:
        bounded = []
        for reply in replies:
            if not reply.has_error():
                reply.content[self.arrayrecord_key] = self.bound(array_record(reply.content, self.arrayrecord_key))
            bounded.append(reply)
        return super().aggregate_train(server_round, bounded)
