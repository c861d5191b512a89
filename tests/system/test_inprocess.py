"""The in-process engine (`backend.engine: in-process`): Flower's apps without Ray.

Unit tests of its Grid against what Flower's simulation engine does (error replies, a node's
Context across rounds, copies both ways, each client call's own random state), and one run of
the curious participant's gradient ascent whose records equal the Ray engine's byte for byte
(tests/test_simulation.py compares a passive server's run the same way).
"""

import hashlib
import random

import numpy as np
import pytest
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.common.constant import ErrorCode

from conftest import RAY, small_config
from fedsim.app.console import RunConsole
from fedsim.app.experiment import run_experiment
from fedsim.engine.inprocess import InProcessGrid, server_identity


def _app() -> ClientApp:
    app = ClientApp()

    @app.train()
    def train(message: Message, context: Context) -> Message:
        if message.content["config"]["fail"]:
            raise ValueError("value cannot be converted to type float without overflow")
        seen = int(context.state["seen"]["n"]) + 1 if "seen" in context.state else 1
        context.state["seen"] = ConfigRecord({"n": seen})
        arrays = message.content["arrays"]
        arrays["w"] = ArrayRecord({"w": torch.full((2,), float(seen))})["w"]  # a client that writes into what it was sent
        torch.manual_seed(123), random.seed(123), np.random.seed(123)  # and seeds the process's generators, as fedsim's clients do
        return Message(RecordDict({"arrays": arrays, "partition": ConfigRecord({"id": context.node_config["partition-id"]})}), reply_to=message)

    return app



def _message(node: int, fail: bool = False) -> Message:
    content = RecordDict({"arrays": ArrayRecord({"w": torch.zeros(2)}), "config": ConfigRecord({"fail": fail})})
    return Message(content, dst_node_id=node, message_type="train")


def test_nodes_keep_their_context_and_never_share_objects_with_the_server():
    grid = InProcessGrid(_app(), 2)
    with server_identity():
        nodes = grid.get_node_ids()
        for expected in (1.0, 2.0):
            sent = [_message(node) for node in nodes]
            replies = {r.metadata.src_node_id: r for r in grid.send_and_receive(sent)}
            assert {n: int(r.content["partition"]["id"]) for n, r in replies.items()} == {nodes[0]: 0, nodes[1]: 1}
            assert all(r.content["arrays"]["w"].numpy().tolist() == [expected, expected] for r in replies.values())  # each node's own count
            assert all(m.content["arrays"]["w"].numpy().tolist() == [0.0, 0.0] for m in sent)  # what the server sent is untouched
            assert {r.metadata.reply_to_message_id for r in replies.values()} == {m.metadata.message_id for m in sent}


def test_a_client_call_leaves_the_processs_random_state_as_it_was():
    grid = InProcessGrid(_app(), 1)
    torch.manual_seed(7), random.seed(7), np.random.seed(7)
    expected = torch.rand(3), random.random(), np.random.rand()
    torch.manual_seed(7), random.seed(7), np.random.seed(7)
    with server_identity():
        grid.send_and_receive([_message(grid.get_node_ids()[0])])
    assert torch.equal(torch.rand(3), expected[0]) and random.random() == expected[1] and np.random.rand() == expected[2]


def test_a_client_exception_becomes_flowers_error_reply_and_its_traceback_is_logged(caplog):
    grid = InProcessGrid(_app(), 1)
    with server_identity():
        (reply,) = grid.send_and_receive([_message(grid.get_node_ids()[0], fail=True)])
    assert reply.has_error() and reply.error.code == ErrorCode.CLIENT_APP_RAISED_EXCEPTION
    # the reason as flwr.server.superlink.fleet.vce.vce_api.worker writes it for a ClientApp's exception
    assert reply.error.reason == ("<class 'flwr.clientapp.client_app.ClientAppException'>:<'\nException ClientAppException occurred. "
                                  "Message: value cannot be converted to type float without overflow'>")
    assert "Traceback" in caplog.text and "ValueError" in caplog.text


def _record_hashes(folder):
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*.safetensors"))}


@pytest.mark.integration
def test_the_participants_ascent_records_the_same_bytes_on_ray_and_in_process(tmp_path):
    settings = ("data.num_clients=3", "adversary.role=participant", "adversary.mode=gradient-ascent", "adversary.victim=1",
                "adversary.gamma=0.5")
    ray = _record_hashes(run_experiment(small_config(*settings, RAY), tmp_path / "ray", RunConsole(quiet=True)))
    in_process = _record_hashes(run_experiment(small_config(*settings), tmp_path / "in-process", RunConsole(quiet=True)))
    assert len(ray) == 1 + 2 * 4 and ray == in_process  # the globals and every client's upload, the participant's ascended one included
