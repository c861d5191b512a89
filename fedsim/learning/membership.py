"""The membership ledger: which record each client trains on, and which records no one does.

One row per record used by the run (`record_id`, `client`, `member`, `role`, `target`), the
ground truth every attack is scored against. Members are spread over clients with
flwr-datasets' partitioners (IID, Dirichlet over labels, k classes per client, or one client per
writer/user id); the records no client trains on
form disjoint non-member pools for the attacker's training and for evaluation, and a utility
test split measures accuracy. Everything follows from the config's seed.

Under label skew (Dirichlet, shards) a client's members come from few classes; non-members drawn from
all classes would let the label alone answer "member?". So the non-members an attack is
scored on, and those its attacker knows, are drawn stratified by label to match the members
they are compared with (`match_labels`); a class short of non-members gets fewer targets.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from datasets import Dataset
from flwr_datasets.partitioner import DirichletPartitioner, IidPartitioner, NaturalIdPartitioner, PathologicalPartitioner

from fedsim.core.config import Config
from fedsim.core.errors import FedsimError
from fedsim.core.layout import LEDGER
from fedsim.learning.datasets import Pool

ATTACK_TRAIN, ATTACK_EVAL, UTILITY_TEST, CANARY = "attack_train", "attack_eval", "utility_test", "canary"
COLUMNS = ["record_id", "client", "member", "role", "target"]
FILENAME = LEDGER


GROUP = "group"  # the partitioner's column of writer/user ids (natural-ID partitioning)


def partition_members(ids: np.ndarray, labels: np.ndarray, config: Config, groups: np.ndarray | None = None) -> list[np.ndarray]:
    """Split member record ids over the clients with a flwr-datasets partitioner.

    The partitioner sees a table of the members in the order given (`record_id`, `label`, and
    `group` under natural-ID partitioning) and client c gets exactly its partition c:

    - `iid`: `IidPartitioner`;
    - `dirichlet`: `DirichletPartitioner` by label (`data.alpha`, seeded by `seed`);
    - `shard`: `PathologicalPartitioner` by label, `data.classes_per_client` classes per client,
      the first deterministic (client c gets class c mod K), the rest drawn with `seed`; members
      of a class no client draws are left out of the run;
    - `natural`: `NaturalIdPartitioner` by `groups`; client c holds the c-th smallest id.

    Parameters
    ----------
    ids : numpy.ndarray
        Member record ids, shape (n,).
    labels : numpy.ndarray
        Their labels, shape (n,).
    config : Config
        The run's config (`data.partition`, `data.num_clients` and the partitioner's settings; `seed`).
    groups : numpy.ndarray, optional
        Their writer/user ids, shape (n,); needed by `natural`.

    Returns
    -------
    list of numpy.ndarray
        Record ids per client, partition id = list index.

    Raises
    ------
    FedsimError
        A partitioner that cannot split the members as configured: one line naming the key to change.
    """
    data = config.data
    columns = {"record_id": ids, "label": labels}
    if data.partition == "iid":
        partitioner = IidPartitioner(num_partitions=data.num_clients)
        key, fix = "data.num_clients", "lower data.num_clients"
    elif data.partition == "dirichlet":
        min_size = max(2, min(10, len(ids) // (4 * data.num_clients)))
        partitioner = DirichletPartitioner(
            num_partitions=data.num_clients, partition_by="label", alpha=data.alpha,
            min_partition_size=min_size, seed=config.seed,
        )
        key, fix = "data.alpha", "raise data.alpha or lower data.num_clients"
    elif data.partition == "shard":
        partitioner = PathologicalPartitioner(
            num_partitions=data.num_clients, partition_by="label", num_classes_per_partition=data.classes_per_client,
            class_assignment_mode="first-deterministic", seed=config.seed,
        )
        key, fix = "data.classes_per_client", "lower data.classes_per_client or data.num_clients"
    else:
        if groups is None:
            raise FedsimError(f"data.partition: natural needs each record's writer/user id, which dataset {data.dataset!r} does not give; "
                              "use dataset huggingface (or a loader returning a datasets.Dataset) with data.partition_by")
        found = len(np.unique(groups))
        if found != data.num_clients:
            raise FedsimError(f"data.num_clients: natural partitioning gives one client per {data.partition_by!r} value and the members "
                              f"hold {found}, but data.num_clients is {data.num_clients}; set data.num_clients: {found} (or give every "
                              "id members: set data.records_per_client: null, lower data.test_records or data.nonmembers)")
        columns[GROUP] = groups.tolist()
        partitioner = NaturalIdPartitioner(partition_by=GROUP)
        key, fix = "data.partition_by", "check the column"
    partitioner.dataset = Dataset.from_dict(columns)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):  # NaturalIdPartitioner draws a progress bar
            warnings.simplefilter("ignore")
            parts = _partitions(partitioner, data.num_clients, np.asarray(ids, dtype=np.int64))
    except ValueError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise FedsimError(f"{key}: {data.partition} partitioning failed ({first}); {fix}") from None
    return parts


def _partitions(partitioner, count: int, ids: np.ndarray) -> list[np.ndarray]:
    """Every partition's record ids, `partitioner.load_partition(c)["record_id"]` for each client c, at once.

    `load_partition` builds a Hugging Face dataset per client (about 20 ms each: 20 s for 1,000
    clients), while the rows it selects are known without it. The first partition is loaded as the
    partitioner would (its checks and draws happen there); then IID's contiguous shards are
    `datasets.Dataset.shard`'s arithmetic (`numpy.array_split`), and the other partitioners' rows
    the index lists they drew for every partition at once. A partitioner without those lists is
    asked partition by partition.
    """
    first = np.asarray(partitioner.load_partition(0)["record_id"], dtype=np.int64)
    if isinstance(partitioner, IidPartitioner):
        return np.array_split(ids, count)
    drawn = getattr(partitioner, "_partition_id_to_indices", None)
    if not isinstance(drawn, dict) or sorted(drawn) != list(range(count)):
        return [first, *(np.asarray(partitioner.load_partition(c)["record_id"], dtype=np.int64) for c in range(1, count))]
    return [ids[np.asarray(drawn[c], dtype=np.int64)] for c in range(count)]


def _split_roles(ids: np.ndarray, rng: np.random.Generator) -> dict[int, str]:
    """Half of a group for the attacker's training, the other half for evaluation."""
    shuffled = rng.permutation(ids)
    half = len(shuffled) // 2
    return {int(i): ATTACK_TRAIN for i in shuffled[:half]} | {int(i): ATTACK_EVAL for i in shuffled[half:]}


def match_labels(members: np.ndarray, candidates: np.ndarray, labels: np.ndarray,
                 rng: np.random.Generator, per_member: int = 1) -> tuple[np.ndarray, np.ndarray, dict[int, tuple[int, int]]]:
    """Non-members stratified by label to match members, class by class.

    For each label (in increasing order) as many candidates are drawn without replacement as
    there are members with that label; where the candidates of a label are fewer, all of them
    are taken and the same number of that label's members is kept (drawn at random), so both
    sides always have the same label counts.

    Parameters
    ----------
    members : np.ndarray
        Record ids of the members, shape (n_members,).
    candidates : np.ndarray
        Record ids the non-members are drawn from, shape (n_candidates,).
    labels : np.ndarray
        The label of every record of the pool, indexed by record id, shape (n_pool,).
    rng : np.random.Generator
        The only source of randomness.
    per_member : int
        Non-members drawn per member of the same label (1: equally many; more: many non-member
        targets from few members, the label distribution still matched).

    Returns
    -------
    tuple of (np.ndarray, np.ndarray, dict)
        The members kept and the non-members drawn (record ids, sorted, `per_member` times as many), and for
        each label short of candidates `{label: (members, candidates available)}`.
    """
    members, candidates = np.asarray(members, dtype=np.int64), np.asarray(candidates, dtype=np.int64)
    kept, drawn, short = [], [], {}
    for label in np.unique(labels[members]):
        inside = members[labels[members] == label]
        outside = candidates[labels[candidates] == label]
        n = min(len(inside), len(outside) // per_member)
        if n < len(inside):
            short[int(label)] = (len(inside), len(outside))
            inside = rng.choice(inside, n, replace=False)
        kept.append(inside)
        drawn.append(rng.choice(outside, n * per_member, replace=False))
    empty = np.empty(0, dtype=np.int64)
    return (np.sort(np.concatenate(kept)) if kept else empty), (np.sort(np.concatenate(drawn)) if drawn else empty), short


def per_member_fit(members: np.ndarray, candidates: np.ndarray, labels: np.ndarray, wanted: int) -> int:
    """The non-members per member (at most `wanted`) that `match_labels` turns into the most targets.

    Asking a class for more non-members per member than it holds drops its members; fewer per
    member keeps them. Of the k in 1..wanted, the one with the most targets (members kept plus
    k non-members each), the largest among equals: `wanted` itself whenever every class holds
    enough.

    Parameters
    ----------
    members, candidates : numpy.ndarray
        Record ids of the member targets and of the non-members they are matched from.
    labels : numpy.ndarray
        The label of every record of the pool, indexed by record id.
    wanted : int
        The non-members per member the target count asks for.

    Returns
    -------
    int
        k, 1 <= k <= wanted.
    """
    classes, inside = np.unique(labels[np.asarray(members, dtype=np.int64)], return_counts=True)
    outside = np.array([int((labels[np.asarray(candidates, dtype=np.int64)] == c).sum()) for c in classes])
    k = np.arange(1, wanted + 1)
    targets = np.minimum(inside[None, :], outside[None, :] // k[:, None]).sum(axis=1) * (1 + k)
    return int(k[np.flatnonzero(targets == targets.max())[-1]])


def describe_shortfall(short: dict[int, tuple[int, int]], limit: int = 5) -> str:
    """'class 3: 40 members, 12 non-members; ...' for the first `limit` classes short of non-members."""
    shown = [f"class {c}: {m} members, {n} non-members" for c, (m, n) in sorted(short.items())[:limit]]
    return "; ".join(shown) + (f"; {len(short) - limit} more classes" if len(short) > limit else "")


def build_ledger(config: Config, pool: Pool, notes: list[str] | None = None) -> pd.DataFrame:
    """Assign every record of the run a client (or none), a role and whether it is a target.

    Parameters
    ----------
    config : Config
        The run's config (data split, adversary, seed).
    pool : Pool
        Every record of the data set.
    notes : list of str, optional
        Where one-line notes for the user go (e.g. fewer targets than asked, and why).

    Returns
    -------
    pd.DataFrame
        One row per record of the run, columns `COLUMNS`, sorted by record id.

    Raises
    ------
    FedsimError
        When the data set or the clients' shares are too small for the config.
    """
    data = config.data
    if data.partition == "natural" and pool.groups is not None and len(np.unique(pool.groups)) != data.num_clients:
        raise FedsimError(f"data.num_clients: natural partitioning gives one client per {data.partition_by!r} value and {data.dataset} "
                          f"has {len(np.unique(pool.groups))}, but data.num_clients is {data.num_clients}; "
                          f"set data.num_clients: {len(np.unique(pool.groups))}")
    rng = np.random.default_rng(config.seed)
    wanted_members = data.num_clients * data.records_per_client if data.records_per_client else None
    needed = data.test_records + data.nonmembers + (wanted_members or 2 * data.num_clients) + config.audit.canaries
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
    if config.audit.canaries:
        if not wanted_members:
            raise FedsimError("audit.canaries need records no one else uses: set data.records_per_client")
    groups = pool.groups[members] if pool.groups is not None else None
    parts = partition_members(members, pool.labels[members].numpy(), config, groups)
    canaries = rest[len(rest) - config.audit.canaries:] if config.audit.canaries else None
    if data.partition == "shard" and notes is not None and sum(len(p) for p in parts) < len(members):
        notes.append(f"data.partition shard: {len(members) - sum(len(p) for p in parts)} of {len(members)} member records belong to "
                     "classes no client drew and are left out of the run; raise data.num_clients or data.classes_per_client to use them")
    return ledger_from_parts(config, parts, nonmembers, test, pool.labels.numpy(), rng, notes, canaries)


def ledger_from_parts(config: Config, parts: list[np.ndarray], nonmembers: np.ndarray, test: np.ndarray, labels: np.ndarray,
                      rng: np.random.Generator, notes: list[str] | None = None, canaries: np.ndarray | None = None) -> pd.DataFrame:
    """The ledger of a federation whose clients' records are given: `parts[c]` are client c's
    members (exactly what it trains on), `nonmembers` the records no client trains on (split
    between the attacker's training and evaluation), `test` the utility test split.

    `build_ledger` draws these from a pool; an audited Flower app or a partitioned Hugging Face
    data set gives them, and the roles and targets follow the same rules (label-matched).

    Parameters
    ----------
    config : Config
        The run's config (adversary, seed, canaries).
    parts : list of numpy.ndarray
        Record ids per client, partition id = list index.
    nonmembers, test : numpy.ndarray
        Record ids no client trains on, and those reserved to measure utility.
    labels : numpy.ndarray
        The label of every record, indexed by record id.
    rng : numpy.random.Generator
        Draws the attacker/evaluation halves and the targets.
    notes : list of str, optional
        Where one-line notes for the user go.
    canaries : numpy.ndarray, optional
        Canary record ids (each in the victim's data with probability 1/2).

    Returns
    -------
    pandas.DataFrame
        One row per record, columns `COLUMNS`, sorted by record id.

    Raises
    ------
    FedsimError
        A client with fewer than 2 records, or too few records for the targets.
    """
    for client, part in enumerate(parts):
        if len(part) < 2:
            raise FedsimError(f"data: client {client} got {len(part)} records; give each client at least 2 (more records or fewer clients)")

    rows = [(int(i), pd.NA, False, UTILITY_TEST) for i in test]
    rows += [(i, pd.NA, False, role) for i, role in _split_roles(nonmembers, rng).items()]
    for client, part in enumerate(parts):
        rows += [(i, client, True, role) for i, role in _split_roles(part, rng).items()]
    if canaries is not None:  # drawn after everything else, so a run without canaries keeps its ledger
        included = np.random.default_rng([config.seed, 15]).random(len(canaries)) < 0.5
        rows += [(int(i), config.adversary.victim if inside else pd.NA, bool(inside), CANARY) for i, inside in zip(canaries, included)]
    ledger = pd.DataFrame(rows, columns=COLUMNS[:-1])
    ledger["client"] = ledger["client"].astype("Int64")
    ledger["target"] = False
    _mark_targets(ledger, config, rng, labels, notes if notes is not None else [])
    return ledger.sort_values("record_id", ignore_index=True)


def _mark_targets(ledger: pd.DataFrame, config: Config, rng: np.random.Generator, labels: np.ndarray, notes: list[str]) -> None:
    """Targets: evaluation members (the victim's, or the other clients'), and as many evaluation
    non-members with the same label counts (`match_labels`). When the members run short of
    `target_records // 2`, all of them are targets and the non-members make up the count, k of
    them per member with each member's label (k = (target_records - members) // members, still
    label-matched), up to every evaluation record: many non-member targets (>= 1/FPR, to measure
    a TPR at that FPR) then need no more members.
    """
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
    available = ledger.loc[member_pool, "record_id"].to_numpy()
    candidates = ledger.loc[evaluation & ~ledger["member"], "record_id"].to_numpy()
    if not len(available) or len(available) + len(candidates) < 2 * per_side:
        raise FedsimError(
            f"adversary.target_records: {adversary.target_records} asks for {2 * per_side} targets but there are "
            f"{len(available)} of {whose} evaluation members and {len(candidates)} evaluation non-members; "
            "lower adversary.target_records or give the run more records"
        )
    if len(available) >= per_side:
        members, nonmembers, short = match_labels(rng.choice(available, per_side, replace=False), candidates, labels, rng)
    else:  # every member is a target; k label-matched non-members per member make up the count, as far as their classes allow
        k = per_member_fit(available, candidates, labels, max(1, (2 * per_side - len(available)) // len(available)))
        members, nonmembers, short = match_labels(available, candidates, labels, rng, per_member=k)
    if not len(members):
        raise FedsimError(
            f"adversary.target_records: no evaluation non-member shares a label with {whose} member targets "
            f"({describe_shortfall(short)}); raise data.nonmembers (now {config.data.nonmembers}) so the non-members hold these classes"
        )
    if short or len(members) + len(nonmembers) < 2 * per_side:
        why = (f"the evaluation non-members run short ({describe_shortfall(short)})" if short else
               f"{len(members)} member targets, {len(nonmembers) // len(members)} non-members each, as many as their classes hold")
        notes.append(
            f"adversary.target_records: {len(members) + len(nonmembers)} targets instead of {2 * per_side}: non-member targets match the labels "
            f"of {whose} member targets, and {why}; raise data.nonmembers for more"
        )
    ledger.loc[ledger["record_id"].isin(np.concatenate([members, nonmembers])), "target"] = True


def attacker_known(ledger: pd.DataFrame, config: Config) -> pd.Series:
    """The records the adversary knows the membership of: `attack_train` records of its targets'
    side (the victim's members for the server, the other clients' for a participant) and
    `attack_train` non-members.

    Returns
    -------
    pd.Series
        `(n_records,)` booleans aligned with `ledger`.
    """
    adversary = config.adversary
    client = ledger["client"]
    if adversary.role == "server":
        member_side = (client == adversary.victim).fillna(False)
    else:
        member_side = (ledger["member"] & (client != adversary.victim)).fillna(False)
    return (ledger["role"] == ATTACK_TRAIN) & (member_side | ~ledger["member"])


def client_records(ledger: pd.DataFrame) -> dict[int, np.ndarray]:
    """Each client's training records, in the order its ClientApp reads them.

    Parameters
    ----------
    ledger : pandas.DataFrame
        The run's membership ledger.

    Returns
    -------
    dict of int to numpy.ndarray
        Partition id -> `(n_records,)` record ids (ledger order within the client).
    """
    members = ledger[ledger["member"]]
    return {int(c): group["record_id"].to_numpy() for c, group in members.groupby("client")}


def save_ledger(ledger: pd.DataFrame, folder: Path) -> Path:
    path = folder / FILENAME
    ledger.to_parquet(path, index=False)
    return path

