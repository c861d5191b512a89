"""`fedsim run`: from a validated config to a complete run folder.

Everything that can be wrong with the input (data files, ledger sizes, model and strategy
names) is checked before the run folder is created, so a bad config never leaves a folder
behind; a failure after that marks the manifest 'failed'.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import pandas as pd
import torch
from flwr.clientapp import ClientApp
from flwr.serverapp import ServerApp
from flwr.serverapp.strategy import Strategy

from attackers.active.adversary import participant_mods, server_wrapper
from attackers.active.crafted_model import check_crafted
from attackers.inference.leakage import measure_leakage
from attackers.inference.reconstruction.measure import measure_reconstruction
from attackers.inference.reconstruction.registry import check_reconstructions
from attackers.inference.registry import attack_name, check_attacks_on
from fedsim.app.console import RUN_LOG, RunConsole, summary_table
from fedsim.core.config import Config, load_config
from fedsim.core.errors import FedsimError
from fedsim.core.layout import LEAKAGE_SEEDS_CSV, RECONSTRUCTION_CSV, RECONSTRUCTIONS
from fedsim.core.messages import PARTITION_KEY
from fedsim.core.threat_model import ThreatModel
from fedsim.engine.client_app import make_client_app
from fedsim.engine.faults import FaultPlan, failing_client_mod
from fedsim.engine.inprocess import run_in_process
from fedsim.engine.server_app import ServerPlan, make_server_app
from fedsim.engine.simulation import engine_log, in_flight_window, local_cpus, quiet_engine_logs, simulate
from fedsim.learning.datasets import Pool, local_root, pool_for, resolve_dataset
from fedsim.learning.dp_sgd import check_model
from fedsim.learning.membership import UTILITY_TEST, build_ledger, client_records, save_ledger
from fedsim.learning.models import model_for, resolve_model
from fedsim.recording.recorder import LEAKAGE_CSV, PER_CLASS_CSV, REPORT_HTML, ROC_CSV, Recorder
from fedsim.recording.run import Run
from fedsim.report.summary import Summary
from fedsim.report.tensorboard import check_tensorboard, write_tensorboard
from fedsim.report.writer import run_summary, write_report
from strategies.registry import STATELESS, build_strategy, check_strategy, is_stateless, train_mods

RUNS = Path("runs")
ROUNDS_STAGE = "rounds"
CLIENTS_STAGE = "client training"

Engine = Callable[[ServerPlan, ClientApp], None]
"""Runs the server's plan against the clients: Flower's simulation (`simulate_engine`), or,
inside a ServerApp that `flwr run` started, `fedsim.engine.server_app.serve` on the Grid it was given."""


def check_config(config: Config) -> Config:
    """Check the names a config gives against the registries that own them.

    The pydantic schema (`fedsim.core.config`) checks types, ranges and consistency; the names of
    the dataset and model (or their import paths), strategy (and its base, or import path) and attacks are checked here,
    by the layers that own those registries, so the schema imports nothing above the core.

    Parameters
    ----------
    config : Config
        A config as `fedsim.core.config.load_config` returns it.

    Returns
    -------
    Config
        The same config, for chaining.

    Raises
    ------
    FedsimError
        One line naming the first unknown name, the key it came from and the choices.
    """
    resolve_dataset(config.data.dataset)
    resolve_model(config.model.name)
    check_strategy(config)
    check_attacks_on(config.attacks, config)
    check_reconstructions(config.reconstructions, config)
    check_tensorboard(config)
    if config.adversary.mode != "crafted-model" and any(attack_name(a) == "crafted" for a in config.attacks):
        raise FedsimError("attacks: crafted reads the traps of a crafted-model server; set adversary.mode: crafted-model or remove it")
    return config


def load_checked_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """`fedsim.core.config.load_config`, then `check_config`: what `fedsim run` and `fedsim sweep` read."""
    return check_config(load_config(path, overrides))


def prepare(config: Config, notes: list[str] | None = None) -> tuple[pd.DataFrame, torch.nn.Module, Strategy]:
    """Everything a run needs before its folder exists, so bad input never leaves a folder behind.

    Checks the registry names, loads the data set (its files must exist and parse), builds the
    membership ledger (the sizes must fit the pool), the initial model (seeded by `config.seed`)
    and the strategy, and refuses a model DP-SGD cannot train. `fedsim check` runs exactly this.

    Parameters
    ----------
    config : Config
        The validated configuration; `data.root` is made absolute in place (the run folder
        records it, so it can be read back from anywhere).
    notes : list of str, optional
        Where one-line notes for the user go (e.g. fewer targets than asked, and why).

    Returns
    -------
    ledger : pandas.DataFrame
        The membership ledger, one row per record (`fedsim.learning.membership.COLUMNS`).
    model : torch.nn.Module
        The initial global model.
    strategy : flwr.serverapp.strategy.Strategy
        The configured strategy, built for `data.num_clients` clients.

    Raises
    ------
    FedsimError
        One line for the first problem found.
    """
    check_config(config)
    check_devices(config)
    config.data.root = local_root(config.data)
    pool = pool_for(config.data)
    ledger = build_ledger(config, pool, notes)
    torch.manual_seed(config.seed)
    model = model_for(config)
    strategy = build_strategy(config.strategy, config.data.num_clients, config.train.lr)
    if config.defense.dp_sgd is not None:
        check_model(model, config.model.name)
    if config.adversary.mode == "crafted-model":
        check_crafted(model, int(ledger["target"].sum()), config)
    return ledger, model, strategy


def default_run_folder(config: Config, runs: Path = RUNS) -> Path:
    return runs / f"{config.name}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"


def point_latest(folder: Path, runs: Path = RUNS) -> None:
    """runs/latest -> the newest run folder (when the run lives under runs/)."""
    latest = runs / "latest"
    if folder.parent.resolve() != runs.resolve() or (latest.exists() and not latest.is_symlink()):
        return
    temporary = runs / ".latest.tmp"
    temporary.unlink(missing_ok=True)
    temporary.symlink_to(folder.name)
    os.replace(temporary, latest)


def check_devices(config: Config) -> None:
    """One line instead of a hang when the config asks for GPUs or CPUs this machine does not have.

    With `backend.ray_address` (or RAY_ADDRESS) the GPUs and CPUs are the cluster's, which Ray checks.

    Raises
    ------
    FedsimError
        `backend.gpus_per_client` > 0 or `features.device: cuda` without CUDA here, or, on the
        Ray engine, `backend.cpus_per_client` above the CPUs a local Ray offers (no client
        could ever be scheduled: Flower waits on an empty actor pool).
    """
    local = not (config.backend.ray_address or os.environ.get("RAY_ADDRESS"))
    if local and config.backend.engine == "ray" and config.backend.cpus_per_client > (cpus := local_cpus()):
        raise FedsimError(f"backend.cpus_per_client is {config.backend.cpus_per_client:g} but Ray sees {cpus:g} CPUs on this machine, so "
                          f"no client could be scheduled; set backend.cpus_per_client to at most {cpus:g} (or attach a cluster "
                          "through backend.ray_address)")
    if local and config.backend.gpus_per_client > 0 and not torch.cuda.is_available():
        raise FedsimError(f"backend.gpus_per_client is {config.backend.gpus_per_client} but PyTorch sees no CUDA GPU on this machine; "
                          "set backend.gpus_per_client=0 (or attach a cluster with GPUs through backend.ray_address)")
    if config.features.device == "cuda" and not torch.cuda.is_available():
        raise FedsimError("features.device is cuda but PyTorch sees no CUDA GPU on this machine; set features.device=auto or cpu")


def run_apps(config: Config, server_app: ServerApp, client_app: ClientApp, log_file: Path) -> None:
    """Run a ServerApp and a ClientApp on the configured engine (`backend.engine`): Flower's Ray
    simulation with one virtual SuperNode per client, or both in this process; the engine's log goes to `log_file`.
    """
    if config.backend.engine == "in-process":
        with engine_log(log_file):
            run_in_process(server_app, client_app, config.data.num_clients)
    else:
        simulate(server_app, client_app, config.data.num_clients, config.backend, log_file)


def simulate_engine(config: Config) -> Engine:
    """The configured engine (`backend.engine`): Flower's Ray simulation with one virtual SuperNode
    per client, or the same apps run in this process (`fedsim.engine.inprocess`).
    """

    def run(plan: ServerPlan, client_app: ClientApp) -> None:
        if config.backend.engine == "ray":  # Flower's simulation runtime: a window of messages in flight (PartitionOrderedGrid)
            plan.in_flight = lambda: in_flight_window(config.backend)
        try:
            run_apps(config, make_server_app(plan), client_app, plan.recorder.folder / RUN_LOG)
        finally:  # e.g. Ctrl-C: the Ray engine's ServerApp thread, which the interpreter waits for at exit, stops waiting
            plan.stop.set()

    return run


def run_experiment(config: Config, out: Path | None = None, console: RunConsole | None = None, force: bool = False,
                   engine: Engine | None = None, runs: Path = RUNS) -> Path:
    """Simulate the configured federation, recording every round, measure its leakage and write
    its report; returns the run folder. Progress shows on `console` (default: bars on stderr),
    the final summary table on its stdout, and both go to the folder's run.log.

    `engine` runs the rounds (default: `simulate_engine(config)`); `runs` is the folder whose
    `latest` link points at the newest run (default `runs/` under the working directory).
    """
    console = console or RunConsole()
    quiet_engine_logs()
    notes: list[str] = []
    ledger, model, strategy = prepare(config, notes)
    recorder = Recorder(out or default_run_folder(config, runs), config)
    recorder.start(lambda where: save_ledger(ledger, where), force=force)
    return _carry_out(recorder, ledger, model, strategy, None, console, engine or simulate_engine(config), notes, runs)


def resume_experiment(folder: Path, console: RunConsole | None = None) -> Path:
    """Continue an interrupted run after its last complete round; the records it adds are those
    an uninterrupted run with the same seed would have written.
    """
    console = console or RunConsole()
    quiet_engine_logs()
    built: list = []

    def refuse(recorded: Run) -> None:  # before the recorder changes anything on disk: a refused resume leaves the folder as it was
        config, last = recorded.config, recorded.manifest.rounds_completed
        torch.manual_seed(config.seed)
        model = model_for(config)
        strategy = build_strategy(config.strategy, config.data.num_clients, config.train.lr)
        if last >= 1 and config.defense.dp_sgd is not None:
            raise FedsimError("--resume: DP-SGD clients keep their privacy accountant between rounds, which the run folder does not "
                              "record; rerun it with --force")
        if last >= 1 and config.record.dtype != "float32":
            raise FedsimError(f"--resume: the run records {config.record.dtype} (rounded) parameters, and continuing from them would "
                              "not give an uninterrupted run's records; rerun it with --force")
        if last >= 1 and not is_stateless(strategy):
            raise FedsimError(f"--resume: strategy {config.strategy.name} keeps state between rounds that the run folder does not "
                              f"record; rerun it with --force (resumable strategies: {', '.join(sorted(STATELESS))})")
        built[:] = [model, strategy]

    recorder = Recorder.reopen(folder, refuse)
    config = recorder.config
    run = Run.open(folder)
    last = recorder.manifest.rounds_completed
    model, strategy = built
    if last >= 0:
        model.load_state_dict(run.state(last))
    return _carry_out(recorder, run.membership, model, strategy, run if last >= 0 else None, console, simulate_engine(config))


def client_app_for(config: Config, ledger: pd.DataFrame, mods: list | tuple = ()) -> ClientApp:
    """The ClientApp of a run: honest training on each client's members of `ledger`, wrapped in
    `mods`, the curious participant's mod (when a participant is the adversary) and the
    strategy's client mods (training only).

    Parameters
    ----------
    config : Config
        The checked config of the run.
    ledger : pandas.DataFrame
        The membership ledger (`fedsim.learning.membership.build_ledger`), one row per record.
    mods : list
        Outermost ClientApp mods (e.g. injected faults).

    Returns
    -------
    flwr.clientapp.ClientApp
        The app every SuperNode runs; a node's `partition-id` (node config) picks its records.
    """
    return make_client_app(config, client_records(ledger), list(mods) + participant_mods(config, ledger), train_mods(config.strategy))


def _carry_out(recorder: Recorder, ledger, model: torch.nn.Module, strategy, resumed: Run | None, console: RunConsole,
               engine: Engine, notes: list[str] | tuple = (), runs: Path = RUNS) -> Path:
    """The rounds still to do, then attacks and report, with the console showing progress."""
    try:
        console.log_to(recorder.folder / RUN_LOG)
        for note in notes:
            console.print(f"fedsim: note: {note}")
        with console:
            summary = _simulate_and_attack(recorder, ledger, model, strategy, resumed, console, engine, runs)
        console.table(summary_table(summary, f"{recorder.config.name}: leakage per attack at its last observed round"))
    finally:
        console.close_log()
    return recorder.folder


def _simulate_and_attack(recorder: Recorder, ledger, model: torch.nn.Module, strategy, resumed: Run | None,
                         console: RunConsole, engine: Engine, runs: Path = RUNS) -> Summary:
    """Simulate, attack the recorded run, write its report; the manifest says 'complete' only at the end."""
    config, folder = recorder.config, recorder.folder
    pool = pool_for(config.data)
    if resumed is not None:
        console.print(f"fedsim: resuming {folder} after round {recorder.manifest.rounds_completed}")
    plan, client_app, faults = _apps(recorder, ledger, pool, model, strategy, resumed, console)
    console.print(
        f"fedsim: {config.name}: {config.data.num_clients} clients on {config.data.dataset}, "
        f"{config.model.name}, {config.strategy.name}, {config.train.rounds} rounds -> {folder}"
    )
    console.start(ROUNDS_STAGE, config.train.rounds)
    if recorder.manifest.rounds_completed < config.train.rounds:
        _simulate(recorder, plan, client_app, engine)
    check_rounds_completed(recorder, faults)
    console.print(f"threat model: {ThreatModel.of(config).describe()}")
    summary = attack_and_report(recorder, console)
    recorder.finish("complete")
    console.print(f"report: {folder / REPORT_HTML}")
    point_latest(folder, runs)
    return summary


def _apps(recorder: Recorder, ledger, pool: Pool, model: torch.nn.Module, strategy, resumed: Run | None,
          console: RunConsole) -> tuple[ServerPlan, ClientApp, FaultPlan]:
    """The server's plan (strategy, adversary, faults, progress lines), the ClientApp and the fault plan of the run."""
    config = recorder.config
    test_ids = ledger.loc[ledger["role"] == UTILITY_TEST, "record_id"].to_numpy()

    def show(row: dict) -> None:
        train_loss = f"  train loss {row['train_loss']:.4f}" if row.get("train_loss", "") != "" else ""
        console.print(
            f"round {row['round']:>3}/{config.train.rounds}  test accuracy {row['test_accuracy']:.4f}  "
            f"test loss {row['test_loss']:.4f}{train_loss}  [dim]{row['seconds']:.1f} s[/dim]"
        )
        console.update(ROUNDS_STAGE, row["round"], config.train.rounds)

    faults = FaultPlan.from_config(config.seed, config.faults)
    plan = ServerPlan(strategy, recorder, config.data.num_clients, model, pool.take(test_ids), config.train.rounds, config.seed,
                      show, on_train_replies=lambda received, sent: console.update(CLIENTS_STAGE, received, sent),
                      adversary=server_wrapper(config, ledger), faults=faults, resumed=resumed,
                      secure_aggregation=config.defense.secure_aggregation, max_failed_rounds=config.faults.failed_round_limit(),
                      adversary_gamma=config.adversary.mode == "gradient-ascent", threads=config.backend.cpus_per_client,
                      strategy_name=config.strategy.name)
    client_app = client_app_for(config, ledger, [failing_client_mod(faults, PARTITION_KEY)] if faults.error_rate > 0 else [])
    return plan, client_app, faults


def _simulate(recorder: Recorder, plan: ServerPlan, client_app: ClientApp, engine: Engine) -> None:
    """Run the remaining rounds on `engine`; mark the run failed and re-raise what stopped the server app."""
    try:
        engine(plan, client_app)
    except KeyboardInterrupt as exc:  # the user's, whatever the server's thread reported meanwhile
        plan.error = exc
    except BaseException as exc:
        plan.error = plan.error or exc
    if plan.error is not None:  # what stopped the server app (the engine may only log it)
        mark_failed(recorder, f"{type(plan.error).__name__}: {plan.error}")
        raise plan.error


def check_rounds_completed(recorder: Recorder, faults: FaultPlan) -> None:
    """Refuse (and mark failed) a run whose curious participant failed or that stopped early."""
    config = recorder.config
    attacker_failed = [str(r) for r, info in recorder.manifest.rounds.items()
                       if config.adversary.victim in info.failed and not faults.raises(r, config.adversary.victim)]
    if config.adversary.role == "participant" and config.adversary.mode == "gradient-ascent" and attacker_failed:
        mark_failed(recorder, f"the curious participant failed in rounds {attacker_failed}")
        raise FedsimError(
            f"adversary: the curious participant (client {config.adversary.victim}) failed in rounds {', '.join(attacker_failed)}, "
            "most likely a gradient-ascent step with a non-finite loss; lower adversary.gamma"
        )
    completed = recorder.manifest.rounds_completed
    if completed != config.train.rounds:
        mark_failed(recorder, f"only {completed} of {config.train.rounds} rounds completed")
        raise RuntimeError(f"the simulation stopped after round {completed} of {config.train.rounds}")


def attack_and_report(recorder: Recorder, console: RunConsole) -> Summary:
    """Measure leakage (and the configured reconstructions) on the recorded run and write its metrics and report (before 'complete')."""
    config, folder = recorder.config, recorder.folder
    try:
        run = Run.open(folder)
        leakage = measure_leakage(run, progress=console)
        if leakage.why_empty and config.adversary.role != "none":
            console.print(f"fedsim: no leakage rows: {leakage.why_empty}")
        recorder.write_metrics({LEAKAGE_CSV: leakage.rows, LEAKAGE_SEEDS_CSV: leakage.seed_rows, ROC_CSV: leakage.roc,
                                PER_CLASS_CSV: leakage.per_class})
        if config.reconstructions:
            reconstruction = measure_reconstruction(run, progress=console)
            if reconstruction.why_empty:
                console.print(f"fedsim: no reconstruction rows: {reconstruction.why_empty}")
            recorder.write_metrics({RECONSTRUCTION_CSV: reconstruction.rows})
            recorder.add_file(RECONSTRUCTIONS, reconstruction.payload())
        recorder.list_at_finish(write_report(run))  # before 'complete': a complete run has its report
        if config.export.tensorboard:
            recorder.list_at_finish(write_tensorboard(run))
        return run_summary(run)
    except BaseException as exc:
        mark_failed(recorder, f"attacks or report: {type(exc).__name__}: {exc}")
        raise


def mark_failed(recorder: Recorder, error: str) -> None:
    """Best effort: when the disk itself failed, the manifest may not be writable either (it
    then still says 'running', which is not 'complete' either).
    """
    try:
        recorder.finish("failed", error=error)
    except FedsimError:
        pass
