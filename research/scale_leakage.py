"""Leakage as the federation grows (docs/results/scale.md): the seeds, and the table and plot of two sweeps.

    python research/scale_leakage.py seeds [--round 5] [--count 5] [--victim 0] [--clients 20,100,1000] [--sampled 10]
    python research/scale_leakage.py summary runs/scale-size runs/scale-sampled --round 5 --plot docs/results/scale.png

`seeds`: the first seeds under which client `--victim` is among the `--sampled` clients of round
`--round` at every `--clients` size. fedsim's RoundClock seeds Python's `random` with
`round_seed(seed, round)` and Flower's FedAvg then draws `random.sample(nodes, k)` over the nodes
in partition order, so the sampled partition ids are `random.sample(range(N), k)`. The choice reads
the client sampling only (no model, no record); each run's manifest (`victim_rounds`) confirms it.

`summary`: per grid point and view, the mean over seeds of each attack's AUC and TPR at the fixed
round with its 95% t interval (`fedsim.stats.paired.paired_interval` on one value per seed), the
rounds the victim was sampled in per run (manifest), the final test accuracy; then the paired.csv
rows of the sweeps at that round; and the plot. The paired differences are the sweeps' own
(`fedsim sweep --baseline`); this script computes none.
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

import pandas as pd

from fedsim.engine.server_app import round_seed
from fedsim.recording.run import Run
from fedsim.stats.paired import paired_interval

ATTACKS = ("loss", "grad_norm")
METRICS = ("auc", "tpr_at_fpr_1e-2", "tpr_at_fpr_1e-3")


def sampled(seed: int, round_number: int, clients: int, k: int) -> list[int]:
    """The partition ids FedAvg samples in a round (k of `clients`), as fedsim's server draws them."""
    random.seed(round_seed(seed, round_number))
    return random.sample(range(clients), min(k, clients))


def victim_seeds(round_number: int, count: int, victim: int, sizes: list[int], k: int, limit: int = 1_000_000) -> list[int]:
    """The first `count` seeds under which `victim` is sampled in `round_number` at every size."""
    found = []
    for seed in range(limit):
        if all(victim in sampled(seed, round_number, n, k) for n in sizes):
            found.append(seed)
            if len(found) == count:
                break
    return found


def collect(sweeps: list[Path], round_number: int) -> pd.DataFrame:
    """One row per run, attack and metric at `round_number`: the grid values, seed, value, victim rounds."""
    rows = []
    for sweep in sweeps:
        for folder in sorted(p for p in sweep.iterdir() if p.is_dir() and Run.status_of(p) == "complete"):
            run = Run.open(folder)
            config = run.config
            leakage = pd.read_csv(folder / "metrics" / "leakage.csv")
            training = pd.read_csv(folder / "metrics" / "training.csv")
            point = {
                "sweep": sweep.name, "clients": config.data.num_clients,
                "sampled": len(run.manifest.rounds[round_number].sampled()),
                "view": "aggregate (secure aggregation)" if config.defense.secure_aggregation else "individual updates",
                "seed": config.seed, "victim_rounds": " ".join(map(str, run.manifest.victim_rounds or [])) or "none",
                "test_accuracy": float(training["test_accuracy"].iloc[-1]),
            }
            for attack in ATTACKS:
                row = leakage[(leakage["attack"] == attack) & (leakage["round"] == round_number)]
                for metric in METRICS:
                    value = float(row[metric].iloc[0]) if len(row) else float("nan")
                    rows.append(point | {"attack": attack, "metric": metric, "value": value,
                                         "n_members": int(row["n_members"].iloc[0]) if len(row) else 0,
                                         "n_nonmembers": int(row["n_nonmembers"].iloc[0]) if len(row) else 0})
    return pd.DataFrame(rows)


def means(runs: pd.DataFrame) -> pd.DataFrame:
    """Mean over seeds and 95% t interval per (clients, sampled, view, attack, metric)."""
    rows = []
    keys = ["clients", "sampled", "view", "attack", "metric"]
    for key, group in runs.groupby(keys, sort=True):
        mean, low, high = paired_interval(group["value"].to_numpy())
        rows.append(dict(zip(keys, key)) | {"mean": mean, "ci_low": low, "ci_high": high, "n_seeds": int(group["value"].notna().sum()),
                                            "seeds": " ".join(str(s) for s in sorted(group["seed"]))})
    return pd.DataFrame(rows)


def plot(table: pd.DataFrame, out: Path, round_number: int) -> None:
    """AUC and TPR at FPR 1e-2 against N per view and attack, 10 sampled a round (lines) and all
    sampled (open markers), each a mean over seeds with its 95% t interval."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    views = {"individual updates": ("tab:red", "o", 0.95), "aggregate (secure aggregation)": ("tab:blue", "s", 1.05)}  # x nudged apart
    fig, axes = plt.subplots(2, 2, figsize=(10, 7.5), sharex=True)
    for row, attack in enumerate(ATTACKS):
        for col, (metric, label, chance) in enumerate((("auc", "AUC", 0.5), ("tpr_at_fpr_1e-2", "TPR at FPR 1e-2", 0.01))):
            ax = axes[row, col]
            for view, (color, marker, nudge) in views.items():
                part = table[(table["attack"] == attack) & (table["metric"] == metric) & (table["view"] == view)]
                ten = part[part["sampled"] == 10].sort_values("clients")
                full = part[(part["sampled"] == part["clients"]) & (part["clients"] > 10)]
                for points, fill, name in ((ten, color, f"{view}, 10 a round"), (full, "white", f"{view}, all sampled")):
                    if points.empty:
                        continue
                    err = [points["mean"] - points["ci_low"], points["ci_high"] - points["mean"]]
                    ax.errorbar(points["clients"] * nudge, points["mean"], yerr=err, color=color, marker=marker, markerfacecolor=fill,
                                linestyle="-" if fill == color else "none", capsize=4, label=name)
            ax.axhline(chance, color="grey", linewidth=0.8, linestyle=":")
            ax.set_xscale("log")
            ax.set_xticks([10, 100, 1000], ["10", "100", "1,000"])
            ax.set_title(f"{attack}: {label} at round {round_number}")
            if row == 1:
                ax.set_xlabel("clients in the federation (N)")
    axes[0, 0].legend(fontsize=8)
    fig.suptitle("MNIST CNN, 50 records a client, victim sampled in the last round; mean over seeds, 95% t interval")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    seeds = sub.add_parser("seeds", help="seeds under which the victim is sampled in a given round")
    seeds.add_argument("--round", type=int, default=5)
    seeds.add_argument("--count", type=int, default=5)
    seeds.add_argument("--victim", type=int, default=0)
    seeds.add_argument("--clients", default="20,100,1000")
    seeds.add_argument("--sampled", type=int, default=10)
    summary = sub.add_parser("summary", help="means with intervals, paired rows and the plot of the sweeps")
    summary.add_argument("sweeps", nargs="+", type=Path)
    summary.add_argument("--round", type=int, default=5)
    summary.add_argument("--plot", type=Path)
    args = parser.parse_args(argv)
    if args.command == "seeds":
        print(",".join(map(str, victim_seeds(args.round, args.count, args.victim, [int(n) for n in args.clients.split(",")], args.sampled))))
        return
    runs = collect(args.sweeps, args.round)
    pd.set_option("display.width", 250)
    pd.set_option("display.max_rows", 500)
    print(runs[(runs["attack"] == ATTACKS[0]) & (runs["metric"] == "auc")]
          .drop(columns=["attack", "metric"]).sort_values(["sweep", "clients", "sampled", "view", "seed"]).to_string(index=False))
    table = means(runs)
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    accuracy = runs.drop_duplicates(["sweep", "clients", "sampled", "view", "seed"]).groupby(["clients", "sampled", "view"])["test_accuracy"]
    print(accuracy.mean().to_string(float_format=lambda v: f"{v:.3f}"))
    for sweep in args.sweeps:
        for paired in sorted(sweep.glob("paired*.csv")):
            rows = pd.read_csv(paired)
            rows = rows[(rows["round"] == args.round) | (rows["attack"] == "utility")]
            print(f"\n{paired}")
            print(rows.to_string(index=False, float_format=lambda v: f"{v:+.3f}"))
    if args.plot:
        plot(table, args.plot, args.round)


if __name__ == "__main__":
    main()
