"""Honest local training and central evaluation: plain PyTorch, nothing about attacks."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from fedsim.core.config import DPSGDConfig, TrainConfig


@contextmanager
def torch_threads(count: float) -> Iterator[None]:
    """Run torch's CPU operations on `count` threads, then restore the caller's setting.

    Parallel reductions (a gradient summed over a batch) round differently with another thread
    count, so everything fedsim records is computed with a count the config fixes
    (`backend.cpus_per_client`), never with whatever the process happened to hold: otherwise a
    run's bytes would depend on what the process ran before it.

    Parameters
    ----------
    count : float
        Threads (at least 1; a fraction is rounded down).
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(max(1, int(count)))
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@dataclass(frozen=True)
class Evaluation:
    loss: float
    accuracy: float


@dataclass(frozen=True)
class LocalTraining:
    loss: float  # mean training loss
    steps: int  # optimizer steps taken
    sample_rate: float  # DP-SGD's Poisson sampling rate (batch_size / records otherwise)


def resolve_device(setting: str = "auto") -> torch.device:
    """The torch device a `features.device` setting names.

    Parameters
    ----------
    setting : str
        "auto" (CUDA when PyTorch sees a GPU, else CPU), "cpu" or "cuda".

    Returns
    -------
    torch.device
    """
    if setting == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(setting)


def make_optimizer(model: nn.Module, train: TrainConfig) -> torch.optim.Optimizer:
    if train.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=train.lr, weight_decay=train.weight_decay)
    return torch.optim.SGD(model.parameters(), lr=train.lr, momentum=train.momentum, weight_decay=train.weight_decay)


def train_locally(model: nn.Module, x: torch.Tensor, y: torch.Tensor, train: TrainConfig, seed: int,
                  proximal_mu: float = 0.0, dp_sgd: DPSGDConfig | None = None) -> LocalTraining:
    """`local_epochs` of mini-batch training on (x, y).

    The shuffling order comes from `seed` alone, so a client's update is reproducible.
    `proximal_mu` > 0 adds FedProx's term mu/2 * ||w - w_global||^2 (w_global: the weights
    `model` starts from). With `dp_sgd`, Opacus clips each example's gradient and adds noise,
    sampling batches by Poisson sampling.
    """
    generator = torch.Generator().manual_seed(seed)
    loader = DataLoader(TensorDataset(x, y), batch_size=train.batch_size, shuffle=True, generator=generator)
    optimizer = make_optimizer(model, train)
    sample_rate = min(1.0, train.batch_size / len(y))
    trained: nn.Module = model
    if dp_sgd is not None:
        from fedsim.learning.dp_sgd import make_private

        trained, optimizer, loader, sample_rate = make_private(model, optimizer, loader, dp_sgd)
    start = [p.detach().clone() for p in model.parameters()] if proximal_mu > 0 else []
    loss_fn = nn.CrossEntropyLoss()
    trained.train()
    total, seen, steps = 0.0, 0, 0
    for _ in range(train.local_epochs):
        for inputs, labels in loader:
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(trained(inputs), labels)
            if proximal_mu > 0:
                loss = loss + proximal_mu / 2 * sum(((p - p0) ** 2).sum() for p, p0 in zip(model.parameters(), start))
            loss.backward()
            optimizer.step()
            steps += 1
            if len(labels):  # a Poisson-sampled batch may be empty (its loss is nan)
                total += loss.item() * len(labels)
                seen += len(labels)
    return LocalTraining(total / max(seen, 1), steps, sample_rate)


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1024) -> Evaluation:
    """Mean cross-entropy and accuracy of `model` on (x, y)."""
    model.eval()
    loss_sum, correct = 0.0, 0
    for start in range(0, len(y), batch_size):
        logits = model(x[start : start + batch_size])
        labels = y[start : start + batch_size]
        loss_sum += nn.functional.cross_entropy(logits, labels, reduction="sum").item()
        correct += (logits.argmax(dim=1) == labels).sum().item()
    return Evaluation(loss_sum / len(y), correct / len(y))
