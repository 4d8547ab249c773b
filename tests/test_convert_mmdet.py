"""mmdet 3.x's built-in ``ConditionalDETR`` -> ours, proven numerically.

mmdet's model is built from its own config
(``conditional-detr_r50_8xb2-50e_coco.py``) shrunk to a ResNet-18 backbone,
2 encoder / 3 decoder layers, a 256-wide FFN and 12 queries (the width stays
256: mmdet's decoder hard-codes a 256-wide sine embedding of the reference
points), given random weights, saved as an mmdet checkpoint
(``{'meta', 'state_dict'}``), converted and compared per decoder layer on a
padded batch of two differently sized images.

Detections differ by design in one respect: mmdet's head clamps boxes to
the image, ours (like the official post-process) does not; ours are clamped
before comparing, and the batch is built so that some boxes do leave the
image.
"""
import copy
from pathlib import Path

import mmdet
import pytest
import torch
from mmdet.registry import MODELS
from mmengine.config import Config
from mmengine.registry import DefaultScope

from cdetr_mmdet.convert import build_target_model, convert_checkpoint
from cdetr_testing import detection_differences, padded_batch, randomize_

MMDET_CONFIG = (Path(mmdet.__file__).parent / '.mim' / 'configs' /
                'conditional_detr' / 'conditional-detr_r50_8xb2-50e_coco.py')
D, HEADS, FFN, QUERIES, ENC, DEC = 256, 8, 256, 12, 2, 3
SIZES = [(160, 224), (128, 176)]
SCALE = 0.5
ATOL = 1e-5

OUR_OPTIONS = {
    'model.num_queries': QUERIES,
    'model.backbone.depth': 18,
    'model.neck.in_channels': [512],
    'model.encoder.num_layers': ENC,
    'model.encoder.layer_cfg': dict(feedforward_channels=FFN),
    'model.decoder.num_layers': DEC,
    'model.decoder.layer_cfg': dict(feedforward_channels=FFN),
}


def build_mmdet_model() -> torch.nn.Module:
    """mmdet's ConditionalDETR at the test's size, with random weights."""
    cfg = Config.fromfile(str(MMDET_CONFIG)).model
    cfg.backbone.update(depth=18, init_cfg=None)
    cfg.neck.in_channels = [512]
    cfg.num_queries = QUERIES
    cfg.encoder.num_layers = ENC
    cfg.encoder.layer_cfg.ffn_cfg.feedforward_channels = FFN
    cfg.decoder.num_layers = DEC
    cfg.decoder.layer_cfg.ffn_cfg.feedforward_channels = FFN
    with DefaultScope.overwrite_default_scope('mmdet'):
        model = randomize_(MODELS.build(cfg), seed=3).eval()
    # Wide boxes, so that some cross the image border and get clamped.
    model.bbox_head.fc_reg.bias.data[2:] += 3.
    return model


@pytest.mark.skipif(not MMDET_CONFIG.is_file(),
                    reason="mmdet's configs (.mim) are not installed")
def test_mmdet_outputs_and_detections_match(tmp_path):
    mmdet_model = build_mmdet_model()
    src = tmp_path / 'mmdet.pth'
    torch.save({'meta': {'dataset_meta': {'classes': ['a'] * 80}},
                'state_dict': mmdet_model.state_dict()}, src)
    convert_checkpoint(src, tmp_path / 'ours.pth', 'mmdet',
                       cfg_options=OUR_OPTIONS)
    ours = build_target_model(cfg_options=OUR_OPTIONS).eval()
    ours.load_state_dict(
        torch.load(tmp_path / 'ours.pth', weights_only=True)['state_dict'],
        strict=True)

    inputs, _, samples = padded_batch(SIZES, seed=4, scale_factor=SCALE)
    with torch.no_grad():
        ref_logits, ref_boxes = mmdet_model(inputs, samples, mode='tensor')
        logits, boxes = ours(inputs, samples, mode='tensor')
        # predict() writes into the data samples it is given: one copy each.
        ref_dets = mmdet_model.predict(inputs, copy.deepcopy(samples))
        our_dets = ours.predict(inputs, copy.deepcopy(samples))
    assert logits.shape == ref_logits.shape == (DEC, 2, QUERIES, 80)
    for layer in range(DEC):
        torch.testing.assert_close(logits[layer], ref_logits[layer],
                                   atol=ATOL, rtol=0)
        torch.testing.assert_close(boxes[layer], ref_boxes[layer], atol=ATOL,
                                   rtol=0)

    clamped_any = False
    for sample, ref, our in zip(samples, ref_dets, our_dets):
        ref, our = ref.pred_instances, our.pred_instances
        ori_h, ori_w = sample.metainfo['ori_shape']
        bboxes = our.bboxes.clone()
        bboxes[:, 0::2] = bboxes[:, 0::2].clamp(0, ori_w)
        bboxes[:, 1::2] = bboxes[:, 1::2].clamp(0, ori_h)
        clamped_any |= not torch.equal(bboxes, our.bboxes)
        score_diff, box_diff = detection_differences(
            our.scores, our.labels, bboxes, ref.scores, ref.labels,
            ref.bboxes, score_tol=ATOL)
        assert score_diff <= ATOL and box_diff <= 1e-3, (score_diff, box_diff)
    assert clamped_any, 'no box crossed the border: the clamp is untested'
