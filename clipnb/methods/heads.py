"""Linear heads on frozen, normalised CLIP features: random or zero-shot initialised.

The zero-shot classifier is itself a linear map, ``logits = s · f Wᵀ`` with W the class text
embeddings and s the logit scale, so a few-shot head can start from it (W₀ = s·W, b₀ = 0) instead
of from random weights. At zero steps it reproduces zero-shot predictions exactly.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from clipnb.core.evaluation import accuracy


class LinearHead(nn.Module):
    """``logits = f Wᵀ + b`` on normalised features ``f``."""

    def __init__(self, dim: int, n_classes: int) -> None:
        super().__init__()
        self.linear = nn.Linear(dim, n_classes)

    @classmethod
    def zero_shot(cls, class_embeddings: torch.Tensor, logit_scale: float) -> LinearHead:
        """A head equal to the zero-shot classifier: W = logit_scale · class embeddings, b = 0."""
        head = cls(class_embeddings.shape[1], class_embeddings.shape[0])
        with torch.no_grad():
            head.linear.weight.copy_(logit_scale * class_embeddings)
            head.linear.bias.zero_()
        return head

    @classmethod
    def random(cls, dim: int, n_classes: int, seed: int) -> LinearHead:
        """PyTorch's default (Kaiming-uniform) initialisation from a fixed seed."""
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            return cls(dim, n_classes)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.linear(features)


@dataclass
class HeadTraining:
    """The curve of one head's training: validation (and optionally test) accuracy per epoch."""

    val_accuracy: list[float] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    best_epoch: int = 0

    @property
    def best_val(self) -> float:
        return self.val_accuracy[self.best_epoch]


def train_head(
    head: LinearHead,
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    val_x: torch.Tensor,
    val_y: torch.Tensor,
    epochs: int,
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    batch_size: int = 256,
    seed: int = 0,
) -> tuple[LinearHead, HeadTraining]:
    """Adam + cross-entropy for ``epochs`` epochs; keeps the weights of the best validation epoch.

    Epoch 0 is the initial head (no step), so a zero-shot-initialised head never ends below its
    zero-shot validation accuracy; the test split is never seen here.
    """
    generator = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(head.parameters(), lr=lr, weight_decay=weight_decay)
    train_y = torch.as_tensor(train_y)
    record = HeadTraining()

    def evaluate() -> float:
        with torch.no_grad():
            return accuracy(head(val_x), val_y)

    best_state = {k: v.clone() for k, v in head.state_dict().items()}
    record.val_accuracy.append(evaluate())
    for epoch in range(1, epochs + 1):
        order = torch.randperm(len(train_x), generator=generator)
        losses = []
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            loss = F.cross_entropy(head(train_x[idx]), train_y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(loss.item())
        record.train_loss.append(float(sum(losses) / len(losses)))
        record.val_accuracy.append(evaluate())
        if record.val_accuracy[-1] > record.val_accuracy[record.best_epoch]:
            record.best_epoch = epoch
            best_state = {k: v.clone() for k, v in head.state_dict().items()}
    head.load_state_dict(best_state)
    return head, record
