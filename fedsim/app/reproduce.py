"""`fedsim reproduce`: every threat model of Nasr, Shokri and Houmansadr (IEEE S&P 2019) on the
configs of `configs/paper/`, over several seeds, written as `reproduction.md` beside the paper's
numbers, with the paper's orderings checked as paired differences.

Each (config, threat model, seed) is one ordinary run folder; a complete one is skipped, so the
command resumes like a sweep. Every number in the table is the mean over seeds of the last
observed round (fixed in advance, never the best round) with a 95% t interval over seeds; every
ordering is a paired difference on the same seeds (`fedsim.stats.paired.paired_interval`).
"""

from __future__ import annotations

import json
import math
import shlex
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from fedsim.app.console import RunConsole
from fedsim.app.experiment import check_config, run_experiment
from fedsim.core.config import Config, load_config
from fedsim.core.errors import FedsimError
from fedsim.core.layout import LEAKAGE_CSV, MANIFEST, TRAINING_CSV
from fedsim.stats.paired import paired_interval

REPRODUCTION_MD = "reproduction.md"
PAPER_CONFIGS = Path("configs/paper")


@dataclass(frozen=True)
class ThreatModel:
    """One threat model of the paper: the overrides that set it up and who attacks."""

    name: str
    overrides: tuple[str, ...]
    attacker: str  # the attacker column of leakage.csv: server or participant
    paper: str  # the paper's numbers for it (balanced attack accuracy), as docs/design.md, section 6.4 lists them


_SERVER = ("adversary.role=server", "adversary.victim=0")
_PARTICIPANT = ("adversary.role=participant", "adversary.victim=0", "adversary.isolate=false")
THREAT_MODELS: tuple[ThreatModel, ...] = (
    ThreatModel("stand-alone", ("data.num_clients=1", *_SERVER, "adversary.mode=passive", "adversary.isolate=false"), "server",
                "CIFAR100 DenseNet 67.7% black-box, 74.3%* white-box; AlexNet 74.2%* / 74.6%*; Purchase100 67.6%* / 73.4%*"),
    ThreatModel("global passive", (*_SERVER, "adversary.mode=passive", "adversary.isolate=false"), "server",
                "CIFAR100 DenseNet 79.2%; AlexNet 85.1%*"),
    ThreatModel("global gradient ascent", (*_SERVER, "adversary.mode=gradient-ascent", "adversary.isolate=false"), "server",
                "CIFAR100 AlexNet 88.2%*"),
    ThreatModel("global isolation", (*_SERVER, "adversary.mode=passive", "adversary.isolate=true"), "server",
                "not listed in docs/design.md"),
    ThreatModel("global isolation + ascent", (*_SERVER, "adversary.mode=gradient-ascent", "adversary.isolate=true"), "server",
                "CIFAR100 DenseNet 87.3%"),
    ThreatModel("local passive", (*_PARTICIPANT, "adversary.mode=passive"), "participant", "CIFAR100 AlexNet 73.1%*"),
    ThreatModel("local gradient ascent", (*_PARTICIPANT, "adversary.mode=gradient-ascent"), "participant", "CIFAR100 AlexNet 76.3%*"),
)
THREAT_MODEL_NAMES = {t.name: t for t in THREAT_MODELS}

SCALES: dict[str, tuple[str, ...]] = {
    "cpu": ("location_cpu", "cifar10_alexnet_cpu"),
    "full": ("cifar100_alexnet", "cifar100_resnet", "cifar100_densenet", "purchase100", "texas100"),
}
EXTRA_CPU = ("mnist_cnn_cpu", "adult_cpu")  # CPU-scale configs that `--configs` may add

# The paper's orderings, each a paired difference (a minus b) on the same seeds:
# (label, threat model a, attack a, round a, threat model b, attack b, round b); round "last" or "first" observed.
ORDERINGS: tuple[tuple[str, str, str, str, str, str, str], ...] = (
    ("isolation > passive (server)", "global isolation", "nasr", "last", "global passive", "nasr", "last"),
    ("isolation + ascent > isolation (server)", "global isolation + ascent", "nasr", "last", "global isolation", "nasr", "last"),
    ("gradient ascent > passive (server)", "global gradient ascent", "nasr", "last", "global passive", "nasr", "last"),
    ("global > local (passive)", "global passive", "nasr", "last", "local passive", "nasr", "last"),
    ("white-box >= black-box (stand-alone)", "stand-alone", "nasr", "last", "stand-alone", "nasr_blackbox", "last"),
    ("white-box >= black-box (global passive)", "global passive", "nasr", "last", "global passive", "nasr_blackbox", "last"),
    ("later snapshots >= earlier (global passive)", "global passive", "nasr", "last", "global passive", "nasr", "first"),
)
METRICS = ("accuracy", "auc", "tpr_at_fpr_1e-2")


@dataclass(frozen=True)
class PlannedRun:
    """One run of the reproduction: a config, a threat model, a seed, and its folder."""

    config_name: str
    threat: ThreatModel
    seed: int
    config: Config
    folder: Path


def paper_config_path(name: str) -> Path:
    """The path of `configs/paper/NAME.yaml` (relative to the working folder, the project's root)."""
    return PAPER_CONFIGS / f"{name}.yaml"


def plan(config_names: Sequence[str], seeds: int, out: Path, threat_models: Sequence[ThreatModel] = THREAT_MODELS,
         overrides: Sequence[str] = (), loader: Callable[[str, list[str]], Config] | None = None) -> list[PlannedRun]:
    """Every (config, threat model, seed) run, each config validated before anything runs.

    Parameters
    ----------
    config_names : sequence of str
        Names of configs under configs/paper (without .yaml).
    seeds : int
        Seeds 0..seeds-1 for every threat model.
    out : Path
        The reproduction folder; run folders go to out/<config>/<threat model>/seed-<k>.
    threat_models : sequence of ThreatModel
        The threat models to run (default: all of the paper's).
    overrides : sequence of str
        'key=value' assignments applied to every run before the threat model's own.
    loader : callable, optional
        (config name, overrides) -> Config; default: load configs/paper/NAME.yaml.

    Returns
    -------
    list of PlannedRun
        In run order.

    Raises
    ------
    FedsimError
        A missing config or any run's invalid config, one line.
    """
    if seeds < 1:
        raise FedsimError(f"--seeds: {seeds}; give at least 1 (3 or more for intervals)")

    def load(name: str, extra: list[str]) -> Config:
        path = paper_config_path(name)
        if not path.is_file():
            raise FedsimError(f"{path}: paper config not found; run from the project's root (choose from {', '.join(_available())})")
        return load_config(path, extra)

    loader = loader or load
    planned = []
    for name in config_names:
        for threat in threat_models:
            for seed in range(seeds):
                config = check_config(loader(name, [*overrides, *threat.overrides, f"seed={seed}"]))
                folder = out / name / threat.name.replace(" + ", "-and-").replace(" ", "-") / f"seed-{seed}"
                planned.append(PlannedRun(name, threat, seed, config, folder))
    return planned


def _available() -> list[str]:
    return sorted(p.stem for p in PAPER_CONFIGS.glob("*.yaml")) or list(SCALES["cpu"])


def _status(folder: Path) -> str | None:
    try:
        return json.loads((folder / MANIFEST).read_text())["status"]
    except (OSError, ValueError, KeyError):
        return None


def run_planned(planned: Sequence[PlannedRun], console: RunConsole) -> None:
    """Run what is not yet complete (an incomplete folder is redone from the start)."""
    import shutil

    for number, run in enumerate(planned, 1):
        label = f"reproduce {number}/{len(planned)}: {run.config_name} {run.threat.name} seed {run.seed}"
        if _status(run.folder) == "complete":
            console.print(f"{label}: complete, skipped")
            continue
        shutil.rmtree(run.folder, ignore_errors=True)
        console.print(label)
        run_experiment(run.config, run.folder, console)


def _row(leakage: pd.DataFrame, attacker: str, attack: str, which: str) -> pd.Series | None:
    rows = leakage[(leakage["attacker"] == attacker) & (leakage["attack"] == attack)]
    if rows.empty:
        return None
    wanted = rows["round"].max() if which == "last" else rows["round"].min()
    return rows[rows["round"] == wanted].iloc[0]


def results(planned: Sequence[PlannedRun]) -> pd.DataFrame:
    """One row per (config, threat model, attack, seed): the last observed round's metrics.

    Returns
    -------
    pandas.DataFrame
        Columns config, threat_model, attacker, attack, seed, round, first_round, accuracy, auc,
        tpr_at_fpr_1e-2, first_auc (the first observed round's AUC), test_accuracy.
    """
    rows = []
    for run in planned:
        if _status(run.folder) != "complete":
            continue
        leakage = pd.read_csv(run.folder / LEAKAGE_CSV)
        test_accuracy = float(pd.read_csv(run.folder / TRAINING_CSV)["test_accuracy"].iloc[-1])
        for attack in leakage.loc[leakage["attacker"] == run.threat.attacker, "attack"].unique():
            last, first = _row(leakage, run.threat.attacker, attack, "last"), _row(leakage, run.threat.attacker, attack, "first")
            if last is None or first is None:
                continue
            rows.append({"config": run.config_name, "threat_model": run.threat.name, "attacker": run.threat.attacker,
                         "attack": attack, "seed": run.seed, "round": int(last["round"]), "first_round": int(first["round"]),
                         **{m: float(last[m]) if pd.notna(last[m]) else math.nan for m in METRICS},
                         "first_auc": float(first["auc"]), "test_accuracy": test_accuracy})
    return pd.DataFrame(rows, columns=["config", "threat_model", "attacker", "attack", "seed", "round", "first_round", *METRICS,
                                       "first_auc", "test_accuracy"])


def mean_interval(values: np.ndarray, confidence: float = 0.95) -> tuple[float, float]:
    """Mean over seeds and the half-width of its t interval (nan with fewer than 2 seeds).

    Parameters
    ----------
    values : np.ndarray
        `(n_seeds,)` one number per seed (NaNs dropped).

    Returns
    -------
    tuple of float
        `(mean, half_width)`: mean +- t_{n-1} * sd / sqrt(n) (scipy.stats.t), sd with ddof=1.
    """
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if len(v) == 0:
        return math.nan, math.nan
    if len(v) < 2:
        return float(v.mean()), math.nan
    half = float(stats.t.ppf(0.5 + confidence / 2, len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v)))
    return float(v.mean()), half


def orderings(table: pd.DataFrame, config_name: str, metric: str = "auc", attack: str = "nasr") -> pd.DataFrame:
    """The paper's orderings on one config: paired differences (a minus b) over the same seeds.

    `attack` replaces the white-box attack (nasr) in every ordering but white-box vs black-box,
    e.g. to read the same orderings off the loss threshold.

    Returns
    -------
    pandas.DataFrame
        Columns ordering, mean_diff, ci_low, ci_high, n_seeds, verdict ("holds" when the
        interval lies above 0, "reversed" when below, "within noise" otherwise).
    """
    rows = []
    mine = table[table["config"] == config_name]
    for label, threat_a, attack_a, round_a, threat_b, attack_b, round_b in ORDERINGS:
        if attack_a == attack_b == "nasr":
            attack_a = attack_b = attack
        elif attack != "nasr":
            continue  # white-box vs black-box compares two attacks; shown once, with nasr
        def values(threat: str, attack: str, which: str) -> pd.Series:
            chosen = mine[(mine["threat_model"] == threat) & (mine["attack"] == attack)].set_index("seed")
            return chosen[metric if which == "last" else f"first_{metric}"]  # the first observed round is kept for AUC

        a, b = values(threat_a, attack_a, round_a), values(threat_b, attack_b, round_b)
        common = a.index.intersection(b.index)
        if len(common) == 0:
            continue
        mean, low, high = paired_interval((a[common] - b[common]).to_numpy())
        verdict = "holds" if low > 0 else "reversed" if high < 0 else "within noise"
        if math.isnan(low):
            verdict = "one seed: no interval"
        rows.append({"ordering": label, "mean_diff": mean, "ci_low": low, "ci_high": high, "n_seeds": len(common), "verdict": verdict})
    return pd.DataFrame(rows, columns=["ordering", "mean_diff", "ci_low", "ci_high", "n_seeds", "verdict"])


def _cell(values: pd.Series) -> str:
    mean, half = mean_interval(values.to_numpy())
    if math.isnan(mean):
        return "n/a"
    return f"{mean:.3f}" if math.isnan(half) else f"{mean:.3f} ± {half:.3f}"


def write_markdown(table: pd.DataFrame, planned: Sequence[PlannedRun], command: str, out: Path) -> Path:
    """reproduction.md: per config, the threat models beside the paper's numbers, then the orderings.

    Parameters
    ----------
    table : pandas.DataFrame
        `results(planned)`.
    planned : sequence of PlannedRun
        The runs (for the configs' descriptions and the seeds).
    command : str
        The exact command that made it.
    out : Path
        The reproduction folder.

    Returns
    -------
    Path
        The written file.
    """
    seeds = sorted({run.seed for run in planned})
    lines = [
        "# Reproduction of Nasr, Shokri and Houmansadr (IEEE S&P 2019)",
        "",
        f"Made by `{command}` with seeds {', '.join(map(str, seeds))}. Every number is the mean over seeds of the last",
        "observed round (fixed in advance) ± the half-width of the 95% t interval over seeds. Attack accuracy is",
        "balanced (members and non-members equally many), threshold fitted on the attacker's known records. The paper's",
        "numbers are balanced attack accuracy as docs/design.md, section 6.4 lists them: plain numbers are from the paper's",
        "tables, numbers marked * are recalled and not checked against the paper. The paper used CIFAR-100, Purchase100",
        "and Texas100 at full scale on GPUs; what differs here is said under each config.",
        "",
    ]
    for config_name in dict.fromkeys(run.config_name for run in planned):
        mine_planned = [run for run in planned if run.config_name == config_name]
        example = next((run for run in mine_planned if run.threat.name != "stand-alone"), mine_planned[0])  # the federated setting
        described = paper_config_path(config_name)
        header = [line[2:] for line in described.read_text().splitlines() if line.startswith("# ")] if described.is_file() else []
        c = example.config
        lines += [f"## {config_name}", "", *header, "",
                  f"{c.data.dataset}, {c.model.name}, {c.data.num_clients} participants x {c.data.records_per_client} records, "
                  f"{c.train.rounds} rounds x {c.train.local_epochs} local epochs, observed rounds {c.observed_rounds() or 'all'}, "
                  f"{c.adversary.target_records} targets (half members), attacks {', '.join(_names(c))}.", "",
                  "| threat model | attack | attack accuracy | AUC | TPR@1e-2 | test accuracy | paper (accuracy) |",
                  "|---|---|---|---|---|---|---|"]
        mine = table[table["config"] == config_name]
        for threat in dict.fromkeys(run.threat for run in planned if run.config_name == config_name):
            for attack in ("loss", "nasr_blackbox", "nasr"):
                rows = mine[(mine["threat_model"] == threat.name) & (mine["attack"] == attack)]
                if rows.empty:
                    continue
                lines.append(f"| {threat.name} | {attack} | {_cell(rows['accuracy'])} | {_cell(rows['auc'])} | "
                             f"{_cell(rows['tpr_at_fpr_1e-2'])} | {_cell(rows['test_accuracy'])} | {threat.paper if attack == 'nasr' else ''} |")
        lines += ["", "Orderings of the paper, as paired differences of AUC on the same seeds (a minus b, 95% paired t interval),",
                  "read off the white-box attack (nasr) and off the loss threshold:", "",
                  "| ordering | attack | mean difference | 95% interval | seeds | verdict |", "|---|---|---|---|---|---|"]
        for attack in ("nasr", "loss"):
            lines += [f"| {r.ordering} | {attack} | {r.mean_diff:+.3f} | [{r.ci_low:+.3f}, {r.ci_high:+.3f}] | {r.n_seeds} | {r.verdict} |"
                      for r in orderings(table, config_name, attack=attack).itertuples()]
        lines.append("")
    path = out / REPRODUCTION_MD
    path.write_text("\n".join(lines))
    return path


def _names(config: Config) -> list[str]:
    return [a if isinstance(a, str) else getattr(a, "name", str(a)) for a in config.attacks]


def reproduce(scale: str = "cpu", seeds: int = 3, out: Path | None = None, configs: Sequence[str] | None = None,
              overrides: Sequence[str] = (), console: RunConsole | None = None, command: str | None = None) -> Path:
    """Run every threat model of the paper on the configs of a scale and write reproduction.md.

    Parameters
    ----------
    scale : {"cpu", "full"}
        Which configs of configs/paper: CPU-sized (minutes here) or the paper's full scale.
    seeds : int
        Seeds per threat model (3 or more for intervals).
    out : Path, optional
        The reproduction folder (default: runs/reproduce-<scale>); an existing one is resumed.
    configs : sequence of str, optional
        Config names under configs/paper instead of the scale's.
    overrides : sequence of str
        'key=value' assignments applied to every run.
    console : RunConsole, optional
        Progress; default: a new one.
    command : str, optional
        The command line to quote in reproduction.md (default: rebuilt from the arguments).

    Returns
    -------
    Path
        The written reproduction.md.

    Raises
    ------
    FedsimError
        An unknown scale or config, or an invalid run config, one line, before anything runs.
    """
    if scale not in SCALES:
        raise FedsimError(f"--scale: unknown scale {scale!r}; choose cpu or full")
    names = list(configs or SCALES[scale])
    out = out or Path("runs") / f"reproduce-{scale}"
    console = console or RunConsole()
    planned = plan(names, seeds, out, overrides=overrides)
    out.mkdir(parents=True, exist_ok=True)
    run_planned(planned, console)
    table = results(planned)
    table.to_csv(out / "reproduction.csv", index=False)
    if command is None:
        parts = ["fedsim", "reproduce", "--scale", scale, "--seeds", str(seeds)]
        parts += [a for name in (configs or []) for a in ("--config", name)]
        parts += [a for o in overrides for a in ("--set", o)]
        command = shlex.join(parts)
    return write_markdown(table, planned, command, out)
