"""Injected client faults: a client that raises, or one that drops out, with a given
probability per round (config `faults:`), so users can see how the run and the attacks cope.

Each draw depends only on (seed, round, partition id), so the same seed fails the same clients
in the same rounds, in a resumed run too. A failing client raises inside its ClientApp (a mod),
and the server receives an error reply; a client that drops out never receives the round's
training message (the grid withholds it), and the server, as after a timeout, simply gets no
reply from it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from flwr.app import Context, Message, MessageType
from flwr.clientapp.typing import ClientAppCallable, Mod
from flwr.serverapp import Grid

from fedsim.core.config import FaultsConfig
from fedsim.core.messages import config_record, number

RAISE, DROP = 0, 1


class InjectedClientFault(RuntimeError):
    """The failure a client raises when `faults.client_error_rate` picks it."""


@dataclass(frozen=True)
class FaultPlan:
    seed: int
    error_rate: float
    dropout_rate: float

    @classmethod
    def from_config(cls, seed: int, faults: FaultsConfig) -> FaultPlan:
        return cls(seed, faults.client_error_rate, faults.client_dropout_rate)

    def _draw(self, kind: int, server_round: int, partition: int) -> float:
        return float(np.random.default_rng([self.seed, server_round, partition, kind]).random())

    def drops(self, server_round: int, partition: int) -> bool:
        return self.dropout_rate > 0 and self._draw(DROP, server_round, partition) < self.dropout_rate

    def raises(self, server_round: int, partition: int) -> bool:
        """Fails in training (a client that drops out never gets as far as failing)."""
        return (self.error_rate > 0 and not self.drops(server_round, partition)
                and self._draw(RAISE, server_round, partition) < self.error_rate)


def _training_round(message: Message) -> int | None:
    if message.metadata.message_type != MessageType.TRAIN or "config" not in message.content.config_records:
        return None
    return int(number(config_record(message.content)["server-round"]))


def failing_client_mod(plan: FaultPlan, partition_key: str) -> Mod:
    """A ClientApp mod that raises in the training rounds the plan picks for this client."""

    def inject_failure(message: Message, context: Context, call_next: ClientAppCallable) -> Message:
        server_round = _training_round(message)
        partition = int(context.node_config[partition_key])
        if server_round is not None and plan.raises(server_round, partition):
            raise InjectedClientFault(f"injected failure of client {partition} in round {server_round}")
        return call_next(message, context)

    return inject_failure


class DropoutGrid:
    """The simulation's Grid, withholding the training message of clients that drop out."""

    def __init__(self, grid: Grid, plan: FaultPlan, partitions: dict[int, int]):
        self._grid = grid
        self._plan = plan
        self._partitions = partitions

    def _delivered(self, message: Message) -> bool:
        server_round = _training_round(message)
        partition = self._partitions.get(message.metadata.dst_node_id, -1)
        return server_round is None or not self._plan.drops(server_round, partition)

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        delivered = [m for m in messages if self._delivered(m)]
        return self._grid.send_and_receive(delivered, timeout=timeout) if delivered else []

    def __getattr__(self, name: str):
        return getattr(self._grid, name)
