"""Per-example features against slow per-example loops, for any model: shared by the unit tests
(small models, seconds) and the integration tests (AlexNet and ResNet-18, minutes)."""

import pytest
import torch
from torch import nn

import attackers.inference.features as features_module
from attackers.inference.features import DEFAULT_BUDGET, extract, gradient_alignment, parametrised_layers
from fedsim.learning.models import build_model

FEATURE_CASES = {"fcn": ((40,), {"hidden": [32, 16]}), "mnist_cnn": ((1, 28, 28), {}), "alexnet_cifar": ((3, 32, 32), {}),
                 "resnet18": ((3, 16, 16), {})}


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


def check_features_match_backward(name, layers, monkeypatch):
    shape, args = FEATURE_CASES[name]
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


def check_gradient_alignment(name, n=70, memory_budget=DEFAULT_BUDGET):
    """`n` records in more than one chunk: 64 a chunk, or fewer where `memory_budget` (bytes) says so."""
    shape, args = FEATURE_CASES[name]
    torch.manual_seed(0)
    model = build_model(name, shape, 10, args).eval()
    x, y = torch.randn(n, *shape), torch.randint(0, 10, (n,))
    total = sum(p.numel() for p in model.parameters())
    directions = torch.randn(3, total)
    directions[2] = 0.0  # a client that did not move: cosine 0, not nan
    cosines = gradient_alignment(model, x, y, directions, memory_budget=memory_budget)
    expected = []
    for xi, yi in zip(x, y):
        model.zero_grad()
        nn.functional.cross_entropy(model(xi[None]), yi[None]).backward()
        g = torch.cat([p.grad.flatten() for p in model.parameters()]).double()
        expected.append([float(g @ d.double() / (g.norm() * d.double().norm())) if d.any() else 0.0 for d in directions])
    assert cosines.shape == (n, 3) and cosines.dtype == torch.float64
    torch.testing.assert_close(cosines, torch.tensor(expected, dtype=torch.float64), rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="trainable parameters"):
        gradient_alignment(model, x, y, directions[:, :-1])


def check_activations(name):
    shape, args = FEATURE_CASES[name]
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
