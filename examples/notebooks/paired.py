# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Paired evidence across seeds
#
# Does isolating the victim (the server gives it a model chain of its own) make it leak more than
# passive observation? One run per setting cannot say: the split, the initial model and the
# client sampling all move with the seed. `fedsim sweep --seeds K --baseline KEY=VALUE` runs
# every setting on seeds 0..K-1 and compares each with its baseline *on the same seed*;
# `paired.csv` holds the mean difference with its 95% paired Student t interval. A claim that
# one setting leaks more should cite a row whose interval lies above 0.

# %%
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd

from fedsim import Run
from fedsim.core.config import quickstart_path
from fedsim.stats.paired import paired_interval

work = Path(tempfile.mkdtemp(prefix="fedsim-paired-"))
fedsim = [sys.executable, "-m", "fedsim.app.cli"]
command = [*fedsim, "sweep", str(quickstart_path()), "--grid", "adversary.isolate=false,true", "--seeds", "3",
           "--baseline", "adversary.isolate=false", "--out", str(work / "sweep"),
           "--set", "train.rounds=2", "--set", "backend.engine=in-process",
           "--set", "attacks=[loss]", "--set", "attack_seeds=1"]
print("fedsim sweep QUICKSTART " + " ".join(command[5:]))  # QUICKSTART: the config `fedsim run` uses by default
done = subprocess.run(command, capture_output=True, text=True)
print(done.stdout[-3000:])
assert done.returncode == 0, done.stderr[-2000:]

# %% [markdown]
# One run folder per setting and seed, then the comparison and the paired table.

# %%
print(sorted(p.name for p in (work / "sweep").iterdir() if p.is_dir() and "seed" in p.name))
paired = pd.read_csv(work / "sweep" / "paired.csv")
last = paired[paired["round"] == paired["round"].max()]
print(last[["setting", "attack", "metric", "mean_diff", "ci_low", "ci_high", "n_seeds"]].to_string(index=False))

# %% [markdown]
# The same interval by hand from the three runs of each setting: the difference per seed, then
# `fedsim.stats.paired.paired_interval` (a 95% Student t interval with n - 1 degrees of freedom).

# %%
def last_auc(folder):
    table = Run.open(folder).table("metrics/leakage.csv")
    return float(table.loc[table["round"] == table["round"].max(), "auc"].iloc[0])

seeds = range(3)
isolated = [last_auc(next((work / "sweep").glob(f"*isolate=true__seed={s}"))) for s in seeds]
passive = [last_auc(next((work / "sweep").glob(f"*isolate=false__seed={s}"))) for s in seeds]
mean, low, high = paired_interval(pd.Series(isolated).to_numpy() - pd.Series(passive).to_numpy())
print(f"isolated - passive, loss AUC: {mean:+.3f} [{low:+.3f}, {high:+.3f}] over {len(seeds)} seeds")
row = last[(last["attack"] == "loss") & (last["metric"] == "auc")].iloc[0]
assert abs(row["mean_diff"] - mean) < 1e-6 and abs(row["ci_low"] - low) < 1e-6

# %% [markdown]
# Read the row, not the means: with three seeds the t interval has two degrees of freedom and is
# wide. An interval that includes 0 supports no claim either way; more seeds (`--seeds 10`), or
# a setting that moves the AUC more, narrow it. The sweep folder also holds `comparison.csv` and
# a `report.html` with every run side by side.
