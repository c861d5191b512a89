"""Scoring of reconstructions: PSNR and SSIM as torchmetrics and a slow reference compute them, the
pairing as brute force finds it, the baseline and the thresholds as stated."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from torchmetrics.image import PeakSignalNoiseRatio, StructuralSimilarityIndexMeasure

from attackers.inference.reconstruction.quality import (
    PSNR_THRESHOLD_DB,
    Scale,
    baseline,
    chance,
    match,
    mse_matrix,
    psnr,
    score,
    ssim,
)
from fedsim.learning.datasets import Pool


def _images(n: int, shape=(3, 16, 16), seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Fixed [0, 1] images and noisy copies of them (noise 0.01 to 0.3, one level per image)."""
    generator = torch.Generator().manual_seed(seed)
    true = torch.rand((n, *shape), generator=generator, dtype=torch.float64)
    levels = torch.linspace(0.01, 0.3, n, dtype=torch.float64).view(-1, *([1] * len(shape)))
    noisy = (true + levels * torch.randn((n, *shape), generator=generator, dtype=torch.float64)).clamp(0, 1)
    return noisy, true


def test_psnr_per_record_equals_torchmetrics_metric_and_ten_log10_one_over_mse():
    noisy, true = _images(6)
    values = psnr(noisy, true)
    assert values.shape == (6,)
    for i in range(6):
        metric = PeakSignalNoiseRatio(data_range=1.0)
        metric.update(noisy[i : i + 1], true[i : i + 1])
        assert values[i] == pytest.approx(metric.compute().item(), rel=1e-6)  # the metric object keeps float32 states
        slow = np.mean((noisy[i].numpy() - true[i].numpy()) ** 2)
        assert values[i] == pytest.approx(10 * np.log10(1 / slow), rel=1e-6)  # torchmetrics holds data_range in float32
    assert np.all(np.diff(values) < 0)  # more noise, lower PSNR


def test_ssim_per_image_equals_torchmetrics_metric_image_by_image():
    noisy, true = _images(5, (1, 28, 28))
    values = ssim(noisy, true)
    for i in range(5):
        metric = StructuralSimilarityIndexMeasure(data_range=1.0)
        metric.update(noisy[i : i + 1], true[i : i + 1])
        assert values[i] == pytest.approx(metric.compute().item(), rel=1e-6)  # the metric object keeps float32 states
    assert ssim(true, true) == pytest.approx(np.ones(5))
    small_noisy, small_true = _images(3, (1, 8, 8))  # digits-sized images keep torchmetrics' default window
    metric = StructuralSimilarityIndexMeasure(data_range=1.0, reduction="none")
    assert ssim(small_noisy, small_true) == pytest.approx(metric(small_noisy, small_true).numpy(), rel=1e-6)


def _brute_force(cost: np.ndarray) -> tuple[float, dict[int, int]]:
    """The least total cost over every injective pairing of rows with columns (min(n, m) pairs), and that pairing."""
    n, m = cost.shape
    best, pairing = np.inf, {}
    if n <= m:
        for columns in itertools.permutations(range(m), n):
            total = sum(cost[i, j] for i, j in enumerate(columns))
            if total < best:
                best, pairing = total, dict(enumerate(columns))
    else:
        for rows in itertools.permutations(range(n), m):
            total = sum(cost[i, j] for j, i in enumerate(rows))
            if total < best:
                best, pairing = total, {i: j for j, i in enumerate(rows)}
    return best, pairing


@pytest.mark.parametrize("n_true, n_reconstructed", [(4, 4), (3, 5), (5, 3)])
def test_matching_equals_brute_force_over_permutations(n_true, n_reconstructed):
    generator = torch.Generator().manual_seed(n_true * 10 + n_reconstructed)
    true = torch.rand((n_true, 1, 4, 4), generator=generator, dtype=torch.float64)
    reconstructed = torch.rand((n_reconstructed, 1, 4, 4), generator=generator, dtype=torch.float64)
    cost = mse_matrix(true, reconstructed)
    slow = np.array([[np.mean((t.numpy() - r.numpy()) ** 2) for r in reconstructed] for t in true])
    np.testing.assert_allclose(cost, slow, rtol=1e-10, atol=1e-12)
    assigned = match(true, reconstructed)
    best, pairing = _brute_force(slow)
    assert sum(slow[i, j] for i, j in enumerate(assigned) if j >= 0) == pytest.approx(best, rel=1e-12)
    assert {i: int(j) for i, j in enumerate(assigned) if j >= 0} == pairing
    assert (assigned < 0).sum() == max(0, n_true - n_reconstructed)  # a true record without a reconstruction


def _image_pool(n: int = 40, seed: int = 0) -> Pool:
    generator = torch.Generator().manual_seed(seed)
    features = torch.randint(0, 256, (n, 3, 8, 8), generator=generator, dtype=torch.uint8)
    return Pool("test", features, torch.arange(n) % 4, 4, mean=(0.4, 0.5, 0.6), std=(0.2, 0.25, 0.3))


def test_an_image_pool_goes_back_to_its_pixels_and_its_bounds_are_the_normalised_0_and_1():
    pool = _image_pool()
    scale = Scale.of_pool(pool)
    x, _ = pool.take(np.arange(len(pool)))
    torch.testing.assert_close(scale.unit(x), pool.features.double() / 255, rtol=0, atol=1e-6)
    assert scale.image
    torch.testing.assert_close(scale.unit(scale.lower[None]), torch.zeros(1, 3, 8, 8, dtype=torch.float64), rtol=0, atol=1e-6)
    torch.testing.assert_close(scale.unit(scale.upper[None]), torch.ones(1, 3, 8, 8, dtype=torch.float64), rtol=0, atol=1e-6)


def test_a_tabular_pool_scales_each_feature_by_its_range_and_has_no_ssim():
    features = torch.tensor([[0.0, 10.0, 5.0], [2.0, 30.0, 5.0], [1.0, 20.0, 5.0]])
    pool = Pool("rows", features, torch.tensor([0, 1, 0]), 2)
    scale = Scale.of_pool(pool)
    assert not scale.image
    torch.testing.assert_close(scale.unit(features), torch.tensor([[0.0, 0.0, 0.0], [1.0, 1.0, 0.0], [0.5, 0.5, 0.0]], dtype=torch.float64))
    torch.testing.assert_close(scale.lower, features.amin(0))
    torch.testing.assert_close(scale.upper, features.amax(0))
    true = features[[0, 2]]
    result = score(true, true + torch.tensor([0.2, 0.0, 0.0]), torch.tensor([0, 1]), None, features[1:2], scale)
    assert np.isnan(result.ssim).all() and np.isnan(result.baseline_ssim).all()
    # feature 0 off by 0.1 of its range, the others exact: mse = 0.01 / 3
    np.testing.assert_allclose(result.psnr, 10 * np.log10(3 / 0.01), rtol=1e-6)


def test_scores_pair_shuffled_reconstructions_and_apply_the_stated_thresholds():
    pool = _image_pool()
    scale = Scale.of_pool(pool)
    true_x, true_y = pool.take(np.arange(5))
    generator = torch.Generator().manual_seed(1)
    # reconstruction 0 is record 3 exactly, 1 is record 0 off by 2 pixel levels (PSNR 42 dB, above 20 dB, not exact),
    # 2 is record 4 drowned in noise (below 20 dB), 3 is record 1 off by 0.4 of a level (rounds back to its bytes: exact);
    # record 2 gets none. Pixel levels in model space: level / 255 / std per channel.
    level = 1 / 255 / torch.tensor([0.2, 0.25, 0.3]).view(3, 1, 1)
    reconstructed = torch.stack([true_x[3], true_x[0] + 2 * level, true_x[4] + 2 * torch.randn(true_x[4].shape, generator=generator),
                                 true_x[1] + 0.4 * level])
    labels = torch.tensor([7, 8, 9, 6])
    claimed = torch.tensor([True, True, False, False])
    known = pool.take(np.arange(20, 40))[0]
    result = score(true_x, reconstructed, labels, claimed, baseline(known), scale)
    assert result.matched.tolist() == [1, 3, -1, 0, 2]
    assert result.predicted_label[[0, 1, 3, 4]].tolist() == [8, 6, 7, 9] and np.isnan(result.predicted_label[2])
    assert result.recovered.tolist() == [True, True, False, True, False]
    assert result.exact.tolist() == [False, True, False, True, False]
    assert result.claimed_exact.tolist() == [True, False, False, True, False]
    assert np.isnan(result.psnr[2]) and np.isnan(result.ssim[2]) and np.isnan(result.mse[2])
    assert result.psnr[4] < PSNR_THRESHOLD_DB <= result.psnr[0]
    assert result.max_abs_error[1] < result.max_abs_error[0]
    # the baseline: the mean known non-member, scored against every true record like any reconstruction
    mean = known.double().mean(0)
    for i in range(5):
        slow = np.mean((scale.unit(mean[None]).numpy() - scale.unit(true_x[i : i + 1]).numpy()) ** 2)
        assert result.baseline_psnr[i] == pytest.approx(10 * np.log10(1 / slow), rel=1e-5)
    assert np.all(result.baseline_psnr < PSNR_THRESHOLD_DB)
    none = score(true_x, reconstructed, labels, None, baseline(known), scale)
    assert none.exact is None and none.claimed_exact is None and np.isnan(none.chance_psnr).all()


def test_chance_gets_as_many_guesses_as_the_attack_and_the_same_pairing():
    pool = _image_pool()
    scale = Scale.of_pool(pool)
    true_x, _ = pool.take(np.arange(5))
    known = pool.take(np.arange(20, 40))[0]
    guesses = chance(known, 3, np.random.SeedSequence(4))
    again = chance(known, 3, np.random.SeedSequence(4))
    assert guesses.shape == (3, 3, 8, 8) and torch.equal(guesses, again)
    assert all(any(torch.equal(g, k) for k in known) for g in guesses)  # drawn from the known non-members, no replacement
    result = score(true_x, true_x[:3], torch.zeros(3, dtype=torch.long), None, baseline(known), scale, guesses)
    # brute force: the 3 guesses against 3 of the 5 records, the assignment of least total MSE
    unit_true, unit_guess = scale.unit(true_x).numpy(), scale.unit(guesses).numpy()
    cost = ((unit_true[:, None] - unit_guess[None]) ** 2).reshape(5, 3, -1).mean(2)
    best = min(itertools.permutations(range(5), 3), key=lambda rows: sum(cost[r, c] for c, r in enumerate(rows)))
    expected = np.full(5, np.nan)
    for column, row in enumerate(best):
        expected[row] = 10 * np.log10(1 / cost[row, column])
    np.testing.assert_allclose(result.chance_psnr, expected, rtol=1e-5)
    assert chance(known, 50, np.random.SeedSequence(4)).shape[0] == len(known)  # fewer known than asked: all of them
