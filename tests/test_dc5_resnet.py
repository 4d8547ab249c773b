"""The DC5 backbone dilates like torchvision's replace_stride_with_dilation."""
import pytest
import torch
from mmdet.registry import MODELS


def test_dilation_pattern_and_output_stride():
    backbone = MODELS.build(dict(type='CdetrDC5ResNet', depth=18,
                                 out_indices=(3, ), init_cfg=None))
    backbone.eval()
    first, *rest = list(backbone.layer4)
    # torchvision: the first block keeps the previous dilation (1) ...
    assert first.conv1.dilation == (1, 1) and first.conv1.padding == (1, 1)
    assert first.conv1.stride == (1, 1)
    # ... and the following blocks use dilation 2.
    for block in rest:
        assert block.conv1.dilation == (2, 2)
    with torch.no_grad():
        out = backbone(torch.randn(1, 3, 64, 96))[0]
    assert out.shape[-2:] == (4, 6)  # stride 16


def test_bottleneck_first_block_keeps_dilation_one():
    backbone = MODELS.build(dict(type='CdetrDC5ResNet', depth=50,
                                 out_indices=(3, ), init_cfg=None))
    assert backbone.layer4[0].conv2.dilation == (1, 1)
    assert backbone.layer4[0].conv2.padding == (1, 1)
    assert backbone.layer4[1].conv2.dilation == (2, 2)


def test_strides_in_config_are_rejected():
    with pytest.raises(KeyError, match='strides'):
        MODELS.build(dict(type='CdetrDC5ResNet', depth=18,
                          strides=(1, 2, 2, 2), init_cfg=None))
