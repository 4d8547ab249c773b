"""Data utilities: a deterministic synthetic shapes dataset in COCO format (numpy + OpenCV only)."""
from .synthetic_shapes import (CLASSES, PRESETS, DatasetSettings, ShapeStyle, ensure_dataset,
                               generate_dataset, render_image)

__all__ = ['CLASSES', 'PRESETS', 'DatasetSettings', 'ShapeStyle', 'ensure_dataset',
           'generate_dataset', 'render_image']
