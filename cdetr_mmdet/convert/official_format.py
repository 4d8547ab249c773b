"""Key mapping between the official Conditional DETR and ours.

Official layout (Atten4Vis/ConditionalDETR, ``{'model': state_dict}``):
torchvision ResNet under ``backbone.0.body`` (FrozenBatchNorm2d: no
``num_batches_tracked``), ``input_proj``, ``transformer.encoder`` with the
same layer names as ours, ``transformer.decoder.layers.{i}.sa_*_proj`` /
``ca_*_proj`` flat on the layer, ``class_embed`` (91 rows indexed by COCO
category id), ``bbox_embed``, ``query_embed``.
"""
from typing import Dict, List, Mapping

from torch import Tensor

from .coco_ids import NUM_CATEGORY_ID_ROWS, select_category_rows
from .key_rules import PrefixRule, Renamed, invert, rename_by_prefix

_SELF_ATTN = ('qcontent', 'qpos', 'kcontent', 'kpos', 'v')
_CROSS_ATTN = ('qcontent', 'qpos', 'kcontent', 'kpos', 'v', 'qpos_sine')

# (official prefix, our prefix), most specific first. The generic
# 'transformer.decoder.' rule covers the attention output projections,
# linear1/2, norm1/2/3 and the decoder's norm, query_scale and
# ref_point_head, whose names are equal on both sides.
OFFICIAL_TO_OURS: List[PrefixRule] = [
    ('backbone.0.body.', 'backbone.'),
    ('input_proj.', 'neck.convs.0.conv.'),
    ('transformer.encoder.', 'encoder.'),
    *[(f'transformer.decoder.layers.{{i}}.sa_{name}_proj.',
       f'decoder.layers.{{i}}.self_attn.{name}_proj.') for name in _SELF_ATTN],
    *[(f'transformer.decoder.layers.{{i}}.ca_{name}_proj.',
       f'decoder.layers.{{i}}.cross_attn.{name}_proj.')
      for name in _CROSS_ATTN],
    ('transformer.decoder.', 'decoder.'),
    ('query_embed.', 'query_embedding.'),
    ('class_embed.', 'bbox_head.fc_cls.'),
    ('bbox_embed.', 'bbox_head.fc_reg.'),
]

CLASS_HEAD_KEYS = ('bbox_head.fc_cls.weight', 'bbox_head.fc_cls.bias')


def official_to_ours(state_dict: Mapping[str, Tensor],
                     keep_91: bool = False) -> Renamed:
    """Rename official keys to ours and remap the class head.

    Args:
        state_dict (Mapping[str, Tensor]): The official ``model`` weights.
        keep_91 (bool): Keep the 91 class rows indexed by COCO category id
            (then the model needs ``num_classes=91``). Defaults to False:
            keep the rows of the 80 COCO classes, in mmdet label order.

    Returns:
        Renamed: Our keys; a class head that cannot be remapped (not 91
        rows) is reported in ``unmapped``.
    """
    renamed = rename_by_prefix(state_dict, OFFICIAL_TO_OURS)
    if keep_91:
        return renamed
    for key in CLASS_HEAD_KEYS:
        if key not in renamed.tensors:
            continue  # reported as a missing key by the strict check
        rows = renamed.tensors[key]
        if rows.shape[0] == NUM_CATEGORY_ID_ROWS:
            renamed.tensors[key] = select_category_rows(rows)
        else:
            origin = renamed.origins.pop(key)
            del renamed.tensors[key]
            renamed.unmapped[origin] = (
                f'has {rows.shape[0]} class rows; mapping COCO category ids '
                f'to mmdet labels needs {NUM_CATEGORY_ID_ROWS} (keep the '
                'rows as they are with --keep-91-classes)')
    return renamed


def ours_to_official(state_dict: Mapping[str, Tensor]) -> Dict[str, Tensor]:
    """Rename our keys to the official ones (inverse of the renaming).

    The class rows are kept as they are (use
    :func:`~cdetr_mmdet.convert.coco_ids.expand_to_category_rows` first to
    turn 80 label rows into 91 category-id rows), and the backbone's
    ``num_batches_tracked`` buffers are dropped, as the official frozen
    BatchNorm has none.

    Args:
        state_dict (Mapping[str, Tensor]): Our weights.

    Returns:
        dict[str, Tensor]: The official ``model`` weights.

    Raises:
        KeyError: A key has no official counterpart.
    """
    renamed = rename_by_prefix(
        {k: v for k, v in state_dict.items()
         if not k.endswith('.num_batches_tracked')},
        invert(OFFICIAL_TO_OURS))
    if renamed.unmapped or renamed.collisions:
        raise KeyError(f'no official name for {sorted(renamed.unmapped)}; '
                       f'collisions: {renamed.collisions}')
    return renamed.tensors
