"""Run an exported Conditional DETR with OpenVINO (CPU plugin)."""
from typing import Optional

from cdetr_runtime.backends import OpenVINOSession

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

    Attributes:
        inference_precision (str): What the plugin chose ('bf16', 'f32',
            ...), for reports and tests.
    """

    backend = 'openvino'

    def __init__(self, *args, precision: Optional[str] = None,
                 **kwargs) -> None:
        self.precision = precision
        super().__init__(*args, **kwargs)
        self.inference_precision = self.session.precision

    def _load(self) -> OpenVINOSession:
        import_optional('openvino')  # the deploy extra's install hint
        return OpenVINOSession(self.model_path, self.num_threads,
                               self.precision)
