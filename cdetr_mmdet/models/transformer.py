"""The Conditional DETR transformer: the one forward every caller runs.

The detector (:class:`CdetrConditionalDETR`), the ONNX export model, the
attention analysis (through the detector) and the benchmarks call this module;
none of them repeats a step of it. It is plain PyTorch (no registry, no data
samples): features and a padding mask in, decoder states and reference points
out, as DETR's ``Transformer.forward``.
"""
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn


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
