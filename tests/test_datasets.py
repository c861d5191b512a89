import tarfile

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import shared_data
from fedsim.datasets import load_pool
from fedsim.errors import FedsimError


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


def test_location_from_shared_data():
    pool = load_pool("location", str(shared_data("location")))
    assert len(pool) == 5010 and pool.input_shape == (446,) and pool.num_classes == 30
    assert set(pool.features.unique().tolist()) <= {0.0, 1.0} and pool.labels.min() == 0


def test_adult_is_one_hot_with_binary_labels():
    pool = load_pool("adult", str(shared_data("adult")))
    assert len(pool) == 48_842 and pool.num_classes == 2
    assert 0.2 < pool.labels.float().mean().item() < 0.3  # about a quarter earn >50K


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


def test_truncated_idx_file_is_reported(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    source = shared_data("MNIST/raw")
    for name in ("train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        (raw / name).write_bytes((source / name).read_bytes())
    (raw / "train-images-idx3-ubyte").write_bytes((source / "train-images-idx3-ubyte").read_bytes()[:5000])
    with pytest.raises(FedsimError, match="corrupt or truncated"):
        load_pool("mnist", str(tmp_path))
