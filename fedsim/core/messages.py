"""Keys of the messages fedsim's ServerApp and ClientApp exchange, beyond Flower's own.

A leaf of the import graph: the honest client, the server's wrappers (recorder, secure
aggregation, curious server) and the curious participant's mod all read these, so none of them
imports another just for a key. Node ids are random per run, so every reply names its partition.
"""

from __future__ import annotations

from typing import TypeVar

from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.app.typing import ConfigRecordValues

R = TypeVar("R", ArrayRecord, MetricRecord, ConfigRecord)

PARTITION_KEY = "partition-id"  # in a node's node_config and in every reply's CLIENT_RECORD
CLIENT_RECORD = "client"  # the ConfigRecord of a reply that says who sent it
DP_STATE = "dp-sgd"  # in the node's Context.state: DP-SGD steps taken in earlier rounds
PROXIMAL_MU = "proximal-mu"  # FedProx's proximal term weight, in the train config
AGGREGATE = -1  # the partition id of a secure aggregate (no single client)
CONTRIBUTORS = "contributors"  # the partition ids summed into a secure aggregate


def partition_of(reply: Message) -> int:
    """The partition id a client put in its reply.

    Parameters
    ----------
    reply : flwr.app.Message
        A reply from fedsim's ClientApp (or the secure-aggregation view's summed reply).

    Returns
    -------
    int
        The client's partition id; `AGGREGATE` (-1) for a secure sum.
    """
    return int(number(config_record(reply.content, CLIENT_RECORD)[PARTITION_KEY]))


# Typed accessors. Flower types `RecordDict[key]` as the union of its three record kinds and a
# record's values as the union of every scalar and list it may hold; these narrow both, with a
# check that says which key held what instead of failing later on a missing attribute.

def array_record(content: RecordDict, key: str = "arrays") -> ArrayRecord:
    """The ArrayRecord under `key` of a message's content.

    Parameters
    ----------
    content : flwr.app.RecordDict
        A message's content.
    key : str
        The record's key ("arrays" for fedsim's and Flower's strategies' model weights).

    Returns
    -------
    flwr.app.ArrayRecord
        The record itself (not a copy).

    Raises
    ------
    KeyError
        If `content` has no record under `key`.
    TypeError
        If the record under `key` is a MetricRecord or a ConfigRecord.
    """
    return _record(content, key, ArrayRecord)


def metric_record(content: RecordDict, key: str = "metrics") -> MetricRecord:
    """The MetricRecord under `key` of a message's content (see `array_record`)."""
    return _record(content, key, MetricRecord)


def config_record(content: RecordDict, key: str = "config") -> ConfigRecord:
    """The ConfigRecord under `key` of a message's content (see `array_record`)."""
    return _record(content, key, ConfigRecord)


def _record(content: RecordDict, key: str, kind: type[R]) -> R:
    record = content[key]
    if not isinstance(record, kind):
        raise TypeError(f"message record {key!r} is a {type(record).__name__}, expected a {kind.__name__}")
    return record


def number(value: ConfigRecordValues) -> int | float:
    """A scalar record value narrowed to a number.

    Parameters
    ----------
    value : int, float, str, bytes, bool or list
        A value read from a ConfigRecord or MetricRecord.

    Returns
    -------
    int or float
        `value` itself.

    Raises
    ------
    TypeError
        If `value` is a list, string or bytes.
    """
    if not isinstance(value, int | float):
        raise TypeError(f"record value {value!r} is a {type(value).__name__}, expected a number")
    return value


def int_list(value: ConfigRecordValues) -> list[int]:
    """A list record value narrowed to a list of ints (e.g. `CONTRIBUTORS`).

    Raises
    ------
    TypeError
        If `value` is not a list of ints.
    """
    if not isinstance(value, list) or not all(isinstance(v, int) for v in value):
        raise TypeError(f"record value {value!r} is not a list of ints")
    return [int(v) for v in value]
