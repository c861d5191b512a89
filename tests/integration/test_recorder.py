import hashlib
import json

import pytest
import torch

from conftest import small_config
from fedsim import Run
from fedsim.core.errors import FedsimError
from fedsim.learning.datasets import load_pool
from fedsim.learning.membership import build_ledger, save_ledger
from fedsim.learning.models import build_model
from fedsim.recording.recorder import Recorder, global_file


@pytest.fixture
def recorded(tmp_path):
    config = small_config()
    pool = load_pool("digits", None)
    ledger = build_ledger(config, pool)
    recorder = Recorder(tmp_path / "run", config)
    recorder.start(lambda folder: save_ledger(ledger, folder))
    torch.manual_seed(0)
    # a distinct state per file: loading the wrong round, client or kind gives other numbers
    states = [build_model("fcn", (64,), 10, config.model.args).state_dict() for _ in range(5)]
    recorder.record_round(0, states[0])
    recorder.record_round(1, states[3], {0: (states[1], 60), 1: (states[2], 45)}, broadcast={1: states[4]})
    return recorder, states, ledger


def test_a_recorded_round_reloads_bit_identically(recorded):
    recorder, states, ledger = recorded
    run = Run.open(recorder.folder)
    assert run.rounds == [0, 1] and run.clients(1) == [0, 1] and (run.num_examples(1, 0), run.num_examples(1, 1)) == (60, 45)
    assert len({tuple(s["0.weight"].flatten()[:3].tolist()) for s in states}) == len(states)  # the fixture's states differ
    expected = {(0, None, "clients"): states[0], (1, None, "clients"): states[3], (1, 0, "clients"): states[1],
                (1, 1, "clients"): states[2], (1, 1, "broadcast"): states[4]}
    for (round_number, client, kind), state in expected.items():
        loaded = run.state(round_number, client, kind=kind) if client is not None else run.state(round_number)
        assert loaded.keys() == state.keys() and all(torch.equal(loaded[k], v) for k, v in state.items()), (round_number, client, kind)
    for round_number, state in ((0, states[0]), (1, states[3])):
        assert all(torch.equal(run.model(round_number).state_dict()[k], v) for k, v in state.items())
    assert all(torch.equal(run.model(1, 1).state_dict()[k], v) for k, v in states[2].items())
    assert run.membership.equals(ledger)
    x, y = run.records(ledger["record_id"][:3])
    assert x.shape == (3, 64) and y.dtype == torch.int64


def test_manifest_lists_every_file_with_sha256_and_stays_running_until_finished(recorded):
    recorder, _, _ = recorded
    manifest = json.loads((recorder.folder / "manifest.json").read_text())
    assert manifest["status"] == "running" and manifest["rounds_completed"] == 1
    def on_disk(prefix=""):
        return {str(p.relative_to(recorder.folder)) for p in recorder.folder.rglob("*")
                if p.is_file() and p.name != "manifest.json" and str(p.relative_to(recorder.folder)).startswith(prefix)}

    def assert_listed_with_sha256(manifest):
        for name, digest in manifest["files"].items():
            assert digest == hashlib.sha256((recorder.folder / name).read_bytes()).hexdigest(), name

    # while running: every record is listed (the metrics files are listed when the run finishes)
    assert set(manifest["files"]) == on_disk() - on_disk("metrics/")
    assert {"config.yaml", "membership.parquet", global_file(0), global_file(1), "rounds/0001/clients/client-000.safetensors",
            "rounds/0001/clients/client-001.safetensors", "rounds/0001/broadcast/client-001.safetensors"} <= on_disk()
    assert_listed_with_sha256(manifest)
    recorder.finish("complete")
    assert Run.open(recorder.folder).status == "complete"
    manifest = json.loads((recorder.folder / "manifest.json").read_text())
    assert set(manifest["files"]) == on_disk()
    assert_listed_with_sha256(manifest)


def test_a_tampered_record_is_named_on_load(recorded):
    recorder, _, _ = recorded
    path = recorder.folder / global_file(1)
    payload = bytearray(path.read_bytes())
    payload[-1] ^= 1
    path.write_bytes(bytes(payload))
    with pytest.raises(FedsimError, match="0001/global.safetensors: sha256 does not match"):
        Run.open(recorder.folder).model(1)


def test_an_unlisted_round_is_not_complete(recorded):
    recorder, _, _ = recorded
    with pytest.raises(FedsimError, match="round 2 is not recorded"):
        Run.open(recorder.folder).state(2)


def test_an_existing_output_folder_is_refused(tmp_path):
    (tmp_path / "taken").mkdir()
    with pytest.raises(FedsimError, match="already exists"):
        Recorder(tmp_path / "taken", small_config()).start(lambda folder: None)


def test_a_tampered_membership_file_is_named(recorded):
    recorder, _, _ = recorded
    path = recorder.folder / "membership.parquet"
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(FedsimError, match="membership.parquet: sha256 does not match"):
        _ = Run.open(recorder.folder).membership


def test_force_replaces_a_run_folder_but_never_other_folders(recorded, tmp_path):
    recorder, _, ledger = recorded
    again = Recorder(recorder.folder, small_config())
    again.start(lambda folder: save_ledger(ledger, folder), force=True)
    assert not (recorder.folder / "rounds").exists() and Run.open(recorder.folder).rounds == []
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("precious")
    with pytest.raises(FedsimError, match="not a fedsim run folder"):
        Recorder(tmp_path / "mine", small_config()).start(lambda folder: None, force=True)
    assert (tmp_path / "mine" / "thesis.tex").read_text() == "precious"


def test_reopen_removes_what_a_crash_left_and_keeps_complete_rounds(recorded):
    recorder, states, _ = recorded
    recorder.append_training({"round": 0, "test_accuracy": 0.1})
    recorder.append_training({"round": 1, "test_accuracy": 0.5})
    folder = recorder.folder
    (folder / "rounds/.0002.partial/clients").mkdir(parents=True)  # killed while staging round 2
    (folder / "rounds/0003").mkdir()  # renamed into place but never listed
    (folder / "rounds/0001/.global.safetensors.tmp").write_bytes(b"half")
    reopened = Recorder.reopen(folder)
    assert sorted(p.name for p in (folder / "rounds").iterdir()) == ["0000", "0001"]
    assert not list(folder.rglob("*.tmp"))
    assert (folder / "metrics/training.csv").read_text().splitlines()[1:] == ["0,,0.1,,,,,,"]  # round 1's row is written again
    assert reopened.manifest.rounds_completed == 1 and reopened.manifest.status == "running"
    assert all(torch.equal(v, states[2][k]) for k, v in Run.open(folder).state(1, 1).items())


def test_reopen_refuses_a_tampered_record_and_a_complete_run(recorded):
    recorder, _, _ = recorded
    recorder.finish("complete")
    with pytest.raises(FedsimError, match="already complete"):
        Recorder.reopen(recorder.folder)
    manifest = json.loads((recorder.folder / "manifest.json").read_text())
    manifest["status"] = "failed"
    (recorder.folder / "manifest.json").write_text(json.dumps(manifest))
    path = recorder.folder / global_file(1)
    path.write_bytes(path.read_bytes()[:-4])
    with pytest.raises(FedsimError, match=r"0001/global.safetensors is missing or does not match its sha256"):
        Recorder.reopen(recorder.folder)


def test_a_failed_write_names_the_round_and_leaves_it_incomplete(recorded, monkeypatch):
    import errno

    import fedsim.recording.recorder as recorder_module

    recorder, states, _ = recorded

    def disk_full(path, payload):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(recorder_module, "write_atomically", disk_full)
    with pytest.raises(FedsimError, match=r"cannot write round 2 to .*No space left on device.*--resume"):
        recorder.record_round(2, states[0], {0: (states[1], 60)})
    assert recorder.manifest.rounds_completed == 1 and 2 not in recorder.manifest.rounds
    assert Run.open(recorder.folder).rounds == [0, 1]


def test_float16_records_halve_the_bytes_and_load_as_the_rounded_model(recorded, tmp_path):
    recorder, states, ledger = recorded
    half = Recorder(tmp_path / "half", small_config("record.dtype=float16"))
    half.start(lambda folder: save_ledger(ledger, folder))
    half.record_round(0, states[1])
    full_size = (recorder.folder / global_file(0)).stat().st_size
    assert (half.folder / global_file(0)).stat().st_size < 0.6 * full_size
    model = Run.open(half.folder).model(0)
    for name, tensor in model.state_dict().items():
        assert tensor.dtype == torch.float32 and torch.equal(tensor, states[1][name].half().float())
