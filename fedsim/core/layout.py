"""The run folder's layout (docs/design.md, section 3): file names and table columns, nothing else.

A leaf of the import graph: the recorder writes these paths, `fedsim.Run` reads them, the
report and the sweep find their tables by them, and none of those need import each other for it.
"""

from __future__ import annotations

LEDGER = "membership.parquet"
RECORDS = "records.safetensors"  # an audited app's records: features and labels, indexed by record id
MANIFEST = "manifest.json"
TRAINING_CSV = "metrics/training.csv"
LEAKAGE_CSV = "metrics/leakage.csv"
ROC_CSV = "metrics/roc.csv"
PER_CLASS_CSV = "metrics/leakage_per_class.csv"
LEAKAGE_SEEDS_CSV = "metrics/leakage_seeds.csv"
RECONSTRUCTION_CSV = "metrics/reconstruction.csv"  # config reconstructions: one row per (attack, attacker, round, true record)
RECONSTRUCTIONS = "metrics/reconstructions.safetensors"  # the reconstructed records, keyed ATTACK/round-RRRR/{x,y,record_id}
REPORT_HTML = "report.html"
PLOTS = "plots"
TENSORBOARD = "tensorboard"  # event files of export.tensorboard (not in the manifest until the run finishes)
TRAINING_COLUMNS = ["round", "test_loss", "test_accuracy", "train_loss", "clients", "failures", "dropouts", "seconds", "record_seconds"]
LEAKAGE_COLUMNS = [
    "round", "attacker", "attack", "target", "observed_rounds", "auc", "accuracy",
    "tpr_at_fpr_1e-2", "tpr_at_fpr_1e-3", "n_members", "n_nonmembers",
]
ROC_COLUMNS = ["attack", "fpr", "tpr"]
PER_CLASS_COLUMNS = ["attack", "class", "auc", "accuracy", "n_members", "n_nonmembers"]
# After the contract columns of leakage.csv (which hold means over attack seeds): the AUC's
# bootstrap interval, the smallest measurable FPR, 95% bootstrap intervals of the TPRs,
# the spread over attack seeds, and the AUC on each half of the targets (selection / holdout).
LEAKAGE_EXTRA_COLUMNS = [
    "auc_ci_low", "auc_ci_high", "min_fpr",
    "tpr_at_fpr_1e-2_ci_low", "tpr_at_fpr_1e-2_ci_high", "tpr_at_fpr_1e-3_ci_low", "tpr_at_fpr_1e-3_ci_high",
    "n_seeds", "auc_std", "accuracy_std", "tpr_at_fpr_1e-2_std", "tpr_at_fpr_1e-3_std",
    "auc_select", "auc_holdout",
]
# metrics/leakage_seeds.csv: one row per (round, attacker, attack, target, attack seed).
LEAKAGE_SEEDS_COLUMNS = [
    "round", "attacker", "attack", "target", "observed_rounds", "seed", "auc", "accuracy",
    "tpr_at_fpr_1e-2", "tpr_at_fpr_1e-3", "n_members", "n_nonmembers", "min_fpr", "auc_select", "auc_holdout",
]

# metrics/reconstruction.csv (attackers.inference.reconstruction.measure): scores on [0, 1] records after the least-MSE
# pairing; recovered = psnr >= 20 dB; exact (empty for an attack that claims none) = max_abs_error <= 1e-5 in model input space.
RECONSTRUCTION_COLUMNS = [
    "attack", "attacker", "target", "round", "record_id", "label", "predicted_label", "psnr", "ssim", "mse",
    "baseline_psnr", "baseline_ssim", "recovered", "exact", "seconds", "claimed_exact", "max_abs_error", "chance_psnr",
]


def round_dir(round_number: int) -> str:
    """Relative path of round `round_number`'s folder (0 holds the initial model)."""
    return f"rounds/{round_number:04d}"


def client_file(round_number: int, client: int, kind: str = "clients") -> str:
    """Relative path of what client `client` sent (kind 'clients') or was sent ('broadcast')."""
    return f"{round_dir(round_number)}/{kind}/client-{client:03d}.safetensors"


def global_file(round_number: int) -> str:
    """Relative path of the aggregate after round `round_number`."""
    return f"{round_dir(round_number)}/global.safetensors"


def is_report_file(relative: str) -> bool:
    """Whether a manifest entry is part of the report (derived from the metrics, rewritable)."""
    return relative == REPORT_HTML or relative.startswith(f"{PLOTS}/")
