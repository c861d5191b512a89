"""The `fedsim` command. Bad input prints one line (what, where, how to fix) and exits 2."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fedsim.errors import FedsimError

USAGE_ERROR = 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fedsim",
        description="Simulate federated learning with a curious server or participant and measure membership leakage.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    run = commands.add_parser("run", help="simulate a federation from a config and record every round")
    run.add_argument("config", nargs="?", help="YAML config (default: configs/quickstart.yaml, else the built-in quickstart)")
    run.add_argument("--out", type=Path, help="run folder to create (default: runs/<name>-<YYYYmmdd-HHMMSS>)")
    run.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="override a config key, e.g. --set train.rounds=5 (repeatable)")
    return parser


def _run(args: argparse.Namespace) -> int:
    from fedsim.config import load_config
    from fedsim.runner import run_experiment

    config = load_config(args.config, args.overrides)
    folder = run_experiment(config, args.out)
    print(folder)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return {"run": _run}[args.command](args)
    except FedsimError as exc:
        print(f"fedsim: error: {exc}", file=sys.stderr)
        return USAGE_ERROR
    except KeyboardInterrupt:
        print("fedsim: interrupted; the run folder is marked failed", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
