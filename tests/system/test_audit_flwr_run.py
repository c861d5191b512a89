"""`fedsim audit` through Flower's own front door: `flwr run` of fedsim's Flower app with
`--run-config audit=APP_DIR`, on the local simulation runtime (a SuperLink on 127.0.0.1, a free
port, ended by its process ids; see launch.py).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from launch import BIN, PROJECT, end, engine_env, free_port, start, superlink_connection, wait_for_port

from fedsim.recording.run import Run

pytestmark = pytest.mark.integration

EXAMPLE = PROJECT / "examples" / "digits-app"


def _files(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_flwr_run_audits_the_example_app_on_the_simulation_runtime(tmp_path):
    app = tmp_path / "digits-app"
    shutil.copytree(EXAMPLE, app, ignore=shutil.ignore_patterns("__pycache__"))
    before = _files(app)
    home, port = tmp_path / "flwr", free_port()
    superlink_connection(home, "fedsim-test", port)
    env = engine_env(home)
    log = tmp_path / "superlink.log"
    superlink = start([str(BIN / "flower-superlink"), "--insecure", "--simulation", "--disable-runtime-dependency-installation",
                       "--host", "127.0.0.1", "--port", str(port)], env, log)
    runs = tmp_path / "runs"
    run_config = f'audit="{app}" overrides="attack_seeds=1; adversary.target_records=100" runs="{runs}"'
    try:
        wait_for_port(port, superlink, log)
        done = subprocess.run([str(BIN / "flwr"), "run", str(PROJECT), "fedsim-test", "--run-config", run_config,
                               "--federation-config", "num-supernodes=4", "--stream"],
                              env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
        (tmp_path / "flwr-run.log").write_text(done.stdout + done.stderr)
        assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    finally:
        end([superlink])
    folder = (runs / "latest").resolve()
    assert f"fedsim: run folder {folder}" in done.stdout + done.stderr
    assert json.loads((folder / "manifest.json").read_text())["status"] == "complete"
    assert _files(app) == before
    run = Run.open(folder)
    for round_number in (1, 2, 3):
        clients = run.clients(round_number)
        assert clients == [0, 1, 2, 3]
        weights = torch.tensor([float(run.num_examples(round_number, c)) for c in clients], dtype=torch.float64)
        states = [run.state(round_number, c) for c in clients]
        for key, value in run.state(round_number).items():
            expected = sum(w * s[key].double() for w, s in zip(weights / weights.sum(), states))
            torch.testing.assert_close(value.double(), expected, rtol=0, atol=1e-6)
