"""`fedsim reproduce`: a preset of the sweep runner. Every threat model of Nasr, Shokri and
Houmansadr (IEEE S&P 2019) on the configs of `configs/paper/`, over several seeds, written as
`reproduction.md` beside the paper's numbers, with the paper's orderings checked as paired
differences.

The preset is the grid (config x threat model x seed); each point is one ordinary run folder,
run by the sweep's loop (`fedsim.app.sweep.run_planned`: a complete one is skipped, so the
command resumes). Every number in the table is the mean over seeds of the last observed round
(fixed in advance, never the best round) with a 95% t interval over seeds; every ordering is a
paired difference on the same seeds (both from `fedsim.stats.paired.paired_interval`). Only the
paper's numbers checked against its tables are printed beside the results (docs/design.md,
section 6.5).
"""

from __future__ import annotations

import math
import shlex
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from fedsim.app.console import RunConsole
from fedsim.app.experiment import check_config
from fedsim.app.sweep import SweepRun, run_planned
from fedsim.core.config import Config, load_config
from fedsim.core.errors import FedsimError
from fedsim.core.layout import LEAKAGE_CSV, TRAINING_CSV
from fedsim.recording.run import Run
from fedsim.stats.paired import paired_interval

REPRODUCTION_MD = "reproduction.md"
PAPER_CONFIGS = Path("configs/paper")


@dataclass(frozen=True)
class ThreatModel:
    """One threat model of the paper: the overrides that set it up and who attacks."""

    name: str
    overrides: tuple[str, ...]
    attacker: str  # the attacker column of leakage.csv: server or participant
    paper: tuple[tuple[str, str], ...] = ()  # (attack, the paper's balanced attack accuracy): only numbers checked against its tables

    @property
    def folder(self) -> str:
        """The threat model's folder name, e.g. 'global-isolation-and-ascent'."""
        return self.name.replace(" + ", "-and-").replace(" ", "-")

    def paper_for(self, attack: str) -> str:
        """The paper's checked number for this threat model and attack ('' where there is none)."""
        return dict(self.paper).get(attack, "")


_SERVER = ("adversary.role=server", "adversary.victim=0")
_PARTICIPANT = ("adversary.role=participant", "adversary.victim=0", "adversary.isolate=false")
THREAT_MODELS: tuple[ThreatModel, ...] = (
    ThreatModel("stand-alone", ("data.num_clients=1", *_SERVER, "adversary.mode=passive", "adversary.isolate=false"), "server",
                (("nasr_blackbox", "CIFAR100 DenseNet 67.7%"),)),
    ThreatModel("global passive", (*_SERVER, "adversary.mode=passive", "adversary.isolate=false"), "server",
                (("nasr", "CIFAR100 DenseNet 79.2%"),)),
    ThreatModel("global gradient ascent", (*_SERVER, "adversary.mode=gradient-ascent", "adversary.isolate=false"), "server"),
    ThreatModel("global isolation", (*_SERVER, "adversary.mode=passive", "adversary.isolate=true"), "server"),
    ThreatModel("global isolation + ascent", (*_SERVER, "adversary.mode=gradient-ascent", "adversary.isolate=true"), "server",
                (("nasr", "CIFAR100 DenseNet 87.3%"),)),
    ThreatModel("local passive", (*_PARTICIPANT, "adversary.mode=passive"), "participant"),
    ThreatModel("local gradient ascent", (*_PARTICIPANT, "adversary.mode=gradient-ascent"), "participant"),
)
THREAT_MODEL_NAMES = {t.name: t for t in THREAT_MODELS}
FEDERATED_THREAT_MODELS = THREAT_MODELS[1:]  # the six settings of docs/design.md, section 2: server or participant, four clients

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
class PlannedRun(SweepRun):
    """One run of the reproduction (a point of the sweep): a config, a threat model and a seed."""

    config_name: str
    threat: ThreatModel
    seed: int


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
                planned.append(PlannedRun(f"{name} {threat.name} seed {seed}", config, out / name / threat.folder / f"seed-{seed}",
                                          name, threat, seed))
    return planned


def _available() -> list[str]:
    return sorted(p.stem for p in PAPER_CONFIGS.glob("*.yaml")) or list(SCALES["cpu"])


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
        if Run.status_of(run.folder) != "complete":
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
    """'mean ± half-width of the 95% t interval' over seeds ('mean' alone with one seed)."""
    mean, low, high = paired_interval(values.to_numpy())
    if math.isnan(mean):
        return "n/a"
    return f"{mean:.3f}" if math.isnan(low) else f"{mean:.3f} ± {(high - low) / 2:.3f}"


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
        "balanced (members and non-members equally many), threshold fitted on the attacker's known records. The paper",
        "column holds the paper's balanced attack accuracy only where docs/design.md, section 6.5 lists it as read off",
        "the paper's tables (CIFAR100 DenseNet); numbers that were not checked against the paper are left out, not",
        "guessed. The paper used CIFAR-100, Purchase100 and Texas100 at full scale on GPUs; what differs here is said",
        "under each config.",
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
                             f"{_cell(rows['tpr_at_fpr_1e-2'])} | {_cell(rows['test_accuracy'])} | {threat.paper_for(attack)} |")
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
    run_planned(planned, console, title="reproduce")
    table = results(planned)
    table.to_csv(out / "reproduction.csv", index=False)
    if command is None:
        parts = ["fedsim", "reproduce", "--scale", scale, "--seeds", str(seeds)]
        parts += [a for name in (configs or []) for a in ("--config", name)]
        parts += [a for o in overrides for a in ("--set", o)]
        command = shlex.join(parts)
    return write_markdown(table, planned, command, out)
