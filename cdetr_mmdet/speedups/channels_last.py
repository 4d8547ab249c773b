"""Channels-last (NHWC) backbone runs, the detector's two config options.

``channels_last=True``: the whole backbone and neck in NHWC (oneDNN and cuDNN
convolutions prefer it, notably under bf16/fp16 autocast). Off by default.

``frozen_channels_last=True`` (default): on the CPU, the part of an mmdet
``ResNet`` that takes no gradient runs in NHWC: the frozen stem and stages
(``frozen_stages``) when gradients are taken, the whole backbone under
``torch.no_grad``. PyTorch's NCHW CPU kernels are slow there (the stem's 3x3
max-pool ~9x, the frozen stem + ``layer1`` forward ~1.4x at 512x512); the
trainable stages go back to NCHW, whose backward NHWC does not speed up. No
effect on other devices or on backbones without ``frozen_stages`` /
``res_layers``. Outputs equal NCHW's up to float rounding.
"""
from typing import Optional

import torch
from torch import Tensor, nn


def frozen_stages_end(backbone: nn.Module) -> Optional[nn.Module]:
    """The backbone's last frozen module, or None (nothing frozen).

    Args:
        backbone (nn.Module): An mmdet ``ResNet`` (``frozen_stages``,
            ``res_layers``) or any other module (None).

    Returns:
        nn.Module | None: The max-pool (stem only) or the last frozen stage.
    """
    frozen = getattr(backbone, 'frozen_stages', -1)
    layers = getattr(backbone, 'res_layers', None)
    if frozen < 0 or layers is None:
        return None
    if frozen == 0:  # the stem alone
        return backbone.maxpool
    return getattr(backbone, layers[min(frozen, len(layers)) - 1])


def runs_nhwc(channels_last: bool, frozen_channels_last: bool,
              inputs: Tensor, backbone: nn.Module) -> bool:
    """Whether this forward feeds the backbone NHWC images.

    Args:
        channels_last (bool): The detector's ``channels_last``.
        frozen_channels_last (bool): Its ``frozen_channels_last``.
        inputs (Tensor): The images, (bs, 3, H, W).
        backbone (nn.Module): The detector's backbone.

    Returns:
        bool: True with ``channels_last``, or on the CPU with
        ``frozen_channels_last`` and a backbone with frozen stages.
    """
    return channels_last or (
        frozen_channels_last and inputs.device.type == 'cpu'
        and frozen_stages_end(backbone) is not None)


def nchw_after_frozen_stages(detector: nn.Module) -> None:
    """Register the hook turning the frozen stages' NHWC output to NCHW.

    Only when gradients are taken (the trainable stages follow) and the whole
    backbone is not channels-last by option (``detector.channels_last``).

    Args:
        detector (nn.Module): With ``backbone`` and ``channels_last``.
    """
    end = frozen_stages_end(detector.backbone)
    if end is None:
        return

    def hook(module: nn.Module, args: tuple,
             output: Tensor) -> Optional[Tensor]:
        if detector.channels_last or not torch.is_grad_enabled():
            return None
        return output.contiguous()  # (bs, c, h, w) NCHW

    end.register_forward_hook(hook)
