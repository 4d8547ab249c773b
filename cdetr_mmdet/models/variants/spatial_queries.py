"""The spatial query ``p_q`` a decoder layer's cross-attention receives.

Table 3 of the paper. Below, ``f`` is a layer's input decoder embedding (the
previous layer's output; zeros in layer 1), ``c_q`` its content query after
self-attention and ``p_s`` the sine embedding of the reference point. Every
module is called as ``module(first, p_s, f, c_q) -> p_q``, (bs, q, d) each; ``c_q`` is passed
only to a module whose ``from_self_attn`` is True (the decoder then splits
the layer around its self-attention).
In layer 1 T is 1, as in the official code. A learned T is the child
``query_scale`` (its checkpoint name); the decoder registers it as its own.
"""
from typing import Optional, Union

import torch
from mmdet.models.layers.transformer import MLP
from mmdet.registry import MODELS
from torch import Tensor, nn


@MODELS.register_module()
class CdetrConditionalSpatialQuery(nn.Module):
    """``p_q = T(f) p_s`` (the paper's CSQ), or ``T(c_q) p_s`` (CSQ-I).

    Args:
        embed_dims (int): d.
        num_heads (int): Attention heads M (the block form needs it).
            Defaults to 8.
        transform (str | dict, optional): T's ``MODELS`` type name or
            config (:mod:`.transforms`); None for the identity
            (``p_q = p_s``, CSQ-P). Defaults to 'CdetrDiagonalTransform'.
        from_self_attn (bool): Predict T from ``c_q`` instead of ``f``
            (CSQ-I). Defaults to False.
    """

    def __init__(self, embed_dims: int, num_heads: int = 8,
                 transform: Union[str, dict, None] = 'CdetrDiagonalTransform',
                 from_self_attn: bool = False) -> None:
        super().__init__()
        self.from_self_attn = from_self_attn
        if transform is not None:
            if isinstance(transform, str):
                transform = dict(type=transform)
            self.query_scale = MODELS.build(
                transform,
                default_args=dict(embed_dims=embed_dims, num_heads=num_heads))

    def apply_transform(self, embed: Tensor, source: Tensor) -> Tensor:
        """``T(source) embed``, (bs, q, d) each; the identity without T."""
        if not hasattr(self, 'query_scale'):
            return embed
        return self.query_scale.transform(embed, source)

    def forward(self, first: bool, embed: Tensor, f: Tensor,
                c_q: Optional[Tensor] = None) -> Tensor:
        """See the module docstring; ``embed`` is ``p_s``."""
        if first:  # T = 1 in layer 1
            return embed
        return self.apply_transform(embed, c_q if self.from_self_attn else f)


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
