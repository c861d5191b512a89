"""fedsim as a Flower app: the module-level ServerApp and ClientApp that `flwr run` loads.

`pyproject.toml`'s `[tool.flwr.app]` points at `server_app` and `client_app` here, so the same
experiment runs on Flower's local simulation runtime (`flwr run .`), on Flower's deployment
engine (a SuperLink and SuperNodes) and, through RAY_ADDRESS, on an existing Ray cluster. The run
config (`[tool.flwr.app.config]`, `--run-config`) names the fedsim config file and its overrides;
both apps derive everything from it (the ledger is rebuilt from the seed on every node), so
nothing is shipped to the clients but the Flower messages. The ServerApp does what `fedsim run`
does: it records every round into a run folder, then runs the attacks and writes the report.

Flower's managed local SuperLink keeps the working directory of whichever app first started it,
so the ServerApp's working directory says nothing about where the user is: the run folders go
to an absolute place (`runs`, default `~/fedsim-runs`), a relative `runs` or `out` is refused, and
the run folder's absolute path is logged when the run starts and when it ends.
"""

from __future__ import annotations

import logging
from logging import INFO
from pathlib import Path

from flwr.app import Context, Message
from flwr.clientapp import ClientApp
from flwr.common.logger import log
from flwr.serverapp import Grid, ServerApp
from rich.text import Text

from fedsim.app.audit import audited_client, prepare_audit, run_audit
from fedsim.app.console import RunConsole
from fedsim.app.experiment import client_app_for, load_checked_config, run_experiment
from fedsim.core.config import Config
from fedsim.core.errors import FedsimError
from fedsim.core.messages import PARTITION_KEY
from fedsim.engine.faults import FaultPlan, failing_client_mod
from fedsim.engine.server_app import ServerPlan, serve
from fedsim.learning.datasets import local_root, pool_for
from fedsim.learning.membership import build_ledger

PROJECT_ROOT = Path(__file__).resolve().parents[2]  # where pyproject.toml and configs/ are (in a clone and in an installed FAB)
CONFIG_KEY = "config"  # run config: the fedsim config file
OVERRIDES_KEY = "overrides"  # run config: `--set` assignments separated by ';'
OUT_KEY = "out"  # run config: the run folder ('' = <runs>/<name>-<time>)
RUNS_KEY = "runs"  # run config: the folder holding run folders and the `latest` link ('' = FLOWER_RUNS)
FLOWER_RUNS = Path("~/fedsim-runs")  # the default `runs` under flwr run: absolute once expanded, whatever the SuperLink's working directory
AUDIT_KEY = "audit"  # run config: a Flower app's folder to audit (`fedsim audit` through `flwr run`); "": fedsim's own federation
DATA_ROOT_KEY = "data-root"  # node config: where this SuperNode's copy of the data set lives


def config_path(value: str) -> Path:
    """A config file named in the run config: absolute, or relative to the working directory or the project root.

    Parameters
    ----------
    value : str
        The run config's `config` value.

    Returns
    -------
    pathlib.Path
        The file (which may not exist: `fedsim.core.config.load_config` says so in one line).
    """
    path = Path(value).expanduser()
    if path.is_absolute() or path.exists():
        return path
    return PROJECT_ROOT / path


def run_locations(run_config: dict) -> tuple[Path, Path | None]:
    """The folder of run folders and the run folder (None: `<runs>/<name>-<time>`) a run config names, both absolute.

    The ServerApp runs in the working directory of whatever started the SuperLink (for Flower's
    managed local SuperLink: the first app `flwr run` started), so a relative path would land in
    another project's folder.

    Parameters
    ----------
    run_config : dict
        Flower's run config: `runs` ("" = `~/fedsim-runs`) and `out` ("" = a new folder under `runs`).

    Returns
    -------
    tuple of (pathlib.Path, pathlib.Path or None)
        `runs` and `out`, `~` expanded.

    Raises
    ------
    FedsimError
        `runs` or `out` is a relative path, one line.
    """
    runs = Path(str(run_config.get(RUNS_KEY, "") or FLOWER_RUNS)).expanduser()
    out_value = str(run_config.get(OUT_KEY, "") or "")
    out = Path(out_value).expanduser() if out_value else None
    for key, path in ((RUNS_KEY, runs), (OUT_KEY, out)):
        if path is not None and not path.is_absolute():
            raise FedsimError(f"flwr run: run config {key}={str(path)!r} is relative, but the ServerApp's working directory is wherever "
                              f"the SuperLink was started; give an absolute path (--run-config '{key}=\"'$PWD'/{path}\"')"
                              + (f", or leave it empty for {FLOWER_RUNS}" if key == RUNS_KEY else ", or leave it empty for a folder under runs"))
    return runs, out


def overrides_of(value: str) -> list[str]:
    """`--set` assignments from the run config's `overrides` ('train.rounds=2; seed=1' -> two)."""
    return [part.strip() for part in str(value).split(";") if part.strip()]


def config_from_run_config(run_config: dict, node_config: dict | None = None) -> Config:
    """The checked fedsim config a run config names (and a SuperNode's own data root, if it gives one).

    Parameters
    ----------
    run_config : dict
        Flower's run config: `config` (a YAML file) and `overrides` (`key=value; ...`).
    node_config : dict, optional
        A SuperNode's node config; its `data-root` replaces `data.root` on that node.

    Returns
    -------
    Config

    Raises
    ------
    FedsimError
        The file or an override is bad, as for `fedsim run`.
    """
    overrides = overrides_of(run_config.get(OVERRIDES_KEY, ""))
    if node_config and node_config.get(DATA_ROOT_KEY):
        overrides.append(f"data.root={node_config[DATA_ROOT_KEY]}")
    return load_checked_config(config_path(str(run_config.get(CONFIG_KEY, "fedsim/quickstart.yaml"))), overrides)


class _FlowerLogConsole(RunConsole):
    """No bars (the ServerApp has no terminal); every line goes to Flower's log, which
    `flwr run --stream` and `flwr log` show, and to the run folder's run.log.
    """

    def __init__(self) -> None:
        super().__init__(quiet=True)

    def print(self, message: str) -> None:
        super().print(message)
        log(INFO, "%s", Text.from_markup(message).plain)


def _serve_on(grid: Grid, config: Config):
    """The engine for `run_experiment` inside a ServerApp: the rounds run on the Grid Flower gave us."""

    def engine(plan: ServerPlan, _client_app: ClientApp) -> None:
        logging.getLogger("flwr").setLevel(logging.INFO)  # run_experiment quietened it; this process's log is the user's view
        nodes = len(list(grid.get_node_ids()))
        if nodes > config.data.num_clients:
            raise FedsimError(f"flwr run: the federation has {nodes} SuperNodes but data.num_clients is {config.data.num_clients}; "
                              f"run with --federation-config 'num-supernodes={config.data.num_clients}' "
                              "(or start one SuperNode per client)")
        serve(plan, grid)

    return engine


def _audit_on(grid: Grid, context: Context):
    """The engine for `run_audit` inside a ServerApp: the audited ServerApp runs on the Grid Flower gave us."""

    def engine(audited_server: ServerApp, _client_app: ClientApp) -> None:
        logging.getLogger("flwr").setLevel(logging.INFO)  # run_audit quietened it; this process's log is the user's view
        audited_server(grid, context)

    return engine


server_app = ServerApp()


@server_app.main()
def server_main(grid: Grid, context: Context) -> None:
    """Record the run, attack it and write its report, as `fedsim run` does; log the run folder (absolute, `run_locations`)."""
    runs, out = run_locations(dict(context.run_config))
    if context.run_config.get(AUDIT_KEY):
        folder = run_audit(config_path(str(context.run_config[AUDIT_KEY])), overrides_of(str(context.run_config.get(OVERRIDES_KEY, ""))),
                           out=out, console=_FlowerLogConsole(), runs=runs, engine=_audit_on(grid, context))
        log(INFO, "fedsim: run folder %s", folder.resolve())
        return
    config = config_from_run_config(dict(context.run_config))
    folder = run_experiment(config, out, _FlowerLogConsole(), engine=_serve_on(grid, config), runs=runs)
    log(INFO, "fedsim: run folder %s", folder.resolve())


_client_apps: dict[tuple, ClientApp] = {}  # per process: one app per (run config, data root)


def _client_app(context: Context) -> ClientApp:
    """The run's ClientApp, built once per process from the run config (the ledger comes from the seed)."""
    key = (tuple(sorted((k, str(v)) for k, v in context.run_config.items())), str(context.node_config.get(DATA_ROOT_KEY, "")))
    if key not in _client_apps and context.run_config.get(AUDIT_KEY):
        audit = prepare_audit(config_path(str(context.run_config[AUDIT_KEY])), overrides_of(str(context.run_config.get(OVERRIDES_KEY, ""))))
        _client_apps[key] = audited_client(audit)
    if key not in _client_apps:
        config = config_from_run_config(dict(context.run_config), dict(context.node_config))
        config.data.root = local_root(config.data)
        ledger = build_ledger(config, pool_for(config.data))
        faults = FaultPlan.from_config(config.seed, config.faults)
        _client_apps[key] = client_app_for(config, ledger, [failing_client_mod(faults, PARTITION_KEY)] if faults.error_rate > 0 else [])
    return _client_apps[key]


client_app = ClientApp()


@client_app.train()
def client_train(message: Message, context: Context) -> Message:
    """Local training, by the run's ClientApp."""
    return _client_app(context)(message, context)


@client_app.evaluate()
def client_evaluate(message: Message, context: Context) -> Message:
    """Local evaluation, by the run's ClientApp."""
    return _client_app(context)(message, context)


@client_app.query()
def client_query(message: Message, context: Context) -> Message:
    """The node's partition id, by the run's ClientApp."""
    return _client_app(context)(message, context)

