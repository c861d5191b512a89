"""Test doubles and references shared by several test modules (no test module imports another).

- `RecordingGrid`: fedsim's own in-process Grid (`fedsim.engine.inprocess`), keeping what it was
  sent, for one real round of any strategy without Ray;
- `fedavg_reference`: FedAvg computed here, in float64, to check aggregates against;
- `assert_states_close` / `assert_states_equal`: state dicts compared key by key;
- `STRATEGY_ARGS`: constructor arguments that make each registered strategy run on 4 clients;
- `record_hashes`: the sha256 of a run folder's records, to compare two runs by bytes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path

import torch
from flwr.app import Message

from fedsim.core.messages import partition_of
from fedsim.engine.inprocess import FIRST_NODE_ID, InProcessGrid

NODE = FIRST_NODE_ID  # node id of partition 0; partition i is node NODE + i

DP = {"noise_multiplier": 0.1, "clipping_norm": 10.0}
STRATEGY_ARGS = {name: DP for name in ("dp-server-fixed", "dp-client-fixed")} | {
    "dp-server-adaptive": {"noise_multiplier": 0.1}, "dp-client-adaptive": {"noise_multiplier": 0.1},
    "fedprox": {"proximal_mu": 0.1}, "multikrum": {"num_nodes_to_select": 2}, "fedavg-normbound": {"max_update_norm": 0.5},
}


class RecordingGrid(InProcessGrid):
    """fedsim's in-process Grid that also keeps every message pushed to it, in order (`sent`)."""

    def __init__(self, client_app, num_nodes: int):
        super().__init__(client_app, num_nodes)
        self.sent: list[Message] = []

    def push_messages(self, messages: Iterable[Message]) -> list[str]:
        messages = list(messages)
        self.sent += messages
        return super().push_messages(messages)


def fedavg_reference(replies: list[Message], exclude: int | None = None) -> dict:
    """FedAvg computed here: the example-weighted mean of the replies' arrays (float64)."""
    kept = [r for r in replies if partition_of(r) != exclude]
    weights = torch.tensor([float(r.content["metrics"]["num-examples"]) for r in kept], dtype=torch.float64)
    weights /= weights.sum()
    states = [r.content["arrays"].to_torch_state_dict() for r in kept]
    return {k: sum(w * s[k].double() for w, s in zip(weights, states)) for k in states[0]}


def assert_states_close(actual: dict, expected: dict, **tolerance) -> None:
    assert actual.keys() == expected.keys()
    for key in expected:
        torch.testing.assert_close(actual[key], expected[key], **(tolerance or {"rtol": 1e-5, "atol": 1e-6}))


def assert_states_equal(actual: dict, expected: dict) -> None:
    assert actual.keys() == expected.keys() and all(torch.equal(actual[k], expected[k]) for k in expected)


def record_hashes(folder: Path) -> dict[str, str]:
    """sha256 of every record of a run folder (parameters and the ledger), by path relative to it."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.suffix == ".safetensors" or p.name == "membership.parquet"}
