"""The attacks' one interface (declared parameters, set from the config) and owned randomness.

The recorded run here is built in-process with fedsim.recording.recorder (no Ray): three digits clients
trained for two rounds, a curious server attacking client 0.
"""

import numpy as np
import pandas as pd
import pytest
import torch

from attackers.inference.base import AttackParams, MembershipInferenceAttack
from attackers.inference.leakage import measure_leakage
from attackers.inference.registry import ATTACKS, make_attack
from attackers.inference.threat_models import attacker_view
from conftest import small_config
from fedsim import Run
from fedsim.app.cli import main
from fedsim.app.experiment import check_config
from fedsim.core.errors import FedsimError
from fedsim.learning.datasets import load_pool
from fedsim.learning.membership import build_ledger, save_ledger
from fedsim.learning.models import model_for
from fedsim.learning.training import train_locally
from fedsim.recording.recorder import Recorder

SMALL_NASR = {"epochs": 8, "patience": 3}


def record_trained_run(folder, *overrides):
    """A recorded 2-round run of 3 digits clients (local models really trained), built without Ray."""
    config = small_config("data.num_clients=3", "data.records_per_client=80", "train.local_epochs=5", "train.lr=0.1", *overrides)
    pool = load_pool("digits", None)
    ledger = build_ledger(config, pool)
    recorder = Recorder(folder, config)
    recorder.start(lambda where: save_ledger(ledger, where))
    torch.manual_seed(config.seed)
    model = model_for(config)
    recorder.record_round(0, model.state_dict())
    members = ledger[ledger["member"]]
    for round_number in (1, 2):
        updates = {}
        for client, group in members.groupby("client"):
            local = model_for(config)
            local.load_state_dict(model.state_dict())
            train_locally(local, *pool.take(group["record_id"].to_numpy()), config.train, seed=round_number * 10 + int(client))
            updates[int(client)] = ({k: v.detach().clone() for k, v in local.state_dict().items()}, len(group))
        average = {k: sum(state[k] for state, _ in updates.values()) / len(updates) for k in model.state_dict()}
        model.load_state_dict(average)
        recorder.record_round(round_number, model.state_dict(), updates)
    recorder.finish("complete")
    return Run.open(recorder.folder)


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    return record_trained_run(tmp_path_factory.mktemp("run") / "run", "attack_seeds=2")


def test_every_attack_implements_the_protocol_with_described_params():
    for name, cls in ATTACKS.items():
        assert issubclass(cls, MembershipInferenceAttack) and cls.name == name
        assert issubclass(cls.Params, AttackParams)
        for field, info in cls.Params.model_fields.items():
            assert info.description, (name, field)
        attack = make_attack(name)
        assert attack.params == cls.Params() and isinstance(attack.multi_round, bool)


def test_attack_args_from_set_reach_the_attack(trained_run):
    config = check_config(small_config("attacks=[loss, {name: nasr, args: {epochs: 5, patience: 100}}]"))
    assert config.attacks[0].name == "loss" and config.attacks[0].args == {}
    assert config.model_dump(mode="json")["attacks"][0] == "loss"  # a bare name stays a bare name in config.yaml
    attack = make_attack(config.attacks[1], seed=0)
    assert attack.params.epochs == 5 and attack.params.patience == 100
    view = attacker_view(trained_run)
    attack.fit(view.observation, view.train_ids, view.train_members)
    assert attack.epochs_trained == 5  # patience 100: only the epochs argument stops it


@pytest.mark.parametrize(("args", "fragment"), [
    ("{epoch: 5}", "attack 'nasr' has no argument 'epoch'; its arguments are: filters, epochs"),
    ("{epochs: many}", "attack 'nasr', argument 'epochs'"),
    ("{epochs: 0}", "greater than or equal to 1"),
])
def test_a_bad_attack_argument_is_one_line(args, fragment):
    with pytest.raises(FedsimError) as error:
        check_config(small_config(f"attacks=[{{name: nasr, args: {args}}}]"))
    assert fragment in str(error.value) and "\n" not in str(error.value)


def test_a_bad_attack_argument_exits_2_before_any_run(capsys):
    assert main(["run", "--set", "attacks=[{name: nasr, args: {epoch: 5}}]"]) == 2
    err = capsys.readouterr().err.strip()
    assert "has no argument 'epoch'" in err and len(err.splitlines()) == 1
LEARNED = [{"name": "nasr", "args": SMALL_NASR}, {"name": "nasr_unsupervised", "args": {"epochs": 30}}]


def test_an_attack_scores_the_same_alone_in_any_order_and_twice(trained_run):
    alone = {spec["name"]: measure_leakage(trained_run, [spec], rounds=[2]).seed_rows for spec in LEARNED}
    orders = [["loss", "trajectory", *LEARNED], [LEARNED[1], "grad_norm", LEARNED[0]]]
    for attacks in orders:
        rows = measure_leakage(trained_run, attacks, rounds=[2]).seed_rows
        for name, expected in alone.items():
            got = rows[rows["attack"] == name].drop_duplicates(["round", "seed"]).reset_index(drop=True)
            pd.testing.assert_frame_equal(got, expected.reset_index(drop=True))
    # the global generators are not the attacks' to consume, nor to depend on
    torch.manual_seed(123)
    np.random.seed(123)
    again = measure_leakage(trained_run, [LEARNED[0]], rounds=[2]).seed_rows
    pd.testing.assert_frame_equal(again, alone["nasr"])


def test_attack_objects_score_identically_after_others_consumed_random_state(trained_run):
    view = attacker_view(trained_run)
    observation = view.observation.up_to(2)

    def scores(spec, seed=7):
        attack = make_attack(spec, seed=seed).fit(observation, view.train_ids, view.train_members)
        return attack.score(observation, view.eval_ids)

    first = scores(LEARNED[0])
    scores(LEARNED[1])
    torch.rand(1000)
    assert np.array_equal(scores(LEARNED[0]), first)
    assert not np.array_equal(scores(LEARNED[0], seed=8), first)  # the seed is what decides


def test_learned_attacks_report_mean_and_spread_over_seeds_deterministic_ones_fit_once(trained_run):
    report = measure_leakage(trained_run, ["loss", LEARNED[0]], rounds=[2])
    seeds = report.seed_rows.groupby("attack")["seed"].apply(list).to_dict()
    assert seeds == {"loss": [0], "nasr": [0, 1]}  # attack_seeds=2 in this run's config
    row = report.rows.set_index("attack").loc["nasr"]
    per_seed = report.seed_rows[report.seed_rows["attack"] == "nasr"]
    assert row["n_seeds"] == 2 and row["auc"] == pytest.approx(per_seed["auc"].mean(), abs=1e-6)
    assert row["auc_std"] == pytest.approx(per_seed["auc"].std(ddof=1), abs=1e-6)
    assert report.rows.set_index("attack").loc["loss", "auc_std"] == 0.0
