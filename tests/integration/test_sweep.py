"""`fedsim sweep`: the grid, a real 2-point sweep, resuming, one-line errors."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from fedsim.app.cli import main
from fedsim.app.sweep import COMPARISON_CSV, PLOT, parse_grid
from fedsim.core.errors import FedsimError
from fedsim.recording.run import Run

SMALL = ["data.records_per_client=40", "data.nonmembers=40", "data.test_records=100", "adversary.target_records=20",
         "train.rounds=2", "model.args={hidden: [16]}", "attacks=[loss]", "backend.engine=in-process"]


def test_grid_is_the_cartesian_product_and_keeps_bracketed_values_whole():
    points = parse_grid(["train.lr=0.1,0.2", "model.args={hidden: [8, 8]},{hidden: [4]}"])
    assert [p.overrides() for p in points] == [
        ["train.lr=0.1", "model.args={hidden: [8, 8]}"], ["train.lr=0.1", "model.args={hidden: [4]}"],
        ["train.lr=0.2", "model.args={hidden: [8, 8]}"], ["train.lr=0.2", "model.args={hidden: [4]}"],
    ]
    assert points[0].name == "train.lr=0.1__model.args=hidden-8_8"
    with pytest.raises(FedsimError, match="share the folder"):
        parse_grid(["name=a b,ab"])


@pytest.mark.parametrize(("grid", "expected"), [
    ("train.lr", "expected key=value1,value2"),
    ("train.lr=0.1,", "expected key=value1,value2"),
    ("train.lr=0.1,-1", "train.lr: Input should be greater than 0"),
    ("strategy.name=fedavg,nope", "unknown strategy 'nope'"),
])
def test_bad_grid_gives_one_line_and_exit_2_before_any_run(grid, expected, tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text("name: s\n")
    assert main(["sweep", str(config), "--grid", grid, "--out", str(tmp_path / "sweep")]) == 2
    err = capsys.readouterr().err
    assert expected in err and err.count("\n") == 1
    assert not any((tmp_path / "sweep").glob("*/manifest.json"))


@pytest.mark.integration
def test_a_real_sweep_writes_the_comparison_and_resumes(tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text("name: s\n")
    argv = ["sweep", str(config), "--grid", "strategy.name=fedavg,fedmedian", "--out", str(tmp_path / "sweep"),
            *(a for o in SMALL for a in ("--set", o))]
    assert main(argv) == 0
    folder = tmp_path / "sweep"
    table = pd.read_csv(folder / COMPARISON_CSV)
    assert table["strategy.name"].tolist() == ["fedavg", "fedmedian"]
    assert list(table.columns) == ["run", "strategy.name", "test_accuracy", "loss_auc", "loss_auc_max_selected", "loss_tpr_at_fpr_1e-3"]
    for _, row in table.iterrows():
        # each row, picked here from its own run's CSVs: the last round's utility and leakage, and the
        # maximum over rounds chosen on the selection half (the earliest round on a tie), read on the holdout half
        assert row["run"] == f"strategy.name={row['strategy.name']}"
        training, leakage = (pd.read_csv(folder / row["run"] / f"metrics/{name}.csv") for name in ("training", "leakage"))
        assert training["round"].tolist() == [0, 1, 2] and sorted(leakage["round"]) == [1, 2]
        last = leakage[leakage["round"] == 2].iloc[0]
        best = leakage[leakage["auc_select"] == leakage["auc_select"].max()].sort_values("round").iloc[0]
        assert row["test_accuracy"] == training.loc[training["round"] == 2, "test_accuracy"].item()
        assert row["loss_auc"] == last["auc"] and row["loss_auc_max_selected"] == best["auc_holdout"]
        assert pd.isna(row["loss_tpr_at_fpr_1e-3"]) and pd.isna(last["tpr_at_fpr_1e-3"])  # 10 non-member targets: not measurable
    assert (folder / PLOT).stat().st_size > 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == str(folder)

    done, interrupted = folder / "strategy.name=fedavg", folder / "strategy.name=fedmedian"
    manifest = json.loads((interrupted / "manifest.json").read_text())
    (interrupted / "manifest.json").write_text(json.dumps(manifest | {"status": "running"}))
    assert Run.status_of(interrupted) == "running" and Run.status_of(done) == "complete" and Run.status_of(folder / "absent") is None
    kept = (done / "manifest.json").stat().st_mtime_ns
    assert main(argv) == 0
    assert (done / "manifest.json").stat().st_mtime_ns == kept  # a complete run is skipped
    assert json.loads((interrupted / "manifest.json").read_text())["status"] == "complete"  # an incomplete one redone
