"""Fold batch norms into convolutions before testing (``HOOKS``)."""
from mmdet.registry import HOOKS
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper


@HOOKS.register_module()
class CdetrInferenceOptimizeHook(Hook):
    """Run :func:`~cdetr_mmdet.apis.optimize_for_inference` on the model
    before the test loop, i.e. after the checkpoint is loaded (mmengine's
    ``Runner.test`` loads before ``before_test``); ``tools/test.py --optimize``
    adds it. Channels-last where the detector has that option.
    """

    priority = 'LOW'

    def before_test(self, runner) -> None:
        # Imported here: cdetr_mmdet.apis imports this package.
        from ..apis.optimize import optimize_for_inference
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        optimize_for_inference(model, channels_last=hasattr(model, 'channels_last'))
        runner.logger.info('optimize_for_inference: batch norms folded into the convolutions'
                           + (', backbone channels-last' if getattr(model, 'channels_last', False) else ''))
