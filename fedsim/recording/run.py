"""`fedsim.Run`: a recorded run folder as Python objects, for attacks and any other tool.

Parameters load only through safetensors (never pickle), and every file is checked against
the sha256 the manifest lists before it is used, so a tampered or truncated record is named
instead of silently attacked.
"""

from __future__ import annotations

import hashlib
import io
import json
import sys
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import yaml
from safetensors.torch import load
from torch import nn

from fedsim.core.config import Config
from fedsim.core.errors import FedsimError
from fedsim.core.layout import LEDGER as LEDGER_FILE
from fedsim.core.layout import MANIFEST, client_file, global_file
from fedsim.learning.datasets import Pool, load_pool, pool_for
from fedsim.learning.models import model_for
from fedsim.recording.manifest import Manifest, RoundEntry


class Run:
    """A run folder opened for reading (use `Run.open`).

    Every file is read through the manifest: its sha256 is checked before use, and parameters
    load only through safetensors.

    Parameters
    ----------
    folder : pathlib.Path
        The run folder (the one `fedsim run` printed).
    config : fedsim.core.config.Config
        The run's validated config.yaml.
    manifest : fedsim.recording.manifest.Manifest
        The parsed manifest.json: `status`, `rounds_completed`, `rounds` (per round: the clients
        heard and their example counts, e.g. `manifest.rounds[1].clients`) and `files` (relative
        path -> sha256 hex digest).
    """

    def __init__(self, folder: Path, config: Config, manifest: Manifest):
        self.folder = folder
        self.config = config
        self.manifest = manifest

    @classmethod
    def open(cls, folder: str | Path) -> Run:
        """Open a run folder for reading.

        Parameters
        ----------
        folder : str or pathlib.Path
            The run folder.

        Returns
        -------
        Run
            The run, its config validated; no record file is read yet.

        Raises
        ------
        FedsimError
            If `folder` has no manifest, or its manifest or config.yaml cannot be read.
        """
        folder = Path(folder)
        manifest_path = folder / MANIFEST
        if not manifest_path.is_file():
            raise FedsimError(f"{folder}: not a fedsim run folder (no {MANIFEST}); give the folder `fedsim run` printed")
        try:
            manifest = Manifest.from_json(manifest_path.read_bytes())
            config = Config.model_validate(yaml.safe_load((folder / "config.yaml").read_text()))
        except (json.JSONDecodeError, yaml.YAMLError, OSError, ValueError) as exc:
            raise FedsimError(f"{folder}: the manifest or config.yaml is unreadable ({type(exc).__name__}); the run folder is damaged") from None
        if config.app is not None and config.app.dir and config.app.dir not in sys.path:
            sys.path.insert(0, config.app.dir)  # an audited app's model (model.name) is a class of the app's own package
        return cls(folder, config, manifest)

    @property
    def status(self) -> str:
        """The run's state as the manifest records it.

        Returns
        -------
        str
            "running", "complete" or "failed".
        """
        return self.manifest.status

    @staticmethod
    def status_of(folder: str | Path) -> str | None:
        """The state a folder's manifest records, read without opening the run.

        What a sweep asks before running a point again: it neither validates the config nor
        checks any record, so it also answers for a folder whose run was killed early.

        Parameters
        ----------
        folder : str or pathlib.Path
            A run folder, or where one may be.

        Returns
        -------
        str or None
            "running", "complete" or "failed"; None when the folder holds no readable manifest.
        """
        try:
            status = json.loads((Path(folder) / MANIFEST).read_text()).get("status")
        except (OSError, ValueError, AttributeError):
            return None
        return status if isinstance(status, str) else None

    @property
    def rounds(self) -> list[int]:
        """The complete rounds.

        Returns
        -------
        list of int
            Round numbers in increasing order, 0 (the initial model) included.
        """
        return sorted(self.manifest.rounds)

    @cached_property
    def membership(self) -> pd.DataFrame:
        """The membership ledger (membership.parquet), verified against the manifest.

        Returns
        -------
        pandas.DataFrame
            One row per record the run uses, with the columns `record_id`, `client` (Int64, <NA>
            for records no client holds), `member`, `role` and `target` (see `fedsim.learning.membership`).

        Raises
        ------
        FedsimError
            If the ledger is missing or its sha256 does not match the manifest.
        """
        return pd.read_parquet(io.BytesIO(self._read_verified(LEDGER_FILE)))

    @cached_property
    def pool(self) -> Pool:
        """The run's data pool, loaded as the config's `data` section says.

        Returns
        -------
        fedsim.learning.datasets.Pool
            Every record of the data set, indexed by record id (an audited app's: the records
            saved in this folder, wherever the folder now is).
        """
        if self.config.data.dataset == "records":
            return load_pool("records", str(self.folder))
        return pool_for(self.config.data)

    def records(self, ids: np.ndarray | list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """The records with the given ids, as the model takes them.

        Parameters
        ----------
        ids : numpy.ndarray or list of int
            Record ids, shape (n_records,).

        Returns
        -------
        x : torch.Tensor
            Inputs, shape (n_records, *input_shape), normalised as in training.
        y : torch.Tensor
            Labels, int64, shape (n_records,).
        """
        return self.pool.take(ids)

    def clients(self, round_number: int) -> list[int]:
        """The clients whose parameters the server received in a round.

        Parameters
        ----------
        round_number : int
            A complete round (>= 1).

        Returns
        -------
        list of int
            Partition ids, sorted; empty under secure aggregation (the server saw only a sum).

        Raises
        ------
        FedsimError
            If the round is not recorded.
        """
        return sorted(self._round(round_number).clients)

    def stored(self, round_number: int) -> list[int]:
        """The clients whose returned parameters the run folder holds for a round (config `record.clients`).

        Parameters
        ----------
        round_number : int
            A complete round (>= 1).

        Returns
        -------
        list of int
            Partition ids, sorted: `clients(round_number)` under `record.clients: all`, else the
            victim (where heard) and the reference clients kept beside it.

        Raises
        ------
        FedsimError
            If the round is not recorded.
        """
        return self._round(round_number).kept()

    def received(self, round_number: int) -> list[int]:
        """The clients that received the round's training message (the global model of the round
        before): those whose reply the server read, summed under secure aggregation, or that failed
        after receiving it; not those left out by client sampling or that dropped out.

        Parameters
        ----------
        round_number : int
            A complete round (>= 1).

        Returns
        -------
        list of int
            Partition ids, sorted.

        Raises
        ------
        FedsimError
            If the round is not recorded.
        """
        return sorted(self._round(round_number).received())

    def num_examples(self, round_number: int, client: int) -> int:
        """How many examples a client reported training on in a round (FedAvg's weight).

        Parameters
        ----------
        round_number : int
            A complete round (>= 1).
        client : int
            A partition id among `clients(round_number)`.

        Returns
        -------
        int
            The client's example count.

        Raises
        ------
        FedsimError
            If the round is not recorded.
        """
        return self._round(round_number).clients[client].num_examples

    def _round(self, round_number: int) -> RoundEntry:
        info = self.manifest.rounds.get(round_number)
        if info is None:
            raise FedsimError(f"{self.folder}: round {round_number} is not recorded; complete rounds are {self.rounds}")
        return info

    def table(self, relative: str) -> pd.DataFrame:
        """A metrics table of the run.

        Checked against the manifest's sha256 when the manifest lists it, as it does every
        metrics file of a finished run; a run still being written (its report is made just
        before it is marked complete) lists them only when it finishes.

        Parameters
        ----------
        relative : str
            Path inside the run folder, e.g. "metrics/leakage.csv".

        Returns
        -------
        pandas.DataFrame
            The CSV table.

        Raises
        ------
        FedsimError
            If the file is missing, its sha256 does not match, or it is not a readable CSV.
        """
        path = self.folder / relative
        if relative in self.manifest.files:
            payload = self._read_verified(relative)
        elif path.is_file():
            payload = path.read_bytes()
        else:
            raise FedsimError(f"{path}: missing; the run folder is incomplete (run `fedsim attack` or re-run it)")
        try:
            return pd.read_csv(io.BytesIO(payload))
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
            raise FedsimError(f"{path}: not a readable CSV table ({type(exc).__name__}); the run folder is damaged") from None

    def tensors(self, relative: str) -> dict[str, torch.Tensor]:
        """A safetensors file of the run that is not a round's parameters, e.g. metrics/reconstructions.safetensors.

        Checked against the manifest's sha256 when the manifest lists it (as `table`).

        Parameters
        ----------
        relative : str
            Path inside the run folder.

        Returns
        -------
        dict of str to torch.Tensor
            The file's tensors by key.

        Raises
        ------
        FedsimError
            If the file is missing, its sha256 does not match, or it is not a safetensors file.
        """
        path = self.folder / relative
        if relative in self.manifest.files:
            payload = self._read_verified(relative)
        elif path.is_file():
            payload = path.read_bytes()
        else:
            raise FedsimError(f"{path}: missing; the run folder is incomplete")
        try:
            return load(payload)
        except Exception as exc:  # safetensors raises its own SafetensorError for a damaged header
            raise FedsimError(f"{path}: not a readable safetensors file ({type(exc).__name__}); the run folder is damaged") from None

    def _read_verified(self, relative: str) -> bytes:
        expected = self.manifest.files.get(relative)
        path = self.folder / relative
        if expected is None or not path.is_file():
            raise FedsimError(f"{path}: not recorded in this run")
        payload = path.read_bytes()
        if hashlib.sha256(payload).hexdigest() != expected:
            raise FedsimError(f"{path}: sha256 does not match the manifest; the file was altered or truncated")
        return payload

    def state(self, round_number: int, client: int | None = None, kind: str = "clients") -> dict[str, torch.Tensor]:
        """Recorded parameters of a round, verified against the manifest.

        Parameters
        ----------
        round_number : int
            A complete round (0 is the initial global model).
        client : int, optional
            A partition id; None for the global model after the round.
        kind : str
            With `client`: "clients" for what the client sent the server, "broadcast" for what
            the server sent that client where it was not the global model (an active adversary).

        Returns
        -------
        dict of str to torch.Tensor
            The state dict, in the model's own shapes and dtypes.

        Raises
        ------
        FedsimError
            If the round or the file is not recorded, or its sha256 does not match.
        """
        self._round(round_number)
        relative = global_file(round_number) if client is None else client_file(round_number, client, kind)
        return load(self._read_verified(relative))

    def model(self, round_number: int, client: int | None = None) -> nn.Module:
        """The torch module of a round, in evaluation mode.

        Parameters
        ----------
        round_number : int
            A complete round (0 is the initial global model).
        client : int, optional
            A partition id: the parameters the server received from that client; None for the
            global model after the round.

        Returns
        -------
        torch.nn.Module
            The configured model (`model.name`) with the recorded parameters loaded.

        Raises
        ------
        FedsimError
            If the round or the file is not recorded, or its sha256 does not match.
        """
        with torch.random.fork_rng(devices=[]):  # the initial weights are overwritten: draw nothing from the caller's generator
            model = model_for(self.config)
        model.load_state_dict(self.state(round_number, client))
        return model.eval()
