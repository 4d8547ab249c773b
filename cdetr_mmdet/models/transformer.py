"""The Conditional DETR transformer: the one forward every caller runs.

The detector (:class:`CdetrConditionalDETR`), the ONNX export model, the
attention analysis (through the detector) and the benchmarks call this module;
none of them repeats a step of it. It is plain PyTorch (no registry, no data
samples): features and a padding mask in, decoder states and reference points
out, as DETR's ``Transformer.forward``. The DETR encoder it runs
(:class:`CdetrTransformerEncoder`, registered in ``MODELS``) is defined here
too, after it.
"""
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from mmdet.registry import MODELS
from mmengine.model import BaseModule
from torch import Tensor, nn

from ..speedups.attention import attention, uses_explicit_path
from ..speedups.dropout import CheapDropout
from .attention import padding_to_attn_mask


def feature_padding_mask(pad_mask: Tensor, size: Tuple[int, int]) -> Tensor:
    """The input-resolution padding mask down-sampled to the feature map.

    Nearest-neighbour, as DETR's and mmdet's ``pre_transformer``.

    Args:
        pad_mask (Tensor): (bs, H_pad, W_pad), True (or 1) at padding.
        size (tuple[int, int]): The feature map's (h, w).

    Returns:
        Tensor: (bs, h, w) bool, True at padding.
    """
    # interpolate takes floats; nearest sampling of 0/1 stays 0/1.
    return F.interpolate(pad_mask[:, None].float(), size=size)[:, 0] > 0.5


class ConditionalDETRTransformer(nn.Module):
    """Positional encoding, encoder, object queries and conditional decoder.

    The stages, in the order :meth:`forward` runs them (bs images, d =
    embed_dims, n = h * w feature tokens, q = num_queries, L = decoder
    layers)::

        feat (bs, d, h, w), mask (bs, h, w) | None
          -> flatten        sine positions (bs, n, d), tokens (bs, n, d),
                            mask (bs, n) | None
          -> encode         encoder memory (bs, n, d)
          -> object_queries zero content queries and object queries
                            (bs, q, d) each, the rows of query_embedding
                            (Group DETR: q = K * num_queries in training,
                            num_queries in eval)
          -> decode         hidden_states (L, bs, q, d), references s (bs, q, 2)

    Each stage is a method so that benchmarks can time them one by one; a
    change of the forward is made here (and in the encoder / decoder
    modules) only. The object-query embedding lives here alone: its rows are
    the queries.

    The detector registers this module's children (``positional_encoding``,
    ``encoder``, ``decoder``, ``query_embedding``) as its own, so checkpoint
    keys are the same in both (``encoder.*``, ``decoder.*``,
    ``query_embedding.weight``). For the same reason nothing here reads
    ``self.training``; the children carry their own mode (Group DETR's
    choice of query rows reads ``query_embedding.training``).

    Group DETR (Chen et al., arXiv 2207.13085): with ``num_groups=K`` the
    object-query embedding has K * N rows, group g in rows g * N to
    (g + 1) * N - 1. In training :meth:`object_queries` returns all of them
    and the decoder keeps each group's self-attention inside the group; in
    eval mode it returns the first N only (as the official GroupDETR
    branch), so a K-group model in eval computes what a K = 1 model made of
    those rows computes.

    Args:
        encoder (nn.Module): ``encoder(tokens, pos, mask) -> memory``, e.g.
            :class:`CdetrTransformerEncoder`; has ``embed_dims``.
        decoder (nn.Module): ``decoder(query, query_pos, memory, memory_pos,
            memory_mask) -> (hidden_states, references)``, e.g.
            :class:`CdetrTransformerDecoder`; has ``embed_dims``.
        positional_encoding (nn.Module): ``positional_encoding(mask,
            input=feat) -> (bs, d, h, w)``, e.g. mmdet's
            ``SinePositionalEncoding``; has ``num_feats`` = d / 2.
        num_queries (int): Object queries q (per group: N).
        num_groups (int): Group DETR's K: ``query_embedding`` has
            K * num_queries rows, all used in training, the first
            num_queries in eval. Must equal the decoder's ``num_groups``
            (where it has one). Defaults to 1.

    Raises:
        ValueError: The widths of the three modules do not agree, or
            ``num_groups`` is not an int >= 1 or differs from the decoder's.
    """

    def __init__(self, encoder: nn.Module, decoder: nn.Module,
                 positional_encoding: nn.Module, num_queries: int,
                 num_groups: int = 1) -> None:
        super().__init__()
        if not isinstance(num_groups, int) or num_groups < 1:
            raise ValueError('ConditionalDETRTransformer: num_groups must be '
                             f'an int >= 1, got {num_groups!r}')
        decoder_groups = getattr(decoder, 'num_groups', 1)
        if decoder_groups != num_groups:
            raise ValueError(
                f'ConditionalDETRTransformer: num_groups={num_groups} but the '
                f'decoder has num_groups={decoder_groups}')
        self.embed_dims = encoder.embed_dims
        if decoder.embed_dims != self.embed_dims:
            raise ValueError(
                f'encoder embed_dims ({self.embed_dims}) != decoder '
                f'embed_dims ({decoder.embed_dims})')
        if positional_encoding.num_feats * 2 != self.embed_dims:
            raise ValueError(
                'positional_encoding.num_feats must be embed_dims / 2 = '
                f'{self.embed_dims // 2}, got {positional_encoding.num_feats}')
        self.num_queries = num_queries
        self.num_groups = num_groups
        self.positional_encoding = positional_encoding
        self.encoder = encoder
        self.decoder = decoder
        # Group DETR: K groups of N object queries, group g in rows g*N..
        self.query_embedding = nn.Embedding(num_queries * num_groups,
                                            self.embed_dims)

    def forward(self, feat: Tensor,
                mask: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
        """Encoder and decoder on one feature map.

        Args:
            feat (Tensor): Neck features, (bs, d, h, w).
            mask (Tensor, optional): (bs, h, w) bool, True at padding (see
                :func:`feature_padding_mask`); None when no image of the
                batch is padded. Defaults to None.

        Returns:
            tuple[Tensor, Tensor]: ``hidden_states``, every decoder layer's
            normalised output, (L, bs, q, d); ``references``, the reference
            points s, (bs, q, 2). The head's inputs.
        """
        tokens, mask, pos = self.flatten(feat, mask)
        memory = self.encode(tokens, mask, pos)
        query, query_pos = self.object_queries(memory.shape[0])
        return self.decode(query, query_pos, memory, mask, pos)

    def flatten(self, feat: Tensor, mask: Optional[Tensor] = None
                ) -> Tuple[Tensor, Optional[Tensor], Tensor]:
        """Sine positional encoding, then features and mask as tokens.

        Args:
            feat (Tensor): (bs, d, h, w).
            mask (Tensor, optional): (bs, h, w) bool, True at padding.

        Returns:
            tuple: tokens (bs, n, d); mask (bs, n) or None; positions
            (bs, n, d).
        """
        pos = self.positional_encoding(mask, input=feat)  # (bs, d, h, w)
        # (bs, d, h, w) -> (bs, n, d)
        return (feat.flatten(2).transpose(1, 2),
                None if mask is None else mask.flatten(1),
                pos.flatten(2).transpose(1, 2))

    def encode(self, tokens: Tensor, mask: Optional[Tensor],
               pos: Tensor) -> Tensor:
        """Run the encoder.

        Args:
            tokens (Tensor): (bs, n, d).
            mask (Tensor | None): (bs, n), True at padding.
            pos (Tensor): (bs, n, d).

        Returns:
            Tensor: The memory, (bs, n, d).
        """
        return self.encoder(tokens, pos, mask)

    def object_queries(self, batch_size: int) -> Tuple[Tensor, Tensor]:
        """Zero content queries and the learnt object queries.

        Group DETR: all K * N rows in training, the first group's N in eval
        mode (the mode of ``query_embedding``: the detector does not
        register this module itself); with K = 1 the whole table.

        Args:
            batch_size (int): bs.

        Returns:
            tuple[Tensor, Tensor]: ``query`` (zeros) and ``query_pos``,
            (bs, q, d) each; q = K * num_queries in training with K groups,
            num_queries otherwise.
        """
        weight = self.query_embedding.weight  # (K * N, d)
        if self.num_groups > 1 and not self.query_embedding.training:
            weight = weight[:self.num_queries]  # (N, d): group 0
        query_pos = weight[None].expand(batch_size, -1, -1)  # (bs, q, d)
        return torch.zeros_like(query_pos), query_pos

    def decode(self, query: Tensor, query_pos: Tensor, memory: Tensor,
               mask: Optional[Tensor],
               pos: Tensor) -> Tuple[Tensor, Tensor]:
        """Run the conditional decoder.

        Args:
            query (Tensor): Content queries (zeros), (bs, q, d).
            query_pos (Tensor): Object queries, (bs, q, d).
            memory (Tensor): Encoder output, (bs, n, d).
            mask (Tensor | None): (bs, n), True at padding.
            pos (Tensor): Memory positions, (bs, n, d).

        Returns:
            tuple[Tensor, Tensor]: ``hidden_states`` (L, bs, q, d) and
            ``references`` (bs, q, 2).
        """
        return self.decoder(query, query_pos, memory, pos, mask)


# The DETR encoder: post-norm layers, positions added to queries and keys.
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
