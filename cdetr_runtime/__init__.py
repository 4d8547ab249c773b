"""cdetr_runtime: run an exported Conditional DETR with numpy, OpenCV and
ONNX Runtime or OpenVINO only (no torch, mmcv, mmengine or mmdet).

    >>> from cdetr_runtime import Detector
    >>> dets = Detector('demo.onnx')(['image.png'])

    $ python -m cdetr_runtime demo.onnx image.png --out detections.json

The model file (tools/export_onnx.py) carries its preprocessing, class names
and score threshold as metadata; see docs/deploy.md.
"""
from .backends import BACKENDS
from .detector import Detections, Detector
from .model_file import (FORMAT_VERSION, ModelFormatError, ModelInfo,
                         read_model_info)
from .preprocess import ImageError, Preprocessor, load_image

__version__ = '0.1.0'

__all__ = ['BACKENDS', 'FORMAT_VERSION', 'Detections', 'Detector',
           'ImageError', 'ModelFormatError', 'ModelInfo', 'Preprocessor',
           'load_image', 'read_model_info']
