"""`fedsim audit APP_DIR`: a user's own Flower app, run under audit, recorded and attacked.

The app stays as it is: fedsim reads its pyproject.toml (`[tool.flwr.app]` for its ServerApp,
ClientApp and run config; `[tool.fedsim]` for what fedsim needs: the model, the data function,
the adversary, the attacks), calls the app's own data function to learn which records each
client trains on and which it holds out, and runs the app's ServerApp and ClientApp on Flower's
engine with fedsim's Grid and mods between them (`fedsim.engine.audited_app`). The run folder
has the same contract as `fedsim run`'s, plus the app's records (records.safetensors), so
`fedsim attack` and `fedsim report` read it as any other.
"""

from __future__ import annotations

import os
import sys
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from flwr.clientapp import ClientApp
from flwr.serverapp import ServerApp
from safetensors.torch import save

from attackers.active.adversary import participant_mods, server_wrapper
from fedsim.app.console import RUN_LOG, RunConsole, summary_table
from fedsim.app.experiment import (
    ROUNDS_STAGE,
    RUNS,
    attack_and_report,
    check_config,
    check_devices,
    check_rounds_completed,
    default_run_folder,
    mark_failed,
    point_latest,
    run_apps,
)
from fedsim.core.config import Config, config_from_tree
from fedsim.core.errors import FedsimError
from fedsim.core.layout import RECORDS
from fedsim.core.registry import resolve_import
from fedsim.core.threat_model import ThreatModel
from fedsim.engine.audited_app import AuditPlan, audited_client_app, audited_server_app
from fedsim.engine.faults import FaultPlan
from fedsim.engine.simulation import quiet_engine_logs
from fedsim.learning.datasets import Pool
from fedsim.learning.membership import UTILITY_TEST, ledger_from_parts, save_ledger
from fedsim.learning.models import build_model, model_for
from fedsim.learning.training import evaluate
from fedsim.recording.recorder import REPORT_HTML, Recorder


@dataclass
class FlowerApp:
    """A Flower app folder as its pyproject.toml describes it.

    Parameters
    ----------
    folder : pathlib.Path
        The app's folder (holding pyproject.toml), absolute.
    serverapp, clientapp : str
        Import paths of its ServerApp and ClientApp ('package.module:name').
    run_config : dict
        Its `[tool.flwr.app.config]`, with `--run-config` overrides applied.
    num_supernodes : int or None
        `num-supernodes` of its default federation, where pyproject.toml names one.
    fedsim : dict
        Its `[tool.fedsim]` table: fedsim config keys, as a fedsim YAML file holds them.
    """

    folder: Path
    serverapp: str
    clientapp: str
    run_config: dict[str, Any]
    num_supernodes: int | None
    fedsim: dict[str, Any]


def read_app(folder: str | Path, run_config: Mapping[str, Any] | None = None) -> FlowerApp:
    """Read a Flower app's pyproject.toml.

    Raises
    ------
    FedsimError
        No such folder, no pyproject.toml, no `[tool.flwr.app]` with both components, or no
        `[tool.fedsim]` naming the app's data function: one line saying what to add.
    """
    path = Path(folder).expanduser().resolve()
    project = path / "pyproject.toml"
    if not project.is_file():
        raise FedsimError(f"{path}: no pyproject.toml; give the folder of a Flower app (the one `flwr run` takes)")
    try:
        toml = tomllib.loads(project.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise FedsimError(f"{project}: not valid TOML ({exc})") from None
    flwr = toml.get("tool", {}).get("flwr", {})
    components = flwr.get("app", {}).get("components", {})
    if not flwr.get("app") or not components.get("serverapp") or not components.get("clientapp"):
        raise FedsimError(f"{project}: no [tool.flwr.app] with components serverapp and clientapp; fedsim audits a Flower app "
                          "(see Flower's quickstart apps)")
    fedsim = toml.get("tool", {}).get("fedsim")
    if not isinstance(fedsim, dict) or not isinstance(fedsim.get("app"), dict) or "data" not in fedsim["app"]:
        raise FedsimError(f"{project}: no [tool.fedsim] with app.data; add the lines of the README's \"Audit your Flower app\" "
                          '(at least model.name = "package.module:Net" and app.data = "package.module:load_data")')
    federations = flwr.get("federations", {})
    options = federations.get(str(federations.get("default", "")), {}).get("options", {}) if isinstance(federations, dict) else {}
    supernodes = options.get("num-supernodes")
    config = dict(flwr.get("app", {}).get("config", {}))
    config.update(run_config or {})
    return FlowerApp(path, str(components["serverapp"]), str(components["clientapp"]), config,
                     int(supernodes) if supernodes is not None else None, fedsim)


def audit_config(app: FlowerApp, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """The fedsim config of an audit: `[tool.fedsim]`, then `overrides`, with what the app itself
    fixes (its folder, its clients, its rounds) filled in where `[tool.fedsim]` does not set it.

    Raises
    ------
    FedsimError
        An invalid key or value, or the rounds or clients cannot be found: one line.
    """
    tree: dict[str, Any] = {key: (dict(value) if isinstance(value, dict) else value) for key, value in app.fedsim.items()}
    tree.setdefault("name", app.folder.name.replace(" ", "-") or "audit")
    tree["app"] = {**tree["app"], "dir": str(app.folder)}
    data = tree.setdefault("data", {})
    if app.num_supernodes is not None:
        data.setdefault("num_clients", app.num_supernodes)
    data["dataset"] = "records"
    train = tree.setdefault("train", {})
    rounds_key = str(tree["app"].get("rounds_key", "num-server-rounds"))
    if "rounds" not in train and rounds_key in app.run_config:
        train["rounds"] = app.run_config[rounds_key]
    config = config_from_tree(tree, overrides, f"{app.folder / 'pyproject.toml'} [tool.fedsim]")
    if "rounds" not in train and not any(o.strip().startswith("train.rounds=") for o in overrides):
        if rounds_key not in app.run_config:
            raise FedsimError(f"[tool.fedsim]: the app's run config has no {rounds_key!r}; set train.rounds to the rounds the app runs "
                              "(or app.rounds_key to the run-config key that holds them)")
    if "num_clients" not in data and not any(o.strip().startswith("data.num_clients=") for o in overrides):
        raise FedsimError("[tool.fedsim]: the app's pyproject.toml names no num-supernodes for its default federation; "
                          "set data.num_clients to the number of SuperNodes")
    if config.defense.secure_aggregation or config.defense.dp_sgd is not None:
        raise FedsimError("defense: an audited app trains with its own strategy and training loop; put secure aggregation or "
                          "DP-SGD into the app itself and leave fedsim's defense section out")
    return config


def _importable(app: FlowerApp) -> None:
    """The app's folder first on sys.path (here and in the engine's workers), no bytecode written
    into it, and none of its packages left over from another folder (a notebook may audit two
    copies of an app one after the other).
    """
    sys.dont_write_bytecode = True
    packages = {path.split(":")[0].split(".")[0] for path in (app.serverapp, app.clientapp)}
    for name in [m for m in sys.modules if m.split(".")[0] in packages]:
        file = getattr(sys.modules[name], "__file__", None)
        if file is not None and not Path(file).resolve().is_relative_to(app.folder):
            del sys.modules[name]
    os.environ["PYTHONDONTWRITEBYTECODE"] = "1"
    folder = str(app.folder)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    paths = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    if folder not in paths:
        os.environ["PYTHONPATH"] = os.pathsep.join([folder, *paths])


def _component(app: FlowerApp, path: str, kind: type, key: str) -> Any:
    found = resolve_import(path, f"{app.folder / 'pyproject.toml'} [tool.flwr.app.components] {key}")
    if not isinstance(found, kind):
        raise FedsimError(f"{app.folder / 'pyproject.toml'}: {key} {path!r} is a {type(found).__name__}, not a Flower {kind.__name__}")
    return found


def _materialise(part: Any, config: Config, what: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(features float32 (n, ...), labels int64 (n,)) of a DataLoader, a Dataset or an (x, y) pair."""
    if isinstance(part, torch.utils.data.DataLoader):
        sampler = getattr(part.batch_sampler, "sampler", part.sampler)
        if not isinstance(sampler, torch.utils.data.RandomSampler | torch.utils.data.SequentialSampler) or (
                isinstance(sampler, torch.utils.data.RandomSampler) and (sampler.replacement or sampler.num_samples != len(part.dataset))):  # type: ignore[arg-type]
            raise FedsimError(f"app.data: {what} come in a DataLoader with a {type(sampler).__name__}, which may train on part of its "
                              "dataset; fedsim takes the whole dataset as the client's members: return a loader that goes through "
                              "all of it (shuffle=True or False)")
        part = part.dataset
    if isinstance(part, tuple | list) and len(part) == 2 and not isinstance(part[0], dict | tuple):
        x, y = part
        return torch.as_tensor(np.asarray(x), dtype=torch.float32), torch.as_tensor(np.asarray(y), dtype=torch.int64)
    try:
        items = [part[i] for i in range(len(part))]
    except TypeError:
        raise FedsimError(f"app.data: {what} is a {type(part).__name__}; the data function must return (train, test), each a "
                          "DataLoader, a torch or Hugging Face Dataset, or an (x, y) pair of arrays") from None
    features, labels = [], []
    for item in items:
        if isinstance(item, Mapping):
            missing = [k for k in (config.app.features, config.app.label) if k not in item]  # type: ignore[union-attr]
            if missing:
                raise FedsimError(f"app.data: a record of {what} has keys {sorted(item)} but no {missing[0]!r}; set app.features and "
                                  "app.label in [tool.fedsim] to the keys of its features and label")
            x, y = item[config.app.features], item[config.app.label]  # type: ignore[union-attr]
        else:
            x, y = item[0], item[1]
        features.append(torch.as_tensor(np.asarray(x), dtype=torch.float32))
        labels.append(int(y))
    if not features:
        return torch.zeros((0,)), torch.zeros((0,), dtype=torch.int64)
    return torch.stack(features), torch.tensor(labels, dtype=torch.int64)


def app_records(config: Config, notes: list[str]) -> tuple[Pool, pd.DataFrame]:
    """Every client's records from the app's own data function, as a pool and a membership ledger.

    Client c's members are exactly the training records the data function gives partition c; the
    records every client holds out are the non-members (a utility test split of them measures the
    global model's accuracy). Record ids number the records partition by partition, training
    records first.

    Returns
    -------
    pool : Pool
        Every record, indexed by record id.
    ledger : pandas.DataFrame
        The membership ledger (`fedsim.learning.membership.COLUMNS`).

    Raises
    ------
    FedsimError
        A data function that cannot be imported, raises, or returns something else: one line.
    """
    assert config.app is not None, "an audit's config names its app"
    load = resolve_import(config.app.data, "app.data")
    if not callable(load):
        raise FedsimError(f"app.data: {config.app.data!r} is a {type(load).__name__}, not a function")
    features: list[torch.Tensor] = []
    labels: list[torch.Tensor] = []
    victim_records = torch.zeros(0)
    parts: list[np.ndarray] = []
    held_out: list[np.ndarray] = []
    start = 0
    for partition in range(config.data.num_clients):
        try:
            returned = load(partition, config.data.num_clients, **config.app.data_args)
        except FedsimError:
            raise
        except Exception as exc:
            raise FedsimError(f"app.data: {config.app.data}({partition}, {config.data.num_clients}) raised {type(exc).__name__}: {exc}") from None
        if not isinstance(returned, tuple | list) or len(returned) != 2:
            raise FedsimError(f"app.data: {config.app.data} returned a {type(returned).__name__}; it must return (train, test) for the partition")
        for role, part in zip(("train", "test"), returned):
            try:
                x, y = _materialise(part, config, f"partition {partition}'s {role} records")
            except FedsimError:
                raise
            except Exception as exc:  # records of a shape or type fedsim cannot read: say which, in one line
                raise FedsimError(f"app.data: reading partition {partition}'s {role} records failed ({type(exc).__name__}: "
                                  f"{' '.join(str(exc).split())}); each record must be (features, label) or a mapping with "
                                  "app.features and app.label, the label an integer") from None
            ids = np.arange(start, start + len(y))
            start += len(y)
            if len(y):
                features.append(x)
                labels.append(y)
            (parts if role == "train" else held_out).append(ids)
            if role == "train" and partition == config.adversary.victim:
                victim_records = x
    again = _materialise(load(config.adversary.victim, config.data.num_clients, **config.app.data_args)[0], config, "a second call's records")
    if not torch.equal(again[0], victim_records):
        raise FedsimError(f"app.data: {config.app.data} gives partition {config.adversary.victim} other training records on a second call; "
                          "the ledger must be exactly what the client trains on: make the split deterministic (seed it)")
    shapes = {tuple(x.shape[1:]) for x in features if len(x)}
    if len(shapes) > 1:
        raise FedsimError(f"app.data: records of different shapes {sorted(shapes)}; the data function must give every partition the same features")
    all_labels = torch.cat(labels)
    pool = Pool("records", torch.cat(features), all_labels, int(all_labels.max()) + 1 if len(all_labels) else 0)
    rng = np.random.default_rng(config.seed)
    nonmembers = rng.permutation(np.concatenate(held_out))
    test_count = min(config.data.test_records, len(nonmembers) // 4)
    if test_count < config.data.test_records:
        notes.append(f"data.test_records: {test_count} utility test records instead of {config.data.test_records}: "
                     f"a quarter of the {len(nonmembers)} records the app's clients hold out")
    ledger = ledger_from_parts(config, parts, nonmembers[test_count:], nonmembers[:test_count], all_labels.numpy(), rng, notes)
    return pool, ledger


def _save_records(pool: Pool) -> bytes:
    return save({"features": pool.features.contiguous(), "labels": pool.labels.contiguous()})


@dataclass
class Audit:
    """Everything an audit needs before its run folder exists, checked (`prepare_audit`)."""

    app: FlowerApp
    config: Config
    server_app: ServerApp
    client_app: ClientApp
    pool: Pool
    ledger: pd.DataFrame
    notes: list[str]


def prepare_audit(app_dir: str | Path, overrides: list[str] | tuple[str, ...] = (), run_config: Mapping[str, Any] | None = None) -> Audit:
    """Read the app, its `[tool.fedsim]` and its data; import its ServerApp and ClientApp.

    Raises
    ------
    FedsimError
        Anything wrong with the app or the config: one line, before any folder exists.
    """
    app = read_app(app_dir, run_config)
    _importable(app)
    config = check_config(audit_config(app, overrides))
    check_devices(config)
    server_app = _component(app, app.serverapp, ServerApp, "serverapp")
    client_app = _component(app, app.clientapp, ClientApp, "clientapp")
    if getattr(server_app, "_main", None) is None:
        raise FedsimError(f"{app.serverapp}: the app's ServerApp uses Flower's legacy server_fn and Strategy API; fedsim audits "
                          "Message-API apps (a @app.main() function that calls strategy.start from flwr.serverapp.strategy)")
    notes: list[str] = []
    pool, ledger = app_records(config, notes)
    build_model(config.model.name, pool.input_shape, pool.num_classes, config.model.args)  # checked before any folder exists
    config.data.nonmembers = int((~ledger["member"] & (ledger["role"] != UTILITY_TEST)).sum())
    config.data.test_records = int((ledger["role"] == UTILITY_TEST).sum())
    config.data.records_per_client = None
    return Audit(app, config, server_app, client_app, pool, ledger, notes)


Engine = Callable[[ServerApp, ClientApp], None]
"""Runs the audited apps: the configured simulation (default), or, inside the ServerApp that
`flwr run` started, the audited ServerApp on the Grid Flower gave it."""


def run_audit(app_dir: str | Path, overrides: list[str] | tuple[str, ...] = (), run_config: Mapping[str, Any] | None = None,
              out: Path | None = None, console: RunConsole | None = None, force: bool = False, runs: Path = RUNS,
              engine: Engine | None = None) -> Path:
    """Audit a Flower app: run it recording every round, measure its leakage, write its report.

    Parameters
    ----------
    app_dir : str or pathlib.Path
        The app's folder (holding its pyproject.toml with `[tool.flwr.app]` and `[tool.fedsim]`).
    overrides : sequence of str
        fedsim `--set key=value` assignments, applied after `[tool.fedsim]`.
    run_config : mapping, optional
        Overrides of the app's own run config (as `flwr run --run-config` gives them).
    out : pathlib.Path, optional
        The run folder (default: runs/<name>-<time>).
    console : RunConsole, optional
        Where progress and the summary go (default: the terminal).
    force : bool
        Replace `out` if it is a run folder.
    runs : pathlib.Path
        The folder whose `latest` link points at the newest run.
    engine : callable, optional
        Runs the audited ServerApp and ClientApp (default: `backend.engine`'s simulation).

    Returns
    -------
    pathlib.Path
        The complete run folder.

    Raises
    ------
    FedsimError
        Bad input (one line, nothing created), or a failure during the run (the folder is then
        marked failed).
    """
    console = console or RunConsole()
    quiet_engine_logs()
    audit = prepare_audit(app_dir, overrides, run_config)
    config = audit.config
    folder = (out or default_run_folder(config, runs)).expanduser().resolve()
    config.data.root = str(folder)
    recorder = Recorder(folder, config)
    recorder.start(lambda where: save_ledger(audit.ledger, where), force=force)
    recorder.add_file(RECORDS, _save_records(audit.pool))
    try:
        console.log_to(folder / RUN_LOG)
        for note in audit.notes:
            console.print(f"fedsim: note: {note}")
        with console:
            _run_app(audit, recorder, console, engine or _simulation(config, folder / RUN_LOG))
            console.print(f"threat model: {ThreatModel.of(config).describe()}")
            summary = attack_and_report(recorder, console)
            recorder.finish("complete")
        console.print(f"report: {folder / REPORT_HTML}")
        point_latest(folder, runs)
        console.table(summary_table(summary, f"{config.name}: leakage per attack at its last observed round"))
    finally:
        console.close_log()
    return folder


def _simulation(config: Config, log_file: Path) -> Engine:
    """The configured engine: Flower's Ray simulation, or the same apps in this process."""
    return lambda server_app, client_app: run_apps(config, server_app, client_app, log_file)


def audited_client(audit: Audit) -> ClientApp:
    """The app's ClientApp inside the audit's mods (and the curious participant's, where one attacks)."""
    return audited_client_app(audit.client_app, audit.app.run_config, participant_mods(audit.config, audit.ledger, audit.pool))


def _run_app(audit: Audit, recorder: Recorder, console: RunConsole, engine: Engine) -> None:
    """The app's rounds on `engine`, recorded; the run is marked failed if they do not all complete."""
    config, ledger = audit.config, audit.ledger
    test = audit.pool.take(ledger.loc[ledger["role"] == UTILITY_TEST, "record_id"].to_numpy())
    model = model_for(config)

    def utility(state) -> tuple[float, float]:
        model.load_state_dict(state)
        result = evaluate(model, *test)
        return result.loss, result.accuracy

    def show(row: dict) -> None:
        train_loss = f"  train loss {row['train_loss']:.4f}" if row.get("train_loss", "") != "" else ""
        console.print(f"round {row['round']:>3}/{config.train.rounds}  test accuracy {row['test_accuracy']:.4f}  "
                      f"test loss {row['test_loss']:.4f}{train_loss}  [dim]{row['seconds']:.1f} s[/dim]")
        console.update(ROUNDS_STAGE, row["round"], config.train.rounds)

    wrap = server_wrapper(config, ledger)
    plan = AuditPlan(recorder, config.data.num_clients, config.train.rounds, dict(audit.app.run_config),
                     (lambda partitions: wrap(_NoStrategy(), partitions)) if wrap else None, utility, show)  # type: ignore[arg-type,return-value]
    console.print(f"fedsim: auditing {audit.app.folder.name}: {config.data.num_clients} clients, {config.train.rounds} rounds -> {recorder.folder}")
    console.start(ROUNDS_STAGE, config.train.rounds)
    try:
        engine(audited_server_app(audit.server_app, plan), audited_client(audit))
    except BaseException as exc:
        plan.error = plan.error or exc
    if plan.error is not None:
        error = plan.error
        mark_failed(recorder, f"{type(error).__name__}: {error}")
        if isinstance(error, FedsimError | KeyboardInterrupt):
            raise error
        raise FedsimError(f"the app's ServerApp failed: {type(error).__name__}: {' '.join(str(error).split())} "
                          f"(its traceback is in {recorder.folder / RUN_LOG})") from None
    check_rounds_completed(recorder, FaultPlan.from_config(config.seed, config.faults))


class _NoStrategy:
    """The curious server's inner strategy when it is applied by the audit's Grid: the app's own
    strategy configures and aggregates, so only `CuriousServer.tamper` and `.keep` are called.
    """

