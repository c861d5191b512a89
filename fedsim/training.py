"""Honest local training and central evaluation: plain PyTorch, nothing about attacks."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from fedsim.config import TrainConfig


@dataclass(frozen=True)
class Evaluation:
    loss: float
    accuracy: float


def make_optimizer(model: nn.Module, train: TrainConfig) -> torch.optim.Optimizer:
    if train.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=train.lr, weight_decay=train.weight_decay)
    return torch.optim.SGD(model.parameters(), lr=train.lr, momentum=train.momentum, weight_decay=train.weight_decay)


def train_locally(model: nn.Module, x: torch.Tensor, y: torch.Tensor, train: TrainConfig, seed: int) -> float:
    """`local_epochs` of mini-batch training on (x, y); returns the mean training loss.

    The shuffling order comes from `seed` alone, so a client's update is reproducible.
    """
    generator = torch.Generator().manual_seed(seed)
    loader = DataLoader(TensorDataset(x, y), batch_size=train.batch_size, shuffle=True, generator=generator)
    optimizer = make_optimizer(model, train)
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    total, seen = 0.0, 0
    for _ in range(train.local_epochs):
        for inputs, labels in loader:
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(model(inputs), labels)
            loss.backward()
            optimizer.step()
            total += loss.item() * len(labels)
            seen += len(labels)
    return total / max(seen, 1)


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
