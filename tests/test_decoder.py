"""The conditional decoder: reference points, T and the sine embedding."""
import math

import pytest
import torch
from mmdet.registry import MODELS

from cdetr_mmdet.models import CdetrTransformerDecoder


def build_decoder(d=64, layers=3):
    decoder = MODELS.build(dict(
        type='CdetrTransformerDecoder', num_layers=layers,
        layer_cfg=dict(embed_dims=d, num_heads=4, feedforward_channels=64,
                       dropout=0.)))
    return decoder.eval()


def official_sine_embed(pos, num_feats):
    """The official gen_sineembed_for_position with 128 replaced by num_feats."""
    scale = 2 * math.pi
    dim_t = torch.arange(num_feats, dtype=torch.float32)
    dim_t = 10000**(2 * (dim_t // 2) / num_feats)
    x_embed = pos[:, :, 0] * scale
    y_embed = pos[:, :, 1] * scale
    pos_x = x_embed[:, :, None] / dim_t
    pos_y = y_embed[:, :, None] / dim_t
    pos_x = torch.stack((pos_x[:, :, 0::2].sin(), pos_x[:, :, 1::2].cos()),
                        dim=3).flatten(2)
    pos_y = torch.stack((pos_y[:, :, 0::2].sin(), pos_y[:, :, 1::2].cos()),
                        dim=3).flatten(2)
    return torch.cat((pos_y, pos_x), dim=2)


def test_only_the_first_layer_is_first_and_owns_qpos_proj():
    decoder = build_decoder()
    assert [layer.is_first for layer in decoder.layers] == [True, False,
                                                            False]
    names = [n for n, _ in decoder.named_parameters() if 'qpos_proj.' in n
             and 'cross_attn' in n]
    assert names == ['layers.0.cross_attn.qpos_proj.weight',
                     'layers.0.cross_attn.qpos_proj.bias']
    with pytest.raises(KeyError, match='must not set "is_first"'):
        CdetrTransformerDecoder(layer_cfg=dict(is_first=True))


def test_sine_embedding_follows_official_order_and_width():
    for d in (64, 256):
        decoder = build_decoder(d=d, layers=1)
        ref = torch.rand(2, 5, 2)
        torch.testing.assert_close(decoder.ref_sine_embed(ref),
                                   official_sine_embed(ref, d // 2))


def test_reference_points_and_transformation_t():
    torch.manual_seed(0)
    decoder = build_decoder()
    query_pos = torch.randn(2, 5, 64)
    memory, memory_pos = torch.randn(2, 9, 64), torch.randn(2, 9, 64)
    seen = []
    for layer in decoder.layers:
        layer.register_forward_hook(
            lambda mod, args, out: seen.append((args[0], args[4])))
    hidden, refs = decoder(torch.zeros(2, 5, 64), query_pos, memory,
                           memory_pos)
    assert hidden.shape == (3, 2, 5, 64) and refs.shape == (2, 5, 2)
    torch.testing.assert_close(refs,
                               decoder.ref_point_head(query_pos).sigmoid())
    base = decoder.ref_sine_embed(refs)
    # Layer 1: T = 1; later layers: T = query_scale(decoder embedding).
    torch.testing.assert_close(seen[0][1], base)
    for query_in, sine in seen[1:]:
        torch.testing.assert_close(sine, base * decoder.query_scale(query_in))
    # Every layer's output goes through the one shared LayerNorm.
    torch.testing.assert_close(hidden[-1], decoder.norm(
        decoder.layers[-1](seen[-1][0], memory, query_pos, memory_pos,
                           seen[-1][1])))
