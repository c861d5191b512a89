"""The privacy audit and the calibrated attacks against known answers (no Ray)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from opacus.accountants import RDPAccountant
from scipy import stats

from attackers.inference.audit import (
    canary_audit,
    empirical_epsilon,
    empirical_epsilon_on_halves,
    one_run_epsilon,
    one_run_p_value,
    server_dp_epsilon,
)
from attackers.inference.calibrated import fedmia_round, hinge, lira_round, rmia_round, scaled_confidence
from attackers.inference.leakage import target_halves
from fedsim.report.writer import audit_gap
from fedsim.stats.metrics import clopper_pearson


@pytest.mark.parametrize("k,n", [(0, 10), (3, 10), (10, 10), (57, 200), (1, 1000)])
def test_clopper_pearson_equals_scipy_beta_quantiles(k, n):
    low, high = clopper_pearson(k, n)
    expected_low = 0.0 if k == 0 else stats.beta.ppf(0.025, k, n - k + 1)
    expected_high = 1.0 if k == n else stats.beta.ppf(0.975, k + 1, n - k)
    assert low == pytest.approx(expected_low, abs=1e-12) and high == pytest.approx(expected_high, abs=1e-12)
    # the exact interval covers what scipy's binomtest calls the Clopper-Pearson interval
    interval = stats.binomtest(k, n).proportion_ci(0.95, method="exact")
    assert (low, high) == pytest.approx((interval.low, interval.high), abs=1e-9)


def test_empirical_epsilon_matches_the_formula_on_the_measuring_half():
    rng = np.random.default_rng(1)
    members = np.r_[np.ones(400, bool), np.zeros(400, bool)]
    scores = np.r_[rng.normal(3, 1, 400), rng.normal(0, 1, 400)]
    bound = empirical_epsilon(scores, members, delta=1e-5, seed=7)
    # recompute on the measuring half by hand, at the chosen threshold
    rng = np.random.default_rng(7)
    choose = np.zeros(800, bool)
    for side in (members, ~members):
        where = np.flatnonzero(side)
        choose[rng.permutation(where)[: len(where) // 2]] = True
    s, m = scores[~choose], members[~choose]
    predicted = s >= bound.threshold
    tp, fp = int((predicted & m).sum()), int((predicted & ~m).sum())
    fn, tn = int(m.sum()) - tp, int((~m).sum()) - fp
    tpr_lo = stats.beta.ppf(0.025, tp, m.sum() - tp + 1) if tp else 0.0
    fpr_hi = stats.beta.ppf(0.975, fp + 1, (~m).sum() - fp) if fp < (~m).sum() else 1.0
    tnr_lo = stats.beta.ppf(0.025, tn, (~m).sum() - tn + 1) if tn else 0.0
    fnr_hi = stats.beta.ppf(0.975, fn + 1, m.sum() - fn) if fn < m.sum() else 1.0
    expected = max(math.log((tpr_lo - 1e-5) / fpr_hi), math.log((tnr_lo - 1e-5) / fnr_hi), 0.0)
    assert bound.epsilon == pytest.approx(expected, rel=1e-9)
    assert 1.0 < bound.epsilon <= bound.point  # a strong attack separates the targets, the point estimate is above


def test_a_perfect_attack_on_100_plus_100_measuring_targets_reaches_3_28():
    """The empirical epsilon's ceiling with 200 + 200 targets (100 + 100 measure it): the Clopper-Pearson bounds
    of 100 of 100 and of 0 of 100 give ln((0.025^(1/100) - delta) / (1 - 0.025^(1/100))) = 3.28."""
    members = np.r_[np.ones(200, bool), np.zeros(200, bool)]
    value = empirical_epsilon(members.astype(float), members, delta=1e-5, seed=0)
    edge = 0.025 ** (1 / 100)  # TPR's lower bound; 1 - edge is FPR's upper bound
    assert value.epsilon == pytest.approx(math.log((edge - 1e-5) / (1 - edge)), rel=1e-9)
    assert round(value.epsilon, 2) == 3.28 and value.point == math.inf


def test_control_from_one_pool_proves_nothing():
    """Members and non-members drawn from one pool: the empirical epsilon must be 0."""
    rng = np.random.default_rng(0)
    bounds = []
    for seed in range(50):
        scores = rng.normal(0, 1, 400)
        members = rng.permutation(np.r_[np.ones(200, bool), np.zeros(200, bool)])
        bounds.append(empirical_epsilon(scores, members, seed=seed).epsilon)
    assert np.mean(np.array(bounds) > 0) <= 0.05  # a 95% lower bound errs at most 5% of the time
    assert np.median(bounds) == 0.0


def test_lower_bound_never_exceeds_the_epsilon_of_randomized_response():
    """Randomised response with epsilon 1 is exactly 1-DP: the audit of its outputs stays below 1."""
    rng = np.random.default_rng(3)
    eps = 1.0
    for seed in range(20):
        members = rng.random(2000) < 0.5
        truthful = rng.random(2000) < math.exp(eps) / (1 + math.exp(eps))
        scores = np.where(truthful, members, ~members).astype(float)
        bound = empirical_epsilon(scores, members, delta=0.0, seed=seed)
        assert bound.epsilon <= eps  # here the records are independent trials, as the statistic assumes
    assert bound.point == pytest.approx(eps, abs=0.35)


def test_one_run_p_value_is_the_binomial_tail_without_delta_and_grows_with_delta():
    assert one_run_p_value(100, 40, 30, 1.0, 0.0) == pytest.approx(stats.binom.sf(29, 40, 1 / (1 + math.exp(-1.0))))
    assert one_run_p_value(100, 40, 30, 1.0, 1e-3) > one_run_p_value(100, 40, 30, 1.0, 0.0)


def test_one_run_epsilon_is_where_the_p_value_crosses_the_level():
    eps = one_run_epsilon(1000, 100, 90, delta=1e-5)
    assert eps > 0
    assert one_run_p_value(1000, 100, 90, eps, 1e-5) == pytest.approx(0.05, abs=1e-4)
    assert one_run_epsilon(1000, 100, 50) == 0.0  # coin-flip guesses prove nothing


def test_canary_audit_of_randomized_response_stays_below_its_epsilon():
    rng = np.random.default_rng(5)
    eps = 2.0
    for _ in range(20):
        included = rng.random(1000) < 0.5
        truthful = rng.random(1000) < math.exp(eps) / (1 + math.exp(eps))
        scores = np.where(truthful, included, ~included) + rng.random(1000) * 0.01  # ties broken at random
        found, guesses, correct = canary_audit(scores, included, guesses=200, delta=0.0)
        assert guesses == 200 and 0 <= correct <= 200
        assert found <= eps


def test_server_dp_epsilon_is_opacus_rdp_of_the_gaussian_mechanism():
    accountant = RDPAccountant()
    accountant.history = [(1.1, 0.5, 10)]
    assert server_dp_epsilon(1.1, 0.5, 10, 1e-5) == pytest.approx(accountant.get_epsilon(1e-5))
    assert server_dp_epsilon(0.0, 1.0, 3) == math.inf


def _spearman(a, b):
    return stats.spearmanr(a, b).statistic


def test_fedmia_and_lira_rank_records_as_the_known_likelihood_ratio():
    """OUT ~ N(mu_i, s_i), IN ~ N(mu_i + d s_i, s_i): the likelihood ratio is exp(d z - d^2/2), monotone in z."""
    rng = np.random.default_rng(11)
    n, references, shift = 500, 400, 1.5
    mu, sd = rng.normal(0, 2, n), rng.uniform(0.5, 2, n)
    members = rng.random(n) < 0.5
    observed = rng.normal(mu + shift * sd * members, sd)
    out = rng.normal(mu, sd, size=(references, n))
    z = (observed - mu) / sd
    ratio = shift * z - shift**2 / 2  # log likelihood ratio IN/OUT
    assert _spearman(fedmia_round(observed, out), ratio) > 0.99
    # LiRA's fixed variance needs one variance for all records: same sd for every record
    sd_common = np.full(n, 1.3)
    observed_common = rng.normal(mu + shift * sd_common * members, sd_common)
    out_common = rng.normal(mu, sd_common, size=(references, n))
    ratio_common = shift * (observed_common - mu) / sd_common
    assert _spearman(lira_round(observed_common, out_common), ratio_common) > 0.99
    assert _spearman(fedmia_round(observed_common, out_common, per_record_variance=False), ratio_common) > 0.99


def test_lira_mean_z_over_rounds_ranks_as_the_joint_likelihood_ratio():
    rng = np.random.default_rng(12)
    n, references, rounds, shift, sd = 400, 300, 5, 0.8, 1.0
    members = rng.random(n) < 0.5
    scores, ratio = [], np.zeros(n)
    for _ in range(rounds):
        mu = rng.normal(0, 2, n)
        observed = rng.normal(mu + shift * members, sd)
        scores.append(lira_round(observed, rng.normal(mu, sd, size=(references, n))))
        ratio += shift * (observed - mu) / sd**2
    assert _spearman(np.mean(scores, 0), ratio) > 0.99


def test_shrunk_lira_ranks_as_the_bayes_likelihood_ratio_with_few_references():
    """OUT means mu_i ~ N(0, tau^2), OUT ~ N(mu_i, s^2), IN = OUT + d; three references per record. The exact
    OUT predictive given them is N(lam m_i, s^2 + lam s^2 / R), lam = tau^2 / (tau^2 + s^2 / R) (Efron and
    Morris 1973): the shrunk statistic ranks as that likelihood ratio; the per-record mean does not."""
    rng = np.random.default_rng(13)
    n, references, tau, sd, shift = 4000, 3, 1.0, 1.0, 1.0
    mu = rng.normal(0, tau, n)
    members = rng.random(n) < 0.5
    observed = rng.normal(mu + shift * members, sd)
    out = rng.normal(mu, sd, size=(references, n))
    lam = tau**2 / (tau**2 + sd**2 / references)
    centre, variance = lam * out.mean(0), sd**2 + lam * sd**2 / references
    exact = stats.norm.logpdf(observed, centre + shift, np.sqrt(variance)) - stats.norm.logpdf(observed, centre, np.sqrt(variance))
    shrunk, plain = lira_round(observed, out, shrink=True), lira_round(observed, out)
    assert _spearman(shrunk, exact) > 0.999
    # the statistic itself, not only its order: centre and predictive variance estimated from the references
    exact_z = (observed - centre) / np.sqrt(variance)
    assert np.abs(shrunk - exact_z).max() < 0.1  # a variance of W alone would be 12% off: up to ~0.4 here
    assert np.polyfit(exact_z, shrunk, 1)[0] == pytest.approx(1.0, abs=0.03)
    assert _spearman(plain, exact) < 0.99
    many = rng.normal(mu, sd, size=(400, n))  # with many references lam -> 1: Carlini et al.'s statistic
    assert _spearman(lira_round(observed, many, shrink=True), lira_round(observed, many)) > 0.999


def test_signals_from_logits():
    import torch

    logits = torch.tensor([[2.0, 0.0, -1.0], [0.0, 3.0, 1.0]], dtype=torch.float64)
    labels = torch.tensor([0, 2])
    assert hinge(logits, labels) == pytest.approx([2.0, -2.0])
    p = torch.softmax(logits, -1)[[0, 1], [0, 2]].numpy()
    assert scaled_confidence(logits, labels) == pytest.approx(np.log(p / (1 - p)))


def test_rmia_counts_population_records_dominated_by_the_likelihood_ratio():
    target, references = np.array([0.9, 0.2]), np.array([[0.3, 0.2], [0.5, 0.2]])
    population, population_references = np.array([0.4, 0.1, 0.8]), np.array([[0.4, 0.1, 0.4], [0.4, 0.1, 0.4]])
    a = 0.5

    def lr(p, out):
        return p / (((1 + a) * out.mean(0) + 1 - a) / 2)

    expected = [(lr(population, population_references) <= x).mean() for x in lr(target, references)]
    assert rmia_round(target, references, population, population_references, a) == pytest.approx(expected)


@pytest.mark.parametrize("gamma", [1.0, 2.0, 0.5])
def test_rmia_scores_a_population_record_against_the_others_only(gamma):
    """Leave one out: a known non-member (in the population) is scored as a target would be, against the
    other Z - 1 population records, not 1/Z higher for dominating itself."""
    rng = np.random.default_rng(8)
    population, population_references = rng.uniform(0.05, 1, 40), rng.uniform(0.05, 1, (3, 40))
    population[7] = population[8]  # a tie between two population records
    population_references[:, 7] = population_references[:, 8]
    target, references = rng.uniform(0.05, 1, 5), rng.uniform(0.05, 1, (3, 5))
    scored = np.r_[target, population[:20]], np.c_[references, population_references[:, :20]]
    self_index = np.r_[np.full(5, -1), np.arange(20)]
    loo = rmia_round(*scored, population, population_references, 0.3, gamma, self_index=self_index)
    for i, where in enumerate(self_index):  # the slow reference: the population without the scored record
        keep = np.arange(40) != where
        alone = rmia_round(scored[0][i:i + 1], scored[1][:, i:i + 1], population[keep], population_references[:, keep], 0.3, gamma)
        assert loo[i] == pytest.approx(alone[0], abs=1e-12)
    with_self = rmia_round(*scored, population, population_references, 0.3, gamma)
    if gamma <= 1:  # LR(x) / LR(x) = 1 >= gamma: without leaving it out each known non-member counted itself
        assert with_self[5:] == pytest.approx((loo[5:] * 39 + 1) / 40, abs=1e-12)
    assert with_self[:5] == pytest.approx(loo[:5], abs=0)  # targets are outside the population: unchanged


def test_canaries_join_the_victims_data_with_probability_half_and_leave_the_rest_of_the_ledger_alone():
    from conftest import small_config
    from fedsim.learning.datasets import load_pool
    from fedsim.learning.membership import CANARY, build_ledger

    pool = load_pool("digits", None)
    plain = build_ledger(small_config(), pool)
    audited = build_ledger(small_config("audit.canaries=200"), pool)
    canaries = audited[audited["role"] == CANARY]
    rest = audited[audited["role"] != CANARY].reset_index(drop=True)
    pd.testing.assert_frame_equal(rest, plain)  # a run without canaries keeps its ledger
    assert len(canaries) == 200 and not set(canaries["record_id"]) & set(plain["record_id"])
    assert (canaries.loc[canaries["member"], "client"] == 0).all() and canaries.loc[~canaries["member"], "client"].isna().all()
    assert not canaries["target"].any()
    assert 70 < canaries["member"].sum() < 130  # Binomial(200, 1/2)


def test_bound_on_halves_chooses_on_the_selection_half_and_measures_on_the_other():
    rng = np.random.default_rng(3)
    members = np.r_[np.ones(300, bool), np.zeros(300, bool)]
    scores = np.r_[rng.normal(2, 1, 300), rng.normal(0, 1, 300)]
    selection = target_halves(members, seed=5)
    chosen, bound = empirical_epsilon_on_halves(scores, members, selection)
    # the seeded split of empirical_epsilon is one such split: same numbers on the same halves
    rng7 = np.random.default_rng(7)
    choose = np.zeros(600, bool)
    for side in (members, ~members):
        where = np.flatnonzero(side)
        choose[rng7.permutation(where)[: len(where) // 2]] = True
    assert empirical_epsilon_on_halves(scores, members, choose)[1] == empirical_epsilon(scores, members, seed=7)
    # the threshold and the selection value depend on the selection half only
    moved = scores.copy()
    moved[~selection] = rng.permutation(moved[~selection])
    again_chosen, again = empirical_epsilon_on_halves(moved, members, selection)
    assert (again_chosen, again.threshold) == (chosen, bound.threshold) and again.epsilon != bound.epsilon
    assert chosen > 0 and 0 < bound.epsilon <= bound.point


def test_the_audit_paragraph_leads_with_the_headline_attacks_canaries_and_labels_the_empirical_epsilon():
    leakage = pd.DataFrame({
        "round": [2, 2, 2],
        "attack": ["loss", "nasr", "lira"],
        "epsilon_empirical": [0.9, 0.5, 0.7],  # on every target loss looks best: not what selects
        "epsilon_empirical_point": [1.0, 0.6, 0.8],
        "canary_epsilon_lower_bound": [0.2, 1.5, 0.9],  # nasr's canaries show most: not the headline's
        "epsilon_empirical_select": [0.4, 0.8, 0.6],
        "epsilon_empirical_holdout": [0.35, 0.31, 0.5],
    })
    accountant = pd.DataFrame({"round": [2], "epsilon": [4.0]})
    text = audit_gap(leakage, accountant, headline="loss")
    assert text.startswith("Round 2: the accountant guarantees epsilon <= 4; the canaries prove epsilon >= 0.2 at 95% confidence "
                           "against the headline attack (loss, fixed before the run)")
    assert f"a gap of {4.0 - 0.2:.3g}" in text
    assert ("The empirical epsilon of the targets is 0.31 on one half of the targets for the best attack (nasr, selected by its value "
            "on the other half, 0.8); it is not a DP lower bound") in text
    # a leakage.csv of older fedsim (audit columns under their former names, no halves) reads the same way
    old = audit_gap(leakage.drop(columns=["epsilon_empirical_select", "epsilon_empirical_holdout", "canary_epsilon_lower_bound"]).rename(
        columns={"epsilon_empirical": "epsilon_lower_bound", "epsilon_empirical_point": "epsilon_lb_point"}), accountant, headline="loss")
    assert "no canaries in this run" in old and "the gap is the whole of it" in old
    assert "0.9 for the best attack (loss, chosen on every target: this leakage.csv has no halves; point estimate 1)" in old
    nothing = audit_gap(leakage.assign(canary_epsilon_lower_bound=0.0), accountant, headline="loss")
    assert "the canaries prove no epsilon above 0" in nothing and "the gap is the whole of it" in nothing


def test_the_audit_plot_draws_the_headlines_canaries_and_the_empirical_epsilon_selected_on_one_half():
    import pandas as pd

    from fedsim.report.plots import privacy_audit

    # round 1: loss has the highest value on all targets, but nasr is chosen on the selection half
    leakage = pd.DataFrame({"round": [1, 1], "attack": ["loss", "nasr"], "epsilon_empirical": [2.0, 1.0],
                            "epsilon_empirical_point": [2.5, 1.5], "canary_epsilon_lower_bound": [0.4, 3.0],
                            "epsilon_empirical_select": [0.5, 1.2], "epsilon_empirical_holdout": [1.9, 0.7]})
    axes = privacy_audit(leakage, pd.DataFrame(), headline="loss").axes[0]
    (line,) = [line for line in axes.get_lines() if "selected on half" in str(line.get_label())]
    assert list(line.get_ydata()) == [0.7]  # nasr's value on the held-out half, not loss's 2.0 on every target
    assert "not a DP lower bound" in str(line.get_label())
    (canaries,) = [line for line in axes.get_lines() if "canaries" in str(line.get_label())]
    assert list(canaries.get_ydata()) == [0.4] and str(canaries.get_label()).startswith("loss's")  # the headline's, not nasr's 3.0
    assert [t.get_text() for t in axes.texts] == ["nasr"]


def test_privacy_audit_references_reports_the_reference_models_membership_auc(tmp_path, capsys):
    """research/privacy_audit.py references: the AUC of the other clients' mean logit-scaled confidence,
    recomputed here from each client's recorded model (float32 forward, as the attacks read them), and
    the interval over two runs of different seeds."""
    import torch
    from sklearn.metrics import roc_auc_score

    from attackers.inference.threat_models import attacker_view
    from conftest import small_config
    from fedsim.app.experiment import run_experiment
    from fedsim.recording.run import Run
    from fedsim.stats.paired import paired_interval
    from research import privacy_audit as audit

    folders = [run_experiment(small_config(f"seed={seed}"), tmp_path / f"run{seed}") for seed in (0, 1)]
    audit.references([str(folder) for folder in folders])
    out = capsys.readouterr().out
    aucs = []
    for folder in folders:
        run = Run.open(folder)
        view = attacker_view(run)
        x, y = run.records(view.eval_ids)
        per_round = []
        for round_number in view.observation.rounds:
            scaled = []
            for client in run.clients(round_number):
                if client != run.config.adversary.victim:
                    with torch.no_grad():
                        logits = run.model(round_number, client).eval()(x).double()
                    p = torch.softmax(logits, -1)[torch.arange(len(y)), y]
                    scaled.append(torch.log(p) - torch.log1p(-p))
            per_round.append(roc_auc_score(view.eval_members, torch.stack(scaled).mean(0).numpy()))
        aucs.append(per_round)
    values = np.array(aucs)
    rounds = view.observation.rounds
    for i, round_number in enumerate(rounds):
        assert f"| {round_number} | {values[:, i].mean():.3f} |" in out
    mean, low, high = paired_interval(values[:, -1] - values[:, 0])
    assert f"round {rounds[-1]} - round {rounds[0]}: {mean:+.3f} [{low:+.3f}, {high:+.3f}]" in out
    with pytest.raises(SystemExit, match="give one or more run folders"):
        audit.references([])
