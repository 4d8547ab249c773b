"""Strict ``load_from``, ``--resume`` and test loading, registered as ``CdetrStrictLoadHook``.

mmengine's runner loads with ``strict=False`` and only logs what did not fit,
so a checkpoint of another architecture trains or evaluates a random model.
The runner calls ``after_load_checkpoint`` with the loaded checkpoint just
before copying it into the model (for ``load_from``, resuming and
``Runner.test/val``), so this hook can refuse it, or, for fine-tuning, drop
the tensors the config's ``load_from_skip`` names:

    load_from = 'coco_r50.pth'
    load_from_skip = ['bbox_head.fc_cls']  # another class count: start fresh

``load_from_skip`` applies to ``load_from`` when training only; resuming and
testing are always strict.
"""
import os.path as osp

from mmdet.registry import HOOKS
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.runner import BaseLoop

from .state_dict_check import (match_state_dict, selected_by,
                               strip_prefixes)


def _checkpoint_name(runner) -> str:
    """The file the runner is loading (``load_from`` or ``last_checkpoint``)."""
    if runner._load_from is not None:
        return str(runner._load_from)
    last = osp.join(runner.work_dir, 'last_checkpoint')
    if osp.isfile(last):
        with open(last) as f:
            return f.read().strip()
    return 'the checkpoint'


@HOOKS.register_module()
class CdetrStrictLoadHook(Hook):
    """Refuse a checkpoint whose tensors do not fit the model exactly.

    Args:
        strict (bool): Refuse on any missing, unexpected or shape-mismatched
            key outside ``load_from_skip``. ``False`` keeps mmengine's
            log-only behaviour. Defaults to True.
    """

    priority = 'VERY_HIGH'

    def __init__(self, strict: bool = True) -> None:
        self.strict = strict

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        """Check ``checkpoint`` and remove the tensors left out on purpose.

        Args:
            runner (Runner): The runner loading the checkpoint.
            checkpoint (dict): The loaded checkpoint, modified in place.

        Raises:
            CheckpointMismatchError: The checkpoint does not fit the model.
        """
        if not self.strict:
            return
        model = runner.model.module if is_model_wrapper(
            runner.model) else runner.model
        state = checkpoint.get('state_dict', checkpoint)
        revised = strip_prefixes(state)
        training = isinstance(runner._train_loop, BaseLoop)
        skip = list(runner.cfg.get('load_from_skip', None) or ()) \
            if training and not runner._resume else []
        source = _checkpoint_name(runner)
        left_out = match_state_dict(model.state_dict(), revised, source,
                                    skip)
        for key in left_out:  # the runner loads what is left in `state`
            del state[dict(zip(revised, state))[key]]
        if skip:
            fresh = [k for k in model.state_dict() if selected_by(k, skip)]
            runner.logger.warning(
                f'load_from_skip={skip}: {len(fresh)} model tensors keep '
                f'their initialisation ({", ".join(fresh)}); '
                f'{len(left_out)} tensors of {source} not loaded'
                + (f' ({", ".join(left_out)})' if left_out else ''))
