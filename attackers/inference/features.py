"""Per-example white-box features of one model snapshot: loss, outputs, label, layer gradients.

A fully connected layer's per-example weight gradient is the outer product g a^T of the
layer's input a and the gradient g of the example's loss with respect to the layer's output.
So one batched backward pass gives (a, g) for every example and every linear layer, the
exact per-example gradient norm is |a| |g|, and the attack's row convolution is a_j (k . g),
all without materialising a per-example weight gradient. A plain 2-D convolution's per-example
gradient is the same sum over its L output positions, G U^T = sum_l g_l u_l^T, from the unfolded
input U (N, Cin k k, L) and the output gradient G (N, Cout, L) of that backward pass. Per layer
the cheaper form is kept (Li et al. 2022, "Large language models can be strong differentially
private learners", and Opacus' ghost clipping): when L (Cin k k + Cout) < Cin k k Cout the
factors U, G are kept and the squared norm is the "ghost norm" sum_{l,m} (u_l . u_m)(g_l . g_m),
else the gradient is materialised. An evaluation-mode batch norm is a per-channel affine map,
so its per-example gradients are sums over positions of g x_hat and g. Other layers get
per-example gradients from torch.func (vmap of grad of functional_call). Work is chunked so that what is held stays
within a memory budget.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import cast

import torch
from torch import nn
from torch.func import functional_call, grad, vmap

DEFAULT_BUDGET = 2 << 30  # bytes
ALIGNMENT_CHUNK = 64  # records per vmap pass in gradient_alignment: larger chunks only churn memory (measured on the fcn)


def ghost_cheaper(rows: int, width: int, positions: int) -> bool:
    """Whether a gradient sum_l g_l u_l^T of `positions` outer products of (width,) by (rows,)
    is cheaper kept as its factors (and its norm as Gram products) than materialised.

    Parameters
    ----------
    rows, width : int
        The sizes of u_l (e.g. Cin k k) and g_l (e.g. Cout).
    positions : int
        L, the number of outer products (a convolution's output positions).

    Returns
    -------
    bool
        True when the factors, L (rows + width) floats per example, are fewer than the
        materialised rows * width (Li et al. 2022's ghost-clipping criterion).
    """
    return positions * (rows + width) < rows * width


def factored_squared_norm(inputs: torch.Tensor, outputs: torch.Tensor) -> torch.Tensor:
    """Squared Frobenius norm of each example's sum_l g_l u_l^T, without materialising it if cheaper.

    Parameters
    ----------
    inputs : torch.Tensor
        (N, rows, L): u_l, e.g. a convolution's unfolded input (N, Cin k k, L).
    outputs : torch.Tensor
        (N, width, L): g_l, the gradient of the loss with respect to the layer's output.

    Returns
    -------
    torch.Tensor
        (N,): the ghost norm sum_{l,m} (u_l . u_m)(g_l . g_m) (Li et al. 2022) or the materialised
        gradient's squared norm, whichever is cheaper.
    """
    if ghost_cheaper(inputs.shape[1], outputs.shape[1], inputs.shape[2]):
        gram_inputs = torch.bmm(inputs.transpose(1, 2), inputs)
        return (gram_inputs * torch.bmm(outputs.transpose(1, 2), outputs)).sum((1, 2))
    return torch.bmm(outputs, inputs.transpose(1, 2)).pow(2).sum((1, 2))


@dataclass
class LayerGradient:
    """Per-example gradient of one layer's weight: factored or dense.

    Factored, the gradient is sum_l g_l u_l^T over L positions: a linear layer holds inputs
    (N, in) and outputs (N, out) (one position); a 2-D convolution holds its unfolded input
    (N, Cin k k, L) and output gradient (N, Cout, L), and `shape` is its weight's shape. Dense:
    (N, *weight.shape).

    Parameters
    ----------
    inputs : torch.Tensor, optional
        Factored: the layer's input, (N, in), or a convolution's unfolded input (N, Cin k k, L).
    outputs : torch.Tensor, optional
        Factored: the gradient of each example's loss with respect to the layer's output, (N,
        out), or (N, Cout, L) for a convolution.
    dense : torch.Tensor, optional
        The materialised gradient, (N, *weight.shape), for every other layer.
    bias : torch.Tensor, optional
        The per-example bias gradient, (N, out), when the layer has a bias.
    shape : tuple of int, optional
        The weight's shape, for a factored convolution.
    """

    inputs: torch.Tensor | None = None  # (N, in) or (N, Cin k k, L)
    outputs: torch.Tensor | None = None  # (N, out) or (N, Cout, L)
    dense: torch.Tensor | None = None  # (N, *weight.shape) for other layers
    bias: torch.Tensor | None = None  # (N, out) per-example bias gradient, when the layer has one
    shape: tuple[int, ...] | None = None  # the weight's shape, for a factored convolution

    @property
    def factored(self) -> bool:
        """Whether the gradient is held as factors (inputs, outputs) rather than dense."""
        return self.dense is None

    def factors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The factors (inputs, outputs) of a factored gradient; ValueError if it is dense.

        (N, in) and (N, out), or (N, Cin k k, L) and (N, Cout, L) for a convolution.
        """
        if self.inputs is None or self.outputs is None:
            raise ValueError("this LayerGradient is dense, not factored into (inputs, outputs)")
        return self.inputs, self.outputs

    def rows(self) -> torch.Tensor:
        """The gradient as rows, what a convolution kernel spanning one row sees (Nasr et al. 2019).

        Returns
        -------
        torch.Tensor
            Shape (N, rows, width): (N, in, out) for a linear layer, row j = a_j g; (N, Cin k k,
            Cout) for a factored convolution; a dense gradient's trailing dimensions as rows.
        """
        if self.dense is None:
            a, g = self.factors()
            if a.dim() == 3:
                return torch.bmm(a, g.transpose(1, 2))
            return a[:, :, None] * g[:, None, :]
        return self.dense.flatten(2).transpose(1, 2) if self.dense.dim() > 2 else self.dense[:, None, :]

    def weight_gradient(self) -> torch.Tensor:
        """The per-example weight gradient, materialised: (N, *weight.shape); for a linear layer g a^T, (N, out, in)."""
        if self.dense is None:
            a, g = self.factors()
            if a.dim() == 3:
                assert self.shape is not None  # a factored convolution records its weight's shape
                return torch.bmm(g, a.transpose(1, 2)).reshape(len(a), *self.shape)
            return g[:, :, None] * a[:, None, :]
        return self.dense

    def squared_norm(self) -> torch.Tensor:
        """Each example's squared L2 norm of this layer's weight and bias gradient.

        Returns
        -------
        torch.Tensor
            Shape (N,); factored gradients are not materialised where that is cheaper (a linear
            layer's is |a|^2 |g|^2, a convolution's a ghost norm, `factored_squared_norm`).
        """
        if self.dense is None:
            a, g = self.factors()
            weight = factored_squared_norm(a, g) if a.dim() == 3 else a.pow(2).sum(1) * g.pow(2).sum(1)
        else:
            weight = self.dense.flatten(1).pow(2).sum(1)
        return weight + (self.bias.pow(2).sum(1) if self.bias is not None else 0)

    def cat(self, other: LayerGradient) -> LayerGradient:
        """The gradients of this layer's records followed by `other`'s (a later chunk, held the same way), (N + N_other, ...)."""
        def join(a, b):
            return None if a is None else torch.cat([a, b])

        return LayerGradient(join(self.inputs, other.inputs), join(self.outputs, other.outputs),
                             join(self.dense, other.dense), join(self.bias, other.bias), self.shape)


@dataclass
class Features:
    """White-box features of N records on one model snapshot (the inputs of Nasr et al. 2019).

    Parameters
    ----------
    loss : torch.Tensor
        Cross-entropy of each record, nats, shape (N,).
    probabilities : torch.Tensor
        Softmax outputs, shape (N, classes).
    labels : torch.Tensor
        True labels, int64, shape (N,).
    gradients : dict of str to LayerGradient
        The chosen layers' per-example gradients, by module name.
    gradient_norm : torch.Tensor
        Exact per-example L2 norm of the gradient over all parameters, shape (N,).
    """

    loss: torch.Tensor  # (N,)
    probabilities: torch.Tensor  # (N, classes)
    labels: torch.Tensor  # (N,) true labels
    gradients: dict[str, LayerGradient]  # chosen layers, by module name
    gradient_norm: torch.Tensor  # (N,) exact norm over all parameters
    activations: dict[str, torch.Tensor] = field(default_factory=dict)  # chosen modules' outputs, (N, features) each, by module name

    @property
    def one_hot(self) -> torch.Tensor:
        """The labels one-hot, float32, shape (N, classes)."""
        return nn.functional.one_hot(self.labels, self.probabilities.shape[1]).float()

    @property
    def correct(self) -> torch.Tensor:
        """Whether the model's top class is the label: 1.0 or 0.0 (float32), shape (N,)."""
        return (self.probabilities.argmax(1) == self.labels).float()

    @property
    def entropy(self) -> torch.Tensor:
        """Shannon entropy of each softmax output in nats, shape (N,) (probabilities clamped at 1e-12)."""
        p = self.probabilities.clamp_min(1e-12)
        return -(p * p.log()).sum(1)


def parametrised_layers(model: nn.Module) -> list[str]:
    """Names of the modules that own parameters directly, in definition order (as `named_modules` gives them)."""
    return [name for name, module in model.named_modules() if any(True for _ in module.parameters(recurse=False))]


def resolve_layers(model: nn.Module, layers: str | Sequence[str]) -> list[str]:
    """The module names a `layers` setting selects.

    Parameters
    ----------
    model : torch.nn.Module
        The target model.
    layers : str or sequence of str
        "all", "last" (the last parametrised module), or module names.

    Returns
    -------
    list of str
        Names of parametrised modules.

    Raises
    ------
    ValueError
        If a given name is not a parametrised module of `model` (the message lists those that are).
    """
    names = parametrised_layers(model)
    if layers == "all":
        return names
    if layers == "last":
        return names[-1:]
    unknown = [n for n in layers if n not in names]
    if unknown:
        raise ValueError(f"layers {unknown} are not parametrised modules of the model; choose from {names}")
    return list(layers)


def resolve_modules(model: nn.Module, names: str | Sequence[str] | None) -> list[str]:
    """Modules whose outputs (activations) are read.

    Parameters
    ----------
    model : torch.nn.Module
        The model the activations are read from.
    names : str, sequence of str or None
        None (none), 'all' or 'last' (of the parametrised layers but the output layer, whose
        output the attack reads as probabilities), or explicit module names (any submodule).

    Returns
    -------
    list of str
        The module names ('all' and 'last' as `parametrised_layers` orders them).

    Raises
    ------
    ValueError
        If an explicit name is not a submodule of `model`.
    """
    if not names:
        return []
    hidden = parametrised_layers(model)[:-1]
    if names == "all":
        return hidden
    if names == "last":
        return hidden[-1:]
    known = [name for name, _ in model.named_modules() if name]
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(f"activations {unknown} are not modules of the model; choose from {known}")
    return list(names)


def _per_example_dense(model: nn.Module, names: list[str], x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-example gradients of the named parameters via torch.func."""
    params = {k: v.detach() for k, v in model.named_parameters()}
    buffers = {k: v.detach() for k, v in model.named_buffers()}
    chosen = {k: params[k] for k in names}

    def example_loss(selected: dict[str, torch.Tensor], xi: torch.Tensor, yi: torch.Tensor) -> torch.Tensor:
        logits = functional_call(model, ({**params, **selected}, buffers), (xi.unsqueeze(0),))
        return nn.functional.cross_entropy(logits, yi.unsqueeze(0))

    return vmap(grad(example_loss), in_dims=(None, 0, 0))(chosen, x, y)


def gradient_alignment(model: nn.Module, x: torch.Tensor, y: torch.Tensor, directions: torch.Tensor,
                       memory_budget: int = DEFAULT_BUDGET) -> torch.Tensor:
    """Cosine similarity between each record's loss gradient and each of several parameter directions.

    Parameters
    ----------
    model : nn.Module
        The model the gradients are taken at (put in evaluation mode).
    x, y : torch.Tensor
        (N, *input_shape) records and (N,) true labels.
    directions : torch.Tensor
        (C, P) directions over the model's trainable parameters, flattened and concatenated in
        `named_parameters` order (e.g. clients' updates, sent minus returned).
    memory_budget : int
        Bytes one chunk of per-example gradients may take.

    Returns
    -------
    torch.Tensor
        (N, C) float64 on x's device: cos(dL_x/dW, d_c), with L_x the record's cross-entropy
        (nats); 0 where a gradient or a direction is zero. Per-example gradients come from
        torch.func (vmap of grad) and are never held for more than one chunk of records.

    Raises
    ------
    ValueError
        When the directions' length is not the number of trainable parameters.
    """
    model.eval()
    trainable = [(name, p.numel(), p.dtype) for name, p in model.named_parameters() if p.requires_grad]
    names, sizes = [name for name, _, _ in trainable], [size for _, size, _ in trainable]
    total = sum(sizes)
    if directions.shape[-1] != total:
        raise ValueError(f"directions have {directions.shape[-1]} entries, the model {total} trainable parameters")
    unit = directions.double() / torch.linalg.vector_norm(directions.double(), dim=1, keepdim=True).clamp_min(1e-30)
    # (C, numel) per parameter, in the parameter's dtype (that of its per-example gradients: float32 or float64)
    slices = {name: part.to(dtype) for (name, _, dtype), part in zip(trainable, unit.split(sizes, dim=1))}
    step = min(ALIGNMENT_CHUNK, _chunk_size(model, total, total, memory_budget))
    parts = []
    for i in range(0, len(y), step):
        per_example = _per_example_dense(model, names, x[i : i + step], y[i : i + step])
        dots = torch.zeros(len(y[i : i + step]), len(unit), dtype=torch.float64, device=x.device)
        squared = torch.zeros(len(y[i : i + step]), dtype=torch.float64, device=x.device)
        for name in names:  # per parameter: no concatenated (chunk, P) copy
            flat = per_example[name].flatten(1)
            dots += (flat @ slices[name].T).double()
            squared += flat.pow(2).sum(1).double()
        parts.append(dots / squared.sqrt().clamp_min(1e-30)[:, None])
    return torch.cat(parts)


def _unfoldable(module: nn.Module) -> bool:
    """A convolution whose per-example gradient comes from unfold: 2-D, ungrouped, zero padding."""
    return isinstance(module, nn.Conv2d) and module.groups == 1 and module.padding_mode == "zeros" and isinstance(module.padding, tuple)


def _affine_normalisation(module: nn.Module) -> bool:
    """Batch norm with running statistics: in evaluation mode a per-channel affine map of its input."""
    return isinstance(module, nn.modules.batchnorm._BatchNorm) and module.affine and module.track_running_stats and module.running_mean is not None


def _normalisation_gradient(module: nn.modules.batchnorm._BatchNorm, a: torch.Tensor, g: torch.Tensor) -> LayerGradient:
    """Per-example gradient of an evaluation-mode batch norm, y = w x_hat + b with x_hat =
    (x - running mean) / sqrt(running var + eps): dL/dw_c = sum over positions of g x_hat, dL/db_c = sum of g.
    """
    shape = (1, -1) + (1,) * (a.dim() - 2)
    mean, var = module.running_mean, module.running_var
    assert mean is not None and var is not None  # _affine_normalisation: it tracks running statistics
    normalised = (a - mean.reshape(shape)) / torch.sqrt(var.reshape(shape) + module.eps)
    return LayerGradient(dense=(g * normalised).flatten(2).sum(2) if a.dim() > 2 else g * normalised,
                         bias=g.flatten(2).sum(2) if a.dim() > 2 else g)


def _convolution_sizes(model: nn.Module, x: torch.Tensor, convolutions: set[str]) -> dict[str, tuple[int, int, int]]:
    """(rows Cin k k, width Cout, positions L) of each named convolution, from one example's forward pass."""
    modules = dict(model.named_modules())
    sizes: dict[str, tuple[int, int, int]] = {}

    def hook(name: str):
        def keep(module: nn.Conv2d, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
            sizes[name] = (module.weight[0].numel(), module.weight.shape[0], output[0, 0].numel())

        return keep

    handles = [modules[n].register_forward_hook(hook(n)) for n in convolutions]
    try:
        with torch.no_grad():
            model(x[:1])
    finally:
        for handle in handles:
            handle.remove()
    return sizes


def _chunk_size(model: nn.Module, held: int, transient: int, budget: int) -> int:
    """Examples per chunk: `held` and `transient` floats per example, plus an allowance for activations."""
    per_example = 4 * (held + transient + sum(p.numel() for p in model.parameters()) // 8 + 4096)
    return max(1, budget // max(per_example, 1))


def extract(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    layers: str | Sequence[str] = "last",
    memory_budget: int = DEFAULT_BUDGET,
    activations: str | Sequence[str] | None = None,
) -> Features:
    """White-box features of (x, y) on `model` (evaluation mode), for the chosen layers.

    Parameters
    ----------
    model : nn.Module
        The snapshot; put in evaluation mode (examples must not interact, e.g. through batch norm).
    x, y : torch.Tensor
        (N, *input_shape) records and (N,) true labels.
    layers : str or sequence of str
        'last', 'all', or module names: the layers whose gradients are returned.
    memory_budget : int
        Bytes the per-chunk work may hold; the records are processed in chunks to stay within it.
    activations : str or sequence of str, optional
        Modules whose outputs are kept, flattened per example (`resolve_modules`).

    Returns
    -------
    Features
        Losses (nats), probabilities, labels, the chosen layers' per-example gradients (factored
        where that is smaller) and the exact per-example gradient L2 norm over all parameters, and the
        chosen modules' outputs (activations), (N, features) each.
    """
    model.eval()
    chosen = resolve_layers(model, layers)
    hidden = resolve_modules(model, activations)
    modules = dict(model.named_modules())
    owners = parametrised_layers(model)
    linear = {n for n in owners if isinstance(modules[n], nn.Linear)}
    convolutions = {n for n in owners if _unfoldable(modules[n])}
    normalisations = {n for n in owners if _affine_normalisation(modules[n])}
    dense_params = [
        f"{n}.{p}" if n else p
        for n in owners if n not in linear | convolutions | normalisations
        for p, _ in modules[n].named_parameters(recurse=False)
    ]
    params = dict(model.named_parameters())
    sizes = _convolution_sizes(model, x, convolutions) if convolutions else {}
    factored = {n for n, size in sizes.items() if ghost_cheaper(*size)}
    held = sum(params[k].numel() for k in dense_params)
    held += sum((r + w) * positions if n in factored else r * w for n, (r, w, positions) in sizes.items() if n in chosen)
    held += sum(modules[n].weight.shape[0] + modules[n].weight.shape[1] for n in linear if n in chosen)
    transient = max((r * positions + (2 * positions * positions if n in factored else r * w) for n, (r, w, positions) in sizes.items()),
                    default=0)
    step = _chunk_size(model, held, transient, memory_budget)
    parts = [_extract_chunk(model, x[i : i + step], y[i : i + step], chosen, linear, convolutions, normalisations, factored, dense_params,
                            hidden)
             for i in range(0, len(y), step)]
    first = parts[0]
    for part in parts[1:]:
        first.loss = torch.cat([first.loss, part.loss])
        first.probabilities = torch.cat([first.probabilities, part.probabilities])
        first.labels = torch.cat([first.labels, part.labels])
        first.gradient_norm = torch.cat([first.gradient_norm, part.gradient_norm])
        first.gradients = {k: v.cat(part.gradients[k]) for k, v in first.gradients.items()}
        first.activations = {k: torch.cat([v, part.activations[k]]) for k, v in first.activations.items()}
    return first


def unfold(a: torch.Tensor, kernel: tuple[int, int], dilation: tuple[int, int], padding: tuple[int, int],
           stride: tuple[int, int]) -> torch.Tensor:
    """torch.nn.functional.unfold as a strided view of the padded input, then one copy.

    Same result; torch's CPU im2col is 10-30x slower on these shapes.

    Parameters
    ----------
    a : torch.Tensor
        Input, shape (N, C, H, W).
    kernel, dilation, padding, stride : tuple of (int, int)
        As the convolution's (zero padding).

    Returns
    -------
    torch.Tensor
        The unfolded input, shape (N, C kh kw, L), L the number of output positions.
    """
    (kh, kw), (dh, dw), (ph, pw), (sh, sw) = kernel, dilation, padding, stride
    windows = nn.functional.pad(a, (pw, pw, ph, ph)).unfold(2, dh * (kh - 1) + 1, sh).unfold(3, dw * (kw - 1) + 1, sw)
    windows = windows[..., ::dh, ::dw]  # (N, C, Ho, Wo, kh, kw)
    n, c, ho, wo = windows.shape[:4]
    return windows.permute(0, 1, 4, 5, 2, 3).reshape(n, c * kh * kw, ho * wo)


def _convolution_gradient(module: nn.Conv2d, a: torch.Tensor, g: torch.Tensor, factored: bool) -> LayerGradient:
    """Per-example gradient of a convolution, sum_l g_l u_l^T over its output positions, from its
    unfolded input U (N, Cin k k, L) and output gradient G (N, Cout, L): kept as the factors when
    they are the smaller object (then its norm is the ghost norm), else materialised as G U^T.
    """
    assert isinstance(module.padding, tuple)  # _unfoldable admits no padding="same"/"valid" strings
    # nn.Conv2d stores each of these as a pair (torch's _pair); its annotations say tuple[int, ...].
    kernel, dilation, padding, stride = (cast(tuple[int, int], v) for v in (module.kernel_size, module.dilation, module.padding, module.stride))
    unfolded = unfold(a, kernel, dilation, padding, stride)
    grads = g.flatten(2)
    bias = grads.sum(2) if module.bias is not None else None
    layer = LayerGradient(inputs=unfolded, outputs=grads, bias=bias, shape=tuple(module.weight.shape))
    return layer if factored else LayerGradient(dense=layer.weight_gradient(), bias=bias)


def _extract_chunk(model: nn.Module, x: torch.Tensor, y: torch.Tensor, chosen: list[str], linear: set[str],
                   convolutions: set[str], normalisations: set[str], factored: set[str], dense_params: list[str],
                   hidden: Sequence[str] = ()) -> Features:
    modules = dict(model.named_modules())
    captured_inputs: dict[str, torch.Tensor] = {}
    captured_outputs: dict[str, torch.Tensor] = {}
    activations: dict[str, torch.Tensor] = {}

    def keep_output(name: str):
        def keep(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
            activations[name] = output.detach().flatten(1)

        return keep

    def hook(name: str):
        def keep(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> torch.Tensor:
            captured_inputs[name] = inputs[0].detach()
            captured_outputs[name] = output
            # The next layer gets a copy: an in-place op there (ReLU(inplace=True)) would
            # otherwise turn the captured tensor into its own output.
            return output.clone()

        return keep

    names = sorted(linear | convolutions | normalisations)
    handles = [modules[n].register_forward_hook(hook(n)) for n in names]
    handles += [modules[n].register_forward_hook(keep_output(n)) for n in hidden]
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
        a = captured_inputs.pop(name)
        if name in convolutions:
            layer = _convolution_gradient(modules[name], a, g, factored=name in factored)
        elif name in normalisations:
            layer = _normalisation_gradient(modules[name], a, g)
        else:
            layer = LayerGradient(inputs=a, outputs=g, bias=g if modules[name].bias is not None else None)
        squared += layer.squared_norm()
        if name in chosen:
            gradients[name] = layer
        del layer
    if dense_params:
        dense = _per_example_dense(model, dense_params, x, y)
        for tensor in dense.values():
            squared += tensor.flatten(1).pow(2).sum(1)
        for name in chosen:
            if name in gradients:
                continue
            prefix = f"{name}." if name else ""
            gradients[name] = LayerGradient(dense=dense[f"{prefix}weight"], bias=dense.get(f"{prefix}bias"))
    return Features(loss.detach(), logits.detach().softmax(1), y, gradients, squared.sqrt(), {n: activations[n] for n in hidden})
