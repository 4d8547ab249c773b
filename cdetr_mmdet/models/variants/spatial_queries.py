"""Ablations of the spatial query ``p_q`` a cross-attention receives (Table 3).

The full model's ``p_q = T(f) p_s`` (and CSQ-P, CSQ-I,
its options) is
:class:`~cdetr_mmdet.models.decoder.CdetrConditionalSpatialQuery`. Below,
``f`` is a layer's input decoder embedding (the previous layer's output;
zeros in layer 1), ``c_q`` its content query after self-attention and
``p_s`` the sine embedding of the reference point. Every module is called as
``module(first, p_s, f, c_q) -> p_q``, (bs, q, d) each; ``c_q`` is passed
only to a module whose ``from_self_attn`` is True (the decoder then splits
the layer around its self-attention). In layer 1 T is 1, as in the official
code. A learned T is the child ``query_scale`` (its checkpoint name); the
decoder registers it as its own.
"""
from typing import Optional

import torch
from mmdet.models.layers.transformer import MLP
from mmdet.registry import MODELS
from torch import Tensor, nn


@MODELS.register_module()
class CdetrContentSpatialQuery(nn.Module):
    """CSQ-C: the decoder content embedding alone, ``p_q = f``.

    Args:
        embed_dims (int): d (unused; every variant takes it).
        num_heads (int): M (unused). Defaults to 8.
    """

    from_self_attn = False

    def __init__(self, embed_dims: int, num_heads: int = 8) -> None:
        super().__init__()

    def forward(self, first: bool, embed: Tensor, f: Tensor,
                c_q: Optional[Tensor] = None) -> Tensor:
        """``f``; see the module docstring."""
        return f


@MODELS.register_module()
class CdetrTransformSpatialQuery(nn.Module):
    """CSQ-T: the transformation alone, ``p_q = lambda_q = MLP(f)``.

    Args:
        embed_dims (int): d.
        num_heads (int): M (unused). Defaults to 8.
    """

    from_self_attn = False

    def __init__(self, embed_dims: int, num_heads: int = 8) -> None:
        super().__init__()
        self.query_scale = MLP(embed_dims, embed_dims, embed_dims, 2)

    def forward(self, first: bool, embed: Tensor, f: Tensor,
                c_q: Optional[Tensor] = None) -> Tensor:
        """1 in layer 1, ``MLP(f)`` later; see the module docstring."""
        return torch.ones_like(embed) if first else self.query_scale(f)
