"""The honest client: a Flower ClientApp that trains on its partition and reports who it is.

Node ids are random per run, so every reply carries the client's partition id. A client's
randomness comes only from (seed, round, partition id): the same seed gives the same update
whichever simulation worker runs it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.app.typing import MetricRecordValues
from flwr.clientapp import ClientApp
from flwr.clientapp.typing import ClientAppCallable, Mod

from fedsim.core.config import Config
from fedsim.core.messages import CLIENT_RECORD, DP_STATE, PARTITION_KEY, PROXIMAL_MU, array_record, config_record, number
from fedsim.learning.datasets import pool_for
from fedsim.learning.dp_sgd import epsilon
from fedsim.learning.models import model_for
from fedsim.learning.training import evaluate, torch_threads, train_locally


def client_seed(seed: int, server_round: int, partition: int) -> int:
    """A distinct, reproducible seed per (run seed, round, client)."""
    return int(np.random.SeedSequence([seed, server_round, partition]).generate_state(1)[0])


def threads_mod(count: float) -> Mod:
    """A ClientApp mod (outermost) that runs the client's handlers and mods on `count` torch threads.

    Parameters
    ----------
    count : float
        `backend.cpus_per_client`, the CPUs Ray gives each client.

    Returns
    -------
    callable
        The mod; the process's own thread setting is restored after each message.
    """

    def fixed_threads(message: Message, context: Context, call_next: ClientAppCallable) -> Message:
        with torch_threads(count):
            return call_next(message, context)

    return fixed_threads


def make_client_app(config: Config, client_records: Mapping[int, np.ndarray], mods: Sequence = (), train_mods: Sequence = ()) -> ClientApp:
    """A ClientApp whose clients train on `client_records[partition id]` of the configured pool.

    `mods` are Flower ClientApp mods wrapped around every handler (a curious participant is one);
    `train_mods` only around training, inside `mods` (a client-side DP wrapper's clipping).
    The client applies FedProx's proximal term when the server sends one, reports its training
    loss (QFedAvg weighs by it) and, under DP-SGD, its epsilon so far.
    """
    app = ClientApp(mods=[threads_mod(config.backend.cpus_per_client), *mods])

    @app.train(mods=list(train_mods))
    def train(message: Message, context: Context) -> Message:
        return _train_reply(config, client_records, message, context)

    @app.query()
    def identify(message: Message, context: Context) -> Message:
        """Tell the server this node's partition id (node ids are random per run)."""
        partition = int(context.node_config[PARTITION_KEY])
        return Message(content=RecordDict({CLIENT_RECORD: ConfigRecord({PARTITION_KEY: partition})}), reply_to=message)

    @app.evaluate()
    def evaluate_local(message: Message, context: Context) -> Message:
        return _evaluate_reply(config, client_records, message, context)

    return app


def _local_data(config: Config, client_records: Mapping[int, np.ndarray], context: Context) -> tuple[int, torch.Tensor, torch.Tensor]:
    """The node's partition id and its records (x, y)."""
    partition = int(context.node_config[PARTITION_KEY])
    return partition, *pool_for(config.data).take(client_records[partition])


def _local_model(config: Config, message: Message) -> torch.nn.Module:
    """The configured model with the parameters the server sent."""
    model = model_for(config)
    model.load_state_dict(array_record(message.content).to_torch_state_dict())
    return model


def _train_reply(config: Config, client_records: Mapping[int, np.ndarray], message: Message, context: Context) -> Message:
    """Train locally (FedProx's term and DP-SGD as configured, on the GPU Ray gave the client if any);
    reply with the model, metrics and partition id.
    """
    partition, x, y = _local_data(config, client_records, context)
    model = _local_model(config, message)
    train_config = config_record(message.content)
    seed = client_seed(config.seed, int(number(train_config["server-round"])), partition)
    torch.manual_seed(seed)
    mu = float(number(train_config[PROXIMAL_MU])) if PROXIMAL_MU in train_config else 0.0
    dp = config.defense.dp_sgd
    if config.backend.gpus_per_client > 0 and torch.cuda.is_available():  # Ray gave this client a GPU
        model, x, y = model.to("cuda"), x.to("cuda"), y.to("cuda")
    result = train_locally(model, x, y, config.train, seed, proximal_mu=mu, dp_sgd=dp)
    model.to("cpu")
    metrics: dict[str, MetricRecordValues] = {"num-examples": len(y), "train_loss": result.loss}
    if dp is not None:
        steps = result.steps + (int(number(config_record(context.state, DP_STATE)["steps"])) if DP_STATE in context.state else 0)
        context.state[DP_STATE] = ConfigRecord({"steps": steps})
        metrics["epsilon"] = epsilon(dp, result.sample_rate, steps)
    content = RecordDict({
        "arrays": ArrayRecord(model.state_dict()),
        "metrics": MetricRecord(metrics),
        CLIENT_RECORD: ConfigRecord({PARTITION_KEY: partition}),
    })
    return Message(content=content, reply_to=message)


def _evaluate_reply(config: Config, client_records: Mapping[int, np.ndarray], message: Message, context: Context) -> Message:
    """Evaluate the server's model on this node's records."""
    partition, x, y = _local_data(config, client_records, context)
    result = evaluate(_local_model(config, message), x, y)
    content = RecordDict({
        "metrics": MetricRecord({"num-examples": len(y), "loss": result.loss, "accuracy": result.accuracy}),
        CLIENT_RECORD: ConfigRecord({PARTITION_KEY: partition}),
    })
    return Message(content=content, reply_to=message)
