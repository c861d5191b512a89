"""The recorded bytes of a short run are pinned: a refactor must not change what fedsim records.

The hashes were taken from `fedsim run tests/data/pinned.yaml` (seed 0, passive curious server,
2 rounds, 3 clients on digits) before the architecture change of the attackers' rooms. A change
that alters the records on purpose updates them in the same commit and says why.
"""

import hashlib
from pathlib import Path

import pytest

from fedsim.app.cli import main

pytestmark = pytest.mark.integration

PINNED_CONFIG = Path(__file__).parents[1] / "data" / "pinned.yaml"

PINNED_SHA256 = {
    "membership.parquet": "6eaf924e9906a0138617909192370f68f06cda0feced7ffe250f10aac7a82519",
    "rounds/0000/global.safetensors": "e67f0126cb322940639424b5d675836f388b54d7abe30621d3df6c7d954db099",
    "rounds/0001/clients/client-000.safetensors": "cd40a8f16e657f3145b082be870a951c0b3debb55dda3d9e958a44cc0ad929a2",
    "rounds/0001/clients/client-001.safetensors": "49935295b1fc6dc71e3ffd6491da46fd146d0010be0f7719f3c7372510ebebe2",
    "rounds/0001/clients/client-002.safetensors": "d3502ee53c60631c9d511c99991a1f36a37d284357cd3a83f892bc205d622921",
    "rounds/0001/global.safetensors": "a3868ff74963083d2a8dfde015ae2cafaa4c0f28f9c04a99dc47634d8e4e9e68",
    "rounds/0002/clients/client-000.safetensors": "05f93e0e52c9b8bb4d44f765b16eee2e3b67359aca893d99f80eae490020707d",
    "rounds/0002/clients/client-001.safetensors": "3711feeccc7a49ffbaaf289c581e4d0db1efd39741faf7d4b8ab72e30a4b2e16",
    "rounds/0002/clients/client-002.safetensors": "81580977dea9fb35b6057075015e2d8a50dca176ff2aa77744efd8a25962e9a4",
    "rounds/0002/global.safetensors": "ccb1152f00fd1107355f8c24dd486834f9a532d524c85cea4861b468636604af",
}


def test_records_of_a_short_run_keep_their_pinned_sha256(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["run", str(PINNED_CONFIG), "--out", str(out), "--quiet"]) == 0
    recorded = {str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest()
                for p in sorted(out.rglob("*")) if p.suffix == ".safetensors" or p.name == "membership.parquet"}
    assert recorded == PINNED_SHA256
