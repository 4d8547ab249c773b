"""The inference engines: ONNX Runtime and OpenVINO, imported on demand."""
import importlib
from typing import Optional, Tuple

import numpy as np

BACKENDS = ('onnxruntime', 'openvino')
OUTPUT_NAMES = ('scores', 'labels', 'boxes')


def _import(name: str):
    try:
        return importlib.import_module(name)
    except ImportError as err:
        raise ImportError(
            f'{name} is not installed: pip install {name} (onnxruntime comes '
            "with the runtime extra, pip install '.[runtime]'; openvino is "
            'optional)') from err


class Session:
    """One compiled graph: ``run(inputs, mask) -> (scores, labels, boxes)``.

    Attributes:
        input_shape (tuple): (batch, H, W) of the graph input, None where
            dynamic.
        precision (str): What the engine computes in ('f32', 'bf16', ... as
            OpenVINO reports it; 'f32' for ONNX Runtime's CPU provider, which
            runs a quantised graph's QDQ nodes as int8 kernels).
    """

    input_shape: Tuple[Optional[int], ...]
    precision: str = 'f32'

    def run(self, inputs: np.ndarray, mask: np.ndarray
            ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        raise NotImplementedError


class OnnxRuntimeSession(Session):
    """ONNX Runtime's CPU execution provider, all graph optimisations on."""

    def __init__(self, path: str, num_threads: Optional[int] = None) -> None:
        ort = _import('onnxruntime')
        options = ort.SessionOptions()
        if num_threads:
            options.intra_op_num_threads = num_threads
            options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(
            path, options, providers=['CPUExecutionProvider'])
        shape = self.session.get_inputs()[0].shape  # (bs, 3, H, W)
        self.input_shape = tuple(d if isinstance(d, int) else None
                                 for d in (shape[0], shape[2], shape[3]))

    def run(self, inputs, mask):
        scores, labels, boxes = self.session.run(
            list(OUTPUT_NAMES), {'inputs': inputs, 'mask': mask})
        return scores, labels, boxes


class OpenVINOSession(Session):
    """OpenVINO's CPU plugin.

    Args:
        path (str): The ONNX file (OpenVINO reads it directly).
        num_threads (int, optional): ``INFERENCE_NUM_THREADS``.
        precision (str, optional): ``INFERENCE_PRECISION_HINT`` ('f32',
            'bf16'); None keeps OpenVINO's default (bf16 where the CPU has
            AVX512-BF16/AMX, else f32).
    """

    def __init__(self, path: str, num_threads: Optional[int] = None,
                 precision: Optional[str] = None) -> None:
        ov = _import('openvino')
        core = ov.Core()
        model = core.read_model(path)
        config = {'PERFORMANCE_HINT': 'LATENCY'}
        if num_threads:
            config['INFERENCE_NUM_THREADS'] = num_threads
        if precision:
            config['INFERENCE_PRECISION_HINT'] = precision
        compiled = core.compile_model(model, 'CPU', config)
        chosen = compiled.get_property('INFERENCE_PRECISION_HINT')
        self.precision = (chosen.get_type_name() if hasattr(
            chosen, 'get_type_name') else str(chosen))
        self.request = compiled.create_infer_request()
        shape = model.inputs[0].get_partial_shape()  # (bs, 3, H, W)
        self.input_shape = tuple(
            shape[i].get_length() if shape[i].is_static else None
            for i in (0, 2, 3))

    def run(self, inputs, mask):
        out = self.request.infer({'inputs': inputs, 'mask': mask})
        by_name = {port.get_any_name(): value for port, value in out.items()}
        return tuple(by_name[name] for name in OUTPUT_NAMES)


def open_session(path: str, backend: str = 'onnxruntime',
                 num_threads: Optional[int] = None,
                 precision: Optional[str] = None) -> Session:
    """Build the engine named ``backend`` ('onnxruntime' or 'openvino')."""
    if backend == 'onnxruntime':
        if precision not in (None, 'f32'):
            raise ValueError('ONNX Runtime (CPU) runs fp32 (or the int8 of a '
                             f'quantised export); precision {precision!r} is '
                             'an OpenVINO option')
        return OnnxRuntimeSession(path, num_threads)
    if backend == 'openvino':
        return OpenVINOSession(path, num_threads, precision)
    raise ValueError(f'unknown backend {backend!r}; expected one of '
                     f'{", ".join(BACKENDS)}')
