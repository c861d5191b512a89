"""Reconstruction on recorded runs: the imprint read at run end under a crafted-model server, the
optimisation attack through `fedsim attack` on a recorded run and on an audited Flower app's run,
the tasks each threat model gives, and the one-line refusals."""

from __future__ import annotations

import hashlib
import io
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from attackers.inference.reconstruction.measure import measure_reconstruction, members_of, reconstruction_view, tensor_key
from attackers.inference.reconstruction.quality import EXACT_TOLERANCE, PSNR_THRESHOLD_DB
from attackers.inference.threat_models import sent_mean, sent_model
from conftest import small_config
from fedsim.app.cli import main
from fedsim.app.experiment import run_experiment
from fedsim.core.layout import RECONSTRUCTION_COLUMNS, RECONSTRUCTION_CSV, RECONSTRUCTIONS
from fedsim.recording.run import Run

pytestmark = pytest.mark.integration
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "digits-app"
CRAFTED = ["data.num_clients=2", "model.args={hidden: [64], activation: relu}", "adversary.mode=crafted-model", "attack_seeds=1"]
IG = "{name: inverting_gradients, args: {iterations: 3, restarts: 1, max_records: 1000}}"


def _files(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def crafted(tmp_path_factory) -> Run:
    """A crafted-model server on a fcn over the digits, 2 clients, 2 rounds, `reconstructions: [imprint]` (about 15 s)."""
    config = small_config(*CRAFTED, "reconstructions=[imprint]")
    return Run.open(run_experiment(config, tmp_path_factory.mktemp("crafted") / "run"))


def _alone(run: Run, round_number: int, ids: np.ndarray) -> set[int]:
    """The records among `ids` that alone fire a first-layer neuron of the model the victim was sent (a forward pass here)."""
    state = sent_model(run, round_number, run.config.adversary.victim).state_dict()
    x = run.records(ids)[0].flatten(1)
    fires = (x @ state["0.weight"].T + state["0.bias"]) > 0  # (records, neurons)
    single = fires.sum(0) == 1
    return {int(i) for i in ids[fires[:, single].any(1).numpy()]}


def test_the_imprint_at_run_end_recovers_the_records_that_alone_fired_a_trap(crafted):
    run = crafted
    rows = run.table(RECONSTRUCTION_CSV)
    assert list(rows.columns) == RECONSTRUCTION_COLUMNS and RECONSTRUCTION_CSV in run.manifest.files
    victim_members = members_of(run, [run.config.adversary.victim])
    tensors = run.tensors(RECONSTRUCTIONS)
    for round_number in (1, 2):  # the server crafts every round
        at = rows[rows["round"] == round_number]
        assert at["record_id"].tolist() == victim_members.tolist()  # every one of the victim's records is scored
        alone = _alone(run, round_number, victim_members)
        claimed = set(at.loc[at["claimed_exact"].astype(bool), "record_id"])
        # no false claim, and (a row whose record moved its bias by fewer than a few float32 ulps is lost to rounding) most of them
        assert claimed <= alone and len(claimed) >= 0.9 * len(alone) > 0
        read = at[at["claimed_exact"].astype(bool)]
        assert (read["psnr"] >= PSNR_THRESHOLD_DB).all() and read["recovered"].all()
        assert not at.loc[~at["record_id"].isin(claimed), "recovered"].any()  # nothing else is rebuilt
        # the digits are float records: exact means within 1e-5 (float32 rounding puts the read 1e-4..1e-2 off)
        assert (at["exact"].astype(bool) == (at["max_abs_error"] <= EXACT_TOLERANCE)).all() and (read["max_abs_error"] < 0.05).all()
        guessed = at["chance_psnr"].dropna()  # chance pairs as many records as the attack did, and rebuilds none
        assert len(guessed) == at["psnr"].notna().sum() and (guessed < PSNR_THRESHOLD_DB).all()
        assert (at["baseline_psnr"] < PSNR_THRESHOLD_DB).all()
        paired = tensors[tensor_key("imprint", round_number, "record_id")].numpy()
        assert set(paired[paired >= 0]) == set(at.loc[at["psnr"].notna(), "record_id"])
        x = tensors[tensor_key("imprint", round_number, "x")]
        for record in list(claimed)[:3]:  # the stored reconstruction is the record, to float32's precision
            torch.testing.assert_close(x[int(np.flatnonzero(paired == record)[0])], run.records([record])[0][0], rtol=0, atol=0.05)
    assert (run.folder / "plots" / "reconstruction_quality.png").is_file()
    assert "tabular" in (run.folder / "report.html").read_text()  # the digits are rows of features: no grid, and it says so


def test_fedsim_attack_runs_a_reconstruction_beside_a_membership_attack_and_leaves_the_run_as_it_was(crafted, tmp_path, capsys):
    before = _files(crafted.folder)
    out = tmp_path / "rows.csv"
    code = main(["attack", str(crafted.folder), "--attack", "loss", "--attack", IG, "--rounds", "1", "--out", str(out)])
    printed = capsys.readouterr().out
    assert code == 0 and _files(crafted.folder) == before
    leakage_text, summary_text = printed.split("\n\n")
    assert leakage_text.startswith("round,attacker,attack,target")
    summary = pd.read_csv(io.StringIO(summary_text))
    assert summary[["attack", "attacker", "round", "n_records"]].values.tolist() == [["inverting_gradients", "server", 1, 60]]
    assert pd.read_csv(out)["attack"].tolist() == ["loss"]
    rows = pd.read_csv(tmp_path / "rows-reconstruction.csv")
    assert list(rows.columns) == RECONSTRUCTION_COLUMNS and len(rows) == 60 and rows["exact"].isna().all()
    assert rows["predicted_label"].between(0, 9).all()


def test_an_update_above_the_attacks_budget_is_not_attacked_and_says_so(crafted):
    small = {"name": "inverting_gradients", "args": {"iterations": 1, "restarts": 1, "max_records": 59}}  # the victim trained on 60
    report = measure_reconstruction(crafted, [small], rounds=[1])
    assert report.rows.empty and report.why_empty == (
        "inverting_gradients did not attack round 1: the update was trained on 60 records, above inverting_gradients' max_records 59; "
        "raise it with {name: inverting_gradients, args: {max_records: 60}} (the cost grows with the records)")


def test_the_views_give_the_updates_each_attacker_holds(tmp_path):
    """Secure aggregation: mean sent -> aggregate, on every contributor's records, scored on the victim's; a participant:
    global r-1 -> global r for the rounds it was sent both, scored on the others' records."""
    secure = Run.open(run_experiment(small_config(*CRAFTED, "defense.secure_aggregation=true"), tmp_path / "secure"))
    view = reconstruction_view(secure)
    assert view.rounds == [1, 2] and view.crafted == frozenset({1, 2}) and view.target == "client-000"
    task = view.task(2)
    expected = sent_mean(secure, 2, 0).state_dict()
    assert all(torch.equal(task.sent[k], expected[k]) for k in expected)
    assert all(torch.equal(task.returned[k], v) for k, v in secure.state(2).items())
    assert task.n_records == len(members_of(secure, [0, 1])) and task.schedule is None
    assert view.true_ids(2).tolist() == members_of(secure, [0]).tolist()

    curious = Run.open(run_experiment(small_config("data.num_clients=3", "train.rounds=3", "adversary.role=participant", "attack_seeds=1"),
                                      tmp_path / "participant"))
    view = reconstruction_view(curious)
    assert view.attacker == "participant" and view.target == "others" and view.rounds == [1, 2]  # global 3 reaches no client
    task = view.task(2)
    assert all(torch.equal(task.sent[k], v) for k, v in curious.state(1).items())
    assert all(torch.equal(task.returned[k], v) for k, v in curious.state(2).items())
    assert view.true_ids(2).tolist() == members_of(curious, [1, 2]).tolist() and task.schedule is None


def test_an_audited_flower_apps_run_is_attacked_without_a_schedule(tmp_path, capsys):
    app = tmp_path / "digits-app"
    shutil.copytree(EXAMPLE, app, ignore=shutil.ignore_patterns("__pycache__"))
    out = tmp_path / "audit"
    assert main(["audit", str(app), "--out", str(out), "--quiet", "--set", "backend.engine=in-process", "--set", "attack_seeds=1",
                 "--set", "attacks=[loss]", "--run-config", "num-server-rounds=1"]) == 0
    capsys.readouterr()
    run = Run.open(out)
    assert reconstruction_view(run).task(1).schedule is None  # the app trains with its own loop
    assert main(["attack", str(out), "--attack", IG]) == 0
    summary = capsys.readouterr().out.splitlines()
    assert summary[0] == "attack,attacker,round,n_records,recovered,mean_psnr,mean_baseline_psnr,mean_chance_psnr,exact,seconds"
    assert summary[1].startswith(f"inverting_gradients,server,1,{len(members_of(run, [0]))},")


def test_bad_reconstruction_entries_are_one_line(crafted, tmp_path, capsys):
    for argv, fragment in (
        (["attack", str(crafted.folder), "--attack", "nope"], "reconstruction attacks: imprint, inverting_gradients"),
        (["attack", str(crafted.folder), "--attack", "{name: imprint, args: {width: 3}}"], "imprint' has no argument 'width'"),
        (["run", "--set", "reconstructions=[imprint]"], "imprint reads the traps of a crafted-model server"),
        (["run", "--set", "reconstructions=[imprint, imprint]", *[f"--set={s}" for s in CRAFTED]], "imprint is listed twice"),
    ):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and fragment in err[0] and "Traceback" not in err[0], err
