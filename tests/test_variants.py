"""The ablation modules picked by config equal the decoder's string aliases."""
import pytest
import torch
from mmdet.registry import MODELS

D, HEADS, NQ = 32, 4, 6
# (string switches, the same variant as module configs)
PAIRS = [
    (dict(reference='fixed'), dict(reference=dict(type='CdetrFixedReference'))),
    (dict(reference='learned', num_queries=NQ),
     dict(reference=dict(type='CdetrLearnedReference', num_queries=NQ))),
    (dict(spatial_query='csq_c'),
     dict(spatial_query=dict(type='CdetrContentSpatialQuery'))),
    (dict(spatial_query='csq_t'),
     dict(spatial_query=dict(type='CdetrTransformSpatialQuery'))),
    (dict(spatial_query='csq_i'),
     dict(spatial_query=dict(type='CdetrConditionalSpatialQuery',
                             from_self_attn=True))),
    (dict(transform='identity'),
     dict(spatial_query=dict(type='CdetrConditionalSpatialQuery',
                             transform=None))),
    (dict(transform='block'),
     dict(spatial_query=dict(type='CdetrConditionalSpatialQuery',
                             transform='CdetrBlockTransform'))),
    (dict(), dict(reference=dict(type='CdetrPredictedReference'),
                  spatial_query=dict(type='CdetrConditionalSpatialQuery'))),
]


def build(**switches):
    torch.manual_seed(0)
    return MODELS.build(dict(
        type='CdetrTransformerDecoder', num_layers=2,
        layer_cfg=dict(embed_dims=D, num_heads=HEADS,
                       feedforward_channels=64, dropout=0.),
        **switches)).eval()


@pytest.mark.parametrize('alias,module_cfg', PAIRS)
def test_module_config_equals_the_alias(alias, module_cfg):
    a, b = build(**alias), build(**module_cfg)
    assert list(a.state_dict()) == list(b.state_dict())
    g = torch.Generator().manual_seed(1)
    args = (torch.zeros(2, NQ, D), torch.randn(2, NQ, D, generator=g),
            torch.randn(2, 9, D, generator=g), torch.randn(2, 9, D, generator=g))
    with torch.no_grad():
        for x, y in zip(a(*args), b(*args)):
            torch.testing.assert_close(x, y, rtol=0, atol=0)


def test_variant_modules_are_not_children_but_their_parameters_are():
    decoder = build()
    assert 'spatial_query' not in dict(decoder.named_children())
    assert decoder.query_scale is decoder.spatial_query.query_scale
    assert decoder.ref_point_head is decoder.reference_source.ref_point_head


def test_transform_with_a_module_spatial_query_is_refused():
    with pytest.raises(ValueError, match='transform is an alias'):
        build(spatial_query=dict(type='CdetrContentSpatialQuery'),
              transform='full')


@pytest.mark.parametrize('cfg,out_dims', [
    (dict(type='CdetrDiagonalTransform'), D),
    (dict(type='CdetrScalarTransform'), 1),
    # Default 8 heads: 8 blocks of (D / 8) x (D / 8).
    (dict(type='CdetrBlockTransform'), 8 * (D // 8)**2),
    (dict(type='CdetrFullTransform'), D * D),
    (dict(type='CdetrTransformSpatialQuery'), D),
], ids=['diagonal', 'scalar', 'block', 'full', 'csq_t'])
def test_learned_t_is_a_two_layer_mlp_of_the_forms_width(cfg, out_dims):
    """Kills the ``num_layers`` 2 -> 3 and the block form's default-heads
    mutants of variants/transforms.py and spatial_queries.py: T (or CSQ-T's
    lambda_q) is the official two-layer ``query_scale``, d -> d -> width,
    built with the documented default of 8 heads."""
    module = MODELS.build(dict(cfg, embed_dims=D))
    mlp = getattr(module, 'query_scale', module)
    shapes = [tuple(p.shape) for p in mlp.parameters()]
    assert shapes == [(D, D), (D, ), (out_dims, D), (out_dims, )]
