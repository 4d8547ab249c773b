"""The two attentions of a Conditional DETR decoder layer.

Both keep content and position projections separate, as in the official
implementation (Atten4Vis/ConditionalDETR ``models/transformer.py``), and run
through :func:`attention`, scaled dot-product attention with dropout on the
weights (its device dispatch: :mod:`cdetr_mmdet.speedups.attention`).
"""
from typing import Optional

import torch
from torch import Tensor, nn

from ..speedups.attention import attention


def _check_heads(embed_dims: int, num_heads: int) -> None:
    """Raise if the width does not split evenly over the heads."""
    if embed_dims % num_heads:
        raise ValueError(f'embed_dims ({embed_dims}) must be divisible by '
                         f'num_heads ({num_heads})')


def _split_heads(x: Tensor, num_heads: int) -> Tensor:
    """(bs, n, num_heads * c) -> (bs, num_heads, n, c)."""
    bs, n, dims = x.shape
    return x.view(bs, n, num_heads, dims // num_heads).transpose(1, 2)


def _merge_heads(x: Tensor) -> Tensor:
    """(bs, num_heads, n, c) -> (bs, n, num_heads * c)."""
    bs, num_heads, n, c = x.shape
    return x.transpose(1, 2).reshape(bs, n, num_heads * c)


def padding_to_attn_mask(key_padding_mask: Optional[Tensor]) -> Optional[Tensor]:
    """Turn a key padding mask into the boolean mask SDPA takes.

    Args:
        key_padding_mask (Tensor, optional): (bs, num_keys), True at padded
            keys (DETR's convention).

    Returns:
        Tensor | None: (bs, 1, 1, num_keys), True where a key may be attended
        (SDPA's convention), or None when nothing is padded.
    """
    if key_padding_mask is None:
        return None
    return ~key_padding_mask[:, None, None, :]


class ConditionalSelfAttention(nn.Module):
    """Decoder self-attention with separate content and position projections.

    ``q = Wq_c query + Wq_p query_pos``, ``k = Wk_c query + Wk_p query_pos``,
    ``v = Wv query`` (official ``sa_*_proj``).

    Args:
        embed_dims (int): Model width d. Defaults to 256.
        num_heads (int): Attention heads. Defaults to 8.
        attn_drop (float): Dropout on the attention weights. Defaults to 0.1.
    """

    def __init__(self, embed_dims: int = 256, num_heads: int = 8,
                 attn_drop: float = 0.1) -> None:
        super().__init__()
        _check_heads(embed_dims, num_heads)
        self.num_heads = num_heads
        self.attn_drop = attn_drop
        self.qcontent_proj = nn.Linear(embed_dims, embed_dims)
        self.qpos_proj = nn.Linear(embed_dims, embed_dims)
        self.kcontent_proj = nn.Linear(embed_dims, embed_dims)
        self.kpos_proj = nn.Linear(embed_dims, embed_dims)
        self.v_proj = nn.Linear(embed_dims, embed_dims)
        self.out_proj = nn.Linear(embed_dims, embed_dims)
        # The official MultiheadAttention zeroes its output bias.
        nn.init.constant_(self.out_proj.bias, 0.)

    def forward(self, query: Tensor, query_pos: Tensor) -> Tensor:
        """Attend among the object queries.

        Args:
            query (Tensor): Content queries, (bs, num_queries, d).
            query_pos (Tensor): Object queries (positional part),
                (bs, num_queries, d).

        Returns:
            Tensor: The attention output before the residual,
            (bs, num_queries, d).
        """
        q = self.qcontent_proj(query) + self.qpos_proj(query_pos)
        k = self.kcontent_proj(query) + self.kpos_proj(query_pos)
        v = self.v_proj(query)
        out = attention(  # (bs, heads, nq, d / heads)
            _split_heads(q, self.num_heads), _split_heads(k, self.num_heads),
            _split_heads(v, self.num_heads),
            dropout_p=self.attn_drop if self.training else 0.)
        return self.out_proj(_merge_heads(out))


class ConditionalCrossAttention(nn.Module):
    """Conditional cross-attention: content and spatial parts concatenated per head.

    Each head's query is ``[c_q, p_q]`` and key ``[c_k, p_k]`` (width
    ``2 d / heads``), so the attention weight is ``c_q.c_k + p_q.p_k``, scaled
    by ``(2 d / heads) ** -0.5``; the value keeps width ``d / heads``.
    ``p_q = W (ref_sine_embed * T)`` is the conditional spatial query. Only the
    first decoder layer also adds the projected object query to the content
    query and the key position to the content key; only that layer owns
    ``qpos_proj``, so no parameter sits unused under DDP.

    Args:
        embed_dims (int): Model width d. Defaults to 256.
        num_heads (int): Attention heads. Defaults to 8.
        attn_drop (float): Dropout on the attention weights. Defaults to 0.1.
        is_first (bool): Whether this is the first decoder layer.
            Defaults to False.
    """

    def __init__(self, embed_dims: int = 256, num_heads: int = 8,
                 attn_drop: float = 0.1, is_first: bool = False) -> None:
        super().__init__()
        _check_heads(embed_dims, num_heads)
        self.num_heads = num_heads
        self.attn_drop = attn_drop
        self.is_first = is_first
        self.qcontent_proj = nn.Linear(embed_dims, embed_dims)
        if is_first:
            self.qpos_proj = nn.Linear(embed_dims, embed_dims)
        self.kcontent_proj = nn.Linear(embed_dims, embed_dims)
        self.kpos_proj = nn.Linear(embed_dims, embed_dims)
        self.v_proj = nn.Linear(embed_dims, embed_dims)
        self.qpos_sine_proj = nn.Linear(embed_dims, embed_dims)
        self.out_proj = nn.Linear(embed_dims, embed_dims)
        nn.init.constant_(self.out_proj.bias, 0.)

    def forward(self, query: Tensor, memory: Tensor, query_pos: Tensor,
                memory_pos: Tensor, ref_sine_embed: Tensor,
                memory_mask: Optional[Tensor] = None) -> Tensor:
        """Attend from the object queries to the encoder memory.

        Args:
            query (Tensor): Content queries, (bs, num_queries, d).
            memory (Tensor): Encoder output, (bs, num_keys, d).
            query_pos (Tensor): Object queries, (bs, num_queries, d); read
                by the first layer only.
            memory_pos (Tensor): Sine positional encoding of the memory,
                (bs, num_keys, d).
            ref_sine_embed (Tensor): Sine embedding of the reference points
                times T, (bs, num_queries, d).
            memory_mask (Tensor, optional): (bs, num_keys), True at padding.
                Defaults to None.

        Returns:
            Tensor: The attention output before the residual,
            (bs, num_queries, d).
        """
        q = self.qcontent_proj(query)
        k = self.kcontent_proj(memory)
        k_pos = self.kpos_proj(memory_pos)
        if self.is_first:
            q = q + self.qpos_proj(query_pos)
            k = k + k_pos
        q_pos = self.qpos_sine_proj(ref_sine_embed)
        # Per head: (bs, heads, n, d / heads) twice -> (bs, heads, n, 2 d / heads)
        q = torch.cat([_split_heads(q, self.num_heads),
                       _split_heads(q_pos, self.num_heads)], dim=-1)
        k = torch.cat([_split_heads(k, self.num_heads),
                       _split_heads(k_pos, self.num_heads)], dim=-1)
        v = _split_heads(self.v_proj(memory), self.num_heads)
        out = attention(  # (bs, heads, nq, d / heads)
            q, k, v, attn_mask=padding_to_attn_mask(memory_mask),
            dropout_p=self.attn_drop if self.training else 0.)
        return self.out_proj(_merge_heads(out))
