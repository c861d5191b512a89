"""GPUs asked for where there are none: one line and exit code 2, before anything starts (no Ray)."""

import numpy as np
import pytest
import torch

from conftest import small_config
from fedsim.app.cli import main

no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA: the request is valid here")


@no_cuda
@pytest.mark.parametrize("setting, key", [("backend.gpus_per_client=1", "backend.gpus_per_client"), ("features.device=cuda", "features.device")])
def test_a_gpu_request_without_cuda_is_one_line_and_exit_2(tmp_path, capsys, setting, key):
    code = main(["run", "--set", setting, "--out", str(tmp_path / "run"), "--quiet"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and key in err and "CUDA" in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()  # refused before the run folder is made


def test_features_device_accepts_only_auto_cpu_cuda(capsys):
    assert main(["run", "--set", "features.device=tpu", "--quiet"]) == 2
    assert "features.device" in capsys.readouterr().err


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_features_on_cuda_equal_those_on_cpu():
    from attackers.inference.observation import Observation
    from fedsim.learning.models import model_for

    torch.manual_seed(0)
    model = model_for(small_config())
    x, y = torch.randn(32, 64), torch.randint(0, 10, (32,))
    ids = np.arange(32)
    on = {d: Observation([1], lambda r: model, lambda i: (x[i], y[i]), device=torch.device(d)).features(ids, 1, "all") for d in ("cpu", "cuda")}
    torch.testing.assert_close(on["cuda"].loss, on["cpu"].loss, atol=1e-5, rtol=1e-4)
    for name, gradient in on["cpu"].gradients.items():
        torch.testing.assert_close(on["cuda"].gradients[name].weight_gradient(), gradient.weight_gradient(), atol=1e-5, rtol=1e-4)
