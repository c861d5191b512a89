"""Per-example features of AlexNet and ResNet-18 against slow per-example loops (the unit tests
run the same checks on small models in seconds; these take minutes)."""

import pytest

from feature_checks import check_activations, check_features_match_backward, check_gradient_alignment

LARGE = ["alexnet_cifar", "resnet18"]


@pytest.mark.parametrize("layers", ["all", "last"])
@pytest.mark.parametrize("name", LARGE)
def test_features_match_a_per_example_backward_loop(name, layers, monkeypatch):
    check_features_match_backward(name, layers, monkeypatch)


@pytest.mark.parametrize("name", LARGE)
def test_gradient_alignment_equals_the_cosine_of_each_examples_backward_gradient(name):
    # 24 records in chunks of a few (ResNet-18: about 95 MB of per-example state a record): the
    # chunking is exercised without the slow per-record reference loop over 70 records
    check_gradient_alignment(name, n=24, memory_budget=512 << 20)


@pytest.mark.parametrize("name", LARGE)
def test_activations_match_a_per_example_forward_loop(name):
    check_activations(name)
