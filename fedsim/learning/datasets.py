"""Data set registry: each loader reads real files into one in-memory pool of records.

A record's id is its position in the pool (for data sets with official train/test files the
pool is train followed by test). Which records are members, non-members or test records is
decided by the membership ledger, not by the files' own split: the attack needs its own split.
Images stay uint8 in memory and are normalised on the way out, so a pool is cheap to hold
in every simulation worker.

Besides the registered loaders, a user's own loader (`data.dataset: package.module:name`) and
Hugging Face data sets (`huggingface`: saved folders, parquet/CSV files, image folders, Hub
names) become pools through one conversion, so every pool obeys the same rules; a pool may
carry each record's writer/user id (`groups`) for natural-ID partitioning.
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import os
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from fedsim.core.errors import FedsimError
from fedsim.core.registry import Registry, resolve_import


@dataclass(frozen=True)
class Pool:
    """All records of a data set: features (uint8 images or float32 rows) and int64 labels,
    optionally each record's writer/user id (`groups`, for natural-ID partitioning).
    """

    name: str
    features: torch.Tensor
    labels: torch.Tensor
    num_classes: int
    mean: tuple[float, ...] | None = None  # per channel; set for image pools
    std: tuple[float, ...] | None = None
    groups: np.ndarray | None = None  # (N,) writer/user ids, where the data set has them

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


Loader = Callable[..., Pool]  # (root: Path | None, download: bool[, columns: Columns]) -> Pool
DATASETS: Registry[Loader] = Registry("dataset", "data.dataset")
register = DATASETS.register
HUGGINGFACE = "huggingface"
_IMPORT_HINT = " or 'package.module:name' (your own loader)"


@dataclass(frozen=True)
class Columns:
    """Which columns of a Hugging Face data set hold the inputs, labels and writer/user ids.

    `features` None: the first of image, img and x present, else every column but the label
    and group columns (tabular rows). `groups` None: the pool carries no ids.
    """

    features: str | None = None
    label: str = "label"
    groups: str | None = None


def resolve_dataset(name: str) -> Loader:
    """The loader a config's `data.dataset` names: a registered one, or a user's by import path.

    Parameters
    ----------
    name : str
        A registry name (e.g. "digits") or "package.module:name" (a callable).

    Returns
    -------
    callable
        The loader (a user's is called by `load_pool` as its protocol says).

    Raises
    ------
    FedsimError
        Unknown name, unimportable path, missing attribute, or something not callable: one line.
    """
    if ":" not in name:
        return DATASETS.get_or_fail(name, hint=_IMPORT_HINT)
    found = resolve_import(name, "data.dataset")
    if not callable(found):
        raise FedsimError(f"data.dataset: {name!r} is a {type(found).__name__}, not a function; give a loader that returns "
                          "(features, labels), a datasets.Dataset or a torch Dataset of (x, y) pairs")
    return found


@lru_cache(maxsize=2)
def load_pool(name: str, root: str | None, download: bool = False, columns: Columns = Columns()) -> Pool:
    """Load a data set once per process (simulation workers call this per round).

    Parameters
    ----------
    name : str
        A registered data set or a user's loader, "package.module:name" (`resolve_dataset`).
    root : str, optional
        Where its files are (`data.root`).
    download : bool
        Whether torchvision (or the Hugging Face Hub) may fetch it.
    columns : Columns
        The columns of a Hugging Face data set (`data.features`, `data.label`, `data.partition_by`).

    Returns
    -------
    Pool
        Every record of the data set.
    """
    loader = resolve_dataset(name)
    if ":" in name:
        return _own_pool(name, loader, root, columns)
    path = Path(root).expanduser() if root else None
    if "columns" in inspect.signature(loader).parameters:
        return loader(path, download, columns=columns)
    return loader(path, download)


def pool_for(data) -> Pool:
    """The pool a config's `data` section names (loaded once per process)."""
    return load_pool(data.dataset, data.root, data.download, Columns(data.features, data.label, data.partition_by))


def local_root(data) -> str | None:
    """`data.root` made absolute where it names a local path (the run folder records it, so it
    reads back from anywhere); a Hugging Face Hub name, which is no local path, is kept as given.
    """
    if not data.root:
        return data.root
    local = Path(data.root).expanduser()
    if data.dataset == HUGGINGFACE and not local.exists():
        return data.root
    return str(local.resolve())


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


def _channel_stats(images: torch.Tensor, chunk: int = 4096) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and (unbiased) standard deviation of uint8 images (N, C, H, W) scaled to
    [0, 1], summed in float64 over chunks of records so large pools need no float copy.
    """
    channels = images.shape[1]
    total = torch.zeros(channels, dtype=torch.float64)
    squares = torch.zeros(channels, dtype=torch.float64)
    for start in range(0, len(images), chunk):
        part = images[start:start + chunk].to(torch.float64) / 255.0
        total += part.sum(dim=(0, 2, 3))
        squares += (part * part).sum(dim=(0, 2, 3))
    count = images.numel() // channels
    mean = total / count
    variance = (squares - count * mean * mean) / max(count - 1, 1)
    return tuple(mean.tolist()), tuple(variance.clamp_min(0).sqrt().tolist())


def pool_from_arrays(name: str, features: Any, labels: Any, groups: Any = None, num_classes: int | None = None,
                     channels_last: bool = False, where: str = "data.dataset") -> Pool:
    """A pool from array-likes (numpy or torch), checked as the own-loader protocol says.

    Parameters
    ----------
    name : str
        The pool's name (the data set or loader).
    features : array-like
        (N, ...) numbers as float rows or tensors, or uint8 images (N, C, H, W) or (N, H, W)
        (normalised per channel by the pool's own mean and standard deviation).
    labels : array-like
        (N,) non-negative integer class labels.
    groups : array-like, optional
        (N,) writer/user ids, for natural-ID partitioning.
    num_classes : int, optional
        At least max label + 1; default max label + 1.
    channels_last : bool
        uint8 images come as (N, H, W, C) (PIL's layout), not (N, C, H, W).
    where : str
        The config key an error points at.

    Returns
    -------
    Pool
        Float32 rows, or uint8 images with their per-channel mean and std.

    Raises
    ------
    FedsimError
        Shapes that disagree, non-numeric features, or labels that are not class indices: one line.
    """
    try:
        x = features.detach().cpu() if isinstance(features, torch.Tensor) else torch.from_numpy(np.require(np.asarray(features), requirements="W"))
        y = np.asarray(labels.detach().cpu() if isinstance(labels, torch.Tensor) else labels)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise FedsimError(f"{where}: {name!r} gave features or labels that are not numeric arrays ({_first_line(exc)}); "
                          "give (N, ...) numbers and (N,) integer labels") from None
    if x.dim() < 2 or y.ndim != 1 or len(x) != len(y) or not len(y):
        raise FedsimError(f"{where}: {name!r} gave features of shape {tuple(x.shape)} and labels of shape {y.shape}; "
                          "give features (N, ...) and labels (N,) for the same N > 0 records")
    if not (x.is_floating_point() or x.dtype in (torch.bool, torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)):
        raise FedsimError(f"{where}: {name!r} gave features of dtype {x.dtype}; give numbers (float rows or uint8 images)")
    if not np.issubdtype(y.dtype, np.integer):
        as_int = y.astype(np.int64) if np.issubdtype(y.dtype, np.number) else None
        if as_int is None or not np.array_equal(as_int, y):
            raise FedsimError(f"{where}: {name!r} gave labels of dtype {y.dtype}; give integer class indices 0..K-1")
        y = as_int
    if y.min() < 0:
        raise FedsimError(f"{where}: {name!r} gave label {y.min()}; labels are class indices 0..K-1")
    classes = int(y.max()) + 1 if num_classes is None else max(num_classes, int(y.max()) + 1)
    ids = None
    if groups is not None:
        ids = np.asarray(groups)
        if ids.shape != y.shape:
            raise FedsimError(f"{where}: {name!r} gave {len(ids)} writer/user ids for {len(y)} records")
    label_tensor = torch.from_numpy(y.astype(np.int64))
    if x.dtype == torch.uint8 and x.dim() in (3, 4):
        images = x.unsqueeze(1) if x.dim() == 3 else (x.permute(0, 3, 1, 2) if channels_last else x)
        images = images.contiguous()
        mean, std = _channel_stats(images)
        return Pool(name, images, label_tensor, classes, mean, std, ids)
    return Pool(name, x.to(torch.float32).contiguous(), label_tensor, classes, groups=ids)


def _records_of(name: str, dataset: Any) -> tuple[torch.Tensor, np.ndarray, bool]:
    """(x, y) of every item of a torch Dataset, and whether x came as PIL images (then uint8 (N, H, W[, C]))."""
    from PIL import Image

    xs, ys, pil = [], [], False
    try:
        for i in range(len(dataset)):
            x, y = dataset[i]
            pil = pil or isinstance(x, Image.Image)
            xs.append(x.detach().cpu() if isinstance(x, torch.Tensor) else np.asarray(x))
            ys.append(int(y))
    except Exception as exc:  # a user's Dataset may fail in any way; say which, in one line
        raise FedsimError(f"data.dataset: {name!r} returned a torch Dataset whose items are not (x, y) pairs with integer y "
                          f"({_first_line(exc)})") from None
    shapes = {tuple(x.shape) for x in xs}
    if len(shapes) > 1:
        raise FedsimError(f"data.dataset: {name!r} returned items of different shapes ({sorted(shapes)[:3]}...); give one shape")
    stacked = torch.stack([torch.as_tensor(x) for x in xs]) if xs else torch.empty(0)
    return stacked, np.asarray(ys, dtype=np.int64), pil


def _own_pool(name: str, loader: Loader, root: str | None, columns: Columns) -> Pool:
    """Call a user's loader as the protocol says and turn what it returns into a pool."""
    from datasets import Dataset as HFDataset
    from datasets import DatasetDict

    try:
        declared = inspect.signature(loader).parameters
    except (TypeError, ValueError):
        declared = {}  # type: ignore[assignment]
    try:
        loaded = loader(root=root) if "root" in declared else loader()
    except FedsimError:
        raise
    except Exception as exc:  # a user's loader may fail in any way; say which, in one line
        raise FedsimError(f"data.dataset: {name!r} raised {_first_line(exc)}") from None
    if isinstance(loaded, (HFDataset, DatasetDict)):
        return _hf_pool(name, loaded, columns, where="data.dataset")
    if isinstance(loaded, torch.utils.data.Dataset):
        if not hasattr(loaded, "__len__"):
            raise FedsimError(f"data.dataset: {name!r} returned a torch Dataset without a length; return a map-style Dataset")
        features, labels, pil = _records_of(name, loaded)
        return pool_from_arrays(name, features, labels, channels_last=pil)
    if isinstance(loaded, (tuple, list)) and len(loaded) == 2:
        return pool_from_arrays(name, *loaded)
    raise FedsimError(f"data.dataset: {name!r} returned {type(loaded).__name__}; return (features, labels) arrays, "
                      "a datasets.Dataset or a torch Dataset of (x, y) pairs")


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


_SAVED = ("dataset_info.json", "state.json", "dataset_dict.json")  # what Dataset(Dict).save_to_disk writes
_SPLIT_ORDER = ("train", "validation", "test")


@contextlib.contextmanager
def _quiet_datasets() -> Iterator[None]:
    """No progress bars from `datasets` while a pool loads (the console owns stderr); the setting is restored."""
    import datasets

    enabled = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        if enabled:
            datasets.enable_progress_bars()


def _read_huggingface(root: Path | None, download: bool) -> Any:
    """The Hugging Face data set (or DatasetDict) `data.root` names, read as Flower users read it."""
    import datasets

    if root is None:
        raise FedsimError("data.root: dataset 'huggingface' needs data.root: a folder saved with Dataset.save_to_disk, a .parquet "
                          "or .csv file, a folder of images, or a Hub name (with data.download: true)")
    try:
        if root.is_file():
            if root.suffix == ".parquet":
                import pyarrow.parquet as pq

                return datasets.Dataset(pq.read_table(root))  # features (images included) come from the file's metadata
            if root.suffix == ".csv":
                return datasets.Dataset.from_pandas(pd.read_csv(root), preserve_index=False)
            raise FedsimError(f"data.root: {root} is neither .parquet nor .csv; give a parquet or CSV file, or a save_to_disk folder")
        if root.is_dir():
            if any((root / marker).is_file() for marker in _SAVED):
                return datasets.load_from_disk(str(root))
            return datasets.load_dataset("imagefolder", data_dir=str(root), cache_dir=str(_cache_dir() / "huggingface"))
        if not download:
            raise FedsimError(f"data.root: {root} is no local file or folder; to load the Hugging Face Hub data set of that name "
                              "set data.download: true (the machine must reach the Hub)")
        return datasets.load_dataset(str(root))
    except FedsimError:
        raise
    except Exception as exc:  # arrow, pandas, the Hub: any of them may refuse the input
        raise FedsimError(f"data.root: cannot read {root} as a Hugging Face data set ({_first_line(exc)})") from None


def _hf_pool(name: str, loaded: Any, columns: Columns, where: str) -> Pool:
    """A pool from a datasets.Dataset (a DatasetDict's splits in order: train, validation, test, others)."""
    import datasets

    if isinstance(loaded, datasets.DatasetDict):
        splits = sorted(loaded, key=lambda s: (_SPLIT_ORDER.index(s) if s in _SPLIT_ORDER else len(_SPLIT_ORDER), s))
        try:
            loaded = datasets.concatenate_datasets([loaded[s] for s in splits])
        except ValueError as exc:
            raise FedsimError(f"{where}: the splits {splits} of {name!r} differ in their columns ({_first_line(exc)})") from None
    present = list(loaded.column_names)
    for key, column in (("data.label", columns.label), ("data.partition_by", columns.groups), ("data.features", columns.features)):
        if column is not None and column not in present:
            raise FedsimError(f"{key}: {name!r} has no column {column!r}; its columns are {present}")
    feature_column = columns.features or next((c for c in ("image", "img", "x") if c in present), None)
    tabular = [c for c in present if c not in (columns.label, columns.groups)] if feature_column is None else [feature_column]
    if not tabular:
        raise FedsimError(f"data.features: {name!r} has no column besides the label; its columns are {present}")
    label_type = loaded.features[columns.label]
    num_classes = label_type.num_classes if isinstance(label_type, datasets.ClassLabel) else None
    table = loaded.select_columns([*tabular, columns.label, *([columns.groups] if columns.groups else [])]).with_format("numpy")[:]
    labels = table[columns.label]
    if labels.dtype.kind in "USO":  # names as labels: classes in sorted order
        names, labels = np.unique(labels.astype(str), return_inverse=True)
        num_classes = len(names)
    groups = table[columns.groups] if columns.groups else None
    image = feature_column is not None and isinstance(loaded.features[feature_column], datasets.Image)
    if feature_column is not None:
        features = table[feature_column]
        if features.dtype == object:
            raise FedsimError(f"data.features: the {feature_column!r} column of {name!r} holds records of different shapes "
                              "(images of different sizes or modes?); give it one shape")
    else:
        frame = pd.DataFrame({c: table[c] for c in tabular})
        numeric = frame.apply(pd.to_numeric, errors="coerce")
        bad = [c for c in tabular if numeric[c].isna().any()]
        if bad:
            raise FedsimError(f"data.features: column {bad[0]!r} of {name!r} is not numbers; name the input column with data.features, "
                              "or drop the column")
        features = numeric.to_numpy(np.float32)
    return pool_from_arrays(name, features, labels, groups, num_classes, channels_last=image, where=where)


@register(HUGGINGFACE)
def load_huggingface(root: Path | None, download: bool, columns: Columns = Columns()) -> Pool:
    """A Hugging Face data set as Flower users load it: a `save_to_disk` folder, a parquet or CSV
    file, a folder of images (`load_dataset("imagefolder")`), or a Hub name (with `download`).
    PIL images become uint8 (C, H, W) arrays, normalised by the pool's per-channel mean and std;
    a DatasetDict's splits are concatenated (train first), so record ids run over all of them.
    """
    with _quiet_datasets():
        return _hf_pool(HUGGINGFACE, _read_huggingface(root, download), columns, where="data.root")


@register("records")
def load_records(root: Path | None, download: bool) -> Pool:
    """The records an audited Flower app trained on and held out, as `fedsim audit` saved them in
    the run folder (root): float32 features as the app's own transforms gave them, int64 labels.
    """
    from safetensors.torch import load_file

    from fedsim.core.layout import RECORDS

    file = _find_file("records", root, RECORDS)
    tensors = load_file(str(file))
    labels = tensors["labels"].long()
    return Pool("records", tensors["features"], labels, int(labels.max()) + 1 if len(labels) else 0)

