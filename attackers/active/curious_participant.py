"""The curious participant: a ClientApp mod on the attacker's own client.

Passive, it trains honestly (it observes the global model it is sent each round, which the
recorder keeps). With gradient ascent, in the rounds it acts in, it adds the ascent step on
the target records (the other clients' members and non-members) to the parameters it
uploads. Every other client passes through the mod untouched.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from flwr.app import ArrayRecord, Context, Message, MessageType
from flwr.clientapp.typing import ClientAppCallable, Mod
from torch import nn

from attackers.active.gradient_ascent import ascent_step
from fedsim.core.config import ParticipantAdversary
from fedsim.core.errors import FatalClientError, FedsimError
from fedsim.core.messages import PARTITION_KEY, array_record, config_record, number


def make_participant_mod(adversary: ParticipantAdversary, make_model: Callable[[], nn.Module],
                         load_targets: Callable[[], tuple[torch.Tensor, torch.Tensor]]) -> Mod:
    def curious_participant(message: Message, context: Context, call_next: ClientAppCallable) -> Message:
        reply = call_next(message, context)
        is_attacker = int(context.node_config[PARTITION_KEY]) == adversary.own_client
        if not is_attacker or message.metadata.message_type != MessageType.TRAIN or reply.has_error():
            return reply
        server_round = int(number(config_record(message.content)["server-round"]))
        if not adversary.acts_in(server_round):
            return reply
        honest = array_record(reply.content).to_torch_state_dict()
        try:
            state = ascent_step(make_model(), honest, *load_targets(), adversary.gamma, where=f" of round {server_round}",
                                step_norm=adversary.step_norm)
        except FedsimError as exc:  # it would fail again every round: the server stops the run at once
            raise FatalClientError(f"the curious participant (client {adversary.own_client}): {exc}") from None
        reply.content["arrays"] = ArrayRecord(state)
        return reply

    return curious_participant
