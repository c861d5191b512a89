"""Issue 13 item 7: every table fedsim writes keeps its header with zero rows and reads back.

The cases are the ones a new user hit (few targets, strong label skew, 4 records per client, a
victim client sampling never picked); each is a recorded run folder (real ledger, recorded
parameters, no simulation) put through what `fedsim run` does after the rounds: leakage,
metrics tables, report, summary.
"""

import pandas as pd
import pytest
import torch

from attackers.inference.leakage import measure_leakage
from conftest import small_config
from fedsim import Run
from fedsim.core.layout import PER_CLASS_COLUMNS, ROC_COLUMNS
from fedsim.learning.datasets import load_pool
from fedsim.learning.membership import build_ledger, save_ledger
from fedsim.learning.models import model_for
from fedsim.recording.recorder import LEAKAGE_CSV, PER_CLASS_CSV, REPORT_HTML, ROC_CSV, Recorder
from fedsim.report.writer import run_summary, write_report

CASES = {
    "two targets": ["seed=1", "data.records_per_client=50", "data.test_records=100", "data.nonmembers=80",
                    "adversary.target_records=2", "train.rounds=1"],
    "dirichlet 0.05": ["data.partition=dirichlet", "data.alpha=0.05", "adversary.target_records=10", "data.nonmembers=400",
                       "data.records_per_client=100", "train.rounds=1"],
    "4 records per client": ["data.records_per_client=4", "adversary.target_records=2", "train.rounds=1"],
    "victim never sampled": ["train.rounds=2", "adversary.victim=3"],
    "participant never sampled": ["train.rounds=2", "adversary.victim=3", "adversary.role=participant"],
}


def finished_run(tmp_path, overrides, replied=lambda r, c: True):
    """A run folder as the simulation leaves it: ledger, every round's global and client models."""
    config = small_config("data.num_clients=4", *overrides)
    ledger = build_ledger(config, load_pool("digits", None))
    recorder = Recorder(tmp_path / "run", config)
    recorder.start(lambda folder: save_ledger(ledger, folder))
    torch.manual_seed(0)
    state = model_for(config).state_dict()
    recorder.record_round(0, state)
    for r in range(1, config.train.rounds + 1):
        recorder.record_round(r, state, {c: (state, 1) for c in range(4) if replied(r, c)})
        recorder.append_training({"round": r, "test_loss": 2.3, "test_accuracy": 0.1, "clients": 4})
    return recorder


@pytest.mark.parametrize("case", sorted(CASES))
def test_every_table_reads_back_and_the_report_is_written(tmp_path, case):
    never = "never sampled" in case
    recorder = finished_run(tmp_path, CASES[case], (lambda r, c: c != 3) if never else (lambda r, c: True))
    leakage = measure_leakage(Run.open(recorder.folder))
    recorder.write_metrics({LEAKAGE_CSV: leakage.rows, ROC_CSV: leakage.roc, PER_CLASS_CSV: leakage.per_class})
    recorder.list_at_finish(write_report(Run.open(recorder.folder)))
    recorder.finish("complete")
    run = Run.open(recorder.folder)
    for relative, columns in ((ROC_CSV, ROC_COLUMNS), (PER_CLASS_CSV, PER_CLASS_COLUMNS)):
        assert list(run.table(relative).columns) == columns
    summary = run_summary(run)
    assert (run.folder / REPORT_HTML).is_file()
    if never:
        assert summary.leakage.empty and run.table(ROC_CSV).empty
        assert "client sampling left client 3 out of every round" in leakage.why_empty and "fraction_train" in leakage.why_empty
    else:
        assert len(summary.leakage) == 1 and leakage.why_empty is None


def test_an_empty_plot_is_skipped_with_a_note(tmp_path):
    recorder = finished_run(tmp_path, CASES["two targets"])
    leakage = measure_leakage(Run.open(recorder.folder))
    empty = pd.DataFrame(columns=PER_CLASS_COLUMNS)
    recorder.write_metrics({LEAKAGE_CSV: leakage.rows, ROC_CSV: leakage.roc, PER_CLASS_CSV: empty})
    written = write_report(Run.open(recorder.folder))
    assert "plots/accuracy_per_class.png" not in written and "plots/roc.png" in written
    page = (recorder.folder / REPORT_HTML).read_text()
    assert "Not drawn: no class holds both a member and a non-member target" in page


def test_a_table_without_columns_is_refused(tmp_path):
    recorder = finished_run(tmp_path, CASES["two targets"])
    with pytest.raises(ValueError, match="bare newline"):
        recorder.write_metrics({ROC_CSV: pd.DataFrame()})
