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


@pytest.mark.parametrize('depth', [18, 50])
def test_stages_one_to_three_are_not_dilated(depth):
    """Kills the ``dilations`` mutants of stages 1-3: only the last stage
    is dilated (strides 1, 2, 2 before it, as torchvision's DC5)."""
    backbone = MODELS.build(dict(type='CdetrDC5ResNet', depth=depth,
                                 out_indices=(3, ), init_cfg=None))
    for stage, stride in zip((1, 2, 3), (1, 2, 2)):
        convs = [m for m in getattr(backbone, f'layer{stage}').modules()
                 if isinstance(m, torch.nn.Conv2d)]
        assert all(c.dilation == (1, 1) for c in convs), stage
        assert max(c.stride[0] for c in convs) == stride, stage


def test_bottleneck_last_stage_is_torchvision_dc5():
    """torchvision's ``replace_stride_with_dilation=[False, False, True]``
    written out for R50: stage 4 has stride 1 everywhere (downsample
    included) and dilation 2 in every 3x3 but its first block's."""
    backbone = MODELS.build(dict(type='CdetrDC5ResNet', depth=50,
                                 out_indices=(3, ), init_cfg=None))
    for i, block in enumerate(backbone.layer4):
        for conv in block.modules():
            if isinstance(conv, torch.nn.Conv2d):
                assert conv.stride == (1, 1)
                want = (1, 1) if i == 0 or conv.kernel_size == (1, 1) \
                    else (2, 2)
                assert conv.dilation == want, (i, conv)
