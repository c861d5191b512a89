"""The `huggingface` data set reads what Flower users keep their data in: a `save_to_disk` folder, a
parquet file, a CSV file, a folder of images; each gives the same pool as the data it was written
from, and a file or column it cannot use is one line."""

from __future__ import annotations

import datasets
import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.datasets import load_digits

from fedsim.core.errors import FedsimError
from fedsim.learning.datasets import Columns, load_pool

WRITERS = 6


@pytest.fixture(scope="module")
def digits():
    """scikit-learn's digits with a fake writer id per record (unequal writers, as real ones are)."""
    bunch = load_digits()
    writers = np.random.default_rng(3).choice(WRITERS, len(bunch.target), p=[0.3, 0.25, 0.2, 0.1, 0.1, 0.05])
    return (bunch.data / 16.0).astype(np.float32), bunch.target.astype(np.int64), np.array([f"writer-{w}" for w in writers])


@pytest.fixture(autouse=True)
def _fresh_pools(monkeypatch, tmp_path):
    monkeypatch.setenv("FEDSIM_CACHE", str(tmp_path / "cache"))
    load_pool.cache_clear()
    yield
    load_pool.cache_clear()


def _assert_pool(pool, x, y, groups):
    assert len(pool) == len(y) and pool.input_shape == (64,) and pool.num_classes == 10 and pool.mean is None
    np.testing.assert_array_equal(pool.features.numpy(), x)
    np.testing.assert_array_equal(pool.labels.numpy(), y)
    np.testing.assert_array_equal(pool.groups, groups)


def test_a_saved_folder_a_parquet_and_a_csv_file_give_the_same_pool(tmp_path, digits):
    x, y, writers = digits
    vectors = datasets.Dataset.from_dict({"x": x, "label": y, "writer": writers})
    vectors.save_to_disk(str(tmp_path / "saved"))
    vectors.to_parquet(str(tmp_path / "vectors.parquet"))
    tabular = datasets.Dataset.from_dict({**{f"pixel{i}": x[:, i] for i in range(64)}, "writer": writers, "label": y})
    tabular.to_csv(str(tmp_path / "digits.csv"), index=False)
    tabular.to_parquet(str(tmp_path / "tabular.parquet"))
    columns = Columns(label="label", groups="writer")
    for source in ("saved", "vectors.parquet", "digits.csv", "tabular.parquet"):
        _assert_pool(load_pool("huggingface", str(tmp_path / source), False, columns), x, y, writers)
    with pytest.raises(FedsimError, match=r"^data.features: column 'writer' of 'huggingface' is not numbers; name the input column"):
        load_pool("huggingface", str(tmp_path / "digits.csv"), False, Columns())  # without partition_by the ids would be a feature


def test_a_dataset_dicts_splits_are_one_pool_train_first(tmp_path, digits):
    x, y, writers = digits
    splits = datasets.DatasetDict({"test": datasets.Dataset.from_dict({"x": x[1500:], "label": y[1500:], "writer": writers[1500:]}),
                                   "train": datasets.Dataset.from_dict({"x": x[:1500], "label": y[:1500], "writer": writers[:1500]})})
    splits.save_to_disk(str(tmp_path / "splits"))
    _assert_pool(load_pool("huggingface", str(tmp_path / "splits"), False, Columns(groups="writer")), x, y, writers)


def _images(count: int, seed: int = 0) -> list[np.ndarray]:
    return list(np.random.default_rng(seed).integers(0, 256, (count, 4, 5, 3), dtype=np.uint8))


def test_pil_images_become_uint8_channels_first_normalised_by_the_pool(tmp_path):
    pixels, labels = _images(12), np.arange(12) % 3
    features = datasets.Features({"img": datasets.Image(), "label": datasets.ClassLabel(names=["a", "b", "c", "d"])})
    datasets.Dataset.from_dict({"img": [Image.fromarray(p) for p in pixels], "label": labels}, features=features).save_to_disk(str(tmp_path / "rgb"))
    pool = load_pool("huggingface", str(tmp_path / "rgb"), False, Columns())
    expected = np.stack(pixels).transpose(0, 3, 1, 2)
    assert pool.features.dtype == torch.uint8 and pool.input_shape == (3, 4, 5) and pool.num_classes == 4  # the ClassLabel's four names
    np.testing.assert_array_equal(pool.features.numpy(), expected)
    scaled = expected / 255.0
    np.testing.assert_allclose(pool.mean, scaled.mean(axis=(0, 2, 3)), rtol=1e-12)
    np.testing.assert_allclose(pool.std, scaled.transpose(1, 0, 2, 3).reshape(3, -1).std(axis=1, ddof=1), rtol=1e-12)
    x, y = pool.take([5])
    np.testing.assert_allclose(x[0].numpy(), (scaled[5] - scaled.mean(axis=(0, 2, 3))[:, None, None])
                               / np.asarray(pool.std)[:, None, None], atol=1e-5)
    assert y.tolist() == [labels[5]]


def test_a_folder_of_class_folders_is_read_by_datasets_imagefolder(tmp_path):
    pixels = _images(9, seed=1)
    written = set()
    for i, image in enumerate(pixels):
        name = ("cat", "dog", "emu")[i % 3]
        (tmp_path / "pictures" / name).mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(tmp_path / "pictures" / name / f"{i}.png")
        written.add((image.transpose(2, 0, 1).tobytes(), i % 3))
    pool = load_pool("huggingface", str(tmp_path / "pictures"), False, Columns())
    assert len(pool) == 9 and pool.input_shape == (3, 4, 5) and pool.num_classes == 3
    assert {(f.numpy().tobytes(), int(c)) for f, c in zip(pool.features, pool.labels)} == written


@pytest.mark.parametrize(("root", "columns", "expected"), [
    (None, Columns(), "data.root: dataset 'huggingface' needs data.root"),
    ("someone/some-dataset", Columns(), "data.root: someone/some-dataset is no local file or folder; to load the Hugging Face Hub data set of "
                                        "that name set data.download: true"),
    ("notes.txt", Columns(), "is neither .parquet nor .csv"),
    ("saved", Columns(label="digit"), "data.label: 'huggingface' has no column 'digit'; its columns are ['x', 'label']"),
    ("saved", Columns(groups="user"), "data.partition_by: 'huggingface' has no column 'user'"),
    ("broken.parquet", Columns(), "data.root: cannot read"),
])
def test_what_cannot_be_read_is_one_line(tmp_path, monkeypatch, root, columns, expected):
    monkeypatch.chdir(tmp_path)
    datasets.Dataset.from_dict({"x": np.zeros((4, 2), np.float32), "label": [0, 1, 0, 1]}).save_to_disk("saved")
    (tmp_path / "notes.txt").write_text("not data")
    (tmp_path / "broken.parquet").write_bytes(b"PAR1 truncated")
    with pytest.raises(FedsimError) as error:
        load_pool("huggingface", root, False, columns)
    assert expected in str(error.value) and "\n" not in str(error.value)
