"""Inference entry points that check their inputs, then call mmdet's (``import cdetr_mmdet.apis``)."""
from .inputs import DetInferencer, InputError, check_image_input, inference_detector

__all__ = ['DetInferencer', 'InputError', 'check_image_input', 'inference_detector']
