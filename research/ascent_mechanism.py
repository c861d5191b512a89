"""Why the server's gradient ascent adds leakage on one model and not on another: replay the round.

    python research/ascent_mechanism.py RUN_DIR... [--round R] [--step-norm 0.005,0.02]

Each RUN_DIR is a recorded passive curious-server run (one per seed, same setting). For the
chosen round (default: the last) the script takes what the server sent the victim, trains the
victim's local model from it exactly as the run did (`fedsim.learning.training.train_locally`, the run's
train config, the victim's records in the client's order, the client's seed), and checks that
this replay reproduces the victim's recorded model. Then, for each step size, it moves the sent
model one gradient-ascent step on the targets and the attacker's known records
(`attackers.active.gradient_ascent.ascent_step`, what `curious_server` sends) and replays the
victim's training from there. Over the targets it reports:

- how far the step raised the loss of members and of non-members (nats, mean), and how much of
  that the victim's training took back;
- the AUC of the loss drop from the pre-ascent (sent) model to the returned model, the signal
  `sent_returned`'s pre-ascent columns read, and of the returned loss alone;
- per step, the paired difference (ascent minus no step, same run) over the runs, with a
  two-sided 95% t interval (scipy).

Training and the step run on the run's `backend.cpus_per_client` torch threads, as the client
and the server ran them (parallel reductions round differently with another count), so the
replay does not depend on this process's thread count.

Everything but the step is held fixed (same start, same batches), so a difference is the step's
effect on that round alone; it is not a full run's, where the step also changes later rounds.
Runs it cannot replay exactly (FedProx, strategy mods, GPU clients, secure aggregation) are
refused, and a replay that does not reproduce its run stops the script.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import torch
from sklearn.metrics import roc_auc_score
from torch import nn

from attackers.active.adversary import ascended_ids
from attackers.active.gradient_ascent import ascent_step
from attackers.inference.threat_models import sent_model
from fedsim.core.errors import FedsimError
from fedsim.engine.client_app import client_seed
from fedsim.learning.membership import client_records
from fedsim.learning.models import model_for
from fedsim.learning.training import torch_threads, train_locally
from fedsim.recording.run import Run
from fedsim.stats.paired import paired_interval
from strategies.registry import train_mods


def _losses(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> np.ndarray:
    """Cross-entropy in nats per record, shape (n_records,)."""
    with torch.no_grad():
        return nn.functional.cross_entropy(model.eval()(x), y, reduction="none").numpy()


def replay_victim(run: Run, round_number: int, state: dict[str, torch.Tensor]) -> nn.Module:
    """The victim's local model of `round_number`, trained from `state` as the run trained it.

    Parameters
    ----------
    run : Run
        A recorded run.
    round_number : int
        The round (1-based) whose local training is replayed.
    state : dict of str to torch.Tensor
        The parameters the victim starts from (what it was sent, or that moved by a step).

    Returns
    -------
    torch.nn.Module
        The trained model in eval mode (its records, order, seed and train config are the run's).
    """
    config = run.config
    victim = config.adversary.victim
    x, y = run.records(client_records(run.membership)[victim])  # in the ClientApp's order
    with torch.random.fork_rng(devices=[]):
        model = model_for(config)
    model.load_state_dict(state)
    seed = client_seed(config.seed, round_number, victim)
    torch.manual_seed(seed)
    with torch_threads(config.backend.cpus_per_client):  # the client's thread count, whatever this process holds
        train_locally(model, x, y, config.train, seed, dp_sgd=config.defense.dp_sgd)
    return model.eval()


def check_replayable(run: Run, round_number: int) -> None:
    """Refuse a run whose victim's training `replay_victim` cannot reproduce.

    Parameters
    ----------
    run : Run
        The recorded run.
    round_number : int
        The round to replay.

    Raises
    ------
    FedsimError
        For anything but a passive curious server without secure aggregation whose victim trained
        that round on the CPU with plain local training (no FedProx term, no strategy mods).
    """
    config = run.config
    adversary = config.adversary
    if adversary.role != "server" or adversary.mode != "passive":
        raise FedsimError(f"{run.folder}: not a passive curious-server run (adversary.role {adversary.role}, mode {adversary.mode}); "
                          "give the passive runs, the script adds the step itself")
    if config.defense.secure_aggregation:
        raise FedsimError(f"{run.folder}: under secure aggregation the victim's model is not recorded; nothing to replay against")
    if config.strategy.name == "fedprox" or train_mods(config.strategy) or config.backend.gpus_per_client > 0:
        raise FedsimError(f"{run.folder}: the replay covers plain local training on the CPU, not FedProx's term, the strategy's "
                          "client mods or GPU clients")
    if round_number not in run.rounds or adversary.victim not in run.clients(round_number):
        raise FedsimError(f"{run.folder}: the victim did not train in round {round_number}; choose another --round")


def round_effects(run: Run, round_number: int, step_norms: list[float]) -> tuple[float, list[dict[str, float]]]:
    """The replayed round with no step and with each step size.

    Parameters
    ----------
    run : Run
        A recorded passive curious-server run.
    round_number : int
        The round replayed.
    step_norms : list of float
        Step sizes as fractions of the parameters' L2 norm (`adversary.step_norm`).

    Returns
    -------
    replay_error : float
        The largest absolute difference between the replayed and the recorded victim model (0
        when the replay is exact).
    rows : list of dict
        One per setting (step 0 first): the members' and non-members' mean raise and recovery
        (nats) and the two AUCs over the targets.

    Raises
    ------
    FedsimError
        When the run cannot be replayed (`check_replayable`).
    """
    check_replayable(run, round_number)
    config = run.config
    victim = config.adversary.victim
    ledger = run.membership
    targets = ledger[ledger["target"]]
    x, y = run.records(targets["record_id"].to_numpy())
    members = targets["member"].to_numpy(bool)
    sent = sent_model(run, round_number, victim)
    sent_state = {k: v.detach().clone() for k, v in sent.state_dict().items()}
    before = _losses(sent, x, y)

    recorded = run.model(round_number, victim).state_dict()
    replayed = replay_victim(run, round_number, sent_state).state_dict()
    replay_error = max(float((replayed[k].double() - recorded[k].double()).abs().max()) for k in recorded)

    xa, ya = run.records(ascended_ids(ledger, config))
    rows = []
    for step_norm in [0.0, *step_norms]:
        with torch.random.fork_rng(devices=[]), torch_threads(config.backend.cpus_per_client):  # the server's thread count
            start = ascent_step(model_for(config), sent_state, xa, ya, config.adversary.gamma, step_norm=step_norm) if step_norm else sent_state
        with torch.random.fork_rng(devices=[]):
            stepped = model_for(config)
        stepped.load_state_dict(start)
        after_step = _losses(stepped, x, y)
        returned = _losses(replay_victim(run, round_number, start), x, y)
        rows.append({"step_norm": step_norm,
                     "raise_members": float((after_step - before)[members].mean()),
                     "raise_nonmembers": float((after_step - before)[~members].mean()),
                     "recovered_members": float((after_step - returned)[members].mean()),
                     "recovered_nonmembers": float((after_step - returned)[~members].mean()),
                     "auc_drop": float(roc_auc_score(members, before - returned)),
                     "auc_returned": float(roc_auc_score(members, -returned))})
    return replay_error, rows


def _interval(d: np.ndarray) -> str:
    mean, low, high = paired_interval(d)
    return f"{mean:+.3f}" if np.isnan(low) else f"{mean:+.3f} [{low:+.3f}, {high:+.3f}]"


REPLAY_TOLERANCE = 1e-6  # largest parameter difference accepted between the replay and the recorded model


def main(argv: list[str]) -> int:
    """Replay each run's round with and without each step and print the tables (exit 2 on a run it cannot replay).

    Parameters
    ----------
    argv : list of str
        Command-line arguments (see the module docstring).

    Returns
    -------
    int
        0 on success, 2 for a run it cannot replay, 1 when a replay does not reproduce its run.
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="recorded passive curious-server runs, one per seed")
    parser.add_argument("--round", type=int, default=None, help="round to replay (default: each run's last)")
    parser.add_argument("--step-norm", default="0.005,0.02", help="comma-separated step sizes (fraction of the parameters' norm)")
    args = parser.parse_args(argv)
    steps = [float(s) for s in args.step_norm.split(",")]
    per_run = []
    for folder in args.runs:
        run = Run.open(folder)
        round_number = max(run.rounds) if args.round is None else args.round
        try:
            error, rows = round_effects(run, round_number, steps)
        except FedsimError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        if error > REPLAY_TOLERANCE:
            print(f"error: {folder}: the replay differs from the recorded victim model by {error:.1e}; its numbers would not "
                  "describe this run", file=sys.stderr)
            return 1
        per_run.append(rows)
        print(f"{folder}: round {round_number}, replay matches the recorded victim model to {error:.1e}; "
              + "; ".join(f"step {r['step_norm']:g}: AUC drop {r['auc_drop']:.3f}, returned {r['auc_returned']:.3f}" for r in rows),
              flush=True)
    print(f"\n{len(per_run)} runs. Loss raised by the step and taken back by the victim's training (nats, members / "
          "non-members, mean over runs); paired difference in AUC, step minus no step (95% t interval):\n")
    print("| step | raised | taken back | AUC of the loss drop (sent - returned) | AUC of the returned loss |")
    print("| --- | --- | --- | --- | --- |")
    for i, step in enumerate([0.0, *steps]):
        raise_m = np.mean([rows[i]["raise_members"] for rows in per_run])
        raise_n = np.mean([rows[i]["raise_nonmembers"] for rows in per_run])
        back_m = np.mean([rows[i]["recovered_members"] for rows in per_run])
        back_n = np.mean([rows[i]["recovered_nonmembers"] for rows in per_run])
        if i == 0:
            drop = np.array([rows[0]["auc_drop"] for rows in per_run])
            ret = np.array([rows[0]["auc_returned"] for rows in per_run])
            print(f"| none | 0 / 0 | {back_m:.2f} / {back_n:.2f} | {drop.mean():.3f} (mean) | {ret.mean():.3f} (mean) |")
            continue
        d_drop = np.array([rows[i]["auc_drop"] - rows[0]["auc_drop"] for rows in per_run])
        d_ret = np.array([rows[i]["auc_returned"] - rows[0]["auc_returned"] for rows in per_run])
        print(f"| {step:g} | {raise_m:.2f} / {raise_n:.2f} | {back_m:.2f} / {back_n:.2f} | {_interval(d_drop)} | {_interval(d_ret)} |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
