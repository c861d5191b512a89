"""Signals that read the manipulation: how each record's loss and gradient norm changed between
what the attacker sent (or uploaded) and what came back.

The active attacker knows what it put into the round. The curious server holds the model it sent
the victim (recorded under broadcast/, or the aggregate when it sent nothing else) and the
victim's reply; the curious participant holds its own (ascended) upload and the next global
model. Training pulls a member's loss down from where the sent model put it, much more than a
non-member's (Nasr et al., S&P 2019, section on the active attack: after a gradient-ascent step
on a target, SGD on a member sharply reduces its loss again). The attack reads, per observed
round, the loss and gradient norm on the sent model and on the returned one and their changes,
and combines them with a logistic regression fitted on the known records (which the attacker
ascended like the targets). In a round it ascended, the attacker also knows the model it held before
the step (the server's aggregate, or the isolated victim's previous reply): the loss there
separates what the step did to each record (which varies a lot between records and says nothing
about membership) from what the victim's training undid. Without a manipulation it is a passive "change of loss" attack, so
active and passive runs can be compared on the same attack. Where the threat model records no
sent model (the server under secure aggregation), the changes are 0 and it reads the levels only.
"""

from __future__ import annotations

import numpy as np
import torch

from attackers.inference.baselines import LogisticParams, LogisticSignalsAttack
from attackers.inference.observation import Observation
from attackers.inference.registry import register


class SentReturnedParams(LogisticParams):
    """Parameters of the sent-vs-returned attack."""


@register("sent_returned")
class SentReturnedAttack(LogisticSignalsAttack):
    """Per observed round: log-loss and log gradient norm on the sent and the returned model, and
    their changes (sent minus returned), combined by a logistic regression (sklearn, lbfgs:
    deterministic) fitted on the attacker's known records.
    """

    Params = SentReturnedParams
    params: SentReturnedParams

    def signals(self, observation: Observation, ids: np.ndarray) -> np.ndarray:
        """Features: per round the sent and returned log-loss (nats) and log gradient norm (L2 over
        all parameters), and both changes; in a round the attacker ascended, also the log-loss on
        the model it held before the step, the step's change (sent minus before) and the change
        training left (before minus returned). Shape (n_records, 6 * n_rounds + 3 * n_ascended_rounds).
        """
        columns = []
        for round_number in observation.rounds:
            returned = observation.features(ids, round_number)
            # without a known sent model (secure aggregation), the changes are 0: loss and gradient norm only
            sent = observation.sent_features(ids, round_number) or returned
            loss_sent, loss_back = torch.log(sent.loss + 1e-12), torch.log(returned.loss + 1e-12)
            norm_sent, norm_back = torch.log(sent.gradient_norm + 1e-12), torch.log(returned.gradient_norm + 1e-12)
            columns += [loss_sent, loss_back, loss_sent - loss_back, norm_sent, norm_back, norm_sent - norm_back]
            before = observation.before_features(ids, round_number)
            if before is not None:  # an ascended round: what the step did to each record, and how much training undid
                loss_before = torch.log(before.loss + 1e-12)
                columns += [loss_before, loss_sent - loss_before, loss_before - loss_back]
        return torch.stack(columns, 1).numpy()
