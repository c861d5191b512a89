"""Training throughput of the Nasr attack model, against the number of observed snapshots.

    python benchmarks/attack_training.py [--repeats 3]

Records a small digits federation (8 rounds, the fcn), then trains the white-box attack model
(last-layer gradients, loss, outputs, label) on the curious server's known records combining
1, 2, 4 and 8 snapshots, for a fixed number of epochs (no early stopping). Features are
extracted and cached first, so the time is the attack model's training alone. Prints examples
per second (records x epochs / s) and a BENCH line whose ratio is the time with 8 snapshots
over 8 times the time with one (1.0 is linear scaling; lower is better).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from attackers.inference.nasr import NasrAttack  # noqa: E402
from attackers.inference.threat_models import attacker_view  # noqa: E402
from fedsim.core.config import load_config  # noqa: E402
from fedsim.recording.run import Run  # noqa: E402

EPOCHS = 20
SNAPSHOTS = (1, 2, 4, 8)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    from fedsim.app.console import RunConsole
    from fedsim.app.experiment import run_experiment

    config = load_config(None, ["train.rounds=8", "attacks=[]", "data.records_per_client=200", "adversary.target_records=200"],
                         default_file=False)
    with tempfile.TemporaryDirectory() as scratch:
        view = attacker_view(Run.open(run_experiment(config, Path(scratch) / "run", console=RunConsole(quiet=True))))
        observation = view.observation
        for r in observation.rounds:
            observation.features(view.train_ids, r)
        n = len(view.train_ids)
        times = {}
        for k in SNAPSHOTS:
            observed = observation.up_to(observation.rounds[-1], observation.rounds[-k:])
            runs = []
            for _ in range(args.repeats):
                attack = NasrAttack(epochs=EPOCHS, patience=EPOCHS)
                started = time.perf_counter()
                attack.fit(observed, view.train_ids, view.train_members)
                runs.append(time.perf_counter() - started)
            times[k] = statistics.median(runs)
    rate = {k: n * EPOCHS / t for k, t in times.items()}
    print(f"BENCH attack-training ref=linear-in-snapshots ratio={times[8] / (8 * times[1]):.2f} "
          + " ".join(f"examples_per_s_{k}={rate[k]:.0f}" for k in SNAPSHOTS) + f" records={n} epochs={EPOCHS} threads={torch.get_num_threads()}")
    print(f"\n{'snapshots':>9} {'fit s':>8} {'examples/s':>11} {'s per snapshot':>15}")
    for k in SNAPSHOTS:
        print(f"{k:>9} {times[k]:>8.2f} {rate[k]:>11.0f} {times[k] / k:>15.3f}")


if __name__ == "__main__":
    main()
