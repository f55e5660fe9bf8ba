"""The metrics of models.validation computed in torch, batched over a population's members:
outputs [K, n, C] (logits, or a regression's predictions [K, n, 1]) and labels [K, n] -> [K]."""

from __future__ import annotations

import torch


def _predicted(logits: torch.Tensor) -> torch.Tensor:
    return logits.argmax(dim=2)


def _accuracy(logits, y):
    return (_predicted(logits) == y).float().mean(dim=1)


def _counts(logits, y):
    """Per member and class: true positives, predicted and true counts [K, C], counted by
    scatter-adding ones ([K, n] work: one-hot matrices of [K, n, C] took seconds and GBs at
    5,000 classes)."""
    K, _, C = logits.shape
    guess = _predicted(logits)
    zeros = torch.zeros(K, C, dtype=torch.float32, device=logits.device)
    ones = torch.ones(y.shape, dtype=torch.float32, device=logits.device)
    return (zeros.scatter_add(1, y, (guess == y).float()), zeros.scatter_add(1, guess, ones),
            zeros.scatter_add(1, y, ones))


def _balanced_accuracy(logits, y):
    hits, _, present = _counts(logits, y)
    recall = torch.where(present > 0, hits / present.clamp(min=1), 0.0)
    return recall.sum(dim=1) / (present > 0).sum(dim=1).clamp(min=1)


def _macro_f1(logits, y):
    hits, guessed, present = _counts(logits, y)
    seen = (guessed + present) > 0   # scikit-learn's labels: those in y or in the predictions
    f1 = torch.where(seen, 2 * hits / (guessed + present).clamp(min=1), 0.0)
    return f1.sum(dim=1) / seen.sum(dim=1).clamp(min=1)


def _log_loss(logits, y):
    K, n, C = logits.shape   # rows flattened: the [K, C, n] layout was a slow strided read
    return torch.nn.functional.cross_entropy(logits.reshape(K * n, C), y.reshape(K * n),
                                             reduction="none").view(K, n).mean(dim=1)


def _roc_auc(logits, y):
    """Two classes: the probability that a positive row scores above a negative one
    (Mann-Whitney, from average ranks: ties count half)."""
    margin = (logits[:, :, 1] - logits[:, :, 0]).contiguous()
    ordered = margin.sort(dim=1).values
    left = torch.searchsorted(ordered, margin, right=False)
    right = torch.searchsorted(ordered, margin, right=True)
    ranks = (left + right + 1).double() / 2
    positive = (y == 1)
    P = positive.sum(dim=1).double()
    N = positive.shape[1] - P
    wins = (ranks * positive).sum(dim=1) - P * (P + 1) / 2
    return (wins / (P * N).clamp(min=1)).float()


def _errors(predictions, y):
    return predictions[:, :, 0] - y


def _rmse(predictions, y):
    return _errors(predictions, y).square().mean(dim=1).sqrt()


def _mae(predictions, y):
    return _errors(predictions, y).abs().mean(dim=1)


def _r2(predictions, y):
    total = (y - y.mean(dim=1, keepdim=True)).square().sum(dim=1)
    return 1 - _errors(predictions, y).square().sum(dim=1) / total.clamp(min=1e-12)
