"""Servers the engine tests start (SuperLink, SuperNodes, a Ray head), on 127.0.0.1 and free ports.

Every process is started by the test in a session of its own; it is ended by the ids the test
started: the process itself and its descendants, found through /proc before anything is
signalled (never by name, as others' Flower and Ray processes share the machine).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def engine_env(flwr_home: Path) -> dict[str, str]:
    """This checkout on PYTHONPATH (for every subprocess Flower and Ray start), the venv's
    scripts first on PATH, Flower's home in the test's folder, no `uv sync` of the app."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(PROJECT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["PATH"] = os.pathsep.join([str(BIN), env.get("PATH", "")])
    env["FLWR_HOME"] = str(flwr_home)
    env["FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION"] = "1"
    env["FLWR_DISABLE_UPDATE_CHECK"] = "1"
    env.pop("RAY_ADDRESS", None)
    return env


def start(command: list[str], env: dict[str, str], log: Path, cwd: Path = PROJECT) -> subprocess.Popen:
    """`command` in a session of its own, output to `log`."""
    with log.open("w") as out:
        return subprocess.Popen(command, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def descendants(pid: int) -> list[int]:
    """Every live descendant of `pid` (children first found through /proc/*/stat)."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            parents.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def end(processes: list[subprocess.Popen], extra: list[int] = (), timeout: float = 15) -> None:
    """SIGTERM to each started process and every descendant (ids taken first), SIGKILL after `timeout`."""
    pids = list(extra)
    for process in processes:
        pids += [process.pid, *descendants(process.pid)]
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + timeout
    for process in processes:
        try:
            process.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
    while any(alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.2)
    for pid in pids:
        if alive(pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    for process in processes:
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            pass


def wait_for_port(port: int, process: subprocess.Popen, log: Path, timeout: float = 60) -> None:
    """Until something listens on 127.0.0.1:`port`; fails with the log when `process` exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args[0]} exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout} s:\n{log.read_text()[-3000:]}")


def superlink_connection(flwr_home: Path, name: str, port: int) -> None:
    """Flower's CLI config (FLWR_HOME/config.toml) naming the test's SuperLink."""
    flwr_home.mkdir(parents=True, exist_ok=True)
    (flwr_home / "config.toml").write_text(
        f'[superlink]\ndefault = "{name}"\n\n[superlink.{name}]\naddress = "127.0.0.1:{port}"\ninsecure = true\n')
