"""A user's Flower app run under audit: a Grid between its ServerApp and Flower, mods around its ClientApp.

The app's ServerApp, strategy, ClientApp, training loop and data loading run unchanged. Every
message its strategy sends passes through `AuditGrid`, which records each training round into
the run folder (what was sent, each client's reply, the aggregate) and lets the configured
curious server change what the victim is sent and what the aggregate sees (`RoundHooks`, given
by `attackers.active`). On the client side a mod answers fedsim's partition query, names the
partition in every reply (the Grid reads it and takes it out again, so the strategy sees exactly
what the client sent) and hands the app its run config where the engine gave none.

The aggregate of round r is never a message of its own in Flower's Message API: it is what the
strategy sends next, to the clients it evaluates in round r or trains in round r + 1. The Grid
records round r when it first sees that model; a round whose aggregate no client was ever sent
(the last round, without federated evaluation) cannot be recorded, and the audit says so.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol

import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MessageType, RecordDict
from flwr.clientapp import ClientApp
from flwr.common.constant import NUM_PARTITIONS_KEY
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.grid.grid import Run as FlowerRun

from fedsim.core.errors import FatalClientError, FedsimError, fatal_message
from fedsim.core.messages import CLIENT_RECORD, PARTITION_KEY, partition_of
from fedsim.engine.server_app import admit_global, client_error
from fedsim.recording.recorder import Recorder

DISCOVER = "fedsim-discover"  # a query carrying a record of this name is answered by the audit's mod, never by the app
StateDict = Mapping[str, torch.Tensor]


class RoundHooks(Protocol):
    """The curious server as the Grid applies it (`attackers.active.curious_server.CuriousServer`)."""

    def tamper(self, server_round: int, messages: list[Message]) -> list[Message]: ...

    def keep(self, server_round: int, replies: Iterable[Message]) -> list[Message]: ...


@dataclass
class AuditPlan:
    """What the audit's ServerApp needs besides the app: where to record, whom to expect, the adversary.

    Parameters
    ----------
    recorder : Recorder
        The run folder being written.
    num_clients : int
        SuperNodes the app's federation has; each must answer the partition query.
    rounds : int
        Rounds the app's strategy will run (its run config's `num-server-rounds`, or the config's).
    run_config : dict
        The app's run config, handed to the app where the engine gives none.
    adversary : callable, optional
        node id -> partition id mapping to the curious server's `RoundHooks` (None: no server adversary).
    evaluate : callable
        Global model state -> (loss, accuracy) on the utility test records.
    on_round : callable
        Called with each round's training row as it is recorded.
    """

    recorder: Recorder
    num_clients: int
    rounds: int
    run_config: dict
    adversary: Callable[[dict[int, int]], RoundHooks] | None
    evaluate: Callable[[StateDict], tuple[float, float]]
    on_round: Callable[[dict], None] = lambda row: None
    connect_timeout: float = 600  # seconds the app's SuperNodes have to connect and answer the partition query
    error: BaseException | None = None  # what stopped the app's ServerApp (the engine may only log it)


def _arrays(message: Message) -> ArrayRecord:
    """The model a training or evaluation message carries: its (first) ArrayRecord."""
    records = message.content.array_records
    if not records:
        raise FedsimError(f"the app's strategy sent a {message.metadata.message_type} message without an ArrayRecord; "
                          "fedsim audits strategies that send the model as an ArrayRecord (Flower's Message-API strategies do)")
    return next(iter(records.values()))


def _same(a: StateDict, b: StateDict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@dataclass
class _Round:
    """A training round whose aggregate the Grid has not yet seen."""

    number: int
    received: Mapping[int, tuple[StateDict, int]]
    broadcast: Mapping[int, StateDict]
    failed: list[int]
    dropped: list[int]
    train_loss: float | None


class AuditGrid(Grid):
    """The Grid the app's ServerApp is given: Flower's, with every training round recorded and
    the curious server's changes applied.

    Parameters
    ----------
    grid : flwr.serverapp.Grid
        The Grid Flower gave the audit's ServerApp (the simulation's, the in-process engine's or a SuperLink's).
    plan : AuditPlan
        Recorder, adversary and utility evaluation.
    partitions : dict of int to int
        Node id -> partition id, as the nodes answered the partition query.
    """

    def __init__(self, grid: Grid, plan: AuditPlan, partitions: Mapping[int, int]):
        self._grid = grid
        self._plan = plan
        self._partitions = dict(partitions)
        self._adversary = plan.adversary(self._partitions) if plan.adversary else None
        self._round = 0
        self._pending: _Round | None = None
        self._model: StateDict | None = None  # the app's initial model: the names and shapes every aggregate must have
        self._started = time.perf_counter()
        self.recorded = 0  # the last round recorded

    # -- Grid's interface, delegated ----------------------------------------------------------
    def set_run(self, run: FlowerRun) -> None:
        self._grid.set_run(run)

    @property
    def run(self) -> FlowerRun:
        return self._grid.run

    def create_message(self, content: RecordDict, message_type: str, dst_node_id: int, group_id: str, ttl: float | None = None) -> Message:
        return self._grid.create_message(content, message_type, dst_node_id, group_id, ttl)

    def get_node_ids(self) -> Iterable[int]:
        """The app's nodes in partition order (Flower samples with `random.sample` over this list)."""
        return sorted(self._grid.get_node_ids(), key=lambda node: (self._partitions.get(node, 1 << 30), node))

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        messages = list(messages)
        if any(_kind(m) in (MessageType.TRAIN, MessageType.EVALUATE) for m in messages):
            raise FedsimError("the app's ServerApp pushes training or evaluation messages itself; fedsim audits apps whose strategy "
                              "runs its rounds through Grid.send_and_receive, as Flower's Strategy.start does")
        return self._grid.push_messages(messages)

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return [_untagged(r) for r in self._grid.pull_messages(message_ids)]

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        messages = list(messages)
        kinds = {_kind(m) for m in messages}
        if MessageType.TRAIN in kinds:
            return self._train(messages, timeout)
        carrying = [m for m in messages if _kind(m) == MessageType.EVALUATE and m.content.array_records]
        if carrying and self._pending is not None:
            self._aggregate_seen(_arrays(sorted(carrying, key=self._partition)[0]).to_torch_state_dict())
        return [_untagged(r) for r in self._grid.send_and_receive(messages, timeout=timeout)]

    # -- recording -----------------------------------------------------------------------------
    def _partition(self, message: Message) -> int:
        return self._partitions.get(message.metadata.dst_node_id, -1)

    def _train(self, messages: list[Message], timeout: float | None) -> list[Message]:
        self._round += 1
        server_round = self._round
        stated = {r for m in messages if (r := _server_round(m)) is not None}
        if stated and stated != {server_round}:
            raise FedsimError(f"the app's strategy sent training messages for server-round {sorted(stated)} as its training round "
                              f"{server_round}; fedsim audits strategies that train once per round (Flower's Strategy.start does)")
        ordered = sorted(messages, key=self._partition)
        sent_global = _arrays(ordered[0]).to_torch_state_dict()  # what the strategy sends: the aggregate of the round before
        if server_round == 1:
            self._model = sent_global
            self._plan.recorder.record_round(0, sent_global)
        else:
            self._aggregate_seen(sent_global)
        if self._adversary is not None:
            messages = self._adversary.tamper(server_round, messages)
        broadcast: dict[int, StateDict] = {}
        for message in messages:
            state = _arrays(message).to_torch_state_dict()
            if not _same(state, sent_global):
                broadcast[self._partition(message)] = state
        sent = {self._partition(m) for m in messages}
        replies = list(self._grid.send_and_receive(messages, timeout=timeout))
        ok = [r for r in replies if not r.has_error()]
        received: dict[int, tuple[StateDict, int]] = {partition_of(r): (_arrays(r).to_torch_state_dict(), _num_examples(r)) for r in ok}
        failed = sorted(self._partitions.get(r.metadata.src_node_id, -1) for r in replies if r.has_error())
        for reply in replies:
            fatal = fatal_message(client_error(reply)) if reply.has_error() else None
            if fatal is not None:
                raise FedsimError(f"round {server_round}: {fatal}")
        dropped = sorted(sent - set(received) - set(failed))
        losses = [(float(r.content.metric_records[k]["train_loss"]), received[partition_of(r)][1])  # type: ignore[arg-type]
                  for r in ok for k in r.content.metric_records if "train_loss" in r.content.metric_records[k]]
        train_loss = round(sum(loss * n for loss, n in losses) / sum(n for _, n in losses), 6) if losses and sum(n for _, n in losses) else None
        self._pending = _Round(server_round, received, broadcast, failed, dropped, train_loss)
        kept = self._adversary.keep(server_round, replies) if self._adversary is not None else replies
        return [_untagged(r) for r in kept]

    def _aggregate_seen(self, state: StateDict) -> None:
        """The app's aggregate of the pending round reached a client: record that round now."""
        pending, self._pending = self._pending, None
        if pending is None:
            return
        loss, accuracy = admit_global(pending.number, state, self._model or state, self._plan.evaluate, "the app's strategy")
        recorder = self._plan.recorder
        recorder.record_round(pending.number, state, pending.received, pending.broadcast, pending.failed, pending.dropped,
                              pending.train_loss)
        record_seconds = recorder.manifest.rounds[pending.number].record_seconds
        row = {
            "round": pending.number, "test_loss": round(loss, 6), "test_accuracy": round(accuracy, 6),
            "train_loss": "" if pending.train_loss is None else pending.train_loss, "clients": len(pending.received),
            "failures": len(pending.failed), "dropouts": len(pending.dropped),
            "seconds": round(time.perf_counter() - self._started, 3), "record_seconds": "" if record_seconds is None else record_seconds,
        }
        recorder.append_training(row)
        self._plan.on_round(row)
        self._started = time.perf_counter()
        self.recorded = pending.number

    def finish(self) -> None:
        """After the app's ServerApp returned: every round must have been recorded.

        Raises
        ------
        FedsimError
            The last round's aggregate never reached a client, or the app ran fewer rounds than planned.
        """
        if self._pending is not None:
            raise FedsimError(f"the app's strategy never sent its round-{self._pending.number} aggregate to a client (no federated "
                              "evaluation in the last round), so fedsim cannot record that round; let the strategy evaluate on "
                              "some clients in every round (e.g. FedAvg's fraction_evaluate > 0)")
        if self.recorded != self._plan.rounds:
            raise FedsimError(f"the app ran {self.recorded} rounds but the audit expected {self._plan.rounds} (train.rounds, from the "
                              "app's run config); set train.rounds in [tool.fedsim] to the rounds the app runs")


def _kind(message: Message) -> str:
    """The message's category ('train' for 'train.custom')."""
    return message.metadata.message_type.split(".")[0]


def _server_round(message: Message) -> int | None:
    """The round a Flower strategy states in its training config ('server-round'), if it does."""
    for record in message.content.config_records.values():
        value = record.get("server-round")
        if isinstance(value, int):
            return value
    return None


def _num_examples(reply: Message) -> int:
    for record in reply.content.metric_records.values():
        if "num-examples" in record:
            return int(record["num-examples"])  # type: ignore[arg-type]
    raise FedsimError("a client's training reply has no 'num-examples' metric; fedsim records each reply with the example count "
                      "FedAvg weighs it by (Flower's apps report it in their MetricRecord)")


def _untagged(reply: Message) -> Message:
    """The reply as the app's client sent it: without the partition record the audit's mod added."""
    if not reply.has_error() and CLIENT_RECORD in reply.content:
        del reply.content[CLIENT_RECORD]
    return reply


def discover(grid: Grid, expected: int, timeout: float = 600) -> dict[int, int]:
    """Node id -> partition id, asked of every node with a marked query the app never sees.

    Raises
    ------
    FedsimError
        Fewer than `expected` nodes connected in time, or a node did not answer.
    """
    deadline = time.monotonic() + timeout
    while len(nodes := list(grid.get_node_ids())) < expected:
        if time.monotonic() > deadline:
            raise FedsimError(f"only {len(nodes)} of the app's {expected} SuperNodes connected within {timeout:g} s; a partition never "
                              "connected: check the federation's num-supernodes against data.num_clients")
        time.sleep(0.1)
    questions = [Message(content=RecordDict({DISCOVER: ConfigRecord()}), message_type=MessageType.QUERY, dst_node_id=node)
                 for node in sorted(nodes)]
    if len(nodes) > expected:
        raise FedsimError(f"the app's federation has {len(nodes)} SuperNodes but the audit expects {expected} (data.num_clients): their "
                          "clients would train on partitions of another split than the ledger's; give the federation "
                          f"num-supernodes={expected} or set data.num_clients={len(nodes)}")
    replies = list(grid.send_and_receive(questions, timeout=timeout))
    failed = [client_error(r) for r in replies if r.has_error()]
    if failed:
        raise FedsimError(f"a SuperNode did not answer fedsim's partition query ({failed[0]}); is its ClientApp wrapped by fedsim audit?")
    split = {int(r.content[CLIENT_RECORD][NUM_PARTITIONS_KEY]) for r in replies if NUM_PARTITIONS_KEY in r.content[CLIENT_RECORD]}  # type: ignore[arg-type]
    if split - {expected}:
        raise FedsimError(f"the app's SuperNodes split the data into {sorted(split)} partitions (node config num-partitions) but the "
                          f"ledger into {expected} (data.num_clients); make them equal")
    return {r.metadata.src_node_id: partition_of(r) for r in replies}


def with_run_config(context: Context, run_config: Mapping) -> Context:
    """The context the app is given: the engine's, with exactly the app's own run config (its
    pyproject.toml's, with the audit's --run-config overrides), never fedsim's keys that `flwr run`
    carries. A new Context sharing the node's state (Flower forbids changing a context's run
    config in place); what the app keeps in `context.state` persists as usual.
    """
    return Context(run_id=context.run_id, node_id=context.node_id, node_config=context.node_config, state=context.state,
                   run_config=dict(run_config))


def audited_server_app(app: ServerApp, plan: AuditPlan) -> ServerApp:
    """A ServerApp that runs `app` on an `AuditGrid` over the Grid it is given.

    Parameters
    ----------
    app : flwr.serverapp.ServerApp
        The user's ServerApp (Message API: a `@app.main()` function).
    plan : AuditPlan
        Recorder, adversary and utility evaluation; `plan.error` keeps what stopped the app.

    Returns
    -------
    flwr.serverapp.ServerApp
    """
    audited = ServerApp()

    @audited.main()
    def main(grid: Grid, context: Context) -> None:
        try:
            partitions = discover(grid, plan.num_clients, plan.connect_timeout)
            missing = sorted(set(range(plan.num_clients)) - set(partitions.values()))
            if missing:
                raise FedsimError(f"partition {missing[0]} never connected: the app's SuperNodes answered with partitions "
                                  f"{sorted(partitions.values())}; check the federation's num-supernodes and data.num_clients")
            audit_grid = AuditGrid(grid, plan, partitions)
            app(audit_grid, with_run_config(context, plan.run_config))
            audit_grid.finish()
        except BaseException as exc:
            plan.error = exc
            raise

    return audited


def audit_mod(run_config: Mapping) -> Callable[[Message, Context, Callable[[Message, Context], Message]], Message]:
    """The audit's outermost ClientApp mod: answers the partition query, gives the app its run
    config where the engine gave none, and names the partition in each reply.
    """

    def mod(message: Message, context: Context, call_next: Callable[[Message, Context], Message]) -> Message:
        partition = int(context.node_config[PARTITION_KEY])
        if _kind(message) == MessageType.QUERY and DISCOVER in message.content:
            answer = {PARTITION_KEY: partition}
            if NUM_PARTITIONS_KEY in context.node_config:
                answer[NUM_PARTITIONS_KEY] = int(context.node_config[NUM_PARTITIONS_KEY])
            return Message(content=RecordDict({CLIENT_RECORD: ConfigRecord(answer)}), reply_to=message)  # type: ignore[arg-type]
        reply = call_next(message, with_run_config(context, run_config))
        if not reply.has_error():
            if CLIENT_RECORD in reply.content:
                raise FatalClientError(f"the app's ClientApp replied with a record named {CLIENT_RECORD!r}, the name fedsim's audit "
                                       "gives the partition it adds to each reply; rename that record in the app")
            reply.content[CLIENT_RECORD] = ConfigRecord({PARTITION_KEY: partition})
        return reply

    return mod


def audited_client_app(app: ClientApp, run_config: Mapping, mods: list | tuple = ()) -> ClientApp:
    """A ClientApp that runs `app` for every training, evaluation and query message, inside the
    audit's mod and `mods` (the curious participant's).

    Parameters
    ----------
    app : flwr.clientapp.ClientApp
        The user's ClientApp.
    run_config : mapping
        The app's run config (from its pyproject.toml), for engines that give none.
    mods : list
        Further mods, inside the audit's (e.g. `attackers.active.adversary.participant_mods`).

    Returns
    -------
    flwr.clientapp.ClientApp
    """
    audited = ClientApp(mods=[audit_mod(run_config), *mods])

    def delegate(message: Message, context: Context) -> Message:
        return app(message, context)

    handlers = {"train.default", "evaluate.default", "query.default"} | set(getattr(app, "_registered_funcs", {}))
    for full_name in sorted(handlers):  # every handler the app registered ('train.custom' too), and Flower's defaults
        category, action = full_name.split(".")
        getattr(audited, category)(action)(delegate)
    return audited
