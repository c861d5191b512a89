"""The run folder on disk (DESIGN.md section 4): every round's parameters, the manifest, metrics.

Writes are atomic: each file goes to a temporary name and is renamed into place, and a round
counts as complete only once all its files are in `rounds/NNNN/` and the manifest (itself
replaced atomically) lists them with their sha256. A crash therefore never leaves a round that
looks complete but is not.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import platform
import shutil
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save

from fedsim.config import Config
from fedsim.errors import FedsimError

MANIFEST = "manifest.json"
TRAINING_CSV = "metrics/training.csv"
LEAKAGE_CSV = "metrics/leakage.csv"
TRAINING_COLUMNS = ["round", "test_loss", "test_accuracy", "train_loss", "clients", "failures", "seconds"]


def training_columns(config: Config) -> list[str]:
    """training.csv's columns: with DP-SGD, the worst client's epsilon and each client's."""
    if config.defense.dp_sgd is None:
        return TRAINING_COLUMNS
    return [*TRAINING_COLUMNS, "epsilon_max", *(f"epsilon_client_{c:03d}" for c in range(config.data.num_clients))]


LEAKAGE_COLUMNS = [
    "round", "attacker", "attack", "target", "observed_rounds", "auc", "accuracy",
    "tpr_at_fpr_1e-2", "tpr_at_fpr_1e-3", "n_members", "n_nonmembers",
]

StateDict = Mapping[str, torch.Tensor]


def round_dir(round_number: int) -> str:
    return f"rounds/{round_number:04d}"


def client_file(round_number: int, client: int, kind: str = "clients") -> str:
    """Relative path of what client `client` sent (kind 'clients') or was sent ('broadcast')."""
    return f"{round_dir(round_number)}/{kind}/client-{client:03d}.safetensors"


def global_file(round_number: int) -> str:
    return f"{round_dir(round_number)}/global.safetensors"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _write_atomically(path: Path, payload: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    with temporary.open("wb") as handle:
        handle.write(payload)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


def serialize_state(state: StateDict, metadata: Mapping[str, str]) -> bytes:
    """safetensors bytes of a state dict: deterministic for equal tensors and metadata."""
    tensors = {name: tensor.detach().cpu().contiguous() for name, tensor in state.items()}
    # One metadata key: safetensors writes several in hash-map order, which varies per process.
    return save(tensors, metadata={"fedsim": json.dumps(dict(metadata), sort_keys=True)})


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {"python": platform.python_version()}
    for package in ("fedsim", "torch", "flwr", "ray", "numpy"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            found[package] = "unknown"
    return found


class Recorder:
    """Owns one run folder while the run writes it."""

    def __init__(self, folder: Path, config: Config):
        self.folder = folder
        self.config = config
        self.manifest: dict[str, Any] = {}
        self.metrics_files = {TRAINING_CSV, LEAKAGE_CSV}

    def start(self, ledger_writer) -> None:
        """Create the folder with config, ledger, empty metrics and a 'running' manifest."""
        try:
            self.folder.mkdir(parents=True, exist_ok=False)
        except FileExistsError:
            raise FedsimError(f"--out: {self.folder} already exists; choose another folder or remove it") from None
        except OSError as exc:
            raise FedsimError(f"--out: cannot create {self.folder} ({exc.strerror}); choose a writable folder") from None
        now = datetime.now(timezone.utc).isoformat(timespec="seconds")
        self.manifest = {
            "format": 1,
            "name": self.config.name,
            "status": "running",
            "seed": self.config.seed,
            "config_sha256": self.config.digest(),
            "versions": _versions(),
            "created": now,
            "updated": now,
            "rounds_completed": -1,
            "rounds": {},
            "files": {},
        }
        self._write_file("config.yaml", self.config.to_yaml().encode())
        ledger_path = ledger_writer(self.folder)
        self.manifest["files"][ledger_path.name] = sha256_of(ledger_path)
        for name, columns in ((TRAINING_CSV, training_columns(self.config)), (LEAKAGE_CSV, LEAKAGE_COLUMNS)):
            self._write_file(name, (",".join(columns) + "\n").encode(), listed=False)
        self._save_manifest()

    def _write_file(self, relative: str, payload: bytes, listed: bool = True) -> None:
        _write_atomically(self.folder / relative, payload)
        if listed:
            self.manifest["files"][relative] = hashlib.sha256(payload).hexdigest()

    def _save_manifest(self) -> None:
        self.manifest["updated"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
        _write_atomically(self.folder / MANIFEST, json.dumps(self.manifest, indent=1).encode())

    def record_round(
        self,
        round_number: int,
        global_state: StateDict,
        clients: Mapping[int, tuple[StateDict, int]] | None = None,
        broadcast: Mapping[int, StateDict] | None = None,
        failed: list[int] | None = None,
        secure_sum: list[int] | None = None,
    ) -> None:
        """Write a round: the aggregate, each client's (state, num_examples), what was broadcast,
        the partition ids of clients whose reply was an error (-1 where unknown) and, under
        secure aggregation, of those whose updates the server only saw summed.

        Files are staged in a hidden folder and renamed to rounds/NNNN as one step, then the
        manifest lists them: only then is the round complete.
        """
        final = self.folder / round_dir(round_number)
        staging = final.with_name(f".{final.name}.partial")
        shutil.rmtree(staging, ignore_errors=True)
        shutil.rmtree(final, ignore_errors=True)  # a leftover of an interrupted attempt, never listed
        hashes: dict[str, str] = {}

        def stage(relative: str, state: StateDict, metadata: dict[str, str]) -> None:
            payload = serialize_state(state, metadata)
            _write_atomically(staging / Path(relative).relative_to(round_dir(round_number)), payload)
            hashes[relative] = hashlib.sha256(payload).hexdigest()

        stage(global_file(round_number), global_state, {"round": str(round_number), "source": "global"})
        client_info = {}
        for client, (state, num_examples) in sorted((clients or {}).items()):
            meta = {"round": str(round_number), "source": f"client-{client:03d}", "num_examples": str(num_examples)}
            stage(client_file(round_number, client), state, meta)
            client_info[str(client)] = {"num_examples": num_examples}
        for client, state in sorted((broadcast or {}).items()):
            meta = {"round": str(round_number), "source": f"broadcast-{client:03d}"}
            stage(client_file(round_number, client, "broadcast"), state, meta)
        os.replace(staging, final)
        self.manifest["files"].update(hashes)
        self.manifest["rounds"][str(round_number)] = {"clients": client_info, "failed": sorted(failed or [])}
        if secure_sum is not None:
            self.manifest["rounds"][str(round_number)]["secure_sum"] = secure_sum
        self.manifest["rounds_completed"] = round_number
        self._save_manifest()

    def append_training(self, row: Mapping[str, Any]) -> None:
        with (self.folder / TRAINING_CSV).open("a", newline="") as handle:
            columns = training_columns(self.config)
            csv.DictWriter(handle, fieldnames=columns).writerow({k: row.get(k, "") for k in columns})

    def write_metrics(self, tables: Mapping[str, Any]) -> None:
        """Write metrics tables (DataFrames) by relative path, e.g. metrics/leakage.csv."""
        for relative, table in tables.items():
            _write_atomically(self.folder / relative, table.to_csv(index=False).encode())
            self.metrics_files.add(relative)

    def finish(self, status: str, error: str | None = None) -> None:
        """Mark the run complete or failed; list the metrics files with their checksums."""
        self.manifest["status"] = status
        if error:
            self.manifest["error"] = error
        for relative in sorted(self.metrics_files):
            if (self.folder / relative).exists():
                self.manifest["files"][relative] = sha256_of(self.folder / relative)
        self._save_manifest()
