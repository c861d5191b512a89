"""Convert the notebooks here (jupytext percent scripts) to .ipynb and execute them headless.

`make notebooks` runs this, as CI does: each notebook is converted with jupytext, executed with
nbclient in the folder given (default build/notebooks/; a cell that raises fails the run) and saved
there with its outputs. The "Does my strategy leak?"
notebook must show its AUC plot, so an executed notebook without a PNG output there fails too.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import jupytext
import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

HERE = Path(__file__).resolve().parent
NOTEBOOKS = ["leak.py", "paired.py", "audit_app.py"]
NEEDS_PLOT = {"leak.py"}


def execute(script: Path, out: Path, timeout: int = 900) -> Path:
    """Execute one notebook script; write the executed .ipynb into `out` and return its path."""
    notebook = jupytext.read(script)
    client = NotebookClient(notebook, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(out)}})
    try:
        client.execute()
    finally:
        target = out / f"{script.stem}.ipynb"
        nbformat.write(notebook, target)
    if script.name in NEEDS_PLOT and not any("image/png" in output.get("data", {})
                                             for cell in notebook.cells if cell.cell_type == "code" for output in cell.get("outputs", [])):
        raise SystemExit(f"{script.name}: executed without a plot (no image/png output); see {target}")
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", nargs="?", default="build/notebooks", help="folder for the executed .ipynb files")
    parser.add_argument("names", nargs="*", help="notebooks to run (default: all)")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name in args.names or NOTEBOOKS:
        started = time.perf_counter()
        try:
            target = execute(HERE / name, out)
        except CellExecutionError as exc:
            print(f"notebook {name}: failed\n{exc}", file=sys.stderr)
            return 1
        print(f"notebook {name}: executed in {time.perf_counter() - started:.1f} s -> {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
