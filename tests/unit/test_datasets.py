import csv
import tarfile

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import shared_data, synthetic_location, synthetic_mnist
from fedsim.core.errors import FedsimError
from fedsim.learning.datasets import load_pool


def test_digits_ships_with_scikit_learn():
    pool = load_pool("digits", None)
    assert len(pool) == 1797 and pool.input_shape == (64,) and pool.num_classes == 10
    x, y = pool.take([0, 5])
    assert x.dtype == torch.float32 and x.max() <= 1 and y.tolist() == [0, 5]


def test_mnist_from_shared_data_is_normalised():
    pool = load_pool("mnist", str(shared_data("MNIST")).removesuffix("/MNIST"))
    assert len(pool) == 70_000 and pool.input_shape == (1, 28, 28) and pool.features.dtype == torch.uint8
    x, _ = pool.take(np.arange(2000))
    assert abs(x.mean().item()) < 0.1 and abs(x.std().item() - 1) < 0.1


def test_mnist_idx_files_are_read_train_then_test_and_normalised(tmp_path):
    """The same checks on IDX files written here (any clone): every pixel and label, in order."""
    images, labels = synthetic_mnist(tmp_path, train=30, test=12)
    pool = load_pool("mnist", str(tmp_path))
    assert len(pool) == 42 and pool.input_shape == (1, 28, 28) and pool.features.dtype == torch.uint8
    assert np.array_equal(pool.features[:, 0].numpy(), images) and pool.labels.tolist() == labels.tolist()
    x, y = pool.take([41, 0, 30])
    expected = (images[[41, 0, 30]] / 255.0 - 0.1307) / 0.3081  # torchvision's MNIST mean and std
    np.testing.assert_allclose(x[:, 0].numpy(), expected, rtol=0, atol=1e-5)
    assert y.tolist() == labels[[41, 0, 30]].tolist()


def test_location_file_is_read_row_by_row(tmp_path):
    """Location's format on a file written here (any clone): label "k" -> class k - 1, the 446 bits as floats."""
    folder = synthetic_location(tmp_path, rows=60)
    with open(folder / "bangkok", newline="") as file:
        rows = [[int(v) for v in row] for row in csv.reader(file)]
    pool = load_pool("location", str(folder))
    assert len(pool) == 60 and pool.input_shape == (446,) and pool.num_classes == 30
    assert pool.labels.tolist() == [row[0] - 1 for row in rows]
    assert np.array_equal(pool.features.numpy(), np.array([row[1:] for row in rows], dtype=np.float32))


def test_location_from_shared_data():
    pool = load_pool("location", str(shared_data("location")))
    assert len(pool) == 5010 and pool.input_shape == (446,) and pool.num_classes == 30
    assert set(pool.features.unique().tolist()) <= {0.0, 1.0} and pool.labels.min() == 0


def test_adult_is_one_hot_with_binary_labels():
    pool = load_pool("adult", str(shared_data("adult")))
    assert len(pool) == 48_842 and pool.num_classes == 2
    assert 0.2 < pool.labels.float().mean().item() < 0.3  # about a quarter earn >50K


ADULT_DATA = """\
39, State-gov, 77516, Bachelors, 13, Never-married, Adm-clerical, Not-in-family, White, Male, 2174, 0, 40, United-States, <=50K
50, Self-emp-not-inc, 83311, Bachelors, 13, Married-civ-spouse, Exec-managerial, Husband, White, Male, 0, 0, 13, United-States, >50K
38, ?, 215646, HS-grad, 9, Divorced, ?, Not-in-family, White, Male, 0, 0, 40, ?, <=50K
"""
ADULT_TEST = """\
|1x3 Cross validator
25, Private, 226802, 11th, 7, Never-married, Machine-op-inspct, Own-child, Black, Male, 0, 0, 40, United-States, <=50K.
44, Private, 160323, Some-college, 10, Married-civ-spouse, Machine-op-inspct, Husband, Black, Male, 7688, 0, 40, United-States, >50K.
"""


def test_adult_files_are_one_hot_and_standardised(tmp_path):
    """UCI Adult's two files in their format, written here (any clone): the test file's first line is
    skipped, its labels end in '.', '?' is a category of its own; numbers are z-scores over both files."""
    (tmp_path / "adult.data").write_text(ADULT_DATA)
    (tmp_path / "adult.test").write_text(ADULT_TEST)
    pool = load_pool("adult", str(tmp_path))
    assert len(pool) == 5 and pool.num_classes == 2 and pool.labels.tolist() == [0, 1, 0, 0, 1]
    ages = np.array([39, 50, 38, 25, 44.0])
    hours_per_week = np.array([40, 13, 40, 40, 40.0])
    features = pool.features.numpy()
    np.testing.assert_allclose(features[:, 0], (ages - ages.mean()) / ages.std(ddof=1), atol=1e-6)
    np.testing.assert_allclose(features[:, 5], (hours_per_week - hours_per_week.mean()) / hours_per_week.std(ddof=1), atol=1e-6)
    # 8 categorical columns one-hot, '?' as "missing": workclass has 4 values (State-gov, Self-emp-not-inc, missing, Private), ...
    levels = [4, 4, 3, 4, 3, 2, 1, 2]  # workclass, education, marital-status, occupation, relationship, race, sex, native-country
    assert pool.input_shape == (6 + sum(levels),)
    assert np.array_equal(features[:, 6:], features[:, 6:].astype(bool)) and (features[:, 6:].sum(axis=1) == 8).all()


def test_purchase100_and_texas100_read_their_standard_formats(tmp_path):
    rng = np.random.default_rng(0)
    rows = [f'"{label}",' + ",".join(map(str, rng.integers(0, 2, 600))) for label in range(1, 101)]
    (tmp_path / "dataset_purchase").write_text("\n".join(rows) + "\n")
    purchase = load_pool("purchase100", str(tmp_path))
    assert purchase.input_shape == (600,) and purchase.labels.tolist() == list(range(100))

    texas = tmp_path / "texas" / "100"
    texas.mkdir(parents=True)
    (texas / "feats").write_text("\n".join(",".join(map(str, rng.integers(0, 2, 6169))) for _ in range(5)) + "\n")
    (texas / "labels").write_text("\n".join(str(v) for v in (3, 100, 1, 7, 50)) + "\n")
    pool = load_pool("texas100", str(tmp_path))
    assert pool.input_shape == (6169,) and pool.labels.tolist() == [2, 99, 0, 6, 49]


def test_imagefolder_reads_class_folders_and_tars(tmp_path):
    for split in ("train", "test"):
        for label, colour in (("cat", 10), ("dog", 200)):
            folder = tmp_path / "images" / split / label
            folder.mkdir(parents=True)
            for i in range(3):
                Image.new("RGB", (8, 8), (colour, i, 0)).save(folder / f"{i}.png")
    pool = load_pool("imagefolder", str(tmp_path / "images"))
    assert len(pool) == 12 and pool.input_shape == (3, 8, 8) and pool.num_classes == 2
    with tarfile.open(tmp_path / "images.tar", "w") as archive:
        archive.add(tmp_path / "images" / "train", arcname="train")
    from_tar = load_pool("imagefolder", str(tmp_path / "images.tar"))
    assert len(from_tar) == 6 and from_tar.labels.tolist() == [0, 0, 0, 1, 1, 1]


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        ('"1",0,1\n"2",1,0\n', "expected 447 columns"),
        ('"1",' + ",".join(["0"] * 445) + ',x\n', "not a number"),
    ],
)
def test_corrupt_csv_is_named(tmp_path, content, fragment):
    (tmp_path / "bangkok").write_text(content)
    with pytest.raises(FedsimError, match=fragment):
        load_pool("location", str(tmp_path))


def test_truncated_idx_file_is_reported_on_files_written_here(tmp_path):
    synthetic_mnist(tmp_path, train=30, test=12)
    images = tmp_path / "MNIST" / "raw" / "train-images-idx3-ubyte"
    images.write_bytes(images.read_bytes()[:5000])
    with pytest.raises(FedsimError, match="corrupt or truncated"):
        load_pool("mnist", str(tmp_path))


def test_truncated_idx_file_is_reported(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    source = shared_data("MNIST/raw")
    for name in ("train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        (raw / name).write_bytes((source / name).read_bytes())
    (raw / "train-images-idx3-ubyte").write_bytes((source / "train-images-idx3-ubyte").read_bytes()[:5000])
    with pytest.raises(FedsimError, match="corrupt or truncated"):
        load_pool("mnist", str(tmp_path))
