"""Key mapping from the official Conditional DETR to ours.

Official layout (Atten4Vis/ConditionalDETR, ``{'model': state_dict}``):
torchvision ResNet under ``backbone.0.body`` (FrozenBatchNorm2d: no
``num_batches_tracked``), ``input_proj``, ``transformer.encoder`` with the
same layer names as ours, ``transformer.decoder.layers.{i}.sa_*_proj`` /
``ca_*_proj`` flat on the layer, ``class_embed`` (91 rows indexed by COCO
category id), ``bbox_embed``, ``query_embed``.
"""
from typing import List, Mapping

from torch import Tensor

from .coco_ids import NUM_CATEGORY_ID_ROWS, select_category_rows
from .key_rules import Renamed, Rule, rename

_DEC = r'transformer\.decoder\.layers\.(\d+)\.'

# (official key start, ours), most specific first. The generic
# 'transformer.decoder.' rule covers the attention output projections,
# linear1/2, norm1/2/3 and the decoder's norm, query_scale and
# ref_point_head, whose names are equal on both sides.
OFFICIAL_TO_OURS: List[Rule] = [
    (r'backbone\.0\.body\.', 'backbone.'),
    (r'input_proj\.', 'neck.convs.0.conv.'),
    (r'transformer\.encoder\.', 'encoder.'),
    (_DEC + r'sa_(qcontent|qpos|kcontent|kpos|v)_proj\.',
     r'decoder.layers.\1.self_attn.\2_proj.'),
    (_DEC + r'ca_(qcontent|qpos|kcontent|kpos|v|qpos_sine)_proj\.',
     r'decoder.layers.\1.cross_attn.\2_proj.'),
    (r'transformer\.decoder\.', 'decoder.'),
    (r'query_embed\.', 'query_embedding.'),
    (r'class_embed\.', 'bbox_head.fc_cls.'),
    (r'bbox_embed\.', 'bbox_head.fc_reg.'),
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
    renamed = rename(state_dict, OFFICIAL_TO_OURS)
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
