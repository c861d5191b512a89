"""Your own model and data by import path (`model.name`, `data.dataset`: "package.module:name"): the
protocol's calls, the pool a loader's return becomes, and one line with exit 2 (before any run
folder) for a bad path, a missing attribute or a wrong return."""

from __future__ import annotations

import importlib
import sys
import textwrap

import numpy as np
import pytest
import torch

from conftest import small_config
from fedsim.app.cli import main
from fedsim.core.errors import FedsimError
from fedsim.learning.datasets import load_pool, pool_for
from fedsim.learning.models import build_model, model_for

MODELS_PY = """
from torch import nn

CALLS = []


def make(input_shape, num_classes, width=8):
    CALLS.append({"input_shape": input_shape, "num_classes": num_classes, "width": width})
    return nn.Sequential(nn.Flatten(), nn.Linear(int(__import__("math").prod(input_shape)), width), nn.ReLU(), nn.Linear(width, num_classes))


class Net(nn.Module):
    def __init__(self, num_classes, inputs, hidden=4):
        super().__init__()
        self.num_classes = num_classes
        self.body = nn.Sequential(nn.Linear(inputs, hidden), nn.Tanh(), nn.Linear(hidden, num_classes))

    def forward(self, x):
        return self.body(x)


class NotModule:
    pass


def not_a_model(num_classes):
    return num_classes


def broken(width=3):
    raise RuntimeError("no GPU kernels for width " + str(width) + "\\nsecond line")
"""

DATA_PY = """
import numpy as np
import torch
from torch.utils.data import TensorDataset

RNG = np.random.default_rng(7)
X = RNG.random((300, 5)).astype(np.float32)
Y = RNG.integers(0, 4, 300)
IMAGES = RNG.integers(0, 256, (300, 6, 6), dtype=np.uint8)
SEEN = []


def arrays():
    return X, Y


def images():
    return torch.from_numpy(IMAGES), torch.from_numpy(Y)


def tensors():
    return TensorDataset(torch.from_numpy(X), torch.from_numpy(Y))


def hf():
    import datasets

    return datasets.Dataset.from_dict({"x": X, "label": Y})


def rooted(root):
    SEEN.append(root)
    return X, Y


def wrong():
    return "features.csv"


def ragged():
    return X, Y[:-1]


def fractional():
    return X, Y + 0.5
"""


@pytest.fixture
def own(tmp_path, monkeypatch):
    """own_models.py and own_data.py in a folder on sys.path, imported fresh for each test."""
    folder = tmp_path / "user_code"
    folder.mkdir()
    (folder / "own_models.py").write_text(textwrap.dedent(MODELS_PY))
    (folder / "own_data.py").write_text(textwrap.dedent(DATA_PY))
    monkeypatch.syspath_prepend(str(folder))
    load_pool.cache_clear()
    yield folder
    load_pool.cache_clear()
    for name in ("own_models", "own_data"):
        sys.modules.pop(name, None)


def test_a_factory_gets_its_args_and_the_data_sets_shape(own):
    model = build_model("own_models:make", (1, 6, 6), 4, {"width": 5})
    calls = sys.modules["own_models"].CALLS
    assert calls == [{"input_shape": (1, 6, 6), "num_classes": 4, "width": 5}]
    assert [m.out_features for m in model if isinstance(m, torch.nn.Linear)] == [5, 4]
    assert model(torch.zeros(3, 1, 6, 6)).shape == (3, 4)


def test_a_module_class_gets_only_the_parameters_it_declares(own):
    model = build_model("own_models:Net", (5,), 4, {"inputs": 5})  # Net declares num_classes, not input_shape
    assert type(model).__name__ == "Net" and model.num_classes == 4
    assert model(torch.zeros(2, 5)).shape == (2, 4)
    with pytest.raises(FedsimError, match=r"^model.args: .*'inputs'.*\(model 'own_models:Net'\)$"):
        build_model("own_models:Net", (5,), 4, {})


def test_model_for_builds_the_own_model_for_the_own_data(own):
    config = small_config("data.dataset=own_data:images", "model.name=own_models:make", "model.args={width: 3}")
    model = model_for(config)
    assert sys.modules["own_models"].CALLS == [{"input_shape": (1, 6, 6), "num_classes": 4, "width": 3}]
    assert model(pool_for(config.data).take([0, 1])[0]).shape == (2, 4)


def test_arrays_become_float_rows_with_labels_as_given(own):
    data = importlib.import_module("own_data")
    for loader in ("arrays", "tensors", "hf"):
        pool = load_pool(f"own_data:{loader}", None)
        assert pool.input_shape == (5,) and pool.num_classes == int(data.Y.max()) + 1 and pool.mean is None, loader
        x, y = pool.take(np.arange(300))
        np.testing.assert_array_equal(x.numpy(), data.X)
        np.testing.assert_array_equal(y.numpy(), data.Y)


def test_uint8_images_are_normalised_by_the_pools_own_channel_statistics(own):
    data = importlib.import_module("own_data")
    pool = load_pool("own_data:images", None)
    assert pool.input_shape == (1, 6, 6) and pool.features.dtype == torch.uint8
    scaled = data.IMAGES / 255.0
    np.testing.assert_allclose(pool.mean, [scaled.mean()], rtol=1e-12)
    np.testing.assert_allclose(pool.std, [scaled.std(ddof=1)], rtol=1e-12)
    x, _ = pool.take([3, 0])
    np.testing.assert_allclose(x[:, 0].numpy(), (scaled[[3, 0]] - scaled.mean()) / scaled.std(ddof=1), atol=1e-5)


def test_a_loader_declaring_root_is_given_data_root(own, tmp_path):
    config = small_config("data.dataset=own_data:rooted", f"data.root={tmp_path}")
    assert len(pool_for(config.data)) == 300
    assert sys.modules["own_data"].SEEN == [str(tmp_path)]


@pytest.mark.parametrize(("setting", "expected"), [
    ("model.name=no_such_module:make", "model.name: cannot import module 'no_such_module'"),
    ("model.name=own_models:missing", "model.name: module 'own_models' has no 'missing'"),
    ("model.name=own_models:NotModule", "model.name: 'own_models:NotModule' is a class but not a torch.nn.Module subclass"),
    ("model.name=own_models:not_a_model", "model.name: 'own_models:not_a_model' returned int, not a torch.nn.Module"),
    ("model.name=own_models:broken", "model.name: building 'own_models:broken' raised RuntimeError: no GPU kernels for width"),
    ("model.name=resnet1", "model.name: unknown model 'resnet1'; choose one of"),
    ("data.dataset=no_such_module:load", "data.dataset: cannot import module 'no_such_module'"),
    ("data.dataset=own_data:missing", "data.dataset: module 'own_data' has no 'missing'"),
    ("data.dataset=own_data:X", "data.dataset: 'own_data:X' is a ndarray, not a function"),
    ("data.dataset=own_data:wrong", "data.dataset: 'own_data:wrong' returned str; return (features, labels) arrays"),
    ("data.dataset=own_data:ragged", "give features (N, ...) and labels (N,) for the same N > 0 records"),
    ("data.dataset=own_data:fractional", "gave labels of dtype float64; give integer class indices"),
])
def test_a_bad_own_model_or_loader_is_one_line_and_exit_2_before_any_run_folder(own, tmp_path, capsys, setting, expected):
    out = tmp_path / "run"
    assert main(["run", "--out", str(out), "--quiet", "--set", "backend.engine=in-process", "--set", "model.args={}", "--set", setting]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], captured.err
    assert "Traceback" not in captured.err and not out.exists()
