"""`fedsim audit`: the example Flower app (examples/digits-app) run under audit, unchanged.

The app is copied to a temporary folder first, so the test can check that fedsim wrote nothing
into it; every run uses the in-process engine (the same apps on Flower's Ray engine are a system
test's concern).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from attackers.active.adversary import ascended_ids
from attackers.active.gradient_ascent import ascent_step
from fedsim.app.cli import main
from fedsim.recording.run import Run

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "digits-app"
FAST = ["--set", "backend.engine=in-process", "--set", "attack_seeds=1"]


def _copy_app(folder: Path) -> Path:
    app = folder / "digits-app"
    shutil.copytree(EXAMPLE, app, ignore=shutil.ignore_patterns("__pycache__"))
    return app


def _files(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


def _audit(app: Path, out: Path, *extra: str) -> int:
    return main(["audit", str(app), "--out", str(out), "--quiet", *FAST, *extra])


@pytest.fixture(scope="module")
def audited(tmp_path_factory):
    """(app folder, its files before, the run folder) of one passive audit of the example."""
    folder = tmp_path_factory.mktemp("audit")
    app = _copy_app(folder)
    before = _files(app)
    assert _audit(app, folder / "run") == 0
    return app, before, folder / "run"


def _weighted_mean(run: Run, round_number: int, exclude: int | None = None) -> dict[str, torch.Tensor]:
    clients = [c for c in run.clients(round_number) if c != exclude]
    weights = torch.tensor([float(run.num_examples(round_number, c)) for c in clients], dtype=torch.float64)
    weights /= weights.sum()
    states = [run.state(round_number, c) for c in clients]
    return {k: sum(w * s[k].double() for w, s in zip(weights, states)) for k in states[0]}


def test_the_audited_run_folder_is_complete_and_the_app_is_untouched(audited):
    app, before, folder = audited
    assert _files(app) == before  # fedsim wrote nothing into the app (no bytecode, no outputs, no edits)
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["rounds_completed"] == 3
    assert {"membership.parquet", "records.safetensors", "config.yaml", "metrics/leakage.csv", "report.html"} <= set(manifest["files"])
    run = Run.open(folder)
    assert all(run.clients(r) == [0, 1, 2, 3] for r in (1, 2, 3))


def test_the_recorded_aggregate_is_the_example_weighted_mean_of_the_recorded_replies(audited):
    run = Run.open(audited[2])
    for round_number in (1, 2, 3):
        expected = _weighted_mean(run, round_number)
        for key, value in run.state(round_number).items():
            torch.testing.assert_close(value.double(), expected[key], rtol=0, atol=1e-6)


def test_the_ledger_members_are_exactly_what_each_client_trains_on(audited):
    """Each client's members are the app's own training records of its partition, record by record."""
    import sys

    app = audited[0]
    sys.path.insert(0, str(app))
    try:
        from digitsapp.task import load_data
    finally:
        sys.path.remove(str(app))
    run = Run.open(audited[2])
    ledger = run.membership
    for client in range(4):
        train, _ = load_data(client, 4)
        expected = torch.stack([item["image"] for item in train.dataset])
        ids = ledger.loc[ledger["member"] & (ledger["client"] == client), "record_id"].to_numpy()
        x, _ = run.records(np.sort(ids))
        assert len(ids) == len(expected)
        assert torch.equal(x, expected)  # the same records, in the app's order (ids follow it)


def test_leakage_has_per_round_rows_for_the_victim_and_attack_and_report_read_the_folder(audited, tmp_path, capsys):
    folder = audited[2]
    leakage = pd.read_csv(folder / "metrics" / "leakage.csv")
    server = leakage[leakage["attacker"] == "server"]
    assert set(server["round"]) == {1, 2, 3} and set(server["attack"]) == {"loss", "trajectory"}
    capsys.readouterr()
    assert main(["attack", str(folder), "--attack", "loss", "--rounds", "3"]) == 0
    rows = pd.read_csv(__import__("io").StringIO(capsys.readouterr().out))
    assert rows["auc"].iloc[0] == pytest.approx(server[(server["round"] == 3) & (server["attack"] == "loss")]["auc"].iloc[0], abs=1e-12)
    assert main(["report", str(folder)]) == 0


CONTROL = '''
from digitsapp.task import load_data


def held_out_only(partition_id, num_partitions, victim=0):
    """Members handed to fedsim for the victim: held-out records no client ever trained on."""
    if partition_id != victim:
        return load_data(partition_id, num_partitions)[0], []  # the others' held-out records are the victim's "members" here
    held = [item for p in range(num_partitions) for item in load_data(p, num_partitions)[1].dataset]
    return held[: len(held) // 2], held[len(held) // 2:]
'''


def test_a_control_whose_members_were_never_trained_on_gives_chance(tmp_path, monkeypatch):
    app = _copy_app(tmp_path)
    control = tmp_path / "control"
    control.mkdir()
    (control / "audit_control.py").write_text(CONTROL)
    monkeypatch.syspath_prepend(str(control))
    out = tmp_path / "run"
    assert _audit(app, out, "--set", "app.data=audit_control:held_out_only", "--set", "adversary.target_records=150") == 0
    leakage = pd.read_csv(out / "metrics" / "leakage.csv")
    server = leakage[leakage["attacker"] == "server"]
    assert server["n_members"].min() >= 40
    assert abs(server["auc"].mean() - 0.5) < 0.1, server[["round", "attack", "auc"]]


def test_gradient_ascent_sends_the_victim_the_aggregate_plus_exactly_the_step(tmp_path):
    app = _copy_app(tmp_path)
    out = tmp_path / "run"
    assert _audit(app, out, "--set", "adversary.mode=gradient-ascent", "--set", "adversary.gamma=0.5", "--run-config", "num-server-rounds=2") == 0
    run = Run.open(out)
    from fedsim.learning.models import model_for

    targets = run.records(ascended_ids(run.membership, run.config))
    for round_number in (1, 2):
        sent = run.state(round_number, 0, kind="broadcast")
        expected = ascent_step(model_for(run.config), run.state(round_number - 1), *targets, 0.5)
        for key in expected:
            torch.testing.assert_close(sent[key], expected[key], rtol=0, atol=1e-6)
        assert not (out / f"rounds/{round_number:04d}/broadcast/client-001.safetensors").exists()  # honest clients got the aggregate


def test_isolation_keeps_the_victims_reply_out_of_every_aggregate(tmp_path):
    app = _copy_app(tmp_path)
    out = tmp_path / "run"
    assert _audit(app, out, "--set", "adversary.isolate=true", "--set", "adversary.victim=1", "--run-config", "num-server-rounds=2") == 0
    run = Run.open(out)
    for round_number in (1, 2):
        assert 1 in run.clients(round_number)  # recorded ...
        expected = _weighted_mean(run, round_number, exclude=1)  # ... but never averaged
        for key, value in run.state(round_number).items():
            torch.testing.assert_close(value.double(), expected[key], rtol=0, atol=1e-6)
    sent = run.state(2, 1, kind="broadcast")  # round 2: the victim continues its own chain
    for key, value in run.state(1, 1).items():
        assert torch.equal(sent[key], value)


def _one_line_exit_2(capsys, code: int) -> str:
    err = capsys.readouterr().err.strip()
    assert code == 2 and "Traceback" not in err and len(err.splitlines()) == 1, err
    return err


def test_a_folder_without_a_flower_app_is_one_line_and_creates_nothing(tmp_path, capsys):
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "pyproject.toml").write_text('[project]\nname = "x"\n')
    err = _one_line_exit_2(capsys, _audit(tmp_path / "app", tmp_path / "run"))
    assert "[tool.flwr.app]" in err and not (tmp_path / "run").exists()


FAILING_SERVER = '''
from flwr.serverapp import ServerApp

app = ServerApp()


@app.main()
def main(grid, context):
    raise RuntimeError("the strategy cannot start")
'''

LEGACY_SERVER = '''
from flwr.server import ServerApp, ServerAppComponents, ServerConfig
from flwr.server.strategy import FedAvg

app = ServerApp(server_fn=lambda context: ServerAppComponents(strategy=FedAvg(), config=ServerConfig(num_rounds=1)))
'''


@pytest.mark.parametrize(("source", "fragment", "created"), [
    (FAILING_SERVER, "the app's ServerApp failed: RuntimeError: the strategy cannot start", True),
    (LEGACY_SERVER, "legacy server_fn and Strategy API", False),
])
def test_a_serverapp_that_fails_or_is_not_message_api_is_one_line_and_never_complete(tmp_path, capsys, source, fragment, created):
    app = _copy_app(tmp_path)
    (app / "digitsapp" / "other_server.py").write_text(source)
    project = app / "pyproject.toml"
    project.write_text(project.read_text().replace('serverapp = "digitsapp.server_app:app"', 'serverapp = "digitsapp.other_server:app"'))
    err = _one_line_exit_2(capsys, _audit(app, tmp_path / "run"))
    assert fragment in err
    if created:
        assert json.loads((tmp_path / "run" / "manifest.json").read_text())["status"] == "failed"
    else:
        assert not (tmp_path / "run").exists()


def test_a_victim_the_federation_does_not_have_is_one_line(tmp_path, capsys):
    app = _copy_app(tmp_path)
    err = _one_line_exit_2(capsys, _audit(app, tmp_path / "run", "--set", "adversary.victim=7"))
    assert "adversary.victim is 7" in err and not (tmp_path / "run").exists()


def test_a_curious_participant_audits_the_app_through_its_clientapp_mod(tmp_path):
    app = _copy_app(tmp_path)
    out = tmp_path / "run"
    assert _audit(app, out, "--set", "adversary.role=participant", "--set", "adversary.mode=gradient-ascent", "--set", "adversary.gamma=0.2",
                  "--run-config", "num-server-rounds=2", "--set", "attacks=[loss]") == 0
    leakage = pd.read_csv(out / "metrics" / "leakage.csv")
    assert set(leakage["attacker"]) == {"participant"} and set(leakage["round"]) == {1, 2}
    run = Run.open(out)
    assert json.loads((out / "manifest.json").read_text())["status"] == "complete"
    assert not any((out / f"rounds/{r:04d}/broadcast").exists() for r in (1, 2))  # the server is honest: it sent everyone the aggregate
    assert run.clients(2) == [0, 1, 2, 3]
