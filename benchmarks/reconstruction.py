"""Per-round time of each reconstruction attack against the round's training time on the same model.

    python benchmarks/reconstruction.py [--data ../shared/data] [--repeats 3]

Records two one-round MNIST federations of configs/reconstruction-mnist.yaml at 4 clients x 8
records, batch 4, one local epoch (2 SGD steps; fcn 784-256-128-10 with ReLU,
in-process engine): a passive curious server, and a crafted-model server (the imprint reads only
crafted rounds). Then times, on the victim's round-1 update as the server holds it:

- `inverting_gradients` at the budget of docs/results/reconstruction.md (100 iterations, 1 restart),
  replaying the two local steps (`simulate`) and as one pseudo-gradient (`pseudo-gradient`);
- `imprint` on the crafted round;

each the attack's `reconstruct(task)` alone (the task built beforehand, no scoring), against the
victim's local training on the same model (`fedsim.learning.training.train_locally`, the 8
records, the run's schedule) and the whole round as training.csv's `seconds` records it (4
clients one after another, aggregation, recording, central evaluation). Medians over the repeats.
BENCH ratio: attack time / the victim's local training time. Without MNIST under --data the
built-in 8x8 digits stand in (said in the BENCH line).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Any

import pandas as pd
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from attackers.inference.reconstruction.base import RECONSTRUCTIONS  # noqa: E402
from attackers.inference.reconstruction.measure import members_of, reconstruction_view  # noqa: E402
from fedsim.core.config import load_config  # noqa: E402
from fedsim.core.layout import TRAINING_CSV  # noqa: E402
from fedsim.learning.training import train_locally  # noqa: E402
from fedsim.recording.run import Run  # noqa: E402

CONFIG = ROOT / "configs" / "reconstruction-mnist.yaml"
BUDGET = {"iterations": 100, "restarts": 1, "lr": 0.1, "tv": 0.001}
POINT = ["data.records_per_client=8", "train.batch_size=4"]  # 2 local steps: the replay and the pseudo-gradient differ
ATTACKS: tuple[tuple[str, str, dict[str, Any], bool], ...] = (
    ("inverting_gradients-simulate", "inverting_gradients", {**BUDGET, "local_steps": "simulate"}, False),
    ("inverting_gradients-pseudo-gradient", "inverting_gradients", {**BUDGET, "local_steps": "pseudo-gradient"}, False),
    ("imprint", "imprint", {}, True),
)


def median_seconds(work, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def record(folder: Path, data: Path, crafted: bool) -> Run:
    from fedsim.app.console import RunConsole
    from fedsim.app.experiment import run_experiment

    dataset = [f"data.root={data}"] if (data / "MNIST").exists() else ["data.dataset=digits", "data.root=null"]
    mode = ["adversary.mode=crafted-model"] if crafted else []
    config = load_config(CONFIG, [*POINT, *dataset, *mode, "attacks=[]", "reconstructions=[]"])
    return Run.open(run_experiment(config, folder, console=RunConsole(quiet=True)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    data = args.data.resolve()
    with tempfile.TemporaryDirectory() as scratch:
        runs = {crafted: record(Path(scratch) / f"run-{crafted}", data, crafted) for crafted in (False, True)}
        passive = runs[False]
        victim = passive.config.adversary.victim
        x, y = passive.records(members_of(passive, [victim]))
        view = reconstruction_view(passive)
        assert view is not None

        models = iter([view.task(1).model.train() for _ in range(args.repeats)])  # each repeat trains a fresh copy of the sent model

        def local_training() -> None:
            train_locally(next(models), x, y, passive.config.train, seed=0)

        train_s = median_seconds(local_training, args.repeats)
        round_s = float(pd.read_csv(passive.folder / TRAINING_CSV).set_index("round").loc[1, "seconds"])
        dataset = passive.config.data.dataset
        print(f"{'attack':<36} {'attack s':>9} {'/ local training':>17} {'/ round':>8}")
        lines = []
        for label, name, params, crafted in ATTACKS:
            attack_view = reconstruction_view(runs[crafted])
            assert attack_view is not None
            task = attack_view.task(1)
            seconds = median_seconds(partial(RECONSTRUCTIONS[name](params, 0).reconstruct, task), args.repeats)
            print(f"{label:<36} {seconds:>9.3f} {seconds / train_s:>17.1f} {seconds / round_s:>8.1f}")
            lines.append(f"BENCH reconstruction-{label} ref=victim-local-training ratio={seconds / train_s:.1f} attack_s={seconds:.3f} "
                         f"train_s={train_s:.4f} round_s={round_s:.3f} records={task.n_records} dataset={dataset} "
                         f"threads={torch.get_num_threads()}")
        print(f"\nvictim's local training {train_s:.4f} s ({len(y)} records, batch {passive.config.train.batch_size}); "
              f"round 1 {round_s:.3f} s (training.csv)")
        print("\n".join(lines))


if __name__ == "__main__":
    main()
