"""Decoder cross-attention maps of a DETR-family detector, split the paper's way.

The analysis runs the detector's normal ``mode='tensor'`` forward once with
forward (pre-)hooks registered for the duration of the call only and removed
afterwards (also on error): a model that never calls
:func:`analyze_cross_attention` runs no extra code. The hooks record what each
decoder layer's cross-attention module is called with, so the maps follow
whatever the decoder passes (e.g. its spatial query ``ref_sine_embed``); the
split itself is :mod:`cdetr_mmdet.analysis.decompose`.
"""
import inspect
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Tuple

import torch
from mmdet.structures import SampleList
from mmdet.structures.bbox import bbox_cxcywh_to_xyxy
from torch import Tensor, nn

from .decompose import (LogitSplit, masked_softmax, split_detr,
                        split_mmdet_conditional, split_ours)


@dataclass
class CrossAttentionMaps:
    """Every decoder layer's cross-attention, per head and query.

    ``L`` decoder layers, ``bs`` images, ``heads``, ``nq`` queries and an
    ``H x W`` feature map (the padded batch input divided by the stride).

    Attributes:
        kind (str): ``'conditional'`` (ours), ``'mmdet_conditional'`` (mmdet's
            ConditionalDETR) or ``'detr'`` (mmdet's DETR).
        spatial_logits (Tensor): (L, bs, heads, nq, H, W). Conditional:
            ``p_q . p_k``; DETR: ``q . Wk p_k``.
        content_logits (Tensor): Same shape. Conditional: ``c_q . c_k``, where
            in the first decoder layer ``c_q`` includes the projected object
            query and ``c_k`` the projected key position (the model adds them
            there); DETR: ``q . (Wk c_k + b_k)``.
        combined_logits (Tensor): Same shape, the logits the model forms
            (equal to spatial + content up to float rounding).
        spatial, content, combined (Tensor): Same shape, softmax over the keys
            of ``scale *`` the matching logits with the model's padding mask:
            each sums to 1 over the unpadded keys and is 0 on padded ones.
            ``combined`` is the model's actual attention.
        scale (float): The model's softmax scale, ``head_width ** -0.5``
            (conditional: ``(2 d / heads) ** -0.5``; DETR: ``(d / heads) ** -0.5``).
        key_padding_mask (Tensor | None): (bs, H, W), True at padded keys.
        references (Tensor | None): Reference points s, normalised (x, y) in
            the unpadded input image, (bs, nq, 2); None for DETR.
        boxes (Tensor): The last layer's boxes per query, xyxy in input-image
            pixels (the preprocessed image, before padding), (bs, nq, 4).
        scores (Tensor): The best class score per query, (bs, nq)
            (sigmoid heads: max sigmoid; DETR: max softmax without background).
        labels (Tensor): Its class, (bs, nq).
        layer_inputs (list[dict]): Per layer, the arguments its
            cross-attention module was called with (by parameter name).
    """
    kind: str
    spatial_logits: Tensor
    content_logits: Tensor
    combined_logits: Tensor
    spatial: Tensor
    content: Tensor
    combined: Tensor
    scale: float
    key_padding_mask: Optional[Tensor]
    references: Optional[Tensor]
    boxes: Tensor
    scores: Tensor
    labels: Tensor
    layer_inputs: List[Dict]

    @property
    def feat_size(self) -> Tuple[int, int]:
        """(H, W) of the attended feature map."""
        return tuple(self.combined.shape[-2:])

    @property
    def num_layers(self) -> int:
        """Number of decoder layers L."""
        return self.combined.shape[0]

    @property
    def num_heads(self) -> int:
        """Number of attention heads."""
        return self.combined.shape[2]


def _splitter(module: nn.Module) -> Tuple[str, Callable]:
    """Which decomposition applies to a cross-attention module."""
    from mmcv.cnn.bricks.transformer import MultiheadAttention
    from mmdet.models.layers.transformer.utils import ConditionalAttention
    if isinstance(module, ConditionalAttention):
        return 'mmdet_conditional', split_mmdet_conditional
    if isinstance(module, MultiheadAttention):
        return 'detr', split_detr
    if hasattr(module, 'qpos_sine_proj') and hasattr(module, 'kpos_proj'):
        return 'conditional', split_ours
    raise TypeError(
        f'Cannot decompose a {type(module).__name__} cross-attention: '
        'supported are cdetr_mmdet ConditionalCrossAttention, mmdet '
        'ConditionalAttention(cross_attn=True) and mmcv MultiheadAttention '
        '(DETR)')


def _bound(module: nn.Module, args: tuple, kwargs: dict) -> Dict:
    """A forward call's arguments by parameter name, defaults filled in."""
    bound = inspect.signature(module.forward).bind(*args, **kwargs)
    bound.apply_defaults()
    return dict(bound.arguments)


def _scores(model: nn.Module, cls_logits: Tensor) -> Tuple[Tensor, Tensor]:
    """Best class score and label per query, (bs, nq) each."""
    num_classes = model.bbox_head.num_classes
    if cls_logits.shape[-1] == num_classes + 1:  # softmax with background
        probs = cls_logits.softmax(-1)[..., :num_classes]
    else:
        probs = cls_logits.sigmoid()
    return probs.max(-1)


def _stack(maps: List[Tensor], feat_size: Tuple[int, int]) -> Tensor:
    """L x (bs, heads, nq, H * W) -> (L, bs, heads, nq, H, W)."""
    return torch.stack(maps).unflatten(-1, feat_size)


@torch.no_grad()
def analyze_cross_attention(model: nn.Module, inputs: Tensor,
                            data_samples: SampleList) -> CrossAttentionMaps:
    """Run the detector once and decompose every decoder cross-attention.

    Args:
        model (nn.Module): A built DETR-family detector in eval mode (ours,
            mmdet's ``DETR`` or ``ConditionalDETR``) with ``decoder.layers``,
            ``positional_encoding`` and ``bbox_head``.
        inputs (Tensor): Preprocessed, padded images, (bs, 3, H_in, W_in)
            (``model.data_preprocessor(data, False)['inputs']``).
        data_samples (list[DetDataSample]): Their samples with
            ``img_shape`` and ``batch_input_shape`` metainfo.

    Returns:
        CrossAttentionMaps: See its attributes.

    Raises:
        ValueError: If the model is in training mode (dropout would make the
            maps differ from what the model attends with).
    """
    if model.training:
        raise ValueError('analyze_cross_attention needs model.eval(): in '
                         'training mode dropout changes the attention')
    modules = [layer.cross_attn for layer in model.decoder.layers]
    kinds = {_splitter(m)[0] for m in modules}
    if len(kinds) != 1:
        raise TypeError(f'Mixed cross-attention types: {sorted(kinds)}')
    kind, split = _splitter(modules[0])

    calls: List[Dict] = [None] * len(modules)
    captured: Dict = {}

    def make_pre_hook(index: int) -> Callable:
        def hook(module, args, kwargs):
            calls[index] = _bound(module, args, kwargs)
        return hook

    def pos_hook(module, args, kwargs):
        bound = _bound(module, args, kwargs)
        mask, feat = bound.get('mask'), bound.get('input')
        captured['feat_size'] = tuple((feat if mask is None else mask)
                                      .shape[-2:])

    def decoder_hook(module, args, output):
        if isinstance(output, tuple) and len(output) == 2:
            captured['references'] = output[1]

    handles = []  # filled inside the try: a failed registration removes the earlier ones
    try:
        handles.extend(m.register_forward_pre_hook(make_pre_hook(i), with_kwargs=True)
                       for i, m in enumerate(modules))
        handles.append(model.positional_encoding.register_forward_pre_hook(
            pos_hook, with_kwargs=True))
        handles.append(model.decoder.register_forward_hook(decoder_hook))
        cls_logits, bbox_preds = model(inputs, data_samples, mode='tensor')
    finally:
        for handle in handles:
            handle.remove()
    if any(call is None for call in calls):
        raise RuntimeError('Some decoder layers did not call their '
                           'cross-attention during the forward')

    splits: List[LogitSplit] = [split(m, call)
                                for m, call in zip(modules, calls)]
    feat_size = captured['feat_size']
    pad = splits[0].key_padding_mask
    maps = {}
    for name in ('spatial', 'content', 'combined'):
        logits = [getattr(s, name) for s in splits]
        maps[f'{name}_logits'] = _stack(logits, feat_size)
        maps[name] = _stack([masked_softmax(t, s.scale, s.key_padding_mask)
                             for t, s in zip(logits, splits)], feat_size)

    scores, labels = _scores(model, cls_logits[-1])
    boxes = bbox_cxcywh_to_xyxy(bbox_preds[-1])  # normalised, (bs, nq, 4)
    sizes = torch.tensor([[s.metainfo['img_shape'][1],
                           s.metainfo['img_shape'][0]] for s in data_samples],
                         dtype=boxes.dtype, device=boxes.device)
    boxes = boxes * sizes.repeat(1, 2)[:, None, :]
    return CrossAttentionMaps(
        kind=kind, scale=splits[0].scale,
        key_padding_mask=None if pad is None else pad.unflatten(-1, feat_size),
        references=captured.get('references'), boxes=boxes, scores=scores,
        labels=labels, layer_inputs=calls, **maps)
