"""Model registry: the target architectures of the membership-inference literature.

Each builder takes the input shape and number of classes of the data set and the config's
`model.args`. ResNet and DenseNet come from torchvision, adapted to 32x32 inputs the usual
way (3x3 stem, no initial max-pool). A user's own model is named by import path
(`package.module:name`) and built through the same entry point, so every layer that builds a
model (clients, the curious server, the attacks) takes it without knowing.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from fedsim.core.errors import FedsimError
from fedsim.core.registry import Registry, resolve_import

Builder = Callable[..., nn.Module]
MODELS: Registry[Builder] = Registry("model", "model.name")

_ACTIVATIONS: dict[str, type[nn.Module]] = {"tanh": nn.Tanh, "relu": nn.ReLU}


register = MODELS.register


def resolve_model(name: str) -> Builder:
    """The builder a config's `model.name` names: a registered one, or a user's by import path.

    Parameters
    ----------
    name : str
        A registry name (e.g. "fcn") or "package.module:name": an `nn.Module` subclass or a
        factory function.

    Returns
    -------
    callable
        The registered builder, or the user's class or function.

    Raises
    ------
    FedsimError
        Unknown name, unimportable path, missing attribute, a class that is not an `nn.Module`,
        or something not callable: one line naming `model.name`.
    """
    if ":" not in name:
        return MODELS.get_or_fail(name, hint=" or 'package.module:name' (your own nn.Module or factory)")
    found = resolve_import(name, "model.name")
    if inspect.isclass(found) and not issubclass(found, nn.Module):
        raise FedsimError(f"model.name: {name!r} is a class but not a torch.nn.Module subclass; give an nn.Module or a factory function")
    if not callable(found):
        raise FedsimError(f"model.name: {name!r} is a {type(found).__name__}, not an nn.Module subclass or factory function")
    return found


def _own_model(name: str, found: Builder, input_shape: tuple[int, ...], num_classes: int, args: dict[str, Any]) -> nn.Module:
    """Call a user's class or factory: `args` as keywords, plus `input_shape` and `num_classes`
    where its signature names them; it must return an `nn.Module`.
    """
    try:
        declared = inspect.signature(found).parameters
    except (TypeError, ValueError):
        declared = {}  # type: ignore[assignment]
    given = {"input_shape": input_shape, "num_classes": num_classes}
    keywords = {**{k: v for k, v in given.items() if k in declared and k not in args}, **args}
    try:
        model = found(**keywords)
    except TypeError as exc:
        raise FedsimError(f"model.args: {exc} (model {name!r})") from None
    except FedsimError:
        raise
    except Exception as exc:  # a user's constructor may fail in any way; say which, in one line
        text = str(exc).strip().splitlines()
        raise FedsimError(f"model.name: building {name!r} raised {type(exc).__name__}{': ' + text[0] if text else ''}") from None
    if not isinstance(model, nn.Module):
        raise FedsimError(f"model.name: {name!r} returned {type(model).__name__}, not a torch.nn.Module; return the model")
    return model


def build_model(name: str, input_shape: Sequence[int], num_classes: int, args: dict[str, Any] | None = None) -> nn.Module:
    """Instantiate a registered model or a user's (`package.module:name`).

    Parameters
    ----------
    name : str
        A registry name or an import path (`resolve_model`).
    input_shape : sequence of int
        One record's shape, without the batch dimension.
    num_classes : int
        Outputs of the model.
    args : dict, optional
        Keyword arguments of the builder (`model.args`).

    Returns
    -------
    torch.nn.Module
        A fresh model (its parameters drawn from torch's global generator).

    Raises
    ------
    FedsimError
        A wrong name, path or argument, or a user's builder that returns no `nn.Module`: one line.
    """
    builder = resolve_model(name)
    if ":" in name:
        return _own_model(name, builder, tuple(input_shape), num_classes, dict(args or {}))
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
