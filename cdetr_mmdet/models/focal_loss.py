"""Sigmoid focal loss in plain PyTorch (registered in ``MODELS``).

mmdet's ``FocalLoss`` switches to mmcv's compiled kernel on CUDA; this one is
the same formula everywhere, so CPU and CUDA runs agree.
"""
from typing import Optional

import torch.nn.functional as F
from mmdet.registry import MODELS
from torch import Tensor, nn


def sigmoid_focal_loss(logits: Tensor, targets: Tensor, alpha: float = 0.25,
                       gamma: float = 2.0) -> Tensor:
    """Element-wise sigmoid focal loss (Lin et al.; official DETR variant).

    Args:
        logits (Tensor): Class logits, any shape (..., num_classes).
        targets (Tensor): One-hot targets of the same shape, float.
        alpha (float): Weight of positives. Defaults to 0.25.
        gamma (float): Focusing exponent. Defaults to 2.0.

    Returns:
        Tensor: The loss per element, same shape as ``logits``.
    """
    prob = logits.sigmoid()
    ce = F.binary_cross_entropy_with_logits(logits, targets,
                                            reduction='none')
    p_t = prob * targets + (1 - prob) * (1 - targets)
    alpha_t = alpha * targets + (1 - alpha) * (1 - targets)
    return alpha_t * ce * (1 - p_t)**gamma


@MODELS.register_module()
class CdetrFocalLoss(nn.Module):
    """Sigmoid focal loss without a background class.

    Args:
        alpha (float): Weight of positives. Defaults to 0.25.
        gamma (float): Focusing exponent. Defaults to 2.0.
        loss_weight (float): Multiplier of the loss. Defaults to 2.0, the
            Conditional DETR recipe.
    """

    def __init__(self, alpha: float = 0.25, gamma: float = 2.0,
                 loss_weight: float = 2.0) -> None:
        super().__init__()
        self.alpha = alpha
        self.gamma = gamma
        self.loss_weight = loss_weight

    def forward(self, logits: Tensor, targets: Tensor,
                avg_factor: Optional[float] = None,
                reduction: str = 'sum') -> Tensor:
        """Compute the weighted loss.

        Args:
            logits (Tensor): (..., num_classes) logits.
            targets (Tensor): One-hot float targets, same shape.
            avg_factor (float, optional): Divisor of the sum (the number of
                boxes). Only used with ``reduction='sum'``.
            reduction (str): ``'none'`` (element-wise) or ``'sum'``.
                Defaults to ``'sum'``.

        Returns:
            Tensor: The loss, element-wise or scalar.
        """
        loss = self.loss_weight * sigmoid_focal_loss(logits, targets,
                                                     self.alpha, self.gamma)
        if reduction == 'none':
            return loss
        if reduction != 'sum':
            raise ValueError(f"reduction must be 'none' or 'sum', "
                             f'got {reduction!r}')
        loss = loss.sum()
        return loss if avg_factor is None else loss / avg_factor
