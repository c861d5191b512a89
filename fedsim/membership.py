"""The membership ledger: which record each client trains on, and which records no one does.

One row per record used by the run (`record_id`, `client`, `member`, `role`, `target`), the
ground truth every attack is scored against. Members are spread over clients with
flwr-datasets' partitioners (IID or Dirichlet over labels); the records no client trains on
form disjoint non-member pools for the attacker's training and for evaluation, and a utility
test split measures accuracy. Everything follows from the config's seed.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from datasets import Dataset
from flwr_datasets.partitioner import DirichletPartitioner, IidPartitioner

from fedsim.config import Config
from fedsim.datasets import Pool
from fedsim.errors import FedsimError
from fedsim.layout import LEDGER

ATTACK_TRAIN, ATTACK_EVAL, UTILITY_TEST = "attack_train", "attack_eval", "utility_test"
COLUMNS = ["record_id", "client", "member", "role", "target"]
FILENAME = LEDGER


def partition_members(ids: np.ndarray, labels: np.ndarray, config: Config) -> list[np.ndarray]:
    """Split member record ids over the clients with a flwr-datasets partitioner."""
    data = config.data
    table = Dataset.from_dict({"record_id": ids, "label": labels})
    if data.partition == "iid":
        partitioner = IidPartitioner(num_partitions=data.num_clients)
    else:
        min_size = max(2, min(10, len(ids) // (4 * data.num_clients)))
        partitioner = DirichletPartitioner(
            num_partitions=data.num_clients, partition_by="label", alpha=data.alpha,
            min_partition_size=min_size, seed=config.seed,
        )
    partitioner.dataset = table
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            parts = [np.asarray(partitioner.load_partition(c)["record_id"], dtype=np.int64) for c in range(data.num_clients)]
    except ValueError as exc:
        raise FedsimError(f"data.alpha: Dirichlet partitioning failed ({exc}); raise data.alpha or lower data.num_clients") from None
    return parts


def _split_roles(ids: np.ndarray, rng: np.random.Generator) -> dict[int, str]:
    """Half of a group for the attacker's training, the other half for evaluation."""
    shuffled = rng.permutation(ids)
    half = len(shuffled) // 2
    return {int(i): ATTACK_TRAIN for i in shuffled[:half]} | {int(i): ATTACK_EVAL for i in shuffled[half:]}


def build_ledger(config: Config, pool: Pool) -> pd.DataFrame:
    """Assign every record of the run a client (or none), a role and whether it is a target."""
    data = config.data
    rng = np.random.default_rng(config.seed)
    wanted_members = data.num_clients * data.records_per_client if data.records_per_client else None
    needed = data.test_records + data.nonmembers + (wanted_members or 2 * data.num_clients)
    if needed > len(pool):
        raise FedsimError(
            f"data: the run needs {needed} records (test_records + nonmembers + num_clients * records_per_client) "
            f"but {data.dataset} has {len(pool)}; lower data.records_per_client, data.nonmembers or data.test_records"
        )
    order = rng.permutation(len(pool))
    test = order[: data.test_records]
    nonmembers = order[data.test_records : data.test_records + data.nonmembers]
    rest = order[data.test_records + data.nonmembers :]
    members = rest[:wanted_members] if wanted_members else rest
    parts = partition_members(members, pool.labels[members].numpy(), config)
    for client, part in enumerate(parts):
        if len(part) < 2:
            raise FedsimError(f"data: client {client} got {len(part)} records; give each client at least 2 (more records or fewer clients)")

    rows = [(int(i), pd.NA, False, UTILITY_TEST) for i in test]
    rows += [(i, pd.NA, False, role) for i, role in _split_roles(nonmembers, rng).items()]
    for client, part in enumerate(parts):
        rows += [(i, client, True, role) for i, role in _split_roles(part, rng).items()]
    ledger = pd.DataFrame(rows, columns=COLUMNS[:-1])
    ledger["client"] = ledger["client"].astype("Int64")
    ledger["target"] = False
    _mark_targets(ledger, config, rng)
    return ledger.sort_values("record_id", ignore_index=True)


def _mark_targets(ledger: pd.DataFrame, config: Config, rng: np.random.Generator) -> None:
    """Targets: balanced evaluation members (the victim's, or the other clients') and non-members."""
    adversary = config.adversary
    if adversary.role == "none" or adversary.target_records == 0:
        return
    per_side = adversary.target_records // 2
    evaluation = ledger["role"] == ATTACK_EVAL
    if adversary.role == "server":
        member_pool = evaluation & (ledger["client"] == adversary.victim).fillna(False)
        whose = f"client {adversary.victim}'s"
    else:
        member_pool = evaluation & ledger["member"] & (ledger["client"] != adversary.victim).fillna(False)
        whose = "the other clients'"
    nonmember_pool = evaluation & ~ledger["member"]
    for pool, what in ((member_pool, f"{whose} evaluation members"), (nonmember_pool, "evaluation non-members")):
        available = ledger.index[pool].to_numpy()
        if len(available) < per_side:
            raise FedsimError(
                f"adversary.target_records: {adversary.target_records} asks for {per_side} of {what} "
                f"but there are {len(available)}; lower adversary.target_records or give the run more records"
            )
        ledger.loc[rng.choice(available, per_side, replace=False), "target"] = True


def save_ledger(ledger: pd.DataFrame, folder: Path) -> Path:
    path = folder / FILENAME
    ledger.to_parquet(path, index=False)
    return path

