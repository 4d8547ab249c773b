"""Data: COCO loading that fails loudly, the dataset check, the GT clamp and synthetic shapes."""
from .check_image import CdetrCheckImage, CheckedImageBackend
from .clamp_boxes import CdetrClampBoxes
from .coco_api import CdetrCOCO, DatasetError
from .coco_dataset import CdetrCocoDataset
from .dataset_check import SplitReport, SplitSpec, check_split
from .dataset_check_config import check_config, feature_stride, raise_on_errors, split_specs
from .dataset_check_hook import CdetrDatasetCheckHook
from .synthetic_shapes import (CLASSES, PRESETS, DatasetSettings, ShapeStyle, ensure_dataset,
                               generate_dataset, render_image)

__all__ = ['CLASSES', 'PRESETS', 'CdetrCOCO', 'CdetrCheckImage', 'CdetrClampBoxes',
           'CheckedImageBackend', 'CdetrCocoDataset',
           'CdetrDatasetCheckHook', 'DatasetError', 'DatasetSettings', 'ShapeStyle', 'SplitReport',
           'SplitSpec', 'check_config', 'check_split', 'ensure_dataset', 'feature_stride',
           'generate_dataset', 'raise_on_errors', 'render_image', 'split_specs']
