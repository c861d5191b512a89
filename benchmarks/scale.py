"""Cross-device scale: round time, peak memory and disk per round against clients connected and sampled.

    python benchmarks/scale.py [--data ../shared/data] [--rounds 4] [--repeats 1]

fedsim's server should cost per round what the clients sampled that round cost, whatever the
number of clients connected. Each point runs in a fresh process (its peak RSS is its own): the
in-process engine with the MNIST CNN (50 records a client, one local epoch, FedAvg with
`fraction_train` = sampled / total, a passive curious server, recording on) at 10, 100 and 1,000
clients with 10 sampled, and at 1,000 clients with 10, 50 and 100 sampled; the disk per round
under each `record.clients` policy; and a bare loop doing the same local training and FedAvg on
the same records with the same seeds and thread count. Round time is the median over rounds 2..R
of training.csv's `seconds` (training, aggregation, recording, central evaluation); the bare
loop's the median over the same rounds; a first, discarded point warms the caches. Synthetic MNIST-shaped records stand in when --data has
no MNIST. The Ray engine is not measured here (benchmarks/simulation.py compares it with a bare
loop at 10 clients).

BENCH lines, ratios measured side by side in one invocation: round time at 1,000 / at 10 clients
(target <= 1.2), peak RSS at 1,000 / at 10 (<= 1.5), in-process engine / bare loop at 10 sampled
(<= 1.5), round time at 100 sampled / (10 x at 10 sampled) (linear: about 1), disk per round of
each policy.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

RECORDS = 50  # records a client holds, as in the acceptance run (README, "Cross-device scale")


def config_for(point: dict, data_root: Path, rounds: int):
    from fedsim.core.config import load_config

    total, sampled = point["total"], point["sampled"]
    policy = {"all": [], "victim": ["record.clients=victim"], "victim+2": ["record.clients=victim", "record.references=2"]}[point["policy"]]
    return load_config(None, [
        "name=scale", "data.dataset=mnist", f"data.root={data_root}", "model.name=mnist_cnn", "model.args={}",
        f"data.num_clients={total}", f"data.records_per_client={RECORDS}", "data.nonmembers=400", "data.test_records=500",
        f"train.rounds={rounds}", "train.local_epochs=1", "train.lr=0.05", f"strategy.args={{fraction_train: {sampled / total!r}}}",
        "adversary.target_records=20", "attacks=[]", "backend.engine=in-process", *policy,
    ], default_file=False)


def run_engine(point: dict, data_root: Path, rounds: int, folder: Path) -> dict:
    """fedsim's in-process engine, without attacks or report: the rounds as `fedsim run` drives them."""
    from attackers.active.adversary import server_wrapper
    from fedsim.app.experiment import client_app_for, prepare
    from fedsim.engine.inprocess import run_in_process
    from fedsim.engine.server_app import ServerPlan, make_server_app
    from fedsim.learning.datasets import pool_for
    from fedsim.learning.membership import UTILITY_TEST, save_ledger
    from fedsim.recording.recorder import Recorder

    config = config_for(point, data_root, rounds)
    started = time.perf_counter()
    ledger, model, strategy = prepare(config)
    recorder = Recorder(folder, config)
    recorder.start(lambda where: save_ledger(ledger, where))
    test = pool_for(config.data).take(ledger.loc[ledger["role"] == UTILITY_TEST, "record_id"].to_numpy())
    rows: list[dict] = []
    plan = ServerPlan(strategy, recorder, config.data.num_clients, model, test, rounds, config.seed, on_round=rows.append,
                      adversary=server_wrapper(config, ledger), threads=config.backend.cpus_per_client)
    setup = time.perf_counter() - started
    run_in_process(make_server_app(plan), client_app_for(config, ledger), config.data.num_clients)
    if plan.error is not None:
        raise plan.error
    per_round = [r["seconds"] for r in rows if r["round"] >= 2]
    disk = [sum(p.stat().st_size for p in (folder / "rounds" / f"{r:04d}").rglob("*") if p.is_file()) for r in range(1, rounds + 1)]
    heard = [len(recorder.manifest.rounds[r].clients) for r in range(1, rounds + 1)]
    return {"round_s": statistics.median(per_round), "setup_s": setup, "disk_per_round": statistics.mean(disk), "heard": heard,
            "victim_rounds": recorder.manifest.victim_rounds,
            "client_file": (folder / "rounds/0000/global.safetensors").stat().st_size}


def run_bare(point: dict, data_root: Path, rounds: int) -> dict:
    """The same clients sampled, local training, FedAvg and central evaluation in a plain loop."""
    import random

    import torch

    from fedsim.engine.client_app import client_seed
    from fedsim.engine.server_app import round_seed
    from fedsim.learning.datasets import pool_for
    from fedsim.learning.membership import UTILITY_TEST, build_ledger
    from fedsim.learning.models import model_for
    from fedsim.learning.training import evaluate, torch_threads, train_locally

    config = config_for(point, data_root, rounds)
    pool = pool_for(config.data)
    ledger = build_ledger(config, pool)
    members = ledger[ledger["member"]]
    clients = {int(c): g["record_id"].to_numpy() for c, g in members.groupby("client")}
    test = pool.take(ledger.loc[ledger["role"] == UTILITY_TEST, "record_id"].to_numpy())
    torch.manual_seed(config.seed)
    model = model_for(config)
    times = []
    with torch_threads(config.backend.cpus_per_client):
        for server_round in range(1, rounds + 1):
            started = time.perf_counter()
            random.seed(round_seed(config.seed, server_round))
            chosen = sorted(random.sample(range(config.data.num_clients), point["sampled"]))
            global_state = {k: v.clone() for k, v in model.state_dict().items()}
            states, weights = [], []
            for partition in chosen:
                x, y = pool.take(clients[partition])
                model.load_state_dict(global_state)
                seed = client_seed(config.seed, server_round, partition)
                torch.manual_seed(seed)
                train_locally(model, x, y, config.train, seed)
                states.append({k: v.clone() for k, v in model.state_dict().items()})
                weights.append(len(y))
            total = sum(weights)
            model.load_state_dict({k: sum(w / total * s[k] for w, s in zip(weights, states)) for k in global_state})
            evaluate(model, *test)
            times.append(time.perf_counter() - started)
    return {"round_s": statistics.median(times[1:])}


def measure_point(point: dict, data_root: Path, rounds: int) -> dict:
    with tempfile.TemporaryDirectory() as scratch:
        result = run_bare(point, data_root, rounds) if point["engine"] == "bare" else run_engine(point, data_root, rounds, Path(scratch) / "run")
    return result | {"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def in_fresh_process(point: dict, data_root: Path, rounds: int) -> dict:
    done = subprocess.run([sys.executable, __file__, "--point", json.dumps(point), "--data", str(data_root), "--rounds", str(rounds)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"point {point} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


POINTS = [
    {"engine": "in-process", "total": 10, "sampled": 10, "policy": "all"},
    {"engine": "bare", "total": 10, "sampled": 10, "policy": "all"},
    {"engine": "in-process", "total": 100, "sampled": 10, "policy": "all"},
    {"engine": "in-process", "total": 1000, "sampled": 10, "policy": "all"},
    {"engine": "in-process", "total": 1000, "sampled": 50, "policy": "all"},
    {"engine": "in-process", "total": 1000, "sampled": 100, "policy": "all"},
    {"engine": "in-process", "total": 1000, "sampled": 10, "policy": "victim"},
    {"engine": "in-process", "total": 1000, "sampled": 10, "policy": "victim+2"},
]


def key(point: dict) -> tuple[str, int, int, str]:
    return point["engine"], point["total"], point["sampled"], point["policy"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=1, help="runs of every point, interleaved; medians are reported")
    parser.add_argument("--point", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.point:
        print(json.dumps(measure_point(json.loads(args.point), args.data, args.rounds)))
        return
    with tempfile.TemporaryDirectory() as scratch:
        data = args.data.resolve()
        if not (data / "MNIST").exists():
            sys.path.insert(0, str(ROOT / "tests"))
            from conftest import synthetic_mnist

            data = Path(scratch)
            synthetic_mnist(data, train=1000 * RECORDS + 900, test=1000)
            print(f"(no MNIST under {args.data}: synthetic MNIST-shaped records)")
        runs: dict[tuple[str, int, int, str], list[dict]] = {}
        in_fresh_process(POINTS[0], data, args.rounds)  # discarded: the first process warms the file cache and bytecode
        for _ in range(args.repeats):  # interleaved, so drift on a shared machine hits every point alike
            for point in POINTS:
                runs.setdefault(key(point), []).append(in_fresh_process(point, data, args.rounds))

    def med(engine: str, total: int, sampled: int, policy: str, what: str) -> float:
        return statistics.median(r[what] for r in runs[(engine, total, sampled, policy)])

    engine = "in-process"
    print(f"{'engine':<11} {'total':>6} {'sampled':>8} {'policy':<9} {'round s':>8} {'peak RSS MB':>12} {'disk/round MB':>14}")
    for point in POINTS:
        k = key(point)
        disk = f"{med(*k, 'disk_per_round') / 1e6:>14.2f}" if point["engine"] != "bare" else f"{'':>14}"
        print(f"{k[0]:<11} {k[1]:>6} {k[2]:>8} {k[3]:<9} {med(*k, 'round_s'):>8.3f} {med(*k, 'peak_rss_mb'):>12.0f} {disk}")
    t10, t1000 = med(engine, 10, 10, "all", "round_s"), med(engine, 1000, 10, "all", "round_s")
    m10, m1000 = med(engine, 10, 10, "all", "peak_rss_mb"), med(engine, 1000, 10, "all", "peak_rss_mb")
    bare = med("bare", 10, 10, "all", "round_s")
    s10, s100 = med(engine, 1000, 10, "all", "round_s"), med(engine, 1000, 100, "all", "round_s")
    print(f"BENCH scale-round-time ref=10-clients ratio={t1000 / t10:.2f} target=1.2 at_10_s={t10:.3f} at_100_s="
          f"{med(engine, 100, 10, 'all', 'round_s'):.3f} at_1000_s={t1000:.3f} sampled=10")
    print(f"BENCH scale-peak-rss ref=10-clients ratio={m1000 / m10:.2f} target=1.5 at_10_MB={m10:.0f} at_100_MB="
          f"{med(engine, 100, 10, 'all', 'peak_rss_mb'):.0f} at_1000_MB={m1000:.0f}")
    print(f"BENCH scale-engine ref=bare-loop ratio={t10 / bare:.2f} target=1.5 engine_s={t10:.3f} bare_s={bare:.3f} sampled=10 model=mnist_cnn")
    print(f"BENCH scale-sampled ref=linear ratio={s100 / (10 * s10):.2f} at_10_s={s10:.3f} at_50_s={med(engine, 1000, 50, 'all', 'round_s'):.3f} "
          f"at_100_s={s100:.3f} total=1000")
    size = runs[(engine, 1000, 10, "all")][0]["client_file"]
    for policy in ("all", "victim", "victim+2"):
        print(f"BENCH scale-disk-{policy} ref=all ratio={med(engine, 1000, 10, policy, 'disk_per_round') / med(engine, 1000, 10, 'all', 'disk_per_round'):.3f} "
              f"MB_per_round={med(engine, 1000, 10, policy, 'disk_per_round') / 1e6:.3f} model_file_MB={size / 1e6:.3f} sampled=10 "
              f"victim_rounds={runs[(engine, 1000, 10, policy)][0]['victim_rounds']}")


if __name__ == "__main__":
    main()
