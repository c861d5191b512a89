"""Integration: the real Flower simulation on the Ray engine, on real data; the in-process engine records the same bytes."""

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import roc_auc_score, roc_curve

from conftest import shared_data, small_config
from fedsim import Run
from fedsim.app.cli import main
from fedsim.app.experiment import run_experiment
from fedsim.core.layout import LEAKAGE_SEEDS_COLUMNS
from fedsim.learning.membership import UTILITY_TEST
from fedsim.recording.recorder import LEAKAGE_COLUMNS, global_file, is_report_file

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def digits_runs(tmp_path_factory):
    """The same small digits config (3 local epochs), run twice with the same seed: on Ray, then on the in-process engine."""
    base = tmp_path_factory.mktemp("digits")
    settings = ("train.rounds=3", "data.num_clients=3", "train.local_epochs=3", "attacks=[loss, trajectory, nasr]")
    return [run_experiment(small_config(*settings, f"backend.engine={engine}"), base / f"run-{engine}") for engine in ("ray", "in-process")]


def test_same_seed_gives_identical_recorded_bytes_on_ray_and_in_process(digits_runs):
    first, second = (Run.open(folder) for folder in digits_runs)
    assert first.status == second.status == "complete" and first.rounds == [0, 1, 2, 3]
    for round_number in first.rounds:
        assert (first.folder / global_file(round_number)).read_bytes() == (second.folder / global_file(round_number)).read_bytes()
    records = [{k: v for k, v in run.manifest.files.items() if not k.startswith("metrics/") and not is_report_file(k) and k != "config.yaml"}
               for run in (first, second)]
    assert records[0] == records[1]  # the same sha256 for every record (metrics, and the report from them, carry wall times)
    configs = [(run.folder / "config.yaml").read_text().replace(f"engine: {engine}\n", "engine: ENGINE\n")
               for run, engine in ((first, "ray"), (second, "in-process"))]
    assert configs[0] == configs[1]  # the configs differ only in backend.engine


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
    assert list(pd.read_csv(folder / "metrics/leakage.csv").columns)[: len(LEAKAGE_COLUMNS)] == LEAKAGE_COLUMNS
    seeds = pd.read_csv(folder / "metrics/leakage_seeds.csv")
    assert list(seeds.columns) == LEAKAGE_SEEDS_COLUMNS and set(seeds.loc[seeds["attack"] == "nasr", "seed"]) == {0, 1, 2}
    membership = pd.read_parquet(folder / "membership.parquet")
    assert list(membership.columns) == ["record_id", "client", "member", "role", "target"]
    assert (folder / "config.yaml").is_file() and (folder / "rounds/0003/clients/client-002.safetensors").is_file()


def test_training_rows_are_the_recorded_global_models_on_the_utility_test_records(digits_runs):
    """Each training.csv row recomputed here: the round's recorded global model on the ledger's utility
    test records; the model learns."""
    run = Run.open(digits_runs[0])
    training = pd.read_csv(run.folder / "metrics/training.csv")
    assert training["round"].tolist() == [0, 1, 2, 3]
    ledger = run.membership
    x, y = run.records(ledger.loc[ledger["role"] == UTILITY_TEST, "record_id"].to_numpy())
    assert len(y) == 100
    for row in training.itertuples():
        with torch.no_grad():
            logits = run.model(row.round)(x)
        assert row.test_accuracy == pytest.approx((logits.argmax(1) == y).double().mean().item(), abs=1e-6), row
        assert row.test_loss == pytest.approx(torch.nn.functional.cross_entropy(logits, y).item(), abs=1e-5), row
    # the global model learns (tests/test_report.py checks a run with the quickstart's learning rate
    # against twice chance: the digits variant of the real-data test below)
    assert training["test_loss"].iloc[-1] < training["test_loss"].iloc[0], training
    assert training["test_accuracy"].iloc[-1] > training["test_accuracy"].iloc[0], training


def test_leakage_tables_hold_together_and_the_loss_rows_equal_a_recomputation(digits_runs):
    """Every round's interval holds its AUC; roc.csv runs from (0, 0) to (1, 1) for every attack; the
    per-class counts are the targets' counts by class and sum to the row's totals; the loss attack's
    ROC and per-class AUCs equal scikit-learn's on minus the victim's last recorded model's loss."""
    run = Run.open(digits_runs[0])
    leakage, roc, per_class = (run.table(f"metrics/{name}.csv") for name in ("leakage", "roc", "leakage_per_class"))
    assert sorted(set(leakage["round"])) == [1, 2, 3]
    assert (leakage["auc_ci_low"] <= leakage["auc"]).all() and (leakage["auc"] <= leakage["auc_ci_high"]).all()
    assert (leakage["auc_ci_low"] < leakage["auc_ci_high"]).all()

    targets = run.membership[run.membership["target"]]
    ids, members = targets["record_id"].to_numpy(), targets["member"].to_numpy(bool)
    x, y = run.records(ids)
    with torch.no_grad():
        scores = -torch.nn.functional.cross_entropy(run.model(3, client=0)(x), y, reduction="none").double().numpy()
    labels = y.numpy()
    counts = pd.crosstab(labels, members)
    both = counts[(counts[True] > 0) & (counts[False] > 0)]
    assert set(roc["attack"]) == set(per_class["attack"]) == {"loss", "trajectory", "nasr"}
    for attack in ("loss", "trajectory", "nasr"):
        curve = roc[roc["attack"] == attack]
        assert curve[["fpr", "tpr"]].iloc[0].tolist() == [0, 0] and curve[["fpr", "tpr"]].iloc[-1].tolist() == [1, 1]
        assert curve["fpr"].is_monotonic_increasing and curve["tpr"].is_monotonic_increasing
        last = leakage[(leakage["attack"] == attack) & (leakage["round"] == 3)].iloc[0]
        classes = per_class[per_class["attack"] == attack].set_index("class")
        assert classes["n_members"].to_dict() == both[True].to_dict()
        assert classes["n_nonmembers"].to_dict() == both[False].to_dict()
        assert counts[True].sum() == last["n_members"] == members.sum()
        assert counts[False].sum() == last["n_nonmembers"] == (~members).sum()
    fpr, tpr, _ = roc_curve(members, scores, drop_intermediate=False)
    curve = roc[roc["attack"] == "loss"]
    np.testing.assert_allclose(curve["fpr"], fpr, atol=1e-6)
    np.testing.assert_allclose(curve["tpr"], tpr, atol=1e-6)
    for label, row in per_class[per_class["attack"] == "loss"].set_index("class").iterrows():
        mask = labels == label
        assert row["auc"] == pytest.approx(roc_auc_score(members[mask], scores[mask]), abs=1e-6), label
    loss_row = leakage[(leakage["attack"] == "loss") & (leakage["round"] == 3)].iloc[0]
    assert loss_row["auc"] == pytest.approx(roc_auc_score(members, scores), abs=1e-6)


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
    # the quickstart on its default engine, from a folder that is not the project's, --out relative to it
    result = subprocess.run(
        [sys.executable, "-m", "fedsim.app.cli", "run", "--out", "cli", "--set", "train.rounds=1",
         "--set", "data.records_per_client=50", "--set", "adversary.target_records=40", "--set", "model.args={hidden: [16]}", "--set", "attacks=[loss]"],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / result.stdout.strip().splitlines()[-1]).resolve() == (tmp_path / "cli").resolve()
    assert Run.open(tmp_path / "cli").status == "complete"
    assert "round   1/1" in result.stderr and "Traceback" not in result.stderr


def test_a_write_failing_mid_run_is_one_clear_error_and_the_run_is_marked_failed(tmp_path, monkeypatch):
    import errno

    import fedsim.recording.recorder as recorder_module
    from fedsim.core.errors import FedsimError

    write = recorder_module.write_atomically

    def full_disk_in_round_2(path, payload):
        if "0002" in str(path):
            raise OSError(errno.ENOSPC, "No space left on device")
        write(path, payload)

    monkeypatch.setattr(recorder_module, "write_atomically", full_disk_in_round_2)
    with pytest.raises(FedsimError, match="cannot write round 2 .*No space left on device"):
        run_experiment(small_config("train.rounds=3"), tmp_path / "run")
    run = Run.open(tmp_path / "run")
    assert run.status == "failed" and run.rounds == [0, 1] and "No space left" in (run.manifest.error or "")
