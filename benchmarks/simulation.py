"""A simulated federation vs a bare single-process PyTorch loop doing the same work.

    python benchmarks/simulation.py [--repeats 3] [--data ../shared/data]

Compute-bound workload: MNIST CNN, 10 clients, 10 rounds, 1 local epoch, recording on, attacks
off. fedsim runs the real Flower simulation on Ray (clients in Ray actors, one CPU each); the
bare loop trains the same clients on the same records with the same seeds, one after another
in this process with all CPUs as torch threads, averages them (FedAvg) and evaluates centrally,
as fedsim does. Ray's start-up and shutdown are reported apart: `rounds` is the time from
the first round's start to the last round's evaluation (metrics/training.csv), `total` the
whole `fedsim run`. A tiny workload (10 records per client) gives the per-round overhead per
client message. The recorder's share of round time is read from its own timing.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fedsim.core.config import Config, load_config  # noqa: E402
from fedsim.engine.client_app import client_seed  # noqa: E402
from fedsim.learning.datasets import pool_for  # noqa: E402
from fedsim.learning.membership import UTILITY_TEST, build_ledger  # noqa: E402
from fedsim.learning.models import model_for  # noqa: E402
from fedsim.learning.training import evaluate, train_locally  # noqa: E402


def workload(data_root: Path, tiny: bool) -> Config:
    settings = ["adversary.role=none", "attacks=[]", "train.rounds=10", "train.local_epochs=1", "data.num_clients=10",
                "data.nonmembers=0", "train.lr=0.05"]
    if tiny:
        settings += ["data.records_per_client=10", "data.test_records=100", "model.args={hidden: [16]}", "name=tiny"]
    else:
        settings += ["data.dataset=mnist", f"data.root={data_root}", "model.name=mnist_cnn", "model.args={}",
                     "data.records_per_client=500", "data.test_records=1000", "name=mnist-bench"]
    return load_config(None, settings, default_file=False)


def run_fedsim(config: Config, out: Path) -> dict[str, float]:
    from fedsim.app.console import RunConsole
    from fedsim.app.experiment import run_experiment

    started = time.perf_counter()
    folder = run_experiment(config, out, console=RunConsole(quiet=True))
    total = time.perf_counter() - started
    training = pd.read_csv(folder / "metrics/training.csv")
    rounds = training[training["round"] >= 1]
    return {"total": total, "rounds": float(rounds["seconds"].sum()), "record": float(rounds["record_seconds"].sum())}


def run_bare(config: Config) -> float:
    """The same local training, FedAvg and central evaluation, in one process."""
    torch.set_num_threads(os.cpu_count() or 1)
    pool = pool_for(config.data)
    ledger = build_ledger(config, pool)
    members = ledger[ledger["member"]]
    clients = {int(c): pool.take(g["record_id"].to_numpy()) for c, g in members.groupby("client")}
    test = pool.take(ledger.loc[ledger["role"] == UTILITY_TEST, "record_id"].to_numpy())
    torch.manual_seed(config.seed)
    model = model_for(config)
    started = time.perf_counter()
    evaluate(model, *test)
    for server_round in range(1, config.train.rounds + 1):
        global_state = {k: v.clone() for k, v in model.state_dict().items()}
        states, weights = [], []
        for partition, (x, y) in sorted(clients.items()):
            model.load_state_dict(global_state)
            seed = client_seed(config.seed, server_round, partition)
            torch.manual_seed(seed)
            train_locally(model, x, y, config.train, seed)
            states.append({k: v.clone() for k, v in model.state_dict().items()})
            weights.append(len(y))
        total = sum(weights)
        model.load_state_dict({k: sum(w / total * s[k] for w, s in zip(weights, states)) for k in global_state})
        evaluate(model, *test)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    args = parser.parse_args()
    if not (args.data / "MNIST").exists():
        sys.exit(f"MNIST not found under {args.data}; pass --data")
    results = {}
    with tempfile.TemporaryDirectory() as scratch:
        for tiny in (False, True):
            config = workload(args.data.resolve(), tiny)
            fedsim_runs, bare_runs = [], []
            for repeat in range(args.repeats):  # interleaved, so drift on a noisy machine hits both alike
                fedsim_runs.append(run_fedsim(config, Path(scratch) / f"{config.name}-{repeat}"))
                bare_runs.append(run_bare(config))
            results[config.name] = (fedsim_runs, bare_runs, config)
    lines = []
    fedsim_runs, bare_runs, config = results["mnist-bench"]
    rounds = statistics.median(r["rounds"] for r in fedsim_runs)
    total = statistics.median(r["total"] for r in fedsim_runs)
    bare = statistics.median(bare_runs)
    record = statistics.median(r["record"] / r["rounds"] for r in fedsim_runs)
    print(f"BENCH simulation ref=bare-pytorch-loop ratio={rounds / bare:.2f} fedsim_rounds_s={rounds:.1f} bare_s={bare:.1f} "
          f"fedsim_total_s={total:.1f} ray_startup_and_shutdown_s={total - rounds:.1f} record_share={record:.3f}")
    lines.append(("MNIST CNN, 10 clients x 500, 10 rounds", rounds, bare, total))
    fedsim_runs, bare_runs, config = results["tiny"]
    rounds = statistics.median(r["rounds"] for r in fedsim_runs)
    bare = statistics.median(bare_runs)
    messages = config.train.rounds * config.data.num_clients
    overhead_ms = 1000 * (rounds - bare) / messages
    print(f"BENCH message-overhead ref=bare-pytorch-loop ratio={rounds / bare:.2f} per_client_message_ms={overhead_ms:.1f} "
          f"fedsim_rounds_s={rounds:.2f} bare_s={bare:.3f}")
    lines.append(("tiny: 10 clients x 10 records, 10 rounds", rounds, bare, statistics.median(r["total"] for r in fedsim_runs)))
    print(f"\n{'workload':<42} {'fedsim rounds s':>16} {'bare loop s':>12} {'ratio':>7} {'fedsim total s':>15}")
    for name, fed, ref, whole in lines:
        print(f"{name:<42} {fed:>16.2f} {ref:>12.2f} {fed / ref:>7.2f} {whole:>15.2f}")


if __name__ == "__main__":
    main()
