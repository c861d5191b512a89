"""Baseline membership inference attacks: thresholds on one snapshot, and loss trajectories.

Every attack scores "higher means member". Single-snapshot attacks read the last observed
snapshot; their decision threshold is fitted on the attacker's known records. None of them
draws random numbers (`deterministic`): one fit stands for every attack seed.
"""

from __future__ import annotations

import numpy as np
import torch
from pydantic import Field
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from attackers.inference.base import AttackParams, MembershipInferenceAttack
from attackers.inference.observation import Observation
from attackers.inference.registry import register
from fedsim.stats.metrics import best_threshold


class ThresholdAttack(MembershipInferenceAttack):
    """Score = a signal of the last observed snapshot; threshold fitted for balanced accuracy.

    Subclasses implement `signal`. The threshold maximises TPR - FPR (Youden's J, i.e. balanced
    accuracy) on the attacker's known records (`fedsim.stats.metrics.best_threshold`).
    """

    multi_round = False
    deterministic = True

    def signal(self, observation: Observation, ids: np.ndarray) -> np.ndarray:
        """The per-record signal of the last observed snapshot, float, shape (n_records,); higher means member."""
        raise NotImplementedError

    def fit(self, observation: Observation, ids: np.ndarray, members: np.ndarray) -> ThresholdAttack:
        """Choose the threshold on the known records' signal; returns self."""
        self.threshold = best_threshold(self.signal(observation, ids), members)
        return self

    def score(self, observation: Observation, ids: np.ndarray) -> np.ndarray:
        """The signal itself, shape (n_records,)."""
        return self.signal(observation, ids)


@register("loss")
class LossAttack(ThresholdAttack):
    """Members have lower loss (Yeom, Giacomelli, Fredrikson and Jha, CSF 2018).

    Score = minus the cross-entropy loss (nats) on the last observed snapshot.
    """

    def signal(self, observation: Observation, ids: np.ndarray) -> np.ndarray:
        """Minus the loss in nats, shape (n_records,)."""
        return -observation.features(ids, observation.rounds[-1]).loss.numpy()


@register("confidence")
class ConfidenceAttack(ThresholdAttack):
    """Members get a higher probability on their true label (Salem et al., NDSS 2019).

    Score = softmax probability of the true label on the last observed snapshot.
    """

    def signal(self, observation: Observation, ids: np.ndarray) -> np.ndarray:
        """Probability of the true label, in [0, 1], shape (n_records,)."""
        features = observation.features(ids, observation.rounds[-1])
        return features.probabilities.gather(1, features.labels[:, None]).squeeze(1).numpy()


@register("entropy")
class EntropyAttack(ThresholdAttack):
    """Members get more certain (lower-entropy) predictions (Salem et al., NDSS 2019).

    Score = minus the prediction entropy (nats) on the last observed snapshot.
    """

    def signal(self, observation: Observation, ids: np.ndarray) -> np.ndarray:
        """Minus the entropy of the predicted distribution in nats, shape (n_records,)."""
        return -observation.features(ids, observation.rounds[-1]).entropy.numpy()


@register("grad_norm")
class GradientNormAttack(ThresholdAttack):
    """Members have smaller per-example gradients (Nasr, Shokri and Houmansadr, S&P 2019, section on gradient norms).

    Score = minus the exact L2 norm of the per-example gradient over all parameters.
    """

    def signal(self, observation: Observation, ids: np.ndarray) -> np.ndarray:
        """Minus the per-example gradient L2 norm, shape (n_records,)."""
        return -observation.features(ids, observation.rounds[-1]).gradient_norm.numpy()


@register("label_only")
class LabelOnlyAttack(MembershipInferenceAttack):
    """A baseline that reads no model: score = how common the record's label is among the
    attacker's known members (their share of it, in [0, 1]).

    It measures how much the label alone says about membership. With targets whose non-members
    match the members' labels (`fedsim.learning.membership.match_labels`) its AUC is 0.5; above that, a
    label shortcut is inflating every other attack's numbers.
    """

    deterministic = True

    def _labels(self, observation: Observation, ids: np.ndarray) -> np.ndarray:
        return observation.load_records(ids)[1].numpy()

    def fit(self, observation: Observation, ids: np.ndarray, members: np.ndarray) -> LabelOnlyAttack:
        labels = self._labels(observation, ids)
        known = labels[np.asarray(members, dtype=bool)]
        self.frequency = np.bincount(known, minlength=int(labels.max()) + 1) / max(len(known), 1)  # (classes,)
        self.threshold = best_threshold(self.score(observation, ids), members)
        return self

    def score(self, observation: Observation, ids: np.ndarray) -> np.ndarray:
        labels = self._labels(observation, ids)
        return np.where(labels < len(self.frequency), self.frequency[np.minimum(labels, len(self.frequency) - 1)], 0.0)


class LogisticParams(AttackParams):
    """Parameters of an attack that combines per-record signals with a logistic regression."""

    max_iter: int = Field(1000, ge=1, description="iterations of the logistic regression's lbfgs solver")


class LogisticSignalsAttack(MembershipInferenceAttack):
    """Per-record signals combined by a logistic regression (sklearn, lbfgs: deterministic)
    fitted on the attacker's known records; the score is its member probability.

    Subclasses implement `signals`.
    """

    multi_round = True
    deterministic = True
    Params = LogisticParams
    params: LogisticParams

    def __init__(self, params: AttackParams | dict | None = None, seed: int | np.random.SeedSequence = 0) -> None:
        super().__init__(params, seed)
        self.model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=self.params.max_iter))
        self.threshold = 0.5

    def signals(self, observation: Observation, ids: np.ndarray) -> np.ndarray:
        """The per-record signals the regression reads, shape (n_records, n_signals)."""
        raise NotImplementedError

    def fit(self, observation: Observation, ids: np.ndarray, members: np.ndarray) -> LogisticSignalsAttack:
        """Fit the logistic regression on the known records; returns self."""
        self.model.fit(self.signals(observation, ids), members)
        return self

    def score(self, observation: Observation, ids: np.ndarray) -> np.ndarray:
        """Member probability in [0, 1], shape (n_records,)."""
        return self.model.predict_proba(self.signals(observation, ids))[:, 1]


class TrajectoryParams(LogisticParams):
    """Parameters of the trajectory attack."""


@register("trajectory")
class TrajectoryAttack(LogisticSignalsAttack):
    """Loss trajectories across the observed rounds (in the spirit of FedMIA, Zhu et al. 2024, and
    loss-trajectory MIAs, Liu et al., CCS 2022).

    Each record's log-losses on every observed snapshot, plus, for the server, how much lower the
    target's loss is than on the other clients' models of the same round (those clients never
    trained on the target's records: a per-record reference). A logistic regression (sklearn,
    lbfgs: deterministic) trained on the attacker's known records combines them.
    """

    Params = TrajectoryParams
    params: TrajectoryParams

    def signals(self, observation: Observation, ids: np.ndarray) -> np.ndarray:
        """Minus the log-loss per observed round and, for the server, the gap to the references' mean log-loss.

        Shape (n_records, n_rounds), or (n_records, 2 * n_rounds) for a server (each round's value,
        then its gap).
        """
        columns = []
        for round_number in observation.rounds:
            loss = observation.features(ids, round_number).loss
            columns.append(-torch.log(loss + 1e-12))
            reference_loss = observation.reference_losses(ids, round_number)
            if reference_loss is not None:
                columns.append(torch.log(reference_loss + 1e-12).mean(0) - torch.log(loss + 1e-12))
        return torch.stack(columns, 1).numpy()
