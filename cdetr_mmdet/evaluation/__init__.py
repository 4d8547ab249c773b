"""Evaluation: COCO metric consistent with ``CdetrCocoDataset``'s class mapping."""
from .coco_metric import CdetrCocoMetric

__all__ = ['CdetrCocoMetric']
