"""Summarise recorded runs for the README's "Modern attacks and the privacy audit" tables.

    python research/privacy_audit.py strength RUN_DIR...        # one run per seed, same setting
    python research/privacy_audit.py dp RUN_DIR...              # DP-SGD runs (any noise, any seed)
    python research/privacy_audit.py plot RUN_DIR OUT.png       # the report's privacy-audit figure
    python research/privacy_audit.py pair A.csv B.csv ATTACK[:ATTACK_B] RUN_DIR...   # two leakage files
    python research/privacy_audit.py references RUN_DIR...      # how much membership the references hold

`strength`: every attack side by side (mean and standard deviation over the runs' last round:
TPR at FPR 1e-2 and 1e-3 where measurable, i.e. with >= 1/FPR non-member targets, AUC,
epsilon_empirical), then the paired difference per seed of each calibrated attack against
`loss` and `trajectory` in TPR at FPR 1e-2 and in AUC, with a two-sided 95% t interval (scipy).
`dp`: per noise multiplier and round, the accountant's epsilon, the best attack's empirical
epsilon (highest over attacks, mean and max over seeds; not a DP lower bound, the targets are not
independent trials), test accuracy, and how many (run, round, attack) rows exceed the
accountant's epsilon.
`pair`: one attack's last-round TPR at FPR 1e-2 and AUC in RUN/A.csv minus RUN/B.csv (e.g. two
argument settings of fedmia, attacked separately), paired per run, 95% t interval; with
ATTACK:ATTACK_B, attack ATTACK of A against ATTACK_B of B.
`references`: per round, the AUC over the targets of the reference clients' mean logit-scaled
confidence (what lira calibrates against; in FL they started from an aggregate holding the
victim's earlier updates, so they are not clean OUT models) beside the victim's, and over the
runs the last round's reference AUC minus 0.5 (t interval) and minus the first observed round's
(paired); it reads the models.
Nothing here runs a simulation; it reads metrics/*.csv of complete runs (leakage-final.csv in a
run folder, where present, stands for metrics/leakage.csv: the run attacked again afterwards with
`fedsim attack RUN --out RUN/leakage-final.csv`).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd

from attackers.inference.audit import accountant_epsilon, renamed_columns
from fedsim.recording.run import Run
from fedsim.stats.paired import paired_interval

CALIBRATED = ("fedmia", "lira", "rmia", "grad_cosine")  # compared with the baselines below
BASELINES = ("loss", "trajectory")


def _leakage(folder: str) -> pd.DataFrame:
    final = Path(folder) / "leakage-final.csv"
    return renamed_columns(pd.read_csv(final if final.exists() else Path(folder) / "metrics/leakage.csv"))


def _last_round(folder: str) -> pd.DataFrame:
    leakage = _leakage(folder)
    return leakage[leakage["round"] == leakage["round"].max()].set_index("attack")


def _paired_cells(differences: np.ndarray) -> str:
    """'mean | [low, high] | wins / runs' of per-run differences (95% paired t interval)."""
    mean, low, high = paired_interval(differences)
    return f"{mean:+.3f} | [{low:+.3f}, {high:+.3f}] | {(differences > 0).sum()} / {len(differences)}"


def strength(folders: list[str]) -> None:
    rows = {folder: _last_round(folder) for folder in folders}
    attacks = [a for a in next(iter(rows.values())).index if all(a in r.index for r in rows.values())]
    for folder, r in rows.items():
        if missing := sorted(set(r.index) ^ set(attacks)):
            print(f"note: {folder}: attacks {', '.join(missing)} not in every run, left out", file=sys.stderr)
    print(f"{len(folders)} runs, last round {int(next(iter(rows.values()))['round'].iloc[0])}\n")
    print("| attack | TPR@1e-2 | TPR@1e-3 | AUC | epsilon_empirical |")
    print("| --- | --- | --- | --- | --- |")
    for attack in attacks:
        cells = []
        for column, fpr in (("tpr_at_fpr_1e-2", 1e-2), ("tpr_at_fpr_1e-3", 1e-3), ("auc", None), ("epsilon_empirical", None)):
            values = np.array([r.loc[attack, column] for r in rows.values()], dtype=float)
            measurable = fpr is None or all(r.loc[attack, "n_nonmembers"] >= 1 / fpr for r in rows.values())
            cells.append(f"{values.mean():.3f} +- {values.std(ddof=1):.3f}" if measurable else
                         f"not measurable ({int(next(iter(rows.values())).loc[attack, 'n_nonmembers'])} non-members)")
        print(f"| {attack} | " + " | ".join(cells) + " |")
    for column, label in (("tpr_at_fpr_1e-2", "TPR at FPR 1e-2"), ("auc", "AUC")):
        print(f"\npaired differences in {label} (per seed, 95% t interval):\n")
        print("| attack - baseline | mean difference | 95% interval | wins / seeds |")
        print("| --- | --- | --- | --- |")
        for attack in [a for a in CALIBRATED if a in attacks]:
            for baseline in [b for b in BASELINES if b in attacks]:
                d = np.array([r.loc[attack, column] - r.loc[baseline, column] for r in rows.values()])
                print(f"| {attack} - {baseline} | {_paired_cells(d)} |")


def dp(folders: list[str]) -> None:
    records = []
    for folder in folders:
        run = Run.open(folder)
        training = pd.read_csv(Path(folder) / "metrics/training.csv")
        leakage = _leakage(folder)
        accountant = accountant_epsilon(run.config, training).set_index("round")["epsilon"]
        accuracy = training.set_index("round")["test_accuracy"]
        noise = run.config.defense.dp_sgd.noise_multiplier if run.config.defense.dp_sgd else float("nan")
        for round_number, rows in leakage.groupby("round"):
            best = rows.loc[rows["epsilon_empirical"].idxmax()]
            records.append({"noise": noise, "seed": run.config.seed, "round": round_number,
                            "accountant": accountant.get(round_number, np.inf), "best_lb": best["epsilon_empirical"],
                            "best_attack": best["attack"], "best_point": best["epsilon_empirical_point"],
                            "best_canary": rows["canary_epsilon_lower_bound"].max(), "accuracy": accuracy[round_number],
                            "violations": int((rows["epsilon_empirical"] > accountant.get(round_number, np.inf)).sum()),
                            "rows": len(rows), "best_auc": rows["auc"].max()})
    table = pd.DataFrame(records)
    print("| noise | round | accountant epsilon | best empirical epsilon: mean (max) over seeds "
          "| best attacks | test accuracy | best AUC | rows above the accountant |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for (noise, round_number), group in table.groupby(["noise", "round"]):
        attacks = ", ".join(sorted(set(group["best_attack"])))
        print(f"| {noise:g} | {round_number} | {group['accountant'].mean():.3g} | {group['best_lb'].mean():.3f} ({group['best_lb'].max():.3f}) "
              f"| {attacks} | {group['accuracy'].mean():.3f} | {group['best_auc'].mean():.3f} | {group['violations'].sum()} / {group['rows'].sum()} |")


def pair(args: list[str]) -> None:
    """One attack in two leakage files of each run (A minus B), paired over the runs; ATTACK_A:ATTACK_B
    compares two attacks (e.g. lira with its arguments in A against trajectory in B)."""
    first, second, attack, folders = args[0], args[1], args[2], args[3:]
    attack_a, _, attack_b = attack.partition(":")
    rows = []
    for folder in folders:
        a, b = (pd.read_csv(Path(folder) / name) for name in (first, second))
        a, b = (t[(t["round"] == t["round"].max()) & (t["attack"] == name)].iloc[0] for t, name in ((a, attack_a), (b, attack_b or attack_a)))
        rows.append((a["tpr_at_fpr_1e-2"], b["tpr_at_fpr_1e-2"], a["auc"], b["auc"]))
    values = np.array(rows, dtype=float)
    print(f"{len(folders)} runs, {attack}: {first} minus {second}\n")
    print("| metric | A | B | A - B | 95% interval | A wins / runs |")
    print("| --- | --- | --- | --- | --- | --- |")
    for label, i in (("TPR@1e-2", 0), ("AUC", 2)):
        print(f"| {label} | {values[:, i].mean():.3f} | {values[:, i + 1].mean():.3f} | {_paired_cells(values[:, i] - values[:, i + 1])} |")


def references(folders: list[str]) -> None:
    """Membership in the reference models: AUC of their mean scaled confidence per round, paired over runs."""
    from sklearn.metrics import roc_auc_score

    from attackers.inference.calibrated import outputs, scaled_confidence
    from attackers.inference.threat_models import attacker_view

    if not folders:
        raise SystemExit("references: give one or more run folders of the same setting")
    per_run, rounds = [], None
    for folder in folders:
        view = attacker_view(Run.open(folder))
        if view is None or view.observation.reference_models is None:
            raise SystemExit(f"{folder}: not a curious server that sees individual updates (no reference models)")
        if rounds is not None and view.observation.rounds != rounds:
            raise SystemExit(f"{folder}: observed rounds {view.observation.rounds}, the first run {rounds}; give runs of one setting")
        rounds = view.observation.rounds
        aucs = []
        for round_number in view.observation.rounds:
            target, reference, labels = outputs(view.observation, view.eval_ids, round_number)
            aucs.append((roc_auc_score(view.eval_members, scaled_confidence(reference, labels).mean(0)),
                         roc_auc_score(view.eval_members, scaled_confidence(target, labels))))
        per_run.append(aucs)
    values = np.array(per_run, dtype=float)  # (runs, rounds, 2)
    assert rounds is not None
    print(f"{len(folders)} runs: AUC over the targets of the mean logit-scaled confidence, mean over runs\n")
    print("| round | reference clients' models | victim's model |")
    print("| --- | --- | --- |")
    for i, round_number in enumerate(rounds):
        print(f"| {round_number} | {values[:, i, 0].mean():.3f} | {values[:, i, 1].mean():.3f} |")
    for label, d in ((f"references, round {rounds[-1]} - 0.5", values[:, -1, 0] - 0.5),
                     (f"references, round {rounds[-1]} - round {rounds[0]}", values[:, -1, 0] - values[:, 0, 0])):
        mean, low, high = paired_interval(d)
        print(f"\n{label}: {mean:+.3f} [{low:+.3f}, {high:+.3f}] (95% t interval over {len(d)} runs)", end="")
    print()


def plot(folder: str, out: str) -> None:
    """The report's privacy-audit figure of one run, from its leakage-final.csv (or leakage.csv)."""
    from fedsim.report import plots

    run = Run.open(folder)
    training = pd.read_csv(Path(folder) / "metrics/training.csv")
    figure = plots.privacy_audit(_leakage(folder), accountant_epsilon(run.config, training), run.config.headline_attack())
    Path(out).write_bytes(plots.png(figure))


if __name__ == "__main__":
    if sys.argv[1] == "plot":
        plot(sys.argv[2], sys.argv[3])
    else:
        {"strength": strength, "dp": dp, "pair": pair, "references": references}[sys.argv[1]](sys.argv[2:])
