"""What a short run records (tests/data/pinned.yaml: seed 0, passive curious server, 2 rounds,
3 clients on digits), checked two ways (docs/design.md, section 4.2).

- On one machine with the same process settings the records are byte-identical: `fedsim run` on
  the Ray engine (the default) gives the bytes of the in-process run made in this session.
- Across machines they are not: float kernels differ by CPU capability (AVX512, AVX2, none) in
  the last bits. So round 2's global model and the victim's (client 0) returned model are compared
  with a stated tolerance against reference values in tests/data/pinned_reference.json: per
  tensor its sum, L2 norm and four entries. The ledger (integers and flags drawn from NumPy's
  seeded generators, no float kernel) is compared by its sha256.

A change that alters the records on purpose regenerates the reference values in the same commit
(`PYTHONPATH=tests python tests/integration/test_pinned_records.py`) and says why.
"""

from __future__ import annotations

import hashlib
import json
import sys
import tempfile
from pathlib import Path

import pytest
from safetensors.torch import load_file

from conftest import PINNED_CONFIG
from fedsim.app.cli import main
from helpers import record_hashes

pytestmark = [pytest.mark.integration, pytest.mark.determinism]

REFERENCE = Path(__file__).parents[1] / "data" / "pinned_reference.json"
MODELS = ["rounds/0002/global.safetensors", "rounds/0002/clients/client-000.safetensors"]

# A statistic passes when |recorded - reference| <= ATOL + RTOL * |reference|. Measured on the
# pinned run (statistics of magnitude 1e-3 to 3): AVX512 kernels against ATEN_CPU_CAPABILITY=avx2
# and =default differ by at most 1.1e-7 on a statistic (4.5e-8 on a single parameter); the
# process's thread count (OMP_NUM_THREADS=1 or 2) changes no byte, as every computation runs on
# backend.cpus_per_client threads. The tolerance is about 100 times the kernels' difference, and
# still 5 times below what a learning rate changed by one part in 10^4 (train.lr=0.10001) moves.
ATOL = 1e-5
RTOL = 1e-5


def reference_values(folder: Path) -> dict:
    """The ledger's sha256, and per tensor of each of MODELS its sum, L2 norm and four entries (float64)."""
    values: dict = {"membership.parquet": hashlib.sha256((folder / "membership.parquet").read_bytes()).hexdigest()}
    for relative in MODELS:
        values[relative] = {}
        for name, tensor in sorted(load_file(folder / relative).items()):
            flat = tensor.double().flatten()
            n = flat.numel()
            values[relative][name] = {"sum": flat.sum().item(), "norm": flat.norm().item(),
                                      "entries": {str(i): flat[i].item() for i in sorted({0, n // 3, 2 * n // 3, n - 1})}}
    return values


def _statistics(values: dict) -> dict[str, float]:
    """The float statistics of `reference_values`, one flat name each."""
    flat = {}
    for relative in MODELS:
        for name, stats in values[relative].items():
            flat |= {f"{relative} {name} {key}": stats[key] for key in ("sum", "norm")}
            flat |= {f"{relative} {name} [{i}]": v for i, v in stats["entries"].items()}
    return flat


def test_the_ray_engine_records_the_bytes_of_the_in_process_run_made_in_this_process(pinned_run, tmp_path):
    out = tmp_path / "ray"
    assert main(["run", str(PINNED_CONFIG), "--out", str(out), "--quiet"]) == 0  # `fedsim run`'s default engine: Ray
    recorded = record_hashes(out)
    assert len(recorded) == 1 + 3 * 3  # the ledger, and per round the global model (round 0 too) and the three clients'
    assert recorded == record_hashes(pinned_run)


def test_the_recorded_models_match_the_reference_values_within_the_cross_machine_tolerance(pinned_run):
    expected = json.loads(REFERENCE.read_text())
    got = reference_values(pinned_run)
    assert got["membership.parquet"] == expected["membership.parquet"]  # the ledger is exact on any machine
    want, have = _statistics(expected), _statistics(got)
    assert have.keys() == want.keys()
    off = {key: (have[key], want[key]) for key in want if abs(have[key] - want[key]) > ATOL + RTOL * abs(want[key])}
    assert not off, f"{len(off)} statistics beyond the tolerance (recorded, reference): {off}"


if __name__ == "__main__":  # regenerate the reference values from a fresh in-process run
    with tempfile.TemporaryDirectory() as tmp:
        if main(["run", str(PINNED_CONFIG), "--out", f"{tmp}/run", "--quiet", "--set", "backend.engine=in-process"]) != 0:
            sys.exit(1)
        REFERENCE.write_text(json.dumps(reference_values(Path(tmp) / "run"), indent=1) + "\n")
    print(f"wrote {REFERENCE}")
