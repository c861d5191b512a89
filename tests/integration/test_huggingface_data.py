"""A Hugging Face data set (scikit-learn's digits with a fake writer id, saved with `save_to_disk`)
under each of flwr-datasets' partitioners: the ledger's members are exactly each client's
partition as the flwr partitioner gives it (recomputed here from the documented draw), the
targets stay label-matched, and one short run goes end to end on it."""

from __future__ import annotations

import datasets
import numpy as np
import pandas as pd
import pytest
from flwr_datasets.partitioner import DirichletPartitioner, IidPartitioner, NaturalIdPartitioner, PathologicalPartitioner
from sklearn.datasets import load_digits

from conftest import SMALL, small_config
from fedsim.app.cli import main
from fedsim.app.experiment import prepare
from fedsim.core.errors import FedsimError
from fedsim.learning.datasets import load_pool
from fedsim.recording.run import Run

WRITERS = 6


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """The digits as a Hugging Face data set (x, label, writer), saved to disk; and the columns as written."""
    bunch = load_digits()
    writers = np.random.default_rng(3).choice(WRITERS, len(bunch.target), p=[0.3, 0.25, 0.2, 0.1, 0.1, 0.05])
    columns = {"x": (bunch.data / 16.0).astype(np.float32), "label": bunch.target.astype(np.int64),
               "writer": np.array([f"writer-{w}" for w in writers])}
    folder = tmp_path_factory.mktemp("hf") / "digits"
    datasets.Dataset.from_dict(columns).save_to_disk(str(folder))
    load_pool.cache_clear()
    return folder, columns


def _config(folder, *overrides):
    return small_config("data.dataset=huggingface", f"data.root={folder}", *overrides)


def _expected_parts(config, columns) -> list[set[int]]:
    """What the flwr partitioner makes of the members: the ledger's documented draw (one permutation
    by the seed: test records, then non-members, then num_clients * records_per_client members)."""
    data = config.data
    order = np.random.default_rng(config.seed).permutation(len(columns["label"]))
    rest = order[data.test_records + data.nonmembers:]
    members = rest[: data.num_clients * data.records_per_client] if data.records_per_client else rest
    table = datasets.Dataset.from_dict({"record_id": members, "label": columns["label"][members], "writer": columns["writer"][members].tolist()})
    partitioner = {
        "iid": lambda: IidPartitioner(num_partitions=data.num_clients),
        "dirichlet": lambda: DirichletPartitioner(num_partitions=data.num_clients, partition_by="label", alpha=data.alpha,
                                                  min_partition_size=10, seed=config.seed),
        "shard": lambda: PathologicalPartitioner(num_partitions=data.num_clients, partition_by="label",
                                                 num_classes_per_partition=data.classes_per_client,
                                                 class_assignment_mode="first-deterministic", seed=config.seed),
        "natural": lambda: NaturalIdPartitioner(partition_by="writer"),
    }[data.partition]()
    partitioner.dataset = table
    return [set(partitioner.load_partition(c)["record_id"]) for c in range(data.num_clients)]


PARTITIONS = {
    "iid": [],
    "dirichlet": ["data.partition=dirichlet", "data.alpha=0.3"],
    "shard": ["data.partition=shard", "data.classes_per_client=3", "data.nonmembers=400", "adversary.target_records=60"],
    "natural": ["data.partition=natural", "data.partition_by=writer", f"data.num_clients={WRITERS}", "data.records_per_client=null"],
}


@pytest.mark.filterwarnings("ignore:Classes.*will NOT be used:UserWarning")  # shard: classes no client drew (the run notes them)
@pytest.mark.parametrize("partition", sorted(PARTITIONS))
def test_the_ledgers_members_are_exactly_the_flwr_partitions(saved, partition):
    folder, columns = saved
    config = _config(folder, *PARTITIONS[partition])
    notes: list[str] = []
    ledger, _, _ = prepare(config, notes)
    members = ledger[ledger["member"]]
    got = [set(members.loc[members["client"] == c, "record_id"]) for c in range(config.data.num_clients)]
    assert got == _expected_parts(config, columns)
    assert all(len(part) >= 2 for part in got) and ledger["record_id"].is_unique
    if partition == "shard":  # three classes per client, as asked
        assert [len(set(columns["label"][list(part)])) for part in got] == [3] * config.data.num_clients
    if partition == "natural":  # one writer per client, the c-th smallest id
        assert [set(columns["writer"][list(part)]) for part in got] == [{f"writer-{w}"} for w in range(WRITERS)]
    targets = ledger[ledger["target"]]
    counts = pd.crosstab(columns["label"][targets["record_id"]], targets["member"].to_numpy())
    assert len(targets) >= 20 and (counts[True] == counts[False]).all()  # members and non-members label-matched


def test_impossible_partitions_are_one_line(saved):
    folder, _ = saved
    with pytest.raises(FedsimError, match=r"^data.classes_per_client: shard partitioning failed \(The specified `num_classes_per_partition`=11 is "
                                          r"greater than the number of unique classes in the given dataset=10.*\); lower data.classes_per_client"):
        prepare(_config(folder, "data.partition=shard", "data.classes_per_client=11"))
    config = _config(folder, "data.partition=natural", "data.partition_by=writer", "data.num_clients=4")
    with pytest.raises(FedsimError, match=r"^data.num_clients: natural partitioning gives one client per 'writer' value and huggingface "
                                          r"has 6, but data.num_clients is 4; set data.num_clients: 6$"):
        prepare(config)
    with pytest.raises(FedsimError, match=r"^data.partition: natural needs each record's writer/user id, which dataset 'digits' does not give"):
        prepare(small_config("data.partition=natural", "data.partition_by=writer"))


def test_a_short_run_on_the_saved_data_set_end_to_end(saved, tmp_path):
    folder, columns = saved
    settings = [*PARTITIONS["natural"], "data.dataset=huggingface", f"data.root={folder}", "data.nonmembers=200"]
    expected, _, _ = prepare(_config(folder, *settings))
    out = tmp_path / "run"
    assert main(["run", "--out", str(out), "--quiet", *[f"--set={s}" for s in (*SMALL, *settings)]]) == 0
    run = Run.open(out)
    assert run.status == "complete" and run.rounds == [0, 1, 2] and run.config.data.partition == "natural"
    pd.testing.assert_frame_equal(run.membership, expected)
    x, y = run.records([0, 7])
    np.testing.assert_array_equal(x.numpy(), columns["x"][[0, 7]])
    np.testing.assert_array_equal(y.numpy(), columns["label"][[0, 7]])
    assert {int(c) for c in run.clients(2)} == set(range(WRITERS))
    leakage = run.table("metrics/leakage.csv")
    assert set(leakage["attack"]) == {"loss"} and leakage["n_members"].gt(0).all()
