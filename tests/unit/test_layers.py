"""The package faces are lazy and imports point one way (the import-linter contract in pyproject.toml)."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _loaded_after(statement: str) -> set[str]:
    code = f"import sys; {statement}; print(' '.join(sorted(m.split('.')[0] for m in sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT).stdout
    return set(out.split())


def test_importing_the_error_type_or_the_package_faces_loads_no_heavy_library():
    for statement in ("import fedsim.core.errors", "import fedsim", "import attackers", "import attackers.active",
                      "import attackers.inference", "import strategies", "import fedsim.app.cli"):
        heavy = _loaded_after(statement) & {"torch", "pandas", "flwr", "ray", "datasets", "sklearn"}
        assert not heavy, f"{statement} loads {sorted(heavy)}"


def test_the_layers_contract_holds():
    linter = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run([str(linter)], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stdout[-2000:]
    assert "0 broken" in result.stdout
