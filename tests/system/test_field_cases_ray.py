"""Field cases that only Flower's Ray engine shows: a local simulation listens on the loopback
interface only and one Ctrl-C ends it within seconds (one run, rounds in), and Ray's agents do not
outlive a run that was killed.
"""

from __future__ import annotations

import ipaddress
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import RAY, SMALL

psutil = pytest.importorskip("psutil")
pytestmark = pytest.mark.integration

FEDSIM = [str(Path(sys.executable).with_name("fedsim"))]  # the installed console script


def _fedsim_run(folder: Path, *settings: str) -> subprocess.Popen:
    """`fedsim run` of the small quickstart on the Ray engine, in a process of its own."""
    sets = [f"--set={s}" for s in (*SMALL, RAY, *settings)]
    return subprocess.Popen([*FEDSIM, "run", "--out", str(folder), "--quiet", *sets], cwd=folder.parent,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


def _listening(root: int) -> dict[str, set[str]]:
    """Process name -> the addresses its listening TCP sockets are bound to, for `root` and its descendants."""
    try:
        family = {p.pid: p.name() for p in psutil.Process(root).children(recursive=True)} | {root: "fedsim"}
    except psutil.NoSuchProcess:
        return {}
    seen: dict[str, set[str]] = {}
    for connection in psutil.net_connections(kind="tcp"):
        if connection.status == psutil.CONN_LISTEN and connection.pid in family:
            seen.setdefault(family[connection.pid], set()).add(connection.laddr.ip)
    return seen


def _loopback(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%")[0])
    return ip.is_loopback or (ip.version == 6 and ip.ipv4_mapped is not None and ip.ipv4_mapped.is_loopback)


def test_a_local_ray_simulation_listens_on_loopback_only_and_one_ctrl_c_ends_it_within_seconds(tmp_path):
    folder = tmp_path / "run"
    process = _fedsim_run(folder, "train.rounds=200")  # long enough to be sampled mid-run; ended by Ctrl-C once seen
    seen: dict[str, set[str]] = {}
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and process.poll() is None and not (folder / "rounds" / "0003").is_dir():
            for name, addresses in _listening(process.pid).items():
                seen.setdefault(name, set()).update(addresses)
            time.sleep(0.5)
        assert process.poll() is None, "the run ended before three rounds were seen"
        for name, addresses in _listening(process.pid).items():  # once more, rounds into the run
            seen.setdefault(name, set()).update(addresses)
        os.killpg(process.pid, signal.SIGINT)  # what Ctrl-C in a terminal sends: the whole foreground group
        interrupted = time.monotonic()
        _, err = process.communicate(timeout=120)
        took = time.monotonic() - interrupted
    finally:
        if process.poll() is None:
            os.killpg(process.pid, 9)
    assert {"gcs_server", "raylet"} <= set(seen), seen  # Ray's servers were seen listening
    exposed = {name: sorted(a for a in addresses if not _loopback(a)) for name, addresses in seen.items()}
    assert not any(exposed.values()), exposed
    assert process.returncode == 130 and took < 15, (took, err[-2000:])  # before: alive for minutes after the line below
    assert err.strip().splitlines()[-1] == "fedsim: interrupted; the run folder is marked failed (continue it with `fedsim run --resume`)"
    assert json.loads((folder / "manifest.json").read_text())["status"] == "failed"


def test_rays_agents_exit_within_seconds_of_a_killed_run(tmp_path):
    process = _fedsim_run(tmp_path / "run", "train.rounds=40")
    family: dict[int, tuple[str, float]] = {}  # pid -> (name, start time): a pid reused later is not ours
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and process.poll() is None:
            for child in psutil.Process(process.pid).children(recursive=True):
                try:
                    family[child.pid] = (child.name(), child.create_time())
                except psutil.NoSuchProcess:
                    pass
            if {"ray::DashboardAgent", "ray::RuntimeEnvAgent"} <= {name for name, _ in family.values()}:
                break
            time.sleep(0.5)
        assert process.poll() is None, "the run ended before Ray's agents were seen"
        assert {"ray::DashboardAgent", "ray::RuntimeEnvAgent"} <= {name for name, _ in family.values()}, family
        process.kill()  # kill -9: nothing of fedsim runs after it
        process.wait(timeout=10)
        killed = time.monotonic()
        alive = family
        while alive and time.monotonic() - killed < 30:
            time.sleep(1)
            alive = {pid: entry for pid, entry in alive.items() if _same_process_alive(pid, entry[1])}
        assert not alive and time.monotonic() - killed < 20, sorted(name for name, _ in alive.values())  # Ray's default: 60 s
    finally:
        for pid, (_, started) in family.items():
            if _same_process_alive(pid, started):
                os.kill(pid, 9)


def _same_process_alive(pid: int, started: float) -> bool:
    try:
        process = psutil.Process(pid)
        return process.create_time() == started and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
