"""Cross-device scale: whose parameters a round keeps (record.clients), the victim's rounds, refusals
of attacks the recording cannot serve, and a server whose per-round work follows the clients
sampled, not the clients connected."""

from __future__ import annotations

import cProfile
import json
import pstats

import pytest
import torch
from flwr.app import ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from attackers.inference.registry import check_attacks_on
from conftest import small_config
from fedsim.app.cli import main
from fedsim.core.config import StrategyConfig
from fedsim.core.errors import FedsimError
from fedsim.core.messages import CLIENT_RECORD, PARTITION_KEY, array_record
from fedsim.engine.inprocess import run_in_process
from fedsim.engine.server_app import ServerPlan, make_server_app
from fedsim.learning.datasets import pool_for
from fedsim.learning.membership import build_ledger, save_ledger
from fedsim.learning.models import model_for
from fedsim.recording.recorder import Recorder, kept_clients
from fedsim.recording.run import Run
from strategies.registry import build_strategy

STATE = {"w": torch.arange(3, dtype=torch.float32)}
HEARD = (2, 0, 5, 3, 6)  # the victim (0) among them, in no order


def _recorder(tmp_path, *overrides: str) -> Recorder:
    config = small_config("data.num_clients=8", *overrides)
    recorder = Recorder(tmp_path / "run", config)
    recorder.start(lambda folder: save_ledger(build_ledger(config, pool_for(config.data)), folder))
    recorder.record_round(0, STATE)
    return recorder


def _round_files(folder, round_number: int) -> set[str]:
    return {str(p.relative_to(folder)) for p in (folder / "rounds" / f"{round_number:04d}").rglob("*") if p.is_file()}


@pytest.mark.parametrize(("overrides", "clients"), [
    ((), [0, 2, 3, 5, 6]),
    (("record.clients=victim",), [0]),
    (("record.clients=victim", "record.references=2"), [0, 2, 3]),
    (("record.clients=victim", "record.references=9"), [0, 2, 3, 5, 6]),
], ids=["all", "victim", "victim+2", "victim+more-than-heard"])
def test_each_policy_writes_exactly_the_files_it_promises(tmp_path, overrides, clients):
    recorder = _recorder(tmp_path, *overrides)
    heard = {c: (STATE, 10 + c) for c in HEARD}
    recorder.record_round(1, STATE, heard, broadcast={5: STATE}, dropped=[7])
    folder = recorder.folder
    expected = {"rounds/0001/global.safetensors", "rounds/0001/broadcast/client-005.safetensors",
                *(f"rounds/0001/clients/client-{c:03d}.safetensors" for c in clients)}
    assert _round_files(folder, 1) == expected
    manifest = json.loads((folder / "manifest.json").read_text())
    entry = manifest["rounds"]["1"]
    assert entry["clients"] == {str(c): {"num_examples": 10 + c} for c in sorted(HEARD)}  # every client heard, kept or not
    assert ("stored" in entry) == bool(overrides) and entry.get("stored", clients) == clients
    assert {f for f in manifest["files"] if f.startswith("rounds/0001/")} == expected  # listed with sha256: nothing more, nothing less
    run = Run.open(folder)
    assert run.clients(1) == sorted(HEARD) and run.stored(1) == clients
    assert all(torch.equal(run.state(1, c)["w"], STATE["w"]) for c in clients)


def test_references_are_the_heard_clients_with_the_smallest_ids_and_never_the_victim():
    config = small_config("data.num_clients=8", "adversary.victim=3", "record.clients=victim", "record.references=2")
    assert kept_clients(config, [7, 3, 5, 1]) == [1, 3, 5]
    assert kept_clients(config, [7, 6, 5]) == [5, 6]  # victim not heard: the references alone
    assert kept_clients(small_config("data.num_clients=8"), [7, 3, 1]) == [1, 3, 7]


def test_the_manifest_lists_the_rounds_the_victim_was_sampled_in(tmp_path):
    recorder = _recorder(tmp_path, "record.clients=victim")
    recorder.record_round(1, STATE, {0: (STATE, 10), 2: (STATE, 10)})  # heard
    recorder.record_round(2, STATE, {2: (STATE, 10), 3: (STATE, 10)})  # not sampled
    recorder.record_round(3, STATE, {2: (STATE, 10)}, dropped=[0])  # sampled, never replied
    recorder.record_round(4, STATE, {2: (STATE, 10)}, failed=[0])  # sampled, its reply an error
    recorder.record_round(5, STATE, {3: (STATE, 10)})
    assert Run.open(recorder.folder).manifest.victim_rounds == [1, 3, 4]
    assert json.loads((recorder.folder / "manifest.json").read_text())["victim_rounds"] == [1, 3, 4]
    assert _round_files(recorder.folder, 2) == {"rounds/0002/global.safetensors"}


def test_a_run_without_an_adversary_has_no_victim_rounds(tmp_path):
    recorder = _recorder(tmp_path, "adversary.role=none")
    recorder.record_round(1, STATE, {0: (STATE, 10)})
    assert "victim_rounds" not in json.loads((recorder.folder / "manifest.json").read_text())


def test_policies_that_cannot_apply_are_refused_in_the_config(capsys):
    assert main(["run", "--set", "record.references=2"]) == 2
    assert "record.references" in capsys.readouterr().err
    assert main(["run", "--set", "record.clients=victim", "--set", "adversary.role=none"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "record.clients: victim" in err


@pytest.mark.parametrize("attack", ["lira", "fedmia", "rmia"])
def test_an_attack_needing_unrecorded_references_is_refused_before_the_run(capsys, tmp_path, attack):
    argv = ["run", "--out", str(tmp_path / "refused"), "--set", "record.clients=victim", "--set", f"attacks=[{attack}]"]
    assert main(argv) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and f"attacks: {attack} calibrates against the other clients' models" in lines[0], captured.err
    assert "record.references: 1 or more" in lines[0] and "Traceback" not in captured.err
    assert not (tmp_path / "refused").exists()  # refused before the folder exists
    config = small_config("record.clients=victim", "record.references=1")
    check_attacks_on([attack, "grad_cosine", "trajectory"], config)  # one reference kept: every one of them runs
    with pytest.raises(FedsimError, match="record.references: 0"):
        check_attacks_on([attack], small_config("record.clients=victim"))


def test_fedsim_attack_refuses_what_the_run_did_not_record(tmp_path, capsys):
    recorder = _recorder(tmp_path, "record.clients=victim")
    recorder.record_round(1, STATE, {0: (STATE, 10), 2: (STATE, 10)})
    assert main(["attack", str(recorder.folder), "--attack", "lira"]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fedsim: error: --attack: lira calibrates"), captured.err
    assert "record.references: 0" in lines[0]
    assert captured.out == ""


# --- the server's work per round follows the clients sampled --------------------------------------

def _echo_client_app() -> ClientApp:
    """Every node answers the partition query and returns the model it was sent at once (tiny records, no training)."""
    app = ClientApp()

    def who(context: Context) -> RecordDict:
        return RecordDict({CLIENT_RECORD: ConfigRecord({PARTITION_KEY: int(context.node_config[PARTITION_KEY])})})

    @app.query()
    def identify(message: Message, context: Context) -> Message:
        return Message(content=who(context), reply_to=message)

    @app.train()
    def train(message: Message, context: Context) -> Message:
        content = who(context)
        content["arrays"] = array_record(message.content)
        content["metrics"] = MetricRecord({"num-examples": 1, "train_loss": 0.5})
        return Message(content=content, reply_to=message)

    return app


def _calls_per_round(tmp_path, nodes: int, sampled: int = 10, rounds: int = 4) -> float:
    """Python function calls the server and engine make per round (rounds 2.., after discovery), a count that does not depend on machine load."""
    config = small_config(f"data.num_clients={nodes}", "data.records_per_client=1", "data.nonmembers=8", "data.test_records=4",
                          "adversary.target_records=2", f"train.rounds={rounds}", "model.args={hidden: [4]}", "record.clients=victim",
                          "record.references=2")
    strategy = build_strategy(StrategyConfig(name="fedavg", args={"fraction_train": sampled / nodes}), nodes, 0.1)
    recorder = Recorder(tmp_path / f"run{nodes}", config)
    recorder.start(lambda folder: (folder / "membership.parquet").write_bytes(b"") or folder / "membership.parquet")
    profiler = cProfile.Profile()

    def on_round(row: dict) -> None:  # round r's row is written after round r: profile rounds 2..rounds
        if row["round"] == 1:
            profiler.enable()
        elif row["round"] == rounds:
            profiler.disable()

    torch.manual_seed(0)
    plan = ServerPlan(strategy, recorder, nodes, model_for(config), (torch.zeros(4, 64), torch.zeros(4, dtype=torch.long)), rounds,
                      config.seed, on_round=on_round)
    run_in_process(make_server_app(plan), _echo_client_app(), nodes)
    assert recorder.manifest.rounds_completed == rounds
    assert all(len(recorder.manifest.rounds[r].clients) == sampled for r in range(1, rounds + 1))
    return pstats.Stats(profiler).total_calls / (rounds - 1)  # type: ignore[attr-defined]


def test_the_servers_work_per_round_follows_the_clients_sampled_not_the_clients_connected(tmp_path):
    small, large = _calls_per_round(tmp_path, 10), _calls_per_round(tmp_path, 1000)
    # a sort of the 1,000 node ids per round alone (Flower asks for them every round) costs 8% more calls
    assert large <= 1.03 * small, f"{large:.0f} calls per round at 1,000 nodes against {small:.0f} at 10"


# --- the ledger's partitions: built in one pass, equal to the partitioner's own, client by client ------

@pytest.mark.parametrize("partition", ["iid", "dirichlet", "shard", "natural"])
def test_every_partition_equals_the_partitioners_own_load_partition(partition):
    import numpy as np
    from datasets import Dataset
    from flwr_datasets.partitioner import DirichletPartitioner, IidPartitioner, NaturalIdPartitioner, PathologicalPartitioner

    from fedsim.learning.membership import partition_members

    rng = np.random.default_rng(0)
    ids, labels, groups = rng.permutation(1003) + 5, rng.integers(0, 10, 1003), rng.integers(0, 7, 1003)
    clients = 7 if partition == "natural" else 40  # 1003 records over 40 clients: IID shards of 25 and 26
    config = small_config(f"data.num_clients={clients}", f"data.partition={partition}", "data.classes_per_client=2", "data.alpha=0.5",
                          "seed=4", *(["data.partition_by=writer"] if partition == "natural" else []))
    fast = partition_members(ids, labels, config, groups if partition == "natural" else None)
    make = {"iid": lambda: IidPartitioner(num_partitions=clients),
            "dirichlet": lambda: DirichletPartitioner(num_partitions=clients, partition_by="label", alpha=0.5,
                                                      min_partition_size=max(2, min(10, 1003 // (4 * clients))), seed=4),
            "shard": lambda: PathologicalPartitioner(num_partitions=clients, partition_by="label", num_classes_per_partition=2,
                                                     class_assignment_mode="first-deterministic", seed=4),
            "natural": lambda: NaturalIdPartitioner(partition_by="group")}[partition]
    reference = make()
    reference.dataset = Dataset.from_dict({"record_id": ids, "label": labels, **({"group": groups.tolist()} if partition == "natural" else {})})
    slow = [np.asarray(reference.load_partition(c)["record_id"]) for c in range(clients)]
    assert len(fast) == clients and all(np.array_equal(f, s) for f, s in zip(fast, slow))
    assert sum(len(f) for f in fast) > 0.5 * len(ids)
