"""ResNet with the official DC5 last stage (registered in ``MODELS``)."""
from mmdet.models.backbones import ResNet
from mmdet.registry import MODELS
from torch import nn


@MODELS.register_module()
class CdetrDC5ResNet(ResNet):
    """mmdet ``ResNet`` whose last stage is dilated as torchvision's DC5.

    torchvision's ``replace_stride_with_dilation=[False, False, True]`` (the
    official DC5 backbones) gives the last stage stride 1 and dilation 2 but
    keeps dilation 1 in that stage's first block; mmdet's ``dilations``
    dilates the first block too. Only ``__init__`` is overridden: it sets the
    last stage's stride to 1 and dilation to 2, then restores dilation 1 in
    the first block's 3x3 convolution, so official DC5 weights compute what
    they were trained to.

    Args:
        **kwargs: ``ResNet`` arguments except ``strides`` and ``dilations``
            (``num_stages`` must be 4).
    """

    def __init__(self, **kwargs) -> None:
        for key in ('strides', 'dilations'):
            if key in kwargs:
                raise KeyError(f'CdetrDC5ResNet sets {key} itself; remove '
                               f'"{key}" from the backbone config')
        super().__init__(strides=(1, 2, 2, 1), dilations=(1, 1, 1, 2),
                         **kwargs)
        for conv in self.layer4[0].modules():  # the first block's 3x3
            if isinstance(conv, nn.Conv2d) and conv.dilation == (2, 2):
                conv.dilation, conv.padding = (1, 1), (1, 1)
