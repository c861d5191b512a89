"""The server: a Flower ServerApp running the configured strategy, recording what it sees.

`RecordingStrategy` wraps any Message-API strategy the way Flower's DP wrappers do. It sorts
replies by partition id before the inner strategy aggregates them (replies arrive in any
order, and float sums depend on order), and hands the recorder every client's parameters and
the new aggregate, round by round. Under secure aggregation it sits inside
`SecureAggregation`, so what it records (the server's view) is the aggregate alone.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MessageType, MetricRecord, RecordDict
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import Strategy

from strategies.secure_aggregation import AGGREGATE, CONTRIBUTORS, SecureAggregation
from strategies.wrapper import StrategyWrapper

from fedsim.client_app import CLIENT_RECORD, partition_of
from fedsim.recorder import Recorder
from fedsim.training import evaluate


def sorted_replies(replies: Iterable[Message]) -> list[Message]:
    """Replies in partition order, failed ones (no content) last in node-id order."""
    replies = list(replies)
    ok = sorted((r for r in replies if not r.has_error()), key=partition_of)
    failed = sorted((r for r in replies if r.has_error()), key=lambda r: r.metadata.src_node_id)
    return ok + failed


def discover_partitions(grid: Grid, expected: int, timeout: float = 600) -> dict[int, int]:
    """node id -> partition id, asked of every node once (a QUERY message each)."""
    deadline = time.monotonic() + timeout
    while len(nodes := list(grid.get_node_ids())) < expected:
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {len(nodes)} of {expected} simulated clients connected")
        time.sleep(0.1)
    questions = [Message(content=RecordDict(), message_type=MessageType.QUERY, dst_node_id=node) for node in sorted(nodes)]
    replies = grid.send_and_receive(questions, timeout=timeout)
    return {r.metadata.src_node_id: partition_of(r) for r in replies if not r.has_error()}


class PartitionOrderedGrid:
    """The simulation's Grid, listing node ids in partition order.

    Flower samples clients with `random.sample` over `grid.get_node_ids()`; node ids are random
    per run, so with a seeded `random` only a stable order makes the sampled clients reproducible.
    """

    def __init__(self, grid: Grid, partitions: dict[int, int]):
        self._grid = grid
        self._partitions = partitions

    def get_node_ids(self) -> list[int]:
        return sorted(self._grid.get_node_ids(), key=lambda node: (self._partitions.get(node, 1 << 30), node))

    def __getattr__(self, name: str):
        return getattr(self._grid, name)


class RecordingStrategy(StrategyWrapper):
    """Delegates to `inner`; records each round's client replies, aggregate, and what was sent
    to a client where it was not the aggregate (what an active adversary changed)."""

    def __init__(self, inner: Strategy, recorder: Recorder, partitions: dict[int, int]):
        super().__init__(inner)
        self.recorder = recorder
        self.partitions = partitions
        self.current: ArrayRecord | None = None
        self.broadcast: dict[int, ArrayRecord] = {}
        self.train_metrics: dict[int, MetricRecord] = {}
        self.client_metrics: dict[int, dict[int, MetricRecord]] = {}

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid) -> Iterable[Message]:
        self.current = arrays
        messages = list(self.inner.configure_train(server_round, arrays, config, grid))
        self.broadcast = {}
        for message in messages:
            sent = next(iter(message.content.array_records.values()), None)
            if sent is not None and sent is not arrays:
                self.broadcast[self.partitions.get(message.metadata.dst_node_id, -1)] = sent
        return messages

    def aggregate_train(self, server_round: int, replies: Iterable[Message]) -> tuple[ArrayRecord | None, MetricRecord | None]:
        replies = sorted_replies(replies)
        ok = [r for r in replies if not r.has_error()]
        # Read before the inner strategy runs: DP wrappers and robust strategies clip replies in place.
        received = {
            partition_of(r): (r.content["arrays"].to_torch_state_dict(), int(r.content["metrics"]["num-examples"]))
            for r in ok
            if partition_of(r) != AGGREGATE
        }
        summed = [list(r.content[CLIENT_RECORD][CONTRIBUTORS]) for r in ok if partition_of(r) == AGGREGATE]
        self.client_metrics[server_round] = {partition_of(r): r.content["metrics"] for r in ok}
        arrays, metrics = self.inner.aggregate_train(server_round, replies)
        new_global = arrays if arrays is not None else self.current
        failed = [self.partitions.get(r.metadata.src_node_id, -1) for r in replies if r.has_error()]
        broadcast = {c: a.to_torch_state_dict() for c, a in self.broadcast.items()}
        self.recorder.record_round(server_round, new_global.to_torch_state_dict(), received, broadcast, failed,
                                   secure_sum=summed[0] if summed else None)
        if metrics is not None:
            self.train_metrics[server_round] = metrics
        return arrays, metrics

    def privacy_columns(self, server_round: int) -> dict[str, float]:
        """epsilon_max and, where the server saw individual replies, epsilon per client (DP-SGD)."""
        reported = {c: float(m["epsilon"]) for c, m in self.client_metrics.get(server_round, {}).items() if "epsilon" in m}
        if not reported:
            return {}
        return {"epsilon_max": max(reported.values())} | {f"epsilon_client_{c:03d}": e for c, e in reported.items() if c != AGGREGATE}

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        return self.inner.aggregate_evaluate(server_round, sorted_replies(replies))


@dataclass
class ServerPlan:
    """What the server needs: the strategy, the initial model, the test split, where to report."""

    strategy: Strategy
    recorder: Recorder
    num_clients: int
    model: nn.Module
    test_data: tuple[torch.Tensor, torch.Tensor]
    rounds: int
    seed: int
    on_round: Callable[[dict], None] = lambda row: None
    adversary: Callable[[Strategy, dict[int, int]], Strategy] | None = None  # wraps the strategy, given node -> partition
    secure_aggregation: bool = False  # the server (recorder and adversary included) sees only the aggregate


def make_server_app(plan: ServerPlan) -> ServerApp:
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        random.seed(plan.seed)  # Flower samples clients with the global `random`
        np.random.seed(plan.seed)
        torch.manual_seed(plan.seed)
        partitions = discover_partitions(grid, plan.num_clients)
        strategy = plan.adversary(plan.strategy, partitions) if plan.adversary else plan.strategy
        recording = RecordingStrategy(strategy, plan.recorder, partitions)
        outermost = SecureAggregation(recording) if plan.secure_aggregation else recording
        initial = ArrayRecord(plan.model.state_dict())
        plan.recorder.record_round(0, plan.model.state_dict())
        started = time.perf_counter()

        def central_evaluation(server_round: int, arrays: ArrayRecord) -> MetricRecord:
            nonlocal started
            plan.model.load_state_dict(arrays.to_torch_state_dict())
            result = evaluate(plan.model, *plan.test_data)
            info = plan.recorder.manifest["rounds"].get(str(server_round), {})
            row = {
                "round": server_round,
                "test_loss": round(result.loss, 6),
                "test_accuracy": round(result.accuracy, 6),
                "clients": len(info.get("clients", {})) or len(info.get("secure_sum", [])),
                "failures": len(info.get("failed", [])),
                "seconds": round(time.perf_counter() - started, 3),
            }
            row |= recording.privacy_columns(server_round)
            train_metrics = recording.train_metrics.get(server_round)
            if train_metrics is not None and "train_loss" in train_metrics:
                row["train_loss"] = round(float(train_metrics["train_loss"]), 6)
            plan.recorder.append_training(row)
            plan.on_round(row)
            started = time.perf_counter()
            return MetricRecord({"loss": result.loss, "accuracy": result.accuracy})

        outermost.start(grid=PartitionOrderedGrid(grid, partitions), initial_arrays=initial, num_rounds=plan.rounds, evaluate_fn=central_evaluation)

    return app
