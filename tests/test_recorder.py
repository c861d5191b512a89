import json

import pytest
import torch

from conftest import small_config
from fedsim import Run
from fedsim.datasets import load_pool
from fedsim.errors import FedsimError
from fedsim.membership import build_ledger, save_ledger
from fedsim.models import build_model
from fedsim.recorder import Recorder, global_file


@pytest.fixture
def recorded(tmp_path):
    config = small_config()
    pool = load_pool("digits", None)
    ledger = build_ledger(config, pool)
    recorder = Recorder(tmp_path / "run", config)
    recorder.start(lambda folder: save_ledger(ledger, folder))
    torch.manual_seed(0)
    states = [build_model("fcn", (64,), 10, config.model.args).state_dict() for _ in range(3)]
    recorder.record_round(0, states[0])
    recorder.record_round(1, states[0], {0: (states[1], 60), 1: (states[2], 60)}, broadcast={1: states[2]})
    return recorder, states, ledger


def test_a_recorded_round_reloads_bit_identically(recorded):
    recorder, states, ledger = recorded
    run = Run.open(recorder.folder)
    assert run.rounds == [0, 1] and run.clients(1) == [0, 1] and run.num_examples(1, 0) == 60
    for name, tensor in states[1].items():
        assert torch.equal(run.state(1, client=0)[name], tensor)
    assert all(torch.equal(run.state(1, 1, kind="broadcast")[k], v) for k, v in states[2].items())
    model = run.model(1)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in states[0].items())
    assert run.membership.equals(ledger)
    x, y = run.records(ledger["record_id"][:3])
    assert x.shape == (3, 64) and y.dtype == torch.int64


def test_manifest_lists_every_file_with_sha256_and_stays_running_until_finished(recorded):
    recorder, _, _ = recorded
    manifest = json.loads((recorder.folder / "manifest.json").read_text())
    assert manifest["status"] == "running" and manifest["rounds_completed"] == 1
    assert {"config.yaml", "membership.parquet", global_file(1), "rounds/0001/clients/client-000.safetensors"} <= set(manifest["files"])
    recorder.finish("complete")
    assert Run.open(recorder.folder).status == "complete"


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
        Run.open(recorder.folder).membership
