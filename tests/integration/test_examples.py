"""Every example runs as shown: the command lines of README.md, of the documentation pages (docs/) and of `fedsim --help` are
validated the way the command itself would (`fedsim check`, or the command's own argument
checks), one quickstart whatever the working folder, and the README's Python snippet runs."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from fedsim.app.audit import prepare_audit
from fedsim.app.cli import EXAMPLES, _parser, attack_kinds, main
from fedsim.app.reproduce import SCALES, plan
from fedsim.app.sweep import sweep_configs
from fedsim.core.config import load_config, quickstart_path
from fedsim.core.errors import FedsimError

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()
DOCS = "\n".join(page.read_text() for page in sorted((ROOT / "docs").rglob("*.md")))  # the documentation site's pages
COMMANDS = {"run", "audit", "check", "attack", "report", "sweep", "reproduce", "--help"}
PLACEHOLDER = re.compile(r"\[|\.\.\.|\b(CONFIG|RUN_DIR|APP_DIR|DIR|NAME|CSV|COMMAND)\b")


def _readme_command_lines() -> list[str]:
    lines = []
    for block in re.findall(r"```(?:sh|bash|console)?\n(.*?)```", README + DOCS, flags=re.S):
        joined = re.sub(r"\\\n\s*", " ", block)
        for line in joined.splitlines():
            line = line.strip().removeprefix("$ ")
            words = line.split()
            if line.startswith("fedsim ") and words[1] in COMMANDS and not PLACEHOLDER.search(line.split("#")[0]):
                lines.append(line.split(" #")[0].strip())
    return lines


def _help_command_lines() -> list[str]:
    parser = _parser()
    texts = [parser.format_help()]
    texts += [sub.format_help() for action in parser._subparsers._group_actions for sub in action.choices.values()]
    return sorted({line.strip() for text in texts for line in text.splitlines() if line.strip().startswith("fedsim ")})


EXAMPLE_LINES = sorted(set(_readme_command_lines()) | set(_help_command_lines()))


def test_the_examples_are_collected():
    assert "fedsim run --set train.rounds=5" in EXAMPLE_LINES
    assert any(line.startswith("fedsim sweep") for line in EXAMPLE_LINES)
    assert set(EXAMPLES.split("\n")[1:-1]) <= {"  " + line for line in EXAMPLE_LINES}


def _needs_missing_data(argv: list[str]) -> str | None:
    """The data folder an example names, when this checkout has no ../shared/data beside it."""
    text = " ".join(argv)
    if ("location" in text or "mnist" in text or "cifar" in text) and not (ROOT.parent / "shared" / "data").exists():
        return "../shared/data is absent"
    return None


@pytest.mark.parametrize("line", EXAMPLE_LINES)
def test_every_example_command_line_is_valid(line, monkeypatch, capsys):
    monkeypatch.chdir(ROOT)  # the README's paths are relative to the project's root
    argv = shlex.split(line)[1:]
    if reason := _needs_missing_data(argv):
        pytest.skip(reason)
    if argv == ["--help"]:
        with pytest.raises(SystemExit) as done:
            main(argv)
        assert done.value.code == 0
        return
    args = _parser().parse_args(argv)  # argparse's own validation (exits 2 on a bad line)
    if args.command in ("run", "check") and not getattr(args, "resume", None):
        assert main(["check", *([args.config] if args.config else []), *(a for o in args.overrides for a in ("--set", o))]) == 0, \
            capsys.readouterr().err
    elif args.command == "sweep":
        assert sweep_configs(args.config, args.grid, args.overrides)
    elif args.command == "reproduce":
        assert plan(args.configs or SCALES[args.scale], args.seeds, Path("unused"), overrides=args.overrides)
    elif args.command == "attack":
        attack_kinds(args.attacks or [])
    elif args.command == "audit":
        assert prepare_audit(args.app_dir, args.overrides).config.app is not None


def test_one_quickstart_from_any_folder(tmp_path, monkeypatch):
    link = ROOT / "configs" / "quickstart.yaml"
    assert link.resolve() == quickstart_path().resolve()  # the checkout's file is the packaged one
    from_file = load_config(link)
    monkeypatch.chdir(tmp_path)
    assert load_config(None) == from_file
    for rounds in (5, 2):
        monkeypatch.chdir(ROOT)
        here = load_config(None, [f"train.rounds={rounds}"])
        monkeypatch.chdir(tmp_path)
        elsewhere = load_config(None, [f"train.rounds={rounds}"])
        assert here == elsewhere and here.train.rounds == rounds
        assert here.observed_rounds() == list(range(1, rounds + 1))  # the quickstart observes every round


@pytest.mark.parametrize(("rounds", "observed"), [(20, [5, 10, 15, 20]), (12, [5, 10, 12]), (5, [5]), (3, [3]), (1, [1])])
def test_observe_every_follows_train_rounds(rounds, observed):
    assert load_config(None, [f"train.rounds={rounds}", "observe_every=5"], default_file=False).observed_rounds() == observed


def test_file_rounds_beyond_a_shortened_run_are_dropped_with_a_note(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train: {rounds: 20}\nobserve_rounds: [5, 10, 15, 20]\nadversary: {mode: gradient-ascent, active_rounds: [2, 18]}\n")
    config = load_config(path, ["train.rounds=12"])
    assert config.observe_rounds == [5, 10] and config.adversary.active_rounds == [2]
    assert len(config.notes) == 2 and all("train.rounds=12" in note for note in config.notes)
    assert load_config(path, ["train.rounds=3"]).observe_rounds == [3]  # none left: the last round
    assert load_config(path).notes == [] and load_config(path).observe_rounds == [5, 10, 15, 20]


def test_rounds_the_user_sets_explicitly_keep_the_one_line_error(tmp_path):
    with pytest.raises(FedsimError, match=r"observe_rounds has round 10, outside 1\.\.5"):
        load_config(None, ["train.rounds=5", "observe_rounds=[5, 10]"], default_file=False)
    path = tmp_path / "c.yaml"
    path.write_text("train: {rounds: 5}\nobserve_rounds: [5, 10]\n")
    with pytest.raises(FedsimError, match="outside 1..5"):  # a file's own inconsistency is the user's too
        load_config(path)
    with pytest.raises(FedsimError, match="observe_rounds and observe_every are both set"):
        load_config(None, ["observe_rounds=[1]", "observe_every=2"], default_file=False)


def test_check_prints_the_resolved_config_and_exits_0(capsys):
    assert main(["check", "--set", "train.rounds=2"]) == 0
    captured = capsys.readouterr()
    assert "rounds: 2" in captured.out and "observe_every: 1" in captured.out and "valid" in captured.err


@pytest.mark.parametrize(("argv", "fragment"), [
    (["check", "--set", "data.dataset=nope"], "unknown dataset 'nope'"),
    (["check", "--set", "data.records_per_client=5000"], "the run needs"),
    (["check", "--set", "data.dataset=mnist", "--set", "data.root=/nonexistent"], "not found"),
    (["check", "missing.yaml"], "config file not found"),
])
def test_check_refuses_bad_input_with_one_line_and_exit_2(argv, fragment, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert fragment in err and "\n" not in err


def _readme_python_snippet() -> str:
    return next(block for block in re.findall(r"```python\n(.*?)```", README, flags=re.S) if "fedsim.simulate(" in block)


@pytest.mark.integration
def test_the_readme_python_snippet_runs_as_written(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    exec(compile(_readme_python_snippet(), "README.md (Python API)", "exec"), {})
    out = capsys.readouterr().out
    assert "complete [0, 1, 2]" in out and "loss" in out
    run_folder = tmp_path / "runs" / "notebook"
    assert (run_folder / "manifest.json").is_file()
