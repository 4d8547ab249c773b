"""``CdetrClampBoxes``: ground-truth boxes clamped to the image and empty ones dropped."""
from typing import Optional

import numpy as np
from mmcv.transforms import BaseTransform
from mmdet.registry import TRANSFORMS


@TRANSFORMS.register_module()
class CdetrClampBoxes(BaseTransform):
    """Clamp ``gt_bboxes`` to the image and drop the boxes left empty, as the official code.

    The official Conditional DETR (``datasets/coco.py``, ``ConvertCocoPolysToMask``) clamps x to
    ``[0, w]`` and y to ``[0, h]`` and keeps a box only if ``x2 > x1`` and ``y2 > y1``. mmdet's
    ``CocoDataset`` keeps boxes partly outside the image unclipped, so their normalised targets can
    leave ``[0, 1]``. Put this right after ``LoadAnnotations``.

    Required keys: ``img_shape``, ``gt_bboxes``. Modified keys: ``gt_bboxes`` and, filtered with
    them, ``gt_bboxes_labels``, ``gt_ignore_flags``, ``gt_masks``.
    """

    def transform(self, results: dict) -> Optional[dict]:
        """Clamp and filter in place; returns ``results``."""
        if results.get('gt_bboxes') is None:
            return results
        height, width = results['img_shape'][:2]
        boxes = results['gt_bboxes']  # mmdet HorizontalBoxes, (N, 4) x1 y1 x2 y2
        boxes.tensor[:, 0::2] = boxes.tensor[:, 0::2].clamp(min=0, max=width)
        boxes.tensor[:, 1::2] = boxes.tensor[:, 1::2].clamp(min=0, max=height)
        keep = ((boxes.tensor[:, 3] > boxes.tensor[:, 1]) &
                (boxes.tensor[:, 2] > boxes.tensor[:, 0])).numpy()
        if keep.all():
            return results
        results['gt_bboxes'] = boxes[keep]
        for key in ('gt_bboxes_labels', 'gt_ignore_flags', 'gt_masks'):
            if results.get(key) is not None:
                results[key] = results[key][np.flatnonzero(keep)]
        return results
