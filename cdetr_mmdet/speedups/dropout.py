"""Dropout with cheap masks, the same distribution as :func:`torch.nn.functional.dropout`.

On CPU, PyTorch draws dropout masks with ``bernoulli_`` one float at a time,
which took ~10% of a Conditional DETR training step (60 masks over attention
weights, residual branches and FFN hidden layers). Here every element gets its
own 32 uniformly random bits and is dropped iff those bits fall below
``round(p * 2**32)``: an independent Bernoulli draw per element with drop rate
``p`` to within ``2**-33`` (the float ``torch.rand(...) < p`` test is only
exact to ``2**-25``). Kept elements are scaled by ``1 / (1 - p)`` as in
PyTorch, so the expectation is unchanged.

The bits: on CPU from a fresh SFC64 generator (numpy's, 64 bits per step,
~2x the throughput of PyTorch's serial Mersenne twister here) seeded with 64
bits drawn from PyTorch's default generator, so ``torch.manual_seed`` and a
restored ``torch`` random state reproduce the masks; on other devices from
PyTorch's full-range int64 ``random_`` (two elements per draw).
:class:`CheapDropout` uses them on the CPU only; on CUDA it is
:func:`torch.nn.functional.dropout` (see :mod:`cdetr_mmdet.speedups`).
"""
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn


# numpy calls are not traceable: torch.compile runs this eagerly (a graph
# break), so compiled and eager models draw the same masks.
@torch.compiler.disable
def random_bits(shape: torch.Size, device: torch.device) -> Tensor:
    """Uniformly random int32s, 32 independent random bits each.

    Args:
        shape (torch.Size): Output shape.
        device (torch.device): Output device.

    Returns:
        Tensor: int32, ``shape``.
    """
    numel = shape.numel()
    num_words = (numel + 1) // 2  # 64-bit words, two elements each
    if torch.device(device).type == 'cpu':
        # 64 bits from torch's generator seed the stream (reproducible).
        seed = int(torch.empty((), dtype=torch.int64).random_(-2**63, None))
        words = torch.from_numpy(
            np.random.SFC64(seed % 2**64).random_raw(num_words).view(np.int64))
    else:
        words = torch.empty(num_words, dtype=torch.int64,
                            device=device).random_(-2**63, None)
    return words.view(torch.int32)[:numel].view(shape)


def _threshold(p: float) -> int:
    """The int32 below which an element is dropped (rate ``p`` to 2**-33)."""
    return -2**31 + round(p * 2**32)


def drop_mask(shape: torch.Size, p: float, device: torch.device) -> Tensor:
    """A boolean dropout mask: True where dropped.

    Args:
        shape (torch.Size): Mask shape.
        p (float): Drop probability, in ``[0, 1)``.
        device (torch.device): Mask device.

    Returns:
        Tensor: bool, ``shape``, each element independently True with
        probability ``p`` (to within ``2**-33``).
    """
    return random_bits(shape, device) < _threshold(p)


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
    bits = random_bits(shape, device)
    return torch.where(bits >= _threshold(p), 1. / (1. - p), 0.).to(dtype)


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
    """:class:`torch.nn.Dropout` drawing its CPU masks with :func:`keep_scale_mask`.

    A drop-in replacement (no parameters or buffers, same ``p``), equal in
    distribution; the identity in eval mode as before. On other devices
    (CUDA) it is :func:`torch.nn.functional.dropout` itself, whose kernels
    draw the mask on the device.
    """

    def forward(self, input: Tensor) -> Tensor:  # noqa: A002 (nn's name)
        if input.device.type != 'cpu':
            return F.dropout(input, self.p, self.training)
        return dropout(input, self.p, self.training)
