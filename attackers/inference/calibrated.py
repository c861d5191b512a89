"""Attacks calibrated per record against the other clients' models (free OUT references).

A curious server holds, every round, the local models of clients that never trained on the
victim's records. Shadow-model attacks must train such reference models at great cost; here
they come with the run. Three published attacks use them, each combining the observed rounds:

- `fedmia`: Zhu et al., "FedMIA: An Effective Membership Inference Attack Exploiting 'All for
  One' Principle in Federated Learning" (2024): per record and round, a Gaussian over the other
  clients of a low-dimensional measurement; the victim's is scored by the one-tailed test
  Pr_OUT[measurement <= observed]; rounds are combined by averaging the log of that probability
  (the authors' code reports the mean probability and a log variant; the log keeps one round's
  very small probability from being averaged away). Two measurements: `hinge` (default), the
  record's hinge loss (logit margin) on each client's returned model, their loss-based FedMIA-I
  with the margin in place of their cross-entropy (deviation: the margin is what LiRA-style tests
  calibrate best, Carlini et al. 2022); `cosine`, the paper's main FedMIA-II: the cosine between
  the record's loss gradient at the model a client was sent and the client's update (sent minus
  returned), as in the authors' code.
- `lira`: Carlini et al., "Membership Inference Attacks From First Principles" (S&P 2022),
  offline: per record a Gaussian over the references of the logit-scaled confidence
  log(p / (1 - p)) of the true label, with one variance per round (their fixed-variance variant,
  advised for few references); the one-tailed statistic z = (phi - mu_out) / sigma_out, rounds
  combined by the mean z (Stouffer), which ranks as the likelihood ratio when rounds shift alike.
- `rmia`: Zarifzadeh et al., "Low-Cost High-Power Membership Inference Attacks" (ICML 2024),
  offline: LR(x) = p(x | victim) / p(x), p(x) = ((1 + a) p_OUT(x) + 1 - a) / 2, score = share of
  population records z (the attacker's known non-members) with LR(x) / LR(z) >= gamma; mean
  over rounds. `a` is chosen on the attacker's known records (AUC over a grid), never on targets.

All three need the reference models, so they run for a curious server that sees individual
updates (`needs_individual_updates`); they are deterministic (no randomness to own). `grad_cosine` (Li,
Li and Ribeiro, ICLR 2023) lives here too: it reads the victim's update as fedmia's cosine does,
needs the same view, but no other client.
"""

from __future__ import annotations

import copy
from typing import Literal

import numpy as np
import torch
from pydantic import Field
from scipy import stats
from sklearn.metrics import roc_auc_score
from torch import nn

from attackers.inference.base import AttackParams, MembershipInferenceAttack
from attackers.inference.features import gradient_alignment
from attackers.inference.observation import Observation, records_key
from attackers.inference.registry import register
from fedsim.core.errors import FedsimError
from fedsim.core.threat_model import ThreatModel
from fedsim.stats.metrics import best_threshold


def _logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(x).double()


def _reference_models(observation: Observation, round_number: int) -> list[nn.Module]:
    """The round's other clients' models, loaded once per observation; FedsimError when there are none."""
    load = observation.reference_models
    assert load is not None  # callers check, with their own message
    references = observation.cached(("reference_models", round_number), lambda: load(round_number))
    if not references:
        raise FedsimError(f"round {round_number}: no other client's model was received, so there is no reference to calibrate against")
    return references


def outputs(observation: Observation, ids: np.ndarray, round_number: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Logits of the records on the observed model and on each reference model of a round.

    Returns
    -------
    (target, references, labels)
        (N, classes) float64 logits, (R, N, classes) float64 logits, (N,) int64 labels; cached
        in the observation, so every calibrated attack reads the models once.
    """
    if observation.reference_models is None:
        raise FedsimError(ThreatModel.refusal("attacks fedmia, lira and rmia calibrate against the other clients' models"))

    def compute() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        references = _reference_models(observation, round_number)
        x, y = observation.load_records(ids)
        return _logits(observation.model(round_number), x), torch.stack([_logits(m, x) for m in references]), y

    return observation.cached(("calibrated", round_number, records_key(ids)), compute)


def _flat(model: nn.Module) -> torch.Tensor:
    """The trainable parameters, flattened and concatenated in `named_parameters` order, float64."""
    return torch.cat([p.detach().flatten() for p in model.parameters() if p.requires_grad]).double()


def _alignment(observation: Observation, model: nn.Module, x: torch.Tensor, y: torch.Tensor, directions: torch.Tensor) -> torch.Tensor:
    """`gradient_alignment` on the observation's device (the per-example gradients), the (N, C) cosines back on the CPU."""
    if observation.device.type == "cpu":
        return gradient_alignment(model, x, y, directions, observation.memory_budget)
    device = observation.device
    return gradient_alignment(copy.deepcopy(model).to(device), x.to(device), y.to(device), directions.to(device),
                              observation.memory_budget).cpu()


def update_cosines(observation: Observation, ids: np.ndarray, round_number: int) -> tuple[np.ndarray, np.ndarray]:
    """FedMIA-II's measurement: cos(gradient of the record's loss at the sent model, the client's update).

    For the victim and each reference client of the round, the update is what the client was
    sent minus what it returned (the direction its local descent moved); the record's gradient
    is taken at the model that client was sent, one per-example gradient pass per distinct sent
    model and set of records. Where the victim was sent something else than the others (an
    isolated victim's own chain, an ascended model), its cosine is taken at its own sent model
    and the references' at theirs: each value measures that client's own step, but the Gaussian
    then compares steps taken from different points, which the paper (everyone sent the
    aggregate) does not cover.

    Parameters
    ----------
    observation : Observation
        A curious server's view (it needs `load_sent`, `reference_models` and `reference_sent`).
    ids : numpy.ndarray
        Record ids, shape (n_records,).
    round_number : int
        The round (1-based).

    Returns
    -------
    victim : numpy.ndarray
        (n_records,) float64 cosines for the victim's update.
    references : numpy.ndarray
        (n_references, n_records) float64 cosines for the other clients' updates, in the order of
        `reference_models`. Both are cached in the observation.

    Raises
    ------
    FedsimError
        When the view does not hold what each client was sent, or no other client's model.
    """
    load_sent, reference_sent = observation.load_sent, observation.reference_sent
    if load_sent is None or reference_sent is None or observation.reference_models is None:
        raise FedsimError(ThreatModel.refusal("fedmia with measurement: cosine reads what every client was sent and returned"))

    def compute() -> tuple[np.ndarray, np.ndarray]:
        returned = [observation.model(round_number), *_reference_models(observation, round_number)]
        sent = [load_sent(round_number), *reference_sent(round_number)]
        x, y = observation.load_records(ids)
        starts: list[tuple[torch.Tensor, nn.Module, list[int]]] = []  # distinct sent models and the clients sent each
        for client, model in enumerate(sent):
            flat = _flat(model)
            match = next((entry for entry in starts if torch.equal(entry[0], flat)), None)
            if match is None:
                starts.append((flat, model, [client]))
            else:
                match[2].append(client)
        cosines = torch.zeros(len(sent), len(y), dtype=torch.float64)
        for flat, model, clients in starts:
            directions = torch.stack([flat - _flat(returned[c]) for c in clients])
            cosines[clients] = _alignment(observation, model, x, y, directions).T
        return cosines[0].numpy(), cosines[1:].numpy()

    return observation.cached(_update_cosines_key(ids, round_number), compute)


def _update_cosines_key(ids: np.ndarray, round_number: int) -> tuple:
    return ("update-cosines", round_number, records_key(ids))


def victim_update_cosines(observation: Observation, ids: np.ndarray, round_number: int) -> np.ndarray:
    """The victim's part of `update_cosines`, (n_records,) float64, without the other clients (none may have trained).

    Read from `update_cosines`' cache when that pass already ran; FedsimError when the view does not
    hold what the victim was sent.
    """
    if observation.is_cached(_update_cosines_key(ids, round_number)):
        return update_cosines(observation, ids, round_number)[0]
    load_sent = observation.load_sent
    if load_sent is None:
        raise FedsimError(ThreatModel.refusal("grad_cosine reads what the victim was sent and returned"))

    def compute() -> np.ndarray:
        sent, returned = load_sent(round_number), observation.model(round_number)
        x, y = observation.load_records(ids)
        direction = (_flat(sent) - _flat(returned))[None]
        return _alignment(observation, sent, x, y, direction)[:, 0].numpy()

    return observation.cached(("victim-update-cosines", round_number, records_key(ids)), compute)


def _true_and_others(values: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The true label's entry, shape (..., N), and `values` (..., N, classes) with it set to -inf."""
    mask = torch.nn.functional.one_hot(labels, values.shape[-1]).bool().expand_as(values)
    return values.masked_select(mask).view(values.shape[:-1]), values.masked_fill(mask, -torch.inf)


def hinge(logits: torch.Tensor, labels: torch.Tensor) -> np.ndarray:
    """Logit margin z_y - max_{j != y} z_j: logits (..., N, classes) and labels (N,) give (..., N)."""
    true, others = _true_and_others(logits, labels)
    return (true - others.amax(-1)).numpy()


def scaled_confidence(logits: torch.Tensor, labels: torch.Tensor) -> np.ndarray:
    """log(p_y / (1 - p_y)) = z_y - logsumexp_{j != y} z_j, computed stably (Carlini et al. 2022); shapes as `hinge`."""
    true, others = _true_and_others(logits, labels)
    return (true - others.logsumexp(-1)).numpy()


def true_probability(logits: torch.Tensor, labels: torch.Tensor) -> np.ndarray:
    """Softmax probability of the true label; shapes as `hinge`."""
    return _true_and_others(torch.softmax(logits, -1), labels)[0].numpy()


def fedmia_round(observed: np.ndarray, references: np.ndarray, per_record_variance: bool = True) -> np.ndarray:
    """Log Pr[OUT margin <= observed] under N(mean, variance) of each record's references.

    Parameters
    ----------
    observed : (N,) array
        The record's signal on the victim's model (higher: more member-like).
    references : (R, N) array
        The same signal on the other clients' models.
    per_record_variance : bool
        Each record's own variance over the references (+1e-8), as published; else one variance
        for the round (the mean of the records'), steadier with few other clients.

    Returns
    -------
    (N,) array
        Log of the one-tailed test's probability (Zhu et al. 2024).
    """
    mean = references.mean(0)
    variance = references.var(0) if per_record_variance else np.full(references.shape[1], references.var(0).mean())
    std = np.sqrt(variance + 1e-8)
    return stats.norm.logcdf(observed, mean, std)


def lira_round(observed: np.ndarray, references: np.ndarray, shrink: bool = False) -> np.ndarray:
    """One-tailed offline LiRA statistic (phi - mu_out) / sigma_out with one variance per round.

    Parameters
    ----------
    observed : (N,) array
        Logit-scaled confidence on the victim's model.
    references : (R, N) array
        The same on the reference models; sigma_out^2 is the mean over records of their
        per-record variances (Carlini et al.'s fixed variance), W.
    shrink : bool
        Shrink each record's OUT mean toward the round's mean over records (empirical Bayes,
        James-Stein; Efron and Morris, JASA 1973): with R references the record's mean is off by
        variance W / R, so mu_out = lam * mean_r + (1 - lam) * mean over records with
        lam = B / (B + W / R), B the spread of the true means (variance of the records' reference
        means minus W / R, at least 0), and sigma_out^2 = W + (1 - lam) * B, the OUT value's
        predictive variance. lam -> 1 (Carlini et al.) with many references. A deviation from the
        paper for few references (a federated round offers one per other client).

    Returns
    -------
    (N,) array
        z, monotone in the offline test's Pr[Z < phi], Z ~ N(mu_out, sigma_out^2).
    """
    count = references.shape[0]
    mean = references.mean(0)
    within = references.var(0, ddof=1 if count > 1 else 0).mean()
    if not shrink or count < 2:
        return (observed - mean) / np.sqrt(within + 1e-12)
    between = max(float(mean.var()) - within / count, 0.0)
    lam = between / (between + within / count + 1e-12)
    return (observed - (lam * mean + (1 - lam) * mean.mean())) / np.sqrt(within + (1 - lam) * between + 1e-12)


def rmia_round(target: np.ndarray, references: np.ndarray, population_target: np.ndarray,
               population_references: np.ndarray, a: float, gamma: float = 1.0, self_index: np.ndarray | None = None) -> np.ndarray:
    """RMIA's offline score: the share of population records x dominates by a likelihood ratio >= gamma.

    A scored record that is itself in the population is compared with the other Z - 1 only (leave
    one out), so the attacker's known non-members, scored when `a` and the threshold are fitted,
    are scored as a target is, not 1/Z higher for matching themselves.

    Parameters
    ----------
    target, population_target : (N,), (Z,) arrays
        p(x | victim's model) of the targets and of the population records.
    references, population_references : (R, N), (R, Z) arrays
        The same on the reference (OUT) models.
    a : float
        Offline scaling: p(x) = ((1 + a) mean_OUT p(x) + 1 - a) / 2 (Zarifzadeh et al. 2024).
    gamma : float
        Likelihood-ratio threshold (1 in the paper).
    self_index : (N,) int array, optional
        Each scored record's position in the population, -1 for one outside it (a target).

    Returns
    -------
    (N,) array in [0, 1]
    """
    def ratio(p: np.ndarray, out: np.ndarray) -> np.ndarray:
        return p / (((1 + a) * out.mean(0) + 1 - a) / 2 + 1e-30)

    population_ratio = ratio(population_target, population_references)
    scored = ratio(target, references)
    inside = np.zeros(len(scored), dtype=bool) if self_index is None else np.asarray(self_index) >= 0
    if inside.any():
        scored[inside] = population_ratio[np.asarray(self_index)[inside]]  # one value per record, whichever pass computed it
    needed = scored / gamma  # LR(x)/LR(z) >= gamma  <=>  LR(z) <= LR(x)/gamma
    counts = np.searchsorted(np.sort(population_ratio), needed, side="right").astype(np.float64)
    counts[inside] -= scored[inside] <= needed[inside]  # the record itself
    return counts / (len(population_ratio) - inside)


class _CalibratedAttack(MembershipInferenceAttack):
    """Shared shape: fit only sets the balanced-accuracy threshold (and RMIA's a) on the known records."""

    multi_round = True
    deterministic = True
    needs_individual_updates = True
    reads = "calibrates against the other clients' models"
    references_needed = 1

    def fit(self, observation: Observation, ids: np.ndarray, members: np.ndarray) -> _CalibratedAttack:
        self.threshold = best_threshold(self.score(observation, ids), members)
        return self

    def score(self, observation: Observation, ids: np.ndarray) -> np.ndarray:
        raise NotImplementedError


class FedMIAParams(AttackParams):
    """FedMIA's parameters."""

    variance: Literal["per_record", "global"] = Field(
        "per_record", description="per_record: each record's variance over the other clients' models (as published); "
                                  "global: one variance per round, steadier with few clients")
    measurement: Literal["hinge", "cosine"] = Field(
        "hinge", description="hinge: the record's logit margin on each client's returned model (FedMIA-I, loss-based); "
                             "cosine: the cosine between the record's gradient at the sent model and the client's update "
                             "(FedMIA-II, the paper's main attack; a per-example gradient pass per round and distinct sent model)")


@register("fedmia")
class FedMIAAttack(_CalibratedAttack):
    """FedMIA (Zhu et al. 2024): one-tailed test of a per-record measurement against the other clients', log-averaged over rounds.

    `measurement: hinge` (default) reads the logit margin on the returned models (FedMIA-I);
    `measurement: cosine` the alignment of the record's gradient with each client's update
    (FedMIA-II, the paper's main attack).
    """

    Params = FedMIAParams
    params: FedMIAParams

    def score(self, observation: Observation, ids: np.ndarray) -> np.ndarray:
        rounds = []
        for round_number in observation.rounds:
            if self.params.measurement == "cosine":
                observed, reference = update_cosines(observation, ids, round_number)
            else:
                target, references, labels = outputs(observation, ids, round_number)
                observed, reference = hinge(target, labels), hinge(references, labels)
            rounds.append(fedmia_round(observed, reference, self.params.variance == "per_record"))
        return np.mean(rounds, 0)


@register("grad_cosine")
class GradientCosineAttack(_CalibratedAttack):
    """The victim's update against each record's gradient, uncalibrated: Li, Li and Ribeiro, "Effective
    passive membership inference attacks in federated learning against overparameterized models"
    (ICLR 2023); FedMIA's Grad-Cosine baseline (Zhu et al. 2024).

    Score = cos(dL_x/dW at the model the victim was sent, sent minus returned) of the last observed
    round, one update as in Li et al.; the threshold is fitted on the known records. It reads what
    `fedmia`'s cosine measurement reads for the victim, without the other clients' Gaussian, so it
    shares that pass (`update_cosines`, or the victim's part alone, `victim_update_cosines`: it
    needs no other client) and the same view. (FedMIA's "Avg-Cosine" mean over
    rounds is not used: on ten Location runs the round-1 cosines spread three times wider than
    round 5's and separate members far less (AUC round 5 minus round 1 +0.22 [+0.20, +0.24],
    paired), so they dominate the mean: last round minus mean +0.12 [+0.11, +0.13]; README.)
    """

    multi_round = False
    reads = "reads the victim's own update (what it was sent and returned)"
    references_needed = 0

    def score(self, observation: Observation, ids: np.ndarray) -> np.ndarray:
        """The cosine of the last observed round, in [-1, 1], shape (n_records,).

        Higher: the victim's update points more along the record's descent direction.
        """
        return victim_update_cosines(observation, ids, observation.rounds[-1])


class LiRAParams(AttackParams):
    """LiRA's parameters."""

    rounds: Literal["all", "last"] = Field("all", description="all: the mean z over the observed rounds; last: the last "
                                           "observed round's z alone")
    mean: Literal["per_record", "shrunk"] = Field(
        "per_record", description="per_record: each record's mean over the references (Carlini et al.); shrunk: toward the "
                                  "round's mean over records, by how noisy R references make it (empirical Bayes)")


@register("lira")
class LiRAAttack(_CalibratedAttack):
    """LiRA offline (Carlini et al. 2022) with the other clients' models as OUT references; mean z over rounds.

    `args: {rounds: last, mean: shrunk}` reads the last observed round with an empirical-Bayes OUT
    mean (`lira_round`), a deviation for few references. On 30 Location runs not used to choose
    it, it beats the default in TPR at FPR 1e-2 and AUC (a secondary comparison) and `loss`, but
    not `trajectory`: the pre-registered test against it failed (README, "Modern attacks").
    """

    Params = LiRAParams
    params: LiRAParams

    def score(self, observation: Observation, ids: np.ndarray) -> np.ndarray:
        rounds = []
        for round_number in observation.rounds[-1:] if self.params.rounds == "last" else observation.rounds:
            target, references, labels = outputs(observation, ids, round_number)
            rounds.append(lira_round(scaled_confidence(target, labels), scaled_confidence(references, labels),
                                     shrink=self.params.mean == "shrunk"))
        return np.mean(rounds, 0)


class RMIAParams(AttackParams):
    """RMIA's parameters (Zarifzadeh et al. 2024)."""

    a: float | None = Field(None, ge=0, le=1, description="offline scaling of p(x) = ((1 + a) p_OUT(x) + 1 - a) / 2; "
                            "null: chosen on the attacker's known records (AUC over 0, 0.1, ..., 1)")
    gamma: float = Field(1.0, gt=0, description="likelihood-ratio threshold against each population record")


@register("rmia")
class RMIAAttack(_CalibratedAttack):
    """RMIA offline (Zarifzadeh et al. 2024); population = the attacker's known non-members; mean over rounds."""

    Params = RMIAParams
    params: RMIAParams
    A_GRID = tuple(np.round(np.linspace(0, 1, 11), 2))

    def __init__(self, params: RMIAParams | dict | None = None, seed: int | np.random.SeedSequence = 0) -> None:
        super().__init__(params, seed)
        self.a: float | None = self.params.a
        self.gamma: float = self.params.gamma
        self.population: np.ndarray | None = None

    def fit(self, observation: Observation, ids: np.ndarray, members: np.ndarray) -> RMIAAttack:
        self.population = np.asarray(ids)[~np.asarray(members, dtype=bool)]
        if self.a is None:
            aucs = []
            for a in self.A_GRID:
                self.a = float(a)
                aucs.append(roc_auc_score(members, self.score(observation, ids)))
            self.a = float(self.A_GRID[int(np.argmax(aucs))])
        super().fit(observation, ids, members)
        return self

    def score(self, observation: Observation, ids: np.ndarray) -> np.ndarray:
        if self.population is None or self.a is None:
            raise RuntimeError("rmia: fit it on the attacker's known records first (its population)")
        where = {record: i for i, record in enumerate(self.population.tolist())}
        self_index = np.array([where.get(record, -1) for record in np.asarray(ids).tolist()], dtype=np.int64)
        rounds = []
        for round_number in observation.rounds:
            target, references, labels = outputs(observation, ids, round_number)
            population, population_references, population_labels = outputs(observation, self.population, round_number)
            rounds.append(rmia_round(true_probability(target, labels), true_probability(references, labels),
                                     true_probability(population, population_labels),
                                     true_probability(population_references, population_labels), self.a, self.gamma, self_index))
        return np.mean(rounds, 0)
