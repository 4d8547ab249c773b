"""COCO category ids <-> mmdet labels (cdetr_mmdet.convert.coco_ids)."""
import pytest
import torch
from mmdet.datasets import CocoDataset

from cdetr_mmdet.convert.coco_ids import (COCO_CATEGORY_IDS,
                                          NUM_CATEGORY_ID_ROWS,
                                          category_id_class_names,
                                          label_to_category_id,
                                          select_category_rows)
from cdetr_testing import expand_to_category_rows

CLASSES = CocoDataset.METAINFO['classes']


def test_ids_are_the_80_coco_ids_in_label_order():
    assert len(COCO_CATEGORY_IDS) == len(CLASSES) == 80
    assert list(COCO_CATEGORY_IDS) == sorted(set(COCO_CATEGORY_IDS))
    unused = set(range(1, NUM_CATEGORY_ID_ROWS)) - set(COCO_CATEGORY_IDS)
    assert unused == {12, 26, 29, 30, 45, 66, 68, 69, 71, 83}
    # Spot checks against the COCO annotation files' categories.
    names = category_id_class_names(CLASSES)
    assert names[1] == 'person' and names[13] == 'stop sign'
    assert names[27] == 'backpack' and names[67] == 'dining table'
    assert names[72] == 'tv' and names[90] == 'toothbrush'
    assert names[0] == names[12] == 'N/A'


def test_select_and_expand_rows_are_inverse():
    rows = torch.randn(91, 5)
    selected = select_category_rows(rows)
    assert torch.equal(selected[11], rows[13])  # label 11 = stop sign = id 13
    expanded = expand_to_category_rows(selected, fill=-7.)
    assert torch.equal(expanded[list(COCO_CATEGORY_IDS)],
                       rows[list(COCO_CATEGORY_IDS)])
    assert (expanded[[0, 12, 83]] == -7.).all()
    assert torch.equal(label_to_category_id(torch.tensor([0, 11, 79])),
                       torch.tensor([1, 13, 90]))


def test_wrong_row_counts_are_refused():
    with pytest.raises(ValueError, match='expected 91 rows'):
        select_category_rows(torch.zeros(80))
    with pytest.raises(ValueError, match='expected 80 rows'):
        expand_to_category_rows(torch.zeros(91))
