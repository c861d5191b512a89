"""`export.tensorboard: true`: a real in-process run writes TensorBoard event files whose scalars
are the run's metrics tables, read back with TensorBoard's own EventAccumulator; without the
package the run is refused in one line, exit 2, before any folder exists."""

from __future__ import annotations

import importlib.util
import json
import math

import pytest

from conftest import small_config
from fedsim.app.api import simulate
from fedsim.app.cli import main
from fedsim.core.errors import FedsimError
from fedsim.report.tensorboard import leakage_tag

event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator",
                                        reason="the tensorboard package is not installed (pip install 'fedsim[tensorboard]')")


def _scalars(folder) -> dict[str, dict[int, float]]:
    accumulator = event_accumulator.EventAccumulator(str(folder), size_guidance={event_accumulator.SCALARS: 0})
    accumulator.Reload()
    return {tag: {event.step: event.value for event in accumulator.Scalars(tag)} for tag in accumulator.Tags()["scalars"]}


def _listed(folder) -> list[str]:
    """The files the run's manifest lists."""
    return list(json.loads((folder / "manifest.json").read_text())["files"])


def test_event_files_hold_each_attacks_auc_per_round_as_leakage_csv_does(tmp_path):
    config = small_config("train.rounds=3", "attacks=[loss,trajectory]", "attack_seeds=1", "export.tensorboard=true",
                          "data.nonmembers=400", "adversary.target_records=200")  # >= 100 non-member targets: TPR@1e-2 is measured
    run = simulate(config, out=tmp_path / "run", quiet=True)
    scalars = _scalars(run.folder / "tensorboard")

    leakage = run.table("metrics/leakage.csv")
    assert set(leakage["attack"]) == {"loss", "trajectory"} and sorted(set(leakage["round"])) == [1, 2, 3]
    for (attacker, attack, target), rows in leakage.groupby(["attacker", "attack", "target"]):
        curve = scalars[leakage_tag("auc", attacker, attack, target)]
        assert sorted(curve) == sorted(rows["round"])
        for _, row in rows.iterrows():  # event files hold float32
            assert curve[int(row["round"])] == pytest.approx(row["auc"], rel=1e-6)
        low_fpr = scalars.get(leakage_tag("tpr_at_fpr_1e-2", attacker, attack, target), {})
        assert low_fpr == pytest.approx(
            {int(r): v for r, v in zip(rows["round"], rows["tpr_at_fpr_1e-2"]) if not math.isnan(v)}, rel=1e-6)
    assert leakage["tpr_at_fpr_1e-2"].notna().all()
    # fewer than 1000 non-member targets: TPR at FPR 1e-3 is not measurable and is not written as a number
    assert leakage["tpr_at_fpr_1e-3"].isna().all()
    assert not any(tag.startswith("tpr_at_fpr_1e-3/") for tag in scalars)

    training = run.table("metrics/training.csv")
    assert scalars["training/test_accuracy"] == pytest.approx(dict(zip(training["round"], training["test_accuracy"])), rel=1e-6)
    assert scalars["training/test_loss"] == pytest.approx(dict(zip(training["round"], training["test_loss"])), rel=1e-6)
    trained = training.dropna(subset=["train_loss"])
    assert sorted(scalars["training/train_loss"]) == [1, 2, 3]  # round 0 trains nothing
    assert scalars["training/train_loss"] == pytest.approx(dict(zip(trained["round"], trained["train_loss"])), rel=1e-6)

    events = [name for name in _listed(run.folder) if name.startswith("tensorboard/")]
    assert events and all((run.folder / name).is_file() for name in events)


def test_the_export_is_off_by_default_and_changes_no_config_digest(tmp_path):
    off = small_config()
    assert off.export.tensorboard is False
    assert off.digest() == small_config("export.tensorboard=false").digest() != small_config("export.tensorboard=true").digest()
    run = simulate(off, out=tmp_path / "run", quiet=True)
    assert not (run.folder / "tensorboard").exists()
    assert not any(name.startswith("tensorboard") for name in _listed(run.folder))


def test_without_the_package_the_run_is_refused_before_it_starts(tmp_path, monkeypatch, capsys):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *rest: None if name == "tensorboard" else real(name, *rest))
    out = tmp_path / "run"
    code = main(["run", "--set", "export.tensorboard=true", "--set", "backend.engine=in-process", "--out", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and "export.tensorboard" in err[0] and "pip install" in err[0]
    assert not out.exists()
    with pytest.raises(FedsimError, match="tensorboard package is not installed"):
        simulate(small_config("export.tensorboard=true"), out=tmp_path / "other", quiet=True)
