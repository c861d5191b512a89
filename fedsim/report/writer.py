"""The report people look at: one self-contained report.html (plots embedded as PNG data URIs)
and the same plots as plots/*.png.

A run's report opens with a summary: the headline attack's leakage at its last observed round and
its canaries' privacy audit (attack and round fixed before the run), each attack's row at its
last observed round, the maximum over rounds and attacks selected on one half of the targets and
reported on the other (labelled as selected), the final test accuracy, and the threat model in words. Every number in the summary is a cell of
metrics/leakage.csv or metrics/training.csv, shown as written there and tagged with where it
comes from (`data-source`, `data-row`, `data-column`), so a reader's script, or a test, can
check it. Then: AUC and TPR at low FPR per round with confidence bands, the last round's ROC
curves (linear and log-log), members vs non-members of loss and last-layer gradient norm per
class (computed by the attackers' own feature code on the attacker's last snapshot), attack
accuracy per class, and utility per round. A run that measured reconstruction attacks (config
`reconstructions`) also gets a grid of originals against reconstructions (image records only) and
the fraction of records recovered and mean PSNR per round against the baseline.

A sweep's report (`write_sweep_report`) puts its runs side by side and plots privacy against
utility.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
import pandas as pd
from jinja2 import DictLoader, Environment, StrictUndefined, Template
from markupsafe import Markup
from matplotlib.figure import Figure

from attackers.inference.audit import accountant_epsilon, renamed_columns
from attackers.inference.reconstruction.measure import summarise, tensor_key
from attackers.inference.reconstruction.quality import PSNR_THRESHOLD_DB, Scale
from attackers.inference.threat_models import attacker_view
from fedsim.core.errors import FedsimError
from fedsim.core.layout import RECONSTRUCTION_CSV, RECONSTRUCTIONS
from fedsim.core.threat_model import ThreatModel
from fedsim.recording.recorder import LEAKAGE_CSV, PER_CLASS_CSV, PLOTS, REPORT_HTML, ROC_CSV, TRAINING_CSV, write_atomically
from fedsim.recording.run import Run
from fedsim.report import plots
from fedsim.report.summary import Summary, display, tpr_text
from fedsim.report.template import REPORT_HTML as TEMPLATE


@dataclass(frozen=True)
class Plot:
    """A rendered figure: its file name under plots/, a heading, and what it shows; or, when
    there is nothing to draw, no png and a caption saying why (the report shows the note).
    """

    name: str
    title: str
    caption: str
    png: bytes | None


def _render(name: str, title: str, caption: str, figure: Figure) -> Plot:
    return Plot(name, title, caption, plots.png(figure))


def _skipped(name: str, title: str, why: str) -> Plot:
    return Plot(name, title, f"Not drawn: {why}.", None)


def record_signals(run: Run) -> pd.DataFrame:
    """Per target record on the attacker's last observed snapshot: class, member, loss, last-layer gradient norm.

    Uses the attackers' Observation (one batched backward pass, attackers/features.py), so these
    are the signals the attacks saw. Empty without an adversary.
    """
    view = attacker_view(run)
    if view is None or not view.observation.rounds:
        return pd.DataFrame(columns=["record_id", "class", "member", "loss", "last_layer_gradient_norm", "round"])
    last = view.observation.rounds[-1]
    features = view.observation.features(view.eval_ids, last)
    (layer,) = features.gradients.values()  # 'last': the model's last parametrised layer
    return pd.DataFrame({
        "record_id": view.eval_ids,
        "class": features.labels.numpy(),
        "member": view.eval_members,
        "loss": features.loss.numpy(),
        "last_layer_gradient_norm": layer.squared_norm().sqrt().numpy(),
        "round": last,
    })


def run_plots(run: Run, summary: Summary) -> list[Plot]:
    """Every figure of a run's report, in reading order."""
    figures = []
    leakage = summary.leakage
    if not leakage.empty:
        last_round = int(leakage["round"].max())
        figures += _per_round_plots(leakage)
        figures.append(_roc_plot(run, leakage, last_round))
        figures += _signal_plots(run)
        figures.append(_per_class_plot(run, last_round))
        if "epsilon_empirical" in leakage:
            figures.append(_audit_plot(run, summary))
    figures += _reconstruction_plots(run)
    if not summary.training.empty:
        figures.append(_render("utility_per_round", "Training utility per round", "The global model on the utility test split (metrics/training.csv).",
                               plots.utility_per_round(summary.training)))
    return figures


def _per_round_plots(leakage: pd.DataFrame) -> list[Plot]:
    """AUC and TPR at low FPR of every attack per round, with their bands."""
    return [
        _render("auc_per_round", "Leakage per round", "Membership AUC of every attack, each round it was run; bands are 95% bootstrap intervals.",
                plots.auc_per_round(leakage)),
        _render("tpr_per_round", "TPR at low FPR per round",
                "True positive rate at false positive rates 1e-2 and 1e-3; bands are 95% bootstrap intervals (members and "
                "non-members resampled together, so the threshold the non-members set moves with them).",
                plots.tpr_per_round(leakage)),
    ]


def _roc_plot(run: Run, leakage: pd.DataFrame, last_round: int) -> Plot:
    """The last round's ROC curves (metrics/roc.csv), linear and log-log; a note when roc.csv has no rows."""
    last = leakage[leakage["round"] == last_round]
    roc = run.table(ROC_CSV)
    title = "ROC curves of the last round"
    if not len(roc):
        return _skipped("roc", title, "metrics/roc.csv has no rows")
    return _render("roc", title, f"Round {last_round}: linear axes, and log-log axes for the low-FPR regime.",
                   plots.roc_curves(roc, int(last["n_nonmembers"].max()), last_round))


def _signal_plots(run: Run) -> list[Plot]:
    """Loss and last-layer gradient norm per class, members vs non-members, on the attacker's last snapshot."""
    signals = record_signals(run)
    snapshot = f"target records on the attacker's last snapshot (round {int(signals['round'].iloc[0])})" if len(signals) else "target records"
    figures = []
    for name, title, column, label, caption in (
        ("loss_per_class", "Loss per class, members vs non-members", "loss", "loss", f"Per-example loss of the {snapshot}."),
        ("gradient_norm_per_class", "Last-layer gradient norm per class, members vs non-members", "last_layer_gradient_norm",
         "last-layer gradient norm",
         f"Norm of the per-example gradient of the last layer's parameters, {snapshot} (Nasr et al., Fig. 2)."),
    ):
        figures.append(_render(name, title, caption, plots.class_distributions(signals, column, label)) if len(signals)
                       else _skipped(name, title, "the attacker observed no snapshot"))
    return figures


def _per_class_plot(run: Run, last_round: int) -> Plot:
    """Each attack's balanced accuracy per class (metrics/leakage_per_class.csv); a note when it has no rows."""
    per_class = run.table(PER_CLASS_CSV)
    title = "Attack accuracy per class"
    if not len(per_class):
        return _skipped("accuracy_per_class", title, "no class holds both a member and a non-member target "
                        "(metrics/leakage_per_class.csv has no rows); give the run more targets")
    return _render("accuracy_per_class", title,
                   f"Balanced accuracy of each attack per class, round {last_round} (metrics/leakage_per_class.csv).",
                   plots.accuracy_per_class(per_class))


def _audit_plot(run: Run, summary: Summary) -> Plot:
    """The accountant's epsilon against the attacks' lower bounds per round, with the gap in words."""
    accountant = accountant_epsilon(run.config, summary.training)
    return _render("privacy_audit", "Privacy audit: the accountant's epsilon vs what the canaries prove",
                   audit_gap(summary.leakage, accountant, summary.headline_name),
                   plots.privacy_audit(summary.leakage, accountant, summary.headline_name))


def has_reconstruction(run: Run) -> bool:
    """Whether the run measured reconstruction attacks (metrics/reconstruction.csv exists)."""
    return RECONSTRUCTION_CSV in run.manifest.files or (run.folder / RECONSTRUCTION_CSV).is_file()


GRID_RECORDS = 8  # records per attack in the grid of originals against reconstructions


def _reconstruction_plots(run: Run) -> list[Plot]:
    """The grid of originals against reconstructions and the per-round quality, when the run has reconstruction.csv."""
    if not has_reconstruction(run):
        return []
    rows = run.table(RECONSTRUCTION_CSV)
    title = "Reconstructions: originals against what the attacks rebuilt"
    if rows.empty:
        return [_skipped("reconstruction_grid", title, "metrics/reconstruction.csv has no rows (the adversary observed no update "
                         "the attacks could read; run.log says why)")]
    summary = summarise(rows)
    quality = _render("reconstruction_quality", "Reconstruction quality per round",
                      f"Left: the fraction of the true records recovered (PSNR >= {PSNR_THRESHOLD_DB:g} dB on [0, 1] records, after the "
                      "least-MSE pairing of reconstructions with records). Right: the mean PSNR of the records paired with a reconstruction "
                      "(each capped at 100 dB), and dashed the baseline every attack must beat: the mean of the attacker's known "
                      "non-members, scored against every true record (metrics/reconstruction.csv).",
                      plots.reconstruction_quality(summary, PSNR_THRESHOLD_DB))
    return [_reconstruction_grid(run, rows, title), quality]


def _reconstruction_grid(run: Run, rows: pd.DataFrame, title: str) -> Plot:
    """Per attack, at the last round it ran: the first records (ledger order) that have a reconstruction, and theirs."""
    scale = Scale.of_pool(run.pool)
    if not scale.image:
        return _skipped("reconstruction_grid", title, "the records are tabular (rows of features), not images, so there is no grid; "
                        "each record's scores are in metrics/reconstruction.csv")
    try:
        tensors = run.tensors(RECONSTRUCTIONS)
    except FedsimError as exc:
        return _skipped("reconstruction_grid", title, str(exc))
    panels, notes = [], []
    for (attacker, attack), group in rows.groupby(["attacker", "attack"], sort=False):
        last = int(group["round"].max())
        at = group[group["round"] == last]
        paired = at[at["psnr"].notna()].head(GRID_RECORDS)
        notes.append(f"{attacker}/{attack}, round {last}: {int(at['psnr'].notna().sum())} of {len(at)} records have a reconstruction")
        if paired.empty or tensor_key(attack, last, "x") not in tensors:
            continue
        ids = paired["record_id"].to_numpy()
        paired_with = tensors[tensor_key(attack, last, "record_id")].numpy()
        index = [int(np.flatnonzero(paired_with == i)[0]) for i in ids]
        rebuilt = tensors[tensor_key(attack, last, "x")][index]
        originals = run.records(ids)[0]
        panels.append((f"{attacker}/{attack}, round {last}", _pixels(scale, originals), _pixels(scale, rebuilt),
                       [f"{v:.1f} dB" for v in paired["psnr"]]))
    if not panels:
        return _skipped("reconstruction_grid", title, "no true record has a reconstruction (" + "; ".join(notes) + ")")
    return _render("reconstruction_grid", title,
                   "For each attack at the last round it ran, the first of the targeted records (ledger order) that have a "
                   "reconstruction, above what the attack rebuilt and its PSNR; " + "; ".join(notes) + ".",
                   plots.reconstruction_grid(panels))


def _pixels(scale: Scale, x) -> np.ndarray:
    """Records (n, C, H, W) in model input space -> (n, H, W, C) in [0, 1]."""
    return scale.unit(x).permute(0, 2, 3, 1).numpy()


def audit_gap(leakage: pd.DataFrame, accountant: pd.DataFrame, headline: str | None = None) -> str:
    """The privacy audit of the last round in words: the canaries' lower bound beside the accountant's epsilon.

    The lower bound is the one-run canary audit (Steinke et al. 2023) of the `headline` attack,
    fixed before the run, a 95% lower bound on epsilon. The empirical epsilon of the targets
    follows, labelled as not a DP lower bound: the best attack selected by its value on one half of
    the targets (`epsilon_empirical_select`) and reported by its value on the other half
    (`epsilon_empirical_holdout`), the halves of `auc_select` and `auc_holdout`
    (`attackers.inference.leakage.target_halves`); a leakage.csv written before these columns
    existed falls back to the value on every target, and says so.

    Parameters
    ----------
    leakage : pandas.DataFrame
        leakage.csv (older column names are read as the present ones).
    accountant : pandas.DataFrame
        `attackers.inference.audit.accountant_epsilon`: round, epsilon, accountant.
    headline : str, optional
        The headline attack; None: no canary bound is reported.

    Returns
    -------
    str
        One paragraph.
    """
    leakage = renamed_columns(leakage)
    last = int(leakage["round"].max())
    rows = leakage[leakage["round"] == last]
    canary = rows[rows["attack"] == headline]["canary_epsilon_lower_bound"] if "canary_epsilon_lower_bound" in rows else pd.Series([])
    lower = float(canary.iloc[0]) if len(canary) and pd.notna(canary.iloc[0]) else None
    if lower is None:
        proven = "no canaries in this run (audit.canaries: 0), so no lower bound on epsilon was measured"
    elif lower > 0:
        proven = f"the canaries prove epsilon >= {lower:.3g} at 95% confidence against the headline attack ({headline}, fixed before the run)"
    else:
        proven = f"the canaries prove no epsilon above 0 at 95% confidence against the headline attack ({headline}, fixed before the run)"
    known = accountant[accountant["round"] == last]
    upper = float(known["epsilon"].iloc[0]) if len(known) else None
    if upper is None:
        text = f"Round {last}: {proven}; no defence accounts for privacy in this run, so there is no upper bound to compare."
    elif not np.isfinite(upper):
        text = f"Round {last}: {proven}; the accountant gives no finite epsilon (noise 0), so the gap is unbounded."
    elif lower is None or lower <= 0:
        text = f"Round {last}: the accountant guarantees epsilon <= {upper:.3g}; {proven}: the gap is the whole of it."
    else:
        text = (f"Round {last}: the accountant guarantees epsilon <= {upper:.3g}; {proven}: the true epsilon lies between, "
                f"a gap of {upper - lower:.3g} (the upper bound is {upper / lower:.3g} times the lower).")
    halves = "epsilon_empirical_select" in rows.columns and rows["epsilon_empirical_select"].notna().any()
    if halves:
        best = rows.sort_values("epsilon_empirical_select", ascending=False, kind="stable").iloc[0]
        empirical = (f"{float(best['epsilon_empirical_holdout']):.3g} on one half of the targets for the best attack ({best['attack']}, "
                     f"selected by its value on the other half, {float(best['epsilon_empirical_select']):.3g})")
    else:
        best = rows.sort_values("epsilon_empirical", ascending=False, kind="stable").iloc[0]
        empirical = (f"{float(best['epsilon_empirical']):.3g} for the best attack ({best['attack']}, chosen on every target: this "
                     f"leakage.csv has no halves; point estimate {float(best['epsilon_empirical_point']):.3g})")
    return (f"{text} The empirical epsilon of the targets is {empirical}; it is not a DP lower bound, "
            "since the targets of one run are not independent trials.")


@cache
def _template() -> Template:
    """The report template (fedsim.report.template), autoescaped: table values and captions are text."""
    environment = Environment(loader=DictLoader({"report.html.j2": TEMPLATE}), autoescape=True, undefined=StrictUndefined)
    environment.filters["display"] = display
    environment.filters["display_or_blank"] = lambda value: "" if pd.isna(value) else display(value)
    environment.filters["b64"] = lambda png: base64.b64encode(png).decode("ascii")
    environment.tests["missing"] = lambda value: value is None or bool(pd.isna(value))
    environment.globals["tpr_text"] = tpr_text
    return environment.get_template("report.html.j2")


def _macro(name: str) -> Callable[..., str]:
    """A macro of the report template; it returns autoescaped Markup."""
    return getattr(_template().module, name)


def summary_html(summary: Summary, section_id: str = "summary") -> str:
    """The summary section; its numbers are tagged cells of leakage.csv and training.csv."""
    return str(_macro("summary_section")(summary, section_id, LEAKAGE_CSV, TRAINING_CSV))


def _figure_html(plot: Plot) -> str:
    return str(_macro("figure")(plot))


def _table_html(table: pd.DataFrame) -> str:
    """A table with every value as written in its source (pandas' to_html would re-round numbers)."""
    return str(_macro("table")(table))


def _details_html(title: str, table: pd.DataFrame) -> str:
    return str(_macro("details")(title, table))


STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 980px; color: #222; padding: 0 1rem; }
h1 { font-size: 1.5rem; margin-bottom: 0.2rem; } h2 { font-size: 1.2rem; margin-top: 2rem; border-bottom: 1px solid #ddd; }
.meta { color: #666; font-size: 0.9rem; }
section.summary { background: #f6f8fa; border: 1px solid #dde; border-radius: 6px; padding: 0.5rem 1.2rem 1rem; }
.headline { font-size: 1.1rem; }
section.summary { overflow-x: auto; }
table.numbers { border-collapse: collapse; font-size: 0.85rem; margin: 0.5rem 0; }
table.numbers th, table.numbers td { border-bottom: 1px solid #ddd; padding: 0.2rem 0.6rem; text-align: right; }
figure { margin: 0.5rem 0; } img { max-width: 100%; height: auto; } figcaption { color: #555; font-size: 0.9rem; }
.side-by-side { display: grid; grid-template-columns: repeat(auto-fit, minmax(440px, 1fr)); gap: 1rem; }
.side-by-side > div { border: 1px solid #ddd; border-radius: 6px; padding: 0 0.8rem; }
details { margin: 0.5rem 0; }
"""


def _page(title: str, meta: str, sections: Iterable[str]) -> str:
    """The whole page around `sections` (HTML the template's macros made, or fixed markup)."""
    body = Markup("".join(sections))
    return str(_macro("page")(title, meta, Markup(STYLE), caller=lambda: body))


def _write_plots(folder: Path, figures: list[Plot]) -> list[str]:
    written = []
    for plot in figures:
        if plot.png is None:
            continue
        relative = f"{PLOTS}/{plot.name}.png"
        write_atomically(folder / relative, plot.png)
        written.append(relative)
    return written


def run_summary(run: Run) -> Summary:
    """The run's Summary: its leakage.csv (older audit column names read as the present ones), training.csv,
    the threat model in words and the headline attack fixed by its config.
    """
    return Summary(renamed_columns(run.table(LEAKAGE_CSV)), run.table(TRAINING_CSV), ThreatModel.of(run.config).describe(),
                   run.config.headline_attack())


def write_report(run: Run) -> list[str]:
    """Write plots/*.png and report.html into the run folder; returns their relative paths.

    Reads only the metrics tables and the recorded snapshots, so it can be run again at any time
    (`fedsim report`); it does not check the run's status (run_experiment writes the report just
    before marking the run complete).
    """
    summary = run_summary(run)
    figures = run_plots(run, summary)
    config = run.config
    meta = (f"{run.folder.name}: {config.data.num_clients} clients on {config.data.dataset}, {config.model.name}, "
            f"{config.strategy.name}, {config.train.rounds} rounds, seed {config.seed}; "
            f"fedsim {run.manifest.versions.get('fedsim', '?')}, created {run.manifest.created}")
    tables = [_details_html(LEAKAGE_CSV, summary.leakage)] if not summary.leakage.empty else []
    if has_reconstruction(run):
        tables.append(_details_html(f"{RECONSTRUCTION_CSV}, per round", summarise(run.table(RECONSTRUCTION_CSV))))
    tables.append(_details_html(TRAINING_CSV, summary.training))
    page = _page(f"fedsim report: {config.name}", meta, [summary_html(summary), *map(_figure_html, figures), "<h2>Tables</h2>", *tables])
    written = _write_plots(run.folder, figures)
    write_atomically(run.folder / REPORT_HTML, page.encode("utf-8"))
    return [*written, REPORT_HTML]


def sweep_points(names: list[str], runs: list[Run]) -> pd.DataFrame:
    """One row per (run, attack): the run's final test accuracy and the attack's AUC at its last observed round."""
    rows = []
    for name, run in zip(names, runs):
        summary = run_summary(run)
        final = summary.final_training
        for _, worst in summary.per_attack.iterrows():
            rows.append({"run": name, "attacker": worst["attacker"], "attack": worst["attack"], "round": worst["round"],
                         "test_accuracy": None if final is None else final["test_accuracy"], "last_round_auc": worst["auc"]})
    return pd.DataFrame(rows, columns=["run", "attacker", "attack", "round", "test_accuracy", "last_round_auc"])


def write_sweep_report(sweep_dir: Path, runs: list[Path], table: pd.DataFrame, paired: pd.DataFrame | None = None) -> Path:
    """A sweep's report.html and plots/*.png in `sweep_dir`: the comparison `table` as given, the
    privacy-utility plot (final test accuracy against each attack's last-round AUC), AUC per round of every
    run on shared axes, and each run's summary and plots side by side. Runs that did not complete
    are named and left out of the plots. Returns the report's path.
    """
    sweep_dir = Path(sweep_dir)
    opened = [Run.open(folder) for folder in runs]
    complete = [run for run in opened if run.status == "complete"]
    if not complete:
        raise FedsimError(f"{sweep_dir}: none of the sweep's {len(opened)} runs is complete; there is nothing to report")
    names = [_run_name(sweep_dir, run.folder) for run in complete]
    points = sweep_points(names, complete)
    figures = [
        _render("privacy_utility", "Privacy-utility trade-off",
                "Each run's final test accuracy (x) against each attack's AUC at its last observed round (y), one marker per attack.",
                plots.privacy_utility(points.dropna(subset=["test_accuracy"]))),
        _render("auc_per_round_by_run", "Leakage per round, runs side by side", "AUC per round, one panel per attack, one line per run.",
                plots.auc_per_round_by_run({name: run.table(LEAKAGE_CSV) for name, run in zip(names, complete)})),
    ]
    _write_plots(sweep_dir, figures)
    columns = [_run_column(name, run) for name, run in zip(names, complete)]
    left_out = [f"{_run_name(sweep_dir, r.folder)} ({r.status})" for r in opened if r.status != "complete"]
    paired_html = None if paired is None else Markup(_table_html(paired))
    sections = [_macro("sweep_body")(Markup(_table_html(table)), left_out, paired_html, Markup(_table_html(points)), figures, columns)]
    page = _page(f"fedsim sweep report: {sweep_dir.name}", f"{len(complete)} runs in {sweep_dir}", sections)
    write_atomically(sweep_dir / REPORT_HTML, page.encode("utf-8"))
    return sweep_dir / REPORT_HTML


def _run_column(name: str, run: Run) -> Markup:
    """One run's column of a sweep report: a link to its report, its summary, AUC and utility per round."""
    summary = run_summary(run)
    figures = []
    if not summary.leakage.empty:
        figures.append(_render(f"{name}-auc", "AUC per round", "95% bootstrap bands.", plots.auc_per_round(summary.leakage)))
    figures.append(_render(f"{name}-utility", "Utility per round", "Test accuracy and loss.", plots.utility_per_round(summary.training)))
    return Markup(_macro("run_column")(name, str(Path(name) / REPORT_HTML), Markup(summary_html(summary, f"summary-{name}")), figures))


def _run_name(sweep_dir: Path, folder: Path) -> str:
    """A run's folder relative to the sweep folder when inside it (a link that survives moving the sweep)."""
    try:
        return str(folder.resolve().relative_to(sweep_dir.resolve()))
    except ValueError:
        return str(folder)
