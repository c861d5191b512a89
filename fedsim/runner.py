"""`fedsim run`: from a validated config to a complete run folder.

Everything that can be wrong with the input (data files, ledger sizes, model and strategy
names) is checked before the run folder is created, so a bad config never leaves a folder
behind; a failure after that marks the manifest 'failed'.
"""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path

import torch
from rich.console import Console

from attackers.adversary import participant_mods, server_wrapper
from attackers.leakage import measure_leakage
from attackers.threat_models import describe
from fedsim.client_app import make_client_app
from fedsim.config import Config
from fedsim.datasets import pool_for
from fedsim.dp_sgd import check_model
from fedsim.errors import FedsimError
from fedsim.membership import UTILITY_TEST, build_ledger, save_ledger
from fedsim.models import model_for
from fedsim.recorder import LEAKAGE_CSV, Recorder
from fedsim.run import Run
from fedsim.server_app import ServerPlan, make_server_app
from fedsim.simulation import quiet_engine_logs, simulate
from strategies import build_strategy, train_mods

RUNS = Path("runs")


def default_run_folder(config: Config) -> Path:
    return RUNS / f"{config.name}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"


def _point_latest(folder: Path) -> None:
    """runs/latest -> the newest run folder (when the run lives under runs/)."""
    latest = RUNS / "latest"
    if folder.parent.resolve() != RUNS.resolve() or (latest.exists() and not latest.is_symlink()):
        return
    temporary = RUNS / ".latest.tmp"
    temporary.unlink(missing_ok=True)
    temporary.symlink_to(folder.name)
    os.replace(temporary, latest)


def run_experiment(config: Config, out: Path | None = None, console: Console | None = None) -> Path:
    """Simulate the configured federation, recording every round; returns the run folder."""
    console = console or Console(stderr=True, soft_wrap=True)
    quiet_engine_logs()
    if config.data.root:  # recorded absolute, so the run can be read back from anywhere
        config.data.root = str(Path(config.data.root).expanduser().resolve())
    pool = pool_for(config.data)
    ledger = build_ledger(config, pool)
    torch.manual_seed(config.seed)
    model = model_for(config)
    strategy = build_strategy(config.strategy, config.data.num_clients, config.train.lr)
    if config.defense.dp_sgd is not None:
        check_model(model, config.model.name)

    folder = out or default_run_folder(config)
    recorder = Recorder(folder, config)
    recorder.start(lambda where: save_ledger(ledger, where))
    members = ledger[ledger["member"]]
    client_records = {int(c): group["record_id"].to_numpy() for c, group in members.groupby("client")}
    test_ids = ledger.loc[ledger["role"] == UTILITY_TEST, "record_id"].to_numpy()

    def show(row: dict) -> None:
        train_loss = f"  train loss {row['train_loss']:.4f}" if "train_loss" in row else ""
        console.print(
            f"round {row['round']:>3}/{config.train.rounds}  test accuracy {row['test_accuracy']:.4f}  "
            f"test loss {row['test_loss']:.4f}{train_loss}  [dim]{row['seconds']:.1f} s[/dim]"
        )

    plan = ServerPlan(strategy, recorder, config.data.num_clients, model, pool.take(test_ids), config.train.rounds, config.seed,
                      show, adversary=server_wrapper(config, ledger), secure_aggregation=config.defense.secure_aggregation)
    client_app = make_client_app(config, client_records, participant_mods(config, ledger), train_mods(config.strategy))
    console.print(
        f"fedsim: {config.name}: {config.data.num_clients} clients on {config.data.dataset}, "
        f"{config.model.name}, {config.strategy.name}, {config.train.rounds} rounds -> {folder}"
    )
    try:
        simulate(make_server_app(plan), client_app, config.data.num_clients, config.backend)
    except BaseException as exc:
        recorder.finish("failed", error=f"{type(exc).__name__}: {exc}")
        raise
    attacker_failed = [r for r, info in recorder.manifest["rounds"].items() if config.adversary.victim in info.get("failed", [])]
    if config.adversary.role == "participant" and config.adversary.mode == "gradient-ascent" and attacker_failed:
        recorder.finish("failed", error=f"the curious participant failed in rounds {attacker_failed}")
        raise FedsimError(
            f"adversary: the curious participant (client {config.adversary.victim}) failed in rounds {', '.join(attacker_failed)}, "
            "most likely a gradient-ascent step with a non-finite loss; lower adversary.gamma"
        )
    if recorder.manifest["rounds_completed"] != config.train.rounds:
        recorder.finish("failed", error=f"only {recorder.manifest['rounds_completed']} of {config.train.rounds} rounds completed")
        raise RuntimeError(f"the simulation stopped after round {recorder.manifest['rounds_completed']} of {config.train.rounds}")
    console.print(f"threat model: {describe(config)}")
    try:
        report = measure_leakage(Run.open(folder), progress=lambda line: console.print(f"[dim]{line}[/dim]"))
        recorder.write_metrics({LEAKAGE_CSV: report.rows, "metrics/roc.csv": report.roc, "metrics/leakage_per_class.csv": report.per_class})
    except BaseException as exc:
        recorder.finish("failed", error=f"attacks: {type(exc).__name__}: {exc}")
        raise
    recorder.finish("complete")
    _point_latest(folder)
    return folder
