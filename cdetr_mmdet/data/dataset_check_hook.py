"""``CdetrDatasetCheckHook``: the dataset check at the start of every train, val or test run."""
import logging

from mmdet.registry import HOOKS
from mmengine.hooks import Hook
from mmengine.runner import BaseLoop

from .dataset_check_config import check_config, raise_on_errors


@HOOKS.register_module()
class CdetrDatasetCheckHook(Hook):
    """Checks the splits the run uses before its first iteration (``before_run``).

    On by default (``configs/_base_/default_runtime.py``); the one switch is the top-level config
    key ``dataset_check = dict(enabled=False)`` (``--cfg-options dataset_check.enabled=False``).
    ``dataset_check.small_box_fraction`` (default 0.5) sets when the box-size warning fires.
    Logs one summary per split and raises :class:`DatasetError` listing every error.
    """

    priority = 'VERY_HIGH'

    def before_run(self, runner) -> None:
        """Check the splits whose loops this run built (train+val for train, test for test)."""
        options = dict(runner.cfg.get('dataset_check') or {})
        if not options.get('enabled', True):
            runner.logger.info('[dataset check] off (dataset_check.enabled=False)')
            return
        splits = [name for name in ('train', 'val', 'test')
                  if isinstance(getattr(runner, f'_{name}_loop', None), BaseLoop)]
        reports = check_config(runner.cfg, splits,
                               small_box_fraction=options.get('small_box_fraction', 0.5),
                               progress=runner.logger.info)
        for report in reports:
            level = logging.WARNING if report.warnings or report.errors else logging.INFO
            runner.logger.log(level, report.format())
        raise_on_errors(reports)
