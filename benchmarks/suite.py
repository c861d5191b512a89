"""`make test`'s wall time: the whole pytest suite, timed from outside, with its slowest tests.

    python benchmarks/suite.py [--repeats 1]

The suite runs in a fresh process per repeat, as `make test` runs it; the machine should be idle
(2 cores: anything else running shows up here). Prints the slowest tests of the last repeat
(pytest's --durations) and a BENCH line: the median wall time against the 8-minute goal of the
speed issue (ratio <= 1 meets it).
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GOAL_S = 480


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    walls, counts = [], ""
    for repeat in range(args.repeats):
        begun = time.perf_counter()
        result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--durations=15"], cwd=ROOT,
                                capture_output=True, text=True)
        walls.append(time.perf_counter() - begun)
        tail = result.stdout.splitlines()
        counts = next((line.strip("= ") for line in reversed(tail) if re.search(r"\d+ passed", line)), "no summary")
        print(f"run {repeat}: wall_s={walls[-1]:.1f} exit={result.returncode} {counts}", flush=True)
        if repeat == args.repeats - 1:
            start = next((i for i, line in enumerate(tail) if "slowest" in line), len(tail))
            print("\n".join(tail[start:start + 17]))
    wall = statistics.median(walls)
    print(f"BENCH test-suite ref={GOAL_S}s ratio={wall / GOAL_S:.2f} suite_s={wall:.1f} runs={','.join(f'{w:.1f}' for w in walls)} "
          f"result=\"{counts}\"", flush=True)


if __name__ == "__main__":
    main()
