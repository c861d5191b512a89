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
# # Does my strategy leak?
#
# A curious server watches client 0 of a small federation on scikit-learn's digits and attacks
# every recorded round. `fedsim.simulate` runs the federation (Flower's ServerApp and ClientApp,
# here on the in-process engine: no Ray to start) and records it; `fedsim.measure` attacks the
# recorded run, as `fedsim attack` does; the plot shows how each attack's AUC moves with the
# rounds. Change `STRATEGY` (any name of the strategy registry, or `package.module:Class`) to ask
# the same of your own aggregation.

# %%
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt

import fedsim

STRATEGY = "fedavg"
work = Path(tempfile.mkdtemp(prefix="fedsim-leak-"))
run = fedsim.simulate(
    overrides=[f"strategy.name={STRATEGY}", "train.rounds=4", "backend.engine=in-process",
               "attacks=[loss,trajectory]", "attack_seeds=1"],
    out=work / "run", quiet=True,
)
print(run.status, "rounds", run.rounds)
print(run.table("metrics/training.csv")[["round", "test_accuracy", "train_loss"]].to_string(index=False))

# %% [markdown]
# The run already holds its leakage rows (`metrics/leakage.csv`). `fedsim.measure` computes them
# again from the records alone, for the attacks and rounds you name; with the same attacks the
# rows are the same.

# %%
rows = fedsim.measure(run, attacks=["loss", "trajectory"], quiet=True)
columns = ["round", "attack", "auc", "auc_ci_low", "auc_ci_high", "n_members", "n_nonmembers"]
print(rows[columns].to_string(index=False))
recorded = run.table("metrics/leakage.csv")
assert (rows["auc"].round(6).to_numpy() == recorded["auc"].round(6).to_numpy()).all()

# %% [markdown]
# AUC per round, with its 95% bootstrap interval over the targets. 0.5 is chance: an attack
# above it tells the server's victim's members from records it never trained on.

# %%
fig, ax = plt.subplots(figsize=(6, 3.5))
for attack, curve in rows.groupby("attack"):
    ax.plot(curve["round"], curve["auc"], marker="o", label=attack)
    ax.fill_between(curve["round"], curve["auc_ci_low"], curve["auc_ci_high"], alpha=0.2)
ax.axhline(0.5, color="grey", linestyle="--", linewidth=1)
ax.set_xlabel("round")
ax.set_ylabel("AUC (membership)")
ax.set_xticks(sorted(rows["round"].unique()))
ax.set_title(f"curious server on client 0, strategy {STRATEGY}")
ax.legend()
plt.show()
