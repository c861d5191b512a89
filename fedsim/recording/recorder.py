"""The run folder on disk (docs/design.md, section 3): every round's parameters, the manifest, metrics.

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
import time
from collections.abc import Callable, Iterable, Mapping
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, cast

import torch
from safetensors.torch import save

from fedsim.core.config import Config
from fedsim.core.errors import FedsimError
from fedsim.core.layout import (  # noqa: F401  (re-exported: the run folder's names, for callers of the recorder)
    LEAKAGE_COLUMNS,
    LEAKAGE_CSV,
    MANIFEST,
    PER_CLASS_COLUMNS,
    PER_CLASS_CSV,
    PLOTS,
    REPORT_HTML,
    ROC_COLUMNS,
    ROC_CSV,
    TRAINING_COLUMNS,
    TRAINING_CSV,
    client_file,
    global_file,
    is_report_file,
    round_dir,
)
from fedsim.recording.manifest import ClientEntry, Manifest, RoundEntry, Status, now
from fedsim.recording.run import Run


def training_columns(config: Config) -> list[str]:
    """training.csv's columns: with DP-SGD, the worst client's epsilon and each client's."""
    if config.defense.dp_sgd is None:
        return TRAINING_COLUMNS
    return [*TRAINING_COLUMNS, "epsilon_max", *(f"epsilon_client_{c:03d}" for c in range(config.data.num_clients))]


StateDict = Mapping[str, torch.Tensor]


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_atomically(path: Path, payload: bytes) -> None:
    """Write to a temporary name, then rename into place: a reader never sees half a file, and a
    failed write (a full disk) leaves no temporary file behind.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    try:
        with temporary.open("wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        with suppress(OSError):
            temporary.unlink(missing_ok=True)
        raise


def serialize_state(state: StateDict, metadata: Mapping[str, str], dtype: torch.dtype | None = None) -> bytes:
    """Safetensors bytes of a state dict: deterministic for equal tensors and metadata.
    `dtype` (float16) rounds the floating-point tensors to halve the bytes.
    """
    def stored(tensor: torch.Tensor) -> torch.Tensor:
        tensor = tensor.detach().cpu()
        return (tensor.to(dtype) if dtype is not None and tensor.is_floating_point() else tensor).contiguous()

    tensors = {name: stored(tensor) for name, tensor in state.items()}
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


def kept_clients(config: Config, heard: Iterable[int]) -> list[int]:
    """The clients of a round whose returned parameters the run folder keeps (config `record.clients`).

    Parameters
    ----------
    config : Config
        The run's config: `record.clients`, `record.references` and `adversary.victim`.
    heard : iterable of int
        Partition ids of the clients heard in the round.

    Returns
    -------
    list of int
        In partition order: every client heard (`all`), or the victim where it was heard plus, as
        references, the `record.references` other clients heard with the smallest partition ids
        (`victim`): a choice that depends only on who was heard, so every engine and a resumed run
        make the same one.
    """
    heard = sorted(heard)
    if config.record.clients == "all":
        return heard
    victim = config.adversary.victim
    others = [c for c in heard if c != victim][: config.record.references]
    return sorted([victim, *others] if victim in heard else others)


class Recorder:
    """Owns one run folder while the run writes it."""

    def __init__(self, folder: Path, config: Config):
        self.folder = folder
        self.config = config
        self._manifest: Manifest | None = None
        self.outputs = {TRAINING_CSV, LEAKAGE_CSV}  # listed with their sha256 when the run finishes

    @property
    def manifest(self) -> Manifest:
        """The manifest as last written (`start` or `reopen` creates it)."""
        if self._manifest is None:
            raise RuntimeError("the recorder has no manifest before start() or reopen()")
        return self._manifest

    def start(self, ledger_writer, force: bool = False) -> None:
        """Create the folder with config, ledger, empty metrics and a 'running' manifest.

        An existing folder is refused, unless `force` and it is a run folder: then it is
        replaced. Anything else is never deleted.
        """
        if self.folder.exists() and force:
            if not (self.folder / MANIFEST).is_file():
                raise FedsimError(f"--force: {self.folder} is not a fedsim run folder (no {MANIFEST}); fedsim replaces only its own runs")
            shutil.rmtree(self.folder)
        try:
            self.folder.mkdir(parents=True, exist_ok=False)
        except FileExistsError:
            raise FedsimError(f"--out: {self.folder} already exists; continue it with `fedsim run --resume {self.folder}`, "
                              "replace it with --force, or choose another folder") from None
        except OSError as exc:
            raise FedsimError(f"--out: cannot create {self.folder} ({exc.strerror}); choose a writable folder") from None
        with self._disk("the run folder"):
            self._create(ledger_writer)

    def _create(self, ledger_writer) -> None:
        created = now()
        self._manifest = Manifest(name=self.config.name, status="running", seed=self.config.seed, config_sha256=self.config.digest(),
                                  versions=_versions(), created=created, updated=created,
                                  victim_rounds=None if self.config.adversary.role == "none" else [])
        self._write_file("config.yaml", self.config.to_yaml().encode())
        ledger_path = ledger_writer(self.folder)
        self.manifest.files[ledger_path.name] = sha256_of(ledger_path)
        for name, columns in ((TRAINING_CSV, training_columns(self.config)), (LEAKAGE_CSV, LEAKAGE_COLUMNS)):
            self._write_file(name, (",".join(columns) + "\n").encode(), listed=False)
        self._save_manifest()

    @classmethod
    def reopen(cls, folder: Path, refuse: Callable[[Run], None] | None = None) -> Recorder:
        """Open an interrupted run to continue it after its last complete round.

        Every listed file is checked against its sha256, then `refuse` (the caller's own
        refusals, given the run as recorded) runs: a refusal leaves the folder as it was. Only
        then is what a crash left behind (staged or unlisted rounds, temporary files) removed,
        training rows from the last complete round on dropped (that round's row is written again
        when the run continues) and the status set back to running.
        """
        run = Run.open(folder)
        if run.status == "complete":
            raise FedsimError(f"--resume: {folder} is already complete; nothing to resume")
        if run.config.digest() != run.manifest.config_sha256:
            raise FedsimError(f"--resume: {folder}/config.yaml does not match the manifest's config_sha256; the folder was edited")
        recorder = cls(folder, run.config)
        recorder._manifest = run.manifest
        files = recorder.manifest.files
        for relative in [r for r in files if r.startswith("metrics/") or is_report_file(r)]:
            del files[relative]  # written again when the run completes
        for relative, expected in files.items():
            path = folder / relative
            if not path.is_file() or sha256_of(path) != expected:
                raise FedsimError(f"--resume: {path} is missing or does not match its sha256 in the manifest; the run cannot be continued")
        if refuse is not None:
            refuse(run)
        last = run.manifest.rounds_completed
        with recorder._disk("the resumed run"):
            for leftover in (folder / "rounds").glob("*"):
                if not leftover.name.isdigit() or int(leftover.name) > last:  # staged, or never listed
                    shutil.rmtree(leftover) if leftover.is_dir() else leftover.unlink()
            for temporary in folder.rglob(".*.tmp"):
                temporary.unlink()
            recorder._keep_training_rows(before=last)
            recorder.manifest.status = "running"
            recorder.manifest.error = None
            recorder._save_manifest()
        return recorder

    def _keep_training_rows(self, before: int) -> None:
        path = self.folder / TRAINING_CSV
        rows = list(csv.DictReader(path.open())) if path.is_file() else []
        columns = training_columns(self.config)
        kept = "".join(f"{','.join(row.get(c) or '' for c in columns)}\n" for row in rows if int(row["round"]) < before)
        write_atomically(path, (",".join(columns) + "\n" + kept).encode())

    def _write_file(self, relative: str, payload: bytes, listed: bool = True) -> None:
        write_atomically(self.folder / relative, payload)
        if listed:
            self.manifest.files[relative] = hashlib.sha256(payload).hexdigest()

    def add_file(self, relative: str, payload: bytes) -> None:
        """Write a file of the run (e.g. an audited app's records) and list it with its sha256."""
        with self._disk(relative):
            self._write_file(relative, payload)
            self._save_manifest()

    def _save_manifest(self) -> None:
        self.manifest.updated = now()
        write_atomically(self.folder / MANIFEST, self.manifest.to_json())

    def record_round(
        self,
        round_number: int,
        global_state: StateDict,
        clients: Mapping[int, tuple[StateDict, int]] | None = None,
        broadcast: Mapping[int, StateDict] | None = None,
        failed: list[int] | None = None,
        dropped: list[int] | None = None,
        train_loss: float | None = None,
        secure_sum: list[int] | None = None,
    ) -> None:
        """Write a round: the aggregate, each client's (state, num_examples), what was broadcast,
        the partition ids of clients whose reply was an error (-1 where unknown) and of those
        sent training that never replied, the clients' mean training loss and, under secure
        aggregation, the clients whose updates the server only saw summed.

        Files are staged in a hidden folder and renamed to rounds/NNNN as one step, then the
        manifest lists them: only then is the round complete. A failed write (disk full, folder
        gone) raises a FedsimError naming the round and the cause.

        `record.clients` chooses whose parameters are written (`kept_clients`); the manifest lists
        every client heard with its example count, and under `record.clients: victim` the ones
        written (`stored`). With an adversary, a round in which its victim was sampled is added
        to `victim_rounds`.
        """
        clients = clients or {}
        kept = kept_clients(self.config, clients)
        with self._disk(f"round {round_number}"):
            started = time.perf_counter()
            self._write_round(round_number, global_state, {c: clients[c] for c in kept}, broadcast or {})
            entry = RoundEntry(clients={c: ClientEntry(num_examples=n) for c, (_, n) in sorted(clients.items())},
                               stored=None if self.config.record.clients == "all" else kept,
                               failed=sorted(failed or []), dropped=sorted(dropped or []), train_loss=train_loss, secure_sum=secure_sum,
                               record_seconds=round(time.perf_counter() - started, 4))
            self.manifest.rounds[round_number] = entry
            victim_rounds = self.manifest.victim_rounds
            if victim_rounds is not None and round_number >= 1 and self.config.adversary.victim in entry.sampled():
                self.manifest.victim_rounds = sorted({*victim_rounds, round_number})
            self.manifest.rounds_completed = round_number
            self._save_manifest()

    @contextmanager
    def _disk(self, what: str):
        """An OSError while writing becomes one line naming what could not be written and why."""
        try:
            yield
        except OSError as exc:
            raise FedsimError(f"--out: cannot write {what} to {self.folder} ({exc.strerror or exc}); "
                              "free disk space or fix the folder, then continue with `fedsim run --resume`") from None

    def _write_round(self, round_number: int, global_state: StateDict, clients: Mapping[int, tuple[StateDict, int]],
                     broadcast: Mapping[int, StateDict]) -> None:
        final = self.folder / round_dir(round_number)
        staging = final.with_name(f".{final.name}.partial")
        dtype = torch.float16 if self.config.record.dtype == "float16" else None
        shutil.rmtree(staging, ignore_errors=True)
        shutil.rmtree(final, ignore_errors=True)  # a leftover of an interrupted attempt, never listed
        hashes: dict[str, str] = {}

        def stage(relative: str, state: StateDict, metadata: dict[str, str]) -> None:
            payload = serialize_state(state, metadata, dtype)
            write_atomically(staging / Path(relative).relative_to(round_dir(round_number)), payload)
            hashes[relative] = hashlib.sha256(payload).hexdigest()

        try:
            stage(global_file(round_number), global_state, {"round": str(round_number), "source": "global"})
            for client, (state, num_examples) in sorted(clients.items()):
                meta = {"round": str(round_number), "source": f"client-{client:03d}", "num_examples": str(num_examples)}
                stage(client_file(round_number, client), state, meta)
            for client, state in sorted(broadcast.items()):
                meta = {"round": str(round_number), "source": f"broadcast-{client:03d}"}
                stage(client_file(round_number, client, "broadcast"), state, meta)
            os.replace(staging, final)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)  # a half-staged round: its space back, so the manifest can say 'failed'
            raise
        self.manifest.files.update(hashes)

    def append_training(self, row: Mapping[str, Any]) -> None:
        columns = training_columns(self.config)
        with self._disk(f"the training metrics of round {row['round']}"), (self.folder / TRAINING_CSV).open("a", newline="") as handle:
            csv.DictWriter(handle, fieldnames=columns).writerow({k: row.get(k, "") for k in columns})

    def write_metrics(self, tables: Mapping[str, Any]) -> None:
        """Write metrics tables (DataFrames) by relative path, e.g. metrics/leakage.csv.

        A table keeps its header when it has no rows (so every table reads back); one without
        columns is a caller's bug and raises ValueError.
        """
        for relative, table in tables.items():
            if len(table.columns) == 0:
                raise ValueError(f"{relative}: a table without columns would be written as a bare newline; give it its header")
            with self._disk(relative):
                write_atomically(self.folder / relative, table.to_csv(index=False).encode())
            self.outputs.add(relative)

    def list_at_finish(self, relatives: list[str]) -> None:
        """Files written into the folder by others (the report) that `finish` lists with their sha256."""
        self.outputs.update(relatives)

    def finish(self, status: str, error: str | None = None) -> None:
        """Mark the run complete or failed; list the metrics and report files with their checksums."""
        self.manifest.status = cast(Status, status)  # checked on assignment: running, complete or failed
        if error:
            self.manifest.error = error
        with self._disk(f"the manifest ({status})"):
            for relative in sorted(self.outputs):
                if (self.folder / relative).exists():
                    self.manifest.files[relative] = sha256_of(self.folder / relative)
            self._save_manifest()


def relist_report(folder: Path, written: list[str]) -> None:
    """After `fedsim report` rewrote a finished run's report: the manifest lists the new report
    files with their sha256 instead of the old ones. The report is derived from the metrics
    tables, so this is the one change a finished manifest accepts; records are never relisted.
    """
    path = folder / MANIFEST
    manifest = Manifest.from_json(path.read_bytes())
    files = {k: v for k, v in manifest.files.items() if not is_report_file(k)}
    files.update({relative: sha256_of(folder / relative) for relative in sorted(written)})
    manifest.files = files
    manifest.updated = now()
    write_atomically(path, manifest.to_json())
