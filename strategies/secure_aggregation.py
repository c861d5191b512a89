"""Secure aggregation as the server experiences it: one aggregate per round, never an update.

Flower's SecAgg+ (`SecAggPlusWorkflow` with `secaggplus_mod`) drives the legacy strategy API
(`configure_fit`/`aggregate_fit` on a `LegacyContext`) and reads legacy `FitRes` records on the
client; the Message-API strategies fedsim runs (`configure_train`/`aggregate_train`, replies
with `arrays` and `metrics`) cannot run inside it. So this wrapper, outermost on the server,
stands in for the protocol: it turns the round's replies into the one thing SecAgg+ gives a
server, the example-weighted sum of the updates (divided by the total weight) and the total
weight, and passes the strategy, the recorder and any curious server inside it only that.
Strategies that need each update (robust statistics, per-update clipping) are refused by the
config, as SecAgg+ would make them impossible.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.app.typing import MetricRecordValues

from fedsim.core.messages import AGGREGATE, CLIENT_RECORD, CONTRIBUTORS, PARTITION_KEY, array_record, metric_record, number, partition_of
from strategies.wrapper import StrategyWrapper


def secure_sum(replies: list[Message]) -> Message:
    """One reply holding the example-weighted mean of `replies`' arrays and metrics.

    Epsilon is the privacy of the worst client, so it is the maximum, not the mean.
    """
    weights = np.array([float(number(metric_record(r.content)["num-examples"])) for r in replies])
    total = weights.sum()
    arrays = [array_record(r.content) for r in replies]
    mean = {
        key: Array((sum(w * a[key].numpy().astype(np.float64) for w, a in zip(weights, arrays)) / total).astype(arrays[0][key].numpy().dtype))
        for key in arrays[0].keys()
    }
    metrics: dict[str, MetricRecordValues] = {"num-examples": int(total)}
    for key in metric_record(replies[0].content).keys():
        values = [float(number(metric_record(r.content)[key])) for r in replies]
        if key == "epsilon":
            metrics[key] = max(values)
        elif key != "num-examples":
            metrics[key] = float(np.dot(weights, values) / total)
    contributors = sorted(partition_of(r) for r in replies)
    content = RecordDict({
        "arrays": ArrayRecord(mean),
        "metrics": MetricRecord(metrics),
        CLIENT_RECORD: ConfigRecord({PARTITION_KEY: AGGREGATE, CONTRIBUTORS: contributors}),
    })
    return Message(content=content, dst_node_id=0, message_type=MessageType.TRAIN)


class SecureAggregation(StrategyWrapper):
    """Replaces the round's successful replies by their secure aggregate before the server sees them.

    Parameters
    ----------
    inner : flwr.serverapp.strategy.Strategy
        Everything the server runs inside it (the recorder, a curious server, the strategy).
    """

    def aggregate_train(self, server_round: int, replies: Iterable[Message]) -> tuple[ArrayRecord | None, MetricRecord | None]:
        replies = list(replies)
        ok = [r for r in replies if not r.has_error()]
        failed = [r for r in replies if r.has_error()]
        return self.inner.aggregate_train(server_round, ([secure_sum(ok)] if ok else []) + failed)
