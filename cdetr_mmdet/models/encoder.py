"""The DETR transformer encoder used by Conditional DETR (registered in ``MODELS``)."""
from typing import Optional

import torch.nn.functional as F
from mmdet.registry import MODELS
from mmengine.model import BaseModule
from torch import Tensor, nn

from ..speedups.attention import attention, uses_explicit_path
from ..speedups.dropout import CheapDropout
from .attention import padding_to_attn_mask


def _self_attention(mha: nn.MultiheadAttention, qk: Tensor, value: Tensor,
                    key_padding_mask: Optional[Tensor]) -> Tensor:
    """``mha(qk, qk, value)`` through :func:`attention` (its CPU dropout path).

    The same projections as :class:`torch.nn.MultiheadAttention` (packed
    ``in_proj_weight`` rows q, k, v; ``out_proj``), batch first.

    Args:
        mha (nn.MultiheadAttention): The layer's attention (its weights and
            ``dropout``).
        qk (Tensor): Queries and keys (features + positions),
            (bs, num_keys, d).
        value (Tensor): Values (features), (bs, num_keys, d).
        key_padding_mask (Tensor, optional): (bs, num_keys), True at padding.

    Returns:
        Tensor: (bs, num_keys, d).
    """
    bs, n, d = value.shape
    heads = mha.num_heads
    w, b = mha.in_proj_weight, mha.in_proj_bias
    q, k = F.linear(qk, w[:2 * d], b[:2 * d]).chunk(2, dim=-1)
    v = F.linear(value, w[2 * d:], b[2 * d:])
    # (bs, n, d) -> (bs, heads, n, d / heads)
    q, k, v = (x.view(bs, n, heads, d // heads).transpose(1, 2)
               for x in (q, k, v))
    out = attention(q, k, v, padding_to_attn_mask(key_padding_mask),
                    mha.dropout if mha.training else 0.)
    return mha.out_proj(out.transpose(1, 2).reshape(bs, n, d))


class EncoderLayer(nn.Module):
    """Post-norm DETR encoder layer; positions are added to q and k only.

    Parameter names equal the official ones (``self_attn.in_proj_weight``,
    ``linear1``, ``norm1``, ...). With ``need_weights=False``,
    :class:`torch.nn.MultiheadAttention` runs on
    ``scaled_dot_product_attention`` (with ``dropout_p`` in training); only
    on the CPU in training with dropout do the same weights run through
    :func:`_self_attention` instead (cheap dropout masks; PyTorch's CPU
    kernels are unfused there anyway; :mod:`cdetr_mmdet.speedups.attention`).
    Dropout masks come from :class:`CheapDropout`, equal in distribution to
    ``nn.Dropout``'s.

    Args:
        embed_dims (int): Model width d. Defaults to 256.
        num_heads (int): Attention heads. Defaults to 8.
        feedforward_channels (int): FFN hidden width. Defaults to 2048.
        dropout (float): Dropout on attention weights, residuals and the FFN
            hidden layer. Defaults to 0.1.
        attn_dropout (float, optional): Dropout on the attention weights
            alone, if it should differ from ``dropout`` (Hugging Face's
            ``attention_dropout``; the official code has one rate). Defaults
            to None: ``dropout``.
    """

    def __init__(self, embed_dims: int = 256, num_heads: int = 8,
                 feedforward_channels: int = 2048,
                 dropout: float = 0.1,
                 attn_dropout: Optional[float] = None) -> None:
        super().__init__()
        self.embed_dims = embed_dims
        self.self_attn = nn.MultiheadAttention(
            embed_dims, num_heads,
            dropout=dropout if attn_dropout is None else attn_dropout,
            batch_first=True)
        self.linear1 = nn.Linear(embed_dims, feedforward_channels)
        self.linear2 = nn.Linear(feedforward_channels, embed_dims)
        self.norm1 = nn.LayerNorm(embed_dims)
        self.norm2 = nn.LayerNorm(embed_dims)
        self.dropout = CheapDropout(dropout)
        self.dropout1 = CheapDropout(dropout)
        self.dropout2 = CheapDropout(dropout)

    def forward(self, query: Tensor, query_pos: Tensor,
                key_padding_mask: Optional[Tensor] = None) -> Tensor:
        """Args:
            query (Tensor): Flattened features, (bs, num_keys, d).
            query_pos (Tensor): Their sine positional encoding,
                (bs, num_keys, d).
            key_padding_mask (Tensor, optional): (bs, num_keys), True at
                padding.

        Returns:
            Tensor: (bs, num_keys, d).
        """
        q = k = query + query_pos
        if self.training and uses_explicit_path(query.device,
                                                self.self_attn.dropout):
            attn = _self_attention(self.self_attn, q, query, key_padding_mask)
        else:
            attn = self.self_attn(q, k, query,
                                  key_padding_mask=key_padding_mask,
                                  need_weights=False)[0]
        query = self.norm1(query + self.dropout1(attn))
        ffn = self.linear2(self.dropout(F.relu(self.linear1(query))))
        return self.norm2(query + self.dropout2(ffn))


@MODELS.register_module()
class CdetrTransformerEncoder(BaseModule):
    """A stack of :class:`EncoderLayer`.

    Args:
        num_layers (int): Number of layers. Defaults to 6.
        layer_cfg (dict, optional): Keyword arguments of
            :class:`EncoderLayer`. Defaults to None (its defaults).
        init_cfg (dict, optional): mmengine init config. Defaults to None.
    """

    def __init__(self, num_layers: int = 6, layer_cfg: Optional[dict] = None,
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        self.layers = nn.ModuleList(
            EncoderLayer(**(layer_cfg or {})) for _ in range(num_layers))
        self.embed_dims = self.layers[0].embed_dims

    def forward(self, query: Tensor, query_pos: Tensor,
                key_padding_mask: Optional[Tensor] = None) -> Tensor:
        """Args:
            query (Tensor): Flattened features, (bs, num_keys, d).
            query_pos (Tensor): Positional encoding, (bs, num_keys, d).
            key_padding_mask (Tensor, optional): (bs, num_keys), True at
                padding.

        Returns:
            Tensor: The memory, (bs, num_keys, d).
        """
        for layer in self.layers:
            query = layer(query, query_pos, key_padding_mask)
        return query
