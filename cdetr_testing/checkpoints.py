"""Ours -> official checkpoints: the inverse of the converter, for tests.

Tests build an official-layout state dict from one of our models to feed the
converter (and check the round trip official -> ours -> official).
"""
from typing import Dict, List, Mapping

from torch import Tensor

from cdetr_mmdet.convert.coco_ids import (COCO_CATEGORY_IDS,
                                          NUM_CATEGORY_ID_ROWS)
from cdetr_mmdet.convert.key_rules import Rule, rename

_DEC = r'decoder\.layers\.(\d+)\.'

# (our key start, official): the inverse of
# cdetr_mmdet.convert.official_format.OFFICIAL_TO_OURS.
OURS_TO_OFFICIAL: List[Rule] = [
    (r'backbone\.', 'backbone.0.body.'),
    (r'neck\.convs\.0\.conv\.', 'input_proj.'),
    (r'encoder\.', 'transformer.encoder.'),
    (_DEC + r'self_attn\.(qcontent|qpos|kcontent|kpos|v)_proj\.',
     r'transformer.decoder.layers.\1.sa_\2_proj.'),
    (_DEC + r'cross_attn\.(qcontent|qpos|kcontent|kpos|v|qpos_sine)_proj\.',
     r'transformer.decoder.layers.\1.ca_\2_proj.'),
    (r'decoder\.', 'transformer.decoder.'),
    (r'query_embedding\.', 'query_embed.'),
    (r'bbox_head\.fc_cls\.', 'class_embed.'),
    (r'bbox_head\.fc_reg\.', 'bbox_embed.'),
]


def ours_to_official(state_dict: Mapping[str, Tensor]) -> Dict[str, Tensor]:
    """Rename our keys to the official ones (inverse of the renaming).

    The class rows are kept as they are (use :func:`expand_to_category_rows`
    first to turn 80 label rows into 91 category-id rows), and the
    backbone's ``num_batches_tracked`` buffers are dropped, as the official
    frozen BatchNorm has none.

    Args:
        state_dict (Mapping[str, Tensor]): Our weights.

    Returns:
        dict[str, Tensor]: The official ``model`` weights.

    Raises:
        KeyError: A key has no official counterpart.
    """
    renamed = rename({k: v for k, v in state_dict.items()
                      if not k.endswith('.num_batches_tracked')},
                     OURS_TO_OFFICIAL)
    if renamed.unmapped or renamed.collisions:
        raise KeyError(f'no official name for {sorted(renamed.unmapped)}; '
                       f'collisions: {renamed.collisions}')
    return renamed.tensors


def expand_to_category_rows(rows: Tensor, fill: float = 0.) -> Tensor:
    """Inverse of ``select_category_rows``: 80 label rows -> 91 id rows.

    Args:
        rows (Tensor): (80, d) or (80,), in mmdet label order.
        fill (float): Value of the rows no COCO class uses (0 and the gap
            ids). Defaults to 0.

    Returns:
        Tensor: (91, d) or (91,), row ``i`` for category id ``i``.
    """
    if rows.shape[0] != len(COCO_CATEGORY_IDS):
        raise ValueError(f'expected {len(COCO_CATEGORY_IDS)} rows in mmdet '
                         f'label order, got {rows.shape[0]}')
    out = rows.new_full((NUM_CATEGORY_ID_ROWS, *rows.shape[1:]), fill)
    out[list(COCO_CATEGORY_IDS)] = rows
    return out
