"""Baseline membership inference attacks: thresholds on one snapshot, and loss trajectories.

Every attack scores "higher means member". Single-snapshot attacks read the last observed
snapshot; their decision threshold is fitted on the attacker's known records.
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from attackers.inference.observation import Observation
from fedsim.metrics import best_threshold


class ThresholdAttack:
    """Score = a signal of the last snapshot; threshold fitted for balanced accuracy."""

    name = "threshold"
    multi_round = False

    def __init__(self) -> None:
        self.threshold: float | None = None

    def signal(self, observation: Observation, ids: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def fit(self, observation: Observation, ids: np.ndarray, members: np.ndarray) -> ThresholdAttack:
        self.threshold = best_threshold(self.signal(observation, ids), members)
        return self

    def score(self, observation: Observation, ids: np.ndarray) -> np.ndarray:
        return self.signal(observation, ids)


class LossAttack(ThresholdAttack):
    """Yeom et al. 2018: members have lower loss."""

    name = "loss"

    def signal(self, observation: Observation, ids: np.ndarray) -> np.ndarray:
        return -observation.features(ids, observation.rounds[-1]).loss.numpy()


class ConfidenceAttack(ThresholdAttack):
    """Members get a higher probability on their true label."""

    name = "confidence"

    def signal(self, observation: Observation, ids: np.ndarray) -> np.ndarray:
        features = observation.features(ids, observation.rounds[-1])
        return features.probabilities.gather(1, features.labels[:, None]).squeeze(1).numpy()


class EntropyAttack(ThresholdAttack):
    """Members get more certain (lower-entropy) predictions."""

    name = "entropy"

    def signal(self, observation: Observation, ids: np.ndarray) -> np.ndarray:
        return -observation.features(ids, observation.rounds[-1]).entropy.numpy()


class GradientNormAttack(ThresholdAttack):
    """Members have smaller per-example gradients (norm over all parameters, computed exactly)."""

    name = "grad_norm"

    def signal(self, observation: Observation, ids: np.ndarray) -> np.ndarray:
        return -observation.features(ids, observation.rounds[-1]).gradient_norm.numpy()


class TrajectoryAttack:
    """Loss trajectories across the observed rounds (in the spirit of FedMIA and loss-trajectory MIAs).

    Each record's losses on every observed snapshot, plus, for the server, how much lower the
    target's loss is than on the other clients' models of the same round (those clients never
    trained on the target's records: a per-record reference). A logistic regression trained on
    the attacker's known records combines them.
    """

    name = "trajectory"
    multi_round = True

    def __init__(self) -> None:
        self.model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
        self.threshold = 0.5

    def _signals(self, observation: Observation, ids: np.ndarray) -> np.ndarray:
        columns = []
        for round_number in observation.rounds:
            loss = observation.features(ids, round_number).loss
            columns.append(-torch.log(loss + 1e-12))
            reference_loss = observation.reference_losses(ids, round_number)
            if reference_loss is not None:
                columns.append(torch.log(reference_loss + 1e-12).mean(0) - torch.log(loss + 1e-12))
        return torch.stack(columns, 1).numpy()

    def fit(self, observation: Observation, ids: np.ndarray, members: np.ndarray) -> TrajectoryAttack:
        self.model.fit(self._signals(observation, ids), members)
        return self

    def score(self, observation: Observation, ids: np.ndarray) -> np.ndarray:
        return self.model.predict_proba(self._signals(observation, ids))[:, 1]
