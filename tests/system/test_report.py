"""The report and the console, as a person sees them: two real runs made with the `fedsim` command,
their progress and summary on the console, report.html opened in headless Chromium, and a sweep
report of the two side by side."""

from __future__ import annotations

import base64
import html
import io
import json
import os
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from fedsim import Run
from fedsim.app.cli import main
from fedsim.recording.recorder import MANIFEST, is_report_file, sha256_of
from fedsim.report.summary import Summary, tpr_text
from fedsim.report.writer import write_sweep_report

pytestmark = pytest.mark.integration

SMALL = ["data.records_per_client=60", "data.nonmembers=80", "data.test_records=100", "adversary.target_records=40",
         "train.rounds=3", "data.num_clients=3", "train.local_epochs=3", "model.args={hidden: [32]}",
         "attacks=[loss, trajectory]", "backend.engine=in-process"]


def fedsim_run(folder: Path, *extra: str) -> subprocess.CompletedProcess:
    overrides = [arg for setting in SMALL for arg in ("--set", setting)]
    result = subprocess.run([sys.executable, "-m", "fedsim.app.cli", "run", "--out", str(folder), *overrides, *extra],
                            capture_output=True, text=True, timeout=400, cwd=folder.parent,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr
    return result


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, subprocess.CompletedProcess]:
    """Two small real runs made with the command: one as a person runs it, one --quiet with another learning rate."""
    base = tmp_path_factory.mktemp("report")
    return {"plain": fedsim_run(base / "plain"), "quiet": fedsim_run(base / "quiet", "--quiet", "--set", "train.lr=0.01")}


def folder_of(result: subprocess.CompletedProcess) -> Path:
    return Path(result.stdout.strip().splitlines()[-1])


class Page(HTMLParser):
    """The parts of report.html a test checks: images, tagged summary values, and the summary's other text."""

    def __init__(self) -> None:
        super().__init__()
        self.images: list[str] = []
        self.cells: list[tuple[dict, str]] = []  # (data-* attributes, text)
        self.untagged_summary_text: list[str] = []
        self._stack: list[tuple[str, dict]] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img":
            self.images.append(attrs.get("src", ""))
            return
        self._stack.append((tag, attrs))
        if "data-column" in attrs:
            self.cells.append((attrs, ""))

    def handle_endtag(self, tag):
        while self._stack and self._stack.pop()[0] != tag:
            pass

    def handle_data(self, data):
        tagged = [attrs for _, attrs in self._stack if "data-column" in attrs]
        if tagged:
            attrs, text = self.cells[-1]
            self.cells[-1] = (attrs, text + data)
            return
        in_summary = any(attrs.get("id") == "summary" for _, attrs in self._stack)
        prose = any(tag == "th" or "words" in attrs.get("class", "") for tag, attrs in self._stack)
        if in_summary and not prose:
            self.untagged_summary_text.append(data)


def parse(path: Path) -> Page:
    page = Page()
    page.feed(path.read_text(encoding="utf-8"))
    return page


def test_run_shows_progress_bars_on_stderr_and_the_summary_table_on_stdout(runs):
    result = runs["plain"]
    folder = folder_of(result)
    leakage = pd.read_csv(folder / "metrics/leakage.csv")
    bars = {line.split("━")[0].strip(): line for line in result.stderr.splitlines() if "━" in line}
    assert re.search(r" 3/3 ", bars["rounds"]) and re.search(r" 3/3 ", bars["client training"]), result.stderr
    assert re.search(rf" {len(leakage)}/{len(leakage)} ", bars["attack training"]), result.stderr
    assert re.search(r" 3/3 ", bars["feature extraction"]), result.stderr  # the three snapshots the attacks read
    assert "round   3/3  test accuracy" in result.stderr and "threat model: curious server" in result.stderr

    stdout = result.stdout.splitlines()
    assert stdout[-1] == str(folder)
    table = "\n".join(stdout[:-1])
    assert "leakage per attack at its last observed round" in table
    for attack, rows in leakage.groupby("attack"):
        worst = rows.sort_values("round").iloc[-1]  # the headline is the last observed round, fixed in advance
        line = next(line for line in stdout if f" {attack} " in line)
        assert f" {float(worst['auc'])!r} " in line and f" {int(worst['round'])} " in line, line
    final = pd.read_csv(folder / "metrics/training.csv").iloc[-1]
    assert f"final test accuracy {float(final['test_accuracy'])!r} (round 3)" in table


def test_digits_learns_in_a_federated_run(runs):
    """The variant of tests/test_simulation.py's real-data learning test that runs on any clone: the
    quickstart's learning rate, 3 rounds of 3 local epochs, final test accuracy above twice chance."""
    training = pd.read_csv(folder_of(runs["plain"]) / "metrics/training.csv")
    assert training["round"].tolist() == [0, 1, 2, 3] and training["test_accuracy"].iloc[-1] > 2 / 10, training


def test_run_log_holds_the_console_lines_without_bars_or_colour(runs):
    folder = folder_of(runs["plain"])
    log = (folder / "run.log").read_text()
    assert "round   3/3  test accuracy" in log and "threat model:" in log and "leakage per attack at its last observed round" in log
    assert "final test accuracy" in log and "\x1b[" not in log
    assert not any(line.startswith(("rounds ", "client training", "feature extraction", "attack training")) for line in log.splitlines())


def test_quiet_prints_only_the_run_folder_and_still_logs(runs):
    result = runs["quiet"]
    folder = folder_of(result)
    assert result.stdout == f"{folder}\n" and result.stderr == ""
    assert "round   3/3" in (folder / "run.log").read_text()
    assert Run.open(folder).status == "complete" and (folder / "report.html").is_file()


def test_every_number_in_the_report_summary_equals_the_metrics_tables(runs):
    folder = folder_of(runs["plain"])
    page = parse(folder / "report.html")
    tables = {name: pd.read_csv(folder / name) for name in ("metrics/leakage.csv", "metrics/training.csv")}
    assert len(page.cells) > 20
    for attrs, text in page.cells:
        expected = tables[attrs["data-source"]].at[int(attrs["data-row"]), attrs["data-column"]]
        if isinstance(expected, str):
            assert text == expected, attrs
        else:
            assert float(text) == float(expected), (attrs, text, expected)
    untagged = "".join(page.untagged_summary_text)
    assert not re.search(r"\d", untagged), untagged  # every number in the summary is a tagged table value

    leakage = tables["metrics/leakage.csv"]
    headline = next(int(attrs["data-row"]) for attrs, _ in page.cells if attrs["data-column"] == "auc")
    assert leakage.at[headline, "round"] == leakage["round"].max()  # the headline is a last observed round
    assert leakage.at[headline, "attack"] == "loss"  # of the first attack listed (attacks=[loss, trajectory]), whatever its AUC
    assert {attrs["data-row"] for attrs, _ in page.cells if attrs["data-source"] == "metrics/training.csv"} == {str(len(tables["metrics/training.csv"]) - 1)}


def _text(markup: str) -> str:
    return html.unescape(re.sub(r"<[^>]+>", "", markup))


@pytest.mark.parametrize("name", ["plain", "quiet"])
def test_report_headline_and_per_attack_rows_are_the_rows_picked_here_from_leakage_csv(runs, name):
    """Picked here, without fedsim.report.summary: for each attack its row at its highest round, in the order
    of the config's attacks; the headline is the first listed attack's (fixed before the run), with its
    TPRs at FPR 1e-2 and 1e-3 as written in the file, or "n/a (needs >= 1/FPR non-members)" where the
    row has fewer non-members than that."""
    folder = folder_of(runs[name])
    page = (folder / "report.html").read_text(encoding="utf-8")
    leakage = pd.read_csv(folder / "metrics/leakage.csv")
    assert sorted(set(leakage["round"])) == [1, 2, 3]
    picked = [max(rows.index, key=lambda i: leakage.at[i, "round"]) for _, rows in leakage.groupby("attack", sort=False)]
    assert [leakage.at[i, "attack"] for i in picked] == ["loss", "trajectory"]
    table = re.search(r"<h3>Each attack at its last observed round</h3>(.*?)</table>", page, re.S).group(1)
    body_rows = re.findall(r"<tr>(.*?)</tr>", table, re.S)[1:]
    assert [sorted(set(re.findall(r'data-row="(\d+)"', row))) for row in body_rows] == [[str(i)] for i in picked]
    for row_html, index in zip(body_rows, picked):
        cells = re.findall(r"<td[^>]*>(.*?)</td>", row_html, re.S)
        assert cells[0] == str(leakage.at[index, "round"]) and cells[2] == leakage.at[index, "attack"]
        assert float(cells[4]) == leakage.at[index, "auc"]

    headline = _text(re.search(r'<p class="headline">(.*?)</p>', page, re.S).group(1))
    top = leakage.loc[picked[0]]
    assert f"AUC {float(top['auc'])!r}" in headline and f"at round {top['round']}," in headline and f"'s {top['attack']} attack" in headline

    def expected(column: str, fpr: float) -> str:
        value = top[column]
        if top["n_nonmembers"] * fpr < 1:  # fewer than 1/FPR non-members: not measurable
            assert pd.isna(value)
            return f"n/a (needs >= {round(1 / fpr)} non-members)"
        return repr(float(value))

    low_fpr = f"TPR {expected('tpr_at_fpr_1e-2', 1e-2)} at FPR 1e-2 and {expected('tpr_at_fpr_1e-3', 1e-3)} at FPR 1e-3"
    assert low_fpr in headline, headline
    assert f"over {top['n_members']} members and {top['n_nonmembers']} non-members" in headline


def test_report_images_are_embedded_pngs_equal_to_the_listed_plots(runs):
    folder = folder_of(runs["plain"])
    page = parse(folder / "report.html")
    manifest = json.loads((folder / MANIFEST).read_text())
    plots = sorted((folder / "plots").glob("*.png"))
    names = {p.stem for p in plots}
    assert {"auc_per_round", "tpr_per_round", "roc", "loss_per_class", "gradient_norm_per_class", "accuracy_per_class", "utility_per_round",
            "privacy_audit"} == names
    embedded = []
    for src in page.images:
        assert src.startswith("data:image/png;base64,"), src[:40]
        payload = base64.b64decode(src.split(",", 1)[1], validate=True)
        with Image.open(io.BytesIO(payload)) as image:
            image.verify()
        embedded.append(payload)
    assert sorted(embedded) == sorted(p.read_bytes() for p in plots)
    for relative in [f"plots/{p.name}" for p in plots] + ["report.html"]:
        assert manifest["files"][relative] == sha256_of(folder / relative)


def _chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        pytest.skip("chromium not installed (Debian: apt-get install chromium); report.html was not opened in a browser")
    return found


def _headless(browser: str, profile: Path, *args: str) -> subprocess.CompletedProcess:
    command = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", f"--user-data-dir={profile}", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


def test_report_opens_in_headless_chromium_without_broken_images(runs, tmp_path):
    browser = _chromium()
    report = folder_of(runs["plain"]) / "report.html"
    shot = tmp_path / "report.png"
    result = _headless(browser, tmp_path / "profile", f"--screenshot={shot}", "--window-size=1100,1800", report.as_uri())
    assert shot.is_file(), result.stderr[-2000:]
    with Image.open(shot) as image:
        grey = np.asarray(image.convert("L"))
    assert grey.shape == (1800, 1100)
    assert (grey < 200).mean() > 0.02 and grey.std() > 20  # text and plots, not a blank page

    # The browser's own verdict on every image: loaded and decoded (naturalWidth > 0).
    probe = tmp_path / "probe.html"
    script = ("<script>addEventListener('load', () => { const i = [...document.images];"
              " document.body.dataset.images = i.length;"
              " document.body.dataset.broken = i.filter(x => !x.complete || x.naturalWidth === 0).length; });</script>")
    probe.write_text(report.read_text(encoding="utf-8").replace("</body>", script + "</body>"), encoding="utf-8")
    dom = _headless(browser, tmp_path / "profile", "--dump-dom", probe.as_uri()).stdout
    images = len(parse(report).images)
    assert f'data-images="{images}"' in dom and 'data-broken="0"' in dom, dom[:300]


def test_fedsim_report_rewrites_the_report_and_relists_it(runs, tmp_path, capsys):
    folder = shutil.copytree(folder_of(runs["plain"]), tmp_path / "copy")
    before = json.loads((folder / MANIFEST).read_text())
    stale = "2000-01-01T00:00:00+00:00"
    (folder / MANIFEST).write_text(json.dumps(before | {"updated": stale}))
    (folder / "report.html").unlink()
    shutil.rmtree(folder / "plots")
    assert main(["report", str(folder)]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == str(folder / "report.html")
    after = json.loads((folder / MANIFEST).read_text())
    assert after["updated"] != stale and after["updated"] >= before["updated"]
    assert {k: v for k, v in after.items() if k not in ("updated", "files")} == {k: v for k, v in before.items() if k not in ("updated", "files")}
    # the records' and metrics' entries unchanged; the report files relisted, each with its file's sha256
    kept = {k: v for k, v in before["files"].items() if not is_report_file(k)}
    assert kept and {k: v for k, v in after["files"].items() if not is_report_file(k)} == kept
    assert any(k.startswith("metrics/") for k in kept) and any(k.startswith("rounds/") for k in kept)
    written = ["report.html", *(f"plots/{p.name}" for p in (folder / "plots").glob("*.png"))]
    assert sorted(k for k in after["files"] if is_report_file(k)) == sorted(written)
    for relative in written:
        assert after["files"][relative] == sha256_of(folder / relative)
    original, run = Run.open(folder_of(runs["plain"])), Run.open(folder)  # the records still verify against the manifest
    assert all(tensor.equal(original.state(3, 0)[name]) for name, tensor in run.state(3, 0).items())


def test_fedsim_report_refuses_a_folder_that_is_not_a_complete_run(runs, tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("fedsim: error:") and "not a fedsim run folder" in err[0]

    folder = shutil.copytree(folder_of(runs["plain"]), tmp_path / "running")
    manifest = json.loads((folder / MANIFEST).read_text())
    (folder / MANIFEST).write_text(json.dumps({**manifest, "status": "running"}))
    assert main(["report", str(folder)]) == 2
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("fedsim: error:") and "not complete" in err[0] and captured.out == ""


def test_sweep_report_shows_the_runs_side_by_side_and_privacy_against_utility(runs, tmp_path):
    folders = [folder_of(runs[name]) for name in ("plain", "quiet")]
    table = pd.DataFrame({"run": ["plain", "quiet"], "train.lr": [0.1, 0.01]})
    report = write_sweep_report(tmp_path, folders, table)
    assert report == tmp_path / "report.html"
    page = parse(report)
    text = report.read_text(encoding="utf-8")
    assert {p.name for p in (tmp_path / "plots").glob("*.png")} == {"privacy_utility.png", "auc_per_round_by_run.png"}
    assert len(page.images) == 2 + 2 * len(folders)  # the two sweep plots, then AUC and utility per run
    for src in page.images:
        with Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1]))) as image:
            image.verify()
    for folder in folders:
        assert f'href="{folder}/report.html"' in text  # each run's column links to its own report
        leakage = pd.read_csv(folder / "metrics/leakage.csv")
        final = float(pd.read_csv(folder / "metrics/training.csv")["test_accuracy"].iloc[-1])
        for attack, auc in leakage.sort_values("round").groupby("attack")["auc"].last().items():
            # the privacy-utility table: the attack's AUC at its last observed round, beside the run's final test accuracy
            row = (rf"<td>{re.escape(str(folder))}</td><td>server</td><td>{attack}</td><td>\d+</td>"
                   rf"<td>{re.escape(repr(final))}</td><td>{re.escape(repr(float(auc)))}</td>")
            assert re.search(row, text), attack
    assert "<td>plain</td><td>0.1</td></tr><tr><td>quiet</td><td>0.01</td>" in text  # the sweep's own comparison table, as given


def test_summary_headline_is_the_last_round_and_the_maximum_is_selected_on_the_other_half():
    leakage = pd.DataFrame({
        "round": [1, 2, 3, 3], "attacker": "server", "attack": ["loss", "loss", "loss", "nasr"], "target": "client-000",
        "auc": [0.7, 0.9, 0.6, 0.8], "tpr_at_fpr_1e-3": [0.2, 0.0, 0.1, float("nan")],
        "auc_select": [0.72, 0.95, 0.61, 0.8], "auc_holdout": [0.68, 0.85, 0.59, 0.8],
    })
    summary = Summary(leakage, pd.DataFrame({"round": [0, 1], "test_accuracy": [0.1, 0.5]}), "words")
    assert summary.per_attack.set_index("attack")["round"].to_dict() == {"nasr": 3, "loss": 3}  # never round 2's 0.9
    assert summary.headline["attack"] == "loss" and summary.headline.name == 2  # the first attack listed, though nasr's AUC is higher
    assert summary.selected.name == 1 and summary.selected["auc_holdout"] == 0.85  # chosen on one half, reported on the other
    assert tpr_text(leakage.iloc[3], "tpr_at_fpr_1e-3") == "n/a (needs >= 1000 non-members)"
    assert summary.final_training["round"] == 1 and isinstance(summary.final_training["round"], (int, np.integer))
