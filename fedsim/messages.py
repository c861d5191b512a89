"""Keys of the messages fedsim's ServerApp and ClientApp exchange, beyond Flower's own.

A leaf of the import graph: the honest client, the server's wrappers (recorder, secure
aggregation, curious server) and the curious participant's mod all read these, so none of them
imports another just for a key. Node ids are random per run, so every reply names its partition.
"""

from __future__ import annotations

from flwr.app import Message

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
    return int(reply.content[CLIENT_RECORD][PARTITION_KEY])
