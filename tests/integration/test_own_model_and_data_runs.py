"""A user's own model factory and data loader, in a module outside fedsim, run end to end through
`fedsim run`: the run folder records the user's model on the user's data, and what it records
reads back through that model (the recorded test accuracy is recomputed from the global model)."""

from __future__ import annotations

import sys
import textwrap

import numpy as np
import pytest
import torch

from conftest import SMALL
from fedsim.app.cli import main
from fedsim.learning.datasets import load_pool
from fedsim.learning.membership import UTILITY_TEST
from fedsim.recording.run import Run

USER_MODULE = """
import numpy as np
from sklearn.datasets import load_digits
from torch import nn


def digits_as_images():
    bunch = load_digits()
    return (bunch.images * 255 / 16).round().astype(np.uint8), bunch.target


def small_cnn(input_shape, num_classes, channels=4):
    side = input_shape[1] // 2
    return nn.Sequential(nn.Conv2d(input_shape[0], channels, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Flatten(), nn.Linear(channels * side * side, num_classes))
"""


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    folder = tmp_path / "user_code"
    folder.mkdir()
    (folder / "my_fl.py").write_text(textwrap.dedent(USER_MODULE))
    monkeypatch.syspath_prepend(str(folder))
    load_pool.cache_clear()
    yield
    load_pool.cache_clear()
    sys.modules.pop("my_fl", None)


def test_an_own_model_on_own_data_runs_end_to_end(user_module, tmp_path):
    out = tmp_path / "run"
    settings = [*SMALL, "data.dataset=my_fl:digits_as_images", "model.name=my_fl:small_cnn", "model.args={channels: 3}", "train.lr=0.1"]
    assert main(["run", "--out", str(out), "--quiet", *[f"--set={s}" for s in settings]]) == 0
    run = Run.open(out)
    assert run.status == "complete" and run.rounds == [0, 1, 2]
    assert run.config.data.dataset == "my_fl:digits_as_images" and run.config.model.name == "my_fl:small_cnn"
    model = run.model(2).eval()
    assert [type(m).__name__ for m in model][:2] == ["Conv2d", "ReLU"] and model[0].out_channels == 3
    from my_fl import digits_as_images

    images, labels = digits_as_images()
    ids = run.membership.loc[run.membership["role"] == UTILITY_TEST, "record_id"].to_numpy()
    x, y = run.records(ids)
    assert x.shape == (len(ids), 1, 8, 8)
    np.testing.assert_array_equal(y.numpy(), labels[ids])
    scaled = images / 255.0  # normalised by the pool's own mean and std
    np.testing.assert_allclose(x[:, 0].numpy(), (scaled[ids] - scaled.mean()) / scaled.std(ddof=1), atol=1e-5)
    with torch.no_grad():
        accuracy = (model(x).argmax(1) == y).float().mean().item()
    training = run.table("metrics/training.csv")
    assert accuracy == pytest.approx(training["test_accuracy"].iloc[-1], abs=1e-6) and accuracy > 0.5  # it learned (chance: 0.1)
    assert set(run.table("metrics/leakage.csv")["attack"]) == {"loss"}
