"""Cross-device scale: round time, peak memory and disk per round against clients connected and sampled.

    python benchmarks/scale.py [--data ../shared/data] [--rounds 4] [--repeats 1] [--engines in-process,ray]
                               [--points ray:10:10,ray:1000:100]  (only those points: the table, no BENCH lines)

fedsim's server should cost per round what the clients sampled that round cost, whatever the
number of clients connected. Each point runs in a fresh process (its peak RSS is its own): each
engine (`--engines`, both by default) with the MNIST CNN (50 records a client, one local epoch,
FedAvg with `fraction_train` = sampled / total, a passive curious server, recording on) at 10,
100 and 1,000 clients with 10 sampled, and at 1,000 clients with 10, 50 and 100 sampled; the
disk per round under each `record.clients` policy (in-process: the recorder is the same on
both engines); and a bare loop doing the same local training and FedAvg on the same records
with the same seeds and thread count. Round time is the median over rounds 2..R of
training.csv's `seconds` (training, aggregation, recording, central evaluation); the bare
loop's the median over the same rounds; a first, discarded point warms the caches. Synthetic
MNIST-shaped records stand in when --data has no MNIST.

The Ray engine starts a local Ray per point as `fedsim run` does (127.0.0.1 only, free ports,
a temporary directory of its own) with one actor per `backend.cpus_per_client` CPUs (two on a
2-core machine, so two clients train at once; the bare loop and the in-process engine train
one after another). Its memory is the point's whole process tree: the driver (server, Flower's
simulation runtime) and every Ray process it started (GCS, raylet, agents, actors), sampled
every 0.25 s with psutil; `tree RSS` sums their resident sets (shared pages once per process),
`tree PSS` their proportional sets (shared pages split). Processes of a point still alive
after it are ended by their own ids. `before rounds s` is the time from the engine's start to
the end of fedsim's partition discovery (one message to every node). The Ray engine keeps a
window of messages in flight, as `fedsim run` does (`ServerPlan.in_flight`). A point's driver
CPU seconds a round (`round_cpu_s`, all the driver's threads, not Ray's processes) are in its
JSON line and in the per-run lines `--points` prints: less noisy than wall time on a shared machine.

BENCH lines, ratios measured side by side in one invocation: round time at 1,000 / at 10 clients
(target <= 1.2), peak RSS at 1,000 / at 10 (<= 1.5; the Ray engine's: the process tree's),
engine / bare loop at 10 sampled (<= 1.5), round time at 100 sampled / (10 x at 10 sampled)
(linear: about 1), disk per round of each policy, and the Ray engine's time before round 1.
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
        "adversary.target_records=20", "attacks=[]", f"backend.engine={'ray' if point['engine'] == 'ray' else 'in-process'}", *policy,
    ], default_file=False)


def run_engine(point: dict, data_root: Path, rounds: int, folder: Path) -> dict:
    """fedsim's in-process or Ray engine, without attacks or report: the rounds as `fedsim run` drives them.

    The Ray engine starts its local Ray as `fedsim run` does (`start_local_engine`: 127.0.0.1 only,
    ports Ray picks free), in a temporary directory of this point's own, so that it never attaches
    to another Ray on the machine; Flower's backend shuts it down at the end of the simulation.
    """
    from attackers.active.adversary import server_wrapper
    from fedsim.app.experiment import client_app_for, prepare, run_apps
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
    plan = ServerPlan(strategy, recorder, config.data.num_clients, model, test, rounds, config.seed,
                      on_round=lambda row: rows.append(row | {"at": time.perf_counter(), "cpu": time.process_time()}),
                      adversary=server_wrapper(config, ledger), threads=config.backend.cpus_per_client)
    if config.backend.engine == "ray":  # as `fedsim run` does (simulate_engine): a window of messages in flight
        from fedsim.engine.simulation import in_flight_window

        plan.in_flight = lambda: in_flight_window(config.backend)
    setup = time.perf_counter() - started
    ray_start, actors = 0.0, 0
    with tempfile.TemporaryDirectory(prefix="fedsim-ray-", dir="/tmp") as ray_temp:  # short: Ray's socket paths must fit 107 characters
        if config.backend.engine == "ray":
            from fedsim.engine.simulation import quiet_engine_logs, start_local_engine

            quiet_engine_logs()
            started = time.perf_counter()
            start_local_engine({"logging_level": "ERROR", "log_to_driver": False, "include_dashboard": False, "_temp_dir": ray_temp})
            ray_start = time.perf_counter() - started
            import ray

            actors = int(ray.cluster_resources().get("CPU", 0) // config.backend.cpus_per_client)  # Flower's actor pool: one per client's CPUs
        engine_started, engine_cpu = time.perf_counter(), time.process_time()
        run_apps(config, make_server_app(plan), client_app_for(config, ledger), folder / "engine.log")
        engine_s = time.perf_counter() - engine_started
    if plan.error is not None:
        raise plan.error
    per_round = [r["seconds"] for r in rows if r["round"] >= 2]
    # the driver's CPU seconds a round, all its threads (server, Flower's runtime; not Ray's processes): less noisy than wall time on a shared machine
    cpu_per_round = [b["cpu"] - a["cpu"] for a, b in zip(rows, rows[1:]) if b["round"] >= 2]
    evaluated_initial = rows[0]  # round 0: the initial model's evaluation, right after discovery
    disk = [sum(p.stat().st_size for p in (folder / "rounds" / f"{r:04d}").rglob("*") if p.is_file()) for r in range(1, rounds + 1)]
    heard = [len(recorder.manifest.rounds[r].clients) for r in range(1, rounds + 1)]
    return {"round_s": statistics.median(per_round), "round_cpu_s": statistics.median(cpu_per_round), "setup_s": setup,
            "before_rounds_cpu_s": rows[0]["cpu"] - engine_cpu, "disk_per_round": statistics.mean(disk), "heard": heard,
            "victim_rounds": recorder.manifest.victim_rounds, "ray_start_s": ray_start, "actors": actors,
            # from the engine's start to the end of discovery: Flower's node registration, Ray's actors, fedsim's partition discovery
            "before_rounds_s": evaluated_initial["at"] - evaluated_initial["seconds"] - engine_started,
            "after_last_round_s": engine_started + engine_s - rows[-1]["at"],  # the engine's teardown (Ray's shutdown)
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


class ProcessTree:
    """The memory of a point's process and every process it started (Ray's GCS, raylet, agents and
    workers are the driver's descendants), sampled every `every` seconds with psutil.

    `rss` sums the processes' resident sets (a page shared between processes, e.g. PyTorch's
    libraries in every Ray worker, counts once per process); `pss` sums their proportional sets
    (a shared page split among its sharers: the tree's own footprint). Every process seen is
    remembered with its start time, so that `end_leftovers` ends what the point left behind by
    its own id (never by name: other Ray processes share the machine), and a reused id is left alone.
    """

    def __init__(self, root: int, every: float = 0.25):
        self.root, self.every = root, every
        self.peak_rss = self.peak_pss = 0.0
        self.peak_processes = 0
        self.seen: dict[int, float] = {}  # pid -> create time

    def sample(self) -> None:
        import psutil

        try:
            top = psutil.Process(self.root)
            family = [top, *top.children(recursive=True)]
        except psutil.NoSuchProcess:
            return
        rss = pss = 0.0
        for process in family:
            try:
                self.seen.setdefault(process.pid, process.create_time())
                memory = process.memory_full_info()
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
            rss, pss = rss + memory.rss, pss + memory.pss
        self.peak_rss, self.peak_pss = max(self.peak_rss, rss / 2**20), max(self.peak_pss, pss / 2**20)
        self.peak_processes = max(self.peak_processes, len(family))

    def leftovers(self) -> list[int]:
        import psutil

        alive = []
        for pid, created in self.seen.items():
            try:
                process = psutil.Process(pid)
                if process.create_time() == created and process.status() != psutil.STATUS_ZOMBIE:
                    alive.append(pid)
            except psutil.NoSuchProcess:
                pass
        return alive

    def end_leftovers(self, grace: float = 15) -> list[int]:
        """Wait `grace` s for the point's processes to exit (Ray's agents stop on their own), then SIGTERM, then SIGKILL."""
        import os
        import signal

        deadline = time.monotonic() + grace
        while (left := self.leftovers()) and time.monotonic() < deadline:
            time.sleep(0.5)
        if not left:
            return []
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pid in self.leftovers():
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            time.sleep(2)
        return left


def in_fresh_process(point: dict, data_root: Path, rounds: int) -> dict:
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:  # files, not pipes: nothing blocks while sampling
        process = subprocess.Popen([sys.executable, __file__, "--point", json.dumps(point), "--data", str(data_root), "--rounds", str(rounds)],
                                   stdout=out, stderr=err, text=True, start_new_session=True)
        tree = ProcessTree(process.pid)
        try:
            while process.poll() is None:
                tree.sample()
                time.sleep(tree.every)
        finally:  # also on Ctrl-C: the point and what it started end with this script
            if process.poll() is None:
                process.terminate()
                process.wait()
            left = tree.end_leftovers()
        out.seek(0), err.seek(0)
        if process.returncode != 0:
            sys.exit(f"point {point} failed:\n{err.read()[-3000:]}")
        if left:
            print(f"(point {point}: {len(left)} of its processes outlived it and were ended by id)")
        return json.loads(out.read().strip().splitlines()[-1]) | {
            "tree_rss_mb": tree.peak_rss, "tree_pss_mb": tree.peak_pss, "processes": tree.peak_processes}


POINTS = [
    {"engine": "in-process", "total": 10, "sampled": 10, "policy": "all"},
    {"engine": "bare", "total": 10, "sampled": 10, "policy": "all"},
    {"engine": "in-process", "total": 100, "sampled": 10, "policy": "all"},
    {"engine": "in-process", "total": 1000, "sampled": 10, "policy": "all"},
    {"engine": "in-process", "total": 1000, "sampled": 50, "policy": "all"},
    {"engine": "in-process", "total": 1000, "sampled": 100, "policy": "all"},
    {"engine": "in-process", "total": 1000, "sampled": 10, "policy": "victim"},
    {"engine": "in-process", "total": 1000, "sampled": 10, "policy": "victim+2"},
    {"engine": "ray", "total": 10, "sampled": 10, "policy": "all"},
    {"engine": "ray", "total": 100, "sampled": 10, "policy": "all"},
    {"engine": "ray", "total": 1000, "sampled": 10, "policy": "all"},
    {"engine": "ray", "total": 1000, "sampled": 50, "policy": "all"},
    {"engine": "ray", "total": 1000, "sampled": 100, "policy": "all"},
]
ENGINES = ("in-process", "ray")


def key(point: dict) -> tuple[str, int, int, str]:
    return point["engine"], point["total"], point["sampled"], point["policy"]


def selected_points(spec: str) -> list[dict]:
    """`--points`: ENGINE:TOTAL:SAMPLED, comma-separated, in the order given (the first also warms the caches)."""
    points = []
    for item in filter(None, (i.strip() for i in spec.split(","))):
        engine, _, rest = item.partition(":")
        total, _, sampled = rest.partition(":")
        if engine not in (*ENGINES, "bare") or not total.isdigit() or not sampled.isdigit() or not 0 < int(sampled) <= int(total):
            sys.exit(f"--points {item!r}: write ENGINE:TOTAL:SAMPLED with ENGINE one of {', '.join((*ENGINES, 'bare'))}, "
                     "e.g. ray:1000:100")
        points.append({"engine": engine, "total": int(total), "sampled": int(sampled), "policy": "all"})
    if not points:
        sys.exit("--points: name at least one point, e.g. ray:10:10")
    return points


def med_of(runs: dict, engine: str, total: int, sampled: int, policy: str, what: str) -> float:
    return statistics.median(r[what] for r in runs[(engine, total, sampled, policy)])


def print_table(points: list[dict], runs: dict) -> None:
    def med(*k_what):
        return med_of(runs, *k_what)

    print(f"{'engine':<11} {'total':>6} {'sampled':>8} {'policy':<9} {'round s':>8} {'peak RSS MB':>12} {'tree RSS MB':>12} "
          f"{'tree PSS MB':>12} {'processes':>10} {'before rounds s':>16} {'disk/round MB':>14}")
    for point in points:
        k = key(point)
        disk = f"{med(*k, 'disk_per_round') / 1e6:>14.2f}" if point["engine"] != "bare" else f"{'':>14}"
        before = f"{med(*k, 'before_rounds_s'):>16.1f}" if point["engine"] != "bare" else f"{'':>16}"
        print(f"{k[0]:<11} {k[1]:>6} {k[2]:>8} {k[3]:<9} {med(*k, 'round_s'):>8.3f} {med(*k, 'peak_rss_mb'):>12.0f} "
              f"{med(*k, 'tree_rss_mb'):>12.0f} {med(*k, 'tree_pss_mb'):>12.0f} {med(*k, 'processes'):>10.0f} {before} {disk}",
              flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=1, help="runs of every point, interleaved; medians are reported")
    parser.add_argument("--engines", default="in-process,ray", help="comma-separated: in-process, ray (the bare loop always runs)")
    parser.add_argument("--points", help="only these points, comma-separated ENGINE:TOTAL:SAMPLED (policy all), e.g. "
                        "ray:10:10,ray:1000:100; the table only, no BENCH lines")
    parser.add_argument("--point", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.point:
        print(json.dumps(measure_point(json.loads(args.point), args.data, args.rounds)))
        return
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    if not engines or set(engines) - set(ENGINES):
        sys.exit(f"--engines {args.engines!r}: name one or both of {', '.join(ENGINES)}, comma-separated")
    points = [p for p in POINTS if p["engine"] in (*engines, "bare")]
    if args.points:
        points = selected_points(args.points)
    with tempfile.TemporaryDirectory() as scratch:
        data = args.data.resolve()
        if not (data / "MNIST").exists():
            sys.path.insert(0, str(ROOT / "tests"))
            from conftest import synthetic_mnist

            data = Path(scratch)
            synthetic_mnist(data, train=1000 * RECORDS + 900, test=1000)
            print(f"(no MNIST under {args.data}: synthetic MNIST-shaped records)")
        runs: dict[tuple[str, int, int, str], list[dict]] = {}
        in_fresh_process(points[0], data, args.rounds)  # discarded: the first process warms the file cache and bytecode
        for _ in range(args.repeats):  # interleaved, so drift on a shared machine hits every point alike
            for point in points:
                runs.setdefault(key(point), []).append(result := in_fresh_process(point, data, args.rounds))
                if args.points:  # each run as it ends: a selection is for looking closely
                    print(f"{key(point)}: round_s {result['round_s']:.3f} driver_cpu_per_round_s {result.get('round_cpu_s', 0):.2f} "
                          f"before_rounds_s {result.get('before_rounds_s', 0):.1f} before_rounds_cpu_s {result.get('before_rounds_cpu_s', 0):.1f} "
                          f"ray_start_s {result.get('ray_start_s', 0):.1f}", flush=True)

    print_table(points, runs)
    if args.points:
        return
    bare = med_of(runs, "bare", 10, 10, "all", "round_s")

    def med(engine: str, total: int, sampled: int, policy: str, what: str) -> float:
        return statistics.median(r[what] for r in runs[(engine, total, sampled, policy)])

    if "in-process" in engines:
        engine = "in-process"
        t10, t1000 = med(engine, 10, 10, "all", "round_s"), med(engine, 1000, 10, "all", "round_s")
        m10, m1000 = med(engine, 10, 10, "all", "peak_rss_mb"), med(engine, 1000, 10, "all", "peak_rss_mb")
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
            share = med(engine, 1000, 10, policy, "disk_per_round") / med(engine, 1000, 10, "all", "disk_per_round")
            print(f"BENCH scale-disk-{policy} ref=all ratio={share:.3f} "
                  f"MB_per_round={med(engine, 1000, 10, policy, 'disk_per_round') / 1e6:.3f} model_file_MB={size / 1e6:.3f} sampled=10 "
                  f"victim_rounds={runs[(engine, 1000, 10, policy)][0]['victim_rounds']}")
    if "ray" in engines:  # memory: the driver and every Ray process it started together (ProcessTree)
        engine = "ray"
        t10, t1000 = med(engine, 10, 10, "all", "round_s"), med(engine, 1000, 10, "all", "round_s")
        r10, r1000 = med(engine, 10, 10, "all", "tree_rss_mb"), med(engine, 1000, 10, "all", "tree_rss_mb")
        p10, p1000 = med(engine, 10, 10, "all", "tree_pss_mb"), med(engine, 1000, 10, "all", "tree_pss_mb")
        s10, s100 = med(engine, 1000, 10, "all", "round_s"), med(engine, 1000, 100, "all", "round_s")
        b10, b1000 = med(engine, 10, 10, "all", "before_rounds_s"), med(engine, 1000, 10, "all", "before_rounds_s")
        print(f"BENCH scale-ray-round-time ref=10-clients ratio={t1000 / t10:.2f} target=1.2 at_10_s={t10:.3f} at_100_s="
              f"{med(engine, 100, 10, 'all', 'round_s'):.3f} at_1000_s={t1000:.3f} sampled=10")
        print(f"BENCH scale-ray-peak-rss ref=10-clients ratio={r1000 / r10:.2f} target=1.5 at_10_MB={r10:.0f} at_100_MB="
              f"{med(engine, 100, 10, 'all', 'tree_rss_mb'):.0f} at_1000_MB={r1000:.0f} pss_ratio={p1000 / p10:.2f} pss_at_10_MB={p10:.0f} "
              f"pss_at_1000_MB={p1000:.0f} what=driver+ray-processes")
        inproc = f" in_process_s={med('in-process', 10, 10, 'all', 'round_s'):.3f}" if "in-process" in engines else ""
        print(f"BENCH scale-ray-engine ref=bare-loop ratio={t10 / bare:.2f} target=1.5 engine_s={t10:.3f} bare_s={bare:.3f}{inproc} sampled=10 "
              f"model=mnist_cnn actors={med(engine, 10, 10, 'all', 'actors'):.0f}")
        print(f"BENCH scale-ray-sampled ref=linear ratio={s100 / (10 * s10):.2f} at_10_s={s10:.3f} at_50_s={med(engine, 1000, 50, 'all', 'round_s'):.3f} "
              f"at_100_s={s100:.3f} total=1000")
        print(f"BENCH scale-ray-before-rounds ref=10-clients ratio={b1000 / b10:.2f} at_10_s={b10:.1f} at_100_s="
              f"{med(engine, 100, 10, 'all', 'before_rounds_s'):.1f} at_1000_s={b1000:.1f} ray_init_s={med(engine, 10, 10, 'all', 'ray_start_s'):.1f}")


if __name__ == "__main__":
    main()
