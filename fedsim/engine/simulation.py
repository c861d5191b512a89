"""The one module that calls Flower's simulation entry point (Ray engine).

Keeping every call of Flower's runner here means a change of Flower's API (run_simulation is
deprecated in favour of `flwr run`) touches one file. Ray and Flower's logs are kept at
warning level so the user sees fedsim's progress, not the engine's chatter.

A local run starts Ray itself, lean (benchmarks/startup.py times the phases): no runtime
environment (Flower's init passes one with PYTHONPATH, which makes Ray route every worker's
start through its runtime-env agent and forgo pre-starting workers; here the workers inherit
PYTHONPATH from the driver's environment instead) and no usage-stats collection. Flower's Ray
backend shuts Ray down at the end of every simulation (RayBackend.terminate), so each run of a
sweep starts it again; the `in-process` engine (fedsim.engine.inprocess) starts no Ray at all.
A local Ray listens on loopback only, and its agents exit within seconds of a killed run
instead of a minute (`loopback_only`, `short_gcs_wait`).
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from flwr.clientapp import ClientApp
from flwr.serverapp import ServerApp

from fedsim.core.config import BackendConfig


def quiet_engine_logs() -> None:
    """Flower logs every round at INFO (and deprecation notices); Ray prints banners. Keep errors only."""
    logging.getLogger("flwr").setLevel(logging.ERROR)
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    os.environ.setdefault("RAY_DISABLE_IMPORT_WARNING", "1")
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
    warnings.filterwarnings("ignore", category=DeprecationWarning, module="flwr")


@contextmanager
def engine_log(path: Path | None) -> Iterator[None]:
    """Flower's log records (client tracebacks included) go to `path` (appended), not the terminal.

    Flower logs every client exception with its Ray traceback at ERROR; fedsim reports a failed
    round as one line, and the tracebacks stay in the run folder's run.log for whoever wants them.
    """
    logger = logging.getLogger("flwr")
    saved = logger.handlers[:], logger.propagate
    handler: logging.Handler = logging.FileHandler(path, encoding="utf-8") if path is not None else logging.NullHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s flwr %(levelname)s: %(message)s"))
    logger.handlers, logger.propagate = [handler], False
    try:
        yield
    finally:
        handler.close()
        logger.handlers, logger.propagate = saved


def simulate(server_app: ServerApp, client_app: ClientApp, num_clients: int, backend: BackendConfig,
             log_file: Path | None = None) -> None:
    """Run the apps on Flower's Ray simulation engine with `num_clients` virtual nodes; the
    engine's log (client tracebacks) goes to `log_file` (None: nowhere) instead of the terminal.

    Parameters
    ----------
    server_app, client_app : flwr.serverapp.ServerApp, flwr.clientapp.ClientApp
        The apps (`fedsim.engine.server_app.make_server_app`, `fedsim.app.experiment.client_app_for`).
    num_clients : int
        Virtual SuperNodes, partition ids 0..num_clients-1.
    backend : BackendConfig
        Resources per client (`cpus_per_client`, `gpus_per_client`: Ray schedules each client's
        actor on them, and a client given a GPU trains on CUDA) and `ray_address`: a running Ray
        cluster to attach to (else RAY_ADDRESS, else fedsim starts a local instance, see
        `start_local_engine`, which Ray shuts down at the interpreter's exit; an attached cluster
        is only disconnected from).
    log_file : pathlib.Path, optional
        Where Flower's log records go (`engine_log`), e.g. the run folder's run.log.
    """
    from flwr.simulation import run_simulation

    quiet_engine_logs()
    init_args: dict = {"logging_level": logging.ERROR, "log_to_driver": False, "include_dashboard": False}
    address = backend.ray_address or os.environ.get("RAY_ADDRESS")
    if address:  # attach to a running cluster: Ray refuses resource and dashboard arguments there, and ray.shutdown() only disconnects
        init_args = {"address": address, "logging_level": logging.ERROR, "log_to_driver": False}
    else:
        start_local_engine(init_args)
    backend_config = {
        "client_resources": {"num_cpus": backend.cpus_per_client, "num_gpus": backend.gpus_per_client},
        "init_args": init_args,
    }
    with warnings.catch_warnings(), engine_log(log_file):
        warnings.simplefilter("ignore", DeprecationWarning)
        run_simulation(
            server_app=server_app,
            client_app=client_app,
            num_supernodes=num_clients,
            backend_config=backend_config,
        )


def local_cpus() -> float:
    """The CPUs a local Ray started here offers its actors: Ray's own count (a container's CPU
    limit where there is one, else the machine's cores).

    Returns
    -------
    float
        What `ray.init()` without `num_cpus` would register on this node.
    """
    try:
        from ray._private.utils import get_num_cpus  # the count ray.init uses; private, so fall back where it moved

        return float(get_num_cpus(override_docker_cpu_warning=True))
    except (ImportError, TypeError, AttributeError):
        return float(os.cpu_count() or 1)


def local_init_args(init_args: dict) -> dict:
    """`init_args` for a Ray of this run's own: `address="local"` unless an address is given.

    `ray.init()` without an address attaches to the cluster whose address the last `ray start`
    on this machine left in /tmp/ray/ray_current_cluster (Ray 2.55, `ray.init`'s `address`), so
    someone else's Ray would run fedsim's clients, on its resources, with its environment, and a
    stale file would fail the start; "local" always starts a new instance. Attaching is what
    `backend.ray_address` or RAY_ADDRESS ask for (`simulate`).
    """
    return {"address": "local"} | init_args


def start_local_engine(init_args: dict) -> bool:
    """Start a local Ray for the simulation unless one is up; True when this call started it.

    Flower's backend then finds Ray initialised and uses it as it is. The instance is the run's
    own, never a cluster found on the machine (`local_init_args`). The worker processes
    inherit the driver's environment, so PYTHONPATH carries this interpreter's sys.path (what
    Flower's runtime environment would have carried). The instance listens on the loopback
    interface only (`loopback_only`): a simulation on one machine needs no other.
    """
    import ray

    if ray.is_initialized():
        return False
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    inherited = os.environ.get("PYTHONPATH", "")
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in dict.fromkeys([*sys.path, *inherited.split(os.pathsep)]) if p)
    with loopback_only(), short_gcs_wait():
        ray.init(**local_init_args(init_args))
    return True


IN_FLIGHT_PER_ACTOR = 4  # messages the server keeps out per actor of Flower's pool (PartitionOrderedGrid's window)


def in_flight_window(backend: BackendConfig) -> int:
    """The window of messages fedsim's server keeps in flight on the Ray engine: `IN_FLIGHT_PER_ACTOR`
    per actor of the pool Flower builds from the cluster's resources.

    Flower's simulation runtime costs a walk over every message in flight for each node, every
    0.1 s (`fedsim.engine.server_app.PartitionOrderedGrid`), so the window is kept small: what
    the actors start between two refills (the server pulls every 0.1 s, the runtime hands a
    message on within its next 0.1 s cycle) and a margin, so that an actor finishing a
    client finds the next one queued. Asked at each exchange (`ServerPlan.in_flight`): where Ray
    is not up yet (Flower starts it when attaching to a cluster), the local CPUs stand in.

    Returns
    -------
    int
        `IN_FLIGHT_PER_ACTOR` x the actors (at least one) that fit `backend.cpus_per_client`
        and `backend.gpus_per_client` on the cluster, as Flower's `pool_size_from_resources` counts them.
    """
    import ray

    actors = int(local_cpus() // backend.cpus_per_client)
    if ray.is_initialized():
        from flwr.simulation.ray_transport.ray_actor import pool_size_from_resources

        try:
            actors = pool_size_from_resources({"num_cpus": backend.cpus_per_client, "num_gpus": backend.gpus_per_client})
        except ValueError:  # no actor fits: Flower stops the simulation with its own message
            actors = 1
    return IN_FLIGHT_PER_ACTOR * max(1, actors)


LOCAL_GCS_WAIT_S = 10  # how long a local node's processes wait for a GCS that stopped answering before they exit


@contextmanager
def short_gcs_wait() -> Iterator[None]:
    """While a local Ray starts, its processes learn to give up on a silent GCS after `LOCAL_GCS_WAIT_S`.

    When the run's process is killed (kill -9, the OOM killer), the GCS and raylet die with it,
    but the raylet's agents (ray::DashboardAgent, ray::RuntimeEnvAgent) first report the
    raylet's death through the GCS and wait Ray's default 60 s for it before exiting. A local
    GCS does not come back, so they are told to wait `LOCAL_GCS_WAIT_S` seconds
    (`RAY_gcs_rpc_server_reconnect_timeout_s`, in the environment the node's processes inherit
    when they start; a value the user set is kept). Restored afterwards.
    """
    name = "RAY_gcs_rpc_server_reconnect_timeout_s"
    saved = os.environ.get(name)
    os.environ[name] = saved or str(LOCAL_GCS_WAIT_S)
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop(name, None)


@contextmanager
def loopback_only() -> Iterator[None]:
    """While a local Ray starts, make its node address the loopback one (127.0.0.1).

    Ray binds its GCS, raylet, object manager, workers and agents to the node's address, which
    it takes to be the machine's outward address, and `ray.init(_node_ip_address="127.0.0.1")`
    maps loopback back to that address. Ray keeps the node on loopback only where it does not
    support clusters (its `RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER` switch, off), so that switch is
    turned off while this node starts: in this process (Ray read it when imported) and in the
    environment its processes inherit. Both are restored afterwards, so attaching to a cluster
    later in the same process is unaffected.
    """
    from ray._private import ray_constants

    name = getattr(ray_constants, "ENABLE_RAY_CLUSTERS_ENV_VAR", None)
    if name is None or not hasattr(ray_constants, "ENABLE_RAY_CLUSTER"):  # a Ray without the switch: its own binding
        yield
        return
    saved_flag, saved_env = ray_constants.ENABLE_RAY_CLUSTER, os.environ.get(name)
    ray_constants.ENABLE_RAY_CLUSTER, os.environ[name] = False, "0"
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = saved_flag
        if saved_env is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = saved_env
