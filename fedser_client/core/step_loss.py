"""A local step's loss and its gradient, written out for the SER MLP (DESIGN §5).

On a 16-row batch autograd's graph costs about as much as the arithmetic (~15 nodes per forward pass,
~0.5 ms of a ~1 ms step). A `StepLoss` is a sum of cross-entropy terms, each on one training-mode
forward pass of the model times constant factors; `gradients` computes its gradient by calling the
kernels that autograd's backward formulas call (torch's derivatives.yaml: addmm, relu, mul and div by
the dropout mask, log_softmax, nll_loss, mean), on the same operands in the same order, so the
gradient has the same bits as `torch.autograd.grad(loss.value, params)` (tests/client/core/
test_same_results.py compares the two). The value is built with the ops of the written expression.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import torch

from fedser_shared.model import EmotionMLP, Hidden

_nll_loss_forward = torch.ops.aten.nll_loss_forward.default
_nll_loss_backward = torch.ops.aten.nll_loss_backward.default
_log_softmax_backward = torch.ops.aten._log_softmax_backward_data.default
_relu_backward = torch.ops.aten.threshold_backward.default
MEAN, NONE = 1, 0            # at::Reduction
IGNORE_INDEX = -100          # F.cross_entropy's default


@dataclass(frozen=True)
class _Term:
    """A cross-entropy on one forward pass: per row (`mask` given: then the mean of per-row * mask) or the
    class-weighted mean; `factors` multiply it, in order."""

    hidden: list[Hidden]
    head_input: torch.Tensor
    log_probs: torch.Tensor
    targets: torch.Tensor
    class_weights: torch.Tensor | None
    total_weight: torch.Tensor
    mask: torch.Tensor | None
    factors: tuple[float, ...] = ()

    def logits_grad(self, upstream: torch.Tensor) -> torch.Tensor:
        grad = upstream
        for factor in reversed(self.factors):  # MulBackward0: grad * other
            grad = grad * factor
        if self.mask is None:
            grad = _nll_loss_backward(grad, self.log_probs, self.targets, self.class_weights, MEAN, IGNORE_INDEX,
                                      self.total_weight)
        else:
            per_row = grad.expand(self.mask.shape) / self.mask.numel()  # MeanBackward0
            grad = _nll_loss_backward(per_row * self.mask, self.log_probs, self.targets, None, NONE, IGNORE_INDEX,
                                      self.total_weight)
        logits_grad: torch.Tensor = _log_softmax_backward(grad, self.log_probs, 1, self.log_probs.dtype)
        return logits_grad


def _kept_pass(model: EmotionMLP, x: torch.Tensor,
               generator: torch.Generator | None) -> tuple[list[Hidden], torch.Tensor, torch.Tensor]:
    """The forward pass a cross-entropy term differentiates: hidden layers, the head's input, log-probabilities."""
    logits, hidden = model.forward_kept(x, generator)
    return hidden, (hidden[-1].output if hidden else x), torch.log_softmax(logits, 1)


class StepLoss:
    """The loss of one local step: `value` (a 0-dim tensor) and how to differentiate it."""

    def __init__(self, value: torch.Tensor, terms: tuple[_Term, ...] = ()) -> None:
        self.value, self._terms = value, terms

    @classmethod
    def zero(cls, device: torch.device) -> StepLoss:
        return cls(torch.zeros((), device=device))

    @classmethod
    def weighted_ce(cls, model: EmotionMLP, x: torch.Tensor, targets: torch.Tensor, class_weights: torch.Tensor,
                    generator: torch.Generator | None) -> StepLoss:
        """F.cross_entropy(model(x, generator), targets, weight=class_weights), its pass kept."""
        hidden, head_input, log_probs = _kept_pass(model, x, generator)
        value, total_weight = _nll_loss_forward(log_probs, targets, class_weights, MEAN, IGNORE_INDEX)
        return cls(value, (_Term(hidden, head_input, log_probs, targets, class_weights, total_weight, None),))

    @classmethod
    def masked_mean_ce(cls, model: EmotionMLP, x: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor,
                       generator: torch.Generator | None) -> StepLoss:
        """(F.cross_entropy(model(x, generator), targets, reduction="none") * mask).mean(), its pass kept."""
        hidden, head_input, log_probs = _kept_pass(model, x, generator)
        per_row, total_weight = _nll_loss_forward(log_probs, targets, None, NONE, IGNORE_INDEX)
        return cls((per_row * mask).mean(), (_Term(hidden, head_input, log_probs, targets, None, total_weight, mask),))

    def times(self, factor: float) -> StepLoss:
        return StepLoss(self.value * factor, tuple(_with_factor(t, factor) for t in self._terms))

    def __add__(self, other: StepLoss) -> StepLoss:
        return StepLoss(self.value + other.value, self._terms + other._terms)

    def gradients(self, model: EmotionMLP) -> tuple[torch.Tensor, ...]:
        """d value / d parameter, in `model.parameters()` order; run it without grad mode."""
        upstream = torch.ones_like(self.value)
        total: list[torch.Tensor] | None = None
        for term in self._terms:
            grads = _mlp_backward(model, term, term.logits_grad(upstream))
            total = grads if total is None else [a + b for a, b in zip(total, grads)]
        if total is None:
            raise ValueError("a loss without a forward pass has no gradient")
        return tuple(total)


def _with_factor(term: _Term, factor: float) -> _Term:
    return _Term(term.hidden, term.head_input, term.log_probs, term.targets, term.class_weights, term.total_weight,
                 term.mask, (*term.factors, factor))


def _mlp_backward(model: EmotionMLP, term: _Term, grad: torch.Tensor) -> list[torch.Tensor]:
    """Gradients of every parameter from the gradient at the logits, as autograd's formulas compute them."""
    head = model.head
    grads = [_weight_grad(grad, term.head_input), _bias_grad(grad)]
    grad = _input_grad(grad, term.head_input, head.weight)
    layers = list(zip(cast(list[torch.nn.Linear], list(model.hidden)), term.hidden))
    for index in range(len(layers) - 1, -1, -1):
        layer, kept = layers[index]
        if kept.dropout_mask is not None:
            grad = grad / (1.0 - model.dropout)   # DivBackward0
            grad = grad * kept.dropout_mask       # MulBackward0
        grad = _relu_backward(grad, kept.relu, 0)
        grads[:0] = [_weight_grad(grad, kept.input), _bias_grad(grad)]
        if index > 0:
            grad = _input_grad(grad, kept.input, layer.weight)
    return grads


def _weight_grad(grad: torch.Tensor, layer_input: torch.Tensor) -> torch.Tensor:
    """mm_mat2_backward's branch for a column-major mat2 (weight.t()), transposed back: grad.t().mm(input)."""
    return grad.t().mm(layer_input)


def _bias_grad(grad: torch.Tensor) -> torch.Tensor:
    """addmm's broadcast self: sum_to(grad, bias shape)."""
    return grad.sum([0], keepdim=True).view(grad.shape[1])


def _input_grad(grad: torch.Tensor, layer_input: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """mm_mat1_backward with mat2 = weight.t()."""
    mat2 = weight.t()
    if layer_input.stride(0) == 1 and layer_input.stride(1) == layer_input.shape[0]:  # a column-major input
        return mat2.mm(grad.t()).t()
    return grad.mm(mat2.t())
