"""The six threat-model settings of docs/design.md, section 2 on one config, side by side, over seeds.

    python research/threat_models.py configs/location.yaml [--seeds 3] [--out runs/threats] [--set k=v ...]
    python research/threat_models.py configs/location.yaml --seeds 5 --out runs/threats --no-run   # summarise only

The settings are `fedsim reproduce`'s federated threat models (`FEDERATED_THREAT_MODELS`: global
= the server, local = a participant; `--set` assignments apply after them). Runs `fedsim run`
once per setting and seed, each in a fresh process (seeds 0..K-1; a complete run folder is kept
and not run again) and prints, per setting and attack, the last round's AUC (fixed in advance) as
the mean over seeds +- its standard deviation over seeds, nasr's TPR at FPR 1e-3 where it is
measurable (>= 1000 non-member targets, else "n/a"), and the global model's test accuracy; then
the paired differences of AUC between settings on the same seeds (95% t interval).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from fedsim.app.reproduce import FEDERATED_THREAT_MODELS
from fedsim.recording.run import Run

SETTINGS = {threat.name: threat for threat in FEDERATED_THREAT_MODELS}


def run_setting(config: str, folder: Path, assignments: list[str]) -> None:
    """Run one setting and seed with `fedsim run`, unless its folder already holds a complete run."""
    if Run.status_of(folder) == "complete":
        return
    command = [sys.executable, "-m", "fedsim.app.cli", "run", config, "--out", str(folder), "--quiet"]
    for assignment in assignments:
        command += ["--set", assignment]
    subprocess.run(["rm", "-rf", str(folder)], check=True)
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)


def last_rounds(folder: Path, setting: str, seed: int) -> list[dict]:
    """Per attack, the last observed round's AUC and nasr TPR at FPR 1e-3 (NaN where not measurable)."""
    leakage = pd.read_csv(folder / "metrics" / "leakage.csv")
    accuracy = pd.read_csv(folder / "metrics" / "training.csv")["test_accuracy"].iloc[-1]
    rows = []
    for attack, group in leakage.groupby("attack", sort=False):
        last = group[group["round"] == group["round"].max()].iloc[0]
        rows.append({"setting": setting, "seed": seed, "attack": attack, "auc": last["auc"],
                     "tpr@1e-3": last["tpr_at_fpr_1e-3"], "n_nonmembers": last["n_nonmembers"], "test_acc": accuracy})
    return rows


def _mean_sd(values: pd.Series) -> str:
    values = values.dropna()
    if values.empty:
        return "n/a"
    return f"{values.mean():.3f} +- {values.std(ddof=1):.3f}" if len(values) > 1 else f"{values.mean():.3f}"


def markdown(table: pd.DataFrame) -> str:
    """The README's table: rows settings, columns attacks' AUC (mean +- sd over seeds), nasr TPR@1e-3, test accuracy."""
    attacks = list(dict.fromkeys(table["attack"]))
    seeds = table["seed"].nunique()
    lines = ["| setting | " + " | ".join(attacks) + " | nasr TPR@1e-3 | test acc. |", "| --- " * (len(attacks) + 3) + "|"]
    for setting in dict.fromkeys(table["setting"]):
        mine = table[table["setting"] == setting]
        cells = [_mean_sd(mine.loc[mine["attack"] == attack, "auc"]) for attack in attacks]
        nasr = mine[mine["attack"] == "nasr"]
        measurable = not nasr.empty and bool((nasr["n_nonmembers"] >= 1000).all())
        tpr = _mean_sd(nasr["tpr@1e-3"]) if measurable else f"n/a ({int(nasr['n_nonmembers'].min()) if not nasr.empty else 0} non-members)"
        accuracy = mine.groupby("seed")["test_acc"].first()
        lines.append(f"| {setting} | " + " | ".join(cells) + f" | {tpr} | {_mean_sd(accuracy)} |")
    counts = table.groupby("setting")["seed"].nunique()
    over = f"{seeds} seeds" if counts.nunique() == 1 else "seeds (" + ", ".join(f"{s}: {n}" for s, n in counts.items()) + ")"
    return "\n".join(lines) + f"\n\n(last round, mean +- standard deviation over {over})"


PAIRS = (("global gradient ascent", "global passive"), ("global isolation + ascent", "global isolation"),
         ("local gradient ascent", "local passive"), ("global isolation", "global passive"),
         ("global passive", "local passive"))


def paired(table: pd.DataFrame) -> str:
    """Paired differences of AUC on the same seeds (a minus b, 95% t interval, `fedsim.stats.paired`), and of test accuracy."""
    from fedsim.stats.paired import paired_interval

    lines = ["| a - b | attack | mean difference (AUC) | 95% interval | seeds |", "| --- | --- | --- | --- | --- |"]
    for a, b in PAIRS:
        for attack in dict.fromkeys(table["attack"]):
            mine = {name: table[(table["setting"] == name) & (table["attack"] == attack)].set_index("seed")["auc"] for name in (a, b)}
            diff = (mine[a] - mine[b]).dropna()
            if len(diff) < 2:
                continue
            mean, low, high = paired_interval(diff.to_numpy())
            lines.append(f"| {a} - {b} | {attack} | {mean:+.3f} | [{low:+.3f}, {high:+.3f}] | {len(diff)} |")
        accuracy = {name: table[table["setting"] == name].groupby("seed")["test_acc"].first() for name in (a, b)}
        diff = (accuracy[a] - accuracy[b]).dropna()
        if len(diff) >= 2:
            mean, low, high = paired_interval(diff.to_numpy())
            lines.append(f"| {a} - {b} | (test accuracy) | {mean:+.3f} | [{low:+.3f}, {high:+.3f}] | {len(diff)} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config")
    parser.add_argument("--seeds", type=int, default=3, help="seeds 0..K-1 per setting (default 3)")
    parser.add_argument("--out", type=Path, default=Path("runs/threat-models"))
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--no-run", action="store_true", help="only summarise the complete runs of seeds 0..K-1 already in --out")
    args = parser.parse_args()
    rows = []
    for seed in range(args.seeds):
        for setting, threat in SETTINGS.items():
            folder = args.out / threat.folder / f"seed-{seed}"
            if args.no_run and Run.status_of(folder) != "complete":
                continue
            if not args.no_run:
                run_setting(args.config, folder, [*threat.overrides, *args.overrides, f"seed={seed}"])
            rows.extend(last_rounds(folder, setting, seed))
    if not rows:
        sys.exit(f"threat_models: no complete run in {args.out} for seeds 0..{args.seeds - 1}")
    table = pd.DataFrame(rows)
    table.to_csv(args.out / "threat_models.csv", index=False)
    print(markdown(table))
    print()
    print(paired(table))
    print()
    pivot = table.pivot_table(index="setting", columns="attack", values="auc", aggfunc=np.mean)
    print(pivot.reindex([name for name in SETTINGS if name in pivot.index]).to_string(float_format=lambda v: f"{v:.3f}"))


if __name__ == "__main__":
    main()
