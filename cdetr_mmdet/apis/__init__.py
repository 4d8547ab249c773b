"""Inference entry points: strict, weights-only checkpoint loading, checked inputs, and
``optimize_for_inference`` (batch norms folded into convolutions, NHWC).

They check before calling ``mmdet.apis``' own; those, with our detector and configs, refuse the
same checkpoints (the detector's ``_load_from_state_dict``) and inputs (the test pipelines'
checks, ``cdetr_mmdet.data.check_image``).
"""
from .inference import CdetrDetInferencer, init_detector
from .inputs import InputError, check_image_input, inference_detector
from .optimize import optimize_for_inference

__all__ = ['CdetrDetInferencer', 'InputError', 'check_image_input', 'inference_detector',
           'init_detector', 'optimize_for_inference']
