import pytest
import torch

from fedsim.core.errors import FedsimError
from fedsim.learning.models import MODELS, build_model

SHAPES = {
    "fcn": (64,), "mnist_cnn": (1, 28, 28), "alexnet_cifar": (3, 32, 32),
    "resnet18": (3, 32, 32), "resnet34": (3, 32, 32), "densenet121": (3, 32, 32),
}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_model_maps_its_input_to_class_scores(name):
    model = build_model(name, SHAPES[name], 7).eval()
    with torch.no_grad():
        assert model(torch.randn(2, *SHAPES[name])).shape == (2, 7)


def test_fcn_is_the_papers_tabular_target_by_default():
    model = build_model("fcn", (600,), 100)
    widths = [m.out_features for m in model if isinstance(m, torch.nn.Linear)]
    assert widths == [1024, 512, 256, 128, 100] and isinstance(model[1], torch.nn.Tanh)


def test_bad_model_arguments_are_user_errors():
    with pytest.raises(FedsimError, match="model.args"):
        build_model("fcn", (4,), 2, {"depth": 3})
    with pytest.raises(FedsimError, match="takes images"):
        build_model("mnist_cnn", (64,), 10)
