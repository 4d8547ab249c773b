"""Run an exported Conditional DETR with ONNX Runtime (CPU)."""
from typing import Optional, Tuple

import numpy as np

from .base_runner import DeployRunner
from .requirements import import_optional


def _dim(value) -> Optional[int]:
    """A static dimension, or None for a named/unknown (dynamic) one."""
    return value if isinstance(value, int) else None


class OnnxRuntimeRunner(DeployRunner):
    """ONNX Runtime's CPU execution provider, all graph optimisations on.

    See :class:`~cdetr_mmdet.deploy.base_runner.DeployRunner` for the
    arguments and the ``predict`` / ``predict_arrays`` interface.
    """

    backend = 'onnxruntime'

    def _load(self) -> Tuple[Optional[int], ...]:
        ort = import_optional('onnxruntime')
        options = ort.SessionOptions()
        if self.num_threads:
            options.intra_op_num_threads = self.num_threads
            options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(
            self.model_path, options, providers=['CPUExecutionProvider'])
        shape = self.session.get_inputs()[0].shape  # (bs, 3, H, W)
        return _dim(shape[0]), _dim(shape[2]), _dim(shape[3])

    def infer(self, inputs: np.ndarray, mask: np.ndarray
              ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        scores, labels, boxes = self.session.run(
            ['scores', 'labels', 'boxes'], {'inputs': inputs, 'mask': mask})
        return scores, labels, boxes
