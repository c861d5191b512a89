"""The report's figures, one function each, from a run's tables (pandas DataFrames).

Figures are built on matplotlib's object API with the Agg canvas (no pyplot, no display, no
global backend switch for whoever imports fedsim). `png` turns a figure into PNG bytes.
"""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from attackers.inference.audit import renamed_columns
from fedsim.stats.metrics import FPR_TARGETS, tpr_column

WIDE, TALL = 7.5, 3.6  # inches; 100 dpi keeps a figure a few tens of KB


def png(figure: Figure) -> bytes:
    """The figure as PNG bytes (no timestamp in the metadata: same tables, same bytes)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight", metadata={"Software": None})
    return buffer.getvalue()


def _colours(names: list[str]) -> dict[str, tuple]:
    """A stable colour per series name (attack or run), in the order given."""
    from matplotlib import colormaps

    palette = colormaps["tab10"]
    return {name: palette(i % 10) for i, name in enumerate(names)}


def _series(leakage: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """One series per (attacker, attack, target), rows by round, labelled 'attacker/attack'."""
    groups = leakage.groupby(["attacker", "attack", "target"], sort=False)
    return [(f"{attacker}/{attack}", rows.sort_values("round")) for (attacker, attack, _), rows in groups]


def _chance(axes: Axes, y: float) -> None:
    axes.axhline(y, color="grey", linestyle=":", linewidth=1, label="chance")


def _rounds_axis(axes: Axes) -> None:
    axes.set_xlabel("round")
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))


def auc_per_round(leakage: pd.DataFrame) -> Figure:
    """Membership AUC per round, per attacker and attack, with the 95% bootstrap band of each AUC."""
    figure = Figure(figsize=(WIDE, TALL))
    axes = figure.subplots()
    series = _series(leakage)
    colours = _colours([label for label, _ in series])
    for label, rows in series:
        axes.plot(rows["round"], rows["auc"], marker="o", markersize=3, color=colours[label], label=label)
        if {"auc_ci_low", "auc_ci_high"} <= set(rows.columns):
            axes.fill_between(rows["round"], rows["auc_ci_low"], rows["auc_ci_high"], color=colours[label], alpha=0.15, linewidth=0)
    _chance(axes, 0.5)
    _rounds_axis(axes)
    axes.set(ylabel="AUC", title="Membership AUC per round (bands: 95% bootstrap)")
    axes.legend(fontsize="small", ncols=2)
    axes.grid(alpha=0.3)
    return figure


def not_measurable_text(target: float, n_nonmembers: int) -> str:
    """What a TPR panel says when no row can measure its FPR: 'not measurable with N non-members'."""
    return f"not measurable with {n_nonmembers} non-members\n(FPR {target:g} needs at least {round(1 / target)})"


def tpr_per_round(leakage: pd.DataFrame) -> Figure:
    """TPR at FPR 1e-2 and 1e-3 per round, with the 95% bootstrap bands of leakage.csv.

    The bands are the `tpr_at_fpr_*_ci_low/high` columns (`fedsim.stats.metrics.tpr_interval`:
    members and non-members resampled together, the threshold re-set in each resample). A panel
    whose FPR no row can measure (fewer than 1/FPR non-members) carries "not measurable with N
    non-members" instead of axes.
    """
    figure = Figure(figsize=(WIDE, TALL))
    panels = figure.subplots(1, len(FPR_TARGETS), sharey=True)
    series = _series(leakage)
    colours = _colours([label for label, _ in series])
    drawn = []
    for axes, target in zip(panels, FPR_TARGETS):
        column = tpr_column(target)
        axes.set_title(f"TPR at FPR {target:g}")
        if column not in leakage or leakage[column].isna().all():
            n_nonmembers = int(leakage["n_nonmembers"].max()) if len(leakage) else 0
            axes.text(0.5, 0.5, not_measurable_text(target, n_nonmembers), ha="center", va="center", transform=axes.transAxes)
            axes.set_axis_off()
            continue
        for label, rows in series:
            axes.plot(rows["round"], rows[column], marker="o", markersize=3, color=colours[label], label=label)
            if {f"{column}_ci_low", f"{column}_ci_high"} <= set(rows.columns):
                axes.fill_between(rows["round"], rows[f"{column}_ci_low"].astype(float), rows[f"{column}_ci_high"].astype(float),
                                  color=colours[label], alpha=0.15, linewidth=0)
        _chance(axes, target)
        _rounds_axis(axes)
        axes.grid(alpha=0.3)
        drawn.append(axes)
    if drawn:
        drawn[0].set_ylabel("TPR (bands: 95% bootstrap)")
        drawn[0].legend(fontsize="small")
    return figure


def roc_curves(roc: pd.DataFrame, n_nonmembers: int, last_round: int) -> Figure:
    """ROC of each attack in the last round, linear and log-log; on the log axes FPR 0 is drawn at 1/(2 non-members)."""
    figure = Figure(figsize=(WIDE, TALL))
    linear, loglog = figure.subplots(1, 2)
    names = list(dict.fromkeys(roc["attack"]))
    colours = _colours(names)
    floor = 1 / (2 * max(n_nonmembers, 1))
    for name in names:
        rows = roc[roc["attack"] == name]
        linear.plot(rows["fpr"], rows["tpr"], color=colours[name], label=name)
        loglog.plot(rows["fpr"].clip(lower=floor), rows["tpr"].clip(lower=floor), color=colours[name], label=name)
    for axes in (linear, loglog):
        axes.plot([floor, 1], [floor, 1], color="grey", linestyle=":", linewidth=1)
        axes.set(xlabel="false positive rate", ylabel="true positive rate")
        axes.grid(alpha=0.3)
    linear.set(xlim=(0, 1), ylim=(0, 1.01), title=f"ROC, round {last_round}")
    loglog.set(xscale="log", yscale="log", xlim=(floor, 1), ylim=(floor, 1.05), title="log-log (low FPR)")
    linear.legend(fontsize="small")
    return figure


def class_distributions(signals: pd.DataFrame, column: str, label: str, max_classes: int = 20) -> Figure:
    """Members vs non-members of `column` per class (the view of Nasr et al.'s Fig. 2), as box plots on a log axis.

    `signals` has one row per target record: class, member, and the signal columns. Beyond
    `max_classes` classes, those with the most target records are shown.
    """
    counts = signals["class"].value_counts()
    classes = sorted(counts.index[:max_classes]) if len(counts) > max_classes else sorted(counts.index)
    figure = Figure(figsize=(WIDE, TALL))
    axes = figure.subplots()
    groups = {True: ("member", "tab:red", -0.2), False: ("non-member", "tab:blue", 0.2)}
    for member, (name, colour, offset) in groups.items():
        data = [signals.loc[(signals["class"] == c) & (signals["member"] == member), column].to_numpy() for c in classes]
        present = [i for i, values in enumerate(data) if len(values)]
        boxes = axes.boxplot([data[i] for i in present], positions=np.array(present) + offset, widths=0.35, patch_artist=True,
                             showfliers=True, flierprops={"markersize": 2})
        for box in boxes["boxes"]:
            box.set(facecolor=colour, alpha=0.5)
        axes.plot([], [], color=colour, linewidth=6, alpha=0.5, label=name)
    positive = signals[column][signals[column] > 0]
    if len(positive) and positive.max() / positive.min() > 20:
        axes.set_yscale("log")
    axes.set_xticks(range(len(classes)), [str(c) for c in classes])
    shown = "" if len(counts) <= max_classes else f" ({max_classes} of {len(counts)} classes)"
    axes.set(xlabel="class", ylabel=label, title=f"{label}: members vs non-members per class{shown}")
    axes.legend(fontsize="small")
    axes.grid(alpha=0.3, axis="y")
    return figure


def accuracy_per_class(per_class: pd.DataFrame) -> Figure:
    """Balanced attack accuracy per class in the last round, one bar per attack."""
    figure = Figure(figsize=(WIDE, TALL))
    axes = figure.subplots()
    names = list(dict.fromkeys(per_class["attack"]))
    classes = sorted(per_class["class"].unique())
    colours = _colours(names)
    width = 0.8 / max(len(names), 1)
    for i, name in enumerate(names):
        rows = per_class[per_class["attack"] == name].set_index("class").reindex(classes)
        axes.bar(np.arange(len(classes)) + (i - (len(names) - 1) / 2) * width, rows["accuracy"], width, color=colours[name], label=name)
    _chance(axes, 0.5)
    axes.set_xticks(range(len(classes)), [str(c) for c in classes])
    axes.set(xlabel="class", ylabel="balanced accuracy", ylim=(0, 1), title="Attack accuracy per class (last round)")
    axes.legend(fontsize="small", ncols=2)
    axes.grid(alpha=0.3, axis="y")
    return figure


def utility_per_round(training: pd.DataFrame) -> Figure:
    """Test accuracy (left axis) and test and training loss (right axis) of the global model per round."""
    figure = Figure(figsize=(WIDE, TALL))
    accuracy = figure.subplots()
    accuracy.plot(training["round"], training["test_accuracy"], marker="o", markersize=3, color="tab:green", label="test accuracy")
    _rounds_axis(accuracy)
    accuracy.set(ylabel="test accuracy", ylim=(0, 1.01), title="Training utility per round")
    accuracy.grid(alpha=0.3)
    loss = accuracy.twinx()
    loss.plot(training["round"], training["test_loss"], color="tab:purple", linestyle="--", label="test loss")
    if "train_loss" in training and training["train_loss"].notna().any():
        loss.plot(training["round"], training["train_loss"], color="tab:orange", linestyle=":", label="training loss")
    loss.set_ylabel("loss")
    handles = accuracy.get_legend_handles_labels()[0] + loss.get_legend_handles_labels()[0]
    accuracy.legend(handles=handles, fontsize="small", loc="center right")
    return figure


def privacy_utility(points: pd.DataFrame) -> Figure:
    """Sweep: final test accuracy (x) against last-round AUC (y) of each run, one marker per attack, runs labelled."""
    figure = Figure(figsize=(WIDE, TALL + 0.8))
    axes = figure.subplots()
    names = list(dict.fromkeys(points["attack"]))
    colours = _colours(names)
    markers = "osD^v<>ph*"
    for i, name in enumerate(names):
        rows = points[points["attack"] == name]
        axes.scatter(rows["test_accuracy"], rows["last_round_auc"], color=colours[name], marker=markers[i % len(markers)], label=name)
    for run, rows in points.groupby("run", sort=False):
        top = rows.loc[rows["last_round_auc"].idxmax()]
        axes.annotate(str(run), (top["test_accuracy"], top["last_round_auc"]), textcoords="offset points", xytext=(4, 4), fontsize="x-small")
    _chance(axes, 0.5)
    axes.set(xlabel="final test accuracy (utility)", ylabel="AUC at the last observed round (leakage)", title="Privacy-utility trade-off")
    axes.legend(fontsize="small")
    axes.grid(alpha=0.3)
    return figure


def auc_per_round_by_run(leakages: dict[str, pd.DataFrame]) -> Figure:
    """Sweep: AUC per round, one panel per attack, one line per run (runs side by side on the same axes)."""
    attacks = list(dict.fromkeys(a for table in leakages.values() for a in table["attack"]))
    columns = min(3, max(len(attacks), 1))
    lines = -(-max(len(attacks), 1) // columns)
    figure = Figure(figsize=(WIDE, 2.8 * lines + 0.4))
    panels = figure.subplots(lines, columns, sharey=True, squeeze=False).ravel()
    colours = _colours(list(leakages))
    for axes, attack in zip(panels, attacks):
        for run, table in leakages.items():
            rows = table[table["attack"] == attack].sort_values("round")
            axes.plot(rows["round"], rows["auc"], marker="o", markersize=3, color=colours[run], label=run)
        _chance(axes, 0.5)
        _rounds_axis(axes)
        axes.set_title(attack)
        axes.grid(alpha=0.3)
    for axes in panels[len(attacks):]:
        axes.set_visible(False)
    panels[0].set_ylabel("AUC")
    panels[0].legend(fontsize="x-small")
    return figure


def privacy_audit(leakage: pd.DataFrame, accountant: pd.DataFrame, headline: str | None = None) -> Figure:
    """Per round: the accountant's epsilon (an upper bound), the canaries' lower bound, and the empirical epsilon.

    The canaries' 95% lower bound (`canary_epsilon_lower_bound`, Steinke et al. 2023) is drawn for
    the `headline` attack only, fixed before the run: the largest over attacks would be a selection
    and no bound. The empirical epsilon of the targets (not a DP lower bound) is drawn for the best
    attack of a round, chosen on one half of the targets (the highest `epsilon_empirical_select`)
    and measured on the other (`epsilon_empirical_holdout`); a leakage.csv without those columns
    (written before them) falls back to the highest `epsilon_empirical` on every target, with a bar
    up to its point estimate (`epsilon_empirical_point`, drawn to the top of the axes when infinite).
    Older leakage.csv names (`epsilon_lower_bound`, ...) are read as the present ones.
    """
    leakage = renamed_columns(leakage)
    figure = Figure(figsize=(WIDE, TALL))
    axes = figure.subplots()
    on_halves = {"epsilon_empirical_select", "epsilon_empirical_holdout"} <= set(leakage.columns)
    chooser, value = ("epsilon_empirical_select", "epsilon_empirical_holdout") if on_halves else ("epsilon_empirical", "epsilon_empirical")
    best = leakage.sort_values(chooser, ascending=False, kind="stable").groupby("round").head(1).sort_values("round")
    empirical = best[value].astype(float).to_numpy()
    points = [] if on_halves else list(best["epsilon_empirical_point"])
    canaries = pd.DataFrame(columns=["round", "canary_epsilon_lower_bound"])
    if headline is not None and "canary_epsilon_lower_bound" in leakage:
        canaries = leakage[(leakage["attack"] == headline) & leakage["canary_epsilon_lower_bound"].notna()].sort_values("round")
    lower = canaries["canary_epsilon_lower_bound"].astype(float)
    finite = [v for v in [*points, *empirical, *lower, *accountant.get("epsilon", [])] if np.isfinite(v)]
    top = max([1.0, *finite]) * 1.15
    if not accountant.empty:
        shown = np.where(np.isfinite(accountant["epsilon"].astype(float)), accountant["epsilon"].astype(float), top)
        axes.plot(accountant["round"], shown, marker="s", markersize=4, color="black",
                  label=f"accountant epsilon ({accountant['accountant'].iloc[0]}; inf drawn at the top)")
    if len(canaries):
        axes.plot(canaries["round"], np.minimum(lower, top), "D", color="tab:blue",
                  label=f"{headline}'s canaries: 95% lower bound (Steinke et al. 2023)")
    if on_halves:
        axes.plot(best["round"], empirical, "o", color="tab:red", markerfacecolor="none",
                  label="empirical epsilon, best attack selected on half the targets, measured on the other (not a DP lower bound)")
    else:
        point = np.minimum(np.asarray(points, dtype=float), top)
        axes.errorbar(best["round"], empirical, yerr=[np.zeros_like(empirical), point - empirical], fmt="o", color="tab:red",
                      markerfacecolor="none", capsize=3, label="empirical epsilon of the best attack, bar up to its point estimate "
                      "(not a DP lower bound)")
    for round_number, height, attack in zip(best["round"], empirical, best["attack"]):
        axes.annotate(attack, (round_number, height), textcoords="offset points", xytext=(4, 4), fontsize="x-small")
    _rounds_axis(axes)
    axes.set(ylabel="epsilon", ylim=(0, top), title="Privacy audit: accountant (upper bound) vs canaries (lower bound)")
    axes.legend(fontsize="x-small")
    axes.grid(alpha=0.3)
    return figure


def reconstruction_grid(panels: list[tuple[str, np.ndarray, np.ndarray, list[str]]]) -> Figure:
    """Originals against reconstructions: per panel a row of true records and a row of what the attack rebuilt.

    Parameters
    ----------
    panels : list of (str, numpy.ndarray, numpy.ndarray, list of str)
        (title, originals (k, H, W, C) in [0, 1], reconstructions (k, H, W, C) in [0, 1], a caption
        per reconstruction such as its PSNR); C is 1 (drawn in grey) or 3.

    Returns
    -------
    matplotlib.figure.Figure
        Two rows per panel, k columns.
    """
    columns = max(len(originals) for _, originals, _, _ in panels)
    figure = Figure(figsize=(min(WIDE, 1.0 * columns + 1.2), 2.1 * len(panels) + 0.3))
    grid = figure.subplots(2 * len(panels), columns, squeeze=False)
    for p, (title, originals, rebuilt, captions) in enumerate(panels):
        for c in range(columns):
            for row, images in ((2 * p, originals), (2 * p + 1, rebuilt)):
                axes = grid[row, c]
                axes.set_xticks([])
                axes.set_yticks([])
                if c >= len(images):
                    axes.set_visible(False)
                    continue
                image = images[c]
                axes.imshow(image[..., 0] if image.shape[-1] == 1 else image, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
                if row == 2 * p + 1:
                    axes.set_xlabel(captions[c], fontsize="x-small")
        grid[2 * p, 0].set_ylabel("original", fontsize="small")
        grid[2 * p + 1, 0].set_ylabel("rebuilt", fontsize="small")
        grid[2 * p, 0].set_title(title, fontsize="small", loc="left")
    return figure


def reconstruction_quality(summary: pd.DataFrame, threshold_db: float) -> Figure:
    """Per round: the fraction of true records recovered (left) and the mean PSNR with the baseline's (right), per attack.

    Parameters
    ----------
    summary : pandas.DataFrame
        `attackers.inference.reconstruction.measure.summarise` of reconstruction.csv: attack, attacker,
        round, recovered, mean_psnr, mean_baseline_psnr.
    threshold_db : float
        The PSNR a record must reach to count as recovered (drawn as a line).

    Returns
    -------
    matplotlib.figure.Figure
        Two panels; the baseline (the mean known non-member) dashed in each attack's colour.
    """
    figure = Figure(figsize=(WIDE, TALL))
    fraction, quality = figure.subplots(1, 2)
    groups = [(f"{attacker}/{attack}", rows.sort_values("round")) for (attacker, attack), rows in summary.groupby(["attacker", "attack"], sort=False)]
    colours = _colours([label for label, _ in groups])
    for label, rows in groups:
        fraction.plot(rows["round"], rows["recovered"], marker="o", markersize=3, color=colours[label], label=label)
        quality.plot(rows["round"], rows["mean_psnr"], marker="o", markersize=3, color=colours[label], label=label)
        quality.plot(rows["round"], rows["mean_baseline_psnr"], linestyle="--", color=colours[label], alpha=0.7, label=f"{label}: baseline")
    quality.axhline(threshold_db, color="grey", linestyle=":", linewidth=1, label=f"recovered at {threshold_db:g} dB")
    for axes in (fraction, quality):
        _rounds_axis(axes)
        axes.grid(alpha=0.3)
    fraction.set(ylabel="fraction of records recovered", ylim=(-0.02, 1.02), title="Records recovered per round")
    quality.set(ylabel="mean PSNR (dB)", title="Reconstruction quality per round")
    fraction.legend(fontsize="x-small")
    quality.legend(fontsize="x-small")
    return figure
