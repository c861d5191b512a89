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
# # Audit a Flower app
#
# `examples/digits-app` is an ordinary Flower app (a Message-API ServerApp with FedAvg, a
# ClientApp training a small CNN on scikit-learn's digits) with a `[tool.fedsim]` table in its
# `pyproject.toml` naming its model and data function. `fedsim audit APP_DIR` runs it unchanged
# with a curious server in, records every round and measures the leakage; here the same through
# its Python entry point, `fedsim.app.audit.run_audit`, on the in-process engine.

# %%
import os
import tempfile
from pathlib import Path

import fedsim
from fedsim import Run
from fedsim.app.audit import run_audit
from fedsim.app.console import RunConsole

here = Path.cwd()
checkout = Path(fedsim.__file__).resolve().parents[1]  # the repository fedsim was installed from (pip install -e)
root = next(p for p in [here, *here.parents, checkout] if (p / "examples" / "digits-app" / "pyproject.toml").is_file())
app = root / "examples" / "digits-app"
print((app / "pyproject.toml").read_text().split("[tool.fedsim]")[1].strip())

# %%
work = Path(tempfile.mkdtemp(prefix="fedsim-audit-"))
os.chdir(work)  # the app saves its final model in the working folder, as under `flwr run`
folder = run_audit(app, overrides=["backend.engine=in-process", "attack_seeds=1"], out=work / "run",
                   console=RunConsole(quiet=True))
run = Run.open(folder)
print(run.status, "rounds", run.rounds, "clients", run.config.data.num_clients)

# %% [markdown]
# The audited run is an ordinary run folder: its leakage per round, its training curve and its
# report (`report.html`), readable by `fedsim attack` and `fedsim report` like any other.

# %%
leakage = run.table("metrics/leakage.csv")
print(leakage[["round", "attacker", "attack", "target", "auc", "auc_ci_low", "auc_ci_high"]].to_string(index=False))
print(run.table("metrics/training.csv")[["round", "test_accuracy", "test_loss"]].to_string(index=False))
print((folder / "report.html").is_file())
