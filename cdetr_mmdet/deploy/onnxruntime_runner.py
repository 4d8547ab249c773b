"""Run an exported Conditional DETR with ONNX Runtime (CPU)."""
from cdetr_runtime.backends import OnnxRuntimeSession

from .base_runner import DeployRunner
from .requirements import import_optional


class OnnxRuntimeRunner(DeployRunner):
    """ONNX Runtime's CPU execution provider, all graph optimisations on.

    See :class:`~cdetr_mmdet.deploy.base_runner.DeployRunner` for the
    arguments and the ``predict`` / ``predict_arrays`` interface.
    """

    backend = 'onnxruntime'

    def _load(self) -> OnnxRuntimeSession:
        import_optional('onnxruntime')  # the deploy extra's install hint
        return OnnxRuntimeSession(self.model_path, self.num_threads)
