"""manifest.json as a typed model (docs/design.md, section 3.3): what the recorder writes and `Run` reads.

One model instead of a dict read by raw keys in many places, so a misspelt key is a type error
rather than a KeyError at run time. The JSON keeps the layout the recorder has always written
(`json.dumps(indent=1)`, keys in the same order, optional keys absent rather than null), so
existing run folders open unchanged and a manifest read and written back is the same bytes.
Keys this model does not know are kept as they were.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

FORMAT = 1
Status = Literal["running", "complete", "failed"]


def now() -> str:
    """The current UTC time as the manifest writes it (ISO 8601, seconds)."""
    return datetime.now(UTC).isoformat(timespec="seconds")


class _Entry(BaseModel):
    model_config = ConfigDict(extra="allow", validate_assignment=True)


class ClientEntry(_Entry):
    """A client whose parameters the server received in a round."""

    num_examples: int = Field(description="the example count the client reported (FedAvg's weight)")


class RoundEntry(_Entry):
    """One complete round."""

    clients: dict[int, ClientEntry] = Field(default_factory=dict, description="partition id -> the client heard; empty under secure aggregation")
    stored: list[int] | None = Field(None, description="partition ids whose returned parameters were kept (config record.clients); "
                                     "absent: every client heard")
    failed: list[int] = Field(default_factory=list, description="partition ids whose reply was an error (-1 where unknown)")
    dropped: list[int] = Field(default_factory=list, description="partition ids sent training that never replied")
    train_loss: float | None = Field(None, description="the clients' mean training loss, where they reported one")
    secure_sum: list[int] | None = Field(None, description="under secure aggregation: the partition ids whose updates were summed")
    record_seconds: float | None = Field(None, description="seconds the recorder took to write the round")

    def kept(self) -> list[int]:
        """Partition ids whose returned parameters the round's folder holds, in partition order."""
        return sorted(self.clients if self.stored is None else self.stored)

    def sampled(self) -> set[int]:
        """Partition ids sent the round's training message: those that received it and those that never replied."""
        return self.received() | set(self.dropped)

    def received(self) -> set[int]:
        """Partition ids that received the round's training message: heard, summed, or failed after receiving it."""
        return set(self.clients) | set(self.secure_sum or ()) | (set(self.failed) - {-1})


class Manifest(_Entry):
    """manifest.json: the run's identity, state, complete rounds and every listed file's sha256.

    Attributes
    ----------
    status : str
        "running", "complete" or "failed" (then `error` says why).
    rounds_completed : int
        The last complete round (-1 before the initial model is recorded).
    rounds : dict of int to RoundEntry
        The complete rounds, 0 (the initial model) included, in the order recorded.
    victim_rounds : list of int or None
        The complete rounds in which the adversary's victim was sampled; None without an adversary.
    files : dict of str to str
        Relative path -> sha256 hex digest of every listed file.
    """

    format: int = Field(FORMAT, description="the manifest layout's version")
    name: str = Field(description="the config's name")
    status: Status = Field(description="running, complete or failed")
    seed: int = Field(description="the config's seed")
    config_sha256: str = Field(description="Config.digest() of config.yaml")
    versions: dict[str, str] = Field(default_factory=dict, description="python and package versions that wrote the run")
    created: str = Field(description="when the run folder was created (UTC, ISO 8601)")
    updated: str = Field(description="when the manifest was last written (UTC, ISO 8601)")
    rounds_completed: int = Field(-1, description="the last complete round; -1 before round 0")
    rounds: dict[int, RoundEntry] = Field(default_factory=dict, description="round number -> what the round recorded")
    victim_rounds: list[int] | None = Field(None, description="the rounds in which adversary.victim was sampled (sent training); "
                                            "absent without an adversary")
    files: dict[str, str] = Field(default_factory=dict, description="relative path -> sha256 of every listed file")
    error: str | None = Field(None, description="why a failed run failed")

    @classmethod
    def from_json(cls, text: str | bytes) -> Manifest:
        """Parse manifest.json.

        Parameters
        ----------
        text : str or bytes
            The file's contents.

        Returns
        -------
        Manifest
            The validated manifest.

        Raises
        ------
        ValueError
            If the text is not JSON or not a manifest (pydantic's ValidationError is one).
        """
        return cls.model_validate(json.loads(text))

    def to_json(self) -> bytes:
        """manifest.json's bytes: `json.dumps(indent=1)` of the keys in model order, absent ones left out."""
        return json.dumps(self.model_dump(exclude_none=True), indent=1).encode()
