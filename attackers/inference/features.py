"""Per-example white-box features of one model snapshot: loss, outputs, label, layer gradients.

A fully connected layer's per-example weight gradient is the outer product g a^T of the
layer's input a and the gradient g of the example's loss with respect to the layer's output.
So one batched backward pass gives (a, g) for every example and every linear layer, the
exact per-example gradient norm is |a| |g|, and the attack's row convolution is a_j (k . g),
all without materialising a per-example weight gradient. Other layers (convolutions,
normalisation) get per-example gradients from torch.func (vmap of grad of functional_call),
except plain 2-D convolutions: their per-example gradient is G U^T from the unfolded input U and
the output gradient G of the same backward pass, and a norm alone comes from Gram matrices.
Work is chunked so the materialised part stays within a memory budget.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.func import functional_call, grad, vmap

DEFAULT_BUDGET = 2 << 30  # bytes


@dataclass
class LayerGradient:
    """Per-example gradient of one layer's weight: factored (a, g) for linear layers, else dense."""

    inputs: torch.Tensor | None = None  # (N, in) for linear layers
    outputs: torch.Tensor | None = None  # (N, out) for linear layers
    dense: torch.Tensor | None = None  # (N, *weight.shape) for other layers
    bias: torch.Tensor | None = None  # (N, out) per-example bias gradient, when the layer has one

    @property
    def factored(self) -> bool:
        return self.dense is None

    def rows(self) -> torch.Tensor:
        """The gradient as (N, rows, out): row j is what a kernel spanning one row sees."""
        if self.factored:
            return self.inputs[:, :, None] * self.outputs[:, None, :]
        return self.dense.flatten(2).transpose(1, 2) if self.dense.dim() > 2 else self.dense[:, None, :]

    def weight_gradient(self) -> torch.Tensor:
        """The per-example weight gradient in the parameter's own shape (materialised)."""
        if self.factored:
            return self.outputs[:, :, None] * self.inputs[:, None, :]
        return self.dense

    def squared_norm(self) -> torch.Tensor:
        if self.factored:
            weight = self.inputs.pow(2).sum(1) * self.outputs.pow(2).sum(1)
        else:
            weight = self.dense.flatten(1).pow(2).sum(1)
        return weight + (self.bias.pow(2).sum(1) if self.bias is not None else 0)

    def cat(self, other: LayerGradient) -> LayerGradient:
        def join(a, b):
            return None if a is None else torch.cat([a, b])

        return LayerGradient(join(self.inputs, other.inputs), join(self.outputs, other.outputs),
                             join(self.dense, other.dense), join(self.bias, other.bias))


@dataclass
class Features:
    """Features of N records on one snapshot."""

    loss: torch.Tensor  # (N,)
    probabilities: torch.Tensor  # (N, classes)
    labels: torch.Tensor  # (N,) true labels
    gradients: dict[str, LayerGradient] = field(default_factory=dict)  # chosen layers, by module name
    gradient_norm: torch.Tensor | None = None  # (N,) exact norm over all parameters

    @property
    def one_hot(self) -> torch.Tensor:
        return nn.functional.one_hot(self.labels, self.probabilities.shape[1]).float()

    @property
    def correct(self) -> torch.Tensor:
        return (self.probabilities.argmax(1) == self.labels).float()

    @property
    def entropy(self) -> torch.Tensor:
        p = self.probabilities.clamp_min(1e-12)
        return -(p * p.log()).sum(1)


def parametrised_layers(model: nn.Module) -> list[str]:
    """Names of the modules that own parameters directly, in forward-definition order."""
    return [name for name, module in model.named_modules() if any(True for _ in module.parameters(recurse=False))]


def resolve_layers(model: nn.Module, layers: str | Sequence[str]) -> list[str]:
    """'all', 'last', or explicit module names -> module names."""
    names = parametrised_layers(model)
    if layers == "all":
        return names
    if layers == "last":
        return names[-1:]
    unknown = [n for n in layers if n not in names]
    if unknown:
        raise ValueError(f"layers {unknown} are not parametrised modules of the model; choose from {names}")
    return list(layers)


def _per_example_dense(model: nn.Module, names: list[str], x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-example gradients of the named parameters via torch.func."""
    params = {k: v.detach() for k, v in model.named_parameters()}
    buffers = {k: v.detach() for k, v in model.named_buffers()}
    chosen = {k: params[k] for k in names}

    def example_loss(selected: dict[str, torch.Tensor], xi: torch.Tensor, yi: torch.Tensor) -> torch.Tensor:
        logits = functional_call(model, ({**params, **selected}, buffers), (xi.unsqueeze(0),))
        return nn.functional.cross_entropy(logits, yi.unsqueeze(0))

    return vmap(grad(example_loss), in_dims=(None, 0, 0))(chosen, x, y)


def _chunk_size(model: nn.Module, dense_numel: int, budget: int) -> int:
    per_example = 4 * (dense_numel + sum(p.numel() for p in model.parameters()) // 8 + 4096)
    return max(1, budget // max(per_example, 1))


def _unfoldable(module: nn.Module) -> bool:
    """A convolution whose per-example gradient comes from unfold: 2-D, ungrouped, zero padding."""
    return isinstance(module, nn.Conv2d) and module.groups == 1 and module.padding_mode == "zeros" and isinstance(module.padding, tuple)


def extract(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    layers: str | Sequence[str] = "last",
    memory_budget: int = DEFAULT_BUDGET,
) -> Features:
    """White-box features of (x, y) on `model` (evaluation mode), for the chosen layers."""
    model.eval()
    chosen = resolve_layers(model, layers)
    modules = dict(model.named_modules())
    owners = parametrised_layers(model)
    linear = {n for n in owners if isinstance(modules[n], nn.Linear)}
    convolutions = {n for n in owners if _unfoldable(modules[n])}
    dense_params = [
        f"{n}.{p}" if n else p
        for n in owners if n not in linear | convolutions
        for p, _ in modules[n].named_parameters(recurse=False)
    ]
    params = dict(model.named_parameters())
    materialised = sum(params[k].numel() for k in dense_params) + sum(modules[n].weight.numel() for n in convolutions)
    step = _chunk_size(model, materialised, memory_budget)
    parts = [_extract_chunk(model, x[i : i + step], y[i : i + step], chosen, linear, convolutions, dense_params)
             for i in range(0, len(y), step)]
    first = parts[0]
    for part in parts[1:]:
        first.loss = torch.cat([first.loss, part.loss])
        first.probabilities = torch.cat([first.probabilities, part.probabilities])
        first.labels = torch.cat([first.labels, part.labels])
        first.gradient_norm = torch.cat([first.gradient_norm, part.gradient_norm])
        first.gradients = {k: v.cat(part.gradients[k]) for k, v in first.gradients.items()}
    return first


def _convolution_gradient(module: nn.Conv2d, a: torch.Tensor, g: torch.Tensor, materialise: bool) -> tuple[LayerGradient | None, torch.Tensor]:
    """Per-example gradient of a convolution from its unfolded input U (N, Cin k k, L) and output
    gradient G (N, Cout, L): the weight gradient is G U^T. Its squared norm is read from the
    Gram matrices, sum over l, m of (G^T G)(U^T U), when they are the smaller object.
    """
    unfolded = nn.functional.unfold(a, module.kernel_size, module.dilation, module.padding, module.stride)
    grads = g.flatten(2)
    bias = grads.sum(2) if module.bias is not None else None
    bias_squared = bias.pow(2).sum(1) if bias is not None else 0
    positions = grads.shape[2]
    if materialise or positions * positions >= module.weight[0].numel() * module.weight.shape[0]:
        weight = torch.einsum("nol,nkl->nok", grads, unfolded).reshape(len(a), *module.weight.shape)
        layer = LayerGradient(dense=weight, bias=bias)
        return (layer if materialise else None), layer.squared_norm()
    gram = torch.einsum("nol,nom->nlm", grads, grads) * torch.einsum("nkl,nkm->nlm", unfolded, unfolded)
    return None, gram.sum((1, 2)) + bias_squared


def _extract_chunk(model: nn.Module, x: torch.Tensor, y: torch.Tensor, chosen: list[str], linear: set[str],
                   convolutions: set[str], dense_params: list[str]) -> Features:
    modules = dict(model.named_modules())
    captured_inputs: dict[str, torch.Tensor] = {}
    captured_outputs: dict[str, torch.Tensor] = {}

    def hook(name: str):
        def keep(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
            captured_inputs[name] = inputs[0].detach()
            captured_outputs[name] = output

        return keep

    names = sorted(linear | convolutions)
    handles = [modules[n].register_forward_hook(hook(n)) for n in names]
    try:
        with torch.enable_grad():
            logits = model(x)
            loss = nn.functional.cross_entropy(logits, y, reduction="none")
            # Examples are independent in eval mode, so d(sum of losses)/d(output_i) is example i's own gradient.
            output_grads = torch.autograd.grad(loss.sum(), [captured_outputs[n] for n in names]) if names else ()
    finally:
        for handle in handles:
            handle.remove()

    gradients: dict[str, LayerGradient] = {}
    squared = torch.zeros(len(y))
    for name, g in zip(names, output_grads):
        a = captured_inputs[name]
        if name in convolutions:
            layer, layer_squared = _convolution_gradient(modules[name], a, g, materialise=name in chosen)
        else:
            layer = LayerGradient(inputs=a, outputs=g, bias=g if modules[name].bias is not None else None)
            layer_squared = layer.squared_norm()
        squared += layer_squared
        if name in chosen:
            gradients[name] = layer
    if dense_params:
        dense = _per_example_dense(model, dense_params, x, y)
        for tensor in dense.values():
            squared += tensor.flatten(1).pow(2).sum(1)
        for name in chosen:
            if name in gradients:
                continue
            prefix = f"{name}." if name else ""
            gradients[name] = LayerGradient(dense=dense[f"{prefix}weight"], bias=dense.get(f"{prefix}bias"))
    return Features(loss.detach(), logits.detach().softmax(1), y, gradients, squared.sqrt())
