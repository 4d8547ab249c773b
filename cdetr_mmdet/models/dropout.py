"""Dropout with cheap masks, the same distribution as :func:`torch.nn.functional.dropout`.

On CPU, PyTorch draws dropout masks with ``bernoulli_`` one float at a time,
which took ~10% of a Conditional DETR training step (60 masks over attention
weights, residual branches and FFN hidden layers). Here every element gets its
own 32 uniformly random bits, drawn 64 at a time with the full-range integer
``random_`` (one generator call per two elements, vectorised), and is kept iff
those bits fall at or above ``round(p * 2**32)``: an independent Bernoulli
draw per element with drop rate ``p`` to within ``2**-33`` (the float
``torch.rand(...) < p`` test is only exact to ``2**-25``). Kept elements are
scaled by ``1 / (1 - p)`` as in PyTorch, so the expectation is unchanged.
"""
import torch
from torch import Tensor, nn


def keep_scale_mask(shape: torch.Size, p: float, dtype: torch.dtype,
                    device: torch.device) -> Tensor:
    """A dropout mask: ``1 / (1 - p)`` where kept, 0 where dropped.

    Args:
        shape (torch.Size): Mask shape.
        p (float): Drop probability, in ``[0, 1)``.
        dtype (torch.dtype): Mask dtype (that of the tensor it scales).
        device (torch.device): Mask device.

    Returns:
        Tensor: ``shape``, each element independently 0 with probability
        ``p`` (to within ``2**-33``), else ``1 / (1 - p)``.
    """
    numel = shape.numel()
    # Full-range int64 draws viewed as pairs of int32: 32 random bits each.
    words = torch.empty((numel + 1) // 2, dtype=torch.int64,
                        device=device).random_(-2**63, None)
    bits = words.view(torch.int32)[:numel].view(shape)
    threshold = -2**31 + round(p * 2**32)
    return torch.where(bits >= threshold, 1. / (1. - p), 0.).to(dtype)


def dropout(x: Tensor, p: float, training: bool = True) -> Tensor:
    """:func:`torch.nn.functional.dropout` with :func:`keep_scale_mask` masks.

    Args:
        x (Tensor): Input of any shape.
        p (float): Drop probability, in ``[0, 1]``.
        training (bool): Apply dropout (else return ``x`` itself).
            Defaults to True.

    Returns:
        Tensor: Like ``x``; ``x`` itself when not training or ``p == 0``.
    """
    if not training or p == 0.:
        return x
    if p >= 1.:
        return x * 0.
    return x * keep_scale_mask(x.shape, p, x.dtype, x.device)


class CheapDropout(nn.Dropout):
    """:class:`torch.nn.Dropout` drawing its masks with :func:`keep_scale_mask`.

    A drop-in replacement (no parameters or buffers, same ``p``), equal in
    distribution; the identity in eval mode as before.
    """

    def forward(self, input: Tensor) -> Tensor:  # noqa: A002 (nn.Dropout's)
        return dropout(input, self.p, self.training)
