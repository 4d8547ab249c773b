"""Checkpoint interop: official, Hugging Face and mmdet weights -> ours.

See docs/checkpoints.md. The entry point is :func:`convert_checkpoint`
(``tools/convert_checkpoint.py``); every conversion is strict.
"""
from .checkpoint_io import (CheckpointMismatchError, check_and_fill,
                            load_source_state_dict, save_checkpoint)
from .coco_ids import (COCO_CATEGORY_IDS, NUM_CATEGORY_ID_ROWS,
                       category_id_class_names, label_to_category_id,
                       select_category_rows)
from .converter import (DEFAULT_CONFIG, SOURCES, build_target_model,
                        convert_checkpoint, convert_state_dict,
                        rename_to_ours)
from .hf_format import hf_to_official
from .official_format import official_to_ours

__all__ = [
    'CheckpointMismatchError', 'check_and_fill', 'load_source_state_dict',
    'save_checkpoint', 'COCO_CATEGORY_IDS', 'NUM_CATEGORY_ID_ROWS',
    'category_id_class_names', 'label_to_category_id',
    'select_category_rows', 'DEFAULT_CONFIG', 'SOURCES',
    'build_target_model', 'convert_checkpoint', 'convert_state_dict',
    'rename_to_ours', 'hf_to_official', 'official_to_ours'
]
