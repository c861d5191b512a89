"""Per-example features equal a slow per-example backward loop."""

import pytest
import torch
from torch import nn

import attackers.inference.features as features_module
from attackers.inference.features import extract, gradient_alignment, parametrised_layers
from fedsim.learning.models import build_model

CASES = {"fcn": ((40,), {"hidden": [32, 16]}), "mnist_cnn": ((1, 28, 28), {}), "alexnet_cifar": ((3, 32, 32), {}), "resnet18": ((3, 16, 16), {})}


def reference(model, x, y):
    """One backward pass per example: losses, per-layer weight gradients, total gradient norms."""
    losses, grads, norms = [], [], []
    for xi, yi in zip(x, y):
        model.zero_grad()
        loss = nn.functional.cross_entropy(model(xi[None]), yi[None])
        loss.backward()
        losses.append(loss.item())
        modules = dict(model.named_modules())
        grads.append({name: (modules[name].weight.grad.clone(), None if getattr(modules[name], "bias", None) is None else modules[name].bias.grad.clone())
                      for name in parametrised_layers(model)})
        norms.append(torch.sqrt(sum(p.grad.pow(2).sum() for p in model.parameters())).item())
    return torch.tensor(losses), grads, torch.tensor(norms)


@pytest.mark.parametrize("layers", ["all", "last"])
@pytest.mark.parametrize("name", sorted(CASES))
def test_features_match_a_per_example_backward_loop(name, layers, monkeypatch):
    shape, args = CASES[name]
    torch.manual_seed(0)
    model = build_model(name, shape, 10, args).eval()
    x, y = torch.randn(12, *shape), torch.randint(0, 10, (12,))
    chunks = []
    real_chunk = features_module._extract_chunk

    def counted(model, x, *args):
        chunks.append(len(x))
        return real_chunk(model, x, *args)

    monkeypatch.setattr(features_module, "_extract_chunk", counted)
    budget = 1 << 12  # small enough that every model's features come in several chunks (one example each)
    features = extract(model, x, y, layers=layers, memory_budget=budget)
    assert len(chunks) >= 2 and sum(chunks) == 12, chunks
    losses, grads, norms = reference(model, x, y)
    torch.testing.assert_close(features.loss, losses, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(features.gradient_norm, norms, rtol=1e-5, atol=1e-6)
    for layer, gradient in features.gradients.items():
        expected = torch.stack([g[layer][0] for g in grads])
        torch.testing.assert_close(gradient.weight_gradient(), expected, rtol=1e-5, atol=1e-6)
        if grads[0][layer][1] is not None:
            expected_bias = torch.stack([g[layer][1] for g in grads])
            torch.testing.assert_close(gradient.bias.reshape(expected_bias.shape), expected_bias, rtol=1e-5, atol=1e-6)
    with torch.no_grad():
        torch.testing.assert_close(features.probabilities, torch.softmax(model(x), dim=1), rtol=1e-5, atol=1e-6)
    assert torch.equal(features.labels, y)
    assert len(features.gradients) == (len(grads[0]) if layers == "all" else 1)


@pytest.mark.parametrize("name", sorted(CASES))
def test_gradient_alignment_equals_the_cosine_of_each_examples_backward_gradient(name):
    shape, args = CASES[name]
    torch.manual_seed(0)
    model = build_model(name, shape, 10, args).eval()
    x, y = torch.randn(70, *shape), torch.randint(0, 10, (70,))  # more than one chunk of 64
    total = sum(p.numel() for p in model.parameters())
    directions = torch.randn(3, total)
    directions[2] = 0.0  # a client that did not move: cosine 0, not nan
    cosines = gradient_alignment(model, x, y, directions)
    expected = []
    for xi, yi in zip(x, y):
        model.zero_grad()
        nn.functional.cross_entropy(model(xi[None]), yi[None]).backward()
        g = torch.cat([p.grad.flatten() for p in model.parameters()]).double()
        expected.append([float(g @ d.double() / (g.norm() * d.double().norm())) if d.any() else 0.0 for d in directions])
    assert cosines.shape == (70, 3) and cosines.dtype == torch.float64
    torch.testing.assert_close(cosines, torch.tensor(expected, dtype=torch.float64), rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="trainable parameters"):
        gradient_alignment(model, x, y, directions[:, :-1])


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


def reference_activations(model, x, names):
    """One forward pass per example, each chosen module's output captured by a hook."""
    modules = dict(model.named_modules())
    outputs = {name: [] for name in names}
    for xi in x:
        handles = [modules[n].register_forward_hook(lambda m, i, o, n=n: outputs[n].append(o.detach().flatten())) for n in names]
        model(xi[None])
        for handle in handles:
            handle.remove()
    return {name: torch.stack(rows) for name, rows in outputs.items()}


@pytest.mark.parametrize("name", sorted(CASES))
def test_activations_match_a_per_example_forward_loop(name):
    shape, args = CASES[name]
    torch.manual_seed(0)
    model = build_model(name, shape, 10, args).eval()
    x, y = torch.randn(12, *shape), torch.randint(0, 10, (12,))
    hidden = parametrised_layers(model)[:-1]
    features = extract(model, x, y, layers="last", memory_budget=8 << 20, activations="all")
    assert list(features.activations) == hidden
    expected = reference_activations(model, x, hidden)
    for layer in hidden:
        torch.testing.assert_close(features.activations[layer], expected[layer], rtol=1e-5, atol=1e-6)
    named = [n for n, _ in model.named_modules() if n][:2]  # any submodule by name, e.g. an activation function's output
    torch.testing.assert_close(extract(model, x, y, activations=named).activations[named[-1]], reference_activations(model, x, named)[named[-1]])
    assert list(extract(model, x, y, activations="last").activations) == hidden[-1:]
    with pytest.raises(ValueError, match="not modules of the model"):
        extract(model, x, y, activations=["nope"])
