"""COCO category ids: the link between 91-row and 80-row class heads.

The official and Hugging Face heads have 91 outputs, row ``i`` scoring COCO
category id ``i`` (ids run 1..90 with 10 gaps; row 0 and the gap rows are
never a target, so they are only ever trained as negatives). mmdet's
``CocoDataset`` uses 80 contiguous labels, label ``j`` being the ``j``-th
class of ``CocoDataset.METAINFO['classes']``, i.e. the ``j``-th smallest
category id.
"""
from typing import List, Sequence, Tuple

import torch
from torch import Tensor

# The category id of each mmdet COCO label, in label order (person=1, ...,
# toothbrush=90).
COCO_CATEGORY_IDS: Tuple[int, ...] = (
    1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 14, 15, 16, 17, 18, 19, 20, 21,
    22, 23, 24, 25, 27, 28, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42,
    43, 44, 46, 47, 48, 49, 50, 51, 52, 53, 54, 55, 56, 57, 58, 59, 60, 61,
    62, 63, 64, 65, 67, 70, 72, 73, 74, 75, 76, 77, 78, 79, 80, 81, 82, 84,
    85, 86, 87, 88, 89, 90)

# Rows of an official / Hugging Face COCO class head: max category id + 1.
NUM_CATEGORY_ID_ROWS = 91


def select_category_rows(rows: Tensor) -> Tensor:
    """Keep the rows of the 80 COCO classes, in mmdet label order.

    Args:
        rows (Tensor): A 91-row class-head weight (91, d) or bias (91,),
            row ``i`` for category id ``i``.

    Returns:
        Tensor: (80, d) or (80,); row ``j`` for mmdet label ``j``.
    """
    if rows.shape[0] != NUM_CATEGORY_ID_ROWS:
        raise ValueError(f'expected {NUM_CATEGORY_ID_ROWS} rows indexed by '
                         f'COCO category id, got {rows.shape[0]}')
    return rows[list(COCO_CATEGORY_IDS)].clone()


def category_id_class_names(classes: Sequence[str]) -> List[str]:
    """Class names of a 91-row head: ``names[i]`` names category id ``i``.

    Args:
        classes (Sequence[str]): The 80 COCO class names in label order
            (mmdet's ``CocoDataset.METAINFO['classes']``).

    Returns:
        list[str]: 91 names, ``'N/A'`` for the ids no class uses.
    """
    if len(classes) != len(COCO_CATEGORY_IDS):
        raise ValueError(f'expected {len(COCO_CATEGORY_IDS)} class names, '
                         f'got {len(classes)}')
    names = ['N/A'] * NUM_CATEGORY_ID_ROWS
    for cat_id, name in zip(COCO_CATEGORY_IDS, classes):
        names[cat_id] = name
    return names


def label_to_category_id(labels: Tensor) -> Tensor:
    """Map mmdet COCO labels (0..79) to category ids (1..90)."""
    return torch.tensor(COCO_CATEGORY_IDS, device=labels.device)[labels]
