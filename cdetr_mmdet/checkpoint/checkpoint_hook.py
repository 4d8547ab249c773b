"""Checkpoints that are never all lost, registered as ``CdetrCheckpointHook``.

mmengine's ``CheckpointHook`` deletes the outdated checkpoint *before* writing
the new one and writes ``last_checkpoint`` in place: with
``max_keep_ckpts=1``, a kill or a full disk mid-save leaves no checkpoint and
``last_checkpoint`` naming a deleted (or no) file. This hook

- refuses to write a model with non-finite weights (the previous checkpoint
  stays the last one);
- writes the new checkpoint, then ``last_checkpoint`` (atomically), and only
  then deletes the outdated ones;
- when resuming, repairs an empty or dangling ``last_checkpoint`` so it names
  the newest complete checkpoint in the work_dir, with a warning.
"""
import glob
import os
import os.path as osp
import re
import zipfile
from typing import List, Optional

import torch
from mmdet.registry import HOOKS
from mmengine.dist import is_main_process
from mmengine.hooks import CheckpointHook
from mmengine.model import is_model_wrapper

from .atomic_backend import AtomicLocalBackend

__all__ = ['CdetrCheckpointHook', 'NonFiniteWeightsError',
           'newest_complete_checkpoint', 'repair_last_checkpoint']

# How many non-finite tensors the refusal names.
_SHOWN = 5


class NonFiniteWeightsError(RuntimeError):
    """The model holds NaN/inf weights: its checkpoint would be garbage."""


def _is_complete(path: str) -> bool:
    """A torch zip checkpoint whose central directory is readable."""
    try:
        with zipfile.ZipFile(path) as archive:
            return any(n.endswith('data.pkl') for n in archive.namelist())
    except (OSError, zipfile.BadZipFile):
        return False


def newest_complete_checkpoint(folder: str) -> Optional[str]:
    """The complete ``epoch_N.pth``/``iter_N.pth`` in ``folder`` saved last.

    Args:
        folder (str): A run's work_dir.

    Returns:
        str | None: Its path, or None when there is none.
    """
    candidates = [p for p in glob.glob(osp.join(glob.escape(folder), '*.pth'))
                  if re.fullmatch(r'(epoch|iter)_\d+\.pth', osp.basename(p))]
    for path in sorted(candidates, key=os.path.getmtime, reverse=True):
        if _is_complete(path):
            return path
    return None


def repair_last_checkpoint(work_dir: str, logger) -> Optional[str]:
    """Make ``work_dir/last_checkpoint`` name a checkpoint that exists.

    An empty file (a save killed while writing it in place) or one naming a
    deleted file is rewritten to name the newest complete checkpoint of
    ``work_dir``, or removed if there is none (mmengine then starts from
    scratch); either way with a warning.

    Args:
        work_dir (str): The run's work_dir.
        logger (logging.Logger): Where the warning goes.

    Returns:
        str | None: The checkpoint ``last_checkpoint`` names afterwards.
    """
    last = osp.join(work_dir, 'last_checkpoint')
    if not osp.isfile(last):
        return None
    with open(last) as f:
        named = f.read().strip()
    if named and osp.isfile(named):
        return named
    fallback = newest_complete_checkpoint(work_dir)
    what = f'names {named!r}, which does not exist' if named else 'is empty'
    if fallback is None:
        os.remove(last)
        logger.warning(f'{last} {what} and {work_dir} holds no complete '
                       'checkpoint: nothing to resume, training starts from '
                       'scratch')
        return None
    AtomicLocalBackend().put_text(fallback, last)
    logger.warning(f'{last} {what}; resuming from the newest complete '
                   f'checkpoint {fallback} instead')
    return fallback


def non_finite_tensors(model: torch.nn.Module) -> List[str]:
    """Names of the model's parameters and buffers holding NaN or inf."""
    return [name for name, tensor in model.state_dict().items()
            if tensor.is_floating_point()
            and not bool(torch.isfinite(tensor).all())]


@HOOKS.register_module()
class CdetrCheckpointHook(CheckpointHook):
    """``CheckpointHook`` that deletes old checkpoints only after a save.

    Takes the arguments of :class:`mmengine.hooks.CheckpointHook`.
    """

    def before_run(self, runner) -> None:
        """Repair an empty or dangling ``last_checkpoint`` before resuming."""
        super().before_run(runner)
        if runner._resume and runner._load_from is None and \
                is_main_process():
            repair_last_checkpoint(runner.work_dir, runner.logger)

    def _save_checkpoint_with_step(self, runner, step, meta) -> None:
        """Save, point ``last_checkpoint`` at the new file, then prune."""
        model = runner.model.module if is_model_wrapper(
            runner.model) else runner.model
        bad = non_finite_tensors(model)
        ckpt_filename = self.filename_tmpl.format(step)
        if bad:
            shown = ', '.join(bad[:_SHOWN]) + (
                f', ... ({len(bad) - _SHOWN} more)' if len(bad) > _SHOWN
                else '')
            raise NonFiniteWeightsError(
                f'Refusing to write {ckpt_filename}: {len(bad)} tensors of '
                f'the model hold NaN or inf ({shown}). The previous '
                f'checkpoint {self.last_ckpt or "(none)"} is kept and '
                'last_checkpoint '
                'still names it.')
        outdated = []
        # keep_ckpt_ids exists only with max_keep_ckpts > 0; a step saved
        # twice (best and regular checkpoint) is kept once.
        if self.max_keep_ckpts > 0 and not (
                self.keep_ckpt_ids and self.keep_ckpt_ids[-1] == step):
            if len(self.keep_ckpt_ids) == self.max_keep_ckpts:
                outdated.append(self.keep_ckpt_ids.popleft())
            self.keep_ckpt_ids.append(step)
            runner.message_hub.update_info('keep_ckpt_ids',
                                           list(self.keep_ckpt_ids))
        previous = self.last_ckpt
        self.last_ckpt = self.file_backend.join_path(self.out_dir,
                                                     ckpt_filename)
        runner.message_hub.update_info('last_ckpt', self.last_ckpt)
        try:
            runner.save_checkpoint(
                self.out_dir, ckpt_filename, self.file_client_args,
                save_optimizer=self.save_optimizer,
                save_param_scheduler=self.save_param_scheduler, meta=meta,
                by_epoch=self.by_epoch, backend_args=self.backend_args,
                **self.args)
        except BaseException:
            self.last_ckpt = previous
            raise
        if not is_main_process():
            return
        AtomicLocalBackend().put_text(
            self.last_ckpt, osp.join(runner.work_dir, 'last_checkpoint'))
        for old_step in outdated:
            path = self.file_backend.join_path(
                self.out_dir, self.filename_tmpl.format(old_step))
            if self.file_backend.isfile(path):
                self.file_backend.remove(path)
            elif self.file_backend.isdir(path):  # deepspeed: a folder
                self.file_backend.rmtree(path)
