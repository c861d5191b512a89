"""Model registry: the target architectures of the membership-inference literature.

Each builder takes the input shape and number of classes of the data set and the config's
`model.args`. ResNet and DenseNet come from torchvision, adapted to 32x32 inputs the usual
way (3x3 stem, no initial max-pool).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from fedsim.core.errors import FedsimError
from fedsim.core.registry import Registry

Builder = Callable[..., nn.Module]
MODELS: Registry[Builder] = Registry("model", "model.name")

_ACTIVATIONS: dict[str, type[nn.Module]] = {"tanh": nn.Tanh, "relu": nn.ReLU}


register = MODELS.register


def build_model(name: str, input_shape: Sequence[int], num_classes: int, args: dict[str, Any] | None = None) -> nn.Module:
    """Instantiate a registered model; a wrong name or argument is a user error."""
    builder = MODELS.get_or_fail(name)
    try:
        return builder(tuple(input_shape), num_classes, **(args or {}))
    except TypeError as exc:
        raise FedsimError(f"model.args: {exc} (model {name!r})") from None
    except ValueError as exc:
        raise FedsimError(f"model: {exc}") from None


def model_for(config) -> nn.Module:
    """A fresh instance of a run config's model, shaped for its data set."""
    from fedsim.learning.datasets import pool_for

    pool = pool_for(config.data)
    return build_model(config.model.name, pool.input_shape, pool.num_classes, config.model.args)


@register("fcn")
def fully_connected(
    input_shape: tuple[int, ...], num_classes: int, hidden: Sequence[int] = (1024, 512, 256, 128), activation: str = "tanh"
) -> nn.Module:
    """The Purchase/Texas/Location target of Shokri et al. and Nasr et al.: 1024-512-256-128, tanh."""
    if activation not in _ACTIVATIONS:
        raise ValueError(f"activation {activation!r} is not one of {sorted(_ACTIVATIONS)}")
    widths = [math.prod(input_shape), *hidden]
    layers: list[nn.Module] = [nn.Flatten()] if len(input_shape) > 1 else []
    for fan_in, fan_out in zip(widths, widths[1:]):
        layers += [nn.Linear(fan_in, fan_out), _ACTIVATIONS[activation]()]
    layers.append(nn.Linear(widths[-1], num_classes))
    return nn.Sequential(*layers)


def _need_image(input_shape: tuple[int, ...], model: str) -> int:
    if len(input_shape) != 3:
        raise ValueError(f"{model!r} takes images (channels, height, width), not inputs of shape {input_shape}; use model fcn")
    return input_shape[0]


@register("mnist_cnn")
def mnist_cnn(input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """A small CNN for 28x28 digits: two 5x5 conv + max-pool blocks, then two dense layers."""
    channels = _need_image(input_shape, "mnist_cnn")
    side = (input_shape[1] // 4, input_shape[2] // 4)
    return nn.Sequential(
        nn.Conv2d(channels, 32, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(64 * side[0] * side[1], 128), nn.ReLU(), nn.Linear(128, num_classes),
    )


@register("alexnet_cifar")
def alexnet_cifar(input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """The CIFAR AlexNet of the membership-inference papers (Shokri, Nasr): five conv layers, one dense."""
    channels = _need_image(input_shape, "alexnet_cifar")
    features = nn.Sequential(
        nn.Conv2d(channels, 64, kernel_size=11, stride=4, padding=5), nn.ReLU(), nn.MaxPool2d(2, 2),
        nn.Conv2d(64, 192, kernel_size=5, padding=2), nn.ReLU(), nn.MaxPool2d(2, 2),
        nn.Conv2d(192, 384, kernel_size=3, padding=1), nn.ReLU(),
        nn.Conv2d(384, 256, kernel_size=3, padding=1), nn.ReLU(),
        nn.Conv2d(256, 256, kernel_size=3, padding=1), nn.ReLU(), nn.MaxPool2d(2, 2),
    )
    with torch.no_grad():
        flat = features(torch.zeros(1, *input_shape)).numel()
    return nn.Sequential(features, nn.Flatten(), nn.Linear(flat, num_classes))


def _small_input_stem(channels: int, width: int) -> nn.Conv2d:
    return nn.Conv2d(channels, width, kernel_size=3, stride=1, padding=1, bias=False)


def _resnet(depth: int) -> Builder:
    def build(input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
        import torchvision

        channels = _need_image(input_shape, f"resnet{depth}")
        model = getattr(torchvision.models, f"resnet{depth}")(weights=None, num_classes=num_classes)
        model.conv1 = _small_input_stem(channels, 64)
        model.maxpool = nn.Identity()
        return model

    return build


def _densenet(depth: int) -> Builder:
    def build(input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
        import torchvision

        channels = _need_image(input_shape, f"densenet{depth}")
        model = getattr(torchvision.models, f"densenet{depth}")(weights=None, num_classes=num_classes)
        model.features.conv0 = _small_input_stem(channels, model.features.conv0.out_channels)
        model.features.pool0 = nn.Identity()
        return model

    return build


register("resnet18")(_resnet(18))
register("resnet34")(_resnet(34))
register("densenet121")(_densenet(121))
