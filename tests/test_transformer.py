"""The transformer core: one forward, shared by the detector's callers."""
import copy

import pytest
import torch
from mmdet.models.layers import SinePositionalEncoding
from mmdet.registry import MODELS

from cdetr_mmdet.models.transformer import (ConditionalDETRTransformer,
                                            feature_padding_mask)


def build_core(d=32, queries=5):
    encoder = MODELS.build(dict(
        type='CdetrTransformerEncoder', num_layers=1,
        layer_cfg=dict(embed_dims=d, num_heads=4, feedforward_channels=64,
                       dropout=0.)))
    decoder = MODELS.build(dict(
        type='CdetrTransformerDecoder', num_layers=2,
        layer_cfg=dict(embed_dims=d, num_heads=4, feedforward_channels=64,
                       dropout=0.)))
    pos = SinePositionalEncoding(num_feats=d // 2, normalize=True)
    return ConditionalDETRTransformer(encoder, decoder, pos, queries).eval()


def test_forward_equals_the_stages_called_by_hand():
    torch.manual_seed(0)
    core = build_core()
    feat = torch.randn(2, 32, 4, 6)
    mask = torch.zeros(2, 4, 6, dtype=torch.bool)
    mask[1, :, 4:] = True  # image 2 padded on the right
    with torch.no_grad():
        hidden, refs = core(feat, mask)
        pos = core.positional_encoding(mask).flatten(2).transpose(1, 2)
        memory = core.encoder(feat.flatten(2).transpose(1, 2), pos,
                              mask.flatten(1))
        query_pos = core.query_embedding.weight.expand(2, -1, -1)
        hidden_ref, refs_ref = core.decoder(
            torch.zeros_like(query_pos), query_pos, memory, pos,
            mask.flatten(1))
    assert hidden.shape == (2, 2, 5, 32) and refs.shape == (2, 5, 2)
    torch.testing.assert_close(hidden, hidden_ref, rtol=0, atol=0)
    torch.testing.assert_close(refs, refs_ref, rtol=0, atol=0)


def test_no_mask_equals_an_all_false_mask():
    torch.manual_seed(0)
    core = build_core()
    feat = torch.randn(2, 32, 3, 5)
    with torch.no_grad():
        alone = core(feat)
        masked = core(feat, torch.zeros(2, 3, 5, dtype=torch.bool))
    for a, b in zip(alone, masked):
        torch.testing.assert_close(a, b)


def test_feature_padding_mask_is_nearest_downsampling():
    pad = torch.zeros(1, 8, 8, dtype=torch.bool)
    pad[0, :, 4:] = True
    out = feature_padding_mask(pad, (2, 2))
    assert out.dtype == torch.bool
    assert out.tolist() == [[[False, True], [False, True]]]


def test_width_mismatch_is_refused():
    core = build_core()
    with pytest.raises(ValueError, match='num_feats'):
        ConditionalDETRTransformer(core.encoder, core.decoder,
                                   SinePositionalEncoding(num_feats=8), 5)


def test_detector_shares_the_core_and_keeps_its_checkpoint_keys(
        tiny_model_cfg):
    model = MODELS.build(tiny_model_cfg)
    core = model.transformer
    for name in ('encoder', 'decoder', 'query_embedding',
                 'positional_encoding'):
        assert getattr(model, name) is getattr(core, name)
    keys = list(model.state_dict())
    assert not any(k.startswith('transformer.') for k in keys)
    assert 'query_embedding.weight' in keys
    # The core's own keys are the detector's keys of the same tensors.
    assert set(core.state_dict()) <= set(keys)
    # A deep copy (e.g. EMA) keeps the core and the children shared.
    twin = copy.deepcopy(model)
    assert twin.transformer.encoder is twin.encoder
    assert twin.transformer.encoder is not model.encoder
