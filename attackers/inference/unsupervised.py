"""The unsupervised white-box attack of Nasr, Shokri and Houmansadr (S&P 2019, section IV-D, "unsupervised").

Without membership labels an attacker can still train an encoder-decoder: the encoder is the
supervised attack's model (`attackers.inference.nasr.NasrModel`: per observed snapshot the
output probabilities, the loss, the one-hot label, the chosen layers' gradients and, when
configured, hidden-layer outputs, through the same component networks) ending in one value per
record; the decoder must rebuild from that value the signals the paper names as carrying
membership: loss, correctness, prediction uncertainty (entropy) and gradient norm. The single
value is then the membership score.

Deviations from the paper, and why:

- The decoder rebuilds the signals of the last observed snapshot (the model under attack), while
  the encoder reads every snapshot. Earlier snapshots' losses mostly say how hard a record is,
  and a one-value code that must rebuild them all ranks records by hardness, not membership.
- The paper splits the encodings into two clusters by spectral clustering and leaves which
  cluster is "member" to the attacker. Here the score is the value itself (so it ranks every
  record), oriented without labels: it is made to grow as the loss falls (Spearman correlation
  on the attacker's known records, whose membership it does not read), since members have
  lower loss than non-members (Yeom et al., CSF 2018; Nasr et al., section V, Fig. 5). Spectral
  clustering (sklearn) of the known records' values gives only the decision threshold (the
  boundary between the two clusters).
- The encoder-decoder is trained on the attacker's known records only (their features, never
  their membership); the paper trains on the records it attacks. Scoring a record therefore
  does not depend on which other records are scored.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch
from pydantic import Field
from scipy.stats import spearmanr
from sklearn.cluster import SpectralClustering
from torch import nn

from attackers.inference.base import AttackParams
from attackers.inference.nasr import NasrAttack, NasrParams, _Inputs, fit_with_early_stopping
from attackers.inference.observation import Observation
from attackers.inference.registry import register

DECODER_HIDDEN = 64


class UnsupervisedParams(NasrParams):
    """Parameters of the unsupervised attack: the encoder's inputs and training as the supervised attack's."""

    epochs: int = Field(30, ge=1, description="most training epochs of the encoder-decoder over the attacker's known records")
    patience: int = Field(5, ge=1, description="epochs without a lower validation reconstruction error before stopping early")


@register("nasr_unsupervised")
class UnsupervisedNasrAttack(NasrAttack):
    """Unsupervised white-box attack (Nasr, Shokri and Houmansadr, S&P 2019, section IV-D).

    `fit` trains the encoder-decoder on the known records' features (their membership is not
    read): Adam on mini-batches, early stopping on the reconstruction error of a validation
    split of them. Initialisation, dropout, the split and the batch order draw from the
    attack's own seed, so the same seed gives the same scores whatever ran before.

    Attributes
    ----------
    decoder : torch.nn.Module or None
        The decoder: one value -> the standardised loss, correctness, entropy and gradient norm.
    sign : float
        +1 or -1: orients the encoder's value to grow as the loss falls.
    reconstruction_error : float
        Mean squared error of the decoder on the validation split (standardised units).
    """

    multi_round = True
    deterministic = False
    Params: ClassVar[type[AttackParams]] = UnsupervisedParams

    def __init__(self, params: AttackParams | dict | None = None, seed: int | np.random.SeedSequence = 0) -> None:
        super().__init__(params, seed)
        self.decoder: nn.Module | None = None
        self.target_scale: tuple[torch.Tensor, torch.Tensor] | None = None
        self.sign = 1.0
        self.threshold = 0.0
        self.reconstruction_error = float("nan")

    @staticmethod
    def decoder_targets(observation: Observation, ids: np.ndarray) -> torch.Tensor:
        """What the decoder rebuilds, shape (n_records, 4): the last snapshot's log loss (nats),
        correctness (0 or 1), entropy (nats) and log gradient L2 norm.
        """
        f = observation.features(ids, observation.rounds[-1])
        return torch.stack([f.loss.clamp_min(1e-12).log(), f.correct.float(), f.entropy, f.gradient_norm.clamp_min(1e-12).log()], 1)

    def _encode(self, inputs: list[_Inputs]) -> torch.Tensor:
        """The encoder's one value per record, shape (n_records,)."""
        assert self.model is not None
        return self.model(inputs)

    def _reconstruction_loss(self, inputs: list[_Inputs], targets: torch.Tensor) -> torch.Tensor:
        assert self.decoder is not None
        return nn.functional.mse_loss(self.decoder(self._encode(inputs)[:, None]), targets)

    def fit(self, observation: Observation, ids: np.ndarray, members: np.ndarray | None = None) -> UnsupervisedNasrAttack:
        """Train the encoder-decoder on the known records' features, orient its value and set the threshold.

        `members` is ignored (the attack is unsupervised). The weights kept are those of the epoch with
        the lowest validation reconstruction error; returns self.
        """
        p = self.params
        inputs = self._inputs(observation, ids, fit=True)  # reads the run before any random draw
        raw = self.decoder_targets(observation, ids)
        self.target_scale = raw.mean(0), raw.std(0).clamp_min(1e-6)
        targets = (raw - self.target_scale[0]) / self.target_scale[1]
        generator = self.torch_generator()
        with self.own_torch_random():  # initialisation and dropout
            self.model = self._model(inputs)
            self.decoder = nn.Sequential(nn.Linear(1, DECODER_HIDDEN), nn.ReLU(), nn.Linear(DECODER_HIDDEN, targets.shape[1]))
            best, self.epochs_trained = fit_with_early_stopping(
                [self.model, self.decoder], len(ids), p, generator,
                lambda index: self._reconstruction_loss([s.take(index) for s in inputs], targets[index]))
        self.reconstruction_error = best
        self.model.eval()
        with torch.no_grad():
            values = self._encode(inputs).double().numpy()
        self.sign = self._orientation(values, raw[:, 0].double().numpy())
        self.threshold = self._cluster_boundary(self.sign * values)
        return self

    @staticmethod
    def _orientation(values: np.ndarray, log_loss: np.ndarray) -> float:
        """+1 or -1 so that sign * value falls as the loss rises (Spearman correlation; +1 when undefined)."""
        rho = spearmanr(values, log_loss).statistic if np.ptp(values) > 0 and np.ptp(log_loss) > 0 else 0.0
        return -1.0 if np.isfinite(rho) and rho > 0 else 1.0

    def _cluster_boundary(self, scores: np.ndarray) -> float:
        """The threshold between the two spectral clusters of the known records' scores (their midpoint gap)."""
        if len(scores) < 4 or np.ptp(scores) == 0:
            return float(np.median(scores))
        spread = float(np.std(scores))
        clusters = SpectralClustering(2, affinity="rbf", gamma=1.0 / (2 * spread**2), random_state=self.seed).fit_predict(scores[:, None])
        if len(np.unique(clusters)) < 2:
            return float(np.median(scores))
        high = int(np.argmax([scores[clusters == c].mean() for c in (0, 1)]))
        return float((scores[clusters != high].max() + scores[clusters == high].min()) / 2)

    @torch.no_grad()
    def score(self, observation: Observation, ids: np.ndarray) -> np.ndarray:
        """The encoder's value, oriented to grow as the loss falls, shape (n_records,); a record is called a member above `threshold`."""
        if self.model is None:
            raise RuntimeError("fit the attack before scoring")
        self.model.eval()
        return self.sign * self._encode(self._inputs(observation, ids, fit=False)).double().numpy()
