"""Integration: the real Flower simulation on the Ray engine, on real data; the in-process engine records the same bytes."""

import subprocess
import sys

import pandas as pd
import pytest
import torch

from conftest import shared_data, small_config
from fedsim import Run
from fedsim.cli import main
from fedsim.experiment import run_experiment
from fedsim.layout import LEAKAGE_SEEDS_COLUMNS
from fedsim.recorder import LEAKAGE_COLUMNS, global_file, is_report_file

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def digits_runs(tmp_path_factory):
    """The same small digits config, run twice with the same seed: on Ray, then on the in-process engine."""
    base = tmp_path_factory.mktemp("digits")
    settings = ("train.rounds=3", "data.num_clients=3", "attacks=[loss, trajectory, nasr]")
    return [run_experiment(small_config(*settings, f"backend.engine={engine}"), base / f"run-{engine}") for engine in ("ray", "in-process")]


def test_same_seed_gives_identical_recorded_bytes_on_ray_and_in_process(digits_runs):
    first, second = (Run.open(folder) for folder in digits_runs)
    assert first.status == second.status == "complete" and first.rounds == [0, 1, 2, 3]
    for round_number in first.rounds:
        assert (first.folder / global_file(round_number)).read_bytes() == (second.folder / global_file(round_number)).read_bytes()
    records = [{k: v for k, v in run.manifest["files"].items() if not k.startswith("metrics/") and not is_report_file(k)}
               for run in (first, second)]
    assert records[0] == records[1]  # the same sha256 for every record (metrics, and the report from them, carry wall times)


def test_global_model_is_the_example_weighted_average_of_recorded_clients(digits_runs):
    run = Run.open(digits_runs[0])
    for round_number in run.rounds[1:]:
        clients = run.clients(round_number)
        assert clients == [0, 1, 2]
        weights = torch.tensor([run.num_examples(round_number, c) for c in clients], dtype=torch.float64)
        weights /= weights.sum()
        expected = run.state(round_number)
        for name, tensor in expected.items():
            average = sum(w * run.state(round_number, c)[name].double() for w, c in zip(weights, clients))
            torch.testing.assert_close(tensor.double(), average, rtol=0, atol=1e-6)
        assert not torch.equal(run.state(round_number, 0)[name], run.state(round_number, 1)[name])


def test_fedsim_attack_reproduces_the_leakage_rows_of_the_run(digits_runs, tmp_path, capsys):
    folder = digits_runs[0]
    assert main(["attack", str(folder), "--out", str(tmp_path / "again.csv")]) == 0
    written = pd.read_csv(folder / "metrics/leakage.csv")
    assert len(written) == 3 * 3 and set(written["attack"]) == {"loss", "trajectory", "nasr"}
    assert set(written["target"]) == {"client-000"} and written["observed_rounds"].iloc[-1] == "1;2;3"
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "again.csv"), written)


def test_run_folder_follows_the_contract(digits_runs):
    folder = digits_runs[0]
    training = pd.read_csv(folder / "metrics/training.csv")
    assert training["round"].tolist() == [0, 1, 2, 3] and training["test_accuracy"].between(0, 1).all()
    assert list(pd.read_csv(folder / "metrics/leakage.csv").columns)[: len(LEAKAGE_COLUMNS)] == LEAKAGE_COLUMNS
    assert (folder / "metrics/roc.csv").is_file() and (folder / "metrics/leakage_per_class.csv").is_file()
    seeds = pd.read_csv(folder / "metrics/leakage_seeds.csv")
    assert list(seeds.columns) == LEAKAGE_SEEDS_COLUMNS and set(seeds.loc[seeds["attack"] == "nasr", "seed"]) == {0, 1, 2}
    membership = pd.read_parquet(folder / "membership.parquet")
    assert list(membership.columns) == ["record_id", "client", "member", "role", "target"]
    assert (folder / "config.yaml").is_file() and (folder / "rounds/0003/clients/client-002.safetensors").is_file()


@pytest.mark.parametrize(
    ("dataset", "overrides"),
    [
        ("mnist", ["model.name=mnist_cnn", "model.args={}", "train.lr=0.05"]),
        ("location", ["train.lr=0.1", "data.records_per_client=300", "train.local_epochs=3", "model.args={hidden: [128]}"]),
    ],
)
def test_real_data_sets_learn_in_a_federated_run(tmp_path, dataset, overrides):
    root = shared_data("MNIST").parent if dataset == "mnist" else shared_data("location")
    config = small_config(f"data.dataset={dataset}", f"data.root={root}", "data.test_records=500", "train.rounds=3", *overrides)
    run = Run.open(run_experiment(config, tmp_path / dataset))
    training = pd.read_csv(run.folder / "metrics/training.csv")
    chance = 1 / run.pool.num_classes
    assert run.status == "complete" and training["test_accuracy"].iloc[-1] > 2 * chance, training


def test_cli_prints_the_run_folder_last(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "fedsim.cli", "run", "--out", str(tmp_path / "cli"), "--set", "train.rounds=1",
         "--set", "data.records_per_client=50", "--set", "adversary.target_records=40", "--set", "model.args={hidden: [16]}"],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == str(tmp_path / "cli")
    assert "round   1/1" in result.stderr and "Traceback" not in result.stderr


def test_a_write_failing_mid_run_is_one_clear_error_and_the_run_is_marked_failed(tmp_path, monkeypatch):
    import errno

    import fedsim.recorder as recorder_module
    from fedsim.errors import FedsimError

    write = recorder_module.write_atomically

    def full_disk_in_round_2(path, payload):
        if "0002" in str(path):
            raise OSError(errno.ENOSPC, "No space left on device")
        write(path, payload)

    monkeypatch.setattr(recorder_module, "write_atomically", full_disk_in_round_2)
    with pytest.raises(FedsimError, match="cannot write round 2 .*No space left on device"):
        run_experiment(small_config("train.rounds=3"), tmp_path / "run")
    run = Run.open(tmp_path / "run")
    assert run.status == "failed" and run.rounds == [0, 1] and "No space left" in run.manifest["error"]
