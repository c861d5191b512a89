"""manifest.json through the typed model: what existing run folders hold reads back to the same bytes."""

import json

import pytest

from fedsim.recording.manifest import Manifest, RoundEntry

# A manifest as the recorder wrote it before the model existed (a dict, json.dumps(indent=1)):
# a failed run with an active curious server, a secure-aggregation round and a round without a loss.
WRITTEN = {
    "format": 1,
    "name": "quickstart",
    "status": "failed",
    "seed": 3,
    "config_sha256": "729ddf1ddb2efb4c73d6ea7d47ffc2ad8d0d517875839c999adceb7499b53664",
    "versions": {"python": "3.11.9", "fedsim": "0.1.0", "torch": "2.5.1", "flwr": "1.42.0", "ray": "2.40.0", "numpy": "2.1.3"},
    "created": "2026-12-01T10:00:00+00:00",
    "updated": "2026-12-01T10:00:07+00:00",
    "rounds_completed": 2,
    "rounds": {
        "0": {"clients": {}, "failed": [], "dropped": [], "record_seconds": 0.0012},
        "1": {"clients": {"0": {"num_examples": 60}, "2": {"num_examples": 45}}, "failed": [-1, 1], "dropped": [3],
              "train_loss": 1.8734, "record_seconds": 0.0101},
        "2": {"clients": {}, "failed": [], "dropped": [], "train_loss": 1.5, "secure_sum": [0, 1, 2], "record_seconds": 0.004},
    },
    "files": {"config.yaml": "a" * 64, "membership.parquet": "b" * 64, "rounds/0000/global.safetensors": "c" * 64},
    "error": "FedsimError: round 3: no client update arrived",
}


def test_a_written_manifest_reads_back_typed_and_writes_the_same_bytes():
    text = json.dumps(WRITTEN, indent=1).encode()
    manifest = Manifest.from_json(text)
    assert manifest.to_json() == text
    assert manifest.rounds_completed == 2 and list(manifest.rounds) == [0, 1, 2]
    assert manifest.rounds[1].clients[2].num_examples == 45 and manifest.rounds[1].failed == [-1, 1]
    assert manifest.rounds[1].received() == {0, 1, 2}  # heard, or failed after receiving it; -1 names no client
    assert manifest.rounds[2].received() == {0, 1, 2} and manifest.rounds[0].train_loss is None


def test_optional_keys_stay_absent_and_unknown_keys_are_kept():
    running = {k: v for k, v in WRITTEN.items() if k != "error"} | {"status": "running"}
    text = json.dumps(running, indent=1).encode()
    assert b"error" not in Manifest.from_json(text).to_json() and Manifest.from_json(text).to_json() == text
    with_extra = json.dumps(WRITTEN | {"note": "kept"}, indent=1).encode()
    assert json.loads(Manifest.from_json(with_extra).to_json())["note"] == "kept"


def test_a_round_added_through_the_model_has_the_recorders_layout():
    manifest = Manifest.from_json(json.dumps(WRITTEN, indent=1))
    manifest.rounds[3] = RoundEntry(clients={1: {"num_examples": 7}}, failed=[], dropped=[], train_loss=None, secure_sum=None,
                                    record_seconds=0.5)
    assert json.loads(manifest.to_json())["rounds"]["3"] == {"clients": {"1": {"num_examples": 7}}, "failed": [], "dropped": [],
                                                            "record_seconds": 0.5}
    assert list(json.loads(manifest.to_json())) == list(WRITTEN)


@pytest.mark.parametrize("bad", [{"status": "paused"}, {"rounds": {"one": {}}}, {"rounds_completed": "many"}])
def test_a_damaged_manifest_is_refused(bad):
    with pytest.raises(ValueError):
        Manifest.from_json(json.dumps(WRITTEN | bad))
