"""Summarise the reconstruction study's sweeps for docs/results/reconstruction.md.

    python research/reconstruction_study.py rescore STUDY_DIR
    python research/reconstruction_study.py pseudo STUDY_DIR
    python research/reconstruction_study.py table STUDY_DIR

STUDY_DIR holds the `fedsim sweep` folders of the page's commands (configs/reconstruction-mnist.yaml
varied one factor at a time); every complete run below it with metrics/reconstruction.csv counts.
A run's setting is read from its config: the server's mode (passive or crafted-model), batch size
B, local steps S (one local epoch: ceil(records / B)), records n and the defence.

`rescore`: attacks every run again with its own `reconstructions` entries through
`measure_reconstruction` (the runs are read, not changed) and writes STUDY_DIR/rescored/<sweep>/<run>.csv,
which `table` reads instead of the run's own reconstruction.csv: the runs were made before the
scoring gained its chance column and its byte-level exact rule (the attacks' outputs are the same:
same code, same seeds).

`pseudo`: attacks every passive run of several local steps whose server knows the schedule (no
secure aggregation) once more with `inverting_gradients` treating the update as one
pseudo-gradient (the run's own entry's arguments, budget included, with `local_steps:
pseudo-gradient`), through `measure_reconstruction` (the runs are read, not changed), and writes
STUDY_DIR/pseudo-gradient/<sweep>/<run>.csv in reconstruction.csv's columns.

`table`: Markdown tables. Per (setting, attack): the seeds, and the mean over seeds with its 95%
t interval (`fedsim.stats.paired.paired_interval`, one value per seed) of the fraction of the
victim's records recovered (PSNR >= 20 dB), their mean PSNR (each capped at 100 dB), the baseline's
mean PSNR, and for `imprint` the fraction recovered to 1e-5 and both fractions among the records
the crafted model trapped (the victim's member targets: the crafted-model server traps targets
only). Then each setting minus the base point of its mode (batch 2, one step, no defence), and the
pseudo-gradient minus the replayed steps on the same runs, paired seed by seed
(`fedsim.stats.paired.paired_table`).
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
import pandas as pd

from attackers.inference.reconstruction.measure import measure_reconstruction
from fedsim.app.sweep import RECONSTRUCTION_METRICS, reconstruction_summary
from fedsim.core.layout import RECONSTRUCTION_CSV
from fedsim.recording.run import Run
from fedsim.stats.paired import paired_interval, paired_table

PSEUDO = "inverting_gradients (pseudo-gradient)"
BASE = ("B=2", "S=1", "none")


def complete_runs(study: Path) -> list[Run]:
    """Every complete run folder below `study` with a reconstruction.csv, in path order."""
    folders = sorted(p.parent.parent for p in study.rglob(RECONSTRUCTION_CSV))
    return [Run.open(f) for f in folders if Run.status_of(f) == "complete"]


def defence(run: Run) -> str:
    config = run.config
    if config.defense.secure_aggregation:
        return "secure aggregation"
    if config.defense.dp_sgd is not None:
        dp = config.defense.dp_sgd
        return f"DP-SGD (noise {dp.noise_multiplier:g}, clip {dp.max_grad_norm:g})"
    if config.strategy.name != "fedavg":
        return config.strategy.name
    return "none"


def setting(run: Run) -> tuple[str, str, str, str]:
    """(mode, "B=..", "S=..", defence) of a run."""
    config = run.config
    n = config.data.records_per_client or 0  # the study's configs fix it
    steps = config.train.local_epochs * math.ceil(n / config.train.batch_size)
    return config.adversary.mode, f"B={config.train.batch_size}", f"S={steps}", defence(run)


def trapped(run: Run) -> np.ndarray:
    """The victim's member records the crafted model trapped: its member targets."""
    ledger = run.membership
    victim = run.config.adversary.victim
    return ledger.loc[ledger["member"] & ledger["target"] & (ledger["client"] == victim), "record_id"].to_numpy()


def pseudo_path(study: Path, run: Run) -> Path:
    return study / "pseudo-gradient" / run.folder.parent.name / f"{run.folder.name}.csv"


def rescored_path(study: Path, run: Run) -> Path:
    return study / "rescored" / run.folder.parent.name / f"{run.folder.name}.csv"


def rescore(study: Path) -> None:
    for run in complete_runs(study):
        out = rescored_path(study, run)
        if out.exists():
            continue
        report = measure_reconstruction(run)
        out.parent.mkdir(parents=True, exist_ok=True)
        report.rows.to_csv(out, index=False)
        print(out, f"recovered {report.rows['recovered'].astype(bool).mean():.3f}", flush=True)


def per_run(study: Path, run: Run) -> pd.DataFrame:
    """One row per (attack, round) of a run: the summary metrics and, for imprint, the trapped records' fractions."""
    rescored = rescored_path(study, run)
    rows = pd.read_csv(rescored if rescored.exists() else run.folder / RECONSTRUCTION_CSV)
    extra = pseudo_path(study, run)
    if extra.exists():
        rows = pd.concat([rows, pd.read_csv(extra).assign(attack=PSEUDO)], ignore_index=True)
    table = reconstruction_summary(rows)
    baseline = rows.groupby(["attack", "round"], sort=False)["baseline_psnr"].mean().rename("baseline_psnr").reset_index()
    table = table.merge(baseline, on=["attack", "round"])
    if "chance_psnr" in rows:
        paired = rows[rows["psnr"].notna()]
        chance = rows.groupby(["attack", "round"], sort=False)["chance_psnr"].apply(lambda v: v.clip(upper=100.0).mean())
        table = table.merge(chance.rename("chance_psnr").reset_index(), on=["attack", "round"], how="left")
        table = table.merge(paired.groupby(["attack", "round"], sort=False)["baseline_psnr"].mean().rename("paired_baseline_psnr").reset_index(),
                            on=["attack", "round"], how="left")
    caught = rows[rows["record_id"].isin(trapped(run))]
    by = caught.groupby(["attack", "round"], sort=False)
    table = table.merge(by["recovered"].mean().rename("trapped_recovered").reset_index(), on=["attack", "round"], how="left")
    table = table.merge(by["exact"].apply(lambda e: e.astype(float).mean()).rename("trapped_exact").reset_index(), on=["attack", "round"], how="left")
    table["trapped"] = len(trapped(run))
    table["n_records"] = rows.groupby(["attack", "round"], sort=False).size().to_numpy()
    return table


def pseudo(study: Path) -> None:
    for run in complete_runs(study):
        entries = [e for e in run.config.reconstructions if e.name == "inverting_gradients"]
        if run.config.adversary.mode != "passive" or run.config.defense.secure_aggregation or not entries or setting(run)[2] == "S=1":
            continue  # with one step the replay is the gradient itself: the two modes differ only where there are several
        out = pseudo_path(study, run)
        if out.exists():
            continue
        spec = {"name": "inverting_gradients", "args": {**entries[0].args, "local_steps": "pseudo-gradient"}}
        report = measure_reconstruction(run, attacks=[spec])
        out.parent.mkdir(parents=True, exist_ok=True)
        report.rows.to_csv(out, index=False)
        print(out, f"recovered {report.rows['recovered'].astype(bool).mean():.3f}")


def _cell(values: pd.Series, digits: int = 2) -> str:
    mean, low, high = paired_interval(values.to_numpy(dtype=float))
    if not np.isfinite(mean):
        return "-"
    if not np.isfinite(low):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def table(study: Path) -> None:
    summaries: dict[tuple[tuple[str, ...], int], pd.DataFrame] = {}
    for run in complete_runs(study):
        key = (setting(run), run.config.seed)
        frame = per_run(study, run)
        if key in summaries:  # the base point is in two sweeps: the same config and seed must give the same numbers
            same = np.allclose(summaries[key]["recovered"], frame["recovered"]) and np.allclose(summaries[key]["mean_psnr"], frame["mean_psnr"])
            print(f"<!-- {run.folder}: duplicate of {key}, {'identical' if same else 'DIFFERENT'} -->")
            continue
        summaries[key] = frame
    long = pd.concat([f.assign(mode=k[0][0], batch=k[0][1], steps=k[0][2], defence=k[0][3], seed=k[1]) for k, f in summaries.items()],
                     ignore_index=True)
    print("| server | batch | steps | records | defence | attack | seeds | recovered | mean PSNR (dB) | baseline PSNR (dB) "
          "| chance PSNR (dB) | exact | trapped | recovered of trapped | exact of trapped |")
    print("| --- " * 15 + "|")
    keys = ["mode", "batch", "steps", "defence", "attack", "round"]
    for (mode, batch, steps, defence_name, attack, _round), group in long.groupby(keys, sort=True):
        imprint = attack == "imprint"
        print(f"| {mode} | {batch[2:]} | {steps[2:]} | {int(group['n_records'].iloc[0])} | {defence_name} | {attack} | "
              f"{', '.join(str(s) for s in sorted(group['seed']))} | {_cell(group['recovered'])} | {_cell(group['mean_psnr'], 1)} | "
              f"{_cell(group['paired_baseline_psnr'] if 'paired_baseline_psnr' in group else group['baseline_psnr'], 1)} | "
              f"{_cell(group['chance_psnr'], 1) if 'chance_psnr' in group else '-'} | {_cell(group['exact_fraction']) if imprint else '-'} | "
              f"{int(group['trapped'].iloc[0]) if imprint else '-'} | {_cell(group['trapped_recovered']) if imprint else '-'} | "
              f"{_cell(group['trapped_exact']) if imprint else '-'} |")

    print("\nPaired against the base point of the same server (batch 2, one step, no defence):\n")
    print("| server | setting | attack | metric | mean difference [95% CI] | seeds |")
    print("| --- | --- | --- | --- | --- | --- |")
    runs = {(" ".join(k[0]), k[1]): f for k, f in summaries.items()}
    for mode in sorted({k[0][0] for k in summaries}):
        base = " ".join((mode, *BASE))
        pairs = {" ".join(k[0]): base for k, _ in summaries.items() if k[0][0] == mode and " ".join(k[0]) != base}
        for row in paired_table(runs, pairs, RECONSTRUCTION_METRICS).itertuples():
            if row.metric == "mean_psnr" or row.attack == PSEUDO:
                continue
            print(f"| {mode} | {row.setting.removeprefix(mode + ' ')} | {row.attack} | {row.metric} | "
                  f"{row.mean_diff:+.2f} [{row.ci_low:+.2f}, {row.ci_high:+.2f}] | {row.n_seeds} |")

    print("\nPseudo-gradient minus replayed local steps (inverting_gradients, same runs):\n")
    print("| setting | metric | mean difference [95% CI] | seeds |")
    print("| --- | --- | --- | --- |")
    modes = {}
    for (name, seed), frame in runs.items():
        if (frame["attack"] == PSEUDO).any():
            modes[(name + " pseudo", seed)] = frame[frame["attack"] == PSEUDO].assign(attack="inverting_gradients")
            modes[(name + " simulate", seed)] = frame[frame["attack"] == "inverting_gradients"]
    names = sorted({name.removesuffix(" pseudo") for name, _ in modes if name.endswith(" pseudo")})
    for row in paired_table(modes, {f"{n} pseudo": f"{n} simulate" for n in names}, ("recovered", "mean_psnr")).itertuples():
        print(f"| {row.setting.removesuffix(' pseudo')} | {row.metric} | {row.mean_diff:+.2f} [{row.ci_low:+.2f}, {row.ci_high:+.2f}] | {row.n_seeds} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["rescore", "pseudo", "table"])
    parser.add_argument("study", type=Path)
    args = parser.parse_args()
    if args.command == "rescore":
        rescore(args.study)
    elif args.command == "pseudo":
        pseudo(args.study)
    else:
        table(args.study)


if __name__ == "__main__":
    main()
