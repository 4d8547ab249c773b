"""The Conditional DETR transformer decoder (registered in ``MODELS``)."""
from typing import Optional, Tuple

import torch
from mmdet.models.layers.transformer import MLP, coordinate_to_encoding
from mmdet.registry import MODELS
from mmengine.model import BaseModule
from torch import Tensor, nn

from .decoder_layer import ConditionalDecoderLayer


@MODELS.register_module()
class CdetrTransformerDecoder(BaseModule):
    """Decoder with conditional spatial queries.

    The reference point ``s = sigmoid(MLP(query_pos))`` (``ref_point_head``,
    d -> d -> 2) is fixed across layers; each layer's spatial query is
    ``ref_sine_embed(s) * T`` with ``T = 1`` in layer 1 and
    ``T = MLP(query)`` (``query_scale``, d -> d -> d) afterwards. One shared
    LayerNorm (``norm``) normalises every layer's output.

    Args:
        num_layers (int): Number of decoder layers. Defaults to 6.
        layer_cfg (dict, optional): Keyword arguments of
            :class:`ConditionalDecoderLayer` (``embed_dims``, ``num_heads``,
            ``feedforward_channels``, ``dropout``). Defaults to None (its
            defaults).
        init_cfg (dict, optional): mmengine init config. Defaults to None.
    """

    def __init__(self, num_layers: int = 6, layer_cfg: Optional[dict] = None,
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        layer_cfg = dict(layer_cfg or {})
        if 'is_first' in layer_cfg:
            raise KeyError('decoder.layer_cfg must not set "is_first": the '
                           'decoder sets it for its first layer')
        self.layers = nn.ModuleList(
            ConditionalDecoderLayer(**layer_cfg, is_first=(i == 0))
            for i in range(num_layers))
        self.embed_dims = embed_dims = self.layers[0].embed_dims
        if embed_dims % 2:
            raise ValueError(f'embed_dims must be even, got {embed_dims}')
        self.query_scale = MLP(embed_dims, embed_dims, embed_dims, 2)
        self.ref_point_head = MLP(embed_dims, embed_dims, 2, 2)
        self.norm = nn.LayerNorm(embed_dims)

    def ref_sine_embed(self, reference: Tensor) -> Tensor:
        """Sine embedding of reference points, d / 2 features per axis.

        Args:
            reference (Tensor): Normalised (x, y), (bs, num_queries, 2).

        Returns:
            Tensor: (bs, num_queries, d), in the official (y, x) order.
        """
        return coordinate_to_encoding(reference,
                                      num_feats=self.embed_dims // 2)

    def forward(self, query: Tensor, query_pos: Tensor, memory: Tensor,
                memory_pos: Tensor,
                memory_mask: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
        """Run all layers.

        Args:
            query (Tensor): Initial content queries (zeros),
                (bs, num_queries, d).
            query_pos (Tensor): Object queries, (bs, num_queries, d).
            memory (Tensor): Encoder output, (bs, num_keys, d).
            memory_pos (Tensor): Memory positional encoding, (bs, num_keys, d).
            memory_mask (Tensor, optional): (bs, num_keys), True at padding.

        Returns:
            tuple[Tensor, Tensor]: ``hidden_states``, every layer's normalised
            output, (num_layers, bs, num_queries, d); ``references``, the
            reference points s, (bs, num_queries, 2).
        """
        references = self.ref_point_head(query_pos).sigmoid()  # (bs, nq, 2)
        ref_sine_embed = self.ref_sine_embed(references)  # (bs, nq, d)
        hidden_states = []
        for layer in self.layers:
            pos_scale = 1. if layer.is_first else self.query_scale(query)
            query = layer(query, memory, query_pos, memory_pos,
                          ref_sine_embed * pos_scale, memory_mask)
            hidden_states.append(self.norm(query))
        return torch.stack(hidden_states), references
