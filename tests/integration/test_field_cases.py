"""Field cases replayed on fedsim (in-process engine): each gives the right result, or one line,
exit code 2, and a run folder that never lists a broken round nor says 'complete'.

The gate: no round whose global model is malformed (an array missing, extra or misshapen) or
non-finite is ever listed in the manifest, whether fedsim's server or the audit's Grid saw it.
A user's strategy that drops an array or raises is named in one line; a diverged run is never
attacked; a refused resume changes nothing on disk; a disk filling up mid-round leaves no
temporary file and a 'failed' manifest; a tiny federation gets targets, not a refusal that
contradicts itself.
"""

from __future__ import annotations

import errno
import hashlib
import json
import math
import textwrap
from pathlib import Path

import pytest
import torch
from flwr.app import ArrayRecord, Context, Message, MessageType, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from rich.text import Text

from conftest import SMALL, small_config
from fedsim.app.cli import main
from fedsim.app.experiment import prepare
from fedsim.core.errors import FedsimError
from fedsim.engine.audited_app import AuditGrid, AuditPlan, audited_client_app, discover
from fedsim.engine.inprocess import FIRST_NODE_ID, InProcessGrid, server_identity
from fedsim.learning.models import model_for
from fedsim.recording.recorder import Recorder
from fedsim.recording.run import Run

TINY = ["data.num_clients=2", "data.records_per_client=40", "data.nonmembers=40", "data.test_records=60",
        "adversary.target_records=10", "train.rounds=2", "model.args={hidden: [8]}", "attacks=[loss]", "backend.engine=in-process"]

STRATEGIES = '''
from flwr.serverapp.strategy import FedAvg


class DropsAnArray(FedAvg):
    """Aggregates as FedAvg, then loses the model's last array."""

    def aggregate_train(self, server_round, replies):
        arrays, metrics = super().aggregate_train(server_round, replies)
        del arrays[list(arrays.keys())[-1]]
        return arrays, metrics


class RaisesInRound(FedAvg):
    """FedAvg until round 2, whose aggregation raises."""

    def aggregate_train(self, server_round, replies):
        if server_round == 2:
            raise ValueError("weights and replies differ in length")
        return super().aggregate_train(server_round, replies)
'''


@pytest.fixture
def user_strategies(tmp_path, monkeypatch) -> str:
    """A user's strategy module on the path, as `strategy.name: package.module:Class` imports it."""
    (tmp_path / "field_case_strategies.py").write_text(textwrap.dedent(STRATEGIES))
    monkeypatch.syspath_prepend(str(tmp_path))
    return "field_case_strategies"


def _run(tmp_path, capsys, *settings, out: str = "run") -> tuple[int, list[str], Path]:
    folder = tmp_path / out
    code = main(["run", "--out", str(folder), "--quiet", *[f"--set={s}" for s in (*TINY, *settings)]])
    err = capsys.readouterr().err
    return code, [line for line in err.splitlines() if line.strip()], folder


def _manifest(folder: Path) -> dict:
    return json.loads((folder / "manifest.json").read_text())


def _snapshot(folder: Path) -> dict[str, str]:
    """Every file under the folder (hidden ones included) -> sha256 of its bytes."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.integration
def test_a_strategy_whose_aggregate_misses_an_array_is_named_in_one_line_and_the_round_is_not_listed(tmp_path, capsys, user_strategies):
    code, lines, folder = _run(tmp_path, capsys, f"strategy.name={user_strategies}:DropsAnArray")
    names = list(model_for(small_config(*TINY)).state_dict())
    assert code == 2 and len(lines) == 1, lines
    assert lines[0].startswith(f"fedsim: error: round 1: strategy {user_strategies}:DropsAnArray returned an aggregate that is not the model "
                               f"(missing [{names[-1]}]; the aggregate has [{', '.join(names[:-1])}], the model [{', '.join(names)}])"), lines[0]
    manifest = _manifest(folder)
    assert manifest["status"] == "failed" and manifest["rounds_completed"] == 0 and list(manifest["rounds"]) == ["0"]
    assert not (folder / "rounds" / "0001").exists()


@pytest.mark.integration
def test_a_strategy_that_raises_is_one_line_naming_it_and_its_traceback_is_in_run_log(tmp_path, capsys, user_strategies):
    code, lines, folder = _run(tmp_path, capsys, f"strategy.name={user_strategies}:RaisesInRound", "train.rounds=3")
    assert code == 2 and len(lines) == 1, lines
    assert lines[0] == (f"fedsim: error: round 2: strategy {user_strategies}:RaisesInRound raised in aggregate_train "
                        "(ValueError: weights and replies differ in length); its traceback is in run.log")
    log = (folder / "run.log").read_text()
    assert "Traceback" in log and 'raise ValueError("weights and replies differ in length")' in log
    manifest = _manifest(folder)
    assert manifest["status"] == "failed" and list(manifest["rounds"]) == ["0", "1"]


@pytest.mark.integration
def test_a_diverged_round_is_never_listed_and_attacking_the_failed_run_is_refused(tmp_path, capsys):
    code, lines, folder = _run(tmp_path, capsys, "train.lr=3e38")
    assert code == 2 and len(lines) == 1 and "round 1: training diverged" in lines[0] and "lower train.lr" in lines[0], lines
    manifest = _manifest(folder)
    assert manifest["status"] == "failed" and manifest["rounds_completed"] == 0 and list(manifest["rounds"]) == ["0"]
    run = Run.open(folder)
    assert run.rounds == [0] and all(torch.isfinite(t).all() for t in run.model(0).state_dict().values())
    code = main(["attack", str(folder)])
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert code == 2 and len(err) == 1 and err[0].startswith(f"fedsim: error: {folder}: the run failed (FedsimError: round 1: training diverged")


@pytest.mark.integration
def test_a_refused_resume_of_a_failed_run_changes_nothing_on_disk(tmp_path, capsys, user_strategies):
    # A run that failed after a complete training round, recording float16: resuming it is refused.
    code, _, folder = _run(tmp_path, capsys, f"strategy.name={user_strategies}:RaisesInRound", "train.rounds=3", "record.dtype=float16")
    assert code == 2 and _manifest(folder)["status"] == "failed" and _manifest(folder)["rounds_completed"] == 1
    (folder / "rounds" / ".0002.partial").mkdir()  # what a crash may leave: a resume would clear it, a refusal must not
    before = _snapshot(folder)
    assert main(["run", "--resume", str(folder)]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and "records float16 (rounded) parameters" in err[0]
    assert _snapshot(folder) == before and (folder / "rounds" / ".0002.partial").is_dir()
    assert _manifest(folder)["status"] == "failed"


class _Disk:
    """A disk of fixed capacity under `folder`: full from the moment the second client file of
    round 2 is staged. A binary write past the capacity writes what fits, then fails with ENOSPC,
    as a full disk does; text appends (run.log, training.csv) are not counted."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.capacity: int | None = None

    def used(self) -> int:
        return sum(p.stat().st_size for p in self.folder.rglob("*") if p.is_file())


class _Handle:
    def __init__(self, handle, disk: _Disk):
        self._handle, self._disk = handle, disk

    def write(self, data: bytes) -> int:
        assert self._disk.capacity is not None
        room = self._disk.capacity - self._disk.used()
        if len(data) > room:
            self._handle.write(data[:max(room, 0)])
            self._handle.flush()
            raise OSError(errno.ENOSPC, "No space left on device")
        return self._handle.write(data)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._handle.close()

    def __getattr__(self, name):
        return getattr(self._handle, name)


@pytest.mark.integration
def test_a_disk_filling_up_mid_round_marks_the_run_failed_and_leaves_no_temporary_file(tmp_path, capsys, monkeypatch):
    folder = tmp_path / "run"
    disk = _Disk(folder)
    real_open = Path.open

    def open_on_disk(path: Path, mode: str = "r", *args, **kwargs):
        handle = real_open(path, mode, *args, **kwargs)
        if "w" not in mode or "b" not in mode or folder not in path.parents:
            return handle
        if disk.capacity is None and ".0002.partial" in path.parts and path.name.startswith(".client-001"):
            disk.capacity = disk.used() + 100  # the second client's file of round 2 does not fit
        return _Handle(handle, disk) if disk.capacity is not None else handle

    monkeypatch.setattr(Path, "open", open_on_disk)
    code, lines, _ = _run(tmp_path, capsys, "train.rounds=3")
    monkeypatch.undo()
    assert disk.capacity is not None, "the disk never filled"
    assert code == 2 and len(lines) == 1 and "cannot write round 2" in lines[0] and "No space left on device" in lines[0], lines
    leftovers = [str(p.relative_to(folder)) for p in folder.rglob(".*")]
    assert leftovers == [], leftovers  # no .manifest.json.tmp, no .0002.partial
    run = Run.open(folder)
    assert run.status == "failed" and run.rounds == [0, 1] and "No space left" in (run.manifest.error or "")


def test_a_tiny_federation_gets_every_member_as_a_target_with_as_many_matched_nonmembers_as_exist(tmp_path):
    # Four records per client and the quickstart's 400 non-members and 200 targets: the victim has two evaluation members.
    tiny = ["data.records_per_client=4", "data.nonmembers=400", "adversary.target_records=200"]
    notes: list[str] = []
    ledger, _, _ = prepare(small_config(*tiny), notes)
    targets = ledger[ledger["target"]]
    members, nonmembers = targets[targets["member"]], targets[~targets["member"]]
    assert len(members) == 2 and len(nonmembers) >= 2 and len(nonmembers) % 2 == 0
    assert len(notes) == 1 and f"{len(targets)} targets instead of 200" in notes[0] and "raise data.nonmembers for more" in notes[0]
    # The note's fix gives more targets.
    more: list[str] = []
    ledger, _, _ = prepare(small_config(*tiny, "data.nonmembers=1500"), more)
    assert int(ledger["target"].sum()) > len(targets)


def test_a_refusal_for_classes_without_nonmembers_is_true_and_its_fix_works(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no config file of the working folder
    settings = [*SMALL, "data.records_per_client=4", "data.nonmembers=4", "adversary.target_records=2", "seed=0"]
    assert main(["check", *[f"--set={s}" for s in settings]]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and "no evaluation non-member shares a label" in err[0] and ", 0 non-members" in err[0], err
    assert "raise data.nonmembers (now 4)" in err[0]
    assert main(["check", *[f"--set={s}" for s in settings], "--set=data.nonmembers=40"]) == 0  # the suggested fix
    assert capsys.readouterr().err.splitlines()[-1] == "fedsim: the quickstart: valid"
    ledger, _, _ = prepare(small_config(*settings, "data.nonmembers=40"))
    assert int(ledger["target"].sum()) == 2


def _client() -> ClientApp:
    app = ClientApp()

    @app.train()
    def train(message: Message, context: Context) -> Message:
        content = RecordDict({"arrays": message.content["arrays"], "metrics": MetricRecord({"num-examples": 10})})
        return Message(content=content, reply_to=message)

    return app


@pytest.mark.parametrize("aggregate, fragment", [
    ({"w": torch.ones(3)}, "returned an aggregate that is not the model (missing [b]; the aggregate has [w], the model [w, b])"),
    ({"w": torch.ones(4), "b": torch.ones(1)}, "not the model (shape of [w (4,) instead of (3,)])"),
    ({"w": torch.tensor([1.0, math.nan, 0.0]), "b": torch.ones(1)}, "round 1: training diverged (parameter w is not finite"),
])
def test_the_audits_grid_never_lists_a_malformed_or_non_finite_round(tmp_path, aggregate, fragment):
    recorder = Recorder(tmp_path / "run", small_config())
    recorder.start(lambda where: (where / "membership.parquet").write_bytes(b"") or where / "membership.parquet")
    plan = AuditPlan(recorder=recorder, num_clients=1, rounds=1, run_config={}, adversary=None, evaluate=lambda state: (1.0, 0.5))
    model = {"w": torch.zeros(3), "b": torch.zeros(1)}
    with server_identity():
        inner = InProcessGrid(audited_client_app(_client(), {}), 1)
        grid = AuditGrid(inner, plan, discover(inner, 1))
        train = Message(content=RecordDict({"arrays": ArrayRecord(model)}), message_type=MessageType.TRAIN, dst_node_id=FIRST_NODE_ID)
        list(grid.send_and_receive([train]))
        evaluate = Message(content=RecordDict({"arrays": ArrayRecord(aggregate)}), message_type=MessageType.EVALUATE, dst_node_id=FIRST_NODE_ID)
        with pytest.raises(FedsimError) as refused:
            grid.send_and_receive([evaluate])
    assert fragment in str(refused.value) and "\n" not in str(refused.value)
    assert list(recorder.manifest.rounds) == [0] and json.loads((tmp_path / "run" / "manifest.json").read_text())["rounds_completed"] == 0


class ZMQInteractiveShell:
    """What `get_ipython()` returns in a Jupyter kernel, as far as rich looks (the class's name)."""


@pytest.fixture
def notebook(monkeypatch) -> list[str]:
    """A Jupyter kernel as rich detects it; returns the texts rich sends to the notebook's output."""
    import builtins

    import rich.jupyter

    shown: list[str] = []
    monkeypatch.setattr(builtins, "get_ipython", lambda: ZMQInteractiveShell(), raising=False)
    monkeypatch.setattr(rich.jupyter, "display", lambda segments, text: shown.append(Text.from_ansi(text).plain))
    return shown


@pytest.mark.integration
def test_quiet_shows_nothing_in_a_notebook_and_run_log_gets_every_line(tmp_path, notebook):
    from rich.console import Console

    import fedsim

    assert Console().is_jupyter  # rich takes this process for a notebook
    run = fedsim.simulate(small_config(*TINY), out=tmp_path / "quiet", quiet=True)
    assert run.status == "complete" and notebook == []
    log = (run.folder / "run.log").read_text()
    assert "round   1/2  test accuracy" in log and "round   2/2" in log and "leakage per attack" in log


def test_a_console_that_is_not_quiet_shows_in_the_notebook_and_still_writes_run_log(tmp_path, notebook):
    from fedsim.app.console import RunConsole

    console = RunConsole()
    console.log_to(tmp_path / "run.log")
    console.print("round 1/2  test accuracy 0.5")
    console.close_log()
    assert notebook == ["round 1/2  test accuracy 0.5"]
    assert (tmp_path / "run.log").read_text() == "round 1/2  test accuracy 0.5\n"


def test_more_cpus_per_client_than_a_local_ray_has_is_one_line_before_any_folder(tmp_path, capsys, monkeypatch):
    from fedsim.engine.simulation import local_cpus

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    cpus = local_cpus()
    ray = [f"--set={s}" for s in (*TINY, "backend.engine=ray")]
    assert main(["run", "--out", str(tmp_path / "run"), "--quiet", *ray, f"--set=backend.cpus_per_client={cpus + 1:g}"]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert err == [f"fedsim: error: backend.cpus_per_client is {cpus + 1:g} but Ray sees {cpus:g} CPUs on this machine, so no client "
                   f"could be scheduled; set backend.cpus_per_client to at most {cpus:g} (or attach a cluster through backend.ray_address)"]
    assert not (tmp_path / "run").exists()
    assert main(["check", *ray, f"--set=backend.cpus_per_client={cpus + 1:g}"]) == 2  # `fedsim check` says so too
    assert main(["check", *ray, f"--set=backend.cpus_per_client={cpus:g}"]) == 0  # the fix it names
    monkeypatch.setenv("RAY_ADDRESS", "ray://head:10001")  # an attached cluster's CPUs are Ray's to count
    assert main(["check", *ray, f"--set=backend.cpus_per_client={cpus + 1:g}"]) == 0


@pytest.mark.integration
def test_flwr_runs_run_folder_does_not_depend_on_the_superlinks_working_directory(tmp_path, monkeypatch):
    from fedsim.app import flower_app

    home, other_app = tmp_path / "home", tmp_path / "other-app"  # the managed SuperLink's working directory: another app's folder
    home.mkdir()
    other_app.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(other_app)
    logged: list[str] = []
    monkeypatch.setattr(flower_app, "log", lambda level, message, *args: logged.append(message % args))
    run_config = {"config": "fedsim/quickstart.yaml", "overrides": "; ".join([*TINY, "name=flwr"]), "out": "", "runs": ""}
    with server_identity():
        grid = InProcessGrid(flower_app.client_app, 2)
        for context in grid._contexts.values():  # what Flower gives every SuperNode: the run's config
            context.run_config = dict(run_config)
        flower_app.server_app(grid, Context(run_id=1, node_id=0, node_config={}, state=RecordDict(), run_config=dict(run_config)))
    folders = [p for p in (home / "fedsim-runs").iterdir() if p.name != "latest"]
    assert len(folders) == 1 and Run.open(folders[0]).status == "complete"
    assert list(other_app.iterdir()) == []  # nothing in the SuperLink's working directory
    assert logged[-1] == f"fedsim: run folder {folders[0].resolve()}"
    assert any(line.startswith("fedsim: flwr: ") and line.endswith(f"-> {folders[0]}") for line in logged), logged[:3]
    with pytest.raises(FedsimError) as refused:  # a relative folder has no meaning there
        flower_app.run_locations({"runs": "runs", "out": ""})
    assert "runs='runs' is relative" in str(refused.value) and "--run-config 'runs=\"'$PWD'/runs\"'" in str(refused.value)


@pytest.mark.integration
def test_one_ctrl_c_ends_an_in_process_run_within_seconds_and_marks_it_failed(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    folder = tmp_path / "run"
    sets = [f"--set={s}" for s in (*TINY, "train.rounds=2000")]
    process = subprocess.Popen([sys.executable, "-m", "fedsim.app.cli", "run", "--out", str(folder), "--quiet", *sets], cwd=tmp_path,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and process.poll() is None and not (folder / "rounds" / "0001").is_dir():
            time.sleep(0.1)
        assert process.poll() is None and (folder / "rounds" / "0001").is_dir(), "round 1 never finished"
        process.send_signal(signal.SIGINT)
        interrupted = time.monotonic()
        _, err = process.communicate(timeout=120)
        took = time.monotonic() - interrupted
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130 and took < 15, (took, err[-2000:])
    assert err.strip().splitlines()[-1] == "fedsim: interrupted; the run folder is marked failed (continue it with `fedsim run --resume`)"
    assert _manifest(folder)["status"] == "failed"
