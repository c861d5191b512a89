"""The server: a Flower ServerApp running the configured strategy, recording what it sees.

`RecordingStrategy` wraps any Message-API strategy the way Flower's DP wrappers do. It sorts
replies by partition id before the inner strategy aggregates them (replies arrive in any
order, and float sums depend on order), and hands the recorder every client's parameters and
the new aggregate, round by round. Under secure aggregation it sits inside
`SecureAggregation`, so what it records (the server's view) is the aggregate alone.

A round is listed in the manifest only once its global model passed `admit_global` (the
aggregate holds exactly the model's arrays, all finite, and its test loss is finite): fedsim's
server and the audit's Grid both call it before `Recorder.record_round`, so a malformed or
diverged round is never recorded, whatever produced it. A strategy that raises becomes one line
naming it, its traceback logged on Flower's logger (the run folder's run.log).
"""

from __future__ import annotations

import logging
import math
import random
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import cast

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MessageType, MetricRecord, RecordDict
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import Strategy
from torch import nn

from fedsim.core.errors import FedsimError, fatal_message
from fedsim.core.messages import AGGREGATE, CLIENT_RECORD, CONTRIBUTORS, array_record, config_record, int_list, metric_record, number, partition_of
from fedsim.engine.faults import DropoutGrid, FaultPlan
from fedsim.learning.training import evaluate, torch_threads
from fedsim.recording.manifest import RoundEntry
from fedsim.recording.recorder import Recorder
from fedsim.recording.run import Run
from strategies.secure_aggregation import SecureAggregation
from strategies.wrapper import StrategyWrapper


def sorted_replies(replies: Iterable[Message]) -> list[Message]:
    """Replies in partition order, failed ones (no content) last in node-id order."""
    replies = list(replies)
    ok = sorted((r for r in replies if not r.has_error()), key=partition_of)
    failed = sorted((r for r in replies if r.has_error()), key=lambda r: r.metadata.src_node_id)
    return ok + failed


class RunStopped(Exception):
    """The run was stopped from outside the server (Ctrl-C in the process that started it): the
    ServerApp's thread ends at its next poll instead of waiting out a round's timeout.
    """


def discover_partitions(grid: Grid, expected: int, timeout: float = 600, stop: threading.Event | None = None,
                        in_flight: Callable[[], int] | None = None) -> dict[int, int]:
    """Node id -> partition id, asked of every node once (a QUERY message each); `stop` ends the wait
    (`RunStopped`); at most `in_flight()` questions are out at once (`PartitionOrderedGrid`).
    """
    deadline = time.monotonic() + timeout
    while len(nodes := list(grid.get_node_ids())) < expected:
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {len(nodes)} of {expected} simulated clients connected")
        if stop is not None and stop.is_set():
            raise RunStopped("the run was stopped before every client connected")
        time.sleep(0.1)
    questions = [Message(content=RecordDict(), message_type=MessageType.QUERY, dst_node_id=node) for node in sorted(nodes)]
    replies = PartitionOrderedGrid(grid, {}, stop=stop, in_flight=in_flight).send_and_receive(questions, timeout=timeout)
    return {r.metadata.src_node_id: partition_of(r) for r in replies if not r.has_error()}


class PartitionOrderedGrid:
    """The simulation's Grid, listing node ids in partition order, reporting training replies as
    they arrive, and keeping at most a window of messages in flight.

    Flower samples clients with `random.sample` over `grid.get_node_ids()`; node ids are random
    per run, so with a seeded `random` only a stable order makes the sampled clients reproducible.
    Clients train inside Ray actors, out of the console's reach; the replies reaching the server
    are what a client-training progress bar can count, so `on_train_replies(received, sent)` is
    called as they arrive. Once `stop` is set, waiting for replies raises `RunStopped`: the Ray
    engine runs the ServerApp in a thread of its own that the interpreter waits for at exit.

    The window (`in_flight()` messages, asked at each exchange; None: all at once, as Flower's
    Grid sends them) is for Flower's simulation runtime (1.42): every 0.1 s its message
    extractor (`vce_api.add_messages_to_queue`) asks the in-memory LinkState for the next message
    of each of the N nodes, and each ask (`InMemoryLinkState.get_message_ins`) walks every
    message stored until the server pulls its reply. With all M of a round's messages pushed at
    once a cycle costs N x M walks in the driver's process, under the GIL the server needs
    (seconds a round at 1,000 clients and 100 sampled); with a window W it costs N x W, and
    the actors stay busy as long as W exceeds what they work through between two refills
    (`fedsim.engine.simulation.in_flight_window`). The next messages are pushed as replies are
    pulled, in the order given; the replies come back in arrival order as before (the
    strategies sort them by partition, `sorted_replies`), so what a round aggregates does not
    depend on the window. A timeout leaves the messages not yet pushed unsent: like a client
    that did not reply in time, they have no reply.
    """

    def __init__(self, grid: Grid, partitions: dict[int, int], on_train_replies: Callable[[int, int], None] | None = None,
                 stop: threading.Event | None = None, in_flight: Callable[[], int] | None = None):
        self._grid = grid
        self._partitions = partitions
        self._on_train_replies = on_train_replies
        self._stop = stop
        self._in_flight = in_flight
        self._nodes: tuple[int, ...] = ()
        self._ordered: list[int] = []

    def get_node_ids(self) -> list[int]:
        """The connected node ids in partition order (unknown nodes last, by id).

        Flower asks for them every round (`sample_nodes`); the order is sorted again only when the
        connected nodes change, so a round costs no sort over a thousand nodes.
        """
        nodes = tuple(self._grid.get_node_ids())
        if nodes != self._nodes:
            self._nodes = nodes
            self._ordered = sorted(nodes, key=lambda node: (self._partitions.get(node, 1 << 30), node))
        return list(self._ordered)

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> list[Message]:
        """Flower's push-then-pull loop (InMemoryGrid.send_and_receive), a window at a time, counting training replies and watching `stop`."""
        messages = list(messages)
        training = bool(messages) and all(m.metadata.message_type == MessageType.TRAIN for m in messages)
        report = self._on_train_replies if training else None
        if report is None and self._stop is None and self._in_flight is None:
            return list(self._grid.send_and_receive(messages, timeout=timeout))
        window = len(messages) if self._in_flight is None else max(1, self._in_flight())
        pending: set[str] = set()
        unsent = messages[::-1]  # popped from the end: pushed in the order given
        sent = len(messages)

        def top_up() -> None:
            nonlocal sent
            batch = [unsent.pop() for _ in range(min(window - len(pending), len(unsent)))]
            pushed = list(self._grid.push_messages(batch)) if batch else []
            sent -= len(batch) - len(pushed)  # a message the LinkState refused gets no reply
            pending.update(pushed)

        deadline = None if timeout is None else time.time() + timeout
        top_up()
        if report is not None:
            report(0, sent)
        replies: list[Message] = []
        while (pending or unsent) and (deadline is None or time.time() < deadline):
            if self._stop is not None and self._stop.is_set():
                raise RunStopped("the run was stopped while the server waited for replies")
            arrived = list(self._grid.pull_messages(pending)) if pending else []
            replies += arrived
            pending.difference_update(m.metadata.reply_to_message_id for m in arrived)
            top_up()
            if arrived and report is not None:
                report(len(replies), sent)
            if pending and not arrived:
                time.sleep(getattr(self._grid, "pull_interval", 0.1))
        return replies

    def __getattr__(self, name: str):
        return getattr(self._grid, name)


def client_error(reply: Message) -> str:
    """The message of a failed reply's error, as the engine passed it (one line)."""
    reason = (reply.error.reason or "") if reply.error is not None else ""
    text = reason.split("Message:", 1)[1] if "Message:" in reason else reason  # "<class ...>:<'... Message: text'>"
    return " ".join(text.strip().removesuffix("'>").split()) or f"error code {reply.error.code if reply.error else '?'}"


class RecordingStrategy(StrategyWrapper):
    """Delegates to `inner`; records each round's client replies, aggregate, and what was sent
    to a client where it was not the aggregate (what an active adversary changed).

    A round in which no client update arrived is a failed round (the aggregate is unchanged);
    beyond `max_failed_rounds` of them (None: no limit) the run stops with a FedsimError naming
    the first client error and its message. A client's `FatalClientError` stops it at once.
    """

    def __init__(self, inner: Strategy, recorder: Recorder, partitions: dict[int, int], max_failed_rounds: int | None = None,
                 admit: Callable[[int, dict[str, torch.Tensor]], object] | None = None, strategy_name: str | None = None):
        super().__init__(inner)
        self.recorder = recorder
        self.partitions = partitions
        self.max_failed_rounds = max_failed_rounds
        self.admit = admit  # (round, global state) -> raises FedsimError where the round must not be recorded (`admit_global`)
        self.strategy_name = strategy_name or strategy_label(inner)
        self.failed_rounds: list[int] = []
        self.current: ArrayRecord | None = None
        self.broadcast: dict[int, ArrayRecord] = {}
        self.sent: set[int] = set()
        self.client_metrics: dict[int, dict[int, MetricRecord]] = {}

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid) -> Iterable[Message]:
        self.current = arrays
        messages = list(self.inner.configure_train(server_round, arrays, config, grid))
        self.sent = {self.partitions.get(m.metadata.dst_node_id, -1) for m in messages}
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
            partition_of(r): (array_record(r.content).to_torch_state_dict(), int(number(metric_record(r.content)["num-examples"])))
            for r in ok
            if partition_of(r) != AGGREGATE
        }
        summed = [int_list(config_record(r.content, CLIENT_RECORD)[CONTRIBUTORS]) for r in ok if partition_of(r) == AGGREGATE]
        self._stop_on_failures(server_round, replies, arrived=bool(received) or bool(summed and summed[0]))
        self.client_metrics = {server_round: {partition_of(r): metric_record(r.content) for r in ok}}  # this round's only
        try:
            arrays, metrics = self.inner.aggregate_train(server_round, replies)
        except FedsimError:
            raise
        except Exception as exc:
            logging.getLogger("flwr").exception("round %s: strategy %s raised in aggregate_train", server_round, self.strategy_name)
            raise FedsimError(f"round {server_round}: strategy {self.strategy_name} raised in aggregate_train "
                              f"({type(exc).__name__}: {one_line(exc)}); its traceback is in run.log") from None
        new_global = arrays if arrays is not None else self.current
        assert new_global is not None, "configure_train runs before aggregate_train"
        state = new_global.to_torch_state_dict()
        if self.admit is not None:
            self.admit(server_round, state)
        failed = [self.partitions.get(r.metadata.src_node_id, -1) for r in replies if r.has_error()]
        replied = set(received) | set(summed[0] if summed else [])
        dropped = sorted(self.sent - replied - set(failed))  # sent training, never replied
        broadcast = {c: a.to_torch_state_dict() for c, a in self.broadcast.items()}
        train_loss = round(float(number(metrics["train_loss"])), 6) if metrics is not None and "train_loss" in metrics else None
        self.recorder.record_round(server_round, state, received, broadcast, failed, dropped, train_loss,
                                   secure_sum=summed[0] if summed else None)
        return arrays, metrics

    def _stop_on_failures(self, server_round: int, replies: list[Message], arrived: bool) -> None:
        errors = [(self.partitions.get(r.metadata.src_node_id, -1), client_error(r)) for r in replies if r.has_error()]
        for _, message in errors:
            fatal = fatal_message(message)
            if fatal is not None:
                raise FedsimError(f"round {server_round}: {fatal}")
        if arrived:
            return
        self.failed_rounds.append(server_round)
        if self.max_failed_rounds is None or len(self.failed_rounds) <= self.max_failed_rounds:
            return
        if errors:
            client, message = errors[0]
            why = f"{len(errors)} client(s) failed; the first, client {client}: {message}"
        else:
            why = "every sampled client dropped out or timed out"
        raise FedsimError(f"round {server_round}: no client update arrived ({why}); failed rounds {self.failed_rounds} exceed "
                          f"faults.max_failed_rounds ({self.max_failed_rounds}); client tracebacks are in run.log")

    def privacy_columns(self, server_round: int) -> dict[str, float]:
        """epsilon_max and, where the server saw individual replies, epsilon per client (DP-SGD)."""
        reported = {c: float(number(m["epsilon"])) for c, m in self.client_metrics.get(server_round, {}).items() if "epsilon" in m}
        if not reported:
            return {}
        return {"epsilon_max": max(reported.values())} | {f"epsilon_client_{c:03d}": e for c, e in reported.items() if c != AGGREGATE}

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        return self.inner.aggregate_evaluate(server_round, sorted_replies(replies))


def round_seed(seed: int, server_round: int) -> int:
    return int(np.random.SeedSequence([seed, server_round]).generate_state(1)[0])


class RoundClock(StrategyWrapper):
    """Numbers rounds from `first_round` (Flower's start() counts from 1; a resumed run goes on
    after its last complete round) and seeds the server's generators at the start of every
    round, so what the server draws in round r (Flower samples clients with the global
    `random`) depends on (seed, r) alone, whether or not the run was interrupted before r.
    """

    def __init__(self, inner: Strategy, first_round: int, seed: int):
        super().__init__(inner)
        self.offset = first_round - 1
        self.seed = seed

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid) -> Iterable[Message]:
        server_round += self.offset
        seed = round_seed(self.seed, server_round)
        random.seed(seed)
        np.random.seed(seed % (1 << 32))
        torch.manual_seed(seed)
        return self.inner.configure_train(server_round, arrays, config, grid)

    def aggregate_train(self, server_round: int, replies: Iterable[Message]) -> tuple[ArrayRecord | None, MetricRecord | None]:
        return self.inner.aggregate_train(server_round + self.offset, replies)

    def configure_evaluate(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid) -> Iterable[Message]:
        return self.inner.configure_evaluate(server_round + self.offset, arrays, config, grid)

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        return self.inner.aggregate_evaluate(server_round + self.offset, replies)


def check_finite(server_round: int, test_loss: float, state: dict[str, torch.Tensor], ascent: bool = False) -> None:
    """Stop a diverged run: a non-finite test loss or parameter of the global model.

    Raises
    ------
    FedsimError
        One line naming the round and the knob to lower (train.lr; adversary.gamma too when an
        active adversary takes gradient-ascent steps).
    """
    bad = [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if math.isfinite(test_loss) and not bad:
        return
    what = f"parameter {bad[0]} is not finite" if bad else f"the test loss is {test_loss}"
    knob = "lower train.lr or adversary.gamma" if ascent else "lower train.lr"
    raise FedsimError(f"round {server_round}: training diverged ({what} in the global model); {knob}")


def strategy_label(strategy: Strategy) -> str:
    """`package.module:Class` of the innermost strategy under fedsim's wrappers (how a config names a user's strategy)."""
    while isinstance(strategy, StrategyWrapper):
        strategy = strategy.inner
    return f"{type(strategy).__module__}:{type(strategy).__qualname__}"


def one_line(error: BaseException) -> str:
    """An exception's message on one line (its first line; the class name where it has none)."""
    lines = str(error).strip().splitlines()
    return lines[0].strip() if lines else type(error).__name__


def _listed(names: Iterable[str], limit: int = 8) -> str:
    names = list(names)
    return "[" + ", ".join(names[:limit]) + (f", ... {len(names) - limit} more" if len(names) > limit else "") + "]"


def admit_global(server_round: int, state: Mapping[str, torch.Tensor], model: Mapping[str, torch.Tensor],
                 evaluate_state: Callable[[Mapping[str, torch.Tensor]], tuple[float, float]], source: str,
                 ascent: bool = False) -> tuple[float, float]:
    """Check a round's global model before the recorder lists the round; returns its (test loss, accuracy).

    The one gate both fedsim's server (`RecordingStrategy`) and the audit's Grid pass a global
    model through before `Recorder.record_round`: the aggregate must hold exactly the model's
    arrays with the model's shapes, and its parameters and test loss must be finite
    (`check_finite`). Integer arrays may come back as floats (Flower's FedAvg averages every
    array), so dtypes are not compared.

    Parameters
    ----------
    server_round : int
        The round whose aggregate this is.
    state : mapping of str to torch.Tensor
        The aggregate, as a state dict.
    model : mapping of str to torch.Tensor
        The model's state dict (any round's): the names and shapes the aggregate must have.
    evaluate_state : callable
        State dict -> (test loss, test accuracy) on the utility test records; called only on a well-formed aggregate.
    source : str
        Who produced the aggregate, for the message (e.g. "strategy fedavg").
    ascent : bool
        An active adversary takes gradient-ascent steps (the message then names adversary.gamma too).

    Returns
    -------
    tuple of (float, float)
        The test loss and accuracy `evaluate_state` gave.

    Raises
    ------
    FedsimError
        One line: the arrays missing, extra or misshapen (the aggregate's names against the
        model's), or the first non-finite parameter or test loss and the knob to lower.
    """
    missing = [name for name in model if name not in state]
    extra = [name for name in state if name not in model]
    if missing or extra:
        what = "; ".join([*([f"missing {_listed(missing)}"] if missing else []), *([f"not in the model {_listed(extra)}"] if extra else [])])
        raise FedsimError(f"round {server_round}: {source} returned an aggregate that is not the model ({what}; the aggregate has "
                          f"{_listed(state)}, the model {_listed(model)}); its aggregate_train must return every array of the model")
    shapes = [f"{name} {tuple(state[name].shape)} instead of {tuple(model[name].shape)}"
              for name in model if tuple(state[name].shape) != tuple(model[name].shape)]
    if shapes:
        raise FedsimError(f"round {server_round}: {source} returned an aggregate that is not the model (shape of {_listed(shapes, 3)}); "
                          "its aggregate_train must return every array of the model in the model's shape")
    loss, accuracy = evaluate_state(state)
    check_finite(server_round, loss, dict(state), ascent)
    return loss, accuracy


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
    on_train_replies: Callable[[int, int], None] | None = None  # (received, sent) as a round's training replies arrive
    adversary: Callable[[Strategy, dict[int, int]], Strategy] | None = None  # wraps the strategy, given node -> partition
    faults: FaultPlan | None = None
    resumed: Run | None = None  # an interrupted run to continue after its last complete round; `model` holds that round's global
    error: BaseException | None = None  # what stopped the server app (the engine only logs it)
    secure_aggregation: bool = False  # the server (recorder and adversary included) sees only the aggregate
    max_failed_rounds: int | None = None  # rounds without any client update tolerated (None: no limit)
    adversary_gamma: bool = False  # an active adversary's gradient ascent (adversary.gamma) also moves the models
    stop: threading.Event = field(default_factory=threading.Event)  # set when the run is stopped from outside (Ctrl-C): the server's waits end
    in_flight: Callable[[], int] | None = None  # the most messages out at once, asked at each exchange (None: all; PartitionOrderedGrid)
    threads: float = 1  # torch threads for the server's own computations (backend.cpus_per_client), fixed so records do not depend on the process
    strategy_name: str = ""  # how the config names the strategy (strategy.name), for messages; "": its class's import path


def wrapper_stack(plan: ServerPlan, partitions: dict[int, int], first_round: int = 1,
                  admit: Callable[[int, dict[str, torch.Tensor]], object] | None = None) -> list[Strategy]:
    """The server's strategy wrappers, outermost first, each wrapping the next.

    `[RoundClock, SecureAggregation (under defense.secure_aggregation), RecordingStrategy,
    CuriousServer (when the server is the adversary), the configured strategy]`. The clock is
    outermost so every wrapper sees the run's round numbers; secure aggregation sits outside the
    recorder and the curious server, so both see only the aggregate (the server's view); the
    recorder sits outside the curious server, so it records what the adversary sent each client.

    Parameters
    ----------
    plan : ServerPlan
        The strategy, recorder, seed and adversary of the run.
    partitions : dict[int, int]
        Node id -> partition id, as `discover_partitions` found them.
    first_round : int
        The first round still to do (1, or the round after the last complete one of a resumed run).
    admit : callable, optional
        (round, global state) -> raises where the round must not be recorded; the recorder's
        gate (`admit_global`, as `serve` gives it).

    Returns
    -------
    list[flwr.serverapp.strategy.Strategy]
        The stack, outermost first: `stack[0].start(...)` runs the rounds, `stack[-1]` is
        `plan.strategy`, and `stack[i].inner is stack[i + 1]`.
    """
    inner: Strategy = plan.adversary(plan.strategy, partitions) if plan.adversary else plan.strategy
    if plan.resumed is not None and isinstance(inner, StrategyWrapper):
        inner.restore(plan.resumed, first_round - 1)
    stack: list[Strategy] = [inner] if inner is plan.strategy else [inner, plan.strategy]
    stack.insert(0, RecordingStrategy(inner, plan.recorder, partitions, plan.max_failed_rounds, admit, plan.strategy_name or None))
    if plan.secure_aggregation:
        stack.insert(0, SecureAggregation(stack[0]))
    stack.insert(0, RoundClock(stack[0], first_round, plan.seed))
    return stack


def serve(plan: ServerPlan, grid: Grid) -> None:
    """Run the planned rounds on `grid`, recording each: the body of fedsim's ServerApp.

    Parameters
    ----------
    plan : ServerPlan
        What the server needs; `plan.recorder` receives every round.
    grid : flwr.serverapp.Grid
        The Grid a ServerApp's main function is given (the simulation's or a SuperLink's).

    Raises
    ------
    RuntimeError
        Fewer than `plan.num_clients` nodes connected within 10 minutes.
    """
    with torch_threads(plan.threads):  # the curious server's ascent and the evaluation: same bytes in any process
        _serve(plan, grid)


def _serve(plan: ServerPlan, grid: Grid) -> None:
    """The body of `serve`, on the planned thread count."""
    partitions = discover_partitions(grid, plan.num_clients, stop=plan.stop, in_flight=plan.in_flight)
    first_round = 1 if plan.resumed is None else plan.resumed.manifest.rounds_completed + 1
    model_state = plan.model.state_dict()  # the names and shapes every aggregate must have
    evaluations: dict[int, tuple[float, float]] = {}  # round -> (test loss, accuracy) of the global model admitted

    def evaluate_state(state: Mapping[str, torch.Tensor]) -> tuple[float, float]:
        plan.model.load_state_dict(state)
        result = evaluate(plan.model, *plan.test_data)
        return result.loss, result.accuracy

    def admit(server_round: int, state: dict[str, torch.Tensor]) -> None:
        source = f"strategy {plan.strategy_name or strategy_label(plan.strategy)}"
        evaluations[server_round] = admit_global(server_round, state, model_state, evaluate_state, source, plan.adversary_gamma)

    stack = wrapper_stack(plan, partitions, first_round, admit)
    clock = stack[0]
    assert isinstance(clock, RoundClock)
    recording = next(layer for layer in stack if isinstance(layer, RecordingStrategy))
    initial = ArrayRecord(model_state)
    if first_round == 1:
        plan.recorder.record_round(0, plan.model.state_dict())
    started = time.perf_counter()

    def central_evaluation(clock_round: int, arrays: ArrayRecord) -> MetricRecord:
        nonlocal started
        server_round = clock_round + clock.offset
        if server_round in evaluations:  # admitted (evaluated) before the recorder listed it
            loss, accuracy = evaluations.pop(server_round)
        else:  # the initial model
            state = arrays.to_torch_state_dict()
            loss, accuracy = evaluate_state(state)
            check_finite(server_round, loss, state, plan.adversary_gamma)
        info = plan.recorder.manifest.rounds.get(server_round, RoundEntry())
        row = {
            "round": server_round,
            "test_loss": round(loss, 6),
            "test_accuracy": round(accuracy, 6),
            "train_loss": "" if info.train_loss is None else info.train_loss,
            "clients": len(info.clients) or len(info.secure_sum or ()),
            "failures": len(info.failed),
            "dropouts": len(info.dropped),
            "seconds": round(time.perf_counter() - started, 3),
            "record_seconds": "" if info.record_seconds is None else info.record_seconds,
        }
        row |= recording.privacy_columns(server_round)
        plan.recorder.append_training(row)
        plan.on_round(row)
        started = time.perf_counter()
        return MetricRecord({"loss": loss, "accuracy": accuracy})

    # The wrappers are proxies (the rest of Grid's interface through __getattr__), not Grid subclasses.
    grid = cast(Grid, PartitionOrderedGrid(grid, partitions, plan.on_train_replies, plan.stop, plan.in_flight))
    if plan.faults is not None:
        grid = cast(Grid, DropoutGrid(grid, plan.faults, partitions))
    clock.start(grid=grid, initial_arrays=initial, num_rounds=plan.rounds - first_round + 1, evaluate_fn=central_evaluation)


def make_server_app(plan: ServerPlan) -> ServerApp:
    """A ServerApp running `serve(plan, grid)`, keeping what stopped it in `plan.error` (the engine only logs it)."""
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        try:
            serve(plan, grid)
        except RunStopped:
            return  # stopped from outside: what stopped the run is the caller's to report
        except BaseException as exc:
            plan.error = exc
            raise

    return app
