"""Scoring reconstructions against the true records, the same way for every attack.

A reconstruction is worth what it reveals of a record, so it is scored in the record's own units:
images go back to [0, 1] pixels (the pool's per-channel mean and std undone, or, for an image pool
stored without them, such as an audited app's records, the pool's smallest and largest value
mapped to 0 and 1), tabular records have every feature scaled to [0, 1] by its range over the pool.
PSNR and SSIM come from torchmetrics (`peak_signal_noise_ratio`, `structural_similarity_index_measure`
with its defaults: Gaussian window 11, sigma 1.5, Wang et al. 2004; narrower on images under 6
pixels a side), with data_range 1; SSIM is an
image measure and is NaN for tabular records.

An attack returns its reconstructions in no particular order, and may return fewer or more than
there were records, so each true record is paired with at most one reconstruction by the
assignment of least total MSE (Hungarian method, `scipy.optimize.linear_sum_assignment`); a true
record left without one is not recovered. Labels play no part in the pairing (the predicted
label is reported beside the true one).

The thresholds are fixed here, before any run: a record is *recovered* when its reconstruction's
PSNR is at least `PSNR_THRESHOLD_DB` = 20 dB on [0, 1] records (a root-mean-square error of 0.1,
a tenth of the range; Geiping et al. 2020 report recognisable reconstructions from about there).
A record is *exact* when the reconstruction gives the stored record back: for records stored as
8-bit pixels, every pixel within half a quantisation step (0.5 / 255 on [0, 1]), so rounding it
returns the stored bytes; for float records, every feature within `EXACT_TOLERANCE` = 1e-5 in the
model's input space. The scorer owns this rule; no attack can widen it. (A first version let the
imprint read's own float-rounding bound widen it, after float32 runs had scored 0 exact at 1e-5;
that bound reached 0.17 and is gone. The 8-bit rule replaced it after those runs had been seen:
it is the precision the data set itself stores.)

Two references every attack must beat, both scored the same way against each true record: the
*baseline*, the mean of the attacker's known non-members; and *chance*, as many known non-members as
the attack returned reconstructions, paired with the true records by the same least-MSE matching
(an attack that returns K candidates gets K guesses, so chance gets K too: K records that carry
nothing of the victim's data, picked by a seeded draw).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

from fedsim.learning.datasets import Pool

PSNR_THRESHOLD_DB = 20.0
"""A record is recovered when its reconstruction's PSNR on [0, 1] records reaches this (dB)."""
EXACT_TOLERANCE = 1e-5
"""Float records: exact when no feature of the reconstruction differs by more, in model input space."""
PIXEL_LEVELS = 255
"""8-bit records: exact when every pixel on [0, 1] is within 0.5 / PIXEL_LEVELS (rounding gives the stored byte back)."""
SSIM_SIGMA = 1.5
"""torchmetrics' default Gaussian sigma (window 11); images smaller than 6 pixels a side use a narrower one."""


@dataclass(frozen=True)
class Scale:
    """How records of one pool map from the model's input space to [0, 1].

    unit(x) = (x - offset) / span, elementwise, broadcast over one record's shape; `image` says
    whether a record is an image (SSIM is measured) or a row of features (SSIM is NaN).

    Attributes
    ----------
    offset, span : torch.Tensor
        Broadcastable to one record's shape (input_shape), float64.
    image : bool
        Records of shape (C, H, W).
    lower, upper : torch.Tensor
        The bounds of a record in model input space, each of input_shape, float32: the
        normalised 0 and 1 of an image pool, else the pool's per-feature minimum and maximum.
    eight_bit : bool
        The pool stores 8-bit pixels (uint8) that `take` normalises: exactness is judged on the bytes.
    """

    offset: torch.Tensor
    span: torch.Tensor
    image: bool
    lower: torch.Tensor
    upper: torch.Tensor
    eight_bit: bool = False

    @classmethod
    def of_pool(cls, pool: Pool) -> Scale:
        """The scale of a data pool (`fedsim.learning.datasets.Pool`).

        Parameters
        ----------
        pool : Pool
            Image pools with `mean`/`std` store uint8 pixels normalised per channel by `take`;
            other pools store float features as the model takes them.

        Returns
        -------
        Scale
            Images with mean/std: unit = x * std + mean per channel (the normalisation undone).
            Other images (C, H, W): unit = (x - min) / (max - min) over the whole pool.
            Tabular: unit = (x - min_f) / (max_f - min_f) per feature f (a constant feature: span 1).
        """
        shape = pool.input_shape
        image = len(shape) == 3
        if pool.mean is not None and pool.std is not None:
            mean = torch.tensor(pool.mean, dtype=torch.float64).view(-1, 1, 1)
            std = torch.tensor(pool.std, dtype=torch.float64).view(-1, 1, 1)
            offset, span = -mean / std, 1 / std  # unit = (x - offset) / span = x * std + mean
            lower = (((0 - mean) / std).expand(shape)).float().contiguous()
            upper = (((1 - mean) / std).expand(shape)).float().contiguous()
            return cls(offset, span, image, lower, upper, eight_bit=pool.features.dtype == torch.uint8)
        lower64, upper64 = pool.features.amin(0).double(), pool.features.amax(0).double()  # no float64 copy of a large pool
        if image:
            offset, span = lower64.min(), upper64.max() - lower64.min()
            span = span if span > 0 else torch.tensor(1.0, dtype=torch.float64)
        else:
            offset, span = lower64, torch.where(upper64 > lower64, upper64 - lower64, torch.ones_like(lower64))
        return cls(offset, span, image, lower64.float(), upper64.float())

    def unit(self, x: torch.Tensor) -> torch.Tensor:
        """Records (n, *input_shape) in model input space -> [0, 1] (clamped), float64."""
        return ((x.double() - self.offset) / self.span).clamp(0, 1)

    def exact(self, reconstructed: torch.Tensor, true: torch.Tensor) -> np.ndarray:
        """Whether each aligned pair is the same stored record (see the module docstring), bool, shape (n,)."""
        if len(true) == 0:
            return np.zeros(0, dtype=bool)
        if self.eight_bit:
            error = (self.unit(reconstructed) - self.unit(true)).abs().reshape(len(true), -1).amax(1)
            return (error <= 0.5 / PIXEL_LEVELS).numpy()
        error = (reconstructed.double() - true.double()).abs().reshape(len(true), -1).amax(1)
        return (error <= EXACT_TOLERANCE).numpy()


def psnr(reconstructed: torch.Tensor, true: torch.Tensor) -> np.ndarray:
    """PSNR per record of [0, 1] records (n, ...), data_range 1 (torchmetrics), dB, shape (n,); inf where equal."""
    if len(true) == 0:
        return np.zeros(0)
    dims = tuple(range(1, true.dim()))
    return peak_signal_noise_ratio(reconstructed, true, data_range=1.0, reduction="none", dim=dims).numpy().astype(np.float64)


def ssim(reconstructed: torch.Tensor, true: torch.Tensor) -> np.ndarray:
    """SSIM per image of [0, 1] images (n, C, H, W), data_range 1 (torchmetrics' defaults), shape (n,)."""
    if len(true) == 0:
        return np.zeros(0)
    side = min(true.shape[-2:])
    if side < 2:
        return np.full(len(true), np.nan)
    # torchmetrics' Gaussian window spans 2 * int(3.5 sigma + 0.5) + 1 pixels and its reflection padding must stay
    # inside the image: images of side 6 or more take the default sigma 1.5 (window 11), smaller ones a narrower one
    sigma = SSIM_SIGMA if side >= 6 else (side - 1) / 3.5
    values = structural_similarity_index_measure(reconstructed, true, data_range=1.0, reduction="none", sigma=sigma)
    assert isinstance(values, torch.Tensor)  # a tuple only with return_full_image or return_contrast_sensitivity
    return values.numpy().astype(np.float64)


def mse_matrix(true: torch.Tensor, reconstructed: torch.Tensor) -> np.ndarray:
    """Mean squared error between every true record and every reconstruction, shape (n_true, n_reconstructed)."""
    a, b = true.reshape(len(true), -1).double(), reconstructed.reshape(len(reconstructed), -1).double()
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)))
    return (torch.cdist(a, b).pow(2) / a.shape[1]).numpy()


def match(true: torch.Tensor, reconstructed: torch.Tensor) -> np.ndarray:
    """The reconstruction paired with each true record: the assignment of least total MSE.

    Parameters
    ----------
    true : torch.Tensor
        True records in [0, 1], shape (n_true, ...).
    reconstructed : torch.Tensor
        Reconstructions in [0, 1], shape (n_reconstructed, ...); either may be the larger.

    Returns
    -------
    numpy.ndarray
        int64, shape (n_true,): the index of each true record's reconstruction, -1 where none is
        left for it (more true records than reconstructions). `scipy.optimize.linear_sum_assignment`.
    """
    assigned = np.full(len(true), -1, dtype=np.int64)
    cost = mse_matrix(true, reconstructed)
    if cost.size:
        rows, columns = linear_sum_assignment(cost)
        assigned[rows] = columns
    return assigned


@dataclass
class Scores:
    """Each true record's pairing and scores (arrays of shape (n_true,)).

    Attributes
    ----------
    matched : numpy.ndarray
        int64: the index of its reconstruction, -1 where none.
    predicted_label : numpy.ndarray
        float64: the label the attack inferred for it (NaN where none).
    psnr, ssim, mse : numpy.ndarray
        float64 on [0, 1] records (NaN where none; SSIM NaN for tabular records).
    max_abs_error : numpy.ndarray
        float64: the largest feature difference in model input space (NaN where none).
    baseline_psnr, baseline_ssim : numpy.ndarray
        float64: the baseline (the mean known non-member) scored against it.
    chance_psnr : numpy.ndarray
        float64: the known non-member paired with it when as many known non-members as there are
        reconstructions are matched the same way (NaN where none is paired).
    recovered : numpy.ndarray
        bool: psnr >= PSNR_THRESHOLD_DB.
    exact : numpy.ndarray or None
        bool: the reconstruction gives the stored record back (`Scale.exact`); None for an attack that claims no exact records.
    claimed_exact : numpy.ndarray or None
        bool: what the attack claimed of the reconstruction paired with it; None likewise.
    """

    matched: np.ndarray
    predicted_label: np.ndarray
    psnr: np.ndarray
    ssim: np.ndarray
    mse: np.ndarray
    max_abs_error: np.ndarray
    baseline_psnr: np.ndarray
    baseline_ssim: np.ndarray
    recovered: np.ndarray
    exact: np.ndarray | None
    claimed_exact: np.ndarray | None
    chance_psnr: np.ndarray


def pair_scores(reconstructed: torch.Tensor, true: torch.Tensor, scale: Scale) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(psnr, ssim, mse) of aligned pairs of records in model input space, each shape (n,)."""
    a, b = scale.unit(reconstructed), scale.unit(true)
    mse = ((a - b).pow(2).reshape(len(a), -1).mean(1)).numpy() if len(a) else np.zeros(0)
    structural = ssim(a, b) if scale.image else np.full(len(a), np.nan)
    return psnr(a, b), structural, mse


def baseline(known_nonmembers: torch.Tensor) -> torch.Tensor:
    """The baseline reconstruction: the mean of the attacker's known non-members, shape (1, *input_shape), model input space."""
    return known_nonmembers.double().mean(0, keepdim=True).float()


def chance(known_nonmembers: torch.Tensor, count: int, seed: np.random.SeedSequence) -> torch.Tensor:
    """`count` known non-members (all of them if fewer), drawn without replacement by `seed`: chance's guesses."""
    order = np.random.default_rng(seed).permutation(len(known_nonmembers))[:count]
    return known_nonmembers[torch.from_numpy(np.sort(order))]


def score(true_x: torch.Tensor, reconstructed_x: torch.Tensor, reconstructed_y: torch.Tensor, claimed: torch.Tensor | None,
          baseline_x: torch.Tensor, scale: Scale, chance_x: torch.Tensor | None = None) -> Scores:
    """Pair the reconstructions with the true records and score each true record.

    Parameters
    ----------
    true_x : torch.Tensor
        The records the update was trained on, model input space, shape (n_true, *input_shape).
    reconstructed_x : torch.Tensor
        What the attack rebuilt, model input space, shape (n_reconstructed, *input_shape).
    reconstructed_y : torch.Tensor
        The labels the attack inferred, int64, shape (n_reconstructed,).
    claimed : torch.Tensor or None
        bool, shape (n_reconstructed,): which reconstructions the attack claims exact; None: no claim.
    baseline_x : torch.Tensor
        The baseline record (`baseline`), shape (1, *input_shape).
    scale : Scale
        The pool's scale.
    chance_x : torch.Tensor or None
        Chance's guesses (`chance`), model input space, shape (k, *input_shape), k = n_reconstructed
        where the attacker knows that many; None: no chance column (NaN).

    Returns
    -------
    Scores
        Per true record, after `match` on the [0, 1] records.
    """
    n = len(true_x)
    matched = match(scale.unit(true_x), scale.unit(reconstructed_x))
    has = matched >= 0
    value = np.full(n, np.nan)
    psnr_, ssim_, mse_, error = value.copy(), value.copy(), value.copy(), value.copy()
    predicted = value.copy()
    if has.any():
        pairs = reconstructed_x[torch.from_numpy(matched[has])]
        psnr_[has], ssim_[has], mse_[has] = pair_scores(pairs, true_x[torch.from_numpy(np.flatnonzero(has))], scale)
        error[has] = (pairs.double() - true_x[torch.from_numpy(np.flatnonzero(has))].double()).abs().reshape(int(has.sum()), -1).amax(1).numpy()
        predicted[has] = reconstructed_y[torch.from_numpy(matched[has])].numpy()
    base_psnr, base_ssim, _ = pair_scores(baseline_x.expand(n, *baseline_x.shape[1:]), true_x, scale)
    exact = claimed_exact = None
    if claimed is not None:
        exact = np.zeros(n, dtype=bool)
        if has.any():
            exact[has] = scale.exact(pairs, true_x[torch.from_numpy(np.flatnonzero(has))])
        claimed_exact = np.zeros(n, dtype=bool)
        claimed_exact[has] = claimed.bool().numpy()[matched[has]]
    chance_psnr = value.copy()
    if chance_x is not None and len(chance_x):
        guessed = match(scale.unit(true_x), scale.unit(chance_x))
        hit = guessed >= 0
        if hit.any():
            chance_psnr[hit] = pair_scores(chance_x[torch.from_numpy(guessed[hit])], true_x[torch.from_numpy(np.flatnonzero(hit))], scale)[0]
    return Scores(matched, predicted, psnr_, ssim_, mse_, error, base_psnr, base_ssim,
                  has & (np.nan_to_num(psnr_, nan=-np.inf) >= PSNR_THRESHOLD_DB), exact, claimed_exact, chance_psnr)
