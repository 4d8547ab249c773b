"""Faster inference: frozen batch norms folded into their convolutions, NHWC backbone.

At inference a batch norm is a fixed per-channel affine ``y = x * scale + shift``
that can be folded into the convolution before it (``W * scale``, bias
``shift``), which removes one pass over every backbone activation; oneDNN's
convolutions are also faster on ``channels_last`` (NHWC) tensors. Together they
make our R50 prediction ~0.65x mmdet's time on a 2-core AVX2 CPU
(docs/benchmarks.md). The folding is mmcv's :func:`mmcv.cnn.fuse_conv_bn`; what
we add is the check that it paired each batch norm with the convolution that
really feeds it (mmcv pairs by registration order) and the guard against
training a folded model.
"""
import copy

import torch
from mmcv.cnn import fuse_conv_bn
from torch import nn

# Folding reorders float sums: differences of a few 1e-6 relative to the
# features' scale are rounding, anything larger a mis-paired batch norm.
_RTOL = 1e-3


def optimize_for_inference(model: nn.Module, channels_last: bool = True) -> nn.Module:
    """Fold the backbone's and neck's batch norms into their convolutions, in place.

    The model is put in eval mode first (batch norms use their running
    statistics, which is what makes them foldable). Outputs equal the
    unfolded model's up to float rounding; a folded model cannot be trained
    or saved in the original layout (its batch norms are gone), so its
    ``loss`` raises.

    Args:
        model (nn.Module): An mmdet detector with ``backbone`` and optional
            ``neck``, weights already loaded. On a ``ValueError`` the part
            that failed the check is put back unfolded.
        channels_last (bool): Also run backbone and neck in NHWC (our
            detector's ``channels_last`` option). Defaults to True.

    Returns:
        nn.Module: ``model``, folded, in eval mode.

    Raises:
        ValueError: ``channels_last`` for a detector without that option, or a
            folded part whose features differ from the unfolded ones (a batch
            norm registered after a convolution that does not feed it).
    """
    if channels_last and not hasattr(model, 'channels_last'):
        raise ValueError(f'{type(model).__name__} has no channels_last option: '
                         'pass channels_last=False (only CdetrConditionalDETR has it)')
    model.eval()
    parts = [name for name in ('backbone', 'neck') if getattr(model, name, None) is not None]
    for name in parts:
        _fold_checked(model, name)
    if channels_last:
        model.channels_last = True
        for name in parts:
            getattr(model, name).to(memory_format=torch.channels_last)
    model.folded_for_inference = True
    return model


def _fold_checked(model: nn.Module, name: str) -> None:
    """Fold ``model.<name>``'s batch norms; raise if its features change."""
    part = getattr(model, name)
    original = copy.deepcopy(part)
    fuse_conv_bn(part)
    # The backbone takes (1, 3, 64, 64) images; the neck the backbone's features.
    with torch.no_grad():
        device = next(model.parameters()).device
        probe = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0)).to(device)
        if name == 'neck':
            probe = model.backbone(probe)
        expected, folded = original(probe), part(probe)
    for i, (want, got) in enumerate(zip(expected, folded)):
        err = (want - got).abs().max().item()
        scale = want.abs().max().item() or 1.
        if err > _RTOL * scale:
            setattr(model, name, original)  # the model stays usable, unfolded
            raise ValueError(
                f'folding the batch norms of model.{name} changed its output {i} by {err:.3g} '
                f'(features up to {scale:.3g}): a batch norm is registered after a convolution '
                'that does not feed it, so mmcv.cnn.fuse_conv_bn paired them wrongly; '
                'run this model without optimize_for_inference')
