"""fedsim beyond `fedsim run`'s own simulation: `flwr run .` on Flower's local simulation runtime,
Flower's deployment engine (a SuperLink and SuperNodes), and an existing Ray cluster.

Each test starts its servers on 127.0.0.1 with free ports, in its own FLWR_HOME / Ray temp dir,
and ends every process it started by its id (tests/launch.py). The run config is the pinned
short run (tests/data/pinned.yaml); `flwr run` and the attached cluster must record the bytes of
that config's in-process `fedsim run` made in this session on this machine (the `pinned_run`
fixture), as bytes are equal only on one machine with the same process settings.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pandas as pd
import pytest
import torch
from launch import BIN, PROJECT, end, engine_env, free_port, start, superlink_connection, wait_for_port
from safetensors.torch import load_file

from fedsim.core.layout import client_file, global_file
from helpers import record_hashes

pytestmark = pytest.mark.integration

PINNED = "tests/data/pinned.yaml"


def flwr_run(env: dict, connection: str, run_config: str, log: Path, *extra: str, timeout: float = 300) -> str:
    """`flwr run <project> <connection> --run-config ... --stream`, returning what it printed."""
    command = [str(BIN / "flwr"), "run", str(PROJECT), connection, "--run-config", run_config, *extra, "--stream"]
    done = subprocess.run(command, env=env, cwd=log.parent, capture_output=True, text=True, timeout=timeout)
    log.write_text(done.stdout + done.stderr)
    assert done.returncode == 0, log.read_text()[-3000:]
    return done.stdout + done.stderr


def test_flwr_run_on_the_local_simulation_runtime_records_what_fedsim_run_records(tmp_path, pinned_run):
    home, port = tmp_path / "flwr", free_port()
    superlink_connection(home, "fedsim-test", port)
    env = engine_env(home)
    log = tmp_path / "superlink.log"
    superlink = start([str(BIN / "flower-superlink"), "--insecure", "--simulation", "--disable-runtime-dependency-installation",
                       "--host", "127.0.0.1", "--port", str(port)], env, log)
    try:
        wait_for_port(port, superlink, log)
        runs = tmp_path / "runs"
        printed = flwr_run(env, "fedsim-test", f'config="{PINNED}" overrides="name=flwr-pinned" runs="{runs}"', tmp_path / "flwr-run.log",
                           "--federation-config", "num-supernodes=3")
    finally:
        end([superlink])
    latest = runs / "latest"
    assert latest.is_symlink() and latest.resolve().name.startswith("flwr-pinned-")  # --run-config's override reached the config
    folder = latest.resolve()
    assert f"fedsim: run folder {folder}" in printed  # the path is logged (streamed by --stream)
    assert json.loads((folder / "manifest.json").read_text())["status"] == "complete"
    assert (folder / "report.html").is_file()
    assert record_hashes(folder) == record_hashes(pinned_run)  # byte-identical to `fedsim run` (in-process) on the same config and seed


def test_deployment_engine_superlink_and_two_supernodes_run_the_quickstart(tmp_path):
    home, port = tmp_path / "flwr", free_port()
    superlink_connection(home, "fedsim-test", port)
    env = engine_env(home)
    started = []
    try:
        log = tmp_path / "superlink.log"
        started.append(start([str(BIN / "flower-superlink"), "--insecure", "--disable-runtime-dependency-installation",
                              "--host", "127.0.0.1", "--port", str(port)], env, log))
        wait_for_port(port, started[0], log)
        for partition in range(2):
            node_port = free_port()
            node_log = tmp_path / f"supernode-{partition}.log"
            started.append(start([str(BIN / "flower-supernode"), "--insecure", "--superlink", f"127.0.0.1:{port}",
                                  "--node-config", f"partition-id={partition} num-partitions=2",
                                  "--host", "127.0.0.1", "--port", str(node_port)], env, node_log))
            wait_for_port(node_port, started[-1], node_log)
        out = tmp_path / "run"
        flwr_run(env, "fedsim-test", f'config="{PINNED}" overrides="name=deployed; data.num_clients=2; train.rounds=1" out="{out}"',
                 tmp_path / "flwr-run.log", timeout=400)
    finally:
        end(started)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["rounds_completed"] == 1  # one round: each SuperNode starts a ClientApp process a message
    assert (out / "report.html").is_file() and (out / "membership.parquet").is_file()
    members = pd.read_parquet(out / "membership.parquet")
    examples = members[members["member"]].groupby("client").size()
    clients = {c: load_file(out / client_file(1, c)) for c in (0, 1)}
    total = float(examples.sum())
    for name, value in load_file(out / global_file(1)).items():
        average = sum(clients[c][name].double() * (examples[c] / total) for c in clients)
        torch.testing.assert_close(average, value.double(), atol=1e-6, rtol=0)
    leakage = pd.read_csv(out / "metrics" / "leakage.csv")
    assert set(leakage["attack"]) == {"loss"} and set(leakage["round"]) == {1} and (leakage["attacker"] == "server").all()


RAY_ACTORS = textwrap.dedent("""
    import json, sys
    import ray
    from ray._private import state  # the GCS's actor table (the state API needs the dashboard, which the test's head leaves out)
    ray.init(address=sys.argv[1], logging_level="ERROR", log_to_driver=False)
    actors = [dict(cls=a["ActorClassName"], state=a["State"], job=a["JobID"]) for a in state.actors().values()]
    print(json.dumps({"actors": actors, "nodes": sum(n["Alive"] for n in ray.nodes())}))
""")


def cluster_actors(env: dict, address: str) -> dict:
    done = subprocess.run([sys.executable, "-c", RAY_ACTORS, address], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_fedsim_run_attaches_to_an_existing_ray_cluster_and_leaves_it_up(tmp_path, pinned_run):
    env = engine_env(tmp_path / "flwr")
    port = free_port()
    ports = {flag: str(free_port()) for flag in ("--ray-client-server-port", "--dashboard-port", "--dashboard-agent-listen-port",
                                                 "--dashboard-agent-grpc-port", "--metrics-export-port", "--runtime-env-agent-port",
                                                 "--node-manager-port", "--object-manager-port")}
    temp_dir = tempfile.mkdtemp(prefix="fedsim-ray-", dir="/tmp")  # short: Ray's socket paths must fit 107 characters
    log = tmp_path / "ray-head.log"
    head = start([str(BIN / "ray"), "start", "--head", "--block", "--node-ip-address", "127.0.0.1", "--port", str(port),
                  "--num-cpus", "2", "--temp-dir", temp_dir, "--include-dashboard", "false", "--disable-usage-stats",
                  *[part for flag, value in ports.items() for part in (flag, value)]], env, log)
    address = f"127.0.0.1:{port}"
    try:
        wait_for_port(port, head, log)
        out = tmp_path / "run"
        done = subprocess.run([str(BIN / "fedsim"), "run", str(PROJECT / PINNED), "--out", str(out), "--quiet",
                               "--set", f"backend.ray_address={address}"], env=env, cwd=tmp_path, capture_output=True, text=True,
                              timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        assert head.poll() is None  # fedsim did not tear down the cluster it did not start
        seen = cluster_actors(env, address)
        assert seen["nodes"] == 1
        clients = [a for a in seen["actors"] if a["cls"] == "ClientAppActor"]
        assert clients, seen  # the clients ran as actors in this cluster
        assert {a["state"] for a in clients} == {"DEAD"}  # ended with fedsim's driver, the cluster still up
    finally:
        end([head])
    assert json.loads((out / "manifest.json").read_text())["status"] == "complete"
    assert record_hashes(out) == record_hashes(pinned_run)  # the same records as the in-process engine's
