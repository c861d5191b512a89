"""Per-example features equal a slow per-example backward loop."""

import pytest
import torch
from torch import nn

from attackers.inference.features import extract, gradient_alignment
from feature_checks import check_activations, check_features_match_backward, check_gradient_alignment
from fedsim.learning.models import build_model

SMALL = ["fcn", "mnist_cnn"]  # AlexNet and ResNet-18 run the same checks in tests/integration/test_features_large_models.py


@pytest.mark.parametrize("layers", ["all", "last"])
@pytest.mark.parametrize("name", SMALL)
def test_features_match_a_per_example_backward_loop(name, layers, monkeypatch):
    check_features_match_backward(name, layers, monkeypatch)


@pytest.mark.parametrize("name", SMALL)
def test_gradient_alignment_equals_the_cosine_of_each_examples_backward_gradient(name):
    check_gradient_alignment(name)


@pytest.mark.parametrize("name", SMALL)
def test_activations_match_a_per_example_forward_loop(name):
    check_activations(name)


def test_gradient_alignment_of_a_float64_model_equals_its_backward_gradients_in_float64():
    """A float64 model's per-example gradients are float64: the directions are taken in its dtype (they were cast to
    float32, and the product of the two raised)."""
    torch.manual_seed(0)
    model = build_model("fcn", (8,), 4, {"hidden": [6]}).double().eval()
    x, y = torch.randn(9, 8, dtype=torch.float64), torch.randint(0, 4, (9,))
    directions = torch.randn(2, sum(p.numel() for p in model.parameters()), dtype=torch.float64)
    cosines = gradient_alignment(model, x, y, directions)
    expected = []
    for xi, yi in zip(x, y):
        model.zero_grad()
        nn.functional.cross_entropy(model(xi[None]), yi[None]).backward()
        g = torch.cat([p.grad.flatten() for p in model.parameters()])
        expected.append([float(g @ d / (g.norm() * d.norm())) for d in directions])
    torch.testing.assert_close(cosines, torch.tensor(expected, dtype=torch.float64), rtol=1e-10, atol=1e-12)


def test_rows_of_a_linear_gradient_are_its_transposed_matrix():
    torch.manual_seed(0)
    model = build_model("fcn", (6,), 3, {"hidden": [5]}).eval()
    x, y = torch.randn(4, 6), torch.randint(0, 3, (4,))
    gradient = extract(model, x, y, layers="last").gradients["2"]
    assert gradient.factored
    torch.testing.assert_close(gradient.rows(), gradient.weight_gradient().transpose(1, 2))


def test_convolutions_are_kept_factored_where_smaller_and_the_attack_reads_them_as_the_dense_rows():
    from attackers.inference.nasr import GradientComponent

    torch.manual_seed(0)
    model = build_model("alexnet_cifar", (3, 32, 32), 10).eval()
    x, y = torch.randn(6, 3, 32, 32), torch.randint(0, 10, (6,))
    gradients = extract(model, x, y, layers="all").gradients
    factored = [name for name, layer in gradients.items() if layer.factored and layer.inputs.dim() == 3]
    assert set(factored) == {"0.3", "0.6", "0.8", "0.10"}  # conv1 (64 positions, 363 x 64 weight) is cheaper materialised
    for name in factored:
        layer = gradients[name]
        rows = layer.rows()
        dense = layer.weight_gradient()
        torch.testing.assert_close(rows, dense.flatten(2).transpose(1, 2))
        torch.testing.assert_close(layer.squared_norm() - layer.bias.pow(2).sum(1), dense.flatten(1).pow(2).sum(1), rtol=1e-5, atol=0)
        component = GradientComponent(rows.shape[1], rows.shape[2], filters=3).eval()
        torch.testing.assert_close(component(layer.inputs, layer.outputs, None), component(None, None, rows), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("kernel, dilation, padding, stride",
                         [((3, 3), (2, 2), (1, 2), (2, 1)), ((5, 3), (1, 3), (0, 1), (1, 2)), ((11, 11), (1, 1), (5, 5), (4, 4))])
def test_unfold_equals_torchs(kernel, dilation, padding, stride):
    from attackers.inference.features import unfold

    a = torch.randn(2, 3, 13, 11)
    assert torch.equal(unfold(a, kernel, dilation, padding, stride), nn.functional.unfold(a, kernel, dilation, padding, stride))


