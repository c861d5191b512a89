"""TensorBoard export of a run's per-round curves (`export.tensorboard: true`).

A run's numbers live in its metrics tables; this copies the per-round ones into TensorBoard event
files under RUN/tensorboard/, so runs can be compared in TensorBoard beside other training logs.
Written from the tables after the attacks, so every scalar equals a cell of metrics/training.csv
or metrics/leakage.csv. The `tensorboard` package is optional (`pip install 'fedsim[tensorboard]'`):
a run that asks for the export without it is refused before it starts.
"""

from __future__ import annotations

import importlib.util
import math
import os
import shutil

from fedsim.core.config import Config
from fedsim.core.errors import FedsimError
from fedsim.core.layout import LEAKAGE_CSV, TENSORBOARD, TRAINING_CSV
from fedsim.recording.run import Run

TRAINING_SCALARS = ("test_loss", "test_accuracy", "train_loss", "epsilon_max")
LEAKAGE_SCALARS = ("auc", "accuracy", "tpr_at_fpr_1e-2", "tpr_at_fpr_1e-3")


def check_tensorboard(config: Config) -> None:
    """Refuse, before a run starts, an export the installed packages cannot write.

    Raises
    ------
    FedsimError
        `export.tensorboard` is on and the `tensorboard` package is not installed.
    """
    if config.export.tensorboard and importlib.util.find_spec("tensorboard") is None:
        raise FedsimError("export.tensorboard is true but the tensorboard package is not installed; "
                          "pip install 'fedsim[tensorboard]' (or tensorboard), or set export.tensorboard=false")


def leakage_tag(metric: str, attacker: str, attack: str, target: str) -> str:
    """The scalar tag of one leakage metric of one (attacker, attack, target), e.g. auc/server/loss/client-000."""
    return f"{metric}/{attacker}/{attack}/{target}"


def write_tensorboard(run: Run) -> list[str]:
    """Write the run's per-round curves as TensorBoard event files under RUN/tensorboard/.

    Scalars, with the round as the step: training/<column> for test_loss, test_accuracy,
    train_loss (and epsilon_max under DP-SGD) from metrics/training.csv; and, per row of
    metrics/leakage.csv, `leakage_tag(metric, attacker, attack, target)` for auc, accuracy and the
    TPRs at FPR 1e-2 and 1e-3 (the means over attack seeds). Empty cells (a TPR below the
    resolution the non-members allow, round 0's train loss) are left out, never written as 0.
    The files are written in a hidden folder and renamed into place, replacing an earlier export.

    Parameters
    ----------
    run : Run
        A run whose metrics tables are written (after its attacks).

    Returns
    -------
    list of str
        The event files written, relative to the run folder.
    """
    from torch.utils.tensorboard import SummaryWriter  # optional dependency, imported only when asked for

    final = run.folder / TENSORBOARD
    staging = run.folder / f".{TENSORBOARD}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    writer = SummaryWriter(log_dir=str(staging))
    try:
        training = run.table(TRAINING_CSV)
        for _, row in training.iterrows():
            for column in TRAINING_SCALARS:
                _add(writer, f"training/{column}", row.get(column), int(row["round"]))
        leakage = run.table(LEAKAGE_CSV)
        for _, row in leakage.iterrows():
            for metric in LEAKAGE_SCALARS:
                tag = leakage_tag(metric, str(row["attacker"]), str(row["attack"]), str(row["target"]))
                _add(writer, tag, row.get(metric), int(row["round"]))
    finally:
        writer.close()
    shutil.rmtree(final, ignore_errors=True)
    os.replace(staging, final)
    return sorted(str(path.relative_to(run.folder)) for path in final.rglob("*") if path.is_file())


def _add(writer, tag: str, value, step: int) -> None:
    """One scalar, unless the cell is empty or not a finite number."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return
    if math.isfinite(number):
        writer.add_scalar(tag, number, global_step=step)

