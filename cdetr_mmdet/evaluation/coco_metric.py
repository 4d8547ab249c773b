"""``CdetrCocoMetric``: mmdet's ``CocoMetric`` reading the file as ``CdetrCocoDataset`` does."""
from typing import Optional

from mmdet.evaluation import CocoMetric
from mmdet.registry import METRICS
from mmengine.fileio import get_local_path

from ..data.coco_api import CdetrCOCO


@METRICS.register_module()
class CdetrCocoMetric(CocoMetric):
    """COCO bbox/segm metric whose label ``i`` is the category named ``classes[i]``.

    Must be paired with :class:`CdetrCocoDataset`: mmdet's ``CocoMetric`` maps label ``i`` to the
    ``i``-th configured class in the JSON's ``categories`` order, which differs from ours when that
    order is not the config's. Also names the file for a broken annotation file and fills a missing
    ``area`` (``COCOeval`` reads it) with the box area. Arguments are ``CocoMetric``'s.
    """

    def __init__(self, ann_file: Optional[str] = None, *args, **kwargs) -> None:
        sort_categories = kwargs.get('sort_categories', False)
        super().__init__(None, *args, **kwargs)  # mmdet's would read the file with its own COCO
        if ann_file is not None:
            with get_local_path(ann_file, backend_args=self.backend_args) as local_path:
                self._coco_api = CdetrCOCO(local_path)
            if sort_categories:  # as mmdet's: Objects365 lists categories out of id order
                cats = self._coco_api.cats
                self._coco_api.cats = {i: cats[i] for i in sorted(cats)}
                self._coco_api.dataset['categories'] = sorted(
                    self._coco_api.dataset['categories'], key=lambda c: c['id'])
