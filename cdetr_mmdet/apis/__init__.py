"""Inference entry points: strict, weights-only checkpoint loading and checked inputs.

Use these instead of ``mmdet.apis``'s (which load non-strictly and pass bad images on to OpenCV).
"""
from .checkpoint import CdetrDetInferencer, init_detector
from .inputs import InputError, check_image_input, inference_detector

__all__ = ['CdetrDetInferencer', 'InputError', 'check_image_input', 'inference_detector',
           'init_detector']
