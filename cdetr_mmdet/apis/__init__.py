"""Inference entry points: strict, weights-only checkpoint loading, checked inputs, and
``optimize_for_inference`` (batch norms folded into convolutions, NHWC).

Use these instead of ``mmdet.apis``'s (which load non-strictly and pass bad images on to OpenCV).
"""
from .inference import CdetrDetInferencer, init_detector
from .inputs import InputError, check_image_input, inference_detector
from .optimize import optimize_for_inference

__all__ = ['CdetrDetInferencer', 'InputError', 'check_image_input', 'inference_detector',
           'init_detector', 'optimize_for_inference']
