"""The curious server: a wrapper around any Flower strategy, as Flower's DP wrappers are.

Passive, it changes nothing (the recorder already keeps every client's parameters). Active:
- gradient ascent: in the rounds it acts in, the victim is sent W + gamma * dL(targets)/dW
  instead of the aggregate W; with `sent_to: all` every client is (Nasr et al.'s active global
  attacker ascends the global model itself), so the honest clients' replies show how training
  undoes the step on records they never held;
- isolation: the victim gets a model chain of its own (its own previous local model, with the
  ascent step when that is on), and its reply never enters the aggregate;
- crafted model (`attackers.active.crafted_model`): the victim is sent a model whose first-layer
  neurons each fire on one target record only, and its reply, useless as a model, is left out of
  the aggregate in those rounds (under secure aggregation it cannot be).
The victim is found by partition id: `partitions` maps Flower's random node ids to them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy
from torch import nn

from attackers.active.crafted_model import chunk, crafted_state, crafted_width
from attackers.active.gradient_ascent import ascent_step
from fedsim.core.config import ServerAdversary
from fedsim.core.layout import client_file
from fedsim.core.messages import array_record, partition_of
from fedsim.recording.run import Run
from strategies.wrapper import StrategyWrapper


class CuriousServer(StrategyWrapper):
    def __init__(
        self,
        inner: Strategy,
        adversary: ServerAdversary,
        partitions: Mapping[int, int],
        make_model: Callable[[], nn.Module],
        targets: tuple[torch.Tensor, torch.Tensor],
        centre: torch.Tensor | None = None,
    ):
        super().__init__(inner)
        self.adversary = adversary
        self.partitions = partitions
        self.make_model = make_model
        self.targets = targets  # gradient ascent: the ascended records; crafted model: the targets, in the order covered
        self.centre = centre  # crafted model: the per-feature midpoint its neurons are centred at
        self.victim_chain: ArrayRecord | None = None  # the isolated victim's latest model
        self.crafted_sent = 0  # crafted models sent to the victim so far: the next one traps chunk crafted_sent
        self.crafted_round: int | None = None  # the round whose victim was sent a crafted model, while it runs

    def restore(self, run: Run, last_round: int) -> None:
        """The isolated victim's chain continues from its latest recorded reply."""
        super().restore(run, last_round)
        if self.adversary.isolate:
            replied = [r for r in range(1, last_round + 1) if self.adversary.victim in run.clients(r)]
            self.victim_chain = ArrayRecord(run.state(replied[-1], self.adversary.victim)) if replied else None
        if self.adversary.mode == "crafted-model":
            self.crafted_sent = sum((run.folder / client_file(r, self.adversary.victim, "broadcast")).exists() for r in range(1, last_round + 1))

    def _ascend(self, start: ArrayRecord, server_round: int, memo: dict[int, ArrayRecord]) -> ArrayRecord:
        """`start` plus the round's ascent step, computed once per start within one configure_train."""
        if id(start) not in memo:
            memo[id(start)] = ArrayRecord(ascent_step(self.make_model(), start.to_torch_state_dict(), *self.targets, self.adversary.gamma,
                                                      where=f" of round {server_round}", step_norm=self.adversary.step_norm))
        return memo[id(start)]

    def _for_victim(self, server_round: int, aggregate: ArrayRecord, memo: dict[int, ArrayRecord]) -> ArrayRecord:
        """What the victim is sent this round."""
        start = self.victim_chain if self.adversary.isolate and self.victim_chain is not None else aggregate
        if not self.adversary.acts_in(server_round):
            return start
        if self.adversary.mode == "crafted-model":
            assert self.centre is not None, "a crafted-model server is built with its centre"
            model = self.make_model()
            ids = chunk(torch.arange(len(self.targets[1])).numpy(), crafted_width(model), self.crafted_sent)
            self.crafted_sent += 1
            self.crafted_round = server_round
            return ArrayRecord(crafted_state(model, start.to_torch_state_dict(), self.targets[0][ids], self.centre))
        return self._ascend(start, server_round, memo)

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid) -> Iterable[Message]:
        return self.tamper(server_round, list(self.inner.configure_train(server_round, arrays, config, grid)))

    def aggregate_train(self, server_round: int, replies: Iterable[Message]) -> tuple[ArrayRecord | None, MetricRecord | None]:
        return self.inner.aggregate_train(server_round, self.keep(server_round, replies))

    def tamper(self, server_round: int, messages: list[Message]) -> list[Message]:
        """The round's training messages as the adversary sends them: the victim's (or, with
        `sent_to: all`, everyone's) arrays replaced; every other message as it was.

        The strategy wrapper calls it on what the inner strategy configured; an audited Flower
        app's Grid (`fedsim.engine.audited_app`) calls it on what the app's own strategy sent.
        """
        if self.adversary.mode == "passive" and not self.adversary.isolate:
            return messages
        # sent_to all: every other client gets what the inner strategy sent it, ascended
        everyone = self.adversary.sent_to == "all" and self.adversary.mode == "gradient-ascent" and self.adversary.acts_in(server_round)
        memo: dict[int, ArrayRecord] = {}  # one step per distinct start (the victim shares the others' without isolation)
        out = []
        for message in messages:
            victim = self.partitions.get(message.metadata.dst_node_id) == self.adversary.victim
            if victim or everyone:
                content = RecordDict({key: value for key, value in message.content.items()})
                array_key = next(iter(message.content.array_records))
                sent = array_record(message.content, array_key)
                content[array_key] = self._for_victim(server_round, sent, memo) if victim else self._ascend(sent, server_round, memo)
                message = Message(content=content, message_type=message.metadata.message_type, dst_node_id=message.metadata.dst_node_id)
            out.append(message)
        return out

    def keep(self, server_round: int, replies: Iterable[Message]) -> list[Message]:
        """The round's replies the aggregate may see: the crafted-model victim's trap and the
        isolated victim's update stay out (the latter continues the victim's own chain).
        """
        replies = list(replies)
        if self.crafted_round == server_round:  # the victim trained a trap, not the model: its reply stays out
            self.crafted_round = None
            replies = [r for r in replies if r.has_error() or partition_of(r) != self.adversary.victim]
        if self.adversary.isolate:
            victim = [r for r in replies if not r.has_error() and partition_of(r) == self.adversary.victim]
            if victim:
                self.victim_chain = array_record(victim[0].content)
            replies = [r for r in replies if r.has_error() or partition_of(r) != self.adversary.victim]
        return replies
