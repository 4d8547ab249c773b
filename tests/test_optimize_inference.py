"""optimize_for_inference: folded batch norms, NHWC, the same predictions, no training."""
import logging
import warnings

import pytest
import torch
from mmdet.registry import MODELS
from mmengine.config import Config
from torch import nn

from cdetr_mmdet.apis import init_detector, optimize_for_inference
from cdetr_mmdet.engine import CdetrInferenceOptimizeHook
from conftest import ROOT, make_batch, randomize_


def _model(cfg):
    model = MODELS.build(cfg)
    model.init_weights()
    return randomize_(model, seed=3).eval()  # batch-norm statistics far from (0, 1)


def _predict(model, inputs, samples):
    with torch.no_grad():
        out = model(inputs, [s.clone() for s in samples], mode='predict')
    return [(o.pred_instances.scores, o.pred_instances.bboxes, o.pred_instances.labels)
            for o in out]


@pytest.mark.parametrize('channels_last', [False, True])
def test_folded_model_predicts_as_before(tiny_model_cfg, channels_last):
    model = _model(tiny_model_cfg)
    inputs, samples = make_batch()
    before = _predict(model, inputs, samples)
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.backbone.modules())
    optimize_for_inference(model, channels_last=channels_last)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    conv = model.backbone.layer2[0].conv1
    assert conv.bias is not None  # the batch norm's shift lives there now
    assert conv.weight.is_contiguous(memory_format=torch.channels_last) == channels_last
    for (s0, b0, l0), (s1, b1, l1) in zip(before, _predict(model, inputs, samples)):
        torch.testing.assert_close(s1, s0, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(b1, b0, rtol=1e-4, atol=1e-3)  # pixels
        assert torch.equal(l1, l0)


def test_folded_model_refuses_to_train(tiny_model_cfg):
    model = optimize_for_inference(_model(tiny_model_cfg))
    inputs, samples = make_batch()
    with pytest.raises(RuntimeError, match='folded for inference .* cannot be trained; '
                       'build it again from its config and checkpoint'):
        model(inputs, samples, mode='loss')


class _MisorderedBlock(nn.Module):
    """``bn`` normalises ``conv_a``'s output but is registered after ``conv_b``."""

    def __init__(self):
        super().__init__()
        self.conv_a = nn.Conv2d(3, 8, 3, padding=1)
        self.conv_b = nn.Conv2d(8, 8, 1)
        self.bn = nn.BatchNorm2d(8)

    def forward(self, x):
        return (self.conv_b(self.bn(self.conv_a(x))), )


def test_a_batch_norm_paired_with_the_wrong_conv_is_refused(tiny_model_cfg):
    model = _model(tiny_model_cfg)
    model.backbone = randomize_(_MisorderedBlock(), seed=1).eval()
    probe = torch.randn(1, 3, 16, 16)
    with torch.no_grad():
        expected = model.backbone(probe)[0]
    with pytest.raises(ValueError, match=r'folding the batch norms of model\.backbone changed '
                       r'its output 0 by .*paired them wrongly'):
        optimize_for_inference(model, channels_last=False)
    assert isinstance(model.backbone.bn, nn.BatchNorm2d)  # put back unfolded
    with torch.no_grad():
        torch.testing.assert_close(model.backbone(probe)[0], expected, rtol=0, atol=0)


def test_channels_last_needs_our_detector():
    with pytest.raises(ValueError, match='Sequential has no channels_last option: '
                       'pass channels_last=False'):
        optimize_for_inference(nn.Sequential())


def test_init_detector_and_test_hook_optimize(tiny_model_cfg, tmp_path):
    cfg = Config.fromfile(str(ROOT / 'configs' / 'conditional_detr_r50_50e.py'))
    cfg.model = tiny_model_cfg
    model = _model(tiny_model_cfg)
    ckpt = tmp_path / 'tiny.pth'
    torch.save(dict(state_dict=model.state_dict()), ckpt)
    inputs, samples = make_batch()
    with warnings.catch_warnings():  # COCO class names: not this test's subject
        warnings.simplefilter('ignore')
        fast = init_detector(cfg, str(ckpt), optimize=True)
    assert fast.channels_last and fast.folded_for_inference
    for (s0, b0, _), (s1, b1, _) in zip(_predict(model, inputs, samples),
                                        _predict(fast, inputs, samples)):
        torch.testing.assert_close(s1, s0, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(b1, b0, rtol=1e-4, atol=1e-3)

    class _Runner:  # what the hook reads of mmengine's Runner
        logger = logging.getLogger('test')

    runner = _Runner()
    runner.model = _model(tiny_model_cfg)
    CdetrInferenceOptimizeHook().before_test(runner)
    assert runner.model.folded_for_inference
    assert not any(isinstance(m, nn.BatchNorm2d) for m in runner.model.modules())
