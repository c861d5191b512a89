"""The recorder: write throughput and bytes per round, float32 vs float16.

    python benchmarks/recorder.py [--repeats 5]

Records rounds of 10 clients (each client's parameters, the aggregate, one broadcast) for the
Purchase-size fcn and the CIFAR AlexNet, with fsync, as `fedsim run` does, and prints MB/s and
the run-folder bytes per round. The recorder's share of a real round's time is measured in
benchmarks/simulation.py (record_share). BENCH ratio: float16 time / float32 time.
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

from fedsim.core.config import load_config  # noqa: E402
from fedsim.learning.models import build_model  # noqa: E402
from fedsim.recording.recorder import Recorder  # noqa: E402

NETS = {"fcn-purchase": ("fcn", (600,), 100, {"hidden": [1024, 512, 256, 128]}), "alexnet_cifar": ("alexnet_cifar", (3, 32, 32), 100, {})}
CLIENTS = 10


def _empty_ledger(folder: Path) -> Path:
    """The benchmark records parameters only; the ledger is not what is measured."""
    path = folder / "membership.parquet"
    path.write_bytes(b"")
    return path


def measure(net: str, dtype: str, repeats: int) -> tuple[float, int]:
    name, shape, classes, args = NETS[net]
    torch.manual_seed(0)
    states = [build_model(name, shape, classes, args).state_dict() for _ in range(CLIENTS + 1)]
    config = load_config(None, [f"record.dtype={dtype}"], default_file=False)
    times = []
    with tempfile.TemporaryDirectory(dir=".") as scratch:  # the disk runs are written to, not a RAM /tmp
        recorder = Recorder(Path(scratch) / "run", config)
        recorder.start(_empty_ledger)
        for round_number in range(1, repeats + 1):
            started = time.perf_counter()
            recorder.record_round(round_number, states[0], {c: (states[c + 1], 100) for c in range(CLIENTS)}, {0: states[1]})
            times.append(time.perf_counter() - started)
        size = sum(p.stat().st_size for p in (Path(scratch) / "run" / "rounds" / "0001").rglob("*") if p.is_file())
    return statistics.median(times), size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    rows = []
    for net in NETS:
        (t32, b32), (t16, b16) = measure(net, "float32", args.repeats), measure(net, "float16", args.repeats)
        print(f"BENCH recorder-{net} ref=float32 ratio={t16 / t32:.2f} float32_MB_per_s={b32 / t32 / 1e6:.0f} "
              f"float16_MB_per_s={b16 / t16 / 1e6:.0f} float32_MB_per_round={b32 / 1e6:.1f} float16_MB_per_round={b16 / 1e6:.1f}")
        rows.append((net, t32, b32, t16, b16))
    print(f"\n{'net':<14} {'float32 s/round':>16} {'MB/round':>9} {'float16 s/round':>16} {'MB/round':>9}")
    for net, t32, b32, t16, b16 in rows:
        print(f"{net:<14} {t32:>16.3f} {b32 / 1e6:>9.1f} {t16:>16.3f} {b16 / 1e6:>9.1f}")


if __name__ == "__main__":
    main()
