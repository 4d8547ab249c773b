"""The forms of T in ``p_q = T p_s`` (paper Figure 5) beside the diagonal one.

The paper's diagonal T is
:class:`~cdetr_mmdet.models.decoder.CdetrDiagonalTransform`. Each is
``query_scale`` (Linear, ReLU, Linear: mmdet's ``MLP``, the official name)
predicting T from a decoder embedding; the output width sets the form.
``module(source)`` is the raw prediction, ``transform(embed, source)`` the
transformed embedding. The identity form is no module (no T learned).
"""
from mmdet.models.layers.transformer import MLP
from mmdet.registry import MODELS
from torch import Tensor

from ..decoder import CdetrDiagonalTransform


@MODELS.register_module()
class CdetrScalarTransform(CdetrDiagonalTransform):
    """``T = lambda_q I``: one number per query (broadcast over d)."""

    def __init__(self, embed_dims: int, num_heads: int = 8) -> None:
        super().__init__(embed_dims, num_heads, out_dims=1)


@MODELS.register_module()
class CdetrBlockTransform(MLP):
    """Block-diagonal T: one learned d/M x d/M matrix per attention head.

    Args:
        embed_dims (int): d.
        num_heads (int): Attention heads M. Defaults to 8.
    """

    def __init__(self, embed_dims: int, num_heads: int = 8) -> None:
        head_dims = embed_dims // num_heads
        super().__init__(embed_dims, embed_dims, num_heads * head_dims**2, 2)
        self.num_heads = num_heads

    def transform(self, embed: Tensor, source: Tensor) -> Tensor:
        """Per head ``(d/M x d/M) @ p_s[head]``; shapes as the diagonal's."""
        bs, nq, d = embed.shape
        dh = d // self.num_heads
        t = self(source).view(bs, nq, self.num_heads, dh, dh)
        return (t @ embed.view(bs, nq, self.num_heads, dh, 1)).view(bs, nq, d)


@MODELS.register_module()
class CdetrFullTransform(MLP):
    """An unconstrained d x d matrix per query.

    Args:
        embed_dims (int): d.
        num_heads (int): Attention heads M (unused; every form takes it).
    """

    def __init__(self, embed_dims: int, num_heads: int = 8) -> None:
        super().__init__(embed_dims, embed_dims, embed_dims * embed_dims, 2)

    def transform(self, embed: Tensor, source: Tensor) -> Tensor:
        """``T @ p_s`` per query; shapes as the diagonal's."""
        bs, nq, d = embed.shape
        t = self(source).view(bs, nq, d, d)
        return (t @ embed.unsqueeze(-1)).squeeze(-1)
