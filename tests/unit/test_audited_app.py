"""fedsim.engine.audited_app without a run: the partition query, the refusals, the reply the
strategy sees, on fedsim's own in-process Grid and a tiny ClientApp written here."""

from __future__ import annotations

import pytest
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MessageType, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp

from fedsim.core.errors import FedsimError
from fedsim.core.messages import CLIENT_RECORD
from fedsim.engine.audited_app import AuditGrid, AuditPlan, audited_client_app, audited_server_app, discover
from fedsim.engine.inprocess import FIRST_NODE_ID, InProcessGrid, server_identity


@pytest.fixture(autouse=True)
def _server_identity():
    with server_identity():
        yield


def _app() -> ClientApp:
    app = ClientApp()

    @app.train()
    def train(message: Message, context: Context) -> Message:
        content = RecordDict({"arrays": message.content["arrays"], "metrics": MetricRecord({"num-examples": 10})})
        return Message(content=content, reply_to=message)

    @app.query()
    def query(message: Message, context: Context) -> Message:
        return Message(content=RecordDict({"mine": ConfigRecord({"answered": "by the app"})}), reply_to=message)

    return app


def _plan(num_clients: int) -> AuditPlan:
    return AuditPlan(recorder=None, num_clients=num_clients, rounds=1, run_config={"batch-size": 8}, adversary=None,  # type: ignore[arg-type]
                     evaluate=lambda state: (0.0, 1.0), connect_timeout=0.5)


def test_the_partition_query_is_answered_by_the_audit_and_other_queries_by_the_app():
    grid = InProcessGrid(audited_client_app(_app(), {}), 3)
    assert discover(grid, 3) == {FIRST_NODE_ID + i: i for i in range(3)}
    own = Message(content=RecordDict(), message_type=MessageType.QUERY, dst_node_id=FIRST_NODE_ID)
    (reply,) = grid.send_and_receive([own])
    assert reply.content["mine"]["answered"] == "by the app"


def test_the_app_gets_its_run_config_and_the_strategy_sees_the_reply_without_the_audits_record():
    seen = {}
    app = _app()

    @app.evaluate()
    def evaluate(message: Message, context: Context) -> Message:
        seen.update(context.run_config)
        return Message(content=RecordDict({"metrics": MetricRecord({"num-examples": 1})}), reply_to=message)

    inner = InProcessGrid(audited_client_app(app, {"batch-size": 8}), 2)
    grid = AuditGrid(inner, _plan(2), discover(inner, 2))
    message = Message(content=RecordDict({"arrays": ArrayRecord({}), "config": ConfigRecord()}), message_type=MessageType.EVALUATE,
                      dst_node_id=FIRST_NODE_ID)
    (reply,) = grid.send_and_receive([message])
    assert seen == {"batch-size": 8}
    assert CLIENT_RECORD not in reply.content and set(reply.content) == {"metrics"}


def test_a_partition_that_never_connects_is_one_line():
    plan = _plan(4)
    server = audited_server_app(ServerApp(), plan)
    with pytest.raises(FedsimError, match="only 3 of the app's 4 SuperNodes connected") as error:
        server(InProcessGrid(audited_client_app(_app(), {}), 3), Context(run_id=1, node_id=0, node_config={}, state=RecordDict(), run_config={}))
    assert "\n" not in str(error.value) and plan.error is error.value


def test_training_pushed_past_send_and_receive_is_refused_with_one_line():
    inner = InProcessGrid(audited_client_app(_app(), {}), 1)
    grid: Grid = AuditGrid(inner, _plan(1), discover(inner, 1))
    message = Message(content=RecordDict({"arrays": ArrayRecord({})}), message_type=MessageType.TRAIN, dst_node_id=FIRST_NODE_ID)
    with pytest.raises(FedsimError, match="Grid.send_and_receive"):
        grid.push_messages([message])


def test_more_supernodes_than_the_ledgers_clients_is_one_line():
    """Extra nodes would train on partitions of another split than the ledger's."""
    with pytest.raises(FedsimError, match="has 3 SuperNodes but the audit expects 2") as error:
        discover(InProcessGrid(audited_client_app(_app(), {}), 3), 2, timeout=0.5)
    assert "\n" not in str(error.value)


def test_a_custom_message_type_reaches_the_apps_own_handler():
    app = _app()

    @app.train("custom")
    def custom(message: Message, context: Context) -> Message:
        return Message(content=RecordDict({"metrics": MetricRecord({"custom": 1})}), reply_to=message)

    grid = InProcessGrid(audited_client_app(app, {}), 1)
    (reply,) = grid.send_and_receive([Message(content=RecordDict(), message_type="train.custom", dst_node_id=FIRST_NODE_ID)])
    assert not reply.has_error() and reply.content["metrics"]["custom"] == 1


def test_the_app_sees_its_own_run_config_not_the_engines():
    seen = {}
    app = _app()

    @app.evaluate()
    def evaluate(message: Message, context: Context) -> Message:
        seen.update(context.run_config)
        return Message(content=RecordDict({"metrics": MetricRecord({"num-examples": 1})}), reply_to=message)

    client = audited_client_app(app, {"batch-size": 8})
    context = Context(run_id=1, node_id=FIRST_NODE_ID, node_config={"partition-id": 0}, state=RecordDict(),
                      run_config={"config": "fedsim.yaml", "batch-size": 99})  # what `flwr run` of fedsim's app carries
    message = Message(content=RecordDict(), message_type=MessageType.EVALUATE, dst_node_id=FIRST_NODE_ID)
    message.metadata.__dict__["_message_id"] = "1"
    client(message, context)
    assert seen == {"batch-size": 8}
