"""`fedsim sweep`: a grid of runs, one after another, and the table that compares them.

Each grid point is an ordinary run folder under the sweep folder, named by its settings. A
point whose run is complete is skipped when the sweep is started again; one left incomplete
(crashed or interrupted) is run again from the start. Every point's config is validated before
the first run starts, so a bad grid value fails at once with one line.

With `seeds=K` every grid point runs with seeds 0..K-1 (an extra `seed` axis); with a baseline
`KEY=VALUE` each setting is compared with the point that differs only in KEY=VALUE, seed by
seed, and `paired.csv` holds the mean difference and its paired t interval (fedsim.stats.paired).
"""

from __future__ import annotations

import itertools
import re
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from fedsim.app.console import RunConsole
from fedsim.core.config import Config, load_config
from fedsim.core.errors import FedsimError
from fedsim.core.layout import RECONSTRUCTION_CSV
from fedsim.recording.recorder import LEAKAGE_CSV, TRAINING_CSV
from fedsim.recording.run import Run
from fedsim.stats.paired import PAIRED_METRICS, paired_table

COMPARISON_CSV = "comparison.csv"
PAIRED_CSV = "paired.csv"
SEED_KEY = "seed"
PLOT = "plots/privacy_utility.png"  # written by fedsim.report.writer.write_sweep_report, with report.html
RECONSTRUCTION_METRICS = ("recovered", "mean_psnr", "exact_fraction")
"""paired.csv's reconstruction metrics, per (attacker, reconstruction attack, round): see `reconstruction_summary`."""


@dataclass(frozen=True)
class GridPoint:
    settings: tuple[tuple[str, str], ...]  # (key, raw YAML value), in --grid order

    @property
    def name(self) -> str:
        """A folder name from the settings, e.g. 'defense.dp_sgd.noise_multiplier=0.5',
        'strategy=name-fedavg-normbound_args-max_update_norm-1.0'.
        """
        def readable(value: str) -> str:
            value = re.sub(r"\s*:\s*", "-", re.sub(r"\s*,\s*", "_", value))
            return re.sub(r"[^A-Za-z0-9._=-]+", "", value)

        return "__".join(f"{key}={readable(value)}" for key, value in self.settings)

    def overrides(self) -> list[str]:
        return [f"{k}={v}" for k, v in self.settings]


def _split_values(text: str) -> list[str]:
    """'a,b,[c,d]' -> ['a', 'b', '[c,d]']: commas inside brackets or braces belong to the value."""
    values, depth, current = [], 0, ""
    for char in text:
        depth += char in "[{"
        depth -= char in "]}"
        if char == "," and depth == 0:
            values.append(current.strip())
            current = ""
        else:
            current += char
    return [*values, current.strip()]


def parse_grid(items: list[str], seeds: int | None = None) -> list[GridPoint]:
    """`--grid key=v1,v2` options -> their cartesian product (times seeds 0..seeds-1 when given)."""
    axes: list[list[tuple[str, str]]] = []
    for item in items:
        key, sep, raw = item.partition("=")
        values = _split_values(raw) if sep else []
        if not key.strip() or not values or any(not v for v in values):
            raise FedsimError(f"--grid {item!r}: expected key=value1,value2,..., e.g. --grid defense.dp_sgd.noise_multiplier=0.5,1.0")
        axes.append([(key.strip(), v) for v in values])
    if not axes:
        raise FedsimError("fedsim sweep: give at least one --grid key=value1,value2")
    if seeds is not None:
        if seeds < 1:
            raise FedsimError(f"--seeds {seeds}: give a number of seeds >= 1 (2 or more for an interval)")
        if any(axis[0][0] == SEED_KEY for axis in axes):
            raise FedsimError("--seeds: the grid already has a 'seed' axis; drop --grid seed=... or --seeds")
        axes.append([(SEED_KEY, str(seed)) for seed in range(seeds)])
    points = [GridPoint(tuple(combination)) for combination in itertools.product(*axes)]
    names = [point.name for point in points]
    if len(set(names)) < len(names):
        raise FedsimError(f"--grid: two grid points would share the folder {max(names, key=names.count)!r}; "
                          "make the values differ in more than spacing or punctuation")
    return points


def parse_baseline(baseline: str, points: list[GridPoint]) -> tuple[str, str]:
    """`KEY=VALUE` -> (key, value), checked against the grid: KEY is a grid axis and VALUE one of its values."""
    key, sep, value = baseline.partition("=")
    key, value = key.strip(), value.strip()
    axes: dict[str, list[str]] = {}
    for point in points:
        for k, v in point.settings:
            values = axes.setdefault(k, [])
            if v not in values:
                values.append(v)
    if not sep or key not in axes or key == SEED_KEY:
        raise FedsimError(f"--baseline {baseline!r}: expected KEY=VALUE with KEY one of the grid's keys "
                          f"({', '.join(k for k in axes if k != SEED_KEY)}), e.g. --baseline adversary.mode=passive")
    if value not in axes[key]:
        raise FedsimError(f"--baseline {baseline!r}: {value!r} is not among the grid's values of {key} ({', '.join(axes[key])})")
    return key, value


def setting_name(point: GridPoint) -> str:
    """The grid point's name without its seed: what paired.csv calls a setting."""
    return GridPoint(tuple((k, v) for k, v in point.settings if k != SEED_KEY)).name


def pairs_of(points: list[GridPoint], key: str, value: str) -> dict[str, str]:
    """Each setting name -> its baseline's name: the same settings with KEY set to VALUE."""
    pairs = {}
    for point in points:
        settings = dict(point.settings)
        if settings[key] == value:
            continue
        baseline = GridPoint(tuple((k, value if k == key else v) for k, v in point.settings))
        pairs[setting_name(point)] = setting_name(baseline)
    return pairs


def sweep_configs(config_path: str | Path | None, grid: list[str], overrides: list[str], seeds: int | None = None) -> dict[GridPoint, Config]:
    """Every grid point's validated config, checked before the first run starts.

    Parameters
    ----------
    config_path : str or Path, optional
        The YAML config every point starts from (None: the shipped quickstart).
    grid : list of str
        'key=v1,v2' specifications; the sweep runs their cartesian product.
    overrides : list of str
        'key=value' assignments applied to every point before its grid values.
    seeds : int, optional
        Run every grid point with seeds 0..seeds-1 (paired comparisons).

    Returns
    -------
    dict
        Grid point -> its configuration, in sweep order.

    Raises
    ------
    FedsimError
        One line for a malformed grid, two points sharing a folder, or any point's bad config.
    """
    from fedsim.app.experiment import check_config

    return {point: check_config(load_config(config_path, [*overrides, *point.overrides()])) for point in parse_grid(grid, seeds)}


@dataclass(frozen=True)
class SweepRun:
    """One run of a sweep: what the console calls it, its validated config and its folder."""

    label: str
    config: Config
    folder: Path


def run_planned(runs: Sequence[SweepRun], console: RunConsole, title: str = "sweep") -> None:
    """The sweep's run loop: run, one after another, every run whose folder holds no complete run.

    A complete run (`Run.status_of`) is skipped, so a sweep started again resumes; an incomplete
    attempt (crashed or interrupted) is removed and redone from the start.

    Parameters
    ----------
    runs : sequence of SweepRun
        The runs, in order, their configs already validated.
    console : RunConsole
        Progress: one line per run, "<title> N/M: <label>".
    title : str
        The progress lines' first word (the command: sweep, reproduce).
    """
    from fedsim.app.experiment import run_experiment

    for number, run in enumerate(runs, 1):
        label = f"{title} {number}/{len(runs)}: {run.label}"
        if Run.status_of(run.folder) == "complete":
            console.print(f"{label}: complete, skipped")
            continue
        shutil.rmtree(run.folder, ignore_errors=True)
        console.print(label)
        run_experiment(run.config, run.folder, console)


def run_sweep(config_path: str | None, grid: list[str], overrides: list[str], out: Path | None = None,
              console: RunConsole | None = None, seeds: int | None = None, baseline: str | None = None) -> Path:
    """Run every grid point not yet complete; write comparison.csv and the sweep's report
    (the runs side by side and the privacy-utility plot).

    With `seeds`, every grid point runs with seeds 0..seeds-1; with `baseline` ("KEY=VALUE", KEY
    a grid key), paired.csv compares each setting with its baseline seed by seed (see
    `paired_table`) and the report shows it.
    """
    from fedsim.report.writer import write_sweep_report

    console = console or RunConsole()
    configs = sweep_configs(config_path, grid, overrides, seeds)
    points = list(configs)
    baseline_value = parse_baseline(baseline, points) if baseline is not None else None
    folder = out or Path("runs") / f"sweep-{next(iter(configs.values())).name}"
    folder.mkdir(parents=True, exist_ok=True)
    run_planned([SweepRun(point.name, config, folder / point.name) for point, config in configs.items()], console)
    table = comparison_table({point: folder / point.name for point in points}, configs)
    table.to_csv(folder / COMPARISON_CSV, index=False)
    paired = None
    if baseline_value is not None:
        paired = sweep_paired_table({point: folder / point.name for point in points}, configs, *baseline_value)
        paired.to_csv(folder / PAIRED_CSV, index=False)
    write_sweep_report(folder, [folder / point.name for point in points], table, paired)
    return folder


def sweep_paired_table(runs: dict[GridPoint, Path], configs: dict[GridPoint, Config], key: str, value: str) -> pd.DataFrame:
    """paired.csv of a sweep: every setting minus its baseline (KEY=VALUE), seed by seed, on
    AUC, TPR at FPR 1e-2 (per attacker, attack, round), the final test accuracy (attack
    'utility') and, for runs with reconstruction attacks, `RECONSTRUCTION_METRICS` (per attacker,
    reconstruction attack, round).
    """
    leakage = {}
    for point, folder in runs.items():
        if Run.status_of(folder) != "complete":
            continue
        rows = pd.read_csv(folder / LEAKAGE_CSV)
        training = pd.read_csv(folder / TRAINING_CSV)
        utility = pd.DataFrame([{"attacker": "-", "attack": "utility", "round": int(training["round"].iloc[-1]),
                                 "test_accuracy": float(training["test_accuracy"].iloc[-1])}])
        parts = [rows, utility]
        if (folder / RECONSTRUCTION_CSV).exists():
            parts.append(reconstruction_summary(pd.read_csv(folder / RECONSTRUCTION_CSV)))
        leakage[(setting_name(point), configs[point].seed)] = pd.concat(parts, ignore_index=True)
    return paired_table(leakage, pairs_of(list(runs), key, value), (*PAIRED_METRICS, "test_accuracy", *RECONSTRUCTION_METRICS))


def reconstruction_summary(rows: pd.DataFrame) -> pd.DataFrame:
    """metrics/reconstruction.csv -> one row per (attacker, attack, round) with `RECONSTRUCTION_METRICS`.

    Parameters
    ----------
    rows : pandas.DataFrame
        A run's reconstruction.csv (one row per attack, attacker, round and true record).

    Returns
    -------
    pandas.DataFrame
        Columns attacker, attack, round, recovered (fraction of the scored records with PSNR >= 20 dB),
        mean_psnr (dB, over the records paired with a reconstruction, each capped at 100 dB) and
        exact_fraction (fraction given back exactly, `quality.Scale.exact`; NaN for an attack that claims no exact records),
        as `attackers.inference.reconstruction.measure.summarise` computes them.
    """
    from attackers.inference.reconstruction.measure import summarise

    table = summarise(rows)
    exact = pd.to_numeric(table["exact"], errors="coerce")
    table["exact_fraction"] = exact / table["n_records"]
    return table[["attacker", "attack", "round", *RECONSTRUCTION_METRICS]]


def format_paired(table: pd.DataFrame) -> str:
    """paired.csv as a console table (last round of each setting, attack and metric)."""
    if table.empty:
        return "paired: no setting has a complete baseline run with the same seed"
    last = table[table["round"] == table.groupby(["setting", "attack"])["round"].transform("max")]
    return last.to_string(index=False, float_format=lambda v: f"{v:+.4f}")


def comparison_table(runs: dict[GridPoint, Path], configs: dict[GridPoint, Config]) -> pd.DataFrame:
    """One row per run: its grid values, final test accuracy, worst epsilon, and per attack the
    last round's AUC, the highest AUC over rounds selected on half the targets and measured on the other half, and the last round's TPR at FPR 1e-3;
    per reconstruction attack and attacker, the last attacked round's `RECONSTRUCTION_METRICS` (`<attack>_<attacker>_<metric>`).
    """
    rows = []
    for point, folder in runs.items():
        training = pd.read_csv(folder / TRAINING_CSV)
        leakage = pd.read_csv(folder / LEAKAGE_CSV)
        row: dict[str, object] = {"run": point.name, **dict(point.settings)}
        row["test_accuracy"] = float(training["test_accuracy"].iloc[-1])
        if "epsilon_max" in training:
            row["epsilon_max"] = float(training["epsilon_max"].iloc[-1])
        for attack in (spec.name for spec in configs[point].attacks):
            rows_of = leakage[leakage["attack"] == attack].sort_values("round")
            if rows_of.empty:
                continue
            row[f"{attack}_auc"] = float(rows_of["auc"].iloc[-1])
            if "auc_select" in rows_of and rows_of["auc_select"].notna().any():  # max over rounds: chosen on one half, reported on the other
                chosen = rows_of.sort_values(["auc_select", "round"], ascending=[False, True], kind="stable").iloc[0]
                row[f"{attack}_auc_max_selected"] = float(chosen["auc_holdout"])
            row[f"{attack}_tpr_at_fpr_1e-3"] = float(rows_of["tpr_at_fpr_1e-3"].iloc[-1])
        if configs[point].reconstructions and (folder / RECONSTRUCTION_CSV).exists():
            summary = reconstruction_summary(pd.read_csv(folder / RECONSTRUCTION_CSV)).sort_values("round", kind="stable")
            for (attacker, attack), rows_of in summary.groupby(["attacker", "attack"], sort=False):
                for metric in RECONSTRUCTION_METRICS:
                    if rows_of[metric].notna().any():
                        row[f"{attack}_{attacker}_{metric}"] = float(rows_of[metric].iloc[-1])
        rows.append(row)
    return pd.DataFrame(rows)
