"""The training loop: AdamW on answer tokens only, seeded batches, a recorded loss curve."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F

from visage_local.training.data import TokenizedExample
from visage_local.training.model import TorchModel


@dataclass(frozen=True)
class TrainingSettings:
    """How to train: steps, batch size, peak learning rate (linear warm-up, cosine decay)."""

    steps: int
    batch_size: int = 8
    learning_rate: float = 5e-5
    warmup_steps: int = 10
    max_tokens: int = 192
    seed: int = 0
    clip_norm: float = 1.0

    def describe(self) -> dict:
        """The settings as a JSON-ready dict."""
        return asdict(self)


@dataclass(frozen=True)
class StepRecord:
    """One optimiser step of the training curve."""

    step: int
    loss: float
    learning_rate: float
    seconds: float


def learning_rate_at(step: int, settings: TrainingSettings) -> float:
    """Linear warm-up to the peak, then cosine decay to 10% of it at the last step."""
    peak = settings.learning_rate
    if step < settings.warmup_steps:
        return peak * (step + 1) / settings.warmup_steps
    span = max(1, settings.steps - settings.warmup_steps)
    progress = (step - settings.warmup_steps) / span
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def batch_order(n_examples: int, settings: TrainingSettings) -> list[list[int]]:
    """Example indices of every batch: seeded shuffles, epoch after epoch."""
    rng = np.random.default_rng(settings.seed)
    order: list[int] = []
    needed = settings.steps * settings.batch_size
    while len(order) < needed:
        order.extend(rng.permutation(n_examples).tolist())
    return [
        order[i * settings.batch_size : (i + 1) * settings.batch_size]
        for i in range(settings.steps)
    ]


def collate(examples: list[TokenizedExample], max_tokens: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded inputs and next-token targets; targets are -100 outside answers.

    Padding (token 0) sits after every real token, so causal attention never lets
    it reach a position that has a target."""
    length = min(max_tokens, max(len(e.tokens) for e in examples) - 1)
    inputs = torch.zeros((len(examples), length), dtype=torch.long)
    targets = torch.full((len(examples), length), -100, dtype=torch.long)
    for row, e in enumerate(examples):
        tokens = torch.tensor(e.tokens[: length + 1])
        n = min(length, len(tokens) - 1)
        inputs[row, :n] = tokens[:n]
        answer = torch.arange(n) >= e.answer_start - 1
        targets[row, :n] = torch.where(answer, tokens[1 : n + 1], torch.tensor(-100))
    return inputs, targets


def answer_loss(model: TorchModel, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over answer tokens; logits are computed only where a target is."""
    hidden = model.hidden_states(inputs)
    keep = targets != -100
    logits = model.head(hidden[keep])
    return F.cross_entropy(logits, targets[keep])


def train(
    model: TorchModel,
    examples: list[TokenizedExample],
    settings: TrainingSettings,
    on_step: Callable[[StepRecord], None] | None = None,
) -> list[StepRecord]:
    """Train ``model`` in place; returns the loss curve."""
    torch.manual_seed(settings.seed)
    parameters = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(parameters, lr=settings.learning_rate, weight_decay=0.0)
    curve = []
    started = time.monotonic()
    model.train()
    for step, indices in enumerate(batch_order(len(examples), settings)):
        lr = learning_rate_at(step, settings)
        for group in optimizer.param_groups:
            group["lr"] = lr
        inputs, targets = collate([examples[i] for i in indices], settings.max_tokens)
        loss = answer_loss(model, inputs, targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(parameters, settings.clip_norm)
        optimizer.step()
        record = StepRecord(step, loss.item(), lr, time.monotonic() - started)
        curve.append(record)
        if on_step:
            on_step(record)
    model.eval()
    return curve
