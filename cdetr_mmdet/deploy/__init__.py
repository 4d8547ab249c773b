"""Deploy: ONNX export and ONNX Runtime / OpenVINO runners (docs/deploy.md).

Needs the optional ``deploy`` extra (``pip install -e '.[deploy]'``); the
runtimes are imported only when a runner is built.
"""
from typing import Optional

from .base_runner import DeployRunner
from .export_model import CdetrExportModel
from .onnxruntime_runner import OnnxRuntimeRunner
from .openvino_runner import OpenVINORunner
from .preprocess import config_preprocessing

BACKENDS = ('onnxruntime', 'openvino', 'openvino-fp32')


def build_runner(backend: str, model_path: str, config,
                 num_threads: Optional[int] = None) -> DeployRunner:
    """A runner by name: 'onnxruntime', 'openvino' (OpenVINO's default
    precision hint) or 'openvino-fp32' (``INFERENCE_PRECISION_HINT`` f32).
    """
    if backend == 'onnxruntime':
        return OnnxRuntimeRunner(model_path, config, num_threads)
    if backend in ('openvino', 'openvino-fp32'):
        return OpenVINORunner(
            model_path, config, num_threads,
            precision='f32' if backend == 'openvino-fp32' else None)
    raise ValueError(f'unknown backend {backend!r}; expected one of '
                     f'{", ".join(BACKENDS)}')


__all__ = ['BACKENDS', 'CdetrExportModel', 'DeployRunner',
           'OnnxRuntimeRunner', 'OpenVINORunner', 'build_runner',
           'config_preprocessing']
