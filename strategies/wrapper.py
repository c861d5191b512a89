"""A strategy that delegates to another: the base of fedsim's wrappers (recording, curious server),
the way Flower's DP wrappers wrap a strategy. Subclasses override only what they change.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

if TYPE_CHECKING:
    from fedsim.recording.run import Run


class StrategyWrapper(Strategy):
    """A strategy that passes every call to `inner`; a subclass overrides only what it changes.

    Parameters
    ----------
    inner : flwr.serverapp.strategy.Strategy
        The wrapped strategy (itself possibly a wrapper).
    """

    def __init__(self, inner: Strategy):
        self.inner = inner

    def restore(self, run: Run, last_round: int) -> None:
        """Rebuild what the wrapper keeps between rounds from a recorded run, to continue it
        after `last_round`. Wrappers that keep such state override this and call super().

        Parameters
        ----------
        run : fedsim.recording.run.Run
            The interrupted run, as recorded.
        last_round : int
            Its last complete round; the next one is `last_round + 1`.
        """
        if isinstance(self.inner, StrategyWrapper):
            self.inner.restore(run, last_round)

    def summary(self) -> None:
        self.inner.summary()

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid) -> Iterable[Message]:
        return self.inner.configure_train(server_round, arrays, config, grid)

    def aggregate_train(self, server_round: int, replies: Iterable[Message]) -> tuple[ArrayRecord | None, MetricRecord | None]:
        return self.inner.aggregate_train(server_round, replies)

    def configure_evaluate(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid) -> Iterable[Message]:
        return self.inner.configure_evaluate(server_round, arrays, config, grid)

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        return self.inner.aggregate_evaluate(server_round, replies)
