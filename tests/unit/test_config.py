from pathlib import Path

import pytest

from fedsim.app.cli import main
from fedsim.app.experiment import load_checked_config
from fedsim.core.config import Config, load_config
from fedsim.core.errors import FedsimError


def write(tmp_path, text, name="c.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_built_in_default_is_the_quickstart_file_on_digits():
    config = load_config(None)
    assert config.name == "quickstart" and config.data.dataset == "digits"
    checkout_file = Path(__file__).resolve().parents[2] / "configs" / "quickstart.yaml"
    assert config == load_config(checkout_file) != Config()  # the file, not the schema's defaults


def test_overrides_are_parsed_as_yaml_and_validated():
    config = load_config(None, ["train.rounds=3", "data.partition=dirichlet", "model.args={hidden: [8, 4]}", "adversary.active_rounds=[1, 2]"])
    assert config.train.rounds == 3 and config.data.partition == "dirichlet"
    assert config.model.args == {"hidden": [8, 4]} and config.adversary.active_rounds == [1, 2]


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("data: {datset: digits}", "unknown key 'data.datset'"),
        ("train: {rounds: many}", "train.rounds"),
        ("train: {rounds: 0}", "greater than or equal to 1"),
        ("data: {alpha: 0}", "data.alpha"),
        ("data: {dataset: imagenet}", "unknown dataset 'imagenet'"),
        ("model: {name: vgg99}", "unknown model 'vgg99'"),
        ("strategy: {name: fedbest}", "unknown strategy 'fedbest'"),
        ("adversary: {victim: 9}", "only 4 clients"),
        ("data: [1, 2", "malformed YAML at line"),
        ("- a\n- b", "mapping of config keys"),
    ],
)
def test_bad_config_is_one_clear_error(tmp_path, text, fragment):
    with pytest.raises(FedsimError) as error:
        load_checked_config(write(tmp_path, text))
    message = str(error.value)
    assert fragment in message and "\n" not in message


def test_set_with_a_bad_assignment_fails_clearly():
    with pytest.raises(FedsimError, match="expected key=value"):
        load_config(None, ["train.rounds"])
    with pytest.raises(FedsimError, match="not a section"):
        load_config(None, ["seed=1", "seed.x=1"])


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["run", "missing.yaml"], "config file not found"),
        (["run", "--set", "data.dataset=nope"], "unknown dataset"),
        (["run", "--set", "data.unknown=1"], "unknown key"),
        (["run", "--set", "data.dataset=mnist", "--set", "data.root=/nonexistent"], "mnist not found under /nonexistent"),
        (["run", "--set", "data.dataset=location", "--set", "data.root=/tmp"], "not found"),
        (["run", "--set", "strategy.name=no.such.module:Strategy"], "cannot import module"),
        (["run", "--set", "data.records_per_client=5000"], "the run needs"),
        (["run", "--set", "faults.client_error_rate=1.5"], "faults.client_error_rate"),
        (["run", "--out", "."], "already exists; continue it with `fedsim run --resume .`, replace it with --force"),
        (["run", "--out", ".", "--force"], "is not a fedsim run folder"),
        (["run", "--resume", "nowhere"], "nowhere: not a fedsim run folder"),
        (["run", "configs/quickstart.yaml", "--resume", "nowhere"], "a resumed run keeps its own config"),
    ],
)
def test_cli_bad_input_exits_2_with_one_line(capsys, argv, fragment):
    assert main(argv) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and fragment in lines[0], captured.err
    assert "Traceback" not in captured.err and captured.out == ""


def test_config_digest_names_the_config(tmp_path):
    import hashlib
    import json

    config = load_config(None, ["seed=3", "train.rounds=4"], default_file=False)
    # app and headline unset, no reconstructions, export and record.clients/references at their defaults are left out: such a config hashes as
    # before those keys existed
    exclude = {"app": True, "headline": True, "export": True, "reconstructions": True, "record": {"clients": True, "references": True}}
    canonical = json.dumps(config.model_dump(mode="json", exclude=exclude), sort_keys=True, separators=(", ", ": "))
    assert config.digest() == hashlib.sha256(canonical.encode()).hexdigest()
    # the same config written with keys in another order, or reached by --set, has the same digest
    dumped = config.model_dump(mode="json")
    reordered = write(tmp_path, json.dumps(dict(reversed(list(dumped.items())))), "reordered.yaml")
    assert load_config(reordered).digest() == config.digest()
    from_set = load_config(write(tmp_path, json.dumps({**dumped, "seed": 0}), "seed0.yaml"), ["seed=3"])
    assert from_set.digest() == config.digest()
    assert load_config(None, ["seed=4", "train.rounds=4"], default_file=False).digest() != config.digest()
    assert load_config(None, ["seed=3", "train.rounds=5"], default_file=False).digest() != config.digest()


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        (["observe_rounds=[0, 5]"], "observe_rounds has round 0"),
        (["observe_rounds=[]"], "observe_rounds is empty"),
        (["adversary.active_rounds=[99]"], "outside 1..20"),
        (["adversary.target_records=1"], "target_records must be at least 2"),
        (["data.nonmembers=2"], "nonmembers must be at least 4"),
        (["adversary.isolate=true", "adversary.role=participant"], "needs adversary.role: server"),
        (["adversary.sent_to=all", "adversary.role=participant", "adversary.mode=gradient-ascent"],
         "adversary.role is participant; set adversary.role: server or sent_to: victim"),
        (["adversary.sent_to=all", "adversary.mode=crafted-model"], "a crafted model traps the victim only"),
    ],
)
def test_inconsistent_settings_are_refused(overrides, fragment):
    with pytest.raises(FedsimError, match=fragment):
        load_config(None, overrides, default_file=False)


def test_non_utf8_config_is_one_line(tmp_path):
    path = tmp_path / "binary.yaml"
    path.write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(FedsimError, match="not UTF-8"):
        load_config(path)


def test_an_unwritable_output_folder_is_one_line(tmp_path, capsys):
    (tmp_path / "a-file").write_text("")
    assert main(["run", "--out", str(tmp_path / "a-file" / "run"), "--set", "train.rounds=1"]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "cannot create" in error and "choose a writable folder" in error
