"""Every private name of torch that gsearch uses, each behind one function (Optuna's are in
gsearch/search/_compat.py).

Private names change without notice; keeping them here means one module to read when torch
moves, and tests/test_compat.py has one test per function that fails when torch changes the
name or its behaviour. setup.cfg bounds torch to the major version these were checked against.
"""

from __future__ import annotations

import torch


def fused_adamw_step(params: list[torch.Tensor], grads: list[torch.Tensor],
                     exp_avgs: list[torch.Tensor], exp_avg_sqs: list[torch.Tensor],
                     step: torch.Tensor, *, lr: float, beta1: float, beta2: float,
                     weight_decay: float, eps: float) -> None:
    """One AdamW step over tensors that share a step count: torch's fused kernel (the one
    `torch.optim.AdamW(fused=True)` runs), called directly so that members of a population
    can each take their own lr and weight decay without an optimizer object per member.
    `step` must already count this step."""
    torch._fused_adamw_(params, grads, exp_avgs, exp_avg_sqs, [], [step] * len(params), lr=lr,
                        beta1=beta1, beta2=beta2, weight_decay=weight_decay, eps=eps,
                        amsgrad=False, maximize=False)


def zero_(tensors: list[torch.Tensor]) -> None:
    """Zero many tensors in one foreach call (gradients kept allocated between steps)."""
    torch._foreach_zero_(tensors)
