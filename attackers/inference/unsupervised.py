"""The unsupervised white-box attack of Nasr et al.: an encoder-decoder, then two clusters.

The encoder reads the per-snapshot signals of the supervised attack; the decoder must
reconstruct each record's loss, correctness, uncertainty (prediction entropy) and gradient
norm. The encodings of the records under attack are split by spectral clustering into two
clusters; the cluster with the smaller mean gradient norm is "member". The score is how much
closer a record's encoding is to the member cluster's centre than to the other's. No
membership labels are used anywhere: `fit` ignores them.
"""

from __future__ import annotations

import numpy as np
import torch
from pydantic import Field
from sklearn.cluster import SpectralClustering
from torch import nn

from attackers.inference.base import AttackParams, MembershipInferenceAttack
from attackers.inference.observation import Observation


class UnsupervisedParams(AttackParams):
    """Parameters of the unsupervised attack."""

    epochs: int = Field(200, ge=1, description="full-batch Adam steps of the encoder-decoder")
    lr: float = Field(1e-3, gt=0, description="Adam learning rate")
    code: int = Field(8, ge=1, description="width of the encoding that is clustered")


class UnsupervisedNasrAttack(MembershipInferenceAttack):
    """Unsupervised white-box attack (Nasr, Shokri and Houmansadr, S&P 2019, section IV-D).

    Fitting trains the encoder-decoder on the known records without their labels; scoring
    clusters the targets' encodings (sklearn's SpectralClustering, seeded from the attack).
    Initialisation draws from the attack's own seed.

    Parameters
    ----------
    params : AttackParams or dict, optional
        The attack's parameters (its `Params`).
    seed : int or numpy.random.SeedSequence
        Where its randomness comes from (`base.attack_seed_sequence`).
    """

    name = "nasr_unsupervised"
    multi_round = True
    deterministic = False
    Params = UnsupervisedParams
    params: UnsupervisedParams

    def __init__(self, params: AttackParams | dict | None = None, seed: int | np.random.SeedSequence = 0) -> None:
        super().__init__(params, seed)
        self.encoder: nn.Module | None = None
        self.stats: tuple[torch.Tensor, torch.Tensor] | None = None
        self.threshold = 0.0

    def _signals(self, observation: Observation, ids: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, 4 * snapshots) log loss, correctness, entropy, log gradient norm; and the last gradient norm."""
        columns = []
        for round_number in observation.rounds:
            f = observation.features(ids, round_number)
            columns += [f.loss.clamp_min(1e-12).log(), f.correct, f.entropy, f.gradient_norm.clamp_min(1e-12).log()]
        return torch.stack(columns, 1), columns[-1]

    def fit(self, observation: Observation, ids: np.ndarray, members: np.ndarray | None = None) -> UnsupervisedNasrAttack:
        """Train the encoder-decoder on the known records' signals (ids: shape (n_records,); members unused); returns self.

        Parameters
        ----------
        observation : Observation
            The snapshots the attacker holds.
        ids : numpy.ndarray
            Record ids, shape (n_records,).
        members : numpy.ndarray
            Membership of the known records, bool, shape (n_records,).

        Returns
        -------
        UnsupervisedNasrAttack
            Train the encoder-decoder on the known records' signals (ids: shape (n_records,); members unused); returns self.
        """
        p = self.params
        signals, _ = self._signals(observation, ids)
        self.stats = signals.mean(0), signals.std(0).clamp_min(1e-6)
        inputs = (signals - self.stats[0]) / self.stats[1]
        width = inputs.shape[1]
        with self.own_torch_random():
            self.encoder = nn.Sequential(nn.Linear(width, 64), nn.ReLU(), nn.Linear(64, p.code))
            decoder = nn.Sequential(nn.ReLU(), nn.Linear(p.code, 64), nn.ReLU(), nn.Linear(64, width))
        optimizer = torch.optim.Adam([*self.encoder.parameters(), *decoder.parameters()], lr=p.lr)
        for _ in range(p.epochs):
            optimizer.zero_grad()
            nn.functional.mse_loss(decoder(self.encoder(inputs)), inputs).backward()
            optimizer.step()
        return self

    @torch.no_grad()
    def score(self, observation: Observation, ids: np.ndarray) -> np.ndarray:
        """How much closer each encoding is to the member cluster's centre, L2 in code space, shape (n_records,).

        Parameters
        ----------
        observation : Observation
            The snapshots the attacker holds.
        ids : numpy.ndarray
            Record ids, shape (n_records,).

        Returns
        -------
        numpy.ndarray
            How much closer each encoding is to the member cluster's centre, L2 in code space, shape (n_records,).
        """
        signals, log_gradient_norm = self._signals(observation, ids)
        if self.encoder is None or self.stats is None:
            raise RuntimeError("fit the attack before scoring")
        codes = self.encoder((signals - self.stats[0]) / self.stats[1]).numpy()
        clusters = SpectralClustering(2, affinity="nearest_neighbors", n_neighbors=min(10, len(ids) - 1),
                                      random_state=self.seed).fit_predict(codes)
        norms = log_gradient_norm.numpy()
        member = int(np.argmin([norms[clusters == c].mean() if (clusters == c).any() else np.inf for c in (0, 1)]))
        centres = [codes[clusters == c].mean(0) if (clusters == c).any() else codes.mean(0) for c in (0, 1)]
        distance = [np.linalg.norm(codes - centre, axis=1) for centre in centres]
        return distance[1 - member] - distance[member]
