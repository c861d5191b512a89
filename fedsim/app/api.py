"""The Python entry points for scripts and notebooks: the same objects the `fedsim` command uses.

`simulate` runs an experiment and returns the recorded run; `measure` attacks a recorded run and
returns its leakage rows. Bad input raises `fedsim.core.errors.FedsimError` with the same one-line
message the command prints. Progress shows as bars in a terminal or notebook and as plain lines
elsewhere (bars printed once, never redrawn); `quiet=True` silences it (the run's run.log still gets every line).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from attackers.inference.leakage import measure_leakage
from attackers.inference.registry import check_attacks_on
from fedsim.app.console import RunConsole
from fedsim.app.experiment import run_experiment
from fedsim.core.config import Config, config_from_tree, load_config
from fedsim.recording.run import Run


def simulate(config: Config | str | Path | None = None, overrides: Sequence[str] = (), out: str | Path | None = None,
             quiet: bool = False, force: bool = False) -> Run:
    """Run one experiment (simulation, recording, attacks, report) and open its run folder.

    Parameters
    ----------
    config : Config, str or Path, optional
        A config object, or the path of a YAML config; None: the quickstart shipped with fedsim
        (the default of `fedsim run`).
    overrides : sequence of str
        'key=value' assignments, as `fedsim run --set` takes them (e.g. "train.rounds=2").
    out : str or Path, optional
        The run folder to create (default: runs/<name>-<YYYYmmdd-HHMMSS>, runs/latest updated).
    quiet : bool
        Show no progress (the folder's run.log still gets it).
    force : bool
        Replace `out` if it exists.

    Returns
    -------
    Run
        The complete run, as `fedsim.Run.open` gives it.

    Raises
    ------
    FedsimError
        Bad input, one line (what, where, how to fix); nothing is left marked complete.
    """
    if isinstance(config, Config):
        resolved = config_from_tree(config.model_dump(mode="json"), list(overrides), "the config given")
    else:
        resolved = load_config(config, list(overrides))  # run_experiment checks the names, once
    folder = run_experiment(resolved, Path(out) if out is not None else None, RunConsole(quiet=quiet), force=force)
    return Run.open(folder)


def measure(run: Run | str | Path, attacks: Sequence[str] | None = None, rounds: Sequence[int] | None = None,
            quiet: bool = False) -> pd.DataFrame:
    """Attack a recorded run and return its leakage rows (the columns of metrics/leakage.csv).

    The same as `fedsim attack RUN_DIR`: the threat model, targets and known records come from
    the run's own config and membership ledger, so the rows equal those `fedsim run` wrote for
    the same attacks and rounds.

    Parameters
    ----------
    run : Run, str or Path
        A run (or its folder) written by `fedsim run` or `simulate`.
    attacks : sequence of str, optional
        Attack registry names (default: the run's config `attacks`).
    rounds : sequence of int, optional
        Rounds to attack (default: every observed round).
    quiet : bool
        Show no progress.

    Returns
    -------
    pandas.DataFrame
        One row per (round, attacker, attack, target).

    Raises
    ------
    FedsimError
        An unknown attack name or a folder that is not a run, one line.
    """
    opened = run if isinstance(run, Run) else Run.open(run)
    check_attacks_on(list(attacks or []), opened.config, "attacks")
    with RunConsole(quiet=quiet) as console:
        return measure_leakage(opened, list(attacks) if attacks else None, list(rounds) if rounds else None, progress=console).rows

