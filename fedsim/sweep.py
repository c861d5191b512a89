"""`fedsim sweep`: a grid of runs, one after another, and the table that compares them.

Each grid point is an ordinary run folder under the sweep folder, named by its settings. A
point whose run is complete is skipped when the sweep is started again; one left incomplete
(crashed or interrupted) is run again from the start. Every point's config is validated before
the first run starts, so a bad grid value fails at once with one line.
"""

from __future__ import annotations

import itertools
import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from fedsim.config import Config, load_config
from fedsim.console import RunConsole
from fedsim.errors import FedsimError
from fedsim.recorder import LEAKAGE_CSV, MANIFEST, TRAINING_CSV

COMPARISON_CSV = "comparison.csv"
PLOT = "plots/privacy_utility.png"  # written by fedsim.report.write_sweep_report, with report.html


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


def parse_grid(items: list[str]) -> list[GridPoint]:
    """`--grid key=v1,v2` options -> their cartesian product."""
    axes: list[list[tuple[str, str]]] = []
    for item in items:
        key, sep, raw = item.partition("=")
        values = _split_values(raw) if sep else []
        if not key.strip() or not values or any(not v for v in values):
            raise FedsimError(f"--grid {item!r}: expected key=value1,value2,..., e.g. --grid defense.dp_sgd.noise_multiplier=0.5,1.0")
        axes.append([(key.strip(), v) for v in values])
    if not axes:
        raise FedsimError("fedsim sweep: give at least one --grid key=value1,value2")
    points = [GridPoint(tuple(combination)) for combination in itertools.product(*axes)]
    names = [point.name for point in points]
    if len(set(names)) < len(names):
        raise FedsimError(f"--grid: two grid points would share the folder {max(names, key=names.count)!r}; "
                          "make the values differ in more than spacing or punctuation")
    return points


def _status(folder: Path) -> str | None:
    try:
        return json.loads((folder / MANIFEST).read_text()).get("status")
    except (OSError, ValueError):
        return None


def run_sweep(config_path: str | None, grid: list[str], overrides: list[str], out: Path | None = None,
              console: RunConsole | None = None) -> Path:
    """Run every grid point not yet complete; write comparison.csv and the sweep's report
    (the runs side by side and the privacy-utility plot).
    """
    from fedsim.experiment import check_config, run_experiment
    from fedsim.report import write_sweep_report

    console = console or RunConsole()
    points = parse_grid(grid)
    configs = {point: check_config(load_config(config_path, [*overrides, *point.overrides()])) for point in points}
    folder = out or Path("runs") / f"sweep-{next(iter(configs.values())).name}"
    folder.mkdir(parents=True, exist_ok=True)
    for number, (point, config) in enumerate(configs.items(), 1):
        run_folder = folder / point.name
        if _status(run_folder) == "complete":
            console.print(f"sweep {number}/{len(points)}: {point.name}: complete, skipped")
            continue
        shutil.rmtree(run_folder, ignore_errors=True)  # an incomplete attempt is redone from the start
        console.print(f"sweep {number}/{len(points)}: {point.name}")
        run_experiment(config, run_folder, console)
    table = comparison_table({point: folder / point.name for point in points}, configs)
    table.to_csv(folder / COMPARISON_CSV, index=False)
    write_sweep_report(folder, [folder / point.name for point in points], table)
    return folder


def comparison_table(runs: dict[GridPoint, Path], configs: dict[GridPoint, Config]) -> pd.DataFrame:
    """One row per run: its grid values, final test accuracy, worst epsilon, and per attack the
    last round's AUC, the highest AUC over rounds, and the last round's TPR at FPR 1e-3.
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
            row[f"{attack}_auc_max"] = float(rows_of["auc"].max())
            row[f"{attack}_tpr_at_fpr_1e-3"] = float(rows_of["tpr_at_fpr_1e-3"].iloc[-1])
        rows.append(row)
    return pd.DataFrame(rows)
