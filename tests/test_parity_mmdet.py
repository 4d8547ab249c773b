"""Parity with mmdet 3.3's built-in ConditionalDETR (an independent implementation)."""
import pytest
import torch
from mmdet.registry import MODELS
from mmengine.config import Config

from cdetr_mmdet.convert import convert_state_dict
from conftest import MMDET_CDETR_CFG, ROOT, make_batch, randomize_, \
    shrink_model_cfg


def build_pair(num_classes: int = 3):
    """mmdet's model with random weights and ours with the same weights.

    mmdet's decoder hard-codes 128 sine features per axis, so d=256.
    """
    theirs_cfg = shrink_model_cfg(Config.fromfile(str(MMDET_CDETR_CFG)).model,
                                  embed_dims=256, num_classes=num_classes)
    ours_cfg = shrink_model_cfg(
        Config.fromfile(str(ROOT / 'configs' /
                            'conditional_detr_r50_50e.py')).model,
        embed_dims=256, num_classes=num_classes)
    theirs = MODELS.build(theirs_cfg)
    ours = MODELS.build(ours_cfg)
    randomize_(theirs, seed=1)
    ours.load_state_dict(
        convert_state_dict(theirs.state_dict(), 'mmdet', ours), strict=True)
    return theirs.eval(), ours.eval()


def test_decoder_and_head_outputs_match_every_layer():
    theirs, ours = build_pair()
    inputs, samples = make_batch()
    with torch.no_grad():
        feats_t = theirs.extract_feat(inputs)
        feats_o = ours.extract_feat(inputs)
        head_t = theirs.forward_transformer(feats_t, samples)
        head_o = ours.forward_transformer(feats_o, samples)
        cls_t, box_t = theirs.bbox_head(**head_t)
        cls_o, box_o = ours.bbox_head(**head_o)
    assert head_o['hidden_states'].shape == (2, 2, 10, 256)
    torch.testing.assert_close(head_o['references'], head_t['references'],
                               rtol=0, atol=1e-5)
    for layer in range(2):
        torch.testing.assert_close(head_o['hidden_states'][layer],
                                   head_t['hidden_states'][layer],
                                   rtol=0, atol=1e-5)
        torch.testing.assert_close(cls_o[layer], cls_t[layer], rtol=0,
                                   atol=1e-5)
        torch.testing.assert_close(box_o[layer], box_t[layer], rtol=0,
                                   atol=1e-5)


@pytest.mark.parametrize('num_gts', [(3, 2), (4, 0)],
                         ids=['two_images', 'with_an_empty_image'])
def test_losses_match(num_gts):
    theirs, ours = build_pair()
    inputs, samples = make_batch(num_gts=num_gts)
    with torch.no_grad():
        loss_t = theirs.loss(inputs, samples)
        loss_o = ours.loss(inputs, samples)
    assert sorted(loss_t) == sorted(loss_o)
    for key in loss_t:
        torch.testing.assert_close(loss_o[key], loss_t[key], rtol=1e-5,
                                   atol=1e-5, msg=key)
