"""Flower's ServerApp and ClientApp in one process, without Ray: the `in-process` engine.

A Ray simulation pays seconds per run to start Ray and the client actors (each a process that
imports PyTorch and Flower) before the first round; for a small federation that is most of the
run. Here a message to a client is a function call, which makes small runs quick (the test
suite) and lets a breakpoint in a ClientApp, a mod or a strategy stop there (debugging).

What a transport would guarantee is kept: the Grid follows Flower's `InMemoryGrid` (message ids,
push then pull); each node keeps its `Context` across rounds, as a SuperNode does; messages are
copied both ways, so a ClientApp never shares an object with the server; each client call runs
on its own copy of the global random state, as in an actor process of its own; and a ClientApp's
exception becomes the error reply Flower's simulation engine makes of it (same code, same
reason text), its traceback logged on Flower's logger. Clients run one after another. The
records equal the Ray engine's byte for byte (tests/test_inprocess.py).
"""

from __future__ import annotations

import copy
import logging
import random
import traceback
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from uuid import uuid4

import numpy as np
import torch
from flwr.app import Context, Error, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.clientapp.client_app import ClientAppException
from flwr.common.constant import NUM_PARTITIONS_KEY, PARTITION_ID_KEY, SUPERLINK_NODE_ID, ErrorCode
from flwr.serverapp import Grid, ServerApp
from flwr.supercore.run import Run
from flwr.supercore.task_identity import TaskIdentity

RUN_ID = 1
FIRST_NODE_ID = 1001  # node ids 1001, 1002, ...: readable in a debugger (Flower's are random 64-bit integers)


@contextmanager
def own_random_state() -> Iterator[None]:
    """Python's, NumPy's and PyTorch's global random state as they were, whatever the body draws or seeds."""
    python_state, numpy_state = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        try:
            yield
        finally:
            random.setstate(python_state)
            np.random.set_state(numpy_state)


class InProcessGrid(Grid):
    """A Flower Grid whose nodes run `client_app` in this process, one message after another.

    Parameters
    ----------
    client_app : flwr.clientapp.ClientApp
        The app every node runs; node `i` (id `FIRST_NODE_ID + i`) holds partition `i`.
    num_nodes : int
        Number of nodes (virtual SuperNodes), partitions 0..num_nodes-1.
    """

    def __init__(self, client_app: ClientApp, num_nodes: int):
        self._client_app = client_app
        self._run = Run.create_empty(RUN_ID)
        self._contexts = {
            FIRST_NODE_ID + i: Context(run_id=RUN_ID, node_id=FIRST_NODE_ID + i, node_config={PARTITION_ID_KEY: i, NUM_PARTITIONS_KEY: num_nodes},
                                       state=RecordDict(), run_config={})
            for i in range(num_nodes)
        }
        self._replies: dict[str, Message] = {}
        self.pull_interval = 0.0

    def set_run(self, run: Run) -> None:
        self._run = run

    @property
    def run(self) -> Run:
        return self._run

    def create_message(self, content: RecordDict, message_type: str, dst_node_id: int, group_id: str, ttl: float | None = None) -> Message:
        return Message(content, dst_node_id, message_type, ttl=ttl, group_id=group_id)

    def get_node_ids(self) -> list[int]:
        return list(self._contexts)

    def push_messages(self, messages: Iterable[Message]) -> list[str]:
        """Deliver each message to its node's ClientApp now; the replies wait for `pull_messages`."""
        ids = []
        for message in messages:
            message.metadata.__dict__["_message_id"] = str(uuid4())
            reply = self._deliver(copy.deepcopy(message))
            reply.metadata.__dict__["_message_id"] = str(uuid4())
            self._replies[message.metadata.message_id] = copy.deepcopy(reply)
            ids.append(message.metadata.message_id)
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> list[Message]:
        return [self._replies.pop(i) for i in list(message_ids) if i in self._replies]

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> list[Message]:
        return self.pull_messages(self.push_messages(messages))

    def _deliver(self, message: Message) -> Message:
        """The node's reply, or the error reply Flower's simulation engine makes of a ClientApp's exception."""
        context = self._contexts[message.metadata.dst_node_id]
        try:
            with own_random_state():
                try:
                    return self._client_app(message=message, context=context)
                except Exception as raised:
                    raise ClientAppException(str(raised)) from raised
        except ClientAppException as failure:  # as flwr.server.superlink.fleet.vce.vce_api.worker reports it
            logger = logging.getLogger("flwr")
            logger.error(failure)
            logger.error(traceback.format_exc())
            reason = str(type(failure)) + ":<'" + str(failure) + "'>"
            return Message(Error(code=ErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason=reason), reply_to=message)


@contextmanager
def server_identity() -> Iterator[None]:
    """The task identity Flower gives a ServerApp's process (its messages' run and source node), restored afterwards."""
    saved = TaskIdentity._task_id, TaskIdentity._run_id, TaskIdentity._node_id
    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, RUN_ID, SUPERLINK_NODE_ID
    try:
        yield
    finally:
        TaskIdentity._task_id, TaskIdentity._run_id, TaskIdentity._node_id = saved


def run_in_process(server_app: ServerApp, client_app: ClientApp, num_clients: int) -> None:
    """Run `server_app` against `num_clients` in-process nodes running `client_app` (the `in-process` engine).

    Parameters
    ----------
    server_app, client_app : flwr.serverapp.ServerApp, flwr.clientapp.ClientApp
        The apps, as the Ray engine (`fedsim.engine.simulation.simulate`) would run them.
    num_clients : int
        Nodes, partition ids 0..num_clients-1.

    Raises
    ------
    Exception
        Whatever stopped the ServerApp (Flower's simulation only logs it; fedsim's ServerApp also
        keeps it in its plan).
    """
    grid = InProcessGrid(client_app, num_clients)
    context = Context(run_id=RUN_ID, node_id=SUPERLINK_NODE_ID, node_config={}, state=RecordDict(), run_config={})
    with server_identity():
        server_app(grid, context)
