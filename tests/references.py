"""Helpers of the loss tests: random batches, and plain-Python arithmetic for references
written from the papers' equations (nothing here calls the code under test)."""

from __future__ import annotations

import math

import torch


def batch(seed, size=7, classes=5, scale=2.0):
    generator = torch.Generator().manual_seed(seed)
    logits = (scale * torch.randn(size, classes, generator=generator, dtype=torch.float64)).requires_grad_()
    targets = torch.randint(0, classes, (size,), generator=generator)
    targets[:classes] = torch.arange(classes)  # every class present
    return logits, targets


def softmax_row(row):
    top = max(row)
    exps = [math.exp(v - top) for v in row]
    return [e / sum(exps) for e in exps]


def sigmoid(v):
    return 1 / (1 + math.exp(-v))


def gradient(loss_value, logits):
    (grad,) = torch.autograd.grad(loss_value, logits)
    return grad


def numerical_gradient(reference, logits, eps=1e-6):
    """Central differences of a reference written in plain Python: its gradient, independently."""
    grad = torch.zeros_like(logits)
    flat = logits.detach().clone()
    for index in range(flat.numel()):
        plus, minus = flat.clone(), flat.clone()
        plus.view(-1)[index] += eps
        minus.view(-1)[index] -= eps
        grad.view(-1)[index] = (reference(plus) - reference(minus)) / (2 * eps)
    return grad
