"""The six threat-model settings of DESIGN.md section 1 on one config, side by side.

    python benchmarks/threat_models.py configs/location.yaml [--out runs/threats] [--set k=v ...]

Runs `fedsim run` once per setting (a real Flower/Ray simulation each) and prints, per
setting and attack, the leakage of the last round and the best round.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pandas as pd

SETTINGS = {
    "server passive": ["adversary.role=server", "adversary.mode=passive", "adversary.isolate=false"],
    "server gradient ascent": ["adversary.role=server", "adversary.mode=gradient-ascent", "adversary.isolate=false"],
    "server isolation": ["adversary.role=server", "adversary.mode=passive", "adversary.isolate=true"],
    "server isolation + ascent": ["adversary.role=server", "adversary.mode=gradient-ascent", "adversary.isolate=true"],
    "participant passive": ["adversary.role=participant", "adversary.mode=passive", "adversary.isolate=false"],
    "participant gradient ascent": ["adversary.role=participant", "adversary.mode=gradient-ascent", "adversary.isolate=false"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config")
    parser.add_argument("--out", type=Path, default=Path("runs/threat-models"))
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args()
    rows = []
    for setting, keys in SETTINGS.items():
        folder = args.out / setting.replace(" + ", "-").replace(" ", "-")
        if not (folder / "metrics" / "leakage.csv").exists() or '"complete"' not in (folder / "manifest.json").read_text():
            command = [sys.executable, "-m", "fedsim.cli", "run", args.config, "--out", str(folder)]
            for assignment in [*keys, *args.overrides]:
                command += ["--set", assignment]
            subprocess.run(["rm", "-rf", str(folder)], check=True)
            subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
        leakage = pd.read_csv(folder / "metrics" / "leakage.csv")
        accuracy = pd.read_csv(folder / "metrics" / "training.csv")["test_accuracy"].iloc[-1]
        for attack, group in leakage.groupby("attack", sort=False):
            last = group.iloc[-1]
            rows.append({"setting": setting, "attack": attack, "auc_last": last["auc"], "auc_best": group["auc"].max(),
                         "tpr@1e-3_last": last["tpr_at_fpr_1e-3"], "accuracy_last": last["accuracy"], "test_acc": accuracy})
    table = pd.DataFrame(rows)
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print()
    print(table.pivot(index="setting", columns="attack", values="auc_last").loc[list(SETTINGS)].to_string(float_format=lambda v: f"{v:.3f}"))


if __name__ == "__main__":
    main()
