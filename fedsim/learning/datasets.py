"""Data set registry: each loader reads real files into one in-memory pool of records.

A record's id is its position in the pool (for data sets with official train/test files the
pool is train followed by test). Which records are members, non-members or test records is
decided by the membership ledger, not by the files' own split: the attack needs its own split.
Images stay uint8 in memory and are normalised on the way out, so a pool is cheap to hold
in every simulation worker.
"""

from __future__ import annotations

import hashlib
import os
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from fedsim.core.errors import FedsimError
from fedsim.core.registry import Registry


@dataclass(frozen=True)
class Pool:
    """All records of a data set: features (uint8 images or float32 rows) and int64 labels."""

    name: str
    features: torch.Tensor
    labels: torch.Tensor
    num_classes: int
    mean: tuple[float, ...] | None = None  # per channel; set for image pools
    std: tuple[float, ...] | None = None

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.features.shape[1:])

    def take(self, ids: np.ndarray | list[int] | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The records `ids` as the model takes them: float32 inputs and int64 labels."""
        index = torch.from_numpy(np.array(ids, dtype=np.int64))
        x = self.features[index]
        if self.mean is not None:
            shape = (1, -1, 1, 1)
            x = (x.float() / 255.0 - torch.tensor(self.mean).view(shape)) / torch.tensor(self.std).view(shape)
        return x.float(), self.labels[index]


Loader = Callable[[Path | None, bool], Pool]
DATASETS: Registry[Loader] = Registry("dataset", "data.dataset")
register = DATASETS.register


@lru_cache(maxsize=2)
def load_pool(name: str, root: str | None, download: bool = False) -> Pool:
    """Load a registered data set once per process (simulation workers call this per round)."""
    loader = DATASETS.get_or_fail(name)
    path = Path(root).expanduser() if root else None
    return loader(path, download)


def pool_for(data) -> Pool:
    """The pool a config's `data` section names (loaded once per process)."""
    return load_pool(data.dataset, data.root, data.download)


def _need_root(name: str, root: Path | None, expected: str) -> Path:
    if root is None:
        raise FedsimError(f"data.root: dataset {name!r} needs data.root, the folder holding {expected}")
    if not root.exists():
        raise FedsimError(f"data.root: {root} does not exist; set it to the folder holding {expected}")
    return root


def _find_file(name: str, root: Path | None, relative: str) -> Path:
    """Root itself when it is the file, else root/relative; a clear error when neither exists."""
    root = _need_root(name, root, relative)
    for candidate in (root, root / relative):
        if candidate.is_file():
            return candidate
    raise FedsimError(f"data.root: {root / relative} not found for dataset {name!r}; set data.root to the folder holding {relative}")


def _read_numeric_csv(name: str, file: Path, columns: int | None, header: int | None = None) -> np.ndarray:
    """A headerless CSV of numbers (quoted or not) as float32, checking shape and content."""
    try:
        frame = pd.read_csv(file, header=header, dtype=str, skipinitialspace=True)
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as exc:
        raise FedsimError(f"{file}: not a readable CSV for dataset {name!r} ({str(exc).splitlines()[0]})") from None
    if columns is not None and frame.shape[1] != columns:
        raise FedsimError(f"{file}: expected {columns} columns for dataset {name!r}, found {frame.shape[1]}; is it the right file?")
    numbers = frame.apply(pd.to_numeric, errors="coerce")
    bad = numbers.isna() & frame.notna() | frame.isna()
    if bad.to_numpy().any():
        row, col = np.argwhere(bad.to_numpy())[0]
        raise FedsimError(
            f"{file}: row {row + 1}, column {col + 1} is {frame.iat[row, col]!r}, not a number; the file is corrupt or not a {name} file"
        )
    return numbers.to_numpy(dtype=np.float32)


def _labelled_rows(name: str, table: np.ndarray, num_classes: int, label_col: int = 0) -> Pool:
    labels = table[:, label_col].astype(np.int64) - 1  # files number classes from 1
    if labels.min() < 0 or labels.max() >= num_classes:
        raise FedsimError(f"dataset {name!r}: labels must be 1..{num_classes}, found {labels.min() + 1}..{labels.max() + 1}")
    features = np.delete(table, label_col, axis=1)
    return Pool(name, torch.from_numpy(np.ascontiguousarray(features)), torch.from_numpy(labels), num_classes)


@register("digits")
def load_digits(root: Path | None, download: bool) -> Pool:
    """scikit-learn's 8x8 digits (1,797 records), shipped inside scikit-learn: works anywhere."""
    from sklearn.datasets import load_digits as sklearn_digits

    bunch = sklearn_digits()
    features = torch.tensor(bunch.data / 16.0, dtype=torch.float32)
    return Pool("digits", features, torch.tensor(bunch.target, dtype=torch.int64), 10)


def _torchvision_pool(name: str, cls: type, root: Path | None, download: bool, num_classes: int, mean, std) -> Pool:
    root = Path(root) if root else None
    if root is None:
        raise FedsimError(f"data.root: dataset {name!r} needs data.root (torchvision's root folder)")
    parts = []
    for train in (True, False):
        try:
            split = cls(root=str(root), train=train, download=download)
        except (RuntimeError, ValueError, EOFError, OSError) as exc:
            if "not found" in str(exc).lower():
                hint = "" if download else ", or set data.download: true to fetch it"
                raise FedsimError(f"data.root: {name} not found under {root} (torchvision's layout); set data.root to the folder holding it{hint}") from None
            raise FedsimError(f"data.root: the {name} files under {root} are corrupt or truncated ({str(exc).splitlines()[0]})") from None
        images = torch.as_tensor(np.asarray(split.data))
        images = images.unsqueeze(1) if images.dim() == 3 else images.permute(0, 3, 1, 2)
        parts.append((images.contiguous(), torch.as_tensor(np.asarray(split.targets), dtype=torch.int64)))
    features = torch.cat([p[0] for p in parts])
    labels = torch.cat([p[1] for p in parts])
    return Pool(name, features, labels, num_classes, mean, std)


@register("mnist")
def load_mnist(root: Path | None, download: bool) -> Pool:
    """MNIST, 70,000 28x28 images: torchvision reads <root>/MNIST/raw."""
    from torchvision.datasets import MNIST

    return _torchvision_pool("mnist", MNIST, root, download, 10, (0.1307,), (0.3081,))


_CIFAR_MEAN, _CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)


@register("cifar10")
def load_cifar10(root: Path | None, download: bool) -> Pool:
    from torchvision.datasets import CIFAR10

    return _torchvision_pool("cifar10", CIFAR10, root, download, 10, _CIFAR_MEAN, _CIFAR_STD)


@register("cifar100")
def load_cifar100(root: Path | None, download: bool) -> Pool:
    from torchvision.datasets import CIFAR100

    return _torchvision_pool("cifar100", CIFAR100, root, download, 100, (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762))


def _cache_dir() -> Path:
    return Path(os.environ.get("FEDSIM_CACHE", Path.home() / ".cache" / "fedsim"))


def _extracted(tar: Path) -> Path:
    """Extract a tar of images once into the cache; later calls reuse the folder."""
    stat = tar.stat()
    key = hashlib.sha256(f"{tar.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:16]
    target = _cache_dir() / f"{tar.stem}-{key}"
    if not (target / ".complete").exists():
        target.mkdir(parents=True, exist_ok=True)
        try:
            with tarfile.open(tar) as archive:
                archive.extractall(target, filter="data")
        except tarfile.TarError as exc:
            raise FedsimError(f"data.root: {tar} is not a readable tar ({exc})") from None
        (target / ".complete").touch()
    return target


@register("imagefolder")
def load_imagefolder(root: Path | None, download: bool) -> Pool:
    """Images in class folders (torchvision ImageFolder): root, or root/train + root/test; a .tar is extracted once."""
    from torchvision.datasets import ImageFolder
    from torchvision.transforms.functional import pil_to_tensor

    root = _need_root("imagefolder", root, "class folders of images (or a .tar of them)")
    if root.is_file():
        root = _extracted(root)
    splits = [root / s for s in ("train", "test") if (root / s).is_dir()] or [root]
    images, labels, classes = [], [], None
    for split in splits:
        try:
            folder = ImageFolder(str(split))
        except (FileNotFoundError, RuntimeError) as exc:
            raise FedsimError(f"data.root: {split} has no class folders of images ({exc})") from None
        if classes is not None and folder.classes != classes:
            raise FedsimError(f"data.root: {split} has classes {folder.classes}, unlike {splits[0]}")
        classes = folder.classes
        for path, label in folder.samples:
            try:
                images.append(pil_to_tensor(folder.loader(path)))
            except (OSError, ValueError) as exc:
                raise FedsimError(f"{path}: not a readable image ({exc}); remove or replace it") from None
            labels.append(label)
    shapes = {tuple(i.shape) for i in images}
    if len(shapes) != 1:
        raise FedsimError(f"data.root: images under {root} differ in size ({sorted(shapes)[:3]}...); resize them to one size")
    assert classes is not None  # splits is never empty
    features = torch.stack(images)
    channels = features.shape[1]
    as_float = features.float() / 255.0
    mean = tuple(as_float.mean(dim=(0, 2, 3)).tolist())
    std = tuple(as_float.std(dim=(0, 2, 3)).tolist())
    del as_float
    return Pool("imagefolder", features, torch.tensor(labels, dtype=torch.int64), len(classes), mean[:channels], std[:channels])


@register("location")
def load_location(root: Path | None, download: bool) -> Pool:
    """Location (Foursquare Bangkok, Shokri et al.): label "1".."30" then 446 binary features."""
    table = _read_numeric_csv("location", _find_file("location", root, "bangkok"), 447)
    return _labelled_rows("location", table, 30)


@register("purchase100")
def load_purchase100(root: Path | None, download: bool) -> Pool:
    """Purchase100 (Shokri et al.): `dataset_purchase`, label 1..100 then 600 binary features."""
    table = _read_numeric_csv("purchase100", _find_file("purchase100", root, "dataset_purchase"), 601)
    return _labelled_rows("purchase100", table, 100)


@register("texas100")
def load_texas100(root: Path | None, download: bool) -> Pool:
    """Texas100 (Shokri et al.): texas/100/feats (6,169 binary features) and texas/100/labels (1..100)."""
    feats = _read_numeric_csv("texas100", _find_file("texas100", root, "texas/100/feats"), 6169)
    labels = _read_numeric_csv("texas100", _find_file("texas100", root, "texas/100/labels"), 1)
    if len(labels) != len(feats):
        raise FedsimError(f"data.root: texas100 has {len(feats)} feature rows but {len(labels)} labels")
    return _labelled_rows("texas100", np.concatenate([labels, feats], axis=1), 100)


_ADULT_COLUMNS = [
    "age", "workclass", "fnlwgt", "education", "education-num", "marital-status", "occupation",
    "relationship", "race", "sex", "capital-gain", "capital-loss", "hours-per-week", "native-country", "income",
]
_ADULT_NUMERIC = ["age", "fnlwgt", "education-num", "capital-gain", "capital-loss", "hours-per-week"]


@register("adult")
def load_adult(root: Path | None, download: bool) -> Pool:
    """UCI Adult: adult.data + adult.test, categoricals one-hot, numbers standardised; label >50K."""
    frames = []
    for name, skip in (("adult.data", 0), ("adult.test", 1)):
        file = _need_root("adult", root, name) / name
        if not file.is_file():
            raise FedsimError(f"data.root: {file} not found; set data.root to the folder holding adult.data and adult.test")
        try:
            frame = pd.read_csv(file, header=None, names=_ADULT_COLUMNS, skiprows=skip, skipinitialspace=True, na_values="?")
        except (pd.errors.ParserError, UnicodeDecodeError) as exc:
            raise FedsimError(f"{file}: not a readable Adult CSV ({str(exc).splitlines()[0]})") from None
        frames.append(frame)
    frame = pd.concat(frames, ignore_index=True).dropna(subset=["income"])
    income = frame.pop("income").str.rstrip(".")
    if not income.isin(["<=50K", ">50K"]).all():
        raise FedsimError(f"data.root: adult files under {root} have labels other than <=50K / >50K; are they the UCI files?")
    numeric = frame[_ADULT_NUMERIC].apply(pd.to_numeric, errors="coerce")
    if numeric.isna().any().any():
        raise FedsimError(f"data.root: adult files under {root} have non-numeric cells in numeric columns")
    numeric = (numeric - numeric.mean()) / numeric.std()
    categorical = pd.get_dummies(frame.drop(columns=_ADULT_NUMERIC).fillna("missing"), dtype=np.float32)
    features = np.concatenate([numeric.to_numpy(np.float32), categorical.to_numpy(np.float32)], axis=1)
    labels = (income == ">50K").to_numpy(np.int64)
    return Pool("adult", torch.from_numpy(features), torch.from_numpy(labels), 2)
