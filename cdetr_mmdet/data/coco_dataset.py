"""``CdetrCocoDataset``: mmdet's ``CocoDataset`` that fails loudly and keeps label i = ``classes[i]``."""
from typing import List

from mmdet.datasets import CocoDataset
from mmdet.registry import DATASETS

from .coco_api import CdetrCOCO, DatasetError, is_usable_box


@DATASETS.register_module()
class CdetrCocoDataset(CocoDataset):
    """COCO-format detection dataset (a drop-in for mmdet's ``CocoDataset``).

    Differences, all about bad input (identical data lists on a well-formed file whose
    ``categories`` follow ``classes``):

    - label ``i`` is always ``metainfo['classes'][i]``, whatever the order of the JSON's
      ``categories`` (mmdet numbers them in the JSON's order); a class name the file does not have
      is an error listing the closest names (see :class:`CdetrCOCO`);
    - a truncated / non-JSON file, or one without ``images`` or ``categories``, is an error naming
      the file and the key; an annotation without ``area`` gets ``w * h``;
    - a degenerate box (not four finite numbers, or zero / negative width or height) is dropped,
      where mmdet's parser raises (not 4 numbers, a string) or keeps it (an infinite width); the
      dataset check counts them (:func:`~.coco_api.is_usable_box` is the one rule);
    - a split left with no image (none listed, or ``filter_empty_gt=True`` and no annotation of the
      configured classes) is an error naming the file and the filter, where mmengine would fail
      with ``need at least one array to concatenate``.
    """

    COCOAPI = CdetrCOCO

    def parse_data_info(self, raw_data_info: dict) -> dict:
        """mmdet's parser on the image's annotations whose box is usable."""
        anns = [ann for ann in raw_data_info['raw_ann_info'] if is_usable_box(ann.get('bbox'))]
        return super().parse_data_info(dict(raw_data_info, raw_ann_info=anns))

    def filter_data(self) -> List[dict]:
        """mmdet's filter, then an error naming the file if nothing is left."""
        data_list = super().filter_data()
        if not data_list:
            with_ann = sum(1 for info in self.data_list if info['instances'])
            raise DatasetError(
                f'{self.ann_file}: no image left for this split: {len(self.data_list)} images '
                f'listed, {with_ann} with annotations of the classes {tuple(self.metainfo["classes"])}'
                f', filter_cfg={self.filter_cfg}. Expected at least one image; with no '
                'annotations set filter_cfg.filter_empty_gt=False, or check the classes and '
                'category ids (python tools/check_dataset.py CONFIG).')
        return data_list
