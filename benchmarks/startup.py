"""`make demo` wall time, and where Ray's start-up and shutdown go inside `fedsim run`.

    python benchmarks/startup.py [--repeats 3]

Each repeat runs twice, alternating: as fedsim starts Ray (fedsim.engine.simulation.start_local_engine)
and with Ray started by Flower's own init (a runtime environment carrying PYTHONPATH), the
reference.

The same quickstart on the in-process engine (`backend.engine: in-process`, no Ray) gives a
third BENCH line: what Ray's start-up, actors and shutdown cost a user over a run without them.

Runs the built-in quickstart (what `make demo` runs) in a fresh process, `repeats` times, and
times it from outside (the user's wait, interpreter start and imports included). Inside, the
engine's phases are timed by wrapping Flower's Ray backend: ray.init, the actor pool's build,
the first client message (actor processes start and import the ClientApp there), the actors'
termination, the wait between the last round and simulate() returning, and ray.shutdown.
`startup_and_shutdown` = simulate()'s wall time plus ray.shutdown minus the rounds' own time
(metrics/training.csv, as benchmarks/simulation.py reports it). Prints BENCH lines (medians).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def child(out: Path, report: Path, flower_init: bool) -> None:
    """`fedsim run --out OUT` with the engine's phases timed; writes them to `report` as JSON."""
    started = time.perf_counter()
    sys.path.insert(0, str(ROOT))
    if flower_init:
        import fedsim.engine.simulation

        fedsim.engine.simulation.start_local_engine = lambda init_args: False
    marks: dict[str, float] = {}

    def mark(name: str) -> None:
        marks.setdefault(name, time.perf_counter() - started)

    import ray
    from flwr.server.superlink.fleet.vce.backend import raybackend

    def timed(owner, attribute: str, label: str):
        original = getattr(owner, attribute)

        def wrapper(*args, **kwargs):
            mark(f"{label}_start")
            try:
                return original(*args, **kwargs)
            finally:
                mark(f"{label}_end")

        setattr(owner, attribute, wrapper)

    timed(ray, "init", "ray_init")
    timed(raybackend.RayBackend, "build", "actor_pool")
    timed(raybackend.RayBackend, "process_message", "first_message")
    timed(raybackend.RayBackend, "terminate", "terminate")
    import fedsim.app.experiment as experiment

    timed(experiment, "simulate", "simulate")
    mark("imports")
    from fedsim.app.cli import main

    code = main(["run", "--out", str(out), "--quiet"])
    mark("run_returned")
    ray.shutdown()  # what the interpreter's exit would otherwise do
    mark("ray_shutdown_end")
    import pandas as pd

    rounds = float(pd.read_csv(out / "metrics" / "training.csv")["seconds"].sum())
    report.write_text(json.dumps({"code": code, "marks": marks, "rounds": rounds}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--child", nargs=2, type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--flower-init", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child, args.flower_init)
        return
    results: dict[str, tuple[list[float], list[dict]]] = {"fedsim": ([], []), "flower-init": ([], [])}
    in_process: list[float] = []
    with tempfile.TemporaryDirectory() as scratch:
        for repeat in range(args.repeats):
            begun = time.perf_counter()  # the same run on the in-process engine: no Ray at all
            subprocess.run([sys.executable, "-m", "fedsim.app.cli", "run", "--out", str(Path(scratch) / f"in-process-{repeat}"), "--quiet",
                            "--set", "backend.engine=in-process"], check=True, cwd=scratch, stdout=subprocess.DEVNULL)
            in_process.append(time.perf_counter() - begun)
            print(f"run in-process {repeat}: wall_s={in_process[-1]:.1f}", flush=True)
            for variant, (walls, phases) in results.items():
                out, report = Path(scratch) / f"{variant}-{repeat}", Path(scratch) / f"{variant}-{repeat}.json"
                begun = time.perf_counter()
                subprocess.run([sys.executable, __file__, "--child", str(out), str(report)] + (["--flower-init"] if variant != "fedsim" else []),
                               check=True, cwd=scratch, stdout=subprocess.DEVNULL)
                walls.append(time.perf_counter() - begun)
                phases.append(_phases(json.loads(report.read_text())))
                print(f"run {variant} {repeat}: wall_s={walls[-1]:.1f} " + " ".join(f"{k}_s={v:.2f}" for k, v in phases[-1].items()), flush=True)
    for variant, (walls, phases) in results.items():
        median = {k: statistics.median(p[k] for p in phases) for k in phases[0]}
        wall = statistics.median(walls)
        suffix = "" if variant == "fedsim" else f"-{variant}"
        print(f"BENCH demo{suffix} ref=30s ratio={wall / 30:.2f} demo_s={wall:.1f} runs={','.join(f'{w:.1f}' for w in walls)}", flush=True)
        print(f"BENCH ray-startup-shutdown{suffix} ref=8s ratio={median['startup_and_shutdown'] / 8:.2f} "
              + " ".join(f"{k}_s={v:.2f}" for k, v in median.items()), flush=True)
    demo = statistics.median(results["fedsim"][0])
    print(f"BENCH demo-in-process ref=demo-on-ray ratio={statistics.median(in_process) / demo:.2f} "
          f"in_process_s={statistics.median(in_process):.1f} ray_s={demo:.1f} runs={','.join(f'{w:.1f}' for w in in_process)}", flush=True)


def _phases(result: dict) -> dict[str, float]:
    m = result["marks"]
    simulate = m["simulate_end"] - m["simulate_start"]
    return {
        "imports": m["imports"],
        "ray_init": m["ray_init_end"] - m["ray_init_start"],
        "actor_pool": m["actor_pool_end"] - m["actor_pool_start"],
        "first_message": m["first_message_end"] - m["first_message_start"],
        "terminate": m["terminate_end"] - m["terminate_start"],
        "after_terminate": m["simulate_end"] - m["terminate_end"],
        "ray_shutdown": m["ray_shutdown_end"] - m["run_returned"],
        "rounds": result["rounds"],
        "startup_and_shutdown": simulate + m["ray_shutdown_end"] - m["run_returned"] - result["rounds"],
        "total_in_process": m["ray_shutdown_end"],
    }


if __name__ == "__main__":
    main()
