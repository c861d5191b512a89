"""The server: a Flower ServerApp running the configured strategy, recording what it sees.

`RecordingStrategy` wraps any Message-API strategy the way Flower's DP wrappers do. It sorts
replies by partition id before the inner strategy aggregates them (replies arrive in any
order, and float sums depend on order), and hands the recorder every client's parameters and
the new aggregate, round by round.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import Strategy

from fedsim.client_app import partition_of
from fedsim.recorder import Recorder
from fedsim.training import evaluate


def sorted_replies(replies: Iterable[Message]) -> list[Message]:
    """Replies in partition order, failed ones (no content) last in node-id order."""
    replies = list(replies)
    ok = sorted((r for r in replies if not r.has_error()), key=partition_of)
    failed = sorted((r for r in replies if r.has_error()), key=lambda r: r.metadata.src_node_id)
    return ok + failed


class RecordingStrategy(Strategy):
    """Delegates to `inner`; records each round's client replies and aggregate."""

    def __init__(self, inner: Strategy, recorder: Recorder):
        self.inner = inner
        self.recorder = recorder
        self.current: ArrayRecord | None = None
        self.train_metrics: dict[int, MetricRecord] = {}

    def summary(self) -> None:
        self.inner.summary()

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid) -> Iterable[Message]:
        self.current = arrays
        return self.inner.configure_train(server_round, arrays, config, grid)

    def aggregate_train(self, server_round: int, replies: Iterable[Message]) -> tuple[ArrayRecord | None, MetricRecord | None]:
        replies = sorted_replies(replies)
        arrays, metrics = self.inner.aggregate_train(server_round, replies)
        received = {
            partition_of(r): (r.content["arrays"].to_torch_state_dict(), int(r.content["metrics"]["num-examples"]))
            for r in replies
            if not r.has_error()
        }
        new_global = arrays if arrays is not None else self.current
        failures = sum(r.has_error() for r in replies)
        self.recorder.record_round(server_round, new_global.to_torch_state_dict(), received, failures=failures)
        if metrics is not None:
            self.train_metrics[server_round] = metrics
        return arrays, metrics

    def configure_evaluate(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid) -> Iterable[Message]:
        return self.inner.configure_evaluate(server_round, arrays, config, grid)

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        return self.inner.aggregate_evaluate(server_round, sorted_replies(replies))


@dataclass
class ServerPlan:
    """What the server needs: the strategy, the initial model, the test split, where to report."""

    strategy: Strategy
    recorder: Recorder
    model: nn.Module
    test_data: tuple[torch.Tensor, torch.Tensor]
    rounds: int
    seed: int
    on_round: Callable[[dict], None] = lambda row: None


def make_server_app(plan: ServerPlan) -> ServerApp:
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        random.seed(plan.seed)  # Flower samples clients with the global `random`
        np.random.seed(plan.seed)
        torch.manual_seed(plan.seed)
        recording = RecordingStrategy(plan.strategy, plan.recorder)
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
                "clients": len(info.get("clients", {})),
                "failures": info.get("failures", 0),
                "seconds": round(time.perf_counter() - started, 3),
            }
            train_metrics = recording.train_metrics.get(server_round)
            if train_metrics is not None and "train_loss" in train_metrics:
                row["train_loss"] = round(float(train_metrics["train_loss"]), 6)
            plan.recorder.append_training(row)
            plan.on_round(row)
            started = time.perf_counter()
            return MetricRecord({"loss": result.loss, "accuracy": result.accuracy})

        recording.start(grid=grid, initial_arrays=initial, num_rounds=plan.rounds, evaluate_fn=central_evaluation)

    return app
