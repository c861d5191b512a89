"""A run's records do not depend on what its process ran before (torch's thread count included).

Parallel reductions round differently with another thread count; an earlier in-process test (or
a notebook) that changed torch's threads used to change the curious server's gradient-ascent
broadcast. The server and the clients now compute on `backend.cpus_per_client` threads. Checked on the
in-process engine, where the clients share the process too.
"""

import hashlib

import pytest
import torch

from conftest import small_config
from fedsim.app.console import RunConsole
from fedsim.app.experiment import run_experiment

pytestmark = pytest.mark.integration


def _record_hashes(folder):
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*.safetensors"))}


@pytest.mark.determinism
def test_records_are_the_same_whatever_torch_threads_the_process_held(tmp_path):
    config = small_config("data.num_clients=3", "adversary.isolate=true", "adversary.mode=gradient-ascent")
    previous = torch.get_num_threads()
    hashes = []
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            hashes.append(_record_hashes(run_experiment(config.model_copy(deep=True), tmp_path / f"threads-{threads}", RunConsole(quiet=True))))
            assert torch.get_num_threads() == threads  # the process's own setting is restored
    finally:
        torch.set_num_threads(previous)
    assert any("broadcast" in name for name in hashes[0])  # the server's ascent is among the records compared
    assert hashes[0] == hashes[1]
