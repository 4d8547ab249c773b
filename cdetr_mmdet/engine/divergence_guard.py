"""Stop a diverging run at once, registered as ``CdetrDivergenceGuardHook``.

Without it a run whose loss turns NaN or explodes goes on to its last epoch,
exits 0 and writes checkpoints of garbage weights. The hook runs after each
training iteration, before ``CdetrCheckpointHook`` (its priority is higher),
and raises :class:`TrainingDivergedError` at the first

- non-finite loss or gradient norm (``train/grad_norm``, logged when
  ``clip_grad`` is set). Under fp16 ``AmpOptimWrapper`` a non-finite gradient
  norm is how the dynamic loss scaler finds its scale; it skips that step,
  so there the hook only stops after ``max_skipped_steps`` skips in a row;
- loss above ``explode_factor`` times the median of the last ``window``
  finite losses.

The message names the iteration, the loss terms, the lr, the gradient norm
and what to try; the iteration's checkpoint is never written, so
``last_checkpoint`` keeps naming the last good one.
"""
import math
from collections import deque
from typing import Dict, Optional

from mmdet.registry import HOOKS
from mmengine.hooks import Hook

__all__ = ['CdetrDivergenceGuardHook', 'TrainingDivergedError']

DataBatch = Optional[dict]


class TrainingDivergedError(RuntimeError):
    """Training produced a non-finite or exploding loss."""


def _value(value) -> float:
    """A logged loss (tensor or float) as a float."""
    return float(value.detach()) if hasattr(value, 'detach') else float(value)


@HOOKS.register_module()
class CdetrDivergenceGuardHook(Hook):
    """Raise at the first non-finite or exploding loss.

    Args:
        explode_factor (float): Stop when the loss exceeds this many times
            the running median. ``0`` disables the check. Defaults to 10.
        window (int): Iterations in the running median. Defaults to 100.
        max_skipped_steps (int): Under fp16 AMP, consecutive steps the loss
            scaler may skip (non-finite gradients) before stopping.
            Defaults to 20.
    """

    priority = 'ABOVE_NORMAL'  # before CheckpointHook (VERY_LOW)

    def __init__(self, explode_factor: float = 10.0, window: int = 100,
                 max_skipped_steps: int = 20) -> None:
        self.explode_factor = explode_factor
        self.losses = deque(maxlen=window)
        self.max_skipped_steps = max_skipped_steps
        self.skipped = 0

    def after_train_iter(self, runner, batch_idx: int,
                         data_batch: DataBatch = None,
                         outputs: Optional[Dict] = None) -> None:
        """Check the iteration's loss and gradient norm."""
        if not outputs or 'loss' not in outputs:
            return
        loss = _value(outputs['loss'])
        grad_norm = self._grad_norm(runner)
        finite = math.isfinite(loss) and (grad_norm is None
                                          or math.isfinite(grad_norm))
        if hasattr(runner.optim_wrapper, 'loss_scaler'):  # fp16 AMP
            self.skipped = 0 if finite else self.skipped + 1
            if self.skipped >= self.max_skipped_steps:
                self._stop(runner, outputs, grad_norm, (
                    f'the fp16 loss scaler skipped {self.skipped} steps in a '
                    'row (non-finite loss or gradients)'))
            if not finite:
                return
        elif not finite:
            self._stop(runner, outputs, grad_norm,
                       'non-finite loss or gradient norm')
        if self.explode_factor and len(self.losses):
            median = sorted(self.losses)[len(self.losses) // 2]
            if loss > self.explode_factor * median:
                self._stop(runner, outputs, grad_norm, (
                    f'loss {loss:.4g} exceeds {self.explode_factor:g} x the '
                    f'median {median:.4g} of the last {len(self.losses)} '
                    'iterations'))
        self.losses.append(loss)

    @staticmethod
    def _grad_norm(runner) -> Optional[float]:
        """This iteration's gradient norm, if ``clip_grad`` logged one."""
        buffer = runner.message_hub.log_scalars.get('train/grad_norm')
        if buffer is None or not len(buffer.data[0]):
            return None
        return float(buffer.current())

    def _stop(self, runner, outputs: Dict, grad_norm: Optional[float],
              reason: str) -> None:
        terms = ', '.join(f'{k}={_value(v):.4g}' for k, v in outputs.items()
                          if 'loss' in k)
        lrs = runner.optim_wrapper.get_lr().get('lr', [])
        lr = ', '.join(f'{v:.3g}' for v in sorted(set(lrs))) or 'n/a'
        norm = 'not computed (no clip_grad)' if grad_norm is None else \
            f'{grad_norm:.4g}'
        last = runner.message_hub.get_info('last_ckpt', None)
        raise TrainingDivergedError(
            f'Training diverged at iteration {runner.iter + 1} '
            f'(epoch {runner.epoch + 1}): {reason}. Loss terms: {terms}; '
            f'lr: {lr}; gradient norm: {norm}. No checkpoint was written for '
            'this iteration; last_checkpoint still names '
            f'{last or "no checkpoint (none saved yet)"}. Try: a lower '
            'optimizer lr, gradient clipping (optim_wrapper.clip_grad='
            'dict(max_norm=0.1)), a warm-up (LinearLR), fp32 instead of AMP, '
            'and tools/check_dataset.py on the data; then resume with '
            '--resume.')
