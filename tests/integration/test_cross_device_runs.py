"""Runs under client sampling with bounded recording (record.clients): the attacks read the rounds
the victim was sampled in, from the parameters the run kept; a victim never sampled gives empty,
valid tables and one line saying why."""

from __future__ import annotations

import pandas as pd

from conftest import SMALL, small_config
from fedsim.app.cli import main
from fedsim.app.experiment import run_experiment
from fedsim.core.layout import LEAKAGE_COLUMNS
from fedsim.recording.run import Run

SAMPLED = ["data.num_clients=20", "data.records_per_client=20", "strategy.args={fraction_train: 0.2}"]  # 4 of 20 clients a round


def test_a_victim_only_run_keeps_the_victim_and_its_references_and_attacks_the_victims_rounds(tmp_path):
    config = small_config(*SAMPLED, "train.rounds=3", "record.clients=victim", "record.references=2", "attacks=[loss, lira]")
    run = Run.open(run_experiment(config, tmp_path / "run"))
    victim_rounds = run.manifest.victim_rounds
    assert victim_rounds == [r for r in (1, 2, 3) if 0 in run.clients(r)] == [3]  # seed 0 samples client 0 in round 3 only
    for r in (1, 2, 3):
        heard = run.clients(r)
        assert len(heard) == 4 and run.stored(r) == sorted(({0} & set(heard)) | set([c for c in heard if c != 0][:2]))
        kept = sorted(int(p.stem.removeprefix("client-")) for p in (run.folder / f"rounds/{r:04d}/clients").glob("*.safetensors"))
        assert kept == run.stored(r)
    leakage = run.table("metrics/leakage.csv")
    assert sorted(set(leakage["round"])) == victim_rounds and set(leakage["attack"]) == {"loss", "lira"}


def test_a_victim_never_sampled_says_so_in_one_line_and_its_tables_are_empty_but_valid(tmp_path, capsys):
    overrides = [*SMALL, *SAMPLED, "train.rounds=2", "seed=3", "record.clients=victim", "attacks=[loss, trajectory]"]
    assert main(["run", "--out", str(tmp_path / "run"), *(x for o in overrides for x in ("--set", o))]) == 0
    captured = capsys.readouterr()
    out = captured.out + captured.err
    said = [line for line in out.splitlines() if "no leakage rows" in line]
    assert len(said) == 1 and "client sampling left client 0 out of every round" in said[0], out
    run = Run.open(tmp_path / "run")
    assert run.status == "complete" and run.manifest.victim_rounds == []
    leakage = run.table("metrics/leakage.csv")
    assert leakage.empty and list(leakage.columns)[: len(LEAKAGE_COLUMNS)] == LEAKAGE_COLUMNS
    for table in ("metrics/leakage_seeds.csv", "metrics/roc.csv", "metrics/leakage_per_class.csv"):
        assert isinstance(run.table(table), pd.DataFrame) and run.table(table).empty
    assert not any((run.folder / "rounds").glob("*/clients/*.safetensors"))  # nothing of the victim to keep
