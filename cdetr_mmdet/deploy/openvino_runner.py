"""Run an exported Conditional DETR with OpenVINO (CPU plugin)."""
from typing import Optional, Tuple

import numpy as np

from .base_runner import DeployRunner
from .requirements import import_optional


class OpenVINORunner(DeployRunner):
    """OpenVINO reads the ONNX file and compiles it for the CPU.

    Args:
        model_path, config, num_threads: See
            :class:`~cdetr_mmdet.deploy.base_runner.DeployRunner`.
        precision (str, optional): ``INFERENCE_PRECISION_HINT``: None keeps
            OpenVINO's default (bf16 on CPUs with bf16 support, else f32);
            ``'f32'`` forces fp32.
    """

    backend = 'openvino'

    def __init__(self, *args, precision: Optional[str] = None,
                 **kwargs) -> None:
        self.precision = precision
        super().__init__(*args, **kwargs)

    def _load(self) -> Tuple[Optional[int], ...]:
        ov = import_optional('openvino')
        core = ov.Core()
        model = core.read_model(self.model_path)
        config = {'PERFORMANCE_HINT': 'LATENCY'}
        if self.num_threads:
            config['INFERENCE_NUM_THREADS'] = self.num_threads
        if self.precision:
            config['INFERENCE_PRECISION_HINT'] = self.precision
        self.compiled = core.compile_model(model, 'CPU', config)
        # What the plugin chose ('bf16', 'f32', ...), for reports and tests.
        chosen = self.compiled.get_property('INFERENCE_PRECISION_HINT')
        self.inference_precision = (chosen.get_type_name() if hasattr(
            chosen, 'get_type_name') else str(chosen))
        self.request = self.compiled.create_infer_request()
        shape = model.inputs[0].get_partial_shape()  # (bs, 3, H, W)
        return tuple(shape[i].get_length() if shape[i].is_static else None
                     for i in (0, 2, 3))

    def infer(self, inputs: np.ndarray, mask: np.ndarray
              ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        out = self.request.infer({'inputs': inputs, 'mask': mask})
        by_name = {port.get_any_name(): value for port, value in out.items()}
        return by_name['scores'], by_name['labels'], by_name['boxes']
