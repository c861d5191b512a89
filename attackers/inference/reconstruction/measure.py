"""Reconstruction per round: every configured reconstruction attack on each update the adversary observed.

What an update is depends on the threat model (`fedsim.core.threat_model.ThreatModel`), as for
the membership attacks (`attackers.inference.threat_models`):

- a curious server that sees individual updates holds, in each round the victim replied in, what it
  sent the victim (`sent_model`: its broadcast, else the previous aggregate) and the victim's
  returned model, trained on `num_examples` records: the victim's members;
- a curious server under secure aggregation holds only the aggregate. Had no client trained, the
  aggregate would be the mean of what was sent (`sent_mean`), so it inverts aggregate - mean sent,
  the example-weighted mean of every contributor's update, as one update on all their records;
  it is scored on the victim's members, the records it is after (another contributor's record in
  a reconstruction counts for nothing);
- a curious participant holds the global models it was sent: the model of round r - 1 (sent in round
  r) and of round r (sent in round r + 1), so it inverts their difference, the aggregate's update,
  in each round r it was sent both, with nothing taken out (its own update is in it too); it is
  scored on the other contributors' members of round r, its targets.

The local schedule (`LocalSchedule`) is fedsim's `train` section for one client's update; an
aggregate is the mean of several clients' local runs, which no single schedule describes, and an
audited Flower app trains with its own loop, so those tasks carry none (one pseudo-gradient) unless
the audit's config says its `train` section states the app's schedule (`app.train_schedule`).
An attack with `needs_crafted_model` reads only the rounds in which the server sent the victim a
crafted model. Bounds are the normalised 0 and 1 of an image pool, else the pool's per-feature
minimum and maximum. Each (attack, round) draws from `attack_seed_sequence(seed, attack, round, 0)`;
the scoring is `attackers.inference.reconstruction.quality`'s.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
from safetensors.torch import save
from torch import nn

from attackers.inference.base import attack_seed_sequence
from attackers.inference.leakage import Progress
from attackers.inference.reconstruction.base import LocalSchedule, ReconstructionAttack, ReconstructionTask
from attackers.inference.reconstruction.quality import PSNR_THRESHOLD_DB, Scale, baseline, chance, score
from attackers.inference.reconstruction.registry import check_reconstructions, name_and_args, reconstruction_class, reconstruction_params
from attackers.inference.threat_models import sent_mean, sent_model
from fedsim.core.errors import FedsimError
from fedsim.core.layout import RECONSTRUCTION_COLUMNS, client_file
from fedsim.core.threat_model import ThreatModel
from fedsim.learning.membership import ATTACK_TRAIN
from fedsim.recording.run import Run

STAGE = "reconstruction"
PSNR_CAP_DB = 100.0
"""Means of PSNR count a record above this as this: an exact copy has PSNR inf, and float32 rounding alone is beyond 100 dB."""
SUMMARY_COLUMNS = ["attack", "attacker", "round", "n_records", "recovered", "mean_psnr", "mean_baseline_psnr", "mean_chance_psnr",
                   "exact", "seconds"]


class _Silent:
    def start(self, stage: str, total: int) -> None:
        pass

    def advance(self, stage: str, message: str | None = None) -> None:
        pass


@dataclass
class ReconstructionView:
    """The updates one attacker observed, as reconstruction tasks.

    Attributes
    ----------
    attacker : str
        "server" or "participant".
    target : str
        Whose records are scored: "client-XXX" (the victim's) or "others" (the participant's targets).
    rounds : list of int
        The rounds whose update it holds.
    crafted : frozenset of int
        Those in which the server sent the victim a crafted model.
    task : callable
        round -> ReconstructionTask (a fresh model each call: an attack may change it).
    true_ids : callable
        round -> the record ids the update was trained on that are scored, shape (n,), ledger order.
    """

    attacker: str
    target: str
    rounds: list[int]
    crafted: frozenset[int]
    task: Callable[[int], ReconstructionTask]
    true_ids: Callable[[int], np.ndarray]


def members_of(run: Run, clients: Sequence[int]) -> np.ndarray:
    """The member record ids of `clients`, in ledger order (the order each client trains on them)."""
    ledger = run.membership
    chosen = ledger[ledger["member"] & ledger["client"].isin(list(clients)).fillna(False)]
    return chosen["record_id"].to_numpy(np.int64)


def contributors(run: Run, round_number: int) -> list[int]:
    """The clients whose updates a round's aggregate holds: those heard, or under secure aggregation those summed."""
    info = run.manifest.rounds[round_number]
    return sorted(info.clients) if info.clients else sorted(info.secure_sum or ())


def local_schedule(run: Run) -> LocalSchedule | None:
    """The victim's local schedule as the run's `train` section states it; None for an audited app unless `app.train_schedule`."""
    config = run.config
    if config.app is not None and not config.app.train_schedule:
        return None
    train = config.train
    return LocalSchedule(lr=train.lr, batch_size=train.batch_size, local_epochs=train.local_epochs, optimizer=train.optimizer,
                         momentum=train.momentum)


def _num_classes(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    with torch.no_grad():
        return int(model(torch.zeros(1, *input_shape)).shape[-1])


def _make_task(model: nn.Module, returned: dict[str, torch.Tensor], n_records: int, schedule: LocalSchedule | None,
               scale: Scale, input_shape: tuple[int, ...]) -> ReconstructionTask:
    model = model.eval()
    sent = {k: v.detach().clone() for k, v in model.state_dict().items()}
    returned = {k: returned[k].to(sent[k].dtype) for k in sent}
    return ReconstructionTask(model, sent, returned, n_records, input_shape, _num_classes(model, input_shape), schedule,
                              (scale.lower.clone(), scale.upper.clone()))


def _broadcast_rounds(run: Run, rounds: Sequence[int], client: int) -> frozenset[int]:
    if run.config.adversary.mode != "crafted-model":
        return frozenset()
    return frozenset(r for r in rounds if (run.folder / client_file(r, client, "broadcast")).exists())


def reconstruction_view(run: Run) -> ReconstructionView | None:
    """The configured adversary's updates of the run as reconstruction tasks (see the module docstring).

    Parameters
    ----------
    run : Run
        A recorded run.

    Returns
    -------
    ReconstructionView or None
        None without an adversary (`adversary.role: none`).
    """
    threat = ThreatModel.of(run.config)
    if threat.target is None:
        return None
    victim = run.config.adversary.victim
    scale = Scale.of_pool(run.pool)
    shape = run.pool.input_shape
    schedule = local_schedule(run)
    trained = [r for r in run.rounds if r >= 1]
    own = members_of(run, [victim])
    victim_target = f"client-{victim:03d}"
    if threat.observes == "client updates":
        rounds = [r for r in trained if victim in run.clients(r) and victim in run.stored(r)]

        def individual(r: int) -> ReconstructionTask:
            return _make_task(sent_model(run, r, victim), run.state(r, victim), run.num_examples(r, victim), schedule, scale, shape)

        return ReconstructionView("server", victim_target, rounds, _broadcast_rounds(run, rounds, victim), individual, lambda r: own)
    if threat.observes == "aggregates":
        rounds = [r for r in trained if victim in (run.manifest.rounds[r].secure_sum or ())]

        def aggregate(r: int) -> ReconstructionTask:
            return _make_task(sent_mean(run, r, victim), run.state(r), len(members_of(run, contributors(run, r))), None, scale, shape)

        return ReconstructionView("server", victim_target, rounds, _broadcast_rounds(run, rounds, victim), aggregate, lambda r: own)
    received = {r for r in trained if victim in run.received(r)}  # it holds global r - 1 for each
    rounds = [r for r in trained if r in received and r + 1 in received]

    def global_update(r: int) -> ReconstructionTask:
        return _make_task(run.model(r - 1), run.state(r), len(members_of(run, contributors(run, r))), None, scale, shape)

    return ReconstructionView("participant", "others", rounds, frozenset(), global_update,
                              lambda r: members_of(run, [c for c in contributors(run, r) if c != victim]))


@dataclass
class ReconstructionReport:
    """What `measure_reconstruction` measured.

    Attributes
    ----------
    rows : pandas.DataFrame
        metrics/reconstruction.csv: RECONSTRUCTION_COLUMNS, one row per (attack, attacker, round, true record).
    tensors : dict of str to torch.Tensor
        metrics/reconstructions.safetensors: per (attack, round), "ATTACK/round-RRRR/x" the reconstructions
        (n, *input_shape, model input space), ".../y" their inferred labels and ".../record_id" the true
        record each was paired with (-1: none).
    why_empty : str or None
        One line: why there are no rows (None when there are).
    declined : list of str
        One line per (attack, round) an attack declined within its budget (`ReconstructionAttack.declines`).
    """

    rows: pd.DataFrame
    tensors: dict[str, torch.Tensor] = field(default_factory=dict)
    why_empty: str | None = None
    declined: list[str] = field(default_factory=list)

    def payload(self) -> bytes:
        """The tensors as safetensors bytes (with the thresholds in the metadata)."""
        return save({k: v.contiguous() for k, v in self.tensors.items()}, metadata={"psnr_threshold_db": str(PSNR_THRESHOLD_DB)})


def tensor_key(attack: str, round_number: int, part: str) -> str:
    """The key of one (attack, round)'s `part` ("x", "y" or "record_id") in reconstructions.safetensors."""
    return f"{attack}/round-{round_number:04d}/{part}"


def measure_reconstruction(run: Run, attacks: Sequence[Any] | None = None, rounds: Sequence[int] | None = None,
                           progress: Progress | None = None) -> ReconstructionReport:
    """One row per (attack, attacker, round, true record) for the run's adversary.

    Parameters
    ----------
    run : Run
        A recorded run.
    attacks : sequence of str or AttackConfig, optional
        Reconstruction entries (names or `{name, args}`); default: the run's config `reconstructions`.
    rounds : sequence of int, optional
        Rounds to attack; default: every round the attacker observed.
    progress : Progress, optional
        Where the stage is reported (one step per attack and round).

    Returns
    -------
    ReconstructionReport
        The rows of metrics/reconstruction.csv and the reconstructions.

    Raises
    ------
    FedsimError
        One line, before any work, for an entry `check_reconstructions` refuses or an attack that
        reads a crafted model on a run in which the server sent none; an attack's own line for a
        model it cannot invert.
    """
    progress = progress or _Silent()
    specs = list(attacks if attacks is not None else run.config.reconstructions)
    check_reconstructions(specs, run.config)
    empty = pd.DataFrame(columns=RECONSTRUCTION_COLUMNS)
    view = reconstruction_view(run)
    if view is None:
        return ReconstructionReport(empty, why_empty="no adversary (adversary.role: none)")
    plan: list[tuple[str, type[ReconstructionAttack], Any, int]] = []
    for spec in specs:
        name, cls = name_and_args(spec)[0], reconstruction_class(spec)
        observed = view.crafted if cls.needs_crafted_model else view.rounds
        if cls.needs_crafted_model and not view.crafted:
            raise FedsimError(f"reconstructions: {name} reads the traps of a crafted model, and the server sent client "
                              f"{run.config.adversary.victim} none in any round it observed (adversary.mode: {run.config.adversary.mode}, "
                              f"active_rounds: {run.config.adversary.active_rounds}); attack a crafted-model run or remove {name}")
        params = reconstruction_params(spec)
        plan += [(name, cls, params, r) for r in sorted(observed) if rounds is None or r in rounds]
    if not plan:
        return ReconstructionReport(empty, why_empty=_why_empty(run, view, specs, rounds))

    scale = Scale.of_pool(run.pool)
    ledger = run.membership
    known = ledger.loc[(ledger["role"] == ATTACK_TRAIN) & ~ledger["member"], "record_id"].to_numpy()
    known_x = run.records(known)[0]
    baseline_x = baseline(known_x)
    seed = run.config.seed
    rows: list[pd.DataFrame] = []
    tensors: dict[str, torch.Tensor] = {}
    declined: list[str] = []
    progress.start(STAGE, len(plan))
    for name, cls, params, round_number in plan:
        task = view.task(round_number)
        attack = cls(params, attack_seed_sequence(seed, name, round_number, 0))
        reason = attack.declines(task)
        if reason is not None:  # no rows: a round not attacked is not a round with nothing recovered
            declined.append(f"{name} did not attack round {round_number}: {reason}")
            progress.advance(STAGE, f"round {round_number:>3}  {view.attacker} {name:<19} not attacked: {reason}")
            continue
        started = time.perf_counter()
        reconstruction = attack.reconstruct(task)
        seconds = time.perf_counter() - started
        ids = view.true_ids(round_number)
        true_x, true_y = run.records(ids)
        x = reconstruction.x.detach().float().reshape(-1, *task.input_shape)
        y = reconstruction.y.detach().long().reshape(-1)
        claimed = None if reconstruction.exact is None else reconstruction.exact.detach().bool().reshape(-1)
        guesses = chance(known_x, len(x), attack_seed_sequence(seed, f"{name}/chance", round_number, 0))
        scores = score(true_x, x, y, claimed, baseline_x, scale, guesses)
        table = pd.DataFrame({
            "attack": name, "attacker": view.attacker, "target": view.target, "round": round_number, "record_id": ids,
            "label": true_y.numpy(), "predicted_label": pd.array([None if np.isnan(v) else int(v) for v in scores.predicted_label], dtype="Int64"),
            "psnr": scores.psnr, "ssim": scores.ssim, "mse": scores.mse, "baseline_psnr": scores.baseline_psnr,
            "baseline_ssim": scores.baseline_ssim, "recovered": scores.recovered,
            "exact": pd.array(scores.exact, dtype="boolean") if scores.exact is not None else pd.array([None] * len(ids), dtype="boolean"),
            "seconds": round(seconds, 4),
            "claimed_exact": (pd.array(scores.claimed_exact, dtype="boolean") if scores.claimed_exact is not None
                              else pd.array([None] * len(ids), dtype="boolean")),
            "max_abs_error": scores.max_abs_error, "chance_psnr": scores.chance_psnr,
        }, columns=RECONSTRUCTION_COLUMNS)
        rows.append(table)
        paired = np.full(len(x), -1, dtype=np.int64)
        has = scores.matched >= 0
        paired[scores.matched[has]] = ids[has]
        tensors[tensor_key(name, round_number, "x")] = x
        tensors[tensor_key(name, round_number, "y")] = y
        tensors[tensor_key(name, round_number, "record_id")] = torch.from_numpy(paired)
        progress.advance(STAGE, f"round {round_number:>3}  {view.attacker} {name:<19} {_progress_text(table, seconds)}")
    if not rows:
        return ReconstructionReport(empty, why_empty=declined[0])
    return ReconstructionReport(pd.concat(rows, ignore_index=True), tensors, declined=declined)


def _progress_text(table: pd.DataFrame, seconds: float) -> str:
    row = summarise(table).iloc[0]
    exact = "" if pd.isna(row["exact"]) else f"  exact {int(row['exact'])}"
    return (f"recovered {row['recovered']:.3f} of {int(row['n_records'])}  PSNR {row['mean_psnr']:.1f} dB "
            f"(baseline {row['mean_baseline_psnr']:.1f}, chance {row['mean_chance_psnr']:.1f}){exact}  [dim]{seconds:.1f} s[/dim]")


def summarise(rows: pd.DataFrame) -> pd.DataFrame:
    """Per (attack, attacker, round): records scored, fraction recovered, mean PSNR and baseline PSNR, exact count.

    Parameters
    ----------
    rows : pandas.DataFrame
        reconstruction.csv's rows (as written or as read back).

    Returns
    -------
    pandas.DataFrame
        SUMMARY_COLUMNS: `recovered` the fraction of the true records recovered (PSNR >= 20 dB),
        `mean_psnr` and `mean_baseline_psnr` over the same records, those paired with a
        reconstruction, `mean_chance_psnr` over as many, those chance's guesses paired (each capped
        at `PSNR_CAP_DB`),
        `exact` the count of exact records (empty for an attack that claims none), `seconds` the
        attack's wall time for the round.
    """
    summary = []
    for (attack, attacker, round_number), group in rows.groupby(["attack", "attacker", "round"], sort=False):
        exact = group["exact"].dropna()
        paired = group["psnr"].notna()
        summary.append({
            "attack": attack, "attacker": attacker, "round": int(round_number), "n_records": len(group),
            "recovered": float(group["recovered"].astype(bool).mean()),
            "mean_psnr": float(group["psnr"].astype(float).clip(upper=PSNR_CAP_DB).mean()),
            "mean_baseline_psnr": float(group.loc[paired, "baseline_psnr"].astype(float).clip(upper=PSNR_CAP_DB).mean()),
            "mean_chance_psnr": float(group["chance_psnr"].astype(float).clip(upper=PSNR_CAP_DB).mean()),
            "exact": int(exact.astype(bool).sum()) if len(exact) else None,
            "seconds": float(group["seconds"].iloc[0]),
        })
    return pd.DataFrame(summary, columns=SUMMARY_COLUMNS)


def _why_empty(run: Run, view: ReconstructionView, specs: Sequence[Any], rounds: Sequence[int] | None) -> str:
    """One line: why a run with an adversary has no reconstruction rows."""
    if not specs:
        return "no reconstruction attack configured (reconstructions: [])"
    if not view.rounds:
        if view.attacker == "participant":
            return (f"the curious participant (client {run.config.adversary.victim}) was never sent the global models of two "
                    "consecutive rounds, so it holds no update; raise the strategy's fraction_train or run more rounds")
        return (f"the server holds no update of client {run.config.adversary.victim} (client sampling left it out of every round, "
                "or it failed or dropped out); raise the strategy's fraction_train or run more rounds")
    return f"none of the rounds asked for ({list(rounds or [])}) was observed (observed rounds: {view.rounds})"
