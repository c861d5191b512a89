"""Shared test fixtures: the real data folder beside the project, skipped cleanly when absent."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedsim.config import Config, load_config

SHARED_DATA = (Path(__file__).resolve().parents[1] / ".." / "shared" / "data").resolve()


def shared_data(relative: str = "") -> Path:
    """A path under ../shared/data, or skip the test naming what is missing."""
    path = SHARED_DATA / relative
    if not path.exists():
        pytest.skip(f"real data not found at {path} (the project expects ../shared/data beside it)")
    return path


SMALL = ["data.records_per_client=60", "data.nonmembers=80", "data.test_records=100",
         "adversary.target_records=40", "train.rounds=2", "model.args={hidden: [32]}", "attacks=[loss]", "backend.engine=in-process"]
RAY = "backend.engine=ray"  # the override a test about Flower's Ray simulation itself adds


def small_config(*overrides: str) -> Config:
    """The built-in quickstart (whatever the working folder holds) made small, with `key=value` overrides.

    Small runs use the in-process engine (records equal to the Ray engine's, tests/test_inprocess.py):
    a Ray simulation costs seconds per run to start. Tests of the Ray engine itself pass `RAY`.
    """
    return load_config(None, [*SMALL, *overrides], default_file=False)


@pytest.fixture(autouse=True)
def _isolated_cwd(tmp_path, monkeypatch):
    """Tests run in a temporary folder so runs/ and configs/ of the checkout are not touched."""
    monkeypatch.chdir(tmp_path)
