"""What a person sees while fedsim works.

Progress bars and progress lines go to stderr, the final summary table to stdout (a command's
last stdout line stays its result, e.g. the run folder). The same lines and table, without
bars or colour, go to the run folder's run.log, so the log is complete even under `--quiet`,
which silences the screen (bars, lines, table) but never errors. In a Jupyter notebook rich sends
a console's output to the notebook whatever file it was given, so the log's console is told it
is not in one: run.log is written there too, and `quiet=True` keeps the notebook silent.
"""

from __future__ import annotations

from pathlib import Path
from types import TracebackType
from typing import IO

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from fedsim.report.summary import Summary, display, tpr_text

RUN_LOG = "run.log"


class RunConsole:
    """Screen (stderr bars and lines, stdout table) plus an optional plain-text log file.

    It is also the `progress` that attackers.inference.leakage.measure_leakage reports its stages to:
    `start(stage, total)` shows (or resets) a bar named after the stage, `advance(stage,
    message)` moves it one step and prints the message as a line.
    """

    def __init__(self, quiet: bool = False) -> None:
        self.quiet = quiet
        self.screen = Console(stderr=True, soft_wrap=True, quiet=quiet)
        self.stdout = Console(quiet=quiet)
        if not self.stdout.is_terminal:  # piped or captured: wide enough for the summary table
            self.stdout.width = 200
        self.progress = Progress(
            TextColumn("{task.description:<18}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            console=self.screen, disable=quiet,
        )  # without a terminal rich does not redraw: the progress lines, then each bar's final state once
        self._tasks: dict[str, TaskID] = {}
        self._log_handle: IO[str] | None = None
        self._log: Console | None = None

    def __enter__(self) -> RunConsole:
        self.progress.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None) -> None:
        self.progress.stop()

    def log_to(self, path: Path) -> None:
        """From now on, every line and table also goes to `path` (appended, plain text)."""
        self.close_log()
        self._log_handle = path.open("a", encoding="utf-8")
        self._log = Console(file=self._log_handle, width=200, no_color=True, highlight=False, soft_wrap=True, emoji=False,
                            force_jupyter=False)  # the file, never a notebook's output

    def close_log(self) -> None:
        if self._log_handle is not None:
            self._log_handle.close()
        self._log_handle, self._log = None, None

    def print(self, message: str) -> None:
        """One line (rich markup allowed) on stderr, above the bars, and in the log."""
        self.screen.print(message)
        if self._log is not None:
            self._log.print(message)

    def start(self, stage: str, total: int) -> None:
        """Show a bar for `stage` with `total` steps, or restart it (e.g. client training each round)."""
        if stage in self._tasks:
            self.progress.reset(self._tasks[stage], total=total)
        else:
            self._tasks[stage] = self.progress.add_task(stage, total=total)

    def advance(self, stage: str, message: str | None = None) -> None:
        self.progress.advance(self._tasks[stage])
        if message:
            self.print(f"[dim]{message}[/dim]")

    def update(self, stage: str, completed: int, total: int) -> None:
        """Set a bar's position directly (counts that arrive as totals, like client replies)."""
        if stage not in self._tasks:
            self.start(stage, total)
        self.progress.update(self._tasks[stage], completed=completed, total=total)

    def table(self, table: Table) -> None:
        """The final table: stdout and the log."""
        self.stdout.print(table)
        if self._log is not None:
            self._log.print(table)


def summary_table(summary: Summary, title: str) -> Table:
    """Each attack's leakage at its last observed round (rows of leakage.csv, numbers as written there),
    the selected maximum over rounds and attacks (chosen on one half of the targets, reported on the
    other), and the final test accuracy.
    """
    table = Table(title=title, title_justify="left", caption_justify="left")
    columns = summary.leakage.columns
    has_interval = "auc_ci_low" in columns
    has_spread = "auc_std" in columns
    labels = ("attacker", "attack", "round", "AUC", *(["AUC std (seeds)"] if has_spread else []),
              *(["AUC 95% CI"] if has_interval else []), "accuracy", "TPR@FPR 1e-2", "TPR@FPR 1e-3")
    for label in labels:
        table.add_column(label, justify="left" if label in ("attacker", "attack") else "right", no_wrap=not label.startswith("TPR"))
    for _, row in summary.per_attack.iterrows():
        spread = [display(row["auc_std"])] if has_spread else []
        interval = [f"{display(row['auc_ci_low'])}-{display(row['auc_ci_high'])}"] if has_interval else []
        table.add_row(*(display(row[c]) for c in ("attacker", "attack", "round", "auc")), *spread, *interval, display(row["accuracy"]),
                      *(tpr_text(row, c) for c in ("tpr_at_fpr_1e-2", "tpr_at_fpr_1e-3")))
    notes = []
    selected = summary.selected
    if selected is not None:
        notes.append(f"selected maximum over rounds and attacks: {display(selected['attack'])} at round {display(selected['round'])}, "
                     f"AUC {display(selected['auc_holdout'])} on the held-out half of the targets "
                     f"(chosen by AUC {display(selected['auc_select'])} on the other half)")
    final = summary.final_training
    if final is not None:
        notes.append(f"final test accuracy {display(final['test_accuracy'])} (round {display(final['round'])})")
    if notes:
        table.caption = "\n".join(notes)
    return table
