"""The `fedsim` command. Bad input prints one line (what, where, how to fix) and exits 2."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fedsim.core.errors import FedsimError

USAGE_ERROR = 2

# Every line below that starts with "fedsim " is run through `fedsim check` (or the command's own
# argument validation) by tests/test_examples.py, as are the README's.
EXAMPLES = """examples:
  fedsim run
  fedsim run --set train.rounds=5
  fedsim run configs/location.yaml --out runs/location
  fedsim audit examples/digits-app --set backend.engine=in-process
  fedsim check configs/mnist.yaml --set data.root=../shared/data
  fedsim attack runs/latest --attack loss --attack nasr --rounds 5,10
  fedsim attack runs/latest --attack '{name: inverting_gradients, args: {iterations: 200}}' --rounds 1
  fedsim report runs/latest
  fedsim sweep configs/quickstart.yaml --grid adversary.mode=passive,gradient-ascent --set train.rounds=5
  fedsim reproduce --scale cpu --seeds 3
"""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fedsim",
        description="Simulate federated learning with a curious server or participant and measure membership leakage.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _add_run(commands)
    _add_audit(commands)
    _add_check(commands)
    _add_attack(commands)
    _add_report(commands)
    _add_sweep(commands)
    _add_reproduce(commands)
    return parser


def _add_run(commands: argparse._SubParsersAction) -> None:
    """The `fedsim run` subcommand and its options."""
    run = commands.add_parser("run", help="simulate a federation from a config and record every round")
    run.add_argument("config", nargs="?", help="YAML config (default: the quickstart shipped with fedsim, configs/quickstart.yaml)")
    run.add_argument("--out", type=Path, help="run folder to create (default: runs/<name>-<YYYYmmdd-HHMMSS>)")
    run.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                     help="override a config key, e.g. --set train.rounds=5 (repeatable)")
    run.add_argument("--resume", type=Path, metavar="RUN_DIR", help="continue an interrupted run after its last complete round (its own config)")
    run.add_argument("--force", action="store_true", help="replace the run folder given by --out if it exists")
    run.add_argument("--quiet", action="store_true", help="print only the run folder (and errors); the full log is still written to RUN/run.log")


def _add_audit(commands: argparse._SubParsersAction) -> None:
    """The `fedsim audit` subcommand and its options."""
    audit = commands.add_parser("audit", help="run your own Flower app under audit: record every round, measure its leakage")
    audit.add_argument("app_dir", type=Path, help="the Flower app's folder (its pyproject.toml has [tool.flwr.app] and [tool.fedsim])")
    audit.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="override a fedsim config key of [tool.fedsim], e.g. --set adversary.mode=gradient-ascent (repeatable)")
    audit.add_argument("--run-config", dest="run_config", action="append", default=[], metavar="KEY=VALUE",
                       help="override a key of the app's own run config, as `flwr run --run-config` does, e.g. num-server-rounds=5 (repeatable)")
    audit.add_argument("--out", type=Path, help="run folder to create (default: runs/<name>-<YYYYmmdd-HHMMSS>)")
    audit.add_argument("--force", action="store_true", help="replace the run folder given by --out if it exists")
    audit.add_argument("--quiet", action="store_true", help="print only the run folder (and errors); the full log is still written to RUN/run.log")


def _add_check(commands: argparse._SubParsersAction) -> None:
    """The `fedsim check` subcommand and its options."""
    check = commands.add_parser("check", help="validate a config and its data files without running; print the resolved config")
    check.add_argument("config", nargs="?", help="YAML config (default: the quickstart shipped with fedsim)")
    check.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="override a config key, as for `fedsim run` (repeatable)")


def _add_attack(commands: argparse._SubParsersAction) -> None:
    """The `fedsim attack` subcommand and its options."""
    attack = commands.add_parser("attack", help="run inference attacks on a recorded run and print its leakage rows "
                                 "(reconstruction attacks: their per-round summary)")
    attack.add_argument("run_dir", type=Path, help="a run folder written by `fedsim run`")
    attack.add_argument("--attack", dest="attacks", action="append", metavar="NAME", type=_attack_spec,
                        help="a membership or reconstruction attack by registry name, or a config entry with arguments, e.g. "
                             "'{name: fedmia, args: {measurement: cosine}}' or '{name: imprint}' (repeatable; default: the run's "
                             "config attacks and reconstructions)")
    attack.add_argument("--rounds", type=_round_list, help="rounds to attack, e.g. 5,10,20 (default: every observed round)")
    attack.add_argument("--out", type=Path, help="also write the rows to this CSV file (the leakage rows, or a reconstruction's "
                                                 "per-record rows; with both kinds, those go to OUT-reconstruction.csv beside it)")


def _add_report(commands: argparse._SubParsersAction) -> None:
    """The `fedsim report` subcommand and its options."""
    report = commands.add_parser("report", help="(re)write a complete run's report.html and plots/*.png")
    report.add_argument("run_dir", type=Path, help="a run folder written by `fedsim run`")


def _add_sweep(commands: argparse._SubParsersAction) -> None:
    """The `fedsim sweep` subcommand and its options."""
    sweep = commands.add_parser("sweep", help="run a grid of configs one after another (resumable) and compare them")
    sweep.add_argument("config", help="YAML config every grid point starts from")
    sweep.add_argument("--grid", action="append", default=[], required=True, metavar="KEY=V1,V2",
                       help="a config key and its values, e.g. --grid defense.dp_sgd.noise_multiplier=0.5,1.0 (repeatable: the cartesian product)")
    sweep.add_argument("--out", type=Path, help="sweep folder (default: runs/sweep-<name>); an existing one is resumed")
    sweep.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="override a config key for every grid point (repeatable)")
    sweep.add_argument("--seeds", type=int, metavar="K", help="run every grid point with seeds 0..K-1")
    sweep.add_argument("--baseline", metavar="KEY=VALUE",
                       help="write paired.csv: each setting minus the one with KEY=VALUE, seed by seed, with a 95%% paired t interval")


def _add_reproduce(commands: argparse._SubParsersAction) -> None:
    """The `fedsim reproduce` subcommand and its options."""
    reproduce = commands.add_parser("reproduce", help="run every threat model of Nasr et al. 2019 on configs/paper over seeds; write reproduction.md")
    reproduce.add_argument("--scale", choices=("cpu", "full"), default="cpu", help="CPU-sized configs (minutes here) or the paper's full scale")
    reproduce.add_argument("--seeds", type=int, default=3, help="seeds per threat model (default 3)")
    reproduce.add_argument("--config", dest="configs", action="append", metavar="NAME",
                           help="a config of configs/paper instead of the scale's (repeatable), e.g. --config mnist_cnn_cpu")
    reproduce.add_argument("--out", type=Path, help="reproduction folder (default: runs/reproduce-<scale>); an existing one is resumed")
    reproduce.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                           help="override a config key for every run (repeatable)")


def _round_list(text: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected round numbers separated by commas, e.g. 5,10,20, not {text!r}") from None


def _attack_spec(text: str) -> str | dict:
    """A registry name, or a YAML mapping `{name: ..., args: {...}}` as in a config's `attacks:` list."""
    if not text.lstrip().startswith("{"):
        return text
    import yaml

    try:
        spec = yaml.safe_load(text)
    except yaml.YAMLError:
        spec = None
    if not isinstance(spec, dict) or "name" not in spec:
        raise argparse.ArgumentTypeError(f"expected a registry name or a mapping like '{{name: fedmia, args: {{measurement: cosine}}}}', not {text!r}")
    return spec


def _notes(config) -> None:
    for note in config.notes:
        print(f"fedsim: note: {note}", file=sys.stderr)


def _check(args: argparse.Namespace) -> int:
    """Validate a config as `fedsim run` would (names, data files, ledger sizes, model, strategy)."""
    from fedsim.app.experiment import prepare
    from fedsim.core.config import load_config

    config = load_config(args.config, args.overrides)
    _notes(config)
    notes: list[str] = []
    prepare(config, notes)  # names, data files, ledger sizes, model, strategy: what `fedsim run` checks
    for note in notes:
        print(f"fedsim: note: {note}", file=sys.stderr)
    print(config.to_yaml(), end="")
    print(f"fedsim: {args.config or 'the quickstart'}: valid", file=sys.stderr)
    return 0


def _run(args: argparse.Namespace) -> int:
    from fedsim.app.console import RunConsole
    from fedsim.app.experiment import resume_experiment, run_experiment
    from fedsim.core.config import load_config

    console = RunConsole(quiet=args.quiet)
    if args.resume:
        if args.config or args.overrides or args.out or args.force:
            raise FedsimError("--resume: a resumed run keeps its own config and folder; drop CONFIG, --set, --out and --force")
        folder = resume_experiment(args.resume, console)
    else:
        config = load_config(args.config, args.overrides)  # run_experiment checks it before any folder exists
        _notes(config)
        folder = run_experiment(config, args.out, console, force=args.force)
    print(folder)
    return 0


def _run_config(assignments: list[str]) -> dict:
    """`--run-config key=value` assignments as the app's run config reads them (values parsed as TOML, else strings)."""
    import tomllib

    config = {}
    for assignment in assignments:
        key, sep, value = assignment.partition("=")
        if not sep or not key.strip():
            raise FedsimError(f"--run-config {assignment!r}: expected key=value, e.g. --run-config num-server-rounds=5")
        try:
            config[key.strip()] = tomllib.loads(f"v = {value.strip()}")["v"]
        except tomllib.TOMLDecodeError:
            config[key.strip()] = value.strip()
    return config


def _audit(args: argparse.Namespace) -> int:
    from fedsim.app.audit import run_audit
    from fedsim.app.console import RunConsole

    folder = run_audit(args.app_dir, args.overrides, _run_config(args.run_config), args.out, RunConsole(quiet=args.quiet), force=args.force)
    print(folder)
    return 0


def attack_kinds(specs: list) -> tuple[list, list]:
    """`--attack` entries split into (membership, reconstruction) attacks, each checked; one line naming both
    registries for a name neither holds.
    """
    from attackers.inference.reconstruction.registry import check_reconstructions, is_reconstruction, unknown_attack
    from attackers.inference.registry import ATTACKS, attack_name, check_attacks

    membership, reconstruction = [], []
    for spec in specs:
        if is_reconstruction(spec):
            reconstruction.append(spec)
            continue
        name = attack_name(spec)
        if ":" not in name and name not in ATTACKS:
            raise unknown_attack(name, "--attack", ATTACKS)
        membership.append(spec)
    check_attacks(membership, "--attack")
    check_reconstructions(reconstruction, key="--attack")
    return membership, reconstruction


def _write_rows(rows, out: Path) -> None:
    try:
        rows.to_csv(out, index=False)
    except OSError as exc:
        raise FedsimError(f"--out: cannot write {out} ({exc.strerror}); choose a writable path") from None


def _attack(args: argparse.Namespace) -> int:
    """Membership attacks print their leakage rows, reconstruction attacks their per-round summary; the run folder is not changed."""
    from attackers.inference.leakage import measure_leakage
    from attackers.inference.reconstruction.measure import measure_reconstruction, summarise
    from attackers.inference.reconstruction.registry import check_reconstructions
    from attackers.inference.registry import check_attacks_on
    from fedsim.app.console import RunConsole
    from fedsim.recording.run import Run

    membership, reconstruction = attack_kinds(args.attacks) if args.attacks else (None, None)
    run = Run.open(args.run_dir)
    if reconstruction is None:  # the run's config: its attacks and its reconstructions
        reconstruction = list(run.config.reconstructions)
    check_attacks_on(membership or [], run.config, "--attack")  # what this run recorded offers them
    check_reconstructions(reconstruction, run.config, "--attack")
    if run.status == "failed":
        raise FedsimError(f"{args.run_dir}: the run failed ({run.manifest.error or 'no reason recorded'}); attack a complete run: "
                          f"fix the cause and continue it with `fedsim run --resume {args.run_dir}`, or run it again")
    leakage = rebuilt = None
    with RunConsole() as console:
        if membership is None or membership:
            leakage = measure_leakage(run, membership, args.rounds, progress=console)
            if leakage.why_empty:
                console.print(f"fedsim: no leakage rows: {leakage.why_empty}")
        if reconstruction:
            rebuilt = measure_reconstruction(run, reconstruction, args.rounds, progress=console)
            if rebuilt.why_empty:
                console.print(f"fedsim: no reconstruction rows: {rebuilt.why_empty}")
    if args.out and leakage is not None:
        _write_rows(leakage.rows, args.out)
    if args.out and rebuilt is not None:
        _write_rows(rebuilt.rows, args.out if leakage is None else args.out.with_name(f"{args.out.stem}-reconstruction{args.out.suffix or '.csv'}"))
    if leakage is not None:
        print(leakage.rows.to_csv(index=False), end="")
    if rebuilt is not None:
        if leakage is not None:
            print()
        print(summarise(rebuilt.rows).to_csv(index=False), end="")
    return 0


def _report(args: argparse.Namespace) -> int:
    """Regenerate a complete run's report (e.g. after a fedsim update) and relist it in the manifest."""
    from fedsim.recording.recorder import REPORT_HTML, relist_report
    from fedsim.recording.run import Run
    from fedsim.report.writer import write_report

    run = Run.open(args.run_dir)
    if run.status != "complete":
        raise FedsimError(f"{args.run_dir}: the run is {run.status}, not complete; only a complete run has a report (run it again with `fedsim run`)")
    relist_report(run.folder, write_report(run))
    print(run.folder / REPORT_HTML)
    return 0


def _sweep(args: argparse.Namespace) -> int:
    import pandas as pd

    from fedsim.app.sweep import COMPARISON_CSV, PAIRED_CSV, format_paired, run_sweep

    folder = run_sweep(args.config, args.grid, args.overrides, args.out, seeds=args.seeds, baseline=args.baseline)
    table = pd.read_csv(folder / COMPARISON_CSV)
    print(table.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    if args.baseline is not None:
        print(format_paired(pd.read_csv(folder / PAIRED_CSV)))
    print(folder)
    return 0


def _reproduce(args: argparse.Namespace) -> int:
    from fedsim.app.reproduce import reproduce

    print(reproduce(args.scale, args.seeds, args.out, args.configs, args.overrides))
    return 0


def end_after_interrupt(code: int) -> None:
    """End the process now if threads that an interrupted Ray simulation left behind would keep it alive.

    Flower's Ray engine shuts Ray down when Ctrl-C reaches it, while its worker threads still
    wait on Ray for a client's reply; the interpreter waits for those threads at exit, for
    minutes or for ever. Where such threads remain, Ray is shut down (if it is still up), the
    output flushed, and the process ends with `code` without waiting for them.

    Parameters
    ----------
    code : int
        The exit status (130 after an interrupt).
    """
    import contextlib
    import os
    import threading

    lingering = [t for t in threading.enumerate() if t is not threading.main_thread() and not t.daemon and t.is_alive()]
    if not lingering:
        return
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        with contextlib.suppress(Exception):  # ending anyway: a failed shutdown must not keep the process alive
            ray.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def main(argv: list[str] | None = None) -> int:
    """The `fedsim` command.

    Parameters
    ----------
    argv : list of str, optional
        The arguments after `fedsim`; None: the command line (then an interrupt also ends the
        process at once, see `end_after_interrupt`).

    Returns
    -------
    int
        The exit status: 0, 2 after bad input (one line on stderr), 130 after an interrupt.
    """
    command_line = argv is None
    args = _parser().parse_args(argv)
    try:
        commands = {"run": _run, "audit": _audit, "check": _check, "attack": _attack, "report": _report, "sweep": _sweep, "reproduce": _reproduce}
        return commands[args.command](args)
    except FedsimError as exc:
        print(f"fedsim: error: {exc}", file=sys.stderr)
        return USAGE_ERROR
    except KeyboardInterrupt:
        detail = {"run": "; the run folder is marked failed (continue it with `fedsim run --resume`)",
                  "audit": "; the run folder is marked failed",
                  "sweep": "; run the same sweep again to resume",
                  "reproduce": "; run the same command again to resume"}.get(args.command, "")
        print(f"fedsim: interrupted{detail}", file=sys.stderr)
        if command_line:
            end_after_interrupt(130)
        return 130


if __name__ == "__main__":
    sys.exit(main())
