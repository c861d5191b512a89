"""PartitionOrderedGrid's window of messages in flight, on Flower's own simulation LinkState.

The LinkState, the Grid and the message extractor are Flower's (`InMemoryLinkState`,
`InMemoryGrid`, `vce_api.add_messages_to_queue` and `put_message_into_state`, as
`run_simulation` wires them); only the Ray backend is replaced by threads that answer each
message after a delay that differs per node, so replies arrive out of order.
"""

from __future__ import annotations

import random
import threading
import time
from queue import Empty, Queue
from typing import cast

import pytest
from flwr.app import ConfigRecord, Message, MessageType, RecordDict
from flwr.proto.task_pb2 import Task
from flwr.server.superlink.fleet.vce.vce_api import _register_nodes, add_messages_to_queue, put_message_into_state
from flwr.server.superlink.linkstate import InMemoryLinkState, LinkStateFactory
from flwr.server.superlink.linkstate.in_memory_linkstate import RunRecord
from flwr.supercore.constant import FLWR_IN_MEMORY_DB_NAME, NOOP_FEDERATION_ID
from flwr.supercore.object_store import ObjectStoreFactory
from flwr.supercore.run import Run
from flwr.superlink.federation import NoOpFederationManager
from flwr.superlink.grid import InMemoryGrid

from fedsim.core.messages import CLIENT_RECORD, PARTITION_KEY, partition_of
from fedsim.engine.inprocess import RUN_ID, server_identity
from fedsim.engine.server_app import PartitionOrderedGrid, RunStopped, discover_partitions

NODES = 30
WORKERS = 2  # the "actors"


class Simulation:
    """Flower's simulation LinkState and extractor, with `WORKERS` threads answering in place of Ray's actors."""

    def __init__(self, nodes: int = NODES, answer: bool = True):
        self.factory = LinkStateFactory(FLWR_IN_MEMORY_DB_NAME, NoOpFederationManager(), ObjectStoreFactory())
        self.state = cast(InMemoryLinkState, self.factory.state())
        self.run = Run.create_empty(run_id=RUN_ID)  # the run server_identity() gives the messages
        self.run.primary_task_id, self.run.federation_id = 11, NOOP_FEDERATION_ID
        self.state.run_ids[self.run.run_id] = RunRecord(run=self.run)
        self.state.task_store[11] = Task(task_id=11, run_id=self.run.run_id)
        self.partitions = _register_nodes(nodes, self.factory)  # node id -> partition id
        self.grid = InMemoryGrid(state_factory=self.factory, pull_interval=0.01)
        self.grid.set_run(self.run)
        self.stored_peak = 0  # the most messages the LinkState held while a worker took one
        self.stop = threading.Event()
        inbox: Queue[Message] = Queue()
        outbox: Queue[Message] = Queue()
        self.threads = [threading.Thread(target=add_messages_to_queue, args=(self.state, inbox, self.partitions, self.stop)),
                        threading.Thread(target=put_message_into_state, args=(self.state, outbox, self.stop))]
        if answer:
            self.threads += [threading.Thread(target=self._work, args=(inbox, outbox)) for _ in range(WORKERS)]
        for thread in self.threads:
            thread.start()

    def _work(self, inbox: Queue[Message], outbox: Queue[Message]) -> None:
        while not self.stop.is_set():
            try:
                message = inbox.get(timeout=0.1)
            except Empty:
                continue
            self.stored_peak = max(self.stored_peak, len(self.state.message_ins_store))
            partition = self.partitions[message.metadata.dst_node_id]
            time.sleep(0.001 * (partition % 5))  # replies overtake each other
            content = RecordDict({CLIENT_RECORD: ConfigRecord({PARTITION_KEY: partition})})
            reply = Message(content, reply_to=message)
            reply.metadata.__dict__["_message_id"] = f"reply-{message.metadata.message_id}"
            outbox.put(reply)

    def close(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join()


@pytest.fixture
def simulation():
    with server_identity():
        simulation = Simulation()
        yield simulation
        simulation.close()


def training(simulation: Simulation, nodes: list[int]) -> list[Message]:
    return [Message(RecordDict(), dst_node_id=node, message_type=MessageType.TRAIN) for node in nodes]


def test_the_window_bounds_the_messages_flowers_extractor_walks_and_every_reply_comes_back(simulation):
    sampled = random.Random(3).sample(sorted(simulation.partitions), 20)
    progress: list[tuple[int, int]] = []
    grid = PartitionOrderedGrid(simulation.grid, simulation.partitions, lambda received, sent: progress.append((received, sent)),
                                stop=threading.Event(), in_flight=lambda: 3)
    replies = grid.send_and_receive(training(simulation, sampled), timeout=60)
    assert sorted(partition_of(r) for r in replies) == sorted(simulation.partitions[n] for n in sampled)
    assert 0 < simulation.stored_peak <= 3  # Flower keeps a message until its reply is pulled: never more than the window
    assert progress[0] == (0, 20) and progress[-1] == (20, 20)
    assert [r for r, _ in progress] == sorted(r for r, _ in progress)
    assert simulation.state.message_ins_store == {}  # every reply pulled, every message deleted


def test_without_a_window_every_message_is_stored_at_once(simulation):
    grid = PartitionOrderedGrid(simulation.grid, simulation.partitions, stop=threading.Event())
    replies = grid.send_and_receive(training(simulation, sorted(simulation.partitions)[:12]), timeout=60)
    assert len(replies) == 12
    assert simulation.stored_peak > 3  # what the window prevents: the extractor walks all of them


def test_discovery_through_the_window_maps_every_node_to_its_partition(simulation):
    found = discover_partitions(simulation.grid, NODES, timeout=60, in_flight=lambda: 4)
    assert found == simulation.partitions
    assert simulation.stored_peak <= 4


def test_stop_ends_the_wait_and_a_timeout_returns_what_arrived():
    with server_identity():
        silent = Simulation(nodes=5, answer=False)  # nodes that never reply
        try:
            stop = threading.Event()
            grid = PartitionOrderedGrid(silent.grid, silent.partitions, stop=stop, in_flight=lambda: 2)
            started = time.monotonic()
            assert grid.send_and_receive(training(silent, sorted(silent.partitions)), timeout=0.3) == []
            assert time.monotonic() - started < 5
            threading.Timer(0.2, stop.set).start()
            with pytest.raises(RunStopped):
                grid.send_and_receive(training(silent, sorted(silent.partitions)), timeout=60)
        finally:
            silent.close()
