"""Threat models (docs/design.md, section 2): what each attacker observes of a recorded run.

- server (global attacker): the target client's local model of each round, with the other
  clients' models of the same round as references; under secure aggregation only the
  aggregate, so it attacks the global model instead.
- participant (local attacker): the global model of each round; its targets are the other
  clients' members.

The attacker knows the `attack_train` records of its targets' side (members, and non-members
drawn to match their labels, `fedsim.learning.membership.match_labels`) and is evaluated on the `target`
records, which it never trains on.

A participant observes only the global models it was sent: those it trained from in the
rounds it was sampled in (the model of round r-1 for round r), never the final aggregate,
which no client receives. Which of these views a config sets up is decided by
`fedsim.core.threat_model.ThreatModel`, which also puts it in words.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch import nn

from attackers.inference.observation import Observation
from fedsim.core.layout import client_file
from fedsim.core.threat_model import ThreatModel
from fedsim.learning.membership import attacker_known, match_labels
from fedsim.learning.models import model_for
from fedsim.learning.training import resolve_device
from fedsim.recording.run import Run


@dataclass
class AttackerView:
    """What one attacker observes of a run and which records it knows and attacks.

    Attributes
    ----------
    attacker : str
        "server" or "participant".
    target : str
        Whose membership is attacked: "client-000", "global" or "others".
    observation : Observation
        The snapshots it holds.
    train_ids, train_members : numpy.ndarray
        The attacker's known records (balanced members and non-members), shape (n_known,).
    eval_ids, eval_members : numpy.ndarray
        The target records it is scored on, shape (n_targets,); never used for fitting.
    """

    attacker: str  # "server" | "participant"
    target: str  # whose membership is attacked, e.g. "client-000", "global"
    observation: Observation
    train_ids: np.ndarray
    train_members: np.ndarray
    eval_ids: np.ndarray
    eval_members: np.ndarray


def _balanced(ids: np.ndarray, members: np.ndarray, labels: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """As many known members as non-members, with the same label counts (`match_labels`)."""
    inside, outside, _ = match_labels(ids[members], ids[~members], labels, np.random.default_rng(seed))
    chosen = np.sort(np.concatenate([inside, outside]))
    return chosen, np.isin(chosen, inside)


def sent_model(run: Run, round_number: int, client: int):
    """What the server sent `client` in a round: its recorded broadcast, else the previous aggregate.

    Parameters
    ----------
    run : Run
        The recorded run.
    round_number : int
        The round (1-based) whose sent model is wanted.
    client : int
        The client's partition id.

    Returns
    -------
    torch.nn.Module
        The model in eval mode (built without drawing from torch's global generator when read
        from a broadcast file).
    """
    if (run.folder / client_file(round_number, client, "broadcast")).exists():
        with torch.random.fork_rng(devices=[]):
            model = model_for(run.config)
        model.load_state_dict(run.state(round_number, client, kind="broadcast"))
        return model.eval()
    return run.model(round_number - 1)


def before_ascent(run: Run, round_number: int, client: int) -> nn.Module | None:
    """What a gradient-ascent server held before its step of a round: the model it ascended from.

    That is the previous aggregate, or under isolation the victim's latest reply before the round
    (the aggregate before its first reply), as `attackers.active.curious_server` starts its step.

    Parameters
    ----------
    run : Run
        The recorded run.
    round_number : int
        The round (1-based).
    client : int
        The victim's partition id.

    Returns
    -------
    torch.nn.Module or None
        The model in eval mode; None when the server did not ascend in that round.
    """
    adversary = run.config.adversary
    if adversary.role != "server" or adversary.mode != "gradient-ascent" or not adversary.acts_in(round_number):
        return None
    if adversary.isolate:
        replied = [r for r in run.rounds if 1 <= r < round_number and client in run.clients(r)]
        if replied:
            return run.model(replied[-1], client)
    return run.model(round_number - 1)


def _broadcast_rounds(run: Run, rounds: list[int], client: int) -> frozenset[int]:
    """The rounds among `rounds` in which `client` was sent something other than the aggregate."""
    return frozenset(r for r in rounds if (run.folder / client_file(r, client, "broadcast")).exists())


def sent_mean(run: Run, round_number: int, client: int):
    """What a secure aggregate of a round would be had no client trained: the mean of what was sent.

    `client` was sent its broadcast, every other contributor the previous aggregate; they are
    weighted equally (FedAvg weighs by examples; equal when clients hold `records_per_client`
    records each: the server learns only the total under secure aggregation).

    Parameters
    ----------
    run : Run
        The recorded run.
    round_number : int
        The round (1-based).
    client : int
        The client that was sent the broadcast.

    Returns
    -------
    torch.nn.Module
        The model in eval mode.
    """
    contributors = max(1, len(run.manifest.rounds[round_number].secure_sum or ()))  # the replies summed, not the failed
    sent = sent_model(run, round_number, client).state_dict()
    previous = run.model(round_number - 1).state_dict()
    with torch.random.fork_rng(devices=[]):
        model = model_for(run.config)
    model.load_state_dict({k: (sent[k] + (contributors - 1) * previous[k]) / contributors for k in sent})
    return model.eval()


def attacker_view(run: Run) -> AttackerView | None:
    """The configured adversary's view of the run.

    Parameters
    ----------
    run : Run
        A recorded run.

    Returns
    -------
    AttackerView or None
        None when the run has no adversary (`adversary.role: none`).
    """
    threat = ThreatModel.of(run.config)
    if threat.target is None:
        return None
    adversary = run.config.adversary
    ledger: pd.DataFrame = run.membership
    victim = adversary.victim
    known = attacker_known(ledger, run.config)  # the records an active attacker also ascends
    train_ids, train_members = _balanced(ledger.loc[known, "record_id"].to_numpy(), ledger.loc[known, "member"].to_numpy(bool),
                                      run.pool.labels.numpy(), run.config.seed)
    targets = ledger[ledger["target"]]
    eval_ids, eval_members = targets["record_id"].to_numpy(), targets["member"].to_numpy(bool)

    trained = [r for r in run.rounds if r >= 1]
    budget = int(run.config.features.memory_budget_gib * (1 << 30))
    device = resolve_device(run.config.features.device)
    if threat.observes == "client updates":
        rounds = [r for r in trained if victim in run.clients(r)]

        def references(round_number: int):  # the other clients whose models the run folder kept (record.clients)
            return [run.model(round_number, c) for c in run.stored(round_number) if c != victim]

        def references_sent(round_number: int):
            return [sent_model(run, round_number, c) for c in run.stored(round_number) if c != victim]

        kept = run.config.record.kept_references() != 0  # record.clients: victim without references keeps none
        observation = Observation(rounds, lambda r: run.model(r, victim), run.records, budget, reference_models=references if kept else None,
                                  device=device, load_sent=lambda r: sent_model(run, r, victim),
                                  manipulated=_broadcast_rounds(run, rounds, victim),
                                  load_before=lambda r: before_ascent(run, r, victim), reference_sent=references_sent if kept else None)
    elif threat.observes == "aggregates" and adversary.mode == "crafted-model":  # secure aggregation: the sum of the trap's reply and the others'
        summed = [r for r in trained if victim in (run.manifest.rounds[r].secure_sum or ())]  # its trap's reply is in the sum
        crafted = _broadcast_rounds(run, summed, victim)
        observation = Observation(trained, lambda r: run.model(r), run.records, budget, device=device,
                                  load_sent=lambda r: sent_model(run, r, victim), manipulated=crafted,
                                  load_baseline=lambda r: sent_mean(run, r, victim))
    elif threat.observes == "aggregates":  # the aggregates it computes
        observation = Observation(trained, lambda r: run.model(r), run.records, budget, device=device)
    else:  # round r: the global model of round r - 1, which the participant trained from
        received = [r for r in trained if victim in run.received(r)]

        def own_upload(r: int):  # before global r - 1 came back, the participant held its own upload of round r - 1
            return run.model(r - 1, victim) if r >= 2 and victim in run.stored(r - 1) else run.model(r - 1)

        observation = Observation(received, lambda r: run.model(r - 1), run.records, budget, device=device, load_sent=own_upload)
    return AttackerView(adversary.role, threat.target, observation, train_ids, train_members, eval_ids, eval_members)
