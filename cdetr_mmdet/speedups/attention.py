"""Scaled dot-product attention with dropout: which path each device takes.

- Without dropout (eval, or ``p = 0``), every device: PyTorch's fused
  :func:`torch.nn.functional.scaled_dot_product_attention`.
- With dropout on CUDA (and any device other than the CPU): the same fused
  call with ``dropout_p``; its kernels draw the mask on the device. No mask is
  drawn on the host.
- With dropout on the CPU: PyTorch's CPU kernels all fall back to an unfused
  path drawing the mask with ``bernoulli_``; here an explicit softmax draws it
  with :func:`~cdetr_mmdet.speedups.dropout.drop_mask` (same distribution)
  and folds the key padding and the softmax scale into one ``baddbmm``.

:func:`uses_explicit_path` is the one decision, testable on the CPU.
"""
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from .dropout import drop_mask


def uses_explicit_path(device: torch.device, dropout_p: float) -> bool:
    """Whether attention on ``device`` runs the explicit CPU path.

    Args:
        device (torch.device | str): The tensors' device.
        dropout_p (float): Drop probability of the attention weights.

    Returns:
        bool: True for the CPU with dropout; False (fused SDPA) otherwise.
    """
    return dropout_p > 0. and torch.device(device).type == 'cpu'


def attention(q: Tensor, k: Tensor, v: Tensor,
              attn_mask: Optional[Tensor] = None,
              dropout_p: float = 0.) -> Tensor:
    """Scaled dot-product attention, dropout on the attention weights.

    :func:`F.scaled_dot_product_attention` itself except on the CPU with
    dropout (see the module docstring and :func:`uses_explicit_path`), where
    the explicit softmax draws the mask with :func:`drop_mask` (same
    distribution: each weight independently zeroed with probability
    ``dropout_p``, the others scaled by ``1 / (1 - dropout_p)``).

    Args:
        q (Tensor): Queries, (bs, heads, nq, c).
        k (Tensor): Keys, (bs, heads, nk, c).
        v (Tensor): Values, (bs, heads, nk, cv); ``cv`` may differ from c.
        attn_mask (Tensor, optional): Boolean, broadcastable to
            (bs, heads, nq, nk), True where a key may be attended.
        dropout_p (float): Drop probability of the attention weights.

    Returns:
        Tensor: (bs, heads, nq, cv).
    """
    if not uses_explicit_path(q.device, dropout_p):
        if dropout_p == 0.:  # the call of before, argument for argument
            return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask,
                                              dropout_p=dropout_p)
    bs, heads, nq, c = q.shape
    nk, cv = k.shape[2], v.shape[3]
    q, k = q.reshape(bs * heads, nq, c), k.reshape(bs * heads, nk, c)
    if attn_mask is None:
        scores = torch.bmm(q, k.transpose(1, 2)).mul_(c ** -0.5)
    else:
        bias = torch.zeros(attn_mask.shape, dtype=q.dtype, device=q.device)
        bias = bias.masked_fill_(~attn_mask, float('-inf')).expand(
            bs, heads, nq, nk).reshape(bs * heads, nq, nk)
        scores = torch.baddbmm(bias, q, k.transpose(1, 2), alpha=c ** -0.5)
    weights = scores.softmax(-1)  # (bs * heads, nq, nk)
    # Zero the dropped weights (a bool mask is kept for backward, not a
    # float one) and scale the kept ones by 1 / (1 - p) on the smaller output.
    weights = weights.masked_fill(
        drop_mask(weights.shape, dropout_p, weights.device), 0.)
    out = torch.bmm(weights.to(v.dtype), v.reshape(bs * heads, nk, cv))
    return out.mul_(1. / (1. - dropout_p)).view(bs, heads, nq, cv)
