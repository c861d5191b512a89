"""Shared test fixtures: the real data folder beside the project, skipped cleanly when absent, and
small synthetic files in the loaders' formats, written by the tests, so that every real-data
check also runs on a clone without it."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest

from fedsim.core.config import Config, load_config

SHARED_DATA = (Path(__file__).resolve().parents[1] / ".." / "shared" / "data").resolve()


def shared_data(relative: str = "") -> Path:
    """A path under ../shared/data, or skip the test naming what is missing."""
    path = SHARED_DATA / relative
    if not path.exists():
        pytest.skip(f"real data not found at {path} (the project expects ../shared/data beside it)")
    return path


def synthetic_location(folder: Path, rows: int = 2000, seed: int = 0) -> Path:
    """A file in Location's format (label "1".."30", then 446 binary features): each class a sparse
    binary prototype, each record its class's prototype with 30% of the bits flipped. Written here,
    so the real-member check runs on any clone (the real Location data is under ../shared/data)."""
    rng = np.random.default_rng(seed)
    prototypes = rng.random((30, 446)) < 0.1
    labels = rng.integers(0, 30, rows)
    features = prototypes[labels] ^ (rng.random((rows, 446)) < 0.3)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "bangkok").write_text("".join(f'"{y + 1}",' + ",".join(map(str, x.astype(int))) + "\n" for y, x in zip(labels, features)))
    return folder


def _idx(path: Path, array: np.ndarray) -> None:
    """An IDX file (LeCun's MNIST format): magic 0x08 (unsigned byte) and the rank, big-endian sizes, then the bytes."""
    path.write_bytes(struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape) + array.astype(np.uint8).tobytes())


def synthetic_mnist(root: Path, train: int, test: int, size: int = 28, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """MNIST's four raw IDX files under root/MNIST/raw (torchvision's layout), random images of
    `size` x `size` and random labels 0..9; returns (images, labels), train then test."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (train + test, size, size), dtype=np.uint8)
    labels = rng.integers(0, 10, train + test).astype(np.uint8)
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for prefix, part in (("train", slice(0, train)), ("t10k", slice(train, None))):
        _idx(raw / f"{prefix}-images-idx3-ubyte", images[part])
        _idx(raw / f"{prefix}-labels-idx1-ubyte", labels[part])
    return images, labels.astype(np.int64)


SMALL = ["data.records_per_client=60", "data.nonmembers=80", "data.test_records=100",
         "adversary.target_records=40", "train.rounds=2", "model.args={hidden: [32]}", "attacks=[loss]", "backend.engine=in-process"]
RAY = "backend.engine=ray"  # the override a test about Flower's Ray simulation itself adds


def small_config(*overrides: str) -> Config:
    """The built-in quickstart (whatever the working folder holds) made small, with `key=value` overrides.

    Small runs use the in-process engine (records equal to the Ray engine's, tests/test_inprocess.py):
    a Ray simulation costs seconds per run to start. Tests of the Ray engine itself pass `RAY`.
    """
    return load_config(None, [*SMALL, *overrides], default_file=False)


PINNED_CONFIG = Path(__file__).resolve().parent / "data" / "pinned.yaml"


@pytest.fixture(scope="session")
def pinned_run(tmp_path_factory) -> Path:
    """`fedsim run tests/data/pinned.yaml` on the in-process engine, made once per session in this
    process: the same machine's reference that other engines' runs of that config must equal byte
    for byte (docs/design.md, section 4.2)."""
    from fedsim.app.cli import main

    folder = tmp_path_factory.mktemp("pinned")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        assert main(["run", str(PINNED_CONFIG), "--out", str(folder / "run"), "--quiet", "--set", "backend.engine=in-process"]) == 0
    return folder / "run"


@pytest.fixture(autouse=True)
def _isolated_cwd(tmp_path, monkeypatch):
    """Tests run in a temporary folder so runs/ and configs/ of the checkout are not touched."""
    monkeypatch.chdir(tmp_path)
